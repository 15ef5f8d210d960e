"""Read a UserLibri release: what ``userlibri build`` writes, or an official download unchanged.

Layout (the root may also be the directory that holds ``UserLibri/``)::

    audio_data/<split>/speaker-S-book-B/*.txt + *.flac     transcript lines "<utt_id> <TRANSCRIPT>"
    audio_data/metadata.tsv                                 optional here
    lm_data/<book_id>_lm_train.txt                          one sentence a line
    lm_data/metadata.tsv                                    optional here
    manifests/<split>.jsonl                                 optional (ours): durations, chapters

Without manifests, utterances come from the transcript files and durations from the flac headers.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from userlibri.constants import TEST_SPLITS
from userlibri.data import librispeech as ls
from userlibri.data.manifest import Utterance, read_manifest
from userlibri.data.userlibri import (
    AUDIO_DIR,
    AUDIO_METADATA_HEADER,
    LM_DIR,
    LM_METADATA_HEADER,
    LM_SUFFIX,
    MANIFEST_DIR,
    METADATA,
    id_order,
)
from userlibri.errors import DataFormatError, UserLibriError

log = logging.getLogger(__name__)

_USER_RE = re.compile(r"^speaker-([0-9A-Za-z_]+)-book-([0-9A-Za-z_]+)$")


@dataclass(frozen=True)
class User:
    """One UserLibri user: a speaker reading one book within a split."""

    user_id: str
    split: str
    speaker: str
    book: str
    num_utterances: int


def parse_user_id(user_id: str) -> tuple[str, str]:
    """``speaker-S-book-B`` -> ``(S, B)``."""
    m = _USER_RE.match(user_id)
    if not m:
        raise UserLibriError(f"user id must look like speaker-<S>-book-<B>, got {user_id!r}")
    return m.group(1), m.group(2)


class Dataset:
    """A UserLibri release on disk."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        for cand in (root, root / "UserLibri"):
            if (cand / AUDIO_DIR).is_dir() or (cand / LM_DIR).is_dir():
                self.root = cand
                break
        else:
            raise UserLibriError(f"{root}: not a UserLibri release (expected {AUDIO_DIR}/ and {LM_DIR}/)")
        self._utts: dict[str, dict[str, list[Utterance]]] = {}

    @property
    def audio_dir(self) -> Path:
        return self.root / AUDIO_DIR

    @property
    def lm_dir(self) -> Path:
        return self.root / LM_DIR

    # ------------------------------------------------------------ audio side

    def splits(self) -> list[str]:
        """Splits present, the standard test splits first."""
        if not self.audio_dir.is_dir():
            return []
        names = [p.name for p in self.audio_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(
            names, key=lambda s: (TEST_SPLITS.index(s) if s in TEST_SPLITS else len(TEST_SPLITS), s)
        )

    def _user_dirs(self, split: str) -> list[Path]:
        sdir = self.audio_dir / split
        if not sdir.is_dir():
            raise UserLibriError(f"{sdir}: no such split (have {', '.join(self.splits()) or 'none'})")
        dirs = []
        for p in sorted(sdir.iterdir()):
            if not p.is_dir() or p.name.startswith("."):
                continue
            if not _USER_RE.match(p.name):
                raise DataFormatError(p, "a user directory named speaker-<S>-book-<B>", repr(p.name))
            dirs.append(p)
        return dirs

    def _load_split(self, split: str) -> dict[str, list[Utterance]]:
        if split in self._utts:
            return self._utts[split]
        dirs = self._user_dirs(split)
        names = {d.name for d in dirs}
        by_user: dict[str, list[Utterance]] | None = None
        mpath = self.root / MANIFEST_DIR / f"{split}.jsonl"
        if mpath.is_file():
            by_user = {}
            for u in read_manifest(mpath):
                by_user.setdefault(u.user, []).append(u)
            if set(by_user) != names:
                log.warning(
                    "%s: users differ from %s; reading transcripts instead", mpath, self.audio_dir / split
                )
                by_user = None
        if by_user is None:
            by_user = {d.name: self._read_user_dir(split, d) for d in dirs}
        self._utts[split] = {k: sorted(v, key=lambda u: u.id) for k, v in sorted(by_user.items())}
        return self._utts[split]

    def _read_user_dir(self, split: str, udir: Path) -> list[Utterance]:
        speaker, book = parse_user_id(udir.name)
        out: list[Utterance] = []
        for tpath in sorted(udir.glob("*.txt")):
            for utt, text in ls.read_transcripts(tpath).items():
                spk, chapter, _ = utt.split("-")
                if spk != speaker:
                    raise DataFormatError(tpath, f"utterances of speaker {speaker}", repr(utt))
                audio = udir / f"{utt}{ls.AUDIO_SUFFIX}"
                duration = 0.0
                if audio.is_file():
                    try:
                        info = sf.info(str(audio))
                        duration = info.frames / info.samplerate
                    except (sf.LibsndfileError, RuntimeError):
                        log.warning("%s: unreadable audio header", audio)
                else:
                    log.warning("%s: transcript line for missing audio %s", tpath, audio.name)
                out.append(
                    Utterance(utt, udir.name, split, speaker, book, chapter, str(audio), duration, text)
                )
        return out

    def users(self, split: str) -> list[User]:
        """Users of ``split``, sorted by id."""
        out = []
        for uid, utts in self._load_split(split).items():
            speaker, book = parse_user_id(uid)
            out.append(User(uid, split, speaker, book, len(utts)))
        return out

    def utterances(self, user: User | str, split: str | None = None) -> list[Utterance]:
        """A user's utterances, sorted by id (pass a ``User`` or a user id and its split)."""
        if isinstance(user, User):
            uid, split = user.user_id, user.split
        else:
            uid = user
            if split is None:
                found = [s for s in self.splits() if uid in self._load_split(s)]
                if len(found) != 1:
                    raise UserLibriError(f"user {uid!r} is in splits {found}; pass split=")
                split = found[0]
        utts = self._load_split(split)
        if uid not in utts:
            raise UserLibriError(f"{self.audio_dir / split}: no user {uid!r}")
        return list(utts[uid])

    def audio_metadata(self) -> list[dict[str, str]]:
        """Rows of ``audio_data/metadata.tsv`` ([] when absent)."""
        return _read_tsv(self.audio_dir / METADATA, AUDIO_METADATA_HEADER)

    # ------------------------------------------------------------ text side

    def lm_books(self) -> list[str]:
        """Book ids with LM text, sorted numerically."""
        if not self.lm_dir.is_dir():
            return []
        ids = [p.name[: -len(LM_SUFFIX)] for p in self.lm_dir.glob(f"*{LM_SUFFIX}")]
        return sorted(ids, key=id_order)

    def lm_path(self, book_id: str) -> Path:
        return self.lm_dir / f"{book_id}{LM_SUFFIX}"

    def iter_lm_text(self, book_id: str) -> Iterator[str]:
        """The book's LM sentences, one at a time (blank lines skipped)."""
        path = self.lm_path(book_id)
        if not path.is_file():
            raise UserLibriError(f"{path}: no LM text for book {book_id!r}")
        try:
            with path.open(encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        yield line
        except UnicodeDecodeError as err:
            raise DataFormatError(path, "UTF-8 text", f"invalid byte at offset {err.start}") from err

    def lm_text(self, book_id: str) -> list[str]:
        """The book's LM sentences (the text a user of this book trains on)."""
        return list(self.iter_lm_text(book_id))

    def lm_metadata(self) -> list[dict[str, str]]:
        """Rows of ``lm_data/metadata.tsv`` ([] when absent)."""
        return _read_tsv(self.lm_dir / METADATA, LM_METADATA_HEADER)


def _read_tsv(path: Path, header: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [h for h in header if h not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(path, f"columns {', '.join(header)}", f"{reader.fieldnames}")
        return [dict(r) for r in reader]
