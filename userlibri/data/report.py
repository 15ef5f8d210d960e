"""Build statistics and the leakage figure.

Leakage: the share of a user's test-transcript word n-grams (default 8, within utterances) that
occur anywhere in the user's LM text, taken as one word stream (so n-grams that cross sentence
boundaries count too). A clean build has leakage ~0.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from userlibri.constants import DEFAULT_LEAKAGE_NGRAM


@dataclass(frozen=True)
class Leakage:
    """``found`` of ``total`` test n-grams occur in the LM text."""

    found: int
    total: int

    @property
    def share(self) -> float:
        return self.found / self.total if self.total else 0.0


def word_ngrams(words: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    """Contiguous word n-grams of ``words``."""
    return (tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def stream_ngrams(lines: Iterable[str], n: int = DEFAULT_LEAKAGE_NGRAM) -> set[tuple[str, ...]]:
    """All n-grams of the concatenated word stream of ``lines``."""
    words: list[str] = []
    for line in lines:
        words.extend(line.split())
    return set(word_ngrams(words, n))


def leakage(
    test_texts: Iterable[str], lm_ngrams: set[tuple[str, ...]], n: int = DEFAULT_LEAKAGE_NGRAM
) -> Leakage:
    """How many of the test texts' n-grams (within each text) are in ``lm_ngrams``."""
    found = total = 0
    for t in test_texts:
        for g in word_ngrams(t.split(), n):
            total += 1
            found += g in lm_ngrams
    return Leakage(found, total)


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, median, min, max of ``values`` (zeros when empty)."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": round(statistics.fmean(values), 3),
        "median": round(float(statistics.median(values)), 3),
        "min": round(float(min(values)), 3),
        "max": round(float(max(values)), 3),
    }


def format_report(report: Mapping) -> str:
    """A plain-text table of a build report (what ``userlibri build`` prints)."""
    lines = []
    splits = report.get("splits", {})
    hdr = f"{'split':<12}{'users':>6}{'utts':>7}  {'utts/user mean/med/min/max':<28}{'sents/user mean':>16}"
    hdr += f"{'words/user mean':>16}{'leak max':>10}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for split, s in splits.items():
        u = s["utterances_per_user"]
        lines.append(
            f"{split:<12}{s['users']:>6}{s['utterances']:>7}  "
            f"{u['mean']:>6.1f} {u['median']:>6.1f} {u['min']:>5.0f} {u['max']:>5.0f}    "
            f"{s['sentences_per_user']['mean']:>16.1f}{s['words_per_user']['mean']:>16.1f}"
            f"{s['leakage_max']:>10.4f}"
        )
    worst = report.get("leakage", {}).get("worst_user")
    if worst:
        lines.append(
            f"leakage ({report['leakage']['ngram']}-grams): mean {report['leakage']['mean']:.4f}, "
            f"worst {worst['user']} ({worst['split']}) {worst['share']:.4f} "
            f"= {worst['found']}/{worst['total']}"
        )
    al = report.get("alignment", {})
    if al:
        lines.append(
            f"chapters removed: {al['located']}/{al['chapters']} located "
            f"(coverage mean {al['coverage_mean']:.2f}, min {al['coverage_min']:.2f}); "
            f"not located: {al['not_located']}"
        )
    skipped = {k: v for k, v in report.get("skipped", {}).items() if v}
    lines.append("skipped: " + (", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none"))
    return "\n".join(lines)
