"""Build statistics and the leakage figure.

Leakage: the share of a user's test-transcript word n-grams (default 8, within utterances) that
occur anywhere in the user's LM text, taken as one word stream (so n-grams that cross sentence
boundaries count too). A clean build has leakage ~0.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from userlibri.constants import DEFAULT_LEAKAGE_NGRAM

if TYPE_CHECKING:  # build types, without importing the builder at run time
    from userlibri.data.librispeech import LibriUtterance
    from userlibri.data.userlibri import BookResult, BuildConfig


@dataclass(frozen=True)
class Leakage:
    """``found`` of ``total`` test n-grams occur in the LM text."""

    found: int
    total: int

    @property
    def share(self) -> float:
        return self.found / self.total if self.total else 0.0


# n-grams are compared as 64-bit polynomial hashes of per-process word ids (numpy, no tuples):
# a collision needs two distinct n-grams with equal hashes, odds ~ (#n-grams)^2 / 2^64.
_MULT = np.uint64(0x9E3779B97F4A7C15)
SEP = -1  # separates texts: no n-gram spans it
UNK = -2  # a word the vocabulary has not seen: its n-grams can match nothing


class Vocab:
    """Word -> small int ids, shared by everything compared within one process."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def encode(self, texts: Iterable[str], grow: bool = True, sep: bool = True) -> np.ndarray:
        """Ids of the words of ``texts``; with ``sep`` a ``SEP`` after each text; unknown words
        are ``UNK`` unless ``grow`` adds them."""
        ids = self._ids
        out: list[int] = []
        if grow:
            add = ids.setdefault
            for t in texts:
                out.extend([add(w, len(ids)) for w in t.split()])
                if sep:
                    out.append(SEP)
        else:
            get = ids.get
            for t in texts:
                out.extend([get(w, UNK) for w in t.split()])
                if sep:
                    out.append(SEP)
        return np.asarray(out, dtype=np.int64)


def sorted_member(sorted_hashes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``q[i] in sorted_hashes`` for every i (``sorted_hashes`` sorted ascending)."""
    if len(sorted_hashes) == 0 or len(q) == 0:
        return np.zeros(len(q), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_hashes, q), len(sorted_hashes) - 1)
    return sorted_hashes[pos] == q


def ngram_hashes(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every window of ``n`` ids: its hash, whether it crosses a ``SEP`` (invalid) and
    whether it holds an ``UNK``. Arrays of length ``max(0, len(ids) - n + 1)``."""
    m = len(ids) - n + 1
    if m <= 0:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    vals = (ids + 3).astype(np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _MULT + vals[k : k + m]
    sep = np.concatenate([[0], np.cumsum(ids == SEP)])
    unk = np.concatenate([[0], np.cumsum(ids == UNK)])
    crosses = (sep[n:] - sep[:m]) > 0
    has_unk = (unk[n:] - unk[:m]) > 0
    return h, crosses, has_unk


class StreamNgrams:
    """The set of word n-grams of ``lines`` read as one word stream (crossing line ends)."""

    def __init__(
        self, lines: Iterable[str], n: int = DEFAULT_LEAKAGE_NGRAM, vocab: Vocab | None = None
    ) -> None:
        vocab = vocab or Vocab()
        self._init(vocab.encode(lines, grow=True, sep=False), n, vocab)

    @classmethod
    def from_ids(cls, ids: np.ndarray, n: int, vocab: Vocab) -> StreamNgrams:
        """From a word-id stream already encoded with ``vocab``."""
        obj = cls.__new__(cls)
        obj._init(ids, n, vocab)
        return obj

    def _init(self, ids: np.ndarray, n: int, vocab: Vocab) -> None:
        self.n = n
        self.vocab = vocab
        h, cross, _ = ngram_hashes(ids, n)
        self.hashes = np.sort(h[~cross])

    def leakage(self, test_texts: Iterable[str]) -> Leakage:
        """How many of the n-grams within each of ``test_texts`` are in this set."""
        h, crosses, has_unk = ngram_hashes(self.vocab.encode(test_texts, grow=False), self.n)
        valid = ~crosses
        hit = sorted_member(self.hashes, h) & valid & ~has_unk
        return Leakage(int(hit.sum()), int(valid.sum()))


def stream_ngrams(lines: Iterable[str], n: int = DEFAULT_LEAKAGE_NGRAM) -> StreamNgrams:
    """All n-grams of the concatenated word stream of ``lines``."""
    return StreamNgrams(lines, n)


def leakage(test_texts: Iterable[str], lm: StreamNgrams) -> Leakage:
    """How many of the test texts' n-grams (within each text) occur in the LM text ``lm``."""
    return lm.leakage(test_texts)


def text_ngram_hashes(texts: Iterable[str], n: int, vocab: Vocab) -> np.ndarray:
    """Sorted hashes of the n-grams within each of ``texts`` whose words ``vocab`` knows."""
    h, cross, unk = ngram_hashes(vocab.encode(texts, grow=False), n)
    return np.sort(h[~cross & ~unk])


def rows_sharing_ngrams(ids: np.ndarray, row: np.ndarray, wanted: np.ndarray, n: int) -> np.ndarray:
    """Distinct values of ``row`` (the line of each word of the stream ``ids``) whose line holds,
    within itself, an n-gram whose hash is in the sorted array ``wanted``."""
    h, cross, unk = ngram_hashes(ids, n)
    if len(h) == 0:
        return np.zeros(0, dtype=np.int64)
    same_row = row[: len(h)] == row[n - 1 :]
    hit = sorted_member(wanted, h) & ~cross & ~unk & same_row
    return np.unique(row[: len(h)][hit])


def lines_sharing_ngrams(lines: Sequence[str], texts: Iterable[str], n: int) -> set[int]:
    """Indices of ``lines`` that contain (within the line) an n-gram of one of ``texts``."""
    vocab = Vocab()
    ids = vocab.encode(lines, grow=True, sep=False)
    row = np.repeat(np.arange(len(lines)), [len(s.split()) for s in lines]).astype(np.int64)
    wanted = text_ngram_hashes(texts, n, vocab)
    return {int(i) for i in rows_sharing_ngrams(ids, row, wanted, n)}


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


def build_report(
    cfg: BuildConfig,
    users: Mapping[tuple[str, str], list[tuple[LibriUtterance, str, float]]],
    results: Mapping[str, BookResult],
    skipped: Mapping[str, int],
    timing: Mapping[str, float],
) -> dict:
    """The build report: per split and per user statistics, per book chapter matches, leakage,
    skip counts and timing. ``users`` maps (split, user id) to (utterance, book, duration) rows."""
    per_user = []
    for (split, uid), rows in users.items():
        b = rows[0][1]
        r = results[b]
        found, total = r.leakage.get(f"{split}/{uid}", (0, 0))
        bfound, btotal = r.leakage_before_filter.get(f"{split}/{uid}", (0, 0))
        per_user.append(
            {
                "user": uid,
                "split": split,
                "speaker": rows[0][0].speaker_id,
                "book": b,
                "utterances": len(rows),
                "duration_s": round(sum(x[2] for x in rows), 2),
                "lm_sentences": len(r.sentences),
                "lm_words": sum(len(s.split()) for s in r.sentences),
                "leakage": round(found / total, 6) if total else 0.0,
                "leak_found": found,
                "leak_total": total,
                "leakage_before_filter": round(bfound / btotal, 6) if btotal else 0.0,
            }
        )
    splits = {}
    for split in cfg.splits:
        us = [u for u in per_user if u["split"] == split]
        splits[split] = {
            "users": len(us),
            "utterances": sum(u["utterances"] for u in us),
            "utterances_per_user": summary([u["utterances"] for u in us]),
            "sentences_per_user": summary([u["lm_sentences"] for u in us]),
            "words_per_user": summary([u["lm_words"] for u in us]),
            "leakage_max": max((u["leakage"] for u in us), default=0.0),
        }
    worst = max(per_user, key=lambda u: (u["leakage"], u["leak_found"]), default=None)
    matches = [m for r in results.values() for m in r.matches]
    located = [m for m in matches if m.located]
    books = []
    for b, r in results.items():
        books.append(
            {
                "book": b,
                "book_chapters": r.book_chapters,
                "book_sentences": r.book_sentences,
                "removed_by_chapters": r.removed_by_chapters,
                "removed_by_filter": r.removed_by_filter,
                "lm_sentences": len(r.sentences),
                "seconds": round(r.seconds, 3),
                "skip_reason": r.skip_reason,
                "chapters": [asdict(m) for m in r.matches],
            }
        )
    cfg_d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    cfg_d["splits"] = list(cfg.splits)
    return {
        "config": cfg_d,
        "splits": splits,
        "users": per_user,
        "books": books,
        "alignment": {
            "chapters": len(matches),
            "located": len(located),
            "not_located": len(matches) - len(located),
            "coverage_mean": round(sum(m.coverage for m in located) / len(located), 4) if located else 0.0,
            "coverage_min": round(min((m.coverage for m in located), default=0.0), 4),
        },
        "leakage": {
            "ngram": cfg.leakage_ngram,
            "mean": round(sum(u["leakage"] for u in per_user) / len(per_user), 6) if per_user else 0.0,
            "max": worst["leakage"] if worst else 0.0,
            "mean_before_filter": round(sum(u["leakage_before_filter"] for u in per_user) / len(per_user), 6)
            if per_user
            else 0.0,
            "worst_user": {k: worst[k] for k in ("user", "split", "leak_found", "leak_total")}
            | {"share": worst["leakage"], "found": worst["leak_found"], "total": worst["leak_total"]}
            if worst
            else None,
        },
        "skipped": dict(sorted(skipped.items())),
        "timing": dict(timing),
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
