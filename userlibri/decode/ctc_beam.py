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

import numpy as np

from userlibri.decode.hyp import (
    NEG_INF,
    DecoderConfig,
    FusionLike,
    FusionSet,
    Hypothesis,
    PrefixNode,
    TimeLink,
    check_matrix,
    log_add,
    make_fusions,
    top_indices,
)
from userlibri.decode.search import StreamingSearch
from userlibri.errors import UserLibriError
from userlibri.lm.base import LanguageModel


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
        cands = self._candidates(lp, blank > self._log_skip)
        nodes, pb, pnb, times = list(state.nodes), list(state.pb), list(state.pnb), list(state.times)
        quiet = max(pnb) == NEG_INF
        for t in range(n_frames):
            if quiet and not cands[t]:
                # Nothing to extend and every prefix ends in blank: all scores shift by the
                # blank log-prob, so the ranking and the prune margins cannot change.
                x = blank_lp[t]
                pb = [b + x for b in pb]
                continue
            nodes, pb, pnb, times = self._step(
                state.frames + t, lp[t], blank_lp[t], cands[t], nodes, pb, pnb, times
            )
            quiet = max(pnb) == NEG_INF
        return CtcState(state.frames + n_frames, tuple(nodes), tuple(pb), tuple(pnb), tuple(times), vocab)

    # -- internals ----------------------------------------------------------------------------------
    def _candidates(self, lp: np.ndarray, skip: np.ndarray) -> list[list[tuple[int, float]]]:
        """Per frame, the ``(token, log-prob)`` pairs that may extend a prefix: at most
        ``token_topk`` of the most likely tokens (ties: lower id first) at or above
        ``min_token_logprob``, in ascending token order; none on skipped frames. One vectorised
        pass over the chunk: frames seldom hold more than a few tokens above the threshold."""
        cfg = self.config
        active = np.flatnonzero(~skip)
        out: list[list[tuple[int, float]]] = [[] for _ in range(lp.shape[0])]
        if active.size == 0:
            return out
        sub = lp[active]
        ok = sub >= cfg.min_token_logprob
        ok[:, self.blank_id] = False
        ok[:, [i for i in self.suppress_ids if i < lp.shape[1]]] = False
        rows, cols = np.nonzero(ok)
        vals = sub[rows, cols]
        bounds = np.searchsorted(rows, np.arange(active.size + 1)).tolist()
        cols_l, vals_l = cols.tolist(), vals.tolist()
        topk = cfg.token_topk
        for r, t in enumerate(active.tolist()):
            a, b = bounds[r], bounds[r + 1]
            pairs = list(zip(cols_l[a:b], vals_l[a:b], strict=True))
            if topk and len(pairs) > topk:
                pairs = sorted(sorted(pairs, key=_neg_second)[:topk])
            out[t] = pairs
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

        Plain Python floats: with beams of ~10 and a few tokens per frame this beats numpy's
        per-call overhead (this loop is the decoder's hot path)."""
        cfg = self.config
        n = len(nodes)
        totals = [0.0] * n
        priors = [0.0] * n
        new_pb = [0.0] * n
        new_pnb = [NEG_INF] * n
        best = NEG_INF
        for i in range(n):
            node, b, nb = nodes[i], pb[i], pnb[i]
            total = b if nb == NEG_INF else (nb if b == NEG_INF else log_add(b, nb))
            prior = node.prior
            totals[i] = total
            priors[i] = prior
            x = total + blank_lp
            new_pb[i] = x
            if x + prior > best:
                best = x + prior
            if nb > NEG_INF:
                x = nb + row.item(node.token)
                new_pnb[i] = x
                if x + prior > best:
                    best = x + prior
        if ext:
            cands = []
            append = cands.append
            for i in range(n):
                last, total, b, prior = nodes[i].token, totals[i], pb[i], priors[i]
                for c, x in ext:
                    if c == last:
                        if b > NEG_INF:
                            append((b + x + prior, i, c, b + x))
                    else:
                        append((total + x + prior, i, c, total + x))
            if cands:
                top = max(cands)[0]
                threshold = (best if best > top else top) - cfg.beam_prune
                cands = [c for c in cands if c[0] >= threshold]
                cap = cfg.active_cap
                if cap and len(cands) > cap:
                    cands.sort(key=_first, reverse=True)
                    del cands[cap:]
                nodes, times = self._extend(t, nodes, times, new_pb, new_pnb, priors, cands)
        elif n + sum(1 for x in new_pnb if x > NEG_INF) <= cfg.beam:
            # No new prefixes and no more states than the beam (typical of blank frames): only
            # the prune margin can drop a state; when none falls outside it, nothing changes.
            worst = min(min(map(_plus, new_pb, priors)), min(map(_plus, new_pnb, priors), default=best))
            if worst >= best - cfg.beam_prune:
                return nodes, new_pb, new_pnb, times
        # Keep the beam best states within beam_prune of the best (a float sort finds the
        # beam-th best score; ties at that score fall back to index order).
        m = len(nodes)
        sb = [b + p for b, p in zip(new_pb, priors, strict=True)]
        snb = [nb + p for nb, p in zip(new_pnb, priors, strict=True)]
        ranked = sorted(sb + snb, reverse=True)
        if ranked[0] == NEG_INF:
            return [], [], [], []
        floor = ranked[0] - cfg.beam_prune
        if len(ranked) > cfg.beam:
            kth = ranked[cfg.beam - 1]
            if kth > floor:
                floor = kth
            if len(ranked) > cfg.beam and ranked[cfg.beam] == kth and kth > NEG_INF:
                return self._select_ties(nodes, new_pb, new_pnb, times, sb + snb, n)
        out_nodes, out_pb, out_pnb, out_times = [], [], [], []
        for j in range(m):
            keep_b = sb[j] >= floor and sb[j] > NEG_INF
            keep_nb = snb[j] >= floor and snb[j] > NEG_INF
            if keep_b or keep_nb:
                out_nodes.append(nodes[j])
                out_pb.append(new_pb[j] if keep_b else NEG_INF)
                out_pnb.append(new_pnb[j] if keep_nb else NEG_INF)
                out_times.append(times[j])
            elif j < n:
                nodes[j].children.clear()  # a dropped prefix's cached extensions: free them
        return out_nodes, out_pb, out_pnb, out_times

    def _select_ties(
        self,
        nodes: list[PrefixNode],
        pb: list[float],
        pnb: list[float],
        times: list[TimeLink],
        scores: list[float],
        n: int,
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink]]:
        """Selection when scores tie at the beam boundary: the earlier states win."""
        m = len(nodes)
        keep = set(top_indices(scores, self.config.beam, self.config.beam_prune))
        out_nodes, out_pb, out_pnb, out_times = [], [], [], []
        for j in range(m):
            keep_b, keep_nb = j in keep, j + m in keep
            if keep_b or keep_nb:
                out_nodes.append(nodes[j])
                out_pb.append(pb[j] if keep_b else NEG_INF)
                out_pnb.append(pnb[j] if keep_nb else NEG_INF)
                out_times.append(times[j])
            elif j < n:
                nodes[j].children.clear()
        return out_nodes, out_pb, out_pnb, out_times

    def _extend(
        self,
        t: int,
        nodes: list[PrefixNode],
        times: list[TimeLink],
        new_pb: list[float],
        new_pnb: list[float],
        priors: list[float],
        cands: list[tuple[float, int, int, float]],
    ) -> tuple[list[PrefixNode], list[TimeLink]]:
        """Apply extension candidates (in place on ``new_pb``/``new_pnb``/``priors``): merge into
        live prefixes, create (and LM-score) the others."""
        live = {nd.key: j for j, nd in enumerate(nodes)}
        if not self.fusion.batched:
            # One LM call at a time (cached): create children as we go.
            child = self.fusion.child
            out_nodes, out_times = list(nodes), list(times)
            for _, i, token, value in cands:
                parent = nodes[i]
                if _merge_into_live(nodes, live, parent, token, value, new_pnb):
                    continue
                node = child(parent, token)
                out_nodes.append(node)
                out_times.append((t, times[i]))
                new_pb.append(NEG_INF)
                new_pnb.append(value)
                priors.append(node.prior)
            return out_nodes, out_times
        pairs: list[tuple[PrefixNode, int]] = []
        sources: list[tuple[int, float]] = []
        for _, i, token, value in cands:
            parent = nodes[i]
            if _merge_into_live(nodes, live, parent, token, value, new_pnb):
                continue
            pairs.append((parent, token))
            sources.append((i, value))
        if not pairs:
            return nodes, times
        children = self.fusion.extend(pairs)
        new_pb.extend([NEG_INF] * len(children))
        new_pnb.extend([v for _, v in sources])
        priors.extend([c.prior for c in children])
        return nodes + children, times + [(t, times[i]) for i, _ in sources]

    def _hypotheses(self, state: CtcState, final: bool) -> list[Hypothesis]:
        hyps = [
            self.fusion.hypothesis(node, log_add(b, nb), link, final)
            for node, b, nb, link in zip(state.nodes, state.pb, state.pnb, state.times, strict=True)
        ]
        hyps.sort(key=lambda h: -h.score)
        return hyps


def _first(item: tuple[float, int, int, float]) -> float:
    return item[0]


def _neg_second(item: tuple[int, float]) -> float:
    return -item[1]


def _plus(a: float, b: float) -> float:
    return a + b if a > NEG_INF else math.inf


def ctc_greedy(log_probs: np.ndarray, blank_id: int = 0) -> Hypothesis:
    """Best path decoding: the most likely token per frame, repeats collapsed, blanks removed.

    ``am_score`` is the log-prob of that best path (not the sum over its alignments).
    """
    lp = check_matrix(log_probs, "CTC log-probs")
    if lp.shape[0] and blank_id >= lp.shape[1]:
        raise UserLibriError(f"CTC log-probs: blank id {blank_id} outside the vocabulary of {lp.shape[1]}")
    best = lp.argmax(axis=1)
    am = 0.0
    for t in range(lp.shape[0]):
        am += lp[t, best[t]]
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


def _merge_into_live(
    nodes: Sequence[PrefixNode],
    live: dict[int, int],
    parent: PrefixNode,
    token: int,
    value: float,
    new_pnb: list[float],
) -> bool:
    """If ``parent + token`` is already a live prefix, add ``value`` to its non-blank score and say so."""
    j = live.get(hash((parent.key, token)))
    if j is None:
        return False
    z = nodes[j]
    if z.token == token and z.parent is not None and z.parent.same_prefix(parent):
        new_pnb[j] = log_add(new_pnb[j], value)
        return True
    return False
