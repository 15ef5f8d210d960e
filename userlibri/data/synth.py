"""``userlibri synth``: a synthesized speech corpus in the exact LibriSpeech layout, read from books.

The plan (``synth_plan.py``, deterministic for a seed, independent of ``jobs``) gives each split's
readers a base voice, a book, a perturbation and chapters cut into utterances. A LibriSpeech "user"
is (speaker, book).

Synthesis runs one chapter per worker task: TTS at the voice's native rate, then sox (speed, pitch,
tempo, reverb, gain, resample to 16 kHz mono), then numpy noise at an SNR from a per-utterance
seed, then 16-bit FLAC. Utterances whose synthesis fails or gives empty audio are skipped and
counted. Everything is written into a temporary directory that replaces ``out`` at the end.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.constants import ALL_SPLITS
from userlibri.data import librispeech as ls
from userlibri.data.audio import write_flac
from userlibri.data.books import Book, BookCorpus
from userlibri.data.perturb import render
from userlibri.data.synth_config import SynthConfig
from userlibri.data.synth_plan import PlannedChapter, SynthPlan, plan_synth, stable_seed
from userlibri.data.tts import check_voices, get_voice, load_engine
from userlibri.errors import ConfigError, ExternalToolError, UserLibriError
from userlibri.fsio import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

SYNTH_JSON = "synth.json"


# ------------------------------------------------------------------ workers


@dataclass(frozen=True)
class UttResult:
    utt_id: str
    seconds: float  # 0 when failed
    error: str = ""


def synth_chapter(chapter: PlannedChapter, out_root: str, sample_rate: int, seed: int) -> list[UttResult]:
    """Synthesize one planned chapter into ``out_root/<split>/<spk>/<ch>/`` (flac only)."""
    reader = chapter.reader
    engine = load_engine(reader.voice)
    out_dir = Path(out_root) / reader.split / reader.speaker_id / chapter.chapter_id
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[UttResult] = []
    with tempfile.TemporaryDirectory(prefix="userlibri-tts-") as tmp:
        items = [(u.tts_text, Path(tmp) / f"{u.utt_id}.wav") for u in chapter.utterances]
        errors = engine.synthesize_batch(items)
        for u, (_, wav), err in zip(chapter.utterances, items, errors, strict=True):
            if err is None:
                try:
                    audio = render(wav, reader, sample_rate, stable_seed(seed, "utt", u.utt_id))
                    write_flac(out_dir / f"{u.utt_id}{ls.AUDIO_SUFFIX}", audio, sample_rate)
                    results.append(UttResult(u.utt_id, audio.size / sample_rate))
                    continue
                except (ExternalToolError, subprocess.TimeoutExpired) as e:
                    err = str(e)
            log.warning("%s: skipped (%s)", u.utt_id, err)
            results.append(UttResult(u.utt_id, 0.0, err))
    return results


# ------------------------------------------------------------------ outputs


def gutenberg_text(book: Book) -> str:
    """The whole book as a Gutenberg-like plain text: header, START marker, chapter headings,
    paragraphs wrapped at 70 columns, END marker."""
    upper = book.title.upper()
    lines = [
        f"The Project Gutenberg EBook of {book.title}, by {book.author}",
        "",
        f"Title: {book.title}",
        "",
        f"Author: {book.author}",
        "",
        f"*** START OF THIS PROJECT GUTENBERG EBOOK {upper} ***",
        "",
        "",
    ]
    for ch in book.chapters:
        lines += ["", "", ch.title, "", ""]
        for p in ch.paragraphs:
            lines += textwrap.wrap(p, width=70, break_long_words=False, break_on_hyphens=False) + [""]
    lines += ["", "", f"*** END OF THIS PROJECT GUTENBERG EBOOK {upper} ***", ""]
    return "\r\n".join(lines)


def _write_metadata(root: Path, plan: SynthPlan, results: dict[str, UttResult], corpus: BookCorpus) -> None:
    seconds_by_chapter: dict[str, float] = defaultdict(float)
    seconds_by_speaker: dict[str, float] = defaultdict(float)
    chapters: list[ls.ChapterInfo] = []
    used_books: set[str] = set()
    for ch in plan.chapters:
        ok = {u.utt_id: u.transcript for u in ch.utterances if results[u.utt_id].seconds > 0}
        if not ok:
            shutil.rmtree(root / ch.reader.split / ch.reader.speaker_id / ch.chapter_id, ignore_errors=True)
            continue
        secs = sum(results[u].seconds for u in ok)
        seconds_by_chapter[ch.chapter_id] = secs
        seconds_by_speaker[ch.reader.speaker_id] += secs
        ls.write_transcripts(
            ls.transcript_path(root, ch.reader.split, ch.reader.speaker_id, ch.chapter_id), ok
        )
        entry = corpus.entries[ch.book_id]
        used_books.add(ch.book_id)
        chapters.append(
            ls.ChapterInfo(
                ch.chapter_id,
                ch.reader.speaker_id,
                secs / 60,
                ch.reader.split,
                plan.project_ids[ch.book_id],
                ch.book_id,
                ch.title,
                entry.title,
            )
        )
    speakers = [
        ls.SpeakerInfo(r.speaker_id, r.sex, r.split, seconds_by_speaker[r.speaker_id] / 60, r.name)
        for r in plan.readers
        if r.speaker_id in seconds_by_speaker
    ]
    ls.write_speakers(root / ls.SPEAKERS_FILE, speakers)
    ls.write_chapters(root / ls.CHAPTERS_FILE, chapters)
    books = [ls.BookInfo(b, corpus.entries[b].title, corpus.entries[b].author) for b in sorted(used_books)]
    ls.write_books(root / ls.BOOKS_FILE, books)
    for b in sorted(used_books):
        path = ls.book_text_path(root, b)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(gutenberg_text(corpus.load(b)), encoding="utf-8", newline="")


def summarize(plan: SynthPlan, results: dict[str, UttResult]) -> dict[str, dict[str, Any]]:
    """Per split: readers, books, users, utterances, failed, hours (of audio written)."""
    out: dict[str, dict[str, Any]] = {}
    for split in [s for s in ALL_SPLITS if s in plan.config.splits]:
        chs = [c for c in plan.chapters if c.reader.split == split]
        utts = [results[u.utt_id] for c in chs for u in c.utterances]
        ok = [r for r in utts if r.seconds > 0]
        users = {(c.reader.speaker_id, c.book_id) for c in chs}
        out[split] = {
            "readers": len({c.reader.speaker_id for c in chs}),
            "books": len({c.book_id for c in chs}),
            "users": len(users),
            "voices": sorted({c.reader.voice for c in chs}),
            "utterances": len(ok),
            "failed": len(utts) - len(ok),
            "hours": round(sum(r.seconds for r in ok) / 3600, 4),
            "mean_seconds": round(float(np.mean([r.seconds for r in ok])), 2) if ok else 0.0,
        }
    return out


# ------------------------------------------------------------------ driver


def synthesize_corpus(
    cfg: SynthConfig,
    books_dir: str | Path,
    out: str | Path,
    jobs: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Plan and synthesize the corpus into ``out`` (atomically); return the ``synth.json`` content."""
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise UserLibriError(f"{out}: already exists; pass --overwrite to replace it")
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise ConfigError(f"jobs: expected >= 1, found {jobs}")
    corpus = BookCorpus.open(books_dir)
    plan = plan_synth(cfg, corpus)
    voices = sorted({r.voice for r in plan.readers})
    check_voices(voices)
    if shutil.which("sox") is None:
        raise ExternalToolError("expected the program 'sox' on PATH, found none; apt-get install sox")
    t_plan = time.perf_counter() - t0
    n_utts = sum(len(c.utterances) for c in plan.chapters)
    log.info("planned %d readers, %d chapters, %d utterances", len(plan.readers), len(plan.chapters), n_utts)

    results: dict[str, UttResult] = {}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        t1, cpu1 = time.perf_counter(), _cpu_seconds()
        _run_workers(plan, tmp, jobs, progress, results, n_utts)
        t_synth, cpu_synth = time.perf_counter() - t1, _cpu_seconds() - cpu1
        failed_voices = [
            v
            for v in voices
            if not any(
                results[u.utt_id].seconds > 0
                for c in plan.chapters
                if c.reader.voice == v
                for u in c.utterances
            )
        ]
        if failed_voices:
            raise ExternalToolError(
                f"voices {failed_voices} produced no audio at all; see the warnings above"
            )
        _write_metadata(tmp, plan, results, corpus)
        stats = summarize(plan, results)
        audio_s = sum(r.seconds for r in results.values())
        info = {
            "config": cfg.to_dict(),
            "voices": {v: asdict(get_voice(v)) for v in voices},
            "readers": [asdict(r) | {"name": r.name} for r in plan.readers],
            "splits": stats,
            "dropped_short_pieces": plan.dropped_short,
            "failed": sorted(u for u, r in results.items() if r.seconds == 0),
            "timings": {
                "jobs": jobs,
                "plan_s": round(t_plan, 2),
                "synth_s": round(t_synth, 2),
                "total_s": round(time.perf_counter() - t0, 2),
                "audio_hours": round(audio_s / 3600, 4),
                "cpu_s": round(cpu_synth, 2),
                "x_real_time": round(audio_s / max(t_synth, 1e-9), 1),
                # Audio seconds per CPU second (workers, TTS and sox together): the speed one core
                # gives when the machine is not shared; multiply by free cores for wall-clock speed.
                "x_real_time_per_cpu": round(audio_s / max(cpu_synth, 1e-9), 1),
            },
        }
        write_json_atomic(tmp / SYNTH_JSON, info)
    return info


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished (waited-for) children and their children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _run_workers(
    plan: SynthPlan, root: Path, jobs: int, progress: bool, results: dict[str, UttResult], total: int
) -> None:
    from tqdm import tqdm

    sr, seed = plan.config.sample_rate, plan.config.seed
    # Longest chapters first: a better balance across workers (the output does not depend on order).
    order = sorted(plan.chapters, key=lambda c: -sum(u.est_seconds for u in c.utterances))
    bar = tqdm(total=total, unit="utt", desc="synth", disable=not progress)
    try:
        if jobs == 1:
            for ch in order:
                for r in synth_chapter(ch, str(root), sr, seed):
                    results[r.utt_id] = r
                bar.update(len(ch.utterances))
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(synth_chapter, ch, str(root), sr, seed): ch for ch in order}
                for fut in as_completed(futures):
                    for r in fut.result():
                        results[r.utt_id] = r
                    bar.update(len(futures[fut].utterances))
    finally:
        bar.close()
