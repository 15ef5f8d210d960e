"""Jane Austen's six novels from Debian's ``r-cran-janeaustenr`` (R lazy-load data).

The package stores its data as an R lazy-load database: ``data/Rdata.rdx`` is a gzip-compressed
R serialization of ``list(variables = list(<name> = c(offset, length)), references, compressed)``
and each ``Rdata.rdb`` record at ``offset`` is a 4-byte big-endian length followed by a compressed
R serialization of the object (here a character vector, one element per printed line).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import struct
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from userlibri.data.books import Book
from userlibri.data.gutenberg import split_chapters, strip_gutenberg
from userlibri.errors import DataFormatError

log = logging.getLogger(__name__)

PACKAGE = "r-cran-janeaustenr"
DATA_DIR = Path("usr/lib/R/site-library/janeaustenr/data")


@dataclass(frozen=True)
class AustenNovel:
    """An R variable of the package and the Project Gutenberg book it holds."""

    variable: str
    book_id: str
    title: str
    chapters: int  # as printed in the first edition; checked after splitting


NOVELS = (
    AustenNovel("sensesensibility", "161", "Sense and Sensibility", 50),
    AustenNovel("prideprejudice", "1342", "Pride and Prejudice", 61),
    AustenNovel("mansfieldpark", "141", "Mansfield Park", 48),
    AustenNovel("emma", "158", "Emma", 55),
    AustenNovel("northangerabbey", "121", "Northanger Abbey", 31),
    AustenNovel("persuasion", "105", "Persuasion", 24),
)
BOOK_IDS = tuple(n.book_id for n in NOVELS)


def _parse_r(data: bytes, path: Path) -> Any:
    """Convert one R serialization (XDR, ASCII or native) to Python objects with ``rdata``."""
    from rdata.conversion import convert
    from rdata.parser import parse_data

    try:
        with warnings.catch_warnings():
            # rdata warns that a bare serialization has no RDS/RDA magic; that is expected here.
            warnings.simplefilter("ignore", UserWarning)
            return convert(parse_data(data, expand_altrep=True))
    except Exception as e:  # rdata raises many kinds of errors on malformed input
        raise DataFormatError(path, "an R serialization", f"{type(e).__name__}: {e}") from e


def _decompress_record(rec: bytes, mode: int, path: Path, name: str) -> bytes:
    """Decompress one lazy-load record (R's ``R_decompress1/2/3`` for compress = 1, 2, 3)."""
    if len(rec) < 5:
        raise DataFormatError(path, f"a record for {name!r} of at least 5 bytes", f"{len(rec)} bytes")
    (size,) = struct.unpack(">I", rec[:4])
    body = rec[4:]
    try:
        if mode == 1:
            out = zlib.decompress(body)
        else:
            kind, payload = body[:1], body[1:]
            if kind == b"0":
                out = payload
            elif kind == b"Z":
                out = zlib.decompress(payload)
            elif kind == b"2":
                out = bz2.decompress(payload)
            elif kind == b"X":
                out = lzma.decompress(payload)
            else:
                raise DataFormatError(path, "a record type byte 0, Z, 2 or X", repr(kind))
    except (zlib.error, OSError, lzma.LZMAError) as e:
        raise DataFormatError(path, f"a compressed record for {name!r}", repr(e)) from e
    if len(out) != size:
        raise DataFormatError(path, f"record {name!r} of {size} bytes uncompressed", f"{len(out)} bytes")
    return out


def read_lazyload_db(rdx: Path, rdb: Path) -> dict[str, Any]:
    """All variables of an R lazy-load database (``.rdx`` index + ``.rdb`` records)."""
    try:
        index = _parse_r(gzip.decompress(rdx.read_bytes()), rdx)
    except (OSError, EOFError) as e:
        raise DataFormatError(rdx, "a gzip-compressed R lazy-load index", repr(e)) from e
    if not isinstance(index, Mapping) or not isinstance(index.get("variables"), Mapping):
        raise DataFormatError(rdx, "an index list with a 'variables' entry", type(index).__name__)
    compressed = index.get("compressed", True)
    try:
        mode = int(compressed[0]) if hasattr(compressed, "__len__") else int(compressed)
    except (TypeError, ValueError, IndexError) as e:
        raise DataFormatError(rdx, "'compressed' as TRUE, 2 or 3", repr(compressed)) from e
    if mode not in (1, 2, 3):
        raise DataFormatError(rdx, "'compressed' as TRUE, 2 or 3", repr(compressed))
    blob = rdb.read_bytes()
    out: dict[str, Any] = {}
    for key, pos in sorted(index["variables"].items()):
        name = str(key)
        try:
            offset, length = (int(v) for v in pos)
        except (TypeError, ValueError) as e:
            raise DataFormatError(rdx, f"(offset, length) for {name!r}", repr(pos)) from e
        if offset < 0 or length <= 0 or offset + length > len(blob):
            raise DataFormatError(rdb, f"record {name!r} at {offset}+{length}", f"a {len(blob)}-byte file")
        out[name] = _parse_r(_decompress_record(blob[offset : offset + length], mode, rdb, name), rdb)
    return out


def _lines(value: Any, path: Path, name: str) -> list[str]:
    """A character vector as Python strings (NA as empty lines)."""
    try:
        items = list(value)
    except TypeError as e:
        raise DataFormatError(path, f"{name!r} as a character vector", type(value).__name__) from e
    if not all(v is None or isinstance(v, str) for v in items):
        raise DataFormatError(path, f"{name!r} as a character vector", f"{type(items[0]).__name__} items")
    return ["" if v is None else str(v) for v in items]


def austen_books(root: Path, source: str) -> list[Book]:
    """The six novels from an unpacked ``r-cran-janeaustenr`` (``root`` is the ``dpkg-deb -x`` dir)."""
    data = root / DATA_DIR
    rdx, rdb = data / "Rdata.rdx", data / "Rdata.rdb"
    for p in (rdx, rdb):
        if not p.is_file():
            raise DataFormatError(p, "the janeaustenr lazy-load data file", "no such file")
    variables = read_lazyload_db(rdx, rdb)
    books = []
    for novel in NOVELS:
        if novel.variable not in variables:
            raise DataFormatError(rdx, f"a variable {novel.variable!r}", ", ".join(sorted(variables)))
        text = "\n".join(_lines(variables[novel.variable], rdb, novel.variable))
        chapters = split_chapters(strip_gutenberg(text))
        if len(chapters) != novel.chapters:
            log.warning(
                "%s: found %d chapters in %s, expected %d", rdb, len(chapters), novel.title, novel.chapters
            )
        if not chapters:
            raise DataFormatError(rdb, f"chapter headings in {novel.variable!r}", "none")
        books.append(
            Book(
                book_id=novel.book_id,
                title=novel.title,
                author="Jane Austen",
                chapters=tuple(chapters),
                source=source,
                kind="book",
            )
        )
    return books
