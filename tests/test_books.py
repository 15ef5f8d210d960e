from pathlib import Path

import pytest

from userlibri.data.books import Book, BookCorpus, Chapter
from userlibri.errors import DataFormatError, UserLibriError


def _book() -> Book:
    return Book(
        book_id="42",
        title="A Test Book",
        author="Nobody",
        chapters=(
            Chapter("CHAPTER I.", ("It was a dark night.", "## Not a heading, a line of prose.")),
            Chapter("CHAPTER II.", ("\\Backslash first.", "Short.")),
        ),
        source="unit-test",
    )


def test_text_round_trip() -> None:
    b = _book()
    again = Book.from_text(b.to_text(), "42", source="unit-test")
    assert again == b
    assert again.num_words == b.num_words == 16


def test_from_text_requires_a_chapter() -> None:
    with pytest.raises(DataFormatError, match="x.txt: expected at least one chapter"):
        Book.from_text("Title: t\nAuthor: a\n\nno chapters here\n", "1", path="x.txt")


def test_corpus_add_open_load_verify(tmp_path: Path) -> None:
    corpus = BookCorpus.create(tmp_path / "c")
    entry = corpus.add(_book())
    assert entry.num_chapters == 2
    again = BookCorpus.open(tmp_path / "c")
    assert again.book_ids() == ["42"]
    assert again.load("42", verify=True) == _book()
    (tmp_path / "c" / "42.txt").write_text("## CHAPTER I.\n\ntampered\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="sha256"):
        again.load("42", verify=True)
    with pytest.raises(UserLibriError, match="no book '7'"):
        again.load("7")


def test_corpus_rejects_non_utf8_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(UserLibriError, match="corpora fetch"):
        BookCorpus.open(tmp_path)
    corpus = BookCorpus.create(tmp_path)
    corpus.add(_book())
    (tmp_path / "42.txt").write_bytes(b"## CHAPTER I.\n\n\xff\xfe\n")
    with pytest.raises(DataFormatError, match="UTF-8"):
        corpus.load("42")
