"""Tests for userlibri.text.sentences (sentence splitting of raw book prose)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userlibri.text.sentences import split_sentences

PARAGRAPH = """CHAPTER I.
THE BEGINNING

Mr. and Mrs. Dursley, of No. 4 Privet Drive, were proud to say that they were
perfectly normal, thank you very much. "Go!" he said. "Why?" She asked... Then
she left. J. R. R. Tolkien wrote it in 1937. The value was 3.5 per cent, e.g. not much.
"Stop!" cried Capt. Smith. It was said by I. Then St. Paul's rang out! Did it? Yes.
He lived in the U.S. for years. 'Go home.' She went.

* * *

Chapter 2: The Storm
It rained."""

EXPECTED = [
    "CHAPTER I.",
    "THE BEGINNING",
    "Mr. and Mrs. Dursley, of No. 4 Privet Drive, were proud to say that they were perfectly normal, "
    "thank you very much.",
    '"Go!" he said.',
    '"Why?"',
    "She asked...",
    "Then she left.",
    "J. R. R. Tolkien wrote it in 1937.",
    "The value was 3.5 per cent, e.g. not much.",
    '"Stop!" cried Capt. Smith.',
    "It was said by I.",
    "Then St. Paul's rang out!",
    "Did it?",
    "Yes.",
    "He lived in the U.S. for years.",
    "'Go home.'",
    "She went.",
    "Chapter 2: The Storm",
    "It rained.",
]


def test_realistic_paragraph() -> None:
    assert split_sentences(PARAGRAPH) == EXPECTED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   \n\n  \n", []),
        ("One sentence without a full stop", ["One sentence without a full stop"]),
        ("First. Second. Third.", ["First.", "Second.", "Third."]),
        # newlines inside a paragraph are spaces; blank lines are hard boundaries
        ("A sentence that\nwraps over lines. Next.", ["A sentence that wraps over lines.", "Next."]),
        ("No full stop here\n\nnew paragraph", ["No full stop here", "new paragraph"]),
        ("CRLF line\r\n\r\nbreaks here.", ["CRLF line", "breaks here."]),
        # abbreviations and titles
        ("Mr. Smith met Dr. Jones at St. Paul's.", ["Mr. Smith met Dr. Jones at St. Paul's."]),
        (
            "Col. Brandon and Lieut. Price came. Gen. Tilney left.",
            ["Col. Brandon and Lieut. Price came.", "Gen. Tilney left."],
        ),
        ("See No. 5 for details. No. It is not.", ["See No. 5 for details.", "No.", "It is not."]),
        ("Fruit, e.g. apples, i.e. red ones. Good.", ["Fruit, e.g. apples, i.e. red ones.", "Good."]),
        ("Smith vs. Jones was decided. Then more.", ["Smith vs. Jones was decided.", "Then more."]),
        ("Pens, ink, etc. were bought.", ["Pens, ink, etc. were bought."]),
        ("He lived in 55 B.C. Rome.", ["He lived in 55 B.C. Rome."]),
        # initials
        (
            "J. R. R. Tolkien wrote books. George R. R. Martin too.",
            ["J. R. R. Tolkien wrote books.", "George R. R. Martin too."],
        ),
        ("Then came I. After that, silence.", ["Then came I.", "After that, silence."]),
        # quotes after terminal punctuation
        ('"Go!" he said.', ['"Go!" he said.']),
        ('"Go!" He went.', ['"Go!"', "He went."]),
        ('"Is it?" she asked. "Yes."', ['"Is it?" she asked.', '"Yes."']),
        (
            "He said, \u201cCome here.\u201d Then he left.",
            ["He said, \u201cCome here.\u201d", "Then he left."],
        ),
        ("\u2018Stop!\u2019 cried he. \u2018Now!\u2019", ["\u2018Stop!\u2019 cried he.", "\u2018Now!\u2019"]),
        ("(This is aside.) Then more.", ["(This is aside.)", "Then more."]),
        # ellipses and repeated punctuation
        ("Well... I suppose so.", ["Well...", "I suppose so."]),
        ("Well... perhaps not.", ["Well... perhaps not."]),
        ("Wait\u2026 What?! Really!!", ["Wait\u2026", "What?!", "Really!!"]),
        # numbers
        ("It was 3.5 miles. Then 2.75 more.", ["It was 3.5 miles.", "Then 2.75 more."]),
        ("In 1811. 1812 was worse.", ["In 1811.", "1812 was worse."]),
        # headings
        ("CHAPTER XIV.\nIt was late.", ["CHAPTER XIV.", "It was late."]),
        ("Chapter 3. The Storm\n\nIt rained.", ["Chapter 3. The Storm", "It rained."]),
        ("XIV.\n\nA new chapter. Began.", ["XIV.", "A new chapter.", "Began."]),
        ("BOOK I\nTHE RETURN\n\nText here.", ["BOOK I", "THE RETURN", "Text here."]),
        ("Part of the day was spent. Then night.", ["Part of the day was spent.", "Then night."]),
        ("Book I read was long. It ended.", ["Book I read was long.", "It ended."]),
        ("PREFACE\n\nThis book. Is good.", ["PREFACE", "This book.", "Is good."]),
        ("I\nwent home. Then slept.", ["I went home.", "Then slept."]),
        # separators are dropped
        ("* * *", []),
        ("End.\n\n* * * * *\n\nStart.", ["End.", "Start."]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


_PIECES = [*"ab AB.!?\"'\n,IMr", "Mr.", "...", "\n\n", "CHAPTER"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))
def test_split_properties(text: str) -> None:
    out = split_sentences(text)
    for s in out:
        assert s and s == s.strip()
        assert "\n" not in s
    # nothing but whitespace (and dropped punctuation-only fragments) is lost, order is kept
    joined = "".join("".join(out).split())
    original = "".join(text.split())
    it = iter(original)
    assert all(ch in it for ch in joined)
