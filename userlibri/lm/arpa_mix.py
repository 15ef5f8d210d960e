"""Static linear interpolation of word ARPA n-gram LMs into one ARPA (then a KenLM binary).

For weights ``l_i`` (summing to 1) the mixed model lists the union of the components' n-grams.
For every listed n-gram ``h w`` its probability is exactly ``sum_i l_i P_i(w | h)``, where each
``P_i`` follows its own backoff chain; the backoff weight of every context ``h`` is recomputed so
that the mixed distribution over the vocabulary sums to one:

    bo(h) = (1 - sum_{w listed after h} P_mix(w | h)) / (1 - sum_{w listed after h} P_mix(w | h'))

This is what SRILM's ``ngram -mix-lm`` does (static mixing). Words an n-gram is not listed for
back off, so their mixed probability is ``bo(h) P_mix(w | h')``: exact mixtures are not
representable in backoff form, listed n-grams are. A word outside a component's vocabulary gets
probability 0 from that component (not its ``<unk>`` probability), so every component is a
distribution over the union vocabulary and the mixture stays normalised.

Why not an existing tool: SRILM is not packaged; KenLM's ``interpolate`` (lm/interpolate/ in the
kenlm sdist, needs Eigen3) is *log-linear* interpolation of lmplz intermediate files, a different
model. Debian's ``irstlm`` has an ``interpolate-lm`` tool; it was not evaluated here.

Implementation: n-grams are numpy rows of word ids, looked up through sorted 64-bit row hashes
(collisions are detected, never silently merged), one order at a time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from userlibri.errors import ConfigError, DataFormatError, ExternalToolError, UserLibriError
from userlibri.fsio import atomic_path
from userlibri.lm.ngram import DEFAULT_LMPLZ_MEMORY, find_tool, iter_arpa

log = logging.getLogger(__name__)

#: log10 written for a probability of zero (ARPA has no -inf); KenLM's own convention.
LOG10_ZERO = -99.0
#: Smallest left-over mass allowed when normalising a context (guards rounding).
_MIN_MASS = 1e-12
#: Models sharing less than this share of the smaller vocabulary are refused (different units).
MIN_SHARED_VOCAB = 0.1
SPECIALS = frozenset({"<s>", "</s>", "<unk>"})
_HASH_MULT = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9,
     0x2545F4914F6CDD1D, 0x9FB21C651E98DF25],
    dtype=np.uint64,
)  # fmt: skip


@dataclass(frozen=True)
class ArpaOrder:
    """The n-grams of one order: ``ids`` (N, k) int32 word ids, ``prob``/``backoff`` (N,) log10."""

    ids: np.ndarray
    prob: np.ndarray
    backoff: np.ndarray


@dataclass
class ArpaModel:
    """A word ARPA model in arrays: ``vocab[i]`` is word id ``i``; ``orders[k-1]`` holds k-grams."""

    path: Path
    vocab: list[str]
    orders: list[ArpaOrder]
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def order(self) -> int:
        return len(self.orders)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(o.prob) for o in self.orders)

    def word_index(self) -> dict[str, int]:
        if not self._index:
            self._index = {w: i for i, w in enumerate(self.vocab)}
        return self._index


def read_arpa(path: str | Path) -> ArpaModel:
    """Read a word ARPA into arrays (validated by :func:`userlibri.lm.ngram.iter_arpa`, so a
    corrupt file raises ``DataFormatError`` naming the line)."""
    path = Path(path)
    vocab: list[str] = []
    index: dict[str, int] = {}
    rows: list[list[tuple[int, ...]]] = []
    probs: list[list[float]] = []
    backs: list[list[float]] = []
    for words, prob, backoff in iter_arpa(path):
        k = len(words)
        while len(rows) < k:
            rows.append([])
            probs.append([])
            backs.append([])
        if k == 1:
            if words[0] in index:
                raise DataFormatError(path, "each unigram listed once", f"{words[0]!r} twice")
            index[words[0]] = len(vocab)
            vocab.append(words[0])
            rows[0].append((index[words[0]],))
        else:
            try:
                rows[k - 1].append(tuple(index[w] for w in words))
            except KeyError as e:
                raise DataFormatError(
                    path, f"every word of a {k}-gram listed as a unigram", f"{e.args[0]!r} in {words}"
                ) from None
        probs[k - 1].append(prob)
        backs[k - 1].append(backoff)
    orders = [
        ArpaOrder(
            ids=np.array(r, dtype=np.int32).reshape(len(r), k + 1),
            prob=np.array(p, dtype=np.float64),
            backoff=np.array(b, dtype=np.float64),
        )
        for k, (r, p, b) in enumerate(zip(rows, probs, backs, strict=True))
    ]
    if not orders:
        raise DataFormatError(path, "at least one unigram", "no n-grams")
    return ArpaModel(path, vocab, orders, index)


# ---------------------------------------------------------------------------------------------
# Row hashing and lookup


def _row_hash(ids: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of ``ids`` (N, k)."""
    h = np.zeros(len(ids), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(ids.shape[1]):
            h = (h ^ (ids[:, j].astype(np.uint64) + np.uint64(j + 1))) * _HASH_MULT[j % len(_HASH_MULT)]
            h ^= h >> np.uint64(29)
    return h


@dataclass(frozen=True)
class _Table:
    """Sorted row hashes of one order's n-grams and the row each belongs to."""

    hashes: np.ndarray
    rows: np.ndarray
    ids: np.ndarray

    @classmethod
    def build(cls, ids: np.ndarray, what: str) -> _Table:
        h = _row_hash(ids)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        if len(hs) > 1 and np.any(hs[1:] == hs[:-1]):
            dup = order[1:][hs[1:] == hs[:-1]][0]
            raise UserLibriError(f"{what}: n-gram {ids[dup].tolist()} is listed twice (or a hash collision)")
        return cls(hs, order, ids)

    def find(self, query: np.ndarray) -> np.ndarray:
        """Row of each query row, -1 where absent."""
        if len(self.hashes) == 0 or len(query) == 0:
            return np.full(len(query), -1, dtype=np.int64)
        h = _row_hash(query)
        pos = np.searchsorted(self.hashes, h).clip(max=len(self.hashes) - 1)
        hit = self.hashes[pos] == h
        rows = np.where(hit, self.rows[pos], -1).astype(np.int64)
        ok = rows >= 0
        if ok.any() and not np.array_equal(self.ids[rows[ok]], query[ok]):
            raise UserLibriError("n-gram hash collision while mixing; this should never happen")
        return rows


# ---------------------------------------------------------------------------------------------
# Mixing


@dataclass(frozen=True)
class MixResult:
    """The mixed model in arrays (union vocabulary, per-order ids/log10 prob/log10 backoff)."""

    vocab: list[str]
    orders: list[ArpaOrder]
    weights: tuple[float, ...]
    clipped_contexts: int = 0

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(o.prob) for o in self.orders)


def check_weights(weights: Sequence[float], n: int) -> tuple[float, ...]:
    """Validate mixture weights: ``n`` values in [0, 1] summing to 1 (within 1e-6)."""
    w = tuple(float(x) for x in weights)
    if len(w) != n:
        raise ConfigError(f"mixture weights: expected {n} (one per model), found {len(w)}: {list(w)}")
    if any(not (0.0 <= x <= 1.0) or math.isnan(x) for x in w) or abs(sum(w) - 1.0) > 1e-6:
        raise ConfigError(f"mixture weights: expected values in [0, 1] summing to 1, found {list(w)}")
    return w


def _sidecar_kind(path: Path) -> tuple[str | None, str | None]:
    meta = path.with_suffix(".json")
    if not meta.is_file():
        return None, None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(meta, "JSON n-gram metadata", f"invalid JSON ({e})", line=e.lineno) from e
    return data.get("kind"), data.get("tokenizer_id")


def check_compatible(models: Sequence[ArpaModel], min_shared: float = MIN_SHARED_VOCAB) -> None:
    """Refuse to mix models over different units: a word LM with a token LM (by their ``.json``
    sidecars, when present), token LMs of different tokenizers, or vocabularies that barely
    overlap (less than ``min_shared`` of the smaller one's words)."""
    kinds = [_sidecar_kind(m.path) for m in models]
    for (kind, tok), m in zip(kinds[1:], models[1:], strict=True):
        k0, t0 = kinds[0]
        if kind and k0 and (kind != k0 or (tok or None) != (t0 or None)):
            raise UserLibriError(
                f"vocabulary mismatch: {models[0].path} is {k0} (tokenizer {str(t0)[:12]}), "
                f"{m.path} is {kind} (tokenizer {str(tok)[:12]}); mix LMs over the same units"
            )
    first = set(models[0].vocab) - SPECIALS
    for m in models[1:]:
        other = set(m.vocab) - SPECIALS
        shared = len(first & other)
        smaller = max(1, min(len(first), len(other)))
        if shared / smaller < min_shared:
            raise UserLibriError(
                f"vocabulary mismatch: {models[0].path} ({len(first)} words) and {m.path} "
                f"({len(other)} words) share only {shared} words (< {min_shared:.0%} of the smaller); "
                "are they over the same units (words vs sentencepiece pieces)?"
            )


def _log10_mix(logps: list[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    with np.errstate(divide="ignore"):
        total = sum(wt * np.power(10.0, lp) for wt, lp in zip(weights, logps, strict=True))
        return np.log10(total)


def mix_models(models: Sequence[ArpaModel], weights: Sequence[float]) -> MixResult:
    """Linearly interpolate ``models`` with ``weights`` (see the module docstring)."""
    if len(models) < 2:
        raise ConfigError(f"mixing needs at least 2 models, found {len(models)}")
    weights = check_weights(weights, len(models))
    check_compatible(models)
    # Union vocabulary: the first model's order, then new words in each later model's order.
    vocab = list(models[0].vocab)
    index = dict(models[0].word_index())
    maps = []
    for m in models:
        local = np.empty(len(m.vocab), dtype=np.int32)
        for i, w in enumerate(m.vocab):
            if w not in index:
                index[w] = len(vocab)
                vocab.append(w)
            local[i] = index[w]
        maps.append(local)
    max_order = max(m.order for m in models)
    # Per model and order: its n-grams in union ids, and their lookup table.
    comp_ids = [[maps[i][o.ids] for o in m.orders] for i, m in enumerate(models)]
    comp_tab = [
        [_Table.build(ids, f"{m.path} {k + 1}-grams") for k, ids in enumerate(comp_ids[i])]
        for i, m in enumerate(models)
    ]
    union_ids: list[np.ndarray] = []
    union_tabs: list[_Table] = []
    mixed_prob: list[np.ndarray] = []
    comp_prob: list[list[np.ndarray]] = []  # [order][model] log10 P_i over the union rows
    for k in range(1, max_order + 1):
        parts = [comp_ids[i][k - 1] for i, m in enumerate(models) if m.order >= k]
        stacked = np.concatenate(parts) if parts else np.zeros((0, k), np.int32)
        _, first = np.unique(_row_hash(stacked), return_index=True)
        ids = stacked[np.sort(first)]
        tab = _Table.build(ids, f"mixed {k}-grams")
        for part in parts:  # every component n-gram must be in the union (a collision would drop one)
            if np.any(tab.find(part) < 0):
                raise UserLibriError("n-gram hash collision while mixing; this should never happen")
        per_model = []
        for i, m in enumerate(models):
            lp = np.full(len(ids), -np.inf)
            if m.order >= k:
                rows = comp_tab[i][k - 1].find(ids)
                hit = rows >= 0
                lp[hit] = m.orders[k - 1].prob[rows[hit]]
            else:
                hit = np.zeros(len(ids), dtype=bool)
            if k > 1:
                miss = ~hit
                suffix = union_tabs[k - 2].find(ids[miss, 1:])
                if np.any(suffix < 0):
                    bad = ids[miss][suffix < 0][0]
                    raise DataFormatError(
                        models[i].path,
                        "an ARPA closed under suffixes (every listed 'a b c' also lists 'b c')",
                        f"no suffix for {[vocab[j] for j in bad]}",
                    )
                lower = comp_prob[k - 2][i][suffix]
                bo = np.zeros(int(miss.sum()))
                if m.order >= k - 1:
                    ctx = comp_tab[i][k - 2].find(ids[miss, :-1])
                    has = ctx >= 0
                    bo[has] = m.orders[k - 2].backoff[ctx[has]]
                lp[miss] = lower + bo
            per_model.append(lp)
        union_ids.append(ids)
        union_tabs.append(tab)
        comp_prob.append(per_model)
        mixed_prob.append(_log10_mix(per_model, weights))
    # Backoff weights of every context so that each mixed distribution sums to one.
    backoffs: list[np.ndarray] = []
    clipped = 0
    for k in range(1, max_order + 1):
        bo = np.zeros(len(union_ids[k - 1]))
        if k < max_order:
            ext = union_ids[k]
            ctx = union_tabs[k - 1].find(ext[:, :-1])
            lower_rows = union_tabs[k - 1].find(ext[:, 1:]) if k > 1 else None
            if np.any(ctx < 0) or (lower_rows is not None and np.any(lower_rows < 0)):
                raise UserLibriError(
                    "mixed model is not closed under prefixes/suffixes; inputs are inconsistent"
                )
            p_high = np.power(10.0, mixed_prob[k])
            if k > 1:
                p_low = np.power(10.0, mixed_prob[k - 1][lower_rows])
            else:
                p_low = np.power(10.0, mixed_prob[0][ext[:, 1]])  # unigram rows are word ids
            n = len(bo)
            num = 1.0 - np.bincount(ctx, weights=p_high, minlength=n)
            den = 1.0 - np.bincount(ctx, weights=p_low, minlength=n)
            has_ext = np.bincount(ctx, minlength=n) > 0
            bad = has_ext & ((num < _MIN_MASS) | (den < _MIN_MASS))
            clipped += int(bad.sum())
            num = np.maximum(num, _MIN_MASS)
            den = np.maximum(den, _MIN_MASS)
            bo = np.where(has_ext, np.log10(num) - np.log10(den), 0.0)
        backoffs.append(bo)
    if clipped:
        log.warning("%d context(s) had (almost) no left-over mass; their backoff was clipped", clipped)
    orders = []
    for k in range(max_order):
        prob = np.maximum(mixed_prob[k], LOG10_ZERO)
        orders.append(ArpaOrder(union_ids[k], prob, backoffs[k]))
    # unigram rows must be word ids (ids[:, 0] == row) for the p_low lookup above
    if not np.array_equal(union_ids[0][:, 0], np.arange(len(vocab))):
        raise UserLibriError("internal: unigram rows are not in word-id order")
    return MixResult(vocab, orders, weights, clipped)


def write_arpa(result: MixResult | ArpaModel, path: str | Path) -> Path:
    """Write an ARPA file atomically (tab-separated, as lmplz writes)."""
    path = Path(path)
    vocab = np.array(result.vocab, dtype=object)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for k, o in enumerate(result.orders, start=1):
            f.write(f"ngram {k}={len(o.prob)}\n")
        last = len(result.orders)
        for k, o in enumerate(result.orders, start=1):
            f.write(f"\n\\{k}-grams:\n")
            words = vocab[o.ids[:, 0]]
            for j in range(1, k):
                words = words + " " + vocab[o.ids[:, j]]
            probs = [f"{p:.7g}" for p in o.prob.tolist()]
            if k < last:
                bos = [f"{b:.7g}" for b in o.backoff.tolist()]
                f.writelines(f"{p}\t{w}\t{b}\n" for p, w, b in zip(probs, words.tolist(), bos, strict=True))
            else:
                f.writelines(f"{p}\t{w}\n" for p, w in zip(probs, words.tolist(), strict=True))
        f.write("\n\\end\\\n")
    return path


def build_binary(arpa: str | Path, binary: str | Path, memory: str = DEFAULT_LMPLZ_MEMORY) -> Path:
    """KenLM ``build_binary`` (probing) of ``arpa`` into ``binary``, atomically."""
    import subprocess

    tool = find_tool("build_binary")
    binary = Path(binary)
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bb.", dir=binary.parent) as tmp, atomic_path(binary) as dst:
        proc = subprocess.run(
            [str(tool), "-S", memory, "-T", os.path.join(tmp, "t"), "probing", str(arpa), str(dst)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
            raise ExternalToolError(f"build_binary failed on {arpa} (exit {proc.returncode}):\n{tail}")
    return binary


def mix_arpa_files(
    arpas: Sequence[str | Path],
    weights: Sequence[float],
    out_arpa: str | Path,
    out_binary: str | Path | None = None,
    models: Sequence[ArpaModel] | None = None,
) -> MixResult:
    """Mix ARPA files (or already read ``models``) into ``out_arpa`` (+ ``out_binary``)."""
    start = time.perf_counter()
    models = list(models) if models is not None else [read_arpa(p) for p in arpas]
    result = mix_models(models, weights)
    write_arpa(result, out_arpa)
    if out_binary is not None:
        build_binary(out_arpa, out_binary)
    log.info(
        "mixed %s with weights %s -> %s: counts %s (%.2f s)",
        [str(m.path) for m in models],
        [round(w, 4) for w in result.weights],
        out_arpa,
        list(result.counts),
        time.perf_counter() - start,
    )
    return result


def interpolate(
    arpas: Sequence[str | Path],
    out_arpa: str | Path,
    weights: Sequence[float] | None = None,
    heldout: Sequence[str] | None = None,
    binary: bool = True,
) -> dict[str, object]:
    """Mix ARPA files with given ``weights``, or with weights tuned (EM) on ``heldout`` sentences;
    writes ``out_arpa``, its ``.bin`` and a ``.json`` with the weights and held-out perplexities."""
    from userlibri.fsio import write_json_atomic
    from userlibri.lm import evaluate as ev

    if (weights is None) == (heldout is None):
        raise ConfigError("interpolate: give exactly one of weights and held-out sentences to tune them on")
    out_arpa = Path(out_arpa)
    kind, tokenizer_id = _sidecar_kind(Path(arpas[0])) if arpas else (None, None)
    info: dict[str, object] = {
        "kind": kind or "kenlm-word",
        "tokenizer_id": tokenizer_id,
        "models": [str(p) for p in arpas],
    }
    # Score with the KenLM binary beside an ARPA when there is one (loading an ARPA is slow).
    scoring = [p.with_suffix(".bin") if p.with_suffix(".bin").is_file() else p for p in map(Path, arpas)]
    if heldout is not None:
        tuned = ev.tune_mixture(scoring, heldout)
        info["tuned_on"] = f"{len(heldout)} held-out sentences (EM, {tuned.iterations} iterations)"
    chosen = tuple(weights) if weights is not None else tuned.weights
    out_bin = out_arpa.with_suffix(".bin") if binary else None
    result = mix_arpa_files(arpas, chosen, out_arpa, out_bin)
    info.update(weights=list(result.weights), counts=list(result.counts), arpa=out_arpa.name)
    if out_bin is not None:
        info["binary"] = out_bin.name
    if heldout is not None:
        info["heldout"] = {
            **{
                str(p): ev.ngram_perplexity(b, heldout).to_dict() for p, b in zip(arpas, scoring, strict=True)
            },
            "interpolated_exact": ev.mixture_perplexity(scoring, result.weights, heldout).to_dict(),
            "interpolated": ev.ngram_perplexity(out_bin or out_arpa, heldout).to_dict(),
        }
    write_json_atomic(out_arpa.with_suffix(".json"), info)
    return info
