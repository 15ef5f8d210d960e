"""Planning for ``userlibri synth`` (deterministic for a seed, independent of ``jobs``): each
split's readers get a base voice, a book and a perturbation; each reader reads
``chapters_per_reader`` distinct chapters of their book (readers of one book never share a chapter);
chapters are cut into 5-20 s utterances at sentence boundaries (a sentence longer than the limit is
split at commas, else at the word limit). ``synth.py`` renders the plan.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from userlibri.constants import ALL_SPLITS
from userlibri.data.books import BookCorpus
from userlibri.data.perturb import Reader
from userlibri.data.synth_config import SplitConfig, SynthConfig
from userlibri.data.tts import VoiceSpec, get_voice
from userlibri.errors import ConfigError, UserLibriError

_CLAUSE_RE = re.compile(r"(?<=[,;:])\s+")
_EST_MARGIN = 0.1


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a stable hash of ``parts`` (unlike ``hash``, the same in every process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class PlannedUtterance:
    utt_id: str
    tts_text: str  # raw sentence text, numbers and abbreviations spelled out
    transcript: str  # normalize_transcript of the raw text
    est_seconds: float


@dataclass(frozen=True)
class PlannedChapter:
    chapter_id: str
    reader: Reader
    book_id: str
    chapter_index: int
    title: str
    utterances: tuple[PlannedUtterance, ...]


@dataclass(frozen=True)
class SynthPlan:
    config: SynthConfig
    readers: tuple[Reader, ...]
    chapters: tuple[PlannedChapter, ...]
    project_ids: dict[str, str]
    dropped_short: int


def _default_splitter() -> Callable[[str], list[str]]:
    from userlibri.text.sentences import split_sentences

    return split_sentences


def _default_normalizer() -> Callable[[str], str]:
    from userlibri.text.normalize import normalize_transcript

    return normalize_transcript


def _split_long(sentence: str, estimate: Callable[[str], float], max_seconds: float) -> list[str]:
    """Pieces of at most ``max_seconds``: cut at commas/semicolons/colons where possible, else
    into equal runs of words."""
    pieces: list[str] = []
    cur = ""
    for clause in _CLAUSE_RE.split(sentence):
        if cur and estimate(f"{cur} {clause}") > max_seconds:
            pieces.append(cur)
            cur = ""
        if estimate(clause) > max_seconds:
            words = clause.split()
            n = min(len(words), int(np.ceil(estimate(clause) / max_seconds)))
            while n < len(words) and any(
                estimate(" ".join(c)) > max_seconds for c in np.array_split(words, n)
            ):
                n += 1
            chunks = [" ".join(c) for c in np.array_split(words, n)]
            pieces.extend(chunks[:-1])
            cur = chunks[-1]
        else:
            cur = f"{cur} {clause}" if cur else clause
    if cur:
        pieces.append(cur)
    return pieces


def cut_utterances(
    sentences: Sequence[str],
    estimate: Callable[[str], float],
    min_seconds: float,
    max_seconds: float,
    rng: np.random.Generator,
) -> tuple[list[str], int]:
    """Group consecutive sentences into utterances of ``min_seconds``-``max_seconds`` (by the
    ``estimate`` of a text's spoken duration). Returns the texts and how many too-short leftovers
    were dropped.

    An utterance closes at a sentence boundary once it reaches a target length drawn uniformly from
    [min, max]; a sentence longer than ``max_seconds`` is split at commas or at the word limit; a
    short leftover joins the utterance before it when that stays within ``max_seconds``.
    """
    units: list[str] = []
    for s in sentences:
        s = " ".join(s.split())
        if s:
            units.extend(_split_long(s, estimate, max_seconds) if estimate(s) > max_seconds else [s])
    out: list[str] = []
    dropped = 0
    cur = ""
    target = rng.uniform(min_seconds, max_seconds)
    contiguous = False  # does ``cur`` directly follow ``out[-1]``?

    def flush() -> None:
        nonlocal cur, target, dropped, contiguous
        if cur:
            if estimate(cur) >= min_seconds:
                out.append(cur)
                contiguous = True
            elif contiguous and estimate(f"{out[-1]} {cur}") <= max_seconds:
                out[-1] = f"{out[-1]} {cur}"
            else:
                dropped += 1
                contiguous = False
        cur = ""
        target = rng.uniform(min_seconds, max_seconds)

    for u in units:
        if cur and estimate(f"{cur} {u}") > max_seconds:
            flush()
        cur = f"{cur} {u}" if cur else u
        if estimate(cur) >= target:
            flush()
    flush()
    return out, dropped


_TRAIL_PUNCT = ",;:!?"


def speakable_text(raw: str, normalize: Callable[[str], str]) -> str:
    """The text fed to the TTS: ``raw`` with every token whose normalised form is not simply its
    letters (numbers, currency, abbreviations, ``&c.``) replaced by that spelled-out form, so the
    engine says what the transcript says. Falls back to the lower-cased transcript if the two
    still disagree."""
    transcript = normalize(raw)
    tokens = raw.split()
    out = []
    for i, tok in enumerate(tokens):
        spoken = normalize(tok)
        letters = re.sub(r"[^\w']+", "", tok).strip("'").upper()
        if spoken == letters:
            out.append(tok)
            continue
        tail = "".join(c for c in tok[-1:] if c in _TRAIL_PUNCT or (c == "." and i == len(tokens) - 1))
        if spoken:
            out.append(spoken.lower() + tail)
    text = " ".join(out)
    return text if normalize(text) == transcript else transcript.lower()


def _voice_index(i: int, n_books: int, n_voices: int) -> int:
    """Reader ``i`` reads book ``i % n_books`` with this voice: readers 0..n_voices-1 take each voice
    once, and the voice shifts by one after every lcm(n_books, n_voices) readers, so that every
    (book, voice) pair is read before any repeats."""
    return (i % n_voices + i // math.lcm(n_books, n_voices)) % n_voices


def _draw_reader(
    cfg: SynthConfig, split: str, idx: int, scfg: SplitConfig, speaker_id: str, book_id: str
) -> Reader:
    voice = scfg.voices[_voice_index(idx, len(scfg.books), len(scfg.voices))]
    rng = np.random.default_rng(stable_seed(cfg.seed, "reader", split, idx))
    p = cfg.perturbation
    kw: dict[str, Any] = {}
    # Draw every value in a fixed order so that switching one option does not shift the others.
    speed, pitch, tempo, gain = (rng.uniform(*r) for r in (p.speed, p.pitch_cents, p.tempo, p.gain_db))
    snr, reverb, room = (rng.uniform(*r) for r in (p.snr_db, p.reverberance, p.room_scale))
    color = p.noise_colors[int(rng.integers(len(p.noise_colors)))]
    first_of_voice = idx < len(scfg.voices)
    if scfg.perturb and not first_of_voice:
        kw.update(speed=round(speed, 3), pitch_cents=round(pitch), tempo=round(tempo, 3))
    if scfg.perturb:
        kw["gain_db"] = round(gain, 1)
    if scfg.noise:
        kw.update(snr_db=round(snr, 1), noise_color=color)
    if scfg.reverb:
        kw.update(reverberance=round(reverb), room_scale=round(room))
    return Reader(speaker_id, split, voice, book_id, get_voice(voice).sex, **kw)


#: Splits whose speaker, chapter and project ids come from one joint draw each (the splits synth
#: knew before dev-clean and dev-other). Any other split draws its own ids from its own stream,
#: skipping taken ones, and is planned after these, in the order synth learnt them
#: (:data:`_ADDED_SPLITS`: the mini corpus had dev-other before dev-clean): adding one to a config
#: leaves every other split's ids, chapters, utterances and audio as they were. A reader added to
#: such a split (``readers`` + 1) keeps its earlier readers too: reader i's voice, perturbation and
#: ids depend on i alone, and it reads the next free chapters of its book.
_JOINT_ID_SPLITS = ("train", "dev", "test-clean", "test-other")
_ADDED_SPLITS = ("dev-other", "dev-clean")


def _unique_ids(seed: int, what: str, n: int, lo: int, hi: int) -> list[str]:
    rng = np.random.default_rng(stable_seed(seed, what))
    if n > hi - lo:
        raise ConfigError(f"too many {what}: {n} > {hi - lo}")
    return [str(int(x)) for x in rng.choice(np.arange(lo, hi), size=n, replace=False)]


def _more_unique_ids(seed: int, what: str, key: str, n: int, lo: int, hi: int, taken: set[str]) -> list[str]:
    """``n`` ids in [lo, hi) from the stream of (``what``, ``key``) that are not in ``taken`` (which
    they join): a prefix-stable draw, unlike :func:`_unique_ids`."""
    if n + len(taken) > hi - lo:
        raise ConfigError(f"too many {what}: {n + len(taken)} > {hi - lo}")
    rng = np.random.default_rng(stable_seed(seed, what, key))
    out: list[str] = []
    while len(out) < n:
        x = str(int(rng.integers(lo, hi)))
        if x not in taken:
            taken.add(x)
            out.append(x)
    return out


def plan_synth(
    cfg: SynthConfig,
    corpus: BookCorpus,
    splitter: Callable[[str], list[str]] | None = None,
    normalize: Callable[[str], str] | None = None,
) -> SynthPlan:
    """Decide every reader, chapter and utterance. Deterministic for ``cfg.seed``."""
    cfg.validate()
    splitter = splitter or _default_splitter()
    normalize = normalize or _default_normalizer()
    joint = [s for s in _JOINT_ID_SPLITS if s in cfg.splits]
    added = [s for s in _ADDED_SPLITS if s in cfg.splits]
    splits = joint + added + [s for s in ALL_SPLITS if s in cfg.splits and s not in joint + added]
    all_books = sorted({b for s in splits for b in cfg.splits[s].books})
    missing = [b for b in all_books if b not in corpus.entries]
    if missing:
        raise ConfigError(
            f"books {missing} are not in the corpus at {corpus.root}; it has {', '.join(corpus.book_ids())}"
        )
    books = {b: corpus.load(b) for b in all_books}
    # Chapters long enough to read, shuffled once per book; readers of a book take them in turn.
    free: dict[str, list[int]] = {}
    for b, book in books.items():
        idx = [i for i, ch in enumerate(book.chapters) if ch.num_words >= cfg.min_chapter_words]
        rng = np.random.default_rng(stable_seed(cfg.seed, "chapters", b))
        free[b] = [idx[i] for i in rng.permutation(len(idx))]
    n_readers = sum(cfg.splits[s].readers for s in joint)
    speaker_ids = _unique_ids(cfg.seed, "speakers", n_readers, 100, 10000)
    n_chapters = sum(cfg.splits[s].readers * cfg.splits[s].chapters_per_reader for s in joint)
    chapter_ids = _unique_ids(cfg.seed, "chapters", n_chapters, 10000, 1000000)
    joint_books = sorted({b for s in joint for b in cfg.splits[s].books})
    project_ids = dict(
        zip(joint_books, _unique_ids(cfg.seed, "projects", len(joint_books), 1000, 30000), strict=True)
    )
    taken_projects = set(project_ids.values())
    for b in all_books:
        if b not in project_ids:
            project_ids[b] = _more_unique_ids(cfg.seed, "projects", b, 1, 1000, 30000, taken_projects)[0]
    project_ids = dict(sorted(project_ids.items()))
    taken_speakers, taken_chapters = set(speaker_ids), set(chapter_ids)
    joint_sids, joint_cids = iter(speaker_ids), iter(chapter_ids)

    readers: list[Reader] = []
    chapters: list[PlannedChapter] = []
    dropped = 0
    for split in splits:
        scfg = cfg.splits[split]
        if split in joint:
            sid_iter, chapter_ids_iter = joint_sids, joint_cids
        else:
            n_ch = scfg.readers * scfg.chapters_per_reader
            sid_iter = iter(
                _more_unique_ids(cfg.seed, "speakers", split, scfg.readers, 100, 10000, taken_speakers)
            )
            chapter_ids_iter = iter(
                _more_unique_ids(cfg.seed, "chapters", split, n_ch, 10000, 1000000, taken_chapters)
            )
        for i in range(scfg.readers):
            book_id = scfg.books[i % len(scfg.books)]
            reader = _draw_reader(cfg, split, i, scfg, next(sid_iter), book_id)
            readers.append(reader)
            voice, rate = get_voice(reader.voice), reader.speed * reader.tempo

            def estimate(text: str, voice: VoiceSpec = voice, rate: float = rate) -> float:
                return voice.estimate_seconds(text, rate)

            budget = scfg.minutes_per_reader * 60.0 if scfg.minutes_per_reader > 0 else float("inf")
            for _ in range(scfg.chapters_per_reader):
                if budget <= 0:
                    break
                if not free[book_id]:
                    raise ConfigError(
                        f"book {book_id} has too few chapters with >= {cfg.min_chapter_words} words for "
                        f"the readers assigned to it; lower chapters_per_reader or readers, or add books"
                    )
                ch_idx = free[book_id].pop(0)
                ch = books[book_id].chapters[ch_idx]
                chapter_id = next(chapter_ids_iter)
                rng = np.random.default_rng(stable_seed(cfg.seed, "cut", chapter_id))
                sentences = [s for para in ch.paragraphs for s in splitter(para)]
                # Plan inside [min, max] by a margin: the estimate is off by ~4% (sd) per utterance.
                lo, hi = cfg.min_seconds * (1 + _EST_MARGIN), cfg.max_seconds * (1 - _EST_MARGIN)
                texts, n_drop = cut_utterances(sentences, estimate, lo, hi, rng)
                dropped += n_drop
                utts: list[PlannedUtterance] = []
                for raw in texts:
                    if scfg.max_utterances_per_chapter and len(utts) >= scfg.max_utterances_per_chapter:
                        break
                    if budget <= 0:
                        break
                    transcript = normalize(raw)
                    if not transcript:
                        continue
                    est = estimate(raw)
                    budget -= est
                    uid = f"{reader.speaker_id}-{chapter_id}-{len(utts):04d}"
                    utts.append(
                        PlannedUtterance(uid, speakable_text(raw, normalize), transcript, round(est, 2))
                    )
                if utts:
                    chapters.append(
                        PlannedChapter(chapter_id, reader, book_id, ch_idx, ch.title, tuple(utts))
                    )
    _check_disjoint(readers)
    return SynthPlan(cfg, tuple(readers), tuple(chapters), project_ids, dropped)


def _check_disjoint(readers: Sequence[Reader]) -> None:
    by_split: dict[str, set[str]] = defaultdict(set)
    for r in readers:
        by_split[r.split].add(r.speaker_id)
    seen: dict[str, str] = {}
    for split, ids in by_split.items():
        for sid in ids:
            if sid in seen:
                raise UserLibriError(f"reader {sid} planned in {seen[sid]} and in {split}")
            seen[sid] = split
    keys = [(r.voice, r.speed, r.pitch_cents, r.tempo, r.gain_db, r.snr_db, r.reverberance) for r in readers]
    if len(set(keys)) != len(keys):
        raise UserLibriError("two planned readers have the same voice and perturbation")
