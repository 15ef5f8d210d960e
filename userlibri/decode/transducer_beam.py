"""Transducer modified beam search (at most one symbol per frame) with LM shallow fusion.

As sherpa-onnx's ``online-transducer-modified-beam-search-decoder``: per encoder frame every
hypothesis either emits blank or exactly one token, the joiner is called once for all hypotheses
of the frame (batched), the stateless decoder's outputs are computed once per decoder context and
carried with the hypotheses, and hypotheses with the same token sequence merge (their acoustic
scores log-add; their LM scores are equal by construction). LMs score a token when it is emitted;
each LM's ``final_score`` is added by :meth:`TransducerBeamSearch.finalize`.

The model enters as two callables, so the search runs on an ONNX model and on toy numpy functions:

* ``decoder(contexts)``: ``(N, C) int64`` token contexts (the last ``C`` tokens) -> ``(N, Dd)``;
* ``joiner(enc, dec)``: ``(N, D)`` encoder frames and ``(N, Dd)`` decoder outputs -> ``(N, V)``
  log-probabilities (log-softmax applied). With ``joiner_broadcasts=True`` the search passes the
  frame once, ``(1, D)``, for the joiner to broadcast over the N decoder rows (the ONNX joiner
  does: it saves a copy per frame).

Streaming works as for CTC: ``init_state()``, ``advance(state, encoder_frames)`` per ``(T_chunk,
D)`` chunk, ``finalize(state)``; chunked equals whole. Beam 1 is exactly greedy search with one
symbol per frame (:func:`transducer_greedy`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from userlibri.decode.hyp import (
    NEG_INF,
    DecoderConfig,
    FusionLike,
    Hypothesis,
    TimeLink,
    ceil_float32,
    check_matrix,
    log_add,
    make_fusions,
    top_indices,
)
from userlibri.decode.prefix import FusionSet, PrefixNode
from userlibri.decode.search import StreamingSearch
from userlibri.errors import UserLibriError
from userlibri.lm.base import LanguageModel

_max = np.maximum.reduce
_sum = np.add.reduce
_FLOAT32 = np.dtype(np.float32)
_new_object = object.__new__
#: Cached decoder outputs before the cache is cleared (a 34-piece, 2-token context has 1,156).
_DECODER_CACHE_ENTRIES = 65536

DecoderFn = Callable[[np.ndarray], np.ndarray]
JoinerFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TransducerState:
    """The search state after ``frames`` encoder frames; treat as immutable.

    ``nodes``: live hypotheses (N); ``am``: (N,) acoustic log-probs; ``dec_out``: (N, Dd) decoder
    output for each hypothesis' context; ``times``: emission frames; ``vocab_size``: V of the
    joiner seen so far (None before the first frame).
    """

    frames: int
    nodes: tuple[PrefixNode, ...]
    am: np.ndarray
    dec_out: np.ndarray
    times: tuple[TimeLink, ...]
    vocab_size: int | None


def _run_decoder(decoder: DecoderFn, contexts: Sequence[tuple[int, ...]]) -> np.ndarray:
    ctx = np.asarray(contexts, dtype=np.int64)
    out = np.asarray(decoder(ctx))
    if out.ndim != 2 or out.shape[0] != len(contexts):
        raise UserLibriError(
            f"transducer decoder output: expected shape ({len(contexts)}, Dd) for contexts of shape "
            f"{ctx.shape}, found {out.shape}"
        )
    return out


def _run_joiner(joiner: JoinerFn, enc: np.ndarray, dec: np.ndarray, vocab: int | None) -> np.ndarray:
    out = np.asarray(joiner(enc, dec))
    n = dec.shape[0]
    if out.ndim != 2 or out.shape[0] != n or (vocab is not None and out.shape[1] != vocab):
        want = f"({n}, {vocab if vocab is not None else 'V'})"
        raise UserLibriError(f"transducer joiner output: expected shape {want}, found {out.shape}")
    # float32 (the ONNX joiner's output): one reduction shows every value finite, which is all the
    # search needs (float64 sums of float32 values cannot overflow); check_matrix's 1e10 bound
    # guards float64 input. Anything else, or a non-finite sum, gets the full check and its message.
    if out.dtype == _FLOAT32 and math.isfinite(_sum(out, axis=None)):
        return out
    return check_matrix(out, "transducer joiner log-probs")


class TransducerBeamSearch(StreamingSearch):
    """Modified beam search over encoder frames with LM fusion; stateless, streaming.

    ``context_size``: tokens the decoder sees; ``start_context``: the context before any token
    (default ``context_size`` blanks). Other arguments as for
    :class:`~userlibri.decode.ctc_beam.CtcBeamSearch`. ``config.blank_skip`` is not used.
    ``joiner_broadcasts``: see the module docstring.
    """

    input_name = "transducer joiner output"

    def __init__(
        self,
        decoder: DecoderFn,
        joiner: JoinerFn,
        config: DecoderConfig | None = None,
        fusions: Sequence[FusionLike] = (),
        *,
        lm: LanguageModel | None = None,
        context: LanguageModel | None = None,
        blank_id: int = 0,
        context_size: int = 2,
        start_context: Sequence[int] | None = None,
        suppress_ids: Sequence[int] = (),
        vocab_size: int | None = None,
        joiner_broadcasts: bool = False,
    ) -> None:
        config = config or DecoderConfig()
        config.validate()
        if context_size < 1:
            raise UserLibriError(f"context_size: expected >= 1, found {context_size}")
        if blank_id < 0:
            raise UserLibriError(f"blank_id: expected >= 0, found {blank_id}")
        self.start_context = (
            (blank_id,) * context_size if start_context is None else tuple(int(i) for i in start_context)
        )
        if len(self.start_context) != context_size:
            raise UserLibriError(
                f"start_context: expected {context_size} ids, found {len(self.start_context)}"
            )
        self.decoder = decoder
        self.joiner = joiner
        self.joiner_broadcasts = joiner_broadcasts
        self.config = config
        self.blank_id = blank_id
        self.context_size = context_size
        self.suppress_ids = tuple(sorted({int(i) for i in suppress_ids} - {blank_id}))
        self.fusion = FusionSet(make_fusions(config, fusions, lm, context), config.length_bonus, context_size)
        #: Decoder output per context: the stateless decoder is a pure function of its last
        #: ``context_size`` tokens (at most V**C of them), and one ONNX call per new hypothesis
        #: context cost more than the joiner (measured: 130 us for one context, 1.2 ms for ten).
        #: Rows of ``_dec_rows`` (grown by doubling) by context.
        self._dec_index: dict[tuple[int, ...], int] = {}
        self._dec_rows = np.zeros((0, 0), np.float32)
        #: One LM without ``score_batch`` (or none): candidates are scored here and become prefix
        #: nodes only if they survive the frame (see ``_pending``).
        self._inline = self.fusion.inline
        self._score0 = self.fusion.fusions[0].lm.score if self.fusion.fusions else None
        self._w0 = self.fusion.weights[0] if self.fusion.fusions else 0.0
        self._masks: dict[int, np.ndarray] = {}
        self._masked_idx: dict[tuple[int, int], np.ndarray] = {}
        self._cap = config.active_cap
        self._min_lp32 = ceil_float32(config.min_token_logprob)
        if vocab_size is not None:
            self._check_vocab(vocab_size)

    def __repr__(self) -> str:
        return f"TransducerBeamSearch({self.config}, fusions={list(self.fusion.fusions)})"

    # -- streaming API ----------------------------------------------------------------------------
    def init_state(self) -> TransducerState:
        """The empty hypothesis with its decoder output."""
        root = self.fusion.root(self.start_context)
        dec = self._decode_contexts([root.ctx])
        return TransducerState(0, (root,), np.zeros(1), dec, (None,), None)

    def advance(self, state: TransducerState, encoder_frames: np.ndarray) -> TransducerState:
        """Consume ``(T_chunk, D)`` encoder frames (T_chunk may be 0); return the new state."""
        enc = check_matrix(encoder_frames, "transducer encoder frames")
        nodes, dec, times = list(state.nodes), state.dec_out, list(state.times)
        am, prior = state.am.tolist(), [nd.prior for nd in nodes]
        vocab = state.vocab_size
        for t in range(enc.shape[0]):
            frame = enc[t : t + 1]
            if not self.joiner_broadcasts:
                frame = np.repeat(frame, len(nodes), axis=0)
            logp = _run_joiner(self.joiner, frame, dec, vocab)
            if vocab is None:
                vocab = logp.shape[1]
                self._check_vocab(vocab)
            nodes, am, prior, dec, times = self._step(state.frames + t, logp, nodes, am, prior, dec, times)
        return TransducerState(
            state.frames + enc.shape[0],
            tuple(nodes),
            np.array(am, dtype=np.float64),
            dec,
            tuple(times),
            vocab,
        )

    # -- internals ----------------------------------------------------------------------------------
    def _mask(self, vocab: int) -> np.ndarray:
        mask = self._masks.get(vocab)
        if mask is None:
            mask = np.zeros(vocab)
            mask[self.blank_id] = NEG_INF
            mask[[i for i in self.suppress_ids if i < vocab]] = NEG_INF
            self._masks[vocab] = mask
        return mask

    def _step(
        self,
        t: int,
        logp: np.ndarray,
        nodes: list[PrefixNode],
        am: list[float],
        prior: list[float],
        dec: np.ndarray,
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], np.ndarray, list[TimeLink]]:
        """One frame: every hypothesis stays (blank) or emits one of its candidate tokens; the
        candidates of all hypotheses are picked at once from the ``(N, V)`` score matrix.
        ``am``/``prior``: each hypothesis' acoustic score and prior (fused LM + length bonus)."""
        cfg = self.config
        n = len(nodes)
        if not n:
            return nodes, am, prior, dec, times
        new_am = [a + x for a, x in zip(am, logp[:, self.blank_id].tolist(), strict=True)]  # blank
        best_stay = max([a + p for a, p in zip(new_am, prior, strict=True)])
        base = np.array([a + p for a, p in zip(am, prior, strict=True)])
        rows, tokens, tok_lp = self._candidates(logp, base, best_stay)
        # A new candidate is a child node, or (single-LM fast path) a pending tuple that becomes
        # a node only if kept (see _pending).
        all_nodes: list[Any] = list(nodes)
        all_times = list(times)
        priors = list(prior)
        src: list[int] = []  # the row each new candidate extends
        if rows:
            if self._inline:
                cands, keys, cand_priors = self._pending(nodes, rows, tokens)
            else:
                cands = self.fusion.extend([(nodes[i], c) for i, c in zip(rows, tokens, strict=True)])
                keys = [c.key for c in cands]
                cand_priors = [c.prior for c in cands]
            # Only a live hypothesis can have a candidate's token sequence (its parent's plus one
            # token): live sequences are distinct, so two candidates never share one.
            live = {nd.key: j for j, nd in enumerate(nodes)}
            for i, cand, key, p, x in zip(rows, cands, keys, cand_priors, tok_lp, strict=True):
                value = am[i] + x
                j = live.get(key)
                if j is not None and _same_sequence(nodes[j], cand):
                    # Same token sequence as a live hypothesis (which emitted blank): merge.
                    if value > new_am[j]:
                        all_times[j] = (t, times[i])
                    new_am[j] = log_add(new_am[j], value)
                    continue
                all_nodes.append(cand)
                src.append(i)
                new_am.append(value)
                priors.append(p)
        keep = top_indices([a + p for a, p in zip(new_am, priors, strict=True)], cfg.beam, cfg.beam_prune)
        kept = set(keep)
        for j in range(n):
            if j not in kept:
                nodes[j].children.clear()  # a dropped hypothesis' cached extensions: free them
        out_nodes = [
            _materialize(all_nodes[j]) if type(all_nodes[j]) is tuple else all_nodes[j] for j in keep
        ]
        out_times = [all_times[j] if j < n else (t, times[src[j - n]]) for j in keep]
        out_dec = self._decoder_rows(keep, n, out_nodes, dec)
        return (
            out_nodes,
            [new_am[j] for j in keep],
            [priors[j] for j in keep],
            out_dec,
            out_times,
        )

    def _pending(
        self, nodes: list[PrefixNode], rows: list[int], tokens: list[int]
    ) -> tuple[list[Any], list[int], list[float]]:
        """Each candidate ``(nodes[row], token)`` as (its child node, or a pending tuple
        ``(parent, token, fused, LM delta, LM state, key, prior)``; its key; its prior), scored
        with the single LM once per (parent, token). Most candidates do not survive their frame,
        and building a prefix node costs more than the tuple."""
        cands: list[Any] = []
        keys: list[int] = []
        priors: list[float] = []
        score, w = self._score0, self._w0
        bonus = self.fusion.length_bonus
        single = bool(self.fusion.fusions)
        for i, c in zip(rows, tokens, strict=True):
            parent = nodes[i]
            children = parent.children
            child = children.get(c)
            if child is not None:
                cands.append(child)
                if type(child) is tuple:
                    keys.append(child[5])
                    priors.append(child[6])
                else:
                    keys.append(child.key)
                    priors.append(child.prior)
                continue
            if single:
                d, st = score(parent.states[0], c)
                fused = parent.fused + w * d if w else parent.fused
            else:
                d, st, fused = 0.0, None, parent.fused
            key = hash((parent.key, c))
            prior = fused + bonus * (parent.n + 1)
            # Parked in the parent's children until it is kept (then replaced by its node) or
            # the parent is dropped: a hypothesis that stays proposes the same tokens again.
            children[c] = spec = (parent, c, fused, d, st, key, prior)
            cands.append(spec)
            keys.append(key)
            priors.append(prior)
        return cands, keys, priors

    def _candidates(
        self, logp: np.ndarray, base: np.ndarray, best_stay: float
    ) -> tuple[list[int], list[int], list[float]]:
        """The new-token candidates of a frame: ``(hypothesis rows, token ids, token log-probs)``,
        in row-major order. ``logp``: (N, V) joiner log-probs; ``base``: (N,) acoustic + prior
        scores; ``best_stay``: the best score of a hypothesis emitting blank.

        Per hypothesis the ``token_topk`` most likely tokens (blank and suppressed ids excluded)
        at or above ``min_token_logprob``, within ``beam_prune`` of the best score (stays
        included), at most ``max_active`` in all (the best by score, ties in row-major order).
        One pass over the flat matrix picks the candidates without the per-row restriction; it
        is exact unless some row gives more than ``token_topk`` of them. (A row's candidates are
        its best tokens by log-prob, since its score is its base plus the log-prob, so if none
        gives more than ``token_topk``, all are within their row's ``token_topk``: the restricted
        set contains the flat pick and is contained in the unrestricted one.) Only then is the
        restricted pass run; usually it is not."""
        rows, tokens, lps = self._select(logp, base, best_stay, 0)
        topk = self.config.token_topk
        n_allowed = logp.shape[1] - 1 - len(self.suppress_ids)
        if topk and topk < n_allowed and len(rows) > topk:
            # rows is sorted: some row has more than topk candidates iff a window of topk + 1
            # consecutive entries starts and ends in the same row.
            if any(rows[i] == rows[i + topk] for i in range(len(rows) - topk)):
                return self._select(logp, base, best_stay, topk)
        return rows, tokens, lps

    def _select(
        self, logp: np.ndarray, base: np.ndarray, best_stay: float, topk: int
    ) -> tuple[list[int], list[int], list[float]]:
        """:meth:`_candidates` with the per-row restriction to ``topk`` tokens (0: without)."""
        cfg = self.config
        n, vocab = logp.shape
        cap = self._cap
        min_lp = cfg.min_token_logprob
        if topk:
            masked = logp + self._mask(vocab)
            cand = np.argpartition(-masked, topk - 1, axis=1)[:, :topk]
            cand.sort(axis=1)
            tok_lp = np.take_along_axis(masked, cand, axis=1)
            scored = (base[:, None] + tok_lp).ravel()
            lp_flat = tok_lp.ravel()
            width = topk
        else:
            cand = None
            # = base + (logp + mask) where the mask is 0 (float64 sums, as with the mask)
            scored = np.add(logp, base[:, None], dtype=np.float64).ravel()
            scored[self._masked_flat(n, vocab)] = NEG_INF
            lp_flat = logp.ravel()
            width = vocab
            if lp_flat.dtype == np.float32:
                min_lp = self._min_lp32  # the float64 comparison, exactly
        top = float(_max(scored)) if scored.size else NEG_INF
        floor = (best_stay if best_stay > top else top) - cfg.beam_prune
        ok = scored >= floor if floor > NEG_INF else scored > NEG_INF
        if min_lp > NEG_INF:
            ok &= lp_flat >= min_lp
        flat = ok.nonzero()[0]
        if cap and flat.size > cap:
            # The best `cap` by score, stable (ties in row-major order), back in row-major order.
            order = np.argsort(-scored[flat], kind="stable")[:cap]
            order.sort()
            flat = flat[order]
        lps = lp_flat[flat].tolist()
        if cand is not None:
            return (flat // width).tolist(), cand.ravel()[flat].tolist(), lps
        rows, tokens = np.divmod(flat, width)
        return rows.tolist(), tokens.tolist(), lps

    def _masked_flat(self, n: int, vocab: int) -> np.ndarray:
        """Flat indices of the blank and suppressed columns of an (n, vocab) matrix."""
        idx = self._masked_idx.get((n, vocab))
        if idx is None:
            cols = [self.blank_id, *(i for i in self.suppress_ids if i < vocab)]
            idx = (np.arange(n)[:, None] * vocab + np.array(cols)[None, :]).ravel()
            self._masked_idx[(n, vocab)] = idx
        return idx

    def _decoder_rows(
        self, keep: list[int], n: int, out_nodes: list[PrefixNode], old_dec: np.ndarray
    ) -> np.ndarray:
        """Decoder outputs of the kept hypotheses: the old rows on a blank frame, else from the
        per-context cache (one batched call for contexts never seen)."""
        if not keep or max(keep) < n:  # no new hypothesis kept (a blank frame)
            return old_dec if keep == list(range(n)) else old_dec.take(keep, axis=0)
        return self._decode_contexts([node.ctx for node in out_nodes])

    def _decode_contexts(self, contexts: Sequence[tuple[int, ...]]) -> np.ndarray:
        """``(N, Dd)`` decoder outputs of ``contexts``: cached ones reused, the others computed in
        one batched call."""
        index = self._dec_index
        try:
            return self._dec_rows.take([index[c] for c in contexts], axis=0)
        except KeyError:
            pass
        todo = sorted({c for c in contexts if c not in index})
        if todo:
            if len(index) + len(todo) > _DECODER_CACHE_ENTRIES:
                index.clear()
            out = _run_decoder(self.decoder, todo)
            n0, rows = len(index), self._dec_rows
            need = n0 + len(todo)
            if rows.shape[0] < need or rows.shape[1:] != out.shape[1:] or rows.dtype != out.dtype:
                grown = np.zeros((max(need, 2 * rows.shape[0], 64), *out.shape[1:]), out.dtype)
                if rows.shape[1:] == out.shape[1:] and rows.dtype == out.dtype:
                    grown[:n0] = rows[:n0]
                self._dec_rows = rows = grown
            rows[n0:need] = out
            for k, ctx in enumerate(todo):
                index[ctx] = n0 + k
        return self._dec_rows.take([index[c] for c in contexts], axis=0)

    def _hypotheses(self, state: TransducerState, final: bool) -> list[Hypothesis]:
        return self.fusion.hypotheses(state.nodes, state.am.tolist(), state.times, final)


def _materialize(spec: tuple[Any, ...]) -> PrefixNode:
    """The prefix node of a pending candidate ``(parent, token, fused, LM delta, LM state, key,
    prior)``; it replaces the tuple in the parent's children."""
    p, c, fused, d, st, key, prior = spec
    node = _new_object(PrefixNode)  # PrefixNode.make, inlined
    node.parent = p
    node.token = c
    node.n = p.n + 1
    node.key = key
    if p.states:
        node.states = (st,)
        node.raw = (p.raw[0] + d,)
    else:
        node.states = node.raw = ()
    node.fused = fused
    node.prior = prior
    node.children = {}
    node.ctx = (*p.ctx[1:], c)
    p.children[c] = node
    return node


def _same_sequence(a: Any, b: Any) -> bool:
    """Whether two candidates (prefix nodes or pending tuples) stand for the same token sequence."""
    pa, ta = a[:2] if type(a) is tuple else (a.parent, a.token)
    pb, tb = b[:2] if type(b) is tuple else (b.parent, b.token)
    if ta != tb:
        return False
    if pa is None or pb is None:
        return pa is pb
    return pa.same_prefix(pb)


def transducer_greedy(
    encoder_out: np.ndarray,
    decoder: DecoderFn,
    joiner: JoinerFn,
    *,
    blank_id: int = 0,
    context_size: int = 2,
    start_context: Sequence[int] | None = None,
) -> Hypothesis:
    """Greedy search, at most one symbol per frame: the joiner's best token each frame.

    (Streaming greedy search is ``TransducerBeamSearch`` with ``beam=1``: the same result.)
    """
    enc = check_matrix(encoder_out, "transducer encoder frames")
    ctx = (blank_id,) * context_size if start_context is None else tuple(int(i) for i in start_context)
    dec = _run_decoder(decoder, [ctx])
    tokens: list[int] = []
    stamps: list[int] = []
    am = 0.0
    for t in range(enc.shape[0]):
        logp = _run_joiner(joiner, enc[t][None], dec, None)[0]
        best = int(np.argmax(logp))
        am += float(logp[best])
        if best != blank_id:
            tokens.append(best)
            stamps.append(t)
            ctx = (*ctx[1:], best)
            dec = _run_decoder(decoder, [ctx])
    am = float(am)
    return Hypothesis(tuple(tokens), tuple(stamps), am, am, 0.0, 0.0, (), ())


__all__ = ["DecoderFn", "JoinerFn", "TransducerBeamSearch", "TransducerState", "transducer_greedy"]
