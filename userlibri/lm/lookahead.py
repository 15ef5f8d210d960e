"""Partial-word look-ahead for word n-grams decoded over sub-word pieces.

While a CTC or transducer search spells a word piece by piece, the word LM cannot score it yet.
A *look-ahead* gives the partial word ``p`` the best score among the vocabulary words that start
with ``p``, so that beams in the middle of a likely word are not pruned in favour of beams that have
just finished one; the word's real score replaces it when the word completes.

* :func:`prefix_lookahead`: the best *unigram* score per prefix (context-free; one dict look-up).
* :class:`BigramLookahead`: the best score given the previous word, from the ARPA's bigrams: for
  context ``u`` and prefix ``p``, the larger of the best explicit bigram ``log P(w | u)`` over the
  words ``w`` that start with ``p``, and ``backoff(u)`` plus the unigram look-ahead of ``p`` (the
  backed-off estimate; an upper bound over the words without a bigram). This is the bigram
  approximation of the "language model look-ahead" of WFST and lexicon-tree decoders. A per-user
  LM differs from the background mostly in which words follow which, so a context-free look-ahead
  hides much of what it knows until a word is complete; the context-dependent one lets it steer
  the beam from a word's first piece.

No library offers this for a KenLM model fed sentencepiece pieces (KenLM has no successor query;
pyctcdecode and flashlight score partial words by trie membership only), hence our own: a CSR table
of each context word's successor ids over the sorted vocabulary, so that the successors starting
with a prefix are one contiguous slice, found by two binary searches.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from userlibri.lm.ngram import iter_arpa

LN10 = math.log(10.0)
#: Memoised (context, prefix) look-ahead scores before the table is cleared.
_MEMO_SIZE = 1 << 18
#: Sorts after every character: ``prefix + _MAX_CHAR`` bounds the words that start with ``prefix``.
_MAX_CHAR = "\U0010ffff"


def prefix_lookahead(words: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    """Each non-empty prefix of each word -> the best score among the words that start with it.

    ``words[i]`` has score ``scores[i]``. One pass over the words' prefixes (~8 per word: a
    100k-word vocabulary takes well under a second and a few tens of MB)."""
    table: dict[str, float] = {}
    get = table.get
    for word, score in zip(words, scores, strict=True):
        for k in range(1, len(word) + 1):
            prefix = word[:k]
            best = get(prefix)
            if best is None or score > best:
                table[prefix] = score
    return table


class BigramLookahead:
    """Context-dependent look-ahead over the bigrams of an ARPA file.

    ``words``: the sorted vocabulary (as :class:`~userlibri.lm.kenlm_scorer.KenLMWordScorer` keeps
    it); contexts are their indices, plus :attr:`start` for ``<s>``; :data:`NO_CONTEXT` (-1)
    falls back to the unigram look-ahead. ``unigram``: the unigram look-ahead table
    (:func:`prefix_lookahead`) and ``unknown``: the score of a prefix that no word starts with.
    Natural logs throughout."""

    NO_CONTEXT = -1

    def __init__(
        self, arpa: str | Path, words: Sequence[str], unigram: dict[str, float], unknown: float
    ) -> None:
        self.words = tuple(words)
        self.unigram = unigram
        self.unknown = float(unknown)
        index = {w: i for i, w in enumerate(self.words)}
        self.start = len(self.words)
        index_ctx = dict(index)
        index_ctx["<s>"] = self.start
        n_ctx = self.start + 1
        backoff = np.zeros(n_ctx, dtype=np.float64)
        ctx: list[int] = []
        succ: list[int] = []
        probs: list[float] = []
        for gram, prob, bo in iter_arpa(arpa, max_order=2):
            if len(gram) == 1:
                i = index_ctx.get(gram[0])
                if i is not None:
                    backoff[i] = bo * LN10
                continue
            u = index_ctx.get(gram[0])
            w = index.get(gram[1])
            if u is not None and w is not None:
                ctx.append(u)
                succ.append(w)
                probs.append(prob * LN10)
        c = np.asarray(ctx, dtype=np.int64)
        s = np.asarray(succ, dtype=np.int64)
        order = np.lexsort((s, c))
        #: CSR: the successors of context ``u`` are ``succ[ptr[u]:ptr[u + 1]]`` (ascending ids).
        self.ptr = np.zeros(n_ctx + 1, dtype=np.int64)
        np.cumsum(np.bincount(c, minlength=n_ctx), out=self.ptr[1:])
        self.succ = s[order].astype(np.int32)
        self.probs = np.asarray(probs, dtype=np.float64)[order]
        self.backoff = backoff
        self.n_bigrams = int(self.succ.size)
        self._ranges: dict[str, tuple[int, int]] = {}
        self._memo: dict[tuple[int, str], float] = {}

    def _range(self, prefix: str) -> tuple[int, int]:
        """The indices ``[lo, hi)`` of the vocabulary words that start with ``prefix``."""
        hit = self._ranges.get(prefix)
        if hit is None:
            lo = bisect.bisect_left(self.words, prefix)
            hit = (lo, bisect.bisect_left(self.words, prefix + _MAX_CHAR, lo))
            if len(self._ranges) >= _MEMO_SIZE:
                self._ranges.clear()
            self._ranges[prefix] = hit
        return hit

    def score(self, context: int, prefix: str) -> float:
        """The look-ahead of the partial word ``prefix`` (non-empty) after ``context``."""
        key = (context, prefix)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        uni = self.unigram.get(prefix)
        if uni is None:
            value = self.unknown  # no vocabulary word starts with it
        elif context < 0:
            value = uni
        else:
            value = self.backoff[context] + uni
            lo, hi = self._range(prefix)
            a, b = int(self.ptr[context]), int(self.ptr[context + 1])
            if b > a:
                seg = self.succ[a:b]
                i = a + int(np.searchsorted(seg, lo))
                j = a + int(np.searchsorted(seg, hi))
                if j > i:
                    best = float(self.probs[i:j].max())
                    if best > value:
                        value = best
            value = float(value)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = value
        return value

    def clear_cache(self) -> None:
        self._memo.clear()
        self._ranges.clear()


__all__ = ["BigramLookahead", "prefix_lookahead"]
