"""Locate the chapters that test audio reads inside a book's normalised sentences.

LibriVox chapter titles do not reliably name Gutenberg chapters, so a chapter is found by its
words: the book becomes one word stream (sentence id per word); every word n-gram that occurs at
most ``max_ngram_count`` times in the book points at the sentence where it starts. The chapter's
transcript n-grams hit those sentences; hits are clustered (a gap of more than ``max_gap``
sentences starts a new cluster), the heaviest cluster wins and nearby substantial clusters are
merged into it (partial reading leaves gaps). The matched span is then widened to the enclosing
book chapters when the book has them, else by ``margin`` sentences. Robust to a few ASR-ish or
normalisation differences because one changed word only kills the ``n`` n-grams around it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from userlibri.data.report import Vocab, ngram_hashes, sorted_member
from userlibri.errors import ConfigError

DEFAULT_ALIGN_NGRAM = 4
DEFAULT_ALIGN_MAX_NGRAM_COUNT = 2
DEFAULT_ALIGN_MAX_GAP = 40
DEFAULT_ALIGN_MERGE_GAP = 400
DEFAULT_ALIGN_MIN_HITS = 3
DEFAULT_ALIGN_MIN_COVERAGE = 0.2
DEFAULT_ALIGN_MARGIN = 3


@dataclass(frozen=True)
class AlignConfig:
    """Alignment knobs (sentence counts are in book sentences)."""

    ngram: int = DEFAULT_ALIGN_NGRAM
    max_ngram_count: int = DEFAULT_ALIGN_MAX_NGRAM_COUNT
    max_gap: int = DEFAULT_ALIGN_MAX_GAP
    merge_gap: int = DEFAULT_ALIGN_MERGE_GAP
    min_hits: int = DEFAULT_ALIGN_MIN_HITS
    min_coverage: float = DEFAULT_ALIGN_MIN_COVERAGE
    margin: int = DEFAULT_ALIGN_MARGIN

    def validate(self) -> AlignConfig:
        if self.ngram < 2:
            raise ConfigError(f"align ngram must be >= 2, got {self.ngram}")
        for name in ("max_ngram_count", "min_hits"):
            if getattr(self, name) < 1:
                raise ConfigError(f"align {name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_gap", "merge_gap", "margin"):
            if getattr(self, name) < 0:
                raise ConfigError(f"align {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"align min_coverage must be in [0, 1], got {self.min_coverage}")
        return self


@dataclass(frozen=True)
class ChapterMatch:
    """Where one read chapter sits in the book.

    ``start``/``end``: the matched sentence span [start, end); ``cut_start``/``cut_end``: the span
    removed (widened to book chapters or by the margin). All -1 when not located. ``coverage`` is
    the share of the transcript's n-grams found inside the matched span.
    """

    chapter_id: str
    located: bool
    start: int
    end: int
    cut_start: int
    cut_end: int
    coverage: float
    hits: int
    num_ngrams: int
    widened_to: str  # "chapters", "margin" or "" when not located
    reason: str = ""


class BookIndex:
    """Word n-gram index over a book's normalised sentences (with optional book-chapter ids)."""

    def __init__(
        self,
        sentences: Sequence[str],
        sentence_chapter: Sequence[int] | None = None,
        config: AlignConfig | None = None,
        vocab: Vocab | None = None,
        ids: np.ndarray | None = None,
    ) -> None:
        """``vocab``/``ids``: the sentences already encoded as one stream (saves re-encoding)."""
        self.config = (config or AlignConfig()).validate()
        self.sentences = list(sentences)
        if sentence_chapter is not None and len(sentence_chapter) != len(self.sentences):
            raise ValueError("sentence_chapter must have one entry per sentence")
        self.sentence_chapter = list(sentence_chapter) if sentence_chapter is not None else None
        n = self.config.ngram
        if vocab is None or ids is None:
            vocab = Vocab()
            ids = vocab.encode(self.sentences, grow=True, sep=False)
        self.vocab = vocab
        self.ids = ids
        lengths = np.fromiter(
            (len(s.split()) for s in self.sentences), dtype=np.int64, count=len(self.sentences)
        )
        self._sent_start = np.concatenate([[0], np.cumsum(lengths)])
        self.owner = np.repeat(np.arange(len(self.sentences)), lengths)  # sentence of each word
        self._hashes, _, _ = ngram_hashes(ids, n)  # one per word position (n-grams cross sentences)
        self._order = np.argsort(self._hashes, kind="stable")
        self._sorted = self._hashes[self._order]
        self._chapter_bounds = self._chapter_ranges()

    def _chapter_ranges(self) -> dict[int, tuple[int, int]] | None:
        sc = self.sentence_chapter
        if not sc or len(set(sc)) < 2:
            return None
        bounds: dict[int, tuple[int, int]] = {}
        for i, c in enumerate(sc):
            lo, hi = bounds.get(c, (i, i + 1))
            bounds[c] = (min(lo, i), max(hi, i + 1))
        return bounds

    def _query(self, transcripts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of the transcripts' n-grams (within utterances) and whether each is known."""
        h, crosses, unk = ngram_hashes(self.vocab.encode(transcripts, grow=False), self.config.ngram)
        keep = ~crosses
        return h[keep], ~unk[keep]

    def locate(self, chapter_id: str, transcripts: Sequence[str]) -> ChapterMatch:
        """Find the sentence span that ``transcripts`` (normalised utterances, in order) read."""
        cfg = self.config
        q, known = self._query(transcripts)
        num = len(q)
        qk = q[known]
        left = np.searchsorted(self._sorted, qk, side="left")
        right = np.searchsorted(self._sorted, qk, side="right")
        count = right - left
        sel = (count >= 1) & (count <= cfg.max_ngram_count)
        left, count = left[sel], count[sel]
        total = int(count.sum())
        if total < cfg.min_hits:
            return self._miss(chapter_id, total, num, f"{total} n-gram hits < {cfg.min_hits}")
        starts = np.repeat(left, count) + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
        sent = self.owner[self._order[starts]]
        weight = np.repeat(1.0 / count, count)
        order = np.argsort(sent, kind="stable")
        sent, weight = sent[order], weight[order]
        breaks = np.flatnonzero(np.diff(sent) > cfg.max_gap) + 1
        lo_idx = np.concatenate([[0], breaks])
        hi_idx = np.concatenate([breaks, [len(sent)]])
        c_lo, c_hi = sent[lo_idx], sent[hi_idx - 1]
        c_w = np.add.reduceat(weight, lo_idx)
        c_n = hi_idx - lo_idx
        best = int(np.argmax(c_w))  # the first on a tie
        need = max(cfg.min_hits, 0.05 * float(c_w.sum()))

        def good(i: int) -> bool:
            return c_n[i] >= need or c_w[i] >= need

        a = b = best
        while a > 0 and c_lo[a] - c_hi[a - 1] <= cfg.merge_gap and good(a - 1):
            a -= 1
        while b < len(c_lo) - 1 and c_lo[b + 1] - c_hi[b] <= cfg.merge_gap and good(b + 1):
            b += 1
        start, end = int(c_lo[a]), int(c_hi[b]) + 1
        nhits = int(c_n[a : b + 1].sum())
        span = np.sort(self._span_hashes(start, end))
        coverage = float((sorted_member(span, q) & known).sum()) / num if num else 0.0
        if coverage < cfg.min_coverage:
            reason = f"coverage {coverage:.2f} < {cfg.min_coverage}"
            return ChapterMatch(chapter_id, False, start, end, -1, -1, coverage, nhits, num, "", reason)
        cut_start, cut_end, how = self._widen(start, end)
        return ChapterMatch(chapter_id, True, start, end, cut_start, cut_end, coverage, nhits, num, how)

    def _span_hashes(self, start: int, end: int) -> np.ndarray:
        """Hashes of the n-grams that start and end within sentences [start, end)."""
        lo, hi = int(self._sent_start[start]), int(self._sent_start[end]) - self.config.ngram + 1
        return self._hashes[lo : max(lo, hi)]

    def _miss(self, chapter_id: str, hits: int, ngrams: int, reason: str) -> ChapterMatch:
        return ChapterMatch(chapter_id, False, -1, -1, -1, -1, 0.0, hits, ngrams, "", reason)

    def _widen(self, start: int, end: int) -> tuple[int, int, str]:
        nsent = len(self.sentences)
        margin = (max(0, start - self.config.margin), min(nsent, end + self.config.margin), "margin")
        bounds = self._chapter_bounds
        if bounds is None or self.sentence_chapter is None:
            return margin
        chapters = set(self.sentence_chapter[start:end])
        lo = min(bounds[c][0] for c in chapters)
        hi = max(bounds[c][1] for c in chapters)
        # A chapter split that failed (one giant "chapter") must not wipe the book: if widening
        # would remove over half the book while the match is under a quarter of it, use the margin.
        if (hi - lo) > 0.5 * nsent and (end - start) < 0.25 * nsent:
            return margin
        return lo, hi, "chapters"


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open spans, sorted and merged."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if lo >= hi:
            continue
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def in_spans(i: int, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether index ``i`` lies in one of the merged, sorted ``spans``."""
    k = bisect.bisect_right(spans, (i, float("inf"))) - 1
    return k >= 0 and spans[k][0] <= i < spans[k][1]
