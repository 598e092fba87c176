"""reStructuredText (as in the CPython documentation sources) to plain English prose.

The Python docs are written for Sphinx, whose roles and directives (`:func:`, `.. method::`,
`.. versionadded::`) plain `docutils` does not know, so instead of a full parse this keeps what
reads as prose and drops the rest, line by line:

- kept: paragraphs (re-wrapped onto one line), section titles, list items, and the bodies of
  admonitions and API descriptions (the text under `.. function:: f(x)`, without the signature);
- dropped: code (literal blocks after `::`, `>>>` sessions, code directives), tables, comments,
  labels, index entries, and any directive not known to hold prose.

Inline markup becomes its text: ":func:`~os.path.join`" → "join", "``x``" → "x",
"`Python <https://python.org>`_" → "Python", ":pep:`8`" → "PEP 8".
"""

from __future__ import annotations

import re

# Directives whose indented body is prose. API descriptions ("function", "c:type", …) are
# recognised by their form instead (see `_is_description`).
PROSE_DIRECTIVES = {
    "admonition",
    "attention",
    "caution",
    "danger",
    "deprecated",
    "deprecated-removed",
    "glossary",
    "hint",
    "impl-detail",
    "important",
    "note",
    "only",
    "rubric",
    "seealso",
    "sidebar",
    "tip",
    "topic",
    "versionadded",
    "versionchanged",
    "warning",
}
# API descriptions: their argument is a signature (code), their body is prose.
DESCRIPTION_DIRECTIVES = {
    "attribute",
    "class",
    "classmethod",
    "cmdoption",
    "data",
    "decorator",
    "decoratormethod",
    "describe",
    "envvar",
    "exception",
    "function",
    "method",
    "opcode",
    "option",
    "pdbcommand",
    "property",
    "staticmethod",
    "type",
    "macro",
    "member",
    "var",
}
# What Sphinx prints for a version note's argument.
VERSION_NOTES = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}:",
    "deprecated": "Deprecated since version {}:",
    "deprecated-removed": "Deprecated since version {}, removed in version {}:",
}

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:.-]+)::\s*(.*)$")
_EXPLICIT_MARKUP = re.compile(r"^(\s*)\.\.(\s|$)")  # comments, labels, footnotes, substitutions
_ADORNMENT = re.compile(r"^\s*([=\-~^\"'`*+#:.<>_])\1{2,}\s*$")
_TABLE_BORDER = re.compile(r"^\s*(\+[-=+]+\+|=+( +=+)+)\s*$")
_BULLET = re.compile(r"^\s*([-*+•]|\d+\.|#\.)\s+")
_FIELD = re.compile(r"^\s*:[\w -]+:(\s|$)")

_ROLE = re.compile(r":(?:[\w-]+:)*([\w-]+):`((?:[^`\\]|\\.)+)`")
_LINK = re.compile(r"`((?:[^`\\]|\\.)+?)`__?")
_LITERAL = re.compile(r"``(.+?)``")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_FOOTNOTE_REF = re.compile(r"\s?\[(?:#\w*|\d+|\*)\]_")
_SUBSTITUTION = re.compile(r"\|([\w -]+)\|_?")


def _role_text(match: re.Match, labels: dict[str, str]) -> str:
    role, content = match.group(1), match.group(2)
    target = re.fullmatch(r"(.*?)\s*<([^<>]+)>", content, flags=re.S)
    if target and target.group(1):
        return target.group(1)  # explicit title: :ref:`the tutorial <tut-intro>`
    content = target.group(2) if target else content
    if role == "ref":  # Sphinx shows the title of the section the label points to
        return labels.get(content.lower(), content)
    if role in ("pep", "rfc"):
        return f"{role.upper()} {content.split('#')[0]}"
    content = content.lstrip("!")  # "!name": no cross-reference, same text
    if content.startswith("~"):  # "~a.b.c": show only the last component
        content = content[1:].rsplit(".", 1)[-1]
    return content


def _link_text(match: re.Match) -> str:
    content = match.group(1)
    target = re.fullmatch(r"(.*?)\s*<([^<>]+)>", content, flags=re.S)
    return target.group(1) if target and target.group(1) else content


def inline_text(text: str, labels: dict[str, str] | None = None) -> str:
    """Inline reStructuredText markup → the words a reader sees. `labels` maps the targets of
    `:ref:` to section titles (see `section_labels`)."""
    text = _ROLE.sub(lambda match: _role_text(match, labels or {}), text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(_link_text, text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _SUBSTITUTION.sub(r"\1", text)
    text = text.replace("\\ ", "")  # an escaped space joins words: "word\ s" → "words"
    text = re.sub(r"\\(.)", r"\1", text)
    return re.sub(r"\s+", " ", text)


_LABEL = re.compile(r"^\.\.\s+_([^:]+):\s*$")


def section_labels(source: str) -> dict[str, str]:
    """`{label: title}` for each `.. _label:` that stands right above a section title, so that
    `:ref:` becomes the title, as Sphinx shows it. Labels are case-insensitive."""
    lines = [line for line in source.expandtabs(8).splitlines() if line.strip()]
    labels, pending = {}, []
    for i, line in enumerate(lines):
        if label := _LABEL.match(line):
            pending.append(label.group(1).strip().lower())
            continue
        if _ADORNMENT.match(line):
            continue  # an overline: the labels are for the title below it
        if i + 1 < len(lines) and _ADORNMENT.match(lines[i + 1]):
            labels.update(dict.fromkeys(pending, inline_text(line.strip())))
        pending = []
    return labels


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_description(name: str) -> bool:
    """`function`, `py:method`, `c:function`, … (domain prefixes like `py:` and `c:`)."""
    return name.rsplit(":", 1)[-1] in DESCRIPTION_DIRECTIVES


def _version_note(name: str, argument: str) -> str:
    """`.. versionchanged:: 3.2 Text` → "Changed in version 3.2: Text", as Sphinx prints it."""
    template = VERSION_NOTES[name]
    n_versions = template.count("{}")
    words = argument.split(None, n_versions)
    if len(words) < n_versions:
        return argument
    return " ".join([template.format(*words[:n_versions]), *words[n_versions:]])


def _literal_intro(text: str) -> tuple[str, bool]:
    """A paragraph ending in "::" introduces a literal block: "Example::" reads "Example:", and
    "Example ::" reads "Example". Returns the text and whether a literal block follows."""
    if not text.endswith("::"):
        return text, False
    text = text[:-2]
    return (text.rstrip() if text.endswith(" ") else text + ":"), True


class _Converter:
    """One pass over the lines; `paragraph` collects the lines of the paragraph being read."""

    def __init__(self, source: str, labels: dict[str, str]) -> None:
        self.lines = source.expandtabs(8).splitlines()
        self.labels = labels
        self.i = 0
        self.paragraphs: list[str] = []
        self.paragraph: list[str] = []
        self.paragraph_indent = 0  # where the paragraph (or its list item's marker) starts
        # The indent of its continuation lines; None: the next line sets it (directive bodies).
        self.continuation_indent: int | None = 0
        self.in_list_item = False

    def peek(self, offset: int = 0) -> str:
        i = self.i + offset
        return self.lines[i] if i < len(self.lines) else ""

    def skip_block(self, deeper_than: int) -> None:
        """Skip blank lines and lines indented more than `deeper_than` columns."""
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and _indent(line) <= deeper_than:
                return
            self.i += 1

    def skip_until_blank(self) -> None:
        while self.i < len(self.lines) and self.lines[self.i].strip():
            self.i += 1

    def skip_table(self, grid: bool) -> None:
        """A grid table is contiguous lines; a simple table ends at a border followed by a blank
        line (its rows may be separated by blank lines, and the header separator is no end)."""
        if grid:
            self.skip_until_blank()
            return
        while self.i < len(self.lines):
            line = self.lines[self.i]
            self.i += 1
            if _TABLE_BORDER.match(line) and not self.peek().strip():
                return

    def flush(self) -> None:
        """End the current paragraph; if it introduced a literal block, skip the block."""
        if not self.paragraph:
            return
        text = inline_text(" ".join(self.paragraph), self.labels).strip()
        text, literal_follows = _literal_intro(text)
        if text:
            self.paragraphs.append(text)
        self.paragraph.clear()
        if literal_follows:
            self.skip_block(deeper_than=self.paragraph_indent)

    def start(
        self, text: str, indent: int, continuation_indent: int | None, list_item: bool = False
    ) -> None:
        self.flush()
        self.paragraph.append(text)
        self.paragraph_indent, self.continuation_indent = indent, continuation_indent
        self.in_list_item = list_item

    def _starts_list_item(self, indent: int) -> bool:
        """A line that looks like a list item ("- x", "+ 12") is one after a blank line or in
        the marker column of the item before; anywhere else it is text that wrapped."""
        return not self.paragraph or (self.in_list_item and indent == self.paragraph_indent)

    def directive(self, indent: int, name: str, argument: str) -> None:
        self.flush()
        if name in PROSE_DIRECTIVES or _is_description(name):
            # Options (":noindex:") and, for API descriptions, further signatures sit right
            # under the directive, before the blank line that opens its body.
            while self.peek().strip() and (_is_description(name) or _FIELD.match(self.peek())):
                self.i += 1
            if _is_description(name):
                self.start(argument, indent, indent)  # the signature, as a heading
                self.flush()
            elif name in VERSION_NOTES:
                self.start(_version_note(name, argument), indent, None)
            elif argument and name in PROSE_DIRECTIVES and name != "only":
                self.start(argument, indent, None)  # an admonition's title or first words
        else:
            self.skip_block(deeper_than=indent)

    def convert(self) -> str:
        while self.i < len(self.lines):
            line = self.lines[self.i]
            indent, stripped = _indent(line), line.strip()
            self.i += 1
            if not stripped:
                self.flush()
            elif match := _DIRECTIVE.match(line):
                self.directive(indent, match.group(2), match.group(3).strip())
            elif _EXPLICIT_MARKUP.match(line) or _FIELD.match(line) or stripped == "::":
                # A comment, label, footnote, substitution, field, or bare literal-block marker.
                self.flush()
                self.skip_block(deeper_than=indent)
            elif stripped.startswith(">>>"):  # an interactive session
                self.flush()
                self.skip_until_blank()
            elif _TABLE_BORDER.match(line):
                self.flush()
                self.skip_table(grid=stripped.startswith("+"))
            elif _ADORNMENT.match(line):
                self.flush()  # a title's underline or overline, or a transition
            elif _ADORNMENT.match(self.peek()) and len(self.peek().strip()) >= len(stripped):
                self.start(stripped, indent, indent)  # a section title
                self.flush()
            elif (bullet := _BULLET.match(line)) and self._starts_list_item(indent):
                self.start(stripped, indent, bullet.end(), list_item=True)
            elif self.paragraph and self.continuation_indent in (None, indent):
                self.paragraph.append(stripped)
                self.continuation_indent = indent
            else:
                self.start(stripped, indent, indent)
        self.flush()
        return "\n\n".join(self.paragraphs)


def rst_to_prose(source: str, labels: dict[str, str] | None = None) -> str:
    """Prose paragraphs of a reStructuredText document, one per line, separated by blank lines.
    `labels` resolves `:ref:` across documents (default: this document's `section_labels`)."""
    return _Converter(source, section_labels(source) if labels is None else labels).convert()
