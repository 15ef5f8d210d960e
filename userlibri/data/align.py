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


def _ngrams(words: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(words[i : i + n]) for i in range(len(words) - n + 1))


class BookIndex:
    """Word n-gram index over a book's normalised sentences (with optional book-chapter ids)."""

    def __init__(
        self,
        sentences: Sequence[str],
        sentence_chapter: Sequence[int] | None = None,
        config: AlignConfig | None = None,
    ) -> None:
        self.config = (config or AlignConfig()).validate()
        self.sentences = list(sentences)
        if sentence_chapter is not None and len(sentence_chapter) != len(self.sentences):
            raise ValueError("sentence_chapter must have one entry per sentence")
        self.sentence_chapter = list(sentence_chapter) if sentence_chapter is not None else None
        n = self.config.ngram
        words: list[str] = []
        owner: list[int] = []
        for i, s in enumerate(self.sentences):
            toks = s.split()
            words.extend(toks)
            owner.extend([i] * len(toks))
        self._owner = owner
        index: dict[tuple[str, ...], list[int]] = {}
        for pos in range(len(words) - n + 1):
            key = tuple(words[pos : pos + n])
            lst = index.get(key)
            if lst is None:
                index[key] = [pos]
            else:
                lst.append(pos)
        self._index = index
        self._words = words
        self._sent_start = [0] * (len(self.sentences) + 1)
        acc = 0
        for i, s in enumerate(self.sentences):
            self._sent_start[i] = acc
            acc += len(s.split())
        self._sent_start[len(self.sentences)] = acc
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

    def span_ngrams(self, start: int, end: int) -> set[tuple[str, ...]]:
        """The n-grams of the word stream of sentences [start, end)."""
        w = self._words[self._sent_start[start] : self._sent_start[end]]
        return set(_ngrams(w, self.config.ngram))

    def locate(self, chapter_id: str, transcripts: Sequence[str]) -> ChapterMatch:
        """Find the sentence span that ``transcripts`` (normalised utterances, in order) read."""
        cfg = self.config
        n = cfg.ngram
        grams: list[tuple[str, ...]] = []
        for t in transcripts:
            grams.extend(_ngrams(t.split(), n))
        hits: list[tuple[int, float]] = []
        for g in grams:
            occ = self._index.get(g)
            if occ is not None and len(occ) <= cfg.max_ngram_count:
                w = 1.0 / len(occ)
                hits.extend((self._owner[p], w) for p in occ)
        if len(hits) < cfg.min_hits:
            return self._miss(chapter_id, len(hits), len(grams), f"{len(hits)} n-gram hits < {cfg.min_hits}")
        hits.sort()
        clusters: list[list[float]] = []  # [lo, hi, weight, count]
        for s, w in hits:
            if clusters and s - clusters[-1][1] <= cfg.max_gap:
                clusters[-1][1] = s
                clusters[-1][2] += w
                clusters[-1][3] += 1
            else:
                clusters.append([s, s, w, 1])
        best = max(range(len(clusters)), key=lambda i: (clusters[i][2], -i))
        total = sum(c[2] for c in clusters)
        lo_i = hi_i = best
        need = max(cfg.min_hits, 0.05 * total)

        def good(i: int) -> bool:
            return clusters[i][3] >= need or clusters[i][2] >= need

        while lo_i > 0 and clusters[lo_i][0] - clusters[lo_i - 1][1] <= cfg.merge_gap and good(lo_i - 1):
            lo_i -= 1
        while (
            hi_i < len(clusters) - 1
            and clusters[hi_i + 1][0] - clusters[hi_i][1] <= cfg.merge_gap
            and good(hi_i + 1)
        ):
            hi_i += 1
        start, end = int(clusters[lo_i][0]), int(clusters[hi_i][1]) + 1
        nhits = int(sum(c[3] for c in clusters[lo_i : hi_i + 1]))
        span = self.span_ngrams(start, end)
        coverage = sum(1 for g in grams if g in span) / len(grams) if grams else 0.0
        if coverage < cfg.min_coverage:
            return ChapterMatch(
                chapter_id,
                False,
                start,
                end,
                -1,
                -1,
                coverage,
                nhits,
                len(grams),
                "",
                f"coverage {coverage:.2f} < {cfg.min_coverage}",
            )
        cut_start, cut_end, how = self._widen(start, end)
        return ChapterMatch(
            chapter_id, True, start, end, cut_start, cut_end, coverage, nhits, len(grams), how
        )

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
