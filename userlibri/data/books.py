"""Book texts: the in-memory model and the on-disk cache format shared by ``corpora fetch``
(which writes it), ``synth`` (which reads books aloud) and ``build`` (which makes LM text).

On disk a book is one UTF-8 file, ``<book_id>.txt``: optional front matter (title, author lines),
then each chapter starting with a line ``## <chapter title>`` followed by its paragraphs separated
by blank lines. A source line that itself starts with ``## `` is written as ``\\## `` and read back
unchanged. A corpus directory holds the files plus ``manifest.json`` (see ``BookManifestEntry``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from userlibri.errors import DataFormatError, UserLibriError
from userlibri.fsio import write_json_atomic, write_text_atomic

CHAPTER_MARK = "## "
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Chapter:
    """One chapter: its title as printed and its paragraphs (whitespace-normalised, no headings)."""

    title: str
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)

    @property
    def num_words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


@dataclass(frozen=True)
class Book:
    """A book (or a collection such as speeches) split into chapters."""

    book_id: str
    title: str
    author: str
    chapters: tuple[Chapter, ...]
    source: str = ""
    kind: str = "book"  # "book" or "speeches"

    @property
    def num_words(self) -> int:
        return sum(c.num_words for c in self.chapters)

    def to_text(self) -> str:
        """Serialise to the cache text format."""
        lines = [f"Title: {self.title}", f"Author: {self.author}", ""]
        for ch in self.chapters:
            lines.append(CHAPTER_MARK + ch.title)
            lines.append("")
            for p in ch.paragraphs:
                lines.append(_escape(p))
                lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"

    @classmethod
    def from_text(cls, text: str, book_id: str, path: str | Path = "<string>", **kw: str) -> Book:
        """Parse the cache text format. ``kw`` may give ``source`` and ``kind``."""
        title = author = ""
        chapters: list[Chapter] = []
        cur_title: str | None = None
        paras: list[str] = []
        buf: list[str] = []

        def flush_para() -> None:
            if buf:
                paras.append(" ".join(buf))
                buf.clear()

        def flush_chapter() -> None:
            flush_para()
            if cur_title is not None:
                chapters.append(Chapter(cur_title, tuple(paras)))
            paras.clear()

        for raw in text.splitlines():
            line = raw.strip()
            if raw.startswith(CHAPTER_MARK):
                flush_chapter()
                cur_title = raw[len(CHAPTER_MARK) :].strip()
            elif cur_title is None:
                if line.startswith("Title:"):
                    title = line[len("Title:") :].strip()
                elif line.startswith("Author:"):
                    author = line[len("Author:") :].strip()
            elif not line:
                flush_para()
            else:
                buf.append(_unescape(line))
        flush_chapter()
        if not chapters:
            raise DataFormatError(path, f"at least one chapter line starting with {CHAPTER_MARK!r}", "none")
        return cls(book_id=book_id, title=title, author=author, chapters=tuple(chapters), **kw)


def _escape(paragraph: str) -> str:
    return "\\" + paragraph if paragraph.startswith(CHAPTER_MARK) or paragraph.startswith("\\") else paragraph


def _unescape(line: str) -> str:
    return line[1:] if line.startswith("\\") else line


@dataclass(frozen=True)
class BookManifestEntry:
    """One line of a corpus manifest."""

    book_id: str
    title: str
    author: str
    source: str
    kind: str
    file: str
    num_chapters: int
    num_words: int
    sha256: str


@dataclass
class BookCorpus:
    """A directory of books in the cache format with a ``manifest.json``."""

    root: Path
    entries: dict[str, BookManifestEntry] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path) -> BookCorpus:
        root = Path(root)
        mpath = root / MANIFEST_NAME
        if not mpath.is_file():
            raise UserLibriError(f"{mpath}: no book corpus manifest; run 'userlibri corpora fetch' first")
        try:
            data = json.loads(mpath.read_text(encoding="utf-8"))
            entries = {e["book_id"]: BookManifestEntry(**e) for e in data["books"]}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataFormatError(mpath, "a corpus manifest {'version', 'books': [...]}", repr(e)) from e
        return cls(root=root, entries=dict(sorted(entries.items())))

    def book_ids(self) -> list[str]:
        return sorted(self.entries)

    def load(self, book_id: str, verify: bool = False) -> Book:
        """Read one book; with ``verify`` check its sha256 against the manifest."""
        if book_id not in self.entries:
            raise UserLibriError(
                f"{self.root / MANIFEST_NAME}: no book {book_id!r}; have {', '.join(self.book_ids())}"
            )
        e = self.entries[book_id]
        path = self.root / e.file
        raw = path.read_bytes()
        if verify and hashlib.sha256(raw).hexdigest() != e.sha256:
            raise DataFormatError(path, f"sha256 {e.sha256}", hashlib.sha256(raw).hexdigest())
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataFormatError(path, "UTF-8 text", f"invalid byte at offset {err.start}") from err
        return Book.from_text(text, book_id, path, source=e.source, kind=e.kind)

    def books(self) -> Iterable[Book]:
        for book_id in self.book_ids():
            yield self.load(book_id)

    def add(self, book: Book) -> BookManifestEntry:
        """Write ``book`` atomically and update the manifest."""
        fname = f"{book.book_id}.txt"
        text = book.to_text()
        write_text_atomic(self.root / fname, text)
        entry = BookManifestEntry(
            book_id=book.book_id,
            title=book.title,
            author=book.author,
            source=book.source,
            kind=book.kind,
            file=fname,
            num_chapters=len(book.chapters),
            num_words=book.num_words,
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )
        self.entries[book.book_id] = entry
        self.entries = dict(sorted(self.entries.items()))
        self.save_manifest()
        return entry

    def save_manifest(self) -> None:
        write_json_atomic(
            self.root / MANIFEST_NAME,
            {"version": MANIFEST_VERSION, "books": [asdict(e) for e in self.entries.values()]},
        )

    @classmethod
    def create(cls, root: str | Path) -> BookCorpus:
        """Open an existing corpus at ``root`` or start an empty one."""
        root = Path(root)
        if (root / MANIFEST_NAME).is_file():
            return cls.open(root)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root=root)
