"""Project Gutenberg boilerplate stripping and chapter splitting."""

from __future__ import annotations

from pathlib import Path

import pytest

from userlibri.data.gutenberg import (
    clean_paragraph,
    is_skipped_heading,
    paragraphs,
    split_chapters,
    strip_gutenberg,
)

DATA = Path(__file__).parent / "data" / "corpora"


def _read(name: str) -> str:
    # newline="" keeps the fixture's CRLF line ends, as a Gutenberg file read in binary-safe mode has.
    with open(DATA / name, encoding="utf-8", newline="") as f:
        return f.read()


# --- strip_gutenberg ------------------------------------------------------------------------------


def test_strip_modern_ebook_keeps_only_the_body() -> None:
    raw = _read("gutenberg_modern.txt")
    assert "\r\n" in raw and raw.startswith("\ufeff")
    body = strip_gutenberg(raw)
    assert body.startswith("CHAPTER I.\nThe Lamp on Fen Street\n\nEvery evening at dusk")
    assert body.rstrip().endswith("THE END")
    for gone in (
        "Project Gutenberg",
        "Produced by",
        "Release Date",
        "CONTENTS",
        "PREFACE",  # front matter before the first chapter
        "LONDON: PRINTED",
        "FULL LICENSE",
        "\r",
        "\ufeff",
    ):
        assert gone not in body, gone


def test_strip_old_small_print_header_and_footer() -> None:
    body = strip_gutenberg(_read("gutenberg_old.txt"))
    assert body.startswith("BOOK ONE\n\nI.\n\nThe miller rose before the sun")
    assert body.rstrip().endswith("about the miller and the stream.")
    for gone in ("SMALL PRINT", "lawyers", "prepared by", "FOUR SHORT CHAPTERS", "End of The Project"):
        assert gone not in body, gone


def test_strip_without_markers_or_chapters_drops_credits_and_contents() -> None:
    text = (
        "Produced by Somebody Kind.\n\n"
        "CONTENTS\n\nThe Hill\nThe River\n\n"
        "The hill was green and the river ran below it all summer long.\n\n"
        "Nobody lived there, which suited the hill.\n"
    )
    body = strip_gutenberg(text)
    assert body == (
        "The hill was green and the river ran below it all summer long.\n\n"
        "Nobody lived there, which suited the hill.\n"
    )


def test_strip_footer_without_header() -> None:
    text = (
        "CHAPTER 1\n\n"
        + "word " * 30
        + "\n\nEnd of Project Gutenberg's Something, by Someone\n\nlicence text\n"
    )
    body = strip_gutenberg(text)
    assert "licence" not in body and "End of" not in body
    assert body.startswith("CHAPTER 1\n\nword word")


# --- split_chapters -------------------------------------------------------------------------------


def test_split_modern_fixture_end_to_end() -> None:
    chapters = split_chapters(strip_gutenberg(_read("gutenberg_modern.txt")))
    assert [c.title for c in chapters] == [
        "CHAPTER I. The Lamp on Fen Street",
        "CHAPTER II. A Letter from the Coast",
        "CHAPTER III. The Return",
    ]
    first = chapters[0].paragraphs
    assert len(first) == 3
    assert first[0].startswith(
        "Every evening at dusk old Tobias Hale walked the length of Fen Street with his"
    )
    assert "\n" not in first[0] and "  " not in first[0]
    assert first[2].startswith("It was the first winter")  # _first_ emphasis removed
    assert not any("Illustration" in p for p in first)
    assert chapters[-1].paragraphs[-1] == '"Forty-two," they said together, and it was the end of the story.'
    assert all("THE END" not in p for c in chapters for p in c.paragraphs)


def test_split_parts_prefix_restarting_chapter_numbers() -> None:
    chapters = split_chapters(strip_gutenberg(_read("gutenberg_old.txt")))
    assert [c.title for c in chapters] == ["BOOK ONE, I.", "BOOK ONE, II.", "BOOK TWO, I.", "BOOK TWO, II."]
    assert len({c.title for c in chapters}) == len(chapters)


BODY = "The rain came down all afternoon and nobody in the village went out of doors at all."


@pytest.mark.parametrize(
    ("heading", "title"),
    [
        ("CHAPTER I", "CHAPTER I"),
        ("Chapter 1", "Chapter 1"),
        ("CHAPTER XIV.", "CHAPTER XIV."),
        ("CHAPTER 1. Loomings.", "CHAPTER 1. Loomings."),
        ("Chapter 12: The Storm", "Chapter 12: The Storm"),
        ("CHAPTER THE FIRST", "CHAPTER THE FIRST"),
        ("CHAPTER TWENTY-ONE", "CHAPTER TWENTY-ONE"),
        ("Chap. IV.", "Chap. IV."),
        ("STAVE ONE", "STAVE ONE"),
        ("XIV.", "XIV."),
        ("IV", "IV"),
        ("12.", "12."),
        ("CHAPTER I.\nDown the Rabbit-Hole", "CHAPTER I. Down the Rabbit-Hole"),
        ("CHAPTER I\n\nTHE RETURN OF THE NATIVE", "CHAPTER I. THE RETURN OF THE NATIVE"),
        ("PROLOGUE", "PROLOGUE"),
        ("BOOK ONE", "BOOK ONE"),
        ("Part 2", "Part 2"),
    ],
)
def test_heading_styles(heading: str, title: str) -> None:
    text = f"Some front matter.\n\n{heading}\n\n{BODY}\n\n{heading}\n\n{BODY} Again.\n"
    chapters = split_chapters(text)
    assert [c.title for c in chapters] == [title, title]
    assert [c.paragraphs for c in chapters] == [(BODY,), (BODY + " Again.",)]


@pytest.mark.parametrize(
    "line",
    [
        "Chapter 5 of the statute says that the miller owns the water.",
        "I said nothing to him about it.",
        '"Book two!" she cried, "where is book two?"',
        "Volume and weight were what mattered to the grocer.",
        "It was a dark night.",
    ],
)
def test_text_lines_are_not_headings(line: str) -> None:
    text = f"CHAPTER I\n\n{BODY}\n\n{line}\n\n{BODY}\n"
    chapters = split_chapters(text)
    assert len(chapters) == 1
    assert chapters[0].paragraphs == (BODY, line, BODY)


def test_volumes_contents_back_matter_and_end_lines() -> None:
    text = "\n\n".join(
        [
            "EMMA",
            "CONTENTS",
            "CHAPTER I. One\nCHAPTER II. Two\nCHAPTER III. Three",
            "VOLUME I",
            "CHAPTER I",
            BODY,
            "CHAPTER II",
            BODY,
            "END OF VOLUME I.",
            "VOLUME II",
            "CHAPTER I",
            BODY,
            "* * * * *",
            "FINIS",
            "A NOTE ON THE TEXT",
            "This edition follows the first printing with modern spelling.",
        ]
    )
    chapters = split_chapters(text)
    assert [c.title for c in chapters] == [
        "VOLUME I, CHAPTER I",
        "VOLUME I, CHAPTER II",
        "VOLUME II, CHAPTER I",
    ]
    assert all(c.paragraphs == (BODY,) for c in chapters)


def test_contents_list_as_heading_lines_is_skipped_by_strip() -> None:
    toc = "\n\n".join(f"CHAPTER {n}. Title {n}." for n in range(1, 4))
    text = f"CONTENTS\n\n{toc}\n\nCHAPTER 1. Title 1.\n\n{BODY}\n\nCHAPTER 2. Title 2.\n\n{BODY}\n"
    chapters = split_chapters(strip_gutenberg(text))
    assert [c.title for c in chapters] == ["CHAPTER 1. Title 1.", "CHAPTER 2. Title 2."]


def test_part_with_own_text_becomes_a_chapter() -> None:
    text = f"BOOK ONE: 1805\n\n{BODY}\n\nCHAPTER I\n\n{BODY}\n"
    chapters = split_chapters(text)
    assert [c.title for c in chapters] == ["BOOK ONE: 1805", "BOOK ONE: 1805, CHAPTER I"]


def test_no_headings_is_one_chapter() -> None:
    assert split_chapters(f"{BODY}\n\n{BODY}\n", default_title="Speech")[0].title == "Speech"
    assert split_chapters("") == []
    assert split_chapters("\n\n* * *\n\n") == []


def test_clean_paragraph() -> None:
    assert clean_paragraph("  Cafe\u0301   _very_\n  nice [Illustration: a cup]  ") == "Caf\u00e9 very nice"
    assert clean_paragraph("* * * * *") == ""
    assert clean_paragraph("the sum of ____ for each") == "the sum of for each"
    assert clean_paragraph("snake_case_name stays") == "snake_case_name stays"


def test_paragraphs_and_skip_headings() -> None:
    assert paragraphs("a\r\nb\r\n\r\n\r\nc\n") == [["a", "b"], ["c"]]
    assert is_skipped_heading("TABLE OF CONTENTS") and is_skipped_heading("Contents.")
    assert not is_skipped_heading("CHAPTER I")
