"""LibriSpeech metadata and layout: read AND write, in the real corpus formats.

Files handled (all UTF-8, ``;`` starts a comment line, fields are ``|``-separated and space-padded):

- ``SPEAKERS.TXT``: ``;ID  |SEX| SUBSET           |MINUTES| NAME``. The name is the last field and
  may itself contain ``|`` (the real file has a reader called `` |CBW|Simon``).
- ``CHAPTERS.TXT``: ``;ID    |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE | PROJECT TITLE``.
  BOOK ID is the Project Gutenberg id. Titles may contain ``|``.
- ``BOOKS.TXT``: ``;ID    |TITLE |AUTHOR``. Titles may contain ``|``; the author is the last field.
- Transcripts ``<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt``: ``<utt_id> <TRANSCRIPT>``
  lines; audio ``<speaker>-<chapter>-<utt>.flac`` beside it.
- Book texts as LibriSpeech's ``original-books`` release ships them:
  ``books/utf-8/<book_id>/<book_id>.txt.utf-8`` and ``books/ascii/<book_id>/<book_id>.txt``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from userlibri.errors import DataFormatError, UserLibriError
from userlibri.fsio import write_text_atomic

log = logging.getLogger(__name__)

SPEAKERS_FILE = "SPEAKERS.TXT"
CHAPTERS_FILE = "CHAPTERS.TXT"
BOOKS_FILE = "BOOKS.TXT"
BOOKS_DIR = "books"
TRANS_SUFFIX = ".trans.txt"
AUDIO_SUFFIX = ".flac"

_ID_RE = re.compile(r"^[0-9A-Za-z_]+$")
_UTT_RE = re.compile(r"^([0-9A-Za-z_]+)-([0-9A-Za-z_]+)-([0-9A-Za-z_]+)$")

_SPEAKERS_HEADER = """\
; Some pipe(|) separated metadata about all LibriVox readers, whose work was used
; in the corpus.
;
; The meaning of the fields in left-to-right order is as follows:
;
; reader_id: the ID of the reader in the LibriVox's database
; gender: 'F' for female, 'M' for male
; subset: the corpus subset to which the reader's audio is assigned
; duration: total number of minutes of speech by the reader, included in the corpus
; name: the name under which the reader is registered in LibriVox
;
;ID  |SEX| SUBSET           |MINUTES| NAME
"""

_CHAPTERS_HEADER = """\
; Some pipe(|) separated metadata about the audio chapters included in the corpus.
;
; The meaning of the fields in left-to-right order is as follows:
;
; chapter_id: the ID of the chapter in the LibriVox's database
; reader_id: the ID of the reader in the LibriVox's database
; duration: how many minutes of this chapter are used in the corpus
; subset: the corpus subset to which this chapter is assigned
; project_id: the LibriVox project ID
; book_id: the Project Gutenberg's ID for the book on which the LibriVox project is based
; chapter_title: the title of the chapter on LibriVox
; project_title: the title of the LibriVox project
;
;ID    |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE                    | PROJECT TITLE
"""

_BOOKS_HEADER = """\
; Some pipe(|) separated metadata about the Project Gutenberg books used in the corpus.
;
; The meaning of the fields in left-to-right order is as follows:
;
; book_id: the Project Gutenberg's ID of the book
; title: the title of the book
; author: the author(s) of the book
;
;ID    |TITLE                                                            |AUTHOR
"""


@dataclass(frozen=True)
class SpeakerInfo:
    """One line of SPEAKERS.TXT."""

    speaker_id: str
    sex: str
    subset: str
    minutes: float
    name: str


@dataclass(frozen=True)
class ChapterInfo:
    """One line of CHAPTERS.TXT. ``book_id`` is the Project Gutenberg id."""

    chapter_id: str
    speaker_id: str
    minutes: float
    subset: str
    project_id: str
    book_id: str
    chapter_title: str
    project_title: str


@dataclass(frozen=True)
class BookInfo:
    """One line of BOOKS.TXT."""

    book_id: str
    title: str
    author: str


@dataclass(frozen=True)
class LibriUtterance:
    """One utterance of a LibriSpeech-layout split."""

    utt_id: str
    speaker_id: str
    chapter_id: str
    audio_path: Path
    text: str


# ---------------------------------------------------------------- reading helpers


def _read_lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    """Non-comment, non-blank lines of a metadata file with 1-based line numbers."""
    path = Path(path)
    if not path.is_file():
        raise UserLibriError(f"{path}: no such {what} file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        # Legal but odd: old LibriSpeech metadata may hold a stray Latin-1 byte in a title or name.
        log.warning("%s: not UTF-8 (invalid byte at offset %d); reading it as Latin-1", path, err.start)
        text = raw.decode("latin-1")
    text = text.removeprefix("\ufeff")
    out = []
    for no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            continue
        out.append((no, line))
    return out


def _check_id(value: str, path: Path, no: int, field: str) -> str:
    if not _ID_RE.match(value):
        raise DataFormatError(path, f"{field} (letters, digits or '_')", repr(value), line=no)
    return value


def _minutes(value: str, path: Path, no: int) -> float:
    try:
        m = float(value)
    except ValueError:
        raise DataFormatError(path, "MINUTES as a number", repr(value), line=no) from None
    if m < 0 or m != m:
        raise DataFormatError(path, "MINUTES >= 0", repr(value), line=no)
    return m


def read_speakers(path: str | Path) -> dict[str, SpeakerInfo]:
    """Parse SPEAKERS.TXT into ``{speaker_id: SpeakerInfo}``."""
    path = Path(path)
    out: dict[str, SpeakerInfo] = {}
    for no, line in _read_lines(path, "SPEAKERS.TXT"):
        parts = line.split("|", 4)
        if len(parts) != 5:
            expected = "5 '|'-separated fields ID|SEX|SUBSET|MINUTES|NAME"
            raise DataFormatError(path, expected, f"{len(parts)} in {line!r}", line=no)
        sid, sex, subset, minutes, name = (p.strip() for p in parts)
        _check_id(sid, path, no, "speaker ID")
        if sex not in ("M", "F"):
            raise DataFormatError(path, "SEX 'M' or 'F'", repr(sex), line=no)
        if not subset:
            raise DataFormatError(path, "a SUBSET name", "an empty field", line=no)
        if sid in out:
            raise DataFormatError(path, "unique speaker IDs", f"a second line for {sid}", line=no)
        out[sid] = SpeakerInfo(sid, sex, subset, _minutes(minutes, path, no), name)
    return out


def _split_titles(rest: str) -> tuple[str, str]:
    """Split ``CH. TITLE | PROJECT TITLE`` when either title may itself hold ``|``."""
    parts = rest.split("|")
    if len(parts) == 2:
        return parts[0].strip(), parts[1].strip()
    # Ambiguous. The files pad the chapter-title column with spaces before its " | ", so take
    # the separator with the most whitespace before it (the first such on a tie).
    seps = [(len(m.group(1)), m.end(1)) for m in re.finditer(r"(\s*)\|", rest)]
    cut = max(seps, key=lambda t: (t[0], -t[1]))[1]
    return rest[:cut].strip(), rest[cut + 1 :].strip()


def read_chapters(path: str | Path) -> dict[str, ChapterInfo]:
    """Parse CHAPTERS.TXT into ``{chapter_id: ChapterInfo}``."""
    path = Path(path)
    out: dict[str, ChapterInfo] = {}
    for no, line in _read_lines(path, "CHAPTERS.TXT"):
        parts = line.split("|", 6)
        if len(parts) != 7 or "|" not in parts[6]:
            n = len(line.split("|"))
            raise DataFormatError(
                path,
                "8 '|'-separated fields ID|READER|MINUTES|SUBSET|PROJ.|BOOK ID|CH. TITLE|PROJECT TITLE",
                f"{n} in {line!r}",
                line=no,
            )
        cid, reader, minutes, subset, proj, book = (p.strip() for p in parts[:6])
        _check_id(cid, path, no, "chapter ID")
        _check_id(reader, path, no, "READER id")
        _check_id(book, path, no, "BOOK ID")
        if not subset:
            raise DataFormatError(path, "a SUBSET name", "an empty field", line=no)
        if cid in out:
            raise DataFormatError(path, "unique chapter IDs", f"a second line for {cid}", line=no)
        ch_title, proj_title = _split_titles(parts[6])
        out[cid] = ChapterInfo(
            chapter_id=cid,
            speaker_id=reader,
            minutes=_minutes(minutes, path, no),
            subset=subset,
            project_id=proj,
            book_id=book,
            chapter_title=ch_title,
            project_title=proj_title,
        )
    return out


def read_books(path: str | Path) -> dict[str, BookInfo]:
    """Parse BOOKS.TXT into ``{book_id: BookInfo}``; a missing AUTHOR column reads as ``""``."""
    path = Path(path)
    out: dict[str, BookInfo] = {}
    for no, line in _read_lines(path, "BOOKS.TXT"):
        parts = line.split("|")
        if len(parts) < 2:
            raise DataFormatError(path, "'|'-separated fields ID|TITLE|AUTHOR", repr(line), line=no)
        bid = _check_id(parts[0].strip(), path, no, "book ID")
        if len(parts) == 2:
            title, author = parts[1].strip(), ""
        else:
            title, author = "|".join(parts[1:-1]).strip(), parts[-1].strip()
        if bid in out:
            raise DataFormatError(path, "unique book IDs", f"a second line for {bid}", line=no)
        out[bid] = BookInfo(bid, title, author)
    return out


# ---------------------------------------------------------------- writing


def _no_newline(value: str, what: str) -> str:
    if "\n" in value or "\r" in value:
        raise UserLibriError(f"{what} must be a single line, got {value!r}")
    return value


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(ids, key=lambda s: (len(s), s) if s.isdigit() else (1 << 30, s))


def write_speakers(path: str | Path, speakers: Mapping[str, SpeakerInfo] | Iterable[SpeakerInfo]) -> None:
    """Write SPEAKERS.TXT (real column layout), sorted by numeric id."""
    items = {s.speaker_id: s for s in (speakers.values() if isinstance(speakers, Mapping) else speakers)}
    lines = [_SPEAKERS_HEADER.rstrip("\n")]
    for sid in _sorted_ids(items):
        s = items[sid]
        _check_id(s.speaker_id, Path(path), 0, "speaker ID")
        if s.sex not in ("M", "F"):
            raise UserLibriError(f"{path}: speaker {sid}: sex must be 'M' or 'F', got {s.sex!r}")
        name = _no_newline(s.name, f"speaker {sid} name")
        lines.append(f"{sid:<5}| {s.sex} | {s.subset:<17}| {s.minutes:5.2f} | {name}")
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_chapters(path: str | Path, chapters: Mapping[str, ChapterInfo] | Iterable[ChapterInfo]) -> None:
    """Write CHAPTERS.TXT (real column layout), sorted by numeric id."""
    items = {c.chapter_id: c for c in (chapters.values() if isinstance(chapters, Mapping) else chapters)}
    lines = [_CHAPTERS_HEADER.rstrip("\n")]
    for cid in _sorted_ids(items):
        c = items[cid]
        for field in ("chapter_id", "speaker_id", "book_id"):
            _check_id(getattr(c, field), Path(path), 0, field)
        title = _no_newline(c.chapter_title, f"chapter {cid} title")
        ptitle = _no_newline(c.project_title, f"chapter {cid} project title")
        lines.append(
            f"{cid:<7}| {c.speaker_id:<5}| {c.minutes:<6.2f}| {c.subset:<17}| {c.project_id:<5}| "
            f"{c.book_id:<6}| {title:<28} | {ptitle}"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_books(path: str | Path, books: Mapping[str, BookInfo] | Iterable[BookInfo]) -> None:
    """Write BOOKS.TXT, sorted by numeric id."""
    items = {b.book_id: b for b in (books.values() if isinstance(books, Mapping) else books)}
    lines = [_BOOKS_HEADER.rstrip("\n")]
    for bid in _sorted_ids(items):
        b = items[bid]
        _check_id(bid, Path(path), 0, "book ID")
        title = _no_newline(b.title, f"book {bid} title")
        author = _no_newline(b.author, f"book {bid} author")
        lines.append(f"{bid:<6}| {title:<64} | {author}")
    write_text_atomic(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------- transcripts and layout


def read_transcripts(path: str | Path) -> dict[str, str]:
    """Read one ``<spk>-<ch>.trans.txt`` file: ``{utt_id: TRANSCRIPT}`` in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserLibriError(f"{path}: no such transcript file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, "UTF-8 text", f"invalid byte at offset {err.start}") from err
    out: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise DataFormatError(path, "'<utt_id> <TRANSCRIPT>'", repr(line), line=no)
        utt, words = parts
        if not _UTT_RE.match(utt):
            raise DataFormatError(path, "an utterance id <speaker>-<chapter>-<n>", repr(utt), line=no)
        if utt in out:
            raise DataFormatError(path, "unique utterance ids", f"a second line for {utt}", line=no)
        out[utt] = " ".join(words.split())
    return out


def write_transcripts(path: str | Path, mapping: Mapping[str, str]) -> None:
    """Write a transcript file, one ``<utt_id> <TRANSCRIPT>`` line per utterance, sorted by id."""
    lines = []
    for utt in sorted(mapping):
        if not _UTT_RE.match(utt):
            raise UserLibriError(f"{path}: utterance id must be <speaker>-<chapter>-<n>, got {utt!r}")
        words = " ".join(mapping[utt].split())
        if not words:
            raise UserLibriError(f"{path}: empty transcript for {utt}")
        lines.append(f"{utt} {words}")
    write_text_atomic(path, "\n".join(lines) + "\n")


def transcript_path(root: str | Path, split: str, speaker_id: str, chapter_id: str) -> Path:
    """Where a chapter's transcript file lives in a LibriSpeech-layout corpus."""
    return Path(root) / split / speaker_id / chapter_id / f"{speaker_id}-{chapter_id}{TRANS_SUFFIX}"


def audio_path(root: str | Path, split: str, utt_id: str) -> Path:
    """Where an utterance's flac lives in a LibriSpeech-layout corpus."""
    m = _UTT_RE.match(utt_id)
    if not m:
        raise UserLibriError(f"utterance id must be <speaker>-<chapter>-<n>, got {utt_id!r}")
    return Path(root) / split / m.group(1) / m.group(2) / f"{utt_id}{AUDIO_SUFFIX}"


def iter_split(root: str | Path, split: str) -> Iterator[LibriUtterance]:
    """Utterances of ``<root>/<split>/<spk>/<ch>/`` in sorted order (audio existence is not checked).

    Every chapter directory must hold its ``<spk>-<ch>.trans.txt`` and every utterance id in it
    must start with ``<spk>-<ch>-``.
    """
    sdir = Path(root) / split
    if not sdir.is_dir():
        raise UserLibriError(
            f"{sdir}: no such split directory (expected <root>/{split}/<speaker>/<chapter>/)"
        )
    for spk_dir in sorted(p for p in sdir.iterdir() if p.is_dir()):
        for ch_dir in sorted(p for p in spk_dir.iterdir() if p.is_dir()):
            spk, ch = spk_dir.name, ch_dir.name
            tpath = ch_dir / f"{spk}-{ch}{TRANS_SUFFIX}"
            if not tpath.is_file():
                raise UserLibriError(f"{ch_dir}: no transcript file {tpath.name}")
            for utt, text in sorted(read_transcripts(tpath).items()):
                if not utt.startswith(f"{spk}-{ch}-"):
                    raise DataFormatError(tpath, f"utterance ids starting with {spk}-{ch}-", repr(utt))
                yield LibriUtterance(utt, spk, ch, ch_dir / f"{utt}{AUDIO_SUFFIX}", text)


# ---------------------------------------------------------------- book texts


def book_text_path(root: str | Path, book_id: str) -> Path:
    """Where the UTF-8 text of ``book_id`` lives: ``<root>/books/utf-8/<id>/<id>.txt.utf-8``.

    This is the path we write; ``find_book_text`` also accepts the release's other variants.
    """
    return Path(root) / BOOKS_DIR / "utf-8" / book_id / f"{book_id}.txt.utf-8"


def book_text_candidates(root: str | Path, book_id: str) -> list[Path]:
    """Paths tried for a book's text, in order of preference."""
    base = Path(root) / BOOKS_DIR
    return [
        book_text_path(root, book_id),
        base / "utf-8" / book_id / f"{book_id}.txt",
        base / "ascii" / book_id / f"{book_id}.txt",
        base / "ascii" / book_id / f"{book_id}.txt.ascii",
    ]


def find_book_text(root: str | Path, book_id: str) -> Path | None:
    """The first existing text file for ``book_id`` under ``root``, or None."""
    for p in book_text_candidates(root, book_id):
        if p.is_file():
            return p
    return None


def read_book_text(path: str | Path) -> str:
    """Read a book text file as UTF-8 (a BOM is dropped); non-UTF-8 bytes are an error."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        bad = f"invalid byte 0x{err.object[err.start]:02x} at offset {err.start}"
        raise DataFormatError(path, "UTF-8 text", bad) from err
    return text.removeprefix("\ufeff")
