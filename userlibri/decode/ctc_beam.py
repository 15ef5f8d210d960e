"""CTC prefix beam search with shallow fusion of any number of language models.

The search runs over the states of the CTC topology: a prefix ``y`` ending in blank and ``y``
ending in its last token are two states with split scores ``p_b(y)`` and ``p_nb(y)`` (Hannun et
al.'s prefix search). States reached by different alignments merge by log-add; the beam keeps the
``beam`` best *states*, as flashlight's lexicon-free decoder and pyctcdecode do (a prefix holds
one or two of them). Hence beam 1 is exactly greedy decoding, and an unpruned beam gives the exact
prefix probability ``log(p_b + p_nb)`` of every prefix (the sum over all its alignments).

LMs score a token when it is appended to a prefix (not when an emission repeats); a prefix's
fused LM score and LM states live in its :class:`~userlibri.decode.hyp.PrefixNode`, computed
once per prefix and token. ``final_score`` of each LM is added by :meth:`CtcBeamSearch.finalize`.

Streaming: the decoder holds no per-utterance state. ``init_state()``, then ``advance(state,
log_probs)`` for each chunk of ``(T_chunk, V)`` log-probs, then ``finalize(state)``; since every
frame is processed the same way whatever the chunking, chunked decoding equals whole decoding.

Pruning per frame (see :class:`~userlibri.decode.hyp.DecoderConfig`): only the ``token_topk``
most likely tokens above ``min_token_logprob`` extend prefixes; frames whose blank probability
exceeds ``blank_skip`` only extend by blank or repeat (no LM work); candidate states more than
``beam_prune`` below the best are dropped, before LM scoring (on the score without the new
token's LM score) and after.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from math import exp, log1p
from typing import Any

import numpy as np

from userlibri.decode.hyp import (
    NEG_INF,
    DecoderConfig,
    FusionLike,
    FusionSet,
    Hypothesis,
    PrefixNode,
    TimeLink,
    ceil_float32,
    check_matrix,
    floor_float32,
    log_add,
    make_fusions,
    top_indices,
)
from userlibri.decode.search import StreamingSearch
from userlibri.errors import UserLibriError
from userlibri.lm.base import LanguageModel

_new_object = object.__new__
#: A scored new prefix: (live prefix index, token, am score, node or None, lm score, lm state,
#: fused LM score, prior); see ``CtcBeamSearch._new_prefixes``.
_NewPrefix = tuple[int, int, float, PrefixNode | None, float, Any, float, float]


@dataclass(frozen=True)
class CtcState:
    """The search state after ``frames`` frames; treat as immutable.

    ``nodes``: the live prefixes (N); ``pb``/``pnb``: N log-probs of each prefix ending in blank
    / in its last token (-inf where that state was pruned); ``times``: each prefix's emission
    frames; ``vocab_size``: V of the log-probs seen so far (None before the first chunk).
    """

    frames: int
    nodes: tuple[PrefixNode, ...]
    pb: tuple[float, ...]
    pnb: tuple[float, ...]
    times: tuple[TimeLink, ...]
    vocab_size: int | None


class CtcBeamSearch(StreamingSearch):
    """CTC prefix beam search over ``(T, V)`` log-probs with LM fusion; stateless, streaming.

    ``fusions``: ``Fusion`` objects or ``(lm, weight[, kind])`` tuples; ``lm``/``context`` add one
    with ``config.lm_weight``/``config.context_weight``. ``suppress_ids``: tokens never emitted
    (e.g. ``<sos/eos>``, which text LMs cannot score). ``vocab_size``, when given, is checked
    against the LMs at once (else at the first chunk).
    """

    input_name = "CTC log-probs"

    def __init__(
        self,
        config: DecoderConfig | None = None,
        fusions: Sequence[FusionLike] = (),
        *,
        lm: LanguageModel | None = None,
        context: LanguageModel | None = None,
        blank_id: int = 0,
        suppress_ids: Sequence[int] = (),
        vocab_size: int | None = None,
    ) -> None:
        config = config or DecoderConfig()
        config.validate()
        self.config = config
        self.fusion = FusionSet(make_fusions(config, fusions, lm, context), config.length_bonus)
        if blank_id < 0:
            raise UserLibriError(f"blank_id: expected >= 0, found {blank_id}")
        self.blank_id = blank_id
        self.suppress_ids = tuple(sorted({int(i) for i in suppress_ids} - {blank_id}))
        self._log_skip = math.log(config.blank_skip) if config.blank_skip < 1.0 else math.inf
        if vocab_size is not None:
            self._check_vocab(vocab_size)

    def __repr__(self) -> str:
        return f"CtcBeamSearch({self.config}, fusions={list(self.fusion.fusions)})"

    # -- streaming API ----------------------------------------------------------------------------
    def init_state(self) -> CtcState:
        """Before the first frame: the empty prefix, ending in blank with probability 1."""
        return CtcState(0, (self.fusion.root(),), (0.0,), (NEG_INF,), (None,), None)

    def advance(self, state: CtcState, log_probs: np.ndarray) -> CtcState:
        """Consume a ``(T_chunk, V)`` chunk of log-probs (T_chunk may be 0); return the new state."""
        lp = check_matrix(log_probs, "CTC log-probs")
        vocab = lp.shape[1]
        if state.vocab_size is None:
            self._check_vocab(vocab)
        elif vocab != state.vocab_size:
            raise UserLibriError(
                f"CTC log-probs: expected {state.vocab_size} columns as in earlier chunks, "
                f"found shape {lp.shape}"
            )
        n_frames = lp.shape[0]
        if n_frames == 0:
            return CtcState(state.frames, state.nodes, state.pb, state.pnb, state.times, vocab)
        blank = lp[:, self.blank_id]
        blank_lp = blank.tolist()
        skip = blank > (floor_float32(self._log_skip) if blank.dtype == np.float32 else self._log_skip)
        cands = self._candidates(lp, skip)
        skip_l = skip.tolist()
        nodes, pb, pnb, times = list(state.nodes), list(state.pb), list(state.pnb), list(state.times)
        quiet = max(pnb, default=NEG_INF) == NEG_INF
        step = self._step
        t0 = state.frames
        for t in range(n_frames):
            ext = cands[t]
            if ext:
                nodes, pb, pnb, times = step(t0 + t, lp[t], blank_lp[t], ext, nodes, pb, pnb, times)
                quiet = max(pnb, default=NEG_INF) == NEG_INF
            elif quiet:
                # Nothing to extend and every prefix ends in blank: all scores shift by the
                # blank log-prob, so the ranking and the prune margins cannot change.
                x = blank_lp[t]
                pb = [b + x for b in pb]
            elif skip_l[t]:
                # A blank-dominated frame (see blank_skip): each prefix's two states merge and
                # extend by blank; the repeat path (< 1 - blank_skip of the frame) is dropped.
                x = blank_lp[t]
                pb = [
                    (b if nb == NEG_INF else nb if b == NEG_INF else log_add(b, nb)) + x
                    for b, nb in zip(pb, pnb, strict=True)
                ]
                pnb = [NEG_INF] * len(pb)
                quiet = True
            else:
                nodes, pb, pnb, times = step(t0 + t, lp[t], blank_lp[t], ext, nodes, pb, pnb, times)
                quiet = max(pnb, default=NEG_INF) == NEG_INF
        return CtcState(state.frames + n_frames, tuple(nodes), tuple(pb), tuple(pnb), tuple(times), vocab)

    # -- internals ----------------------------------------------------------------------------------
    def _candidates(self, lp: np.ndarray, skip: np.ndarray) -> list[Sequence[tuple[int, float]]]:
        """Per frame, the ``(token, log-prob)`` pairs that may extend a prefix: at most
        ``token_topk`` of the most likely tokens (ties: lower id first) at or above
        ``min_token_logprob``, in ascending token order; none on skipped frames. One vectorised
        pass over the chunk: frames seldom hold more than a few tokens above the threshold."""
        cfg = self.config
        active = np.flatnonzero(~skip)
        out: list[Sequence[tuple[int, float]]] = [()] * lp.shape[0]
        if active.size == 0:
            return out
        sub = lp[active]
        threshold = cfg.min_token_logprob
        ok = sub >= (ceil_float32(threshold) if sub.dtype == np.float32 else threshold)
        ok[:, self.blank_id] = False
        ok[:, [i for i in self.suppress_ids if i < lp.shape[1]]] = False
        # flatnonzero + divmod: several times faster than np.nonzero on a 2-D mask.
        rows, cols = np.divmod(np.flatnonzero(ok), ok.shape[1])
        pairs = list(zip(cols.tolist(), sub[rows, cols].tolist(), strict=True))
        bounds = np.searchsorted(rows, np.arange(active.size + 1)).tolist()
        topk = cfg.token_topk
        for r, t in enumerate(active.tolist()):
            a, b = bounds[r], bounds[r + 1]
            if a == b:
                continue
            row = pairs[a:b]
            if topk and b - a > topk:
                row = sorted(sorted(row, key=_neg_second)[:topk])
            out[t] = row
        return out

    def _step(
        self,
        t: int,
        row: np.ndarray,
        blank_lp: float,
        ext: list[tuple[int, float]],
        nodes: list[PrefixNode],
        pb: list[float],
        pnb: list[float],
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink]]:
        """One frame: stay (blank / repeat) and extension candidates, merge, keep the best states.

        Plain Python floats and lists: with beams of ~10 and a few tokens per frame this beats
        numpy's per-call overhead (this loop is the decoder's hot path). New prefixes are
        LM-scored before the selection, but get a :class:`PrefixNode` only if they are kept."""
        cfg = self.config
        prune = cfg.beam_prune
        item = row.item
        # Per live prefix: its states after this frame and their fused scores (s_b, s_nb).
        new_pb: list[float] = []
        new_pnb: list[float] = []
        s_b: list[float] = []
        s_nb: list[float] = []
        # New prefixes: (score without the new token's LM score, prefix index, token, am score).
        cands: list[tuple[float, int, int, float]] = []
        best = top = NEG_INF
        for i, node in enumerate(nodes):
            b, nb, prior = pb[i], pnb[i], node.prior
            if nb == NEG_INF:
                total = b
                new_pnb.append(NEG_INF)
                s_nb.append(NEG_INF)
            else:
                if b == NEG_INF:
                    total = nb
                elif b < nb:
                    total = nb + log1p(exp(b - nb))
                else:
                    total = b + log1p(exp(nb - b))
                x = nb + item(node.token)
                new_pnb.append(x)
                x += prior
                s_nb.append(x)
                if x > best:
                    best = x
            x = total + blank_lp
            new_pb.append(x)
            x += prior
            s_b.append(x)
            if x > best:
                best = x
            if ext:
                last = node.token
                for c, x in ext:
                    if c == last:
                        if b == NEG_INF:
                            continue
                        v = b + x
                    else:
                        v = total + x
                    s = v + prior
                    if s > top:
                        top = s
                    cands.append((s, i, c, v))
        if cands:
            threshold = (best if best > top else top) - prune
            cands = [c for c in cands if c[0] >= threshold]
            cap = cfg.active_cap
            if cap and len(cands) > cap:
                cands.sort(key=_first, reverse=True)
                del cands[cap:]
            new, s_new = self._new_prefixes(cands, nodes, new_pnb, s_nb)
        else:
            n = len(nodes)
            if n + sum(1 for x in new_pnb if x > NEG_INF) <= cfg.beam:
                # No new prefixes and no more states than the beam (typical of blank frames):
                # only the prune margin can drop a state; when none falls outside it, nothing changes.
                floor = best - prune
                if all(x >= floor for x in s_b) and all(x >= floor or x == NEG_INF for x in s_nb):
                    return nodes, new_pb, new_pnb, times
            new, s_new = [], []
        # Keep the beam best states within beam_prune of the best (a float sort finds the
        # beam-th best score; ties at that score fall back to the order of the states).
        beam = cfg.beam
        ranked = sorted(s_b + s_nb + s_new, reverse=True)
        if ranked[0] == NEG_INF:
            return [], [], [], []
        floor = ranked[0] - prune
        if len(ranked) > beam:
            kth = ranked[beam - 1]
            if kth > floor:
                floor = kth
            if ranked[beam] == kth and kth > NEG_INF:
                return self._select_ties(t, nodes, times, new_pb, new_pnb, s_b, s_nb, new, s_new)
        out_nodes, out_pb, out_pnb, out_times = [], [], [], []
        clear = not self.fusion.inline
        for j, node in enumerate(nodes):
            x, y = s_b[j], s_nb[j]
            keep_b = x >= floor and x > NEG_INF
            keep_nb = y >= floor and y > NEG_INF
            if keep_b or keep_nb:
                out_nodes.append(node)
                out_pb.append(new_pb[j] if keep_b else NEG_INF)
                out_pnb.append(new_pnb[j] if keep_nb else NEG_INF)
                out_times.append(times[j])
            elif clear:
                node.children.clear()  # a dropped prefix's cached extensions: free them
        for k, y in enumerate(s_new):
            if y >= floor and y > NEG_INF:
                i, c, v, node, d, st, fused, prior = new[k]
                if node is None:  # inlined PrefixNode.make (the hot path)
                    parent = nodes[i]
                    node = _new_object(PrefixNode)
                    node.parent = parent
                    node.token = c
                    node.n = parent.n + 1
                    node.key = hash((parent.key, c))
                    node.states = (st,) if parent.states else ()
                    node.raw = (parent.raw[0] + d,) if parent.raw else ()
                    node.fused = fused
                    node.prior = prior
                    node.children = {}
                    node.ctx = ()
                out_nodes.append(node)
                out_pb.append(NEG_INF)
                out_pnb.append(v)
                out_times.append((t, times[i]))
        return out_nodes, out_pb, out_pnb, out_times

    def _new_prefixes(
        self,
        cands: list[tuple[float, int, int, float]],
        nodes: list[PrefixNode],
        new_pnb: list[float],
        s_nb: list[float],
    ) -> tuple[list[_NewPrefix], list[float]]:
        """Merge candidates into live prefixes (in place on ``new_pnb``/``s_nb``) and LM-score the
        others. Returns, per new prefix, ``(prefix index, token, am score, node, lm score, lm
        state, fused, prior)`` and its fused score; ``node`` is None where the (single,
        unbatched) LM was scored here and the node is built only if the prefix is kept."""
        fusion = self.fusion
        inline = fusion.inline
        scored = bool(fusion.fusions)
        memo_get = fusion.memo.get
        score = fusion.score_single
        w = fusion.weights[0] if scored else 0.0
        bonus = fusion.length_bonus
        live_tokens = {nd.token for nd in nodes}
        live: dict[int, int] | None = None
        new: list[_NewPrefix] = []
        s_new: list[float] = []
        todo: list[int] = []
        for _, i, c, v in cands:
            parent = nodes[i]
            if c in live_tokens:  # parent + c may be a live prefix: merge into it
                if live is None:
                    live = {nd.key: j for j, nd in enumerate(nodes)}
                j = live.get(hash((parent.key, c)))
                if j is not None:
                    z = nodes[j]
                    if z.token == c and z.parent is not None and z.parent.same_prefix(parent):
                        x = log_add(new_pnb[j], v)
                        new_pnb[j] = x
                        s_nb[j] = x + z.prior
                        continue
            if not inline:
                todo.append(len(new))
                new.append((i, c, v, None, 0.0, None, 0.0, 0.0))
                s_new.append(NEG_INF)
                continue
            if scored:
                st = parent.states[0]
                hit = memo_get((st, c))
                if hit is None:
                    hit = score(st, c)
                d, st = hit
                fused = parent.fused + w * d if w else parent.fused
            else:
                d, st, fused = 0.0, None, parent.fused
            prior = fused + bonus * (parent.n + 1)
            new.append((i, c, v, None, d, st, fused, prior))
            s_new.append(v + prior)
        if todo:
            # Several or batched LMs: build the nodes at once (one score_batch call per LM).
            children = fusion.extend([(nodes[new[k][0]], new[k][1]) for k in todo])
            for k, node in zip(todo, children, strict=True):
                i, c, v = new[k][:3]
                new[k] = (i, c, v, node, 0.0, None, node.fused, node.prior)
                s_new[k] = v + node.prior
        return new, s_new

    def _select_ties(
        self,
        t: int,
        nodes: list[PrefixNode],
        times: list[TimeLink],
        new_pb: list[float],
        new_pnb: list[float],
        s_b: list[float],
        s_nb: list[float],
        new: list[_NewPrefix],
        s_new: list[float],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink]]:
        """Selection when scores tie at the beam boundary: the earlier states win (the pb states
        of the live prefixes, then their pnb states, then the new prefixes)."""
        n, k = len(nodes), len(new)
        m = n + k
        scores = s_b + [NEG_INF] * k + s_nb + s_new
        keep = set(top_indices(scores, self.config.beam, self.config.beam_prune))
        out_nodes, out_pb, out_pnb, out_times = [], [], [], []
        for j in range(n):
            keep_b, keep_nb = j in keep, j + m in keep
            if keep_b or keep_nb:
                out_nodes.append(nodes[j])
                out_pb.append(new_pb[j] if keep_b else NEG_INF)
                out_pnb.append(new_pnb[j] if keep_nb else NEG_INF)
                out_times.append(times[j])
            elif not self.fusion.inline:
                nodes[j].children.clear()
        for q in range(k):
            if m + n + q in keep:
                i, c, v, node, d, st, fused, prior = new[q]
                if node is None:
                    parent = nodes[i]
                    node = PrefixNode.make(
                        parent,
                        c,
                        hash((parent.key, c)),
                        (st,) if parent.states else (),
                        (parent.raw[0] + d,) if parent.raw else (),
                        fused,
                        prior,
                    )
                out_nodes.append(node)
                out_pb.append(NEG_INF)
                out_pnb.append(v)
                out_times.append((t, times[i]))
        return out_nodes, out_pb, out_pnb, out_times

    def _hypotheses(self, state: CtcState, final: bool) -> list[Hypothesis]:
        ams = [log_add(b, nb) for b, nb in zip(state.pb, state.pnb, strict=True)]
        return self.fusion.hypotheses(state.nodes, ams, state.times, final)


def _first(item: tuple[float, int, int, float]) -> float:
    return item[0]


def _neg_second(item: tuple[int, float]) -> float:
    return -item[1]


def ctc_greedy(log_probs: np.ndarray, blank_id: int = 0) -> Hypothesis:
    """Best path decoding: the most likely token per frame, repeats collapsed, blanks removed.

    ``am_score`` is the log-prob of that best path (not the sum over its alignments).
    """
    lp = check_matrix(log_probs, "CTC log-probs")
    if lp.shape[0] and blank_id >= lp.shape[1]:
        raise UserLibriError(f"CTC log-probs: blank id {blank_id} outside the vocabulary of {lp.shape[1]}")
    best = lp.argmax(axis=1)
    am = 0.0
    for x in lp[np.arange(lp.shape[0]), best].tolist():
        am += x
    prev = np.concatenate([[-1], best[:-1]])
    emit = (best != blank_id) & (best != prev)
    frames = np.flatnonzero(emit)
    return Hypothesis(
        tokens=tuple(int(x) for x in best[frames]),
        timestamps=tuple(int(f) for f in frames),
        score=float(am),
        am_score=float(am),
        lm_score=0.0,
        context_score=0.0,
        fusion_scores=(),
        lm_states=(),
    )


__all__ = ["CtcBeamSearch", "CtcState", "ctc_greedy"]
