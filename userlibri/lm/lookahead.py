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
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from userlibri.constants import DEFAULT_CACHE_DIR
from userlibri.errors import DataFormatError

log = logging.getLogger(__name__)

LN10 = math.log(10.0)
#: Memoised (context, prefix) look-ahead scores before the table is cleared.
_MEMO_SIZE = 1 << 18
#: Context rows kept as Python lists before they are cleared.
_MAX_ROWS = 1 << 14
#: Look-ahead tables kept in the disk cache (the least recently used beyond this are deleted).
MAX_CACHED_TABLES = 64
#: Format of the cached tables (part of their cache key).
_TABLE_FORMAT = 1
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


def read_arpa_bigrams(path: str | Path) -> tuple[list[tuple[str, float]], list[tuple[str, str, float]]]:
    """``([(word, log10 backoff)], [(w1, w2, log10 prob)])``: the unigram backoffs and the bigrams
    of an ARPA file, in file order.

    A lean reader (about 4x faster than :func:`~userlibri.lm.ngram.iter_arpa`, which validates
    every section and count): the look-ahead reads ARPA files that KenLM has already loaded, and
    a 600k-bigram LM then takes ~0.5 s instead of ~2 s. Malformed lines of the two sections it
    reads are still errors naming the file and line."""
    path = Path(path)
    unigrams: list[tuple[str, float]] = []
    bigrams: list[tuple[str, str, float]] = []
    order = 0
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as e:
        raise DataFormatError(path, "an ARPA file", f"an unreadable file ({e})") from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if line[:1] == "\\":
                if line.startswith("\\1-grams:"):
                    order = 1
                elif line.startswith("\\2-grams:"):
                    order = 2
                elif order:
                    break  # \3-grams: or \end\
                continue
            if not order:
                continue
            fields = line.split()
            if not fields:
                continue
            try:
                if order == 1:
                    if len(fields) == 3:
                        unigrams.append((fields[1], float(fields[2])))
                    elif len(fields) != 2:
                        raise ValueError
                    else:
                        float(fields[0])
                elif len(fields) in (3, 4):
                    bigrams.append((fields[1], fields[2], float(fields[0])))
                else:
                    raise ValueError
            except ValueError:
                raise DataFormatError(
                    path, f"an ARPA {order}-gram line (log10 prob, {order} word(s), optional backoff)",
                    repr(line.rstrip("\n")), line=lineno,
                ) from None  # fmt: skip
    if order == 0:
        raise DataFormatError(path, "an ARPA file with a \\1-grams: section", "none")
    return unigrams, bigrams


class BigramLookahead:
    """Context-dependent look-ahead over the bigrams of an ARPA file.

    ``words``: the sorted vocabulary (as :class:`~userlibri.lm.kenlm_scorer.KenLMWordScorer` keeps
    it); contexts are their indices, plus :attr:`start` for ``<s>``; :data:`NO_CONTEXT` (-1)
    falls back to the unigram look-ahead. ``unigram``: the unigram look-ahead table
    (:func:`prefix_lookahead`) and ``unknown``: the score of a prefix that no word starts with.
    Natural logs throughout."""

    NO_CONTEXT = -1

    def __init__(
        self,
        arpa: str | Path,
        words: Sequence[str],
        unigram: dict[str, float],
        unknown: float,
        cache_dir: Path | None = DEFAULT_CACHE_DIR / "lookahead",
    ) -> None:
        self.words = tuple(words)
        self.unigram = unigram
        self.unknown = float(unknown)
        self.start = len(self.words)
        #: Each word's context id (its index in ``words``): the context after it completes.
        self.index = {w: i for i, w in enumerate(self.words)}
        cache = _cache_file(Path(arpa), self.words, cache_dir) if cache_dir is not None else None
        tables = _load_tables(cache, self.start + 1) if cache is not None else None
        #: Whether the tables came from the disk cache (``cache_dir``) rather than the ARPA file.
        self.from_cache = tables is not None
        if tables is None:
            tables = self._build(Path(arpa))
            if cache is not None:
                _save_tables(cache, tables)
        #: CSR: the successors of context ``u`` are ``succ[ptr[u]:ptr[u + 1]]`` (ascending ids),
        #: with their natural-log bigram probabilities ``probs``; ``backoff[u]``: u's backoff.
        self.ptr, self.succ, self.probs, self.backoff = tables
        self._backoff: list[float] = self.backoff.tolist()
        self._rows: dict[int, tuple[list[int], list[float]]] = {}
        self.n_bigrams = int(self.succ.size)
        self._ranges: dict[str, tuple[int, int]] = {}
        self._memo: dict[tuple[int, str], float] = {}

    def _build(self, arpa: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        index = self.index
        index_ctx = dict(index)
        index_ctx["<s>"] = self.start
        n_ctx = self.start + 1
        backoff = np.zeros(n_ctx, dtype=np.float64)
        unigrams, bigrams = read_arpa_bigrams(arpa)
        for word, bo in unigrams:
            i = index_ctx.get(word)
            if i is not None:
                backoff[i] = bo * LN10
        get_ctx, get_word = index_ctx.get, index.get
        c = np.fromiter((get_ctx(u, -1) for u, _, _ in bigrams), np.int64, len(bigrams))
        s = np.fromiter((get_word(w, -1) for _, w, _ in bigrams), np.int64, len(bigrams))
        p = np.fromiter((x for _, _, x in bigrams), np.float64, len(bigrams)) * LN10
        keep = (c >= 0) & (s >= 0)
        c, s, p = c[keep], s[keep], p[keep]
        order = np.lexsort((s, c))
        ptr = np.zeros(n_ctx + 1, dtype=np.int64)
        np.cumsum(np.bincount(c, minlength=n_ctx), out=ptr[1:])
        return ptr, s[order].astype(np.int32), p[order], backoff

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
            value = self._backoff[context] + uni
            ids, probs = self._successors(context)
            if ids:
                lo, hi = self._range(prefix)
                i = bisect.bisect_left(ids, lo)
                j = bisect.bisect_left(ids, hi, i)
                if j > i:
                    best = max(probs[i:j])
                    if best > value:
                        value = best
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = value
        return value

    def _successors(self, context: int) -> tuple[list[int], list[float]]:
        """The successor ids and bigram log-probs of ``context`` as Python lists (made on first
        use: bisecting and slicing lists beats numpy's per-call overhead on these small rows)."""
        hit = self._rows.get(context)
        if hit is None:
            a, b = int(self.ptr[context]), int(self.ptr[context + 1])
            hit = (self.succ[a:b].tolist(), self.probs[a:b].tolist())
            if len(self._rows) >= _MAX_ROWS:
                self._rows.clear()
            self._rows[context] = hit
        return hit

    def clear_cache(self) -> None:
        self._rows.clear()
        self._memo.clear()
        self._ranges.clear()


def _cache_file(arpa: Path, words: Sequence[str], cache_dir: Path) -> Path | None:
    """Where the tables of ``arpa`` (this file version, this vocabulary) are cached."""
    try:
        st = arpa.stat()
    except OSError:
        return None
    h = hashlib.sha1(json.dumps([_TABLE_FORMAT, str(arpa.resolve()), st.st_size, st.st_mtime_ns]).encode())
    h.update("\n".join(words).encode("utf-8"))
    return cache_dir / f"{h.hexdigest()[:24]}.npz"


def _load_tables(path: Path, n_ctx: int) -> tuple[np.ndarray, ...] | None:
    """The cached tables at ``path`` if present and well-formed (else None: rebuild them)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            tables = (z["ptr"], z["succ"], z["probs"], z["backoff"])
        os.utime(path)  # recently used: kept by the pruning
    except (OSError, ValueError, KeyError) as e:
        log.debug("look-ahead cache %s unreadable (%s): rebuilding", path, e)
        return None
    ptr, succ, probs, backoff = tables
    if ptr.shape != (n_ctx + 1,) or backoff.shape != (n_ctx,) or succ.shape != probs.shape:
        return None
    if int(ptr[-1]) != succ.size:
        return None
    return tables


def _save_tables(path: Path, tables: tuple[np.ndarray, ...]) -> None:
    """Write the tables atomically and prune the cache; a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, ptr=tables[0], succ=tables[1], probs=tables[2], backoff=tables[3])
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        cached = sorted(path.parent.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in cached[MAX_CACHED_TABLES:]:
            old.unlink(missing_ok=True)
    except OSError as e:
        log.debug("look-ahead cache %s not written: %s", path, e)


__all__ = ["BigramLookahead", "prefix_lookahead"]
