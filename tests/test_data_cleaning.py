"""Raw source formats → prose: reStructuredText, the tagged Brown corpus, WordNet, novels."""

from __future__ import annotations

from charter.data.cleaning import (
    brown_sentence,
    brown_to_prose,
    novel_chapters,
    parse_synset,
    unwrap_paragraphs,
    wordnet_synsets,
)
from charter.data.rst_prose import inline_text, rst_to_prose, section_labels

RST = """\
.. _tut-intro:

*******************
An Informal Preface
*******************

Python is an easy to learn, powerful programming language.  It has
efficient :term:`high-level data structures <data structure>` and a simple
approach to :ref:`object-oriented programming <tut-classes>`.

.. index:: single: interpreter

.. This comment spans
   two lines and is not prose.

For example::

   >>> print("hidden")
   hidden

The :func:`~os.path.join` function and the :class:`!Path` class are
described in :pep:`428`; see also ``pathlib`` and `the docs <https://docs.python.org>`_.

>>> 1 + 1
2

.. function:: spam(eggs, *, ham=None)
              spam(eggs, bacon)
   :noindex:

   Return *eggs* with **ham** [#]_.

   .. versionchanged:: 3.2
      Added the *bacon* parameter.

   .. code-block:: python

      spam(1)

.. note:: Notes are
   prose too.

+-------+-------+
| grid  | table |
+-------+-------+

=====  =====
simple table

a      b
=====  =====

* first item
  continues here ``0.1
  + 0.2``
* second item

A sum like ``1
+ 2`` wraps.

See :ref:`tut-intro`.
"""


def test_rst_keeps_prose_and_drops_code_tables_and_markup():
    assert rst_to_prose(RST).split("\n\n") == [
        "An Informal Preface",
        "Python is an easy to learn, powerful programming language. It has efficient "
        "high-level data structures and a simple approach to object-oriented programming.",
        "For example:",
        "The join function and the Path class are described in PEP 428; see also pathlib "
        "and the docs.",
        "spam(eggs, *, ham=None)",
        "Return eggs with ham.",
        "Changed in version 3.2: Added the bacon parameter.",
        "Notes are prose too.",
        "* first item continues here 0.1 + 0.2",
        "* second item",
        "A sum like 1 + 2 wraps.",
        "See An Informal Preface.",
    ]


def test_rst_literal_block_markers():
    assert rst_to_prose("Run it ::\n\n   code\n\nDone.") == "Run it\n\nDone."
    assert rst_to_prose("Like so::\n\n   code\n   more\n\nDone.") == "Like so:\n\nDone."
    assert rst_to_prose("::\n\n   code\n\nDone.") == "Done."


def test_rst_labels_resolve_across_documents():
    other = ".. _tut-classes:\n\nClasses\n=======\n\nText.\n"
    labels = section_labels(other)
    assert labels == {"tut-classes": "Classes"}
    assert rst_to_prose("See :ref:`tut-classes`.", labels) == "See Classes."
    assert rst_to_prose("See :ref:`unknown-label`.", labels) == "See unknown-label."


def test_inline_text():
    assert inline_text(r":mod:`os.path` and :meth:`str.split`\ s") == "os.path and str.splits"
    assert inline_text("*args* stays, 2 * 3 * 4 stays") == "args stays, 2 * 3 * 4 stays"
    assert inline_text(":rfc:`2822#section-3.3`") == "RFC 2822"


def test_brown_sentence_detokenises_with_quote_direction():
    tagged = (
        "``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd (/( twice/rb )/) ;/. "
        ";/. Mr./np Allen/np Jr./np ./. **zg/nn"
    )
    assert brown_sentence(tagged) == '"Only a handful", the jury said (twice); Mr. Allen Jr.'
    assert brown_sentence("Why/wrb ?/. ?/.") == "Why?"


def test_brown_paragraphs():
    raw = "\n\n\tThe/at jury/nn said/vbd ./.\nIt/pps agreed/vbd ./.\n\n\n\tNext/ap ./.\n"
    assert brown_to_prose(raw) == "The jury said. It agreed.\n\nNext."


SYNSET_LINE = (
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member "
    'of the genus Canis; occurs in many breeds; "the dog barked all night"; "a good dog"  '
)


def test_wordnet_synset():
    synset = parse_synset(SYNSET_LINE)
    assert synset.words == ["dog", "domestic dog", "Canis familiaris"]
    assert synset.part_of_speech == "noun" and synset.lexicographer_file == 5
    assert synset.definition == "a member of the genus Canis; occurs in many breeds"
    assert synset.examples == ['"the dog barked all night"', '"a good dog"']
    assert synset.to_text() == (
        "dog, domestic dog, Canis familiaris (noun): a member of the genus Canis; occurs in many "
        'breeds. For example: "the dog barked all night"; "a good dog".'
    )
    adjective = parse_synset("00001740 00 a 01 able(p) 0 000 | having the means")
    assert (
        adjective.words == ["able"] and adjective.to_text() == "able (adjective): having the means."
    )


def test_wordnet_file_skips_licence_header_and_names_bad_lines():
    data = "  1 This software and database is provided\n" + SYNSET_LINE + "\n"
    assert [s.words[0] for s in wordnet_synsets(data)] == ["dog"]
    try:
        list(wordnet_synsets("garbage line\n"))
    except ValueError as e:
        assert "not a WordNet synset line" in str(e) and "garbage line" in str(e)
    else:
        raise AssertionError("a malformed line must raise")


def test_novel_chapters():
    lines = [
        "EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "",
        "Emma Woodhouse, handsome, clever,", "and rich.", "", "It was _very_ well.",
        "", "CHAPTER II", "", "Mr. Weston was a native.", "", "VOLUME II", "",
    ]  # fmt: skip
    assert novel_chapters(lines) == [
        "EMMA\n\nCHAPTER I\n\nEmma Woodhouse, handsome, clever, and rich.\n\nIt was very well.",
        "EMMA\n\nCHAPTER II\n\nMr. Weston was a native.",
    ]
    assert novel_chapters(["A Fable", "", "Once upon", "a time."]) == [
        "A Fable\n\nOnce upon a time."
    ]
    assert unwrap_paragraphs(["snake_case_name stays"]) == "snake_case_name stays"
