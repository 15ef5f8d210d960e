"""``userlibri build``: a LibriSpeech-layout corpus + book texts -> the UserLibri release layout.

A user is a (speaker, book) pair within a test split. Dev users are built the same way whenever the
corpus has a dev split (``dev``, ``dev-clean`` or ``dev-other``; ``BuildConfig.dev_splits``): they
are not part of the official release, and exist so that decoding settings (LM fusion weights) can
be tuned on users who are never reported (``userlibri bench wer``). For every book a user reads, its text is
stripped of Gutenberg boilerplate, split into chapters and sentences and normalised exactly like
the transcripts; every chapter that any test-split audio reads is located by aligning its
transcripts to the book (``align.py``) and removed, and (by default) any remaining sentence that
shares a word 8-gram with the book's test transcripts is dropped too. Users of a book share its
LM text. Everything is read and validated first, then written into a temporary directory that
is renamed onto ``out`` at the end.

Output (``out``)::

    audio_data/metadata.tsv                      Split, User ID, Num Audio Examples, Average Words Per Example
    audio_data/<split>/speaker-S-book-B/         <spk>-<ch>.trans.txt + <utt>.flac (hard links when possible)
    lm_data/metadata.tsv                         Book ID, Num Text Examples, Average Words Per Example
    lm_data/<book_id>_lm_train.txt               one normalised sentence a line
    manifests/<split>.jsonl                      see manifest.py
    build_report.json                            see report.py
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from userlibri.constants import DEFAULT_LEAKAGE_NGRAM, DEFAULT_SAMPLE_RATE, DEV_SPLITS, TEST_SPLITS
from userlibri.data import librispeech as ls
from userlibri.data.align import AlignConfig, BookIndex, ChapterMatch
from userlibri.data.books import CHAPTER_MARK, Book, Chapter
from userlibri.data.manifest import Utterance, write_manifest
from userlibri.data.report import StreamNgrams, Vocab, build_report, rows_sharing_ngrams, text_ngram_hashes
from userlibri.errors import AudioError, ConfigError, DataFormatError, UserLibriError
from userlibri.fsio import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_BUILD_WORKERS = max(1, min(4, os.cpu_count() or 1))
AUDIO_DIR = "audio_data"
LM_DIR = "lm_data"
MANIFEST_DIR = "manifests"
METADATA = "metadata.tsv"
REPORT = "build_report.json"
LM_SUFFIX = "_lm_train.txt"
AUDIO_METADATA_HEADER = ("Split", "User ID", "Num Audio Examples", "Average Words Per Example")
LM_METADATA_HEADER = ("Book ID", "Num Text Examples", "Average Words Per Example")

_CACHE_FORMAT = re.compile(r"^" + re.escape(CHAPTER_MARK), re.MULTILINE)


def user_id(speaker: str, book: str) -> str:
    """The release's user id, ``speaker-S-book-B``."""
    return f"speaker-{speaker}-book-{book}"


@dataclass(frozen=True)
class BuildConfig:
    """What ``build`` reads and how."""

    librispeech: Path
    out: Path
    splits: tuple[str, ...] = TEST_SPLITS
    #: Dev splits whose users are built too (for tuning, never reported); None: every split of
    #: ``DEV_SPLITS`` the corpus has; (): none.
    dev_splits: tuple[str, ...] | None = None
    books_dir: Path | None = None
    num_workers: int = DEFAULT_BUILD_WORKERS
    link_audio: bool = True
    check_audio: bool = True
    sample_rate: int = DEFAULT_SAMPLE_RATE
    leakage_ngram: int = DEFAULT_LEAKAGE_NGRAM
    ngram_filter: bool = True
    align: AlignConfig = field(default_factory=AlignConfig)

    def validate(self) -> BuildConfig:
        if not Path(self.librispeech).is_dir():
            raise ConfigError(f"--librispeech {self.librispeech}: expected a directory, found none")
        if self.books_dir is not None and not Path(self.books_dir).is_dir():
            raise ConfigError(f"--books-dir {self.books_dir}: expected a directory, found none")
        if not self.splits or len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"splits must be distinct and non-empty, got {self.splits}")
        if self.dev_splits is not None and len(set(self.dev_splits)) != len(self.dev_splits):
            raise ConfigError(f"dev_splits must be distinct, got {self.dev_splits}")
        if self.num_workers < 1:
            raise ConfigError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.leakage_ngram < 1:
            raise ConfigError(f"leakage_ngram must be >= 1, got {self.leakage_ngram}")
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be > 0, got {self.sample_rate}")
        out, src = Path(self.out).resolve(), Path(self.librispeech).resolve()
        if out == src or src.is_relative_to(out):
            raise ConfigError(f"--out {self.out} would replace the input corpus {self.librispeech}")
        self.align.validate()
        return self


# ---------------------------------------------------------------- book text processing (workers)


def _norm():
    # Imported lazily so that reading a release (dataset.py) never needs the text stack.
    from userlibri.text.normalize import normalize_transcript
    from userlibri.text.sentences import split_sentences

    return normalize_transcript, split_sentences


def book_chapters(text: str, book_id: str, path: str | Path = "<string>") -> list[Chapter]:
    """Chapters of a book text: the cache format (``## `` headings) or a Gutenberg plain text."""
    if _CACHE_FORMAT.search(text):
        return list(Book.from_text(text, book_id, path).chapters)
    from userlibri.data.gutenberg import split_chapters, strip_gutenberg

    return split_chapters(strip_gutenberg(text))


def book_sentences(chapters: Sequence[Chapter]) -> tuple[list[str], list[int]]:
    """Normalised sentences of ``chapters`` and the chapter index of each."""
    normalize_transcript, split_sentences = _norm()
    sents: list[str] = []
    owner: list[int] = []
    for ci, ch in enumerate(chapters):
        for para in ch.paragraphs:
            for s in split_sentences(para):
                n = normalize_transcript(s)
                if n:
                    sents.append(n)
                    owner.append(ci)
    return sents, owner


@dataclass(frozen=True)
class BookJob:
    """Everything a worker needs for one book (plain data, picklable)."""

    book_id: str
    path: str
    test_chapters: dict[str, list[str]]  # chapter id -> transcripts (in utterance order)
    users: dict[str, list[str]]  # user id -> transcripts of the user's test utterances
    align: AlignConfig = field(default_factory=AlignConfig)
    leakage_ngram: int = DEFAULT_LEAKAGE_NGRAM
    ngram_filter: bool = True


@dataclass
class BookResult:
    """A processed book: its LM sentences and what was removed and why."""

    book_id: str
    sentences: list[str]
    book_sentences: int = 0
    book_chapters: int = 0
    removed_by_chapters: int = 0
    removed_by_filter: int = 0
    matches: list[ChapterMatch] = field(default_factory=list)
    leakage: dict[str, tuple[int, int]] = field(default_factory=dict)
    leakage_before_filter: dict[str, tuple[int, int]] = field(default_factory=dict)
    skip_reason: str = ""
    seconds: float = 0.0


def process_book(job: BookJob) -> BookResult:
    """Read, split, normalise one book; remove its read chapters; measure leakage per user."""
    t0 = time.perf_counter()
    normalize_transcript, _ = _norm()
    text = ls.read_book_text(job.path)
    chapters = book_chapters(text, job.book_id, job.path)
    sents, owner = book_sentences(chapters)
    res = BookResult(job.book_id, [], book_sentences=len(sents), book_chapters=len(chapters))
    if not sents:
        res.skip_reason = f"{job.path}: no sentences after stripping and normalisation"
        return res
    vocab = Vocab()
    ids = vocab.encode(sents, grow=True, sep=False)
    index = BookIndex(sents, owner, job.align, vocab=vocab, ids=ids)
    cuts = []
    for cid in sorted(job.test_chapters):
        norm = [t for t in (normalize_transcript(x) for x in job.test_chapters[cid]) if t]
        m = index.locate(cid, norm)
        res.matches.append(m)
        if m.located:
            cuts.append((m.cut_start, m.cut_end))
    keep = np.ones(len(sents), dtype=bool)
    for lo, hi in cuts:
        keep[lo:hi] = False
    res.removed_by_chapters = int((~keep).sum())
    n = job.leakage_ngram
    users_norm = {
        u: [t for t in (normalize_transcript(x) for x in texts) if t] for u, texts in job.users.items()
    }
    if job.ngram_filter:
        word_keep = keep[index.owner]
        before = StreamNgrams.from_ids(ids[word_keep], n, vocab)
        res.leakage_before_filter = {u: _lk(before.leakage(t)) for u, t in users_norm.items()}
        tests = [normalize_transcript(t) for texts in job.test_chapters.values() for t in texts]
        drop = rows_sharing_ngrams(
            ids[word_keep], index.owner[word_keep], text_ngram_hashes(tests, n, vocab), n
        )
        res.removed_by_filter = len(drop)
        keep[drop] = False
    after = StreamNgrams.from_ids(ids[keep[index.owner]], n, vocab)
    res.leakage = {u: _lk(after.leakage(t)) for u, t in users_norm.items()}
    if not job.ngram_filter:
        res.leakage_before_filter = dict(res.leakage)
    kept = [s for s, k in zip(sents, keep.tolist(), strict=True) if k]
    res.sentences = kept
    if not kept:
        res.skip_reason = f"{job.path}: no sentences left after removing the read chapters"
    res.seconds = time.perf_counter() - t0
    return res


def _lk(x) -> tuple[int, int]:
    return (x.found, x.total)


def process_books(
    jobs: Sequence[BookJob], num_workers: int = DEFAULT_BUILD_WORKERS, progress: bool | None = None
) -> dict[str, BookResult]:
    """Run ``process_book`` over ``jobs`` (largest first, ``num_workers`` processes).

    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    from tqdm import tqdm

    order = sorted(jobs, key=lambda j: (-_size(j.path), j.book_id))
    bar = tqdm(
        total=len(order), desc="books", unit="book", disable=None if progress is None else not progress
    )
    results = []
    try:
        if num_workers <= 1 or len(order) <= 1:
            for j in order:
                results.append(process_book(j))
                bar.update()
        else:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(min(num_workers, len(order))) as pool:
                for r in pool.imap(process_book, order, chunksize=1):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    return {r.book_id: r for r in sorted(results, key=lambda r: r.book_id)}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------- scanning and validation


def resolve_root(root: str | Path) -> Path:
    """The directory holding CHAPTERS.TXT: ``root`` itself or ``root/LibriSpeech``."""
    root = Path(root)
    for cand in (root, root / "LibriSpeech"):
        if (cand / ls.CHAPTERS_FILE).is_file():
            return cand
    raise UserLibriError(f"{root}: no {ls.CHAPTERS_FILE} (expected a LibriSpeech root or its parent)")


def locate_book(book_id: str, root: Path, books_dir: Path | None) -> Path | None:
    """The text file for ``book_id``: ``books_dir`` first (flat ``<id>.txt``, a book cache, or a
    LibriSpeech ``books/`` tree), then the corpus's own ``books/``."""
    cands: list[Path] = []
    if books_dir is not None:
        cands += [books_dir / f"{book_id}.txt", books_dir / f"{book_id}.txt.utf-8"]
        cands += [books_dir / book_id / f"{book_id}.txt.utf-8", books_dir / book_id / f"{book_id}.txt"]
        cands += ls.book_text_candidates(books_dir, book_id)
        if books_dir.name == ls.BOOKS_DIR:  # the release's own books/ directory was given
            cands += ls.book_text_candidates(books_dir.parent, book_id)
    cands += ls.book_text_candidates(root, book_id)
    for p in cands:
        if p.is_file():
            return p
    return None


@dataclass
class _Scan:
    root: Path
    chapters: dict[str, ls.ChapterInfo]
    utts: dict[str, list[tuple[ls.LibriUtterance, str, float]]]  # split -> (utt, book, duration)
    skipped: dict[str, int]
    book_paths: dict[str, Path]
    test_chapters: dict[str, dict[str, list[str]]]  # book -> chapter -> transcripts


def _check_audio(path: Path, rate: int) -> float:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: expected a readable flac file, found an error: {e}") from e
    if info.samplerate != rate:
        raise AudioError(f"{path}: expected sample rate {rate} Hz, found {info.samplerate} Hz")
    if info.channels != 1:
        raise AudioError(f"{path}: expected 1 channel (mono), found {info.channels}")
    return info.frames / info.samplerate


def _scan(cfg: BuildConfig) -> _Scan:
    root = resolve_root(cfg.librispeech)
    chapters = ls.read_chapters(root / ls.CHAPTERS_FILE)
    speakers = ls.read_speakers(root / ls.SPEAKERS_FILE) if (root / ls.SPEAKERS_FILE).is_file() else None
    skipped: dict[str, int] = defaultdict(int)
    utts: dict[str, list[tuple[ls.LibriUtterance, str, float]]] = {}
    missing_audio: list[Path] = []
    warned_ch: set[str] = set()
    warned_spk: set[str] = set()
    for split in cfg.splits:
        rows = []
        for u in ls.iter_split(root, split):
            ch = chapters.get(u.chapter_id)
            if ch is None:
                if u.chapter_id not in warned_ch:
                    log.warning(
                        "%s: chapter %s is not in %s; skipping its utterances",
                        split,
                        u.chapter_id,
                        ls.CHAPTERS_FILE,
                    )
                    warned_ch.add(u.chapter_id)
                    skipped["chapters_without_metadata"] += 1
                skipped["utterances_without_chapter_metadata"] += 1
                continue
            if ch.speaker_id != u.speaker_id:
                raise DataFormatError(
                    root / ls.CHAPTERS_FILE,
                    f"chapter {u.chapter_id} read by speaker {u.speaker_id} "
                    f"(as in {split}/{u.speaker_id}/{u.chapter_id})",
                    f"READER {ch.speaker_id}",
                )
            if speakers is not None and u.speaker_id not in speakers and u.speaker_id not in warned_spk:
                log.warning("speaker %s is not in %s", u.speaker_id, ls.SPEAKERS_FILE)
                warned_spk.add(u.speaker_id)
            if not u.audio_path.is_file():
                missing_audio.append(u.audio_path)
                continue
            dur = _check_audio(u.audio_path, cfg.sample_rate) if cfg.check_audio else 0.0
            rows.append((u, ch.book_id, dur))
        if not rows and not missing_audio:
            log.warning("%s: no utterances", split)
        utts[split] = rows
    if missing_audio:
        shown = ", ".join(str(p) for p in missing_audio[:5])
        raise AudioError(
            f"{len(missing_audio)} transcript lines point at missing audio (expected <utt_id>.flac beside "
            f"the transcript), e.g. {shown}"
        )
    # Books read by users, and their text files.
    books = sorted({b for rows in utts.values() for _, b, _ in rows}, key=id_order)
    book_paths: dict[str, Path] = {}
    for b in books:
        p = locate_book(b, root, Path(cfg.books_dir) if cfg.books_dir else None)
        if p is None:
            log.warning(
                "book %s: no text found (tried %s); skipping its users",
                b,
                ls.book_text_path(cfg.books_dir or root, b),
            )
            skipped["books_without_text"] += 1
        else:
            book_paths[b] = p
    # Every test chapter of those books, whether or not its split is being built.
    test_chapters: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for cid, ch in sorted(chapters.items()):
        if ch.book_id not in book_paths or ch.subset not in set(TEST_SPLITS) | set(cfg.splits):
            continue
        tpath = ls.transcript_path(root, ch.subset, ch.speaker_id, cid)
        if not tpath.is_file():
            log.warning(
                "book %s: test chapter %s has no transcripts at %s; it cannot be located or removed",
                ch.book_id,
                cid,
                tpath,
            )
            skipped["test_chapters_without_transcripts"] += 1
            continue
        test_chapters[ch.book_id][cid] = list(ls.read_transcripts(tpath).values())
    return _Scan(root, chapters, utts, skipped, book_paths, dict(test_chapters))


def id_order(s: str) -> tuple[int, int | str]:
    """Sort key of book (or other) ids: numeric ids by value, then the others by name."""
    return (0, int(s)) if s.isdigit() else (1, s)


# ---------------------------------------------------------------- writing


def _place_audio(src: Path, dst: Path, link: bool) -> None:
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _avg_words(texts: Iterable[str]) -> float:
    texts = list(texts)
    return sum(len(t.split()) for t in texts) / len(texts) if texts else 0.0


def _write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(x) for x in r) for r in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def with_dev_splits(cfg: BuildConfig) -> BuildConfig:
    """``cfg`` with its dev splits appended to ``splits`` (None: those of ``DEV_SPLITS`` that
    exist in the corpus); ``dev_splits`` becomes the explicit tuple that was added."""
    if cfg.dev_splits is None:
        root = resolve_root(cfg.librispeech)
        dev = tuple(s for s in DEV_SPLITS if (root / s).is_dir())
    else:
        dev = cfg.dev_splits
    dev = tuple(s for s in dev if s not in cfg.splits)
    if dev:
        log.info("building dev users too (for tuning, never reported): %s", ", ".join(dev))
    return replace(cfg, splits=cfg.splits + dev, dev_splits=dev)


def build(cfg: BuildConfig) -> dict:
    """Build the UserLibri layout at ``cfg.out``; returns the build report (also written)."""
    cfg = with_dev_splits(cfg.validate())
    t0 = time.perf_counter()
    scan = _scan(cfg)
    t_scan = time.perf_counter() - t0

    # Users: (split, speaker, book) with their utterances.
    users: dict[tuple[str, str], list[tuple[ls.LibriUtterance, str, float]]] = defaultdict(list)
    for split, rows in scan.utts.items():
        for row in rows:
            users[(split, user_id(row[0].speaker_id, row[1]))].append(row)
    # Worker-side user keys are "<split>/<user id>": the same user id may exist in both splits.
    jobs = [
        BookJob(
            book_id=b,
            path=str(path),
            test_chapters=scan.test_chapters.get(b, {}),
            users={
                f"{s}/{uid}": [r[0].text for r in rows] for (s, uid), rows in users.items() if rows[0][1] == b
            },
            align=cfg.align,
            leakage_ngram=cfg.leakage_ngram,
            ngram_filter=cfg.ngram_filter,
        )
        for b, path in sorted(scan.book_paths.items())
    ]
    t1 = time.perf_counter()
    results = process_books(jobs, cfg.num_workers)
    t_text = time.perf_counter() - t1
    skipped = dict(scan.skipped)
    for r in results.values():
        for m in r.matches:
            if not m.located:
                log.warning(
                    "book %s: chapter %s not located (%s); its text may remain",
                    r.book_id,
                    m.chapter_id,
                    m.reason,
                )
            else:
                log.debug(
                    "book %s: chapter %s -> sentences [%d, %d) coverage %.2f, removed [%d, %d) (%s)",
                    r.book_id,
                    m.chapter_id,
                    m.start,
                    m.end,
                    m.coverage,
                    m.cut_start,
                    m.cut_end,
                    m.widened_to,
                )
        if r.skip_reason:
            log.warning("book %s skipped: %s", r.book_id, r.skip_reason)
            skipped["books_without_sentences"] = skipped.get("books_without_sentences", 0) + 1
    good_books = {b for b, r in results.items() if not r.skip_reason}
    kept_users = {k: v for k, v in sorted(users.items()) if v[0][1] in good_books}
    dropped = [k for k in users if k not in kept_users]
    skipped["users_without_lm_text"] = len(dropped)
    skipped["utterances_of_skipped_users"] = sum(len(users[k]) for k in dropped)
    if not kept_users:
        raise UserLibriError(
            f"{scan.root}: no user has both test audio and book text (splits {', '.join(cfg.splits)}; "
            f"skipped: {skipped})"
        )

    t2 = time.perf_counter()
    out = Path(cfg.out)
    with atomic_path(out) as tmp:
        manifests: dict[str, list[Utterance]] = defaultdict(list)
        audio_rows = []
        for (split, uid), rows in kept_users.items():
            udir = tmp / AUDIO_DIR / split / uid
            udir.mkdir(parents=True)
            by_ch: dict[str, dict[str, str]] = defaultdict(dict)
            for u, book, dur in rows:
                by_ch[u.chapter_id][u.utt_id] = u.text
                dst = udir / u.audio_path.name
                _place_audio(u.audio_path, dst, cfg.link_audio)
                manifests[split].append(
                    Utterance(
                        id=u.utt_id,
                        user=uid,
                        split=split,
                        speaker=u.speaker_id,
                        book=book,
                        chapter=u.chapter_id,
                        audio=str(dst),
                        duration=round(dur, 4),
                        text=u.text,
                    )
                )
            for cid, mapping in sorted(by_ch.items()):
                ls.write_transcripts(udir / f"{rows[0][0].speaker_id}-{cid}{ls.TRANS_SUFFIX}", mapping)
            audio_rows.append((split, uid, len(rows), f"{_avg_words(r[0].text for r in rows):.2f}"))
        _write_tsv(tmp / AUDIO_DIR / METADATA, AUDIO_METADATA_HEADER, audio_rows)
        lm_rows = []
        for b in sorted(good_books, key=id_order):
            sents = results[b].sentences
            write_text_atomic(tmp / LM_DIR / f"{b}{LM_SUFFIX}", "".join(s + "\n" for s in sents))
            lm_rows.append((b, len(sents), f"{_avg_words(sents):.2f}"))
        _write_tsv(tmp / LM_DIR / METADATA, LM_METADATA_HEADER, lm_rows)
        for split in cfg.splits:
            write_manifest(tmp / MANIFEST_DIR / f"{split}.jsonl", manifests.get(split, []), relative=True)
        t_write = time.perf_counter() - t2
        report = build_report(
            cfg,
            kept_users,
            results,
            skipped,
            {
                "scan_s": round(t_scan, 3),
                "text_s": round(t_text, 3),
                "write_s": round(t_write, 3),
                "total_s": round(time.perf_counter() - t0, 3),
            },
        )
        write_json_atomic(tmp / REPORT, report)
    return report
