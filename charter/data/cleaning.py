"""Turning the raw formats of the corpus recipes into readable prose.

Each function takes one source's raw text and returns plain paragraphs (one per line, separated
by a blank line), the form every Charter corpus document has. reStructuredText, the largest
format, has its own module (`rst_prose`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# ---- the Brown corpus (form C: every word tagged, "word/tag") ----

# Brown marks which way a quote faces (`` opens, '' closes), which a generic detokenizer would
# have to guess; with it, spacing is a matter of which neighbour a mark attaches to.
_ATTACH_LEFT = {".", ",", ":", ";", "?", "!", ")", "''", "'"}  # no space before
_ATTACH_RIGHT = {"(", "``"}  # no space after
_QUOTES = {"``": '"', "''": '"'}
_END_MARKS = {".", ";", "?", "!"}


def brown_sentence(tagged: str) -> str:
    """ "The/at jury/nn said/vbd ``/`` no/at ''/'' ./." → 'The jury said "no".'"""
    words = []
    for item in tagged.split():
        word = item.rsplit("/", 1)[0]
        if word.startswith("**"):  # placeholders for formulas and foreign script
            continue
        words.append(word)
    out, glue = [], True  # glue: no space before the next word
    for word in words:
        if word in _END_MARKS and out and out[-1].endswith(word):
            # "Jr./np ./." ends with one full stop; the npm package also doubles every
            # "?", "!" and ";" ("?/. ?/.").
            continue
        if not glue and word not in _ATTACH_LEFT:
            out.append(" ")
        out.append(_QUOTES.get(word, word))
        glue = word in _ATTACH_RIGHT
    return "".join(out)


def brown_to_prose(raw: str) -> str:
    """A Brown sample file: paragraphs are separated by blank lines, one sentence per line."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw):
        sentences = [brown_sentence(line) for line in block.splitlines() if line.strip()]
        text = " ".join(s for s in sentences if s)
        if text:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


# ---- WordNet (the `data.noun`, `data.verb`, … database files) ----

PARTS_OF_SPEECH = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


@dataclass
class Synset:
    """One WordNet meaning: its words, gloss (definition) and example sentences."""

    lexicographer_file: int  # the topic file, e.g. noun.animal (kept for grouping)
    part_of_speech: str
    words: list[str]
    definition: str
    examples: list[str]

    def to_text(self) -> str:
        """'lash, thong (noun): leather strip…. For example: "the whip's lash".'"""
        text = f"{', '.join(self.words)} ({self.part_of_speech}): {self.definition}"
        if self.examples:
            text = f"{text}. For example: {'; '.join(self.examples)}"
        return text.rstrip(".") + "."


def parse_synset(line: str) -> Synset:
    """One line of a WordNet data file (format: wndb(5WN)): `offset lex_filenum ss_type w_cnt
    word lex_id … p_cnt pointers… | gloss`, where the gloss is the definition followed by quoted
    example sentences, separated by semicolons."""
    fields, _, gloss = line.partition(" | ")
    parts = fields.split()
    try:
        lexicographer_file, ss_type = int(parts[1]), parts[2]
        n_words = int(parts[3], 16)
        # Words are written with underscores for spaces, adjectives may carry a syntactic marker.
        words = [
            re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in parts[4 : 4 + 2 * n_words : 2]
        ]
        part_of_speech = PARTS_OF_SPEECH[ss_type]
    except (IndexError, ValueError, KeyError) as e:
        raise ValueError(f"not a WordNet synset line ({e}): {line[:80]!r}") from e
    pieces = [p.strip() for p in re.split(r';\s*(?=")|(?<=");\s*', gloss.strip())]
    definition = [p for p in pieces if p and not p.startswith('"')]
    examples = [p for p in pieces if p.startswith('"')]
    return Synset(lexicographer_file, part_of_speech, words, "; ".join(definition), examples)


def wordnet_synsets(data_file: str) -> Iterator[Synset]:
    """The synsets of a data file; its licence header lines start with two spaces."""
    for line in data_file.splitlines():
        if line.strip() and not line.startswith("  "):
            yield parse_synset(line)


# ---- novels from Project Gutenberg texts (hard-wrapped lines) ----

_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\b\.?\s*$", re.IGNORECASE)
_VOLUME = re.compile(r"^\s*volume\s+([ivxlc]+|\d+)\b\.?\s*$", re.IGNORECASE)


def unwrap_paragraphs(lines: list[str]) -> str:
    """Hard-wrapped lines → one line per paragraph; `_italics_` markers become plain words."""
    paragraphs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    text = "\n\n".join(paragraphs)
    return re.sub(r"(?<!\w)_(\S(?:[^_]*?\S)?)_(?!\w)", r"\1", text)


def novel_chapters(lines: list[str]) -> list[str]:
    """A novel's chapters as documents, each headed by the book's title and the chapter line.
    Front matter (title page) and volume headings are left out; a book without chapter headings
    is one document."""
    title = next((line.strip() for line in lines if line.strip()), "")
    chapters: list[list[str]] = []
    for line in lines:
        if _CHAPTER.match(line):
            chapters.append([line.strip(), ""])
        elif chapters and not _VOLUME.match(line):
            chapters[-1].append(line)
    if not chapters:
        return [unwrap_paragraphs(lines)]
    return [f"{title}\n\n{unwrap_paragraphs(chapter)}" for chapter in chapters]
