"""The King James Bible (Project Gutenberg #10) from Debian's ``bible-kjv`` + ``bible-kjv-text``.

``bible-kjv-text`` ships the text in the Bible Retrieval System's own compressed format
(``usr/lib/bible.data``); ``bible-kjv`` ships the ``bible`` program that reads it. Both are unpacked
with ``dpkg-deb -x`` (no root) and the program is run with ``-p <data dir>`` over the whole range
``Gen1:1-Rev22:21`` in pretty-print mode, which prints ``<Book> <chapter>`` headings followed by
indented ``<verse> <text>`` lines. Chapters of the cache are the 66 books of the Bible; each verse
is one paragraph.
"""

from __future__ import annotations

import re
from pathlib import Path

from userlibri.data.books import Book, Chapter
from userlibri.data.gutenberg import clean_paragraph
from userlibri.data.sources.packages import run_tool
from userlibri.errors import DataFormatError

PROGRAM_PACKAGE = "bible-kjv"
TEXT_PACKAGE = "bible-kjv-text"
BOOK_ID = "10"
PROGRAM = Path("usr/bin/bible")
DATA_DIR = Path("usr/lib")
FULL_RANGE = "Gen1:1-Rev22:21"
NUM_BOOKS = 66

_HEADING = re.compile(r"^(?P<book>[1-3]?\s?[A-Z][A-Za-z ]*?)\s+(?P<chapter>\d+)$")
_VERSE = re.compile(r"^\s+(?P<verse>\d+)\s+(?P<text>\S.*)$")


def parse_pretty_output(text: str, origin: str = "bible output") -> list[Chapter]:
    """Parse ``bible``'s pretty-printed output into one chapter per book of the Bible.

    Lines are headings (``Genesis 1``), verses (``  1 In the beginning ...``), continuation lines
    of a wrapped verse (not indented, not a heading) or blank.
    """
    books: dict[str, list[str]] = {}
    current: list[str] | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _HEADING.match(line)
        if m and not line.startswith(" "):
            current = books.setdefault(m.group("book"), [])
            continue
        v = _VERSE.match(line)
        if current is None:
            raise DataFormatError(origin, "a '<Book> <chapter>' heading first", repr(line[:60]), lineno)
        if v:
            current.append(v.group("text"))
        elif current:
            current[-1] += " " + line.strip()
        else:
            raise DataFormatError(origin, "an indented '<verse> <text>' line", repr(line[:60]), lineno)
    chapters = []
    for name, verses in books.items():
        paras = tuple(p for p in (clean_paragraph(v) for v in verses) if p)
        if paras:
            chapters.append(Chapter(name, paras))
    return chapters


def kjv_book(root: Path, source: str, expected_books: int | None = None) -> Book:
    """The KJV Bible from ``root``, where both Debian packages were unpacked with ``dpkg-deb -x``.
    ``expected_books`` defaults to ``NUM_BOOKS`` (66)."""
    expected_books = NUM_BOOKS if expected_books is None else expected_books
    program = root / PROGRAM
    data = root / DATA_DIR / "bible.data"
    for p in (program, data):
        if not p.is_file():
            raise DataFormatError(p, f"a file unpacked from {PROGRAM_PACKAGE}/{TEXT_PACKAGE}", "no such file")
    # -l: never wrap lines; -p: where bible.data lies. stdin is closed so it never prompts.
    out = run_tool([str(program), "-l", "1000000", "-p", str(data.parent), FULL_RANGE])
    chapters = parse_pretty_output(out, origin=f"{program} {FULL_RANGE}")
    if len(chapters) != expected_books:
        raise DataFormatError(
            f"{program} {FULL_RANGE}", f"{expected_books} books of the Bible", f"{len(chapters)}"
        )
    return Book(
        book_id=BOOK_ID,
        title="The King James Version of the Bible",
        author="Anonymous",
        chapters=tuple(chapters),
        source=source,
        kind="book",
    )
