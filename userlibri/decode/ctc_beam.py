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


class CtcBeamSearch:
    """CTC prefix beam search over ``(T, V)`` log-probs with LM fusion; stateless, streaming.

    ``fusions``: ``Fusion`` objects or ``(lm, weight[, kind])`` tuples; ``lm``/``context`` add one
    with ``config.lm_weight``/``config.context_weight``. ``suppress_ids``: tokens never emitted
    (e.g. ``<sos/eos>``, which text LMs cannot score). ``vocab_size``, when given, is checked
    against the LMs at once (else at the first chunk).
    """

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
        self._masks: dict[int, np.ndarray] = {}
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
        cand, cand_lp = self._candidates(lp)
        blank = lp[:, self.blank_id]
        blank_lp = blank.tolist()
        skip = (blank > self._log_skip).tolist()
        nodes, pb, pnb, times = list(state.nodes), list(state.pb), list(state.pnb), list(state.times)
        for t in range(n_frames):
            if skip[t]:
                ext: list[tuple[int, float]] = []
            else:
                ext = [(c, x) for c, x in zip(cand[t], cand_lp[t], strict=True) if x > NEG_INF]
            nodes, pb, pnb, times = self._step(
                state.frames + t, lp[t], blank_lp[t], ext, nodes, pb, pnb, times
            )
        return CtcState(
            state.frames + n_frames, tuple(nodes), tuple(pb), tuple(pnb), tuple(times), vocab
        )

    def finalize(self, state: CtcState) -> list[Hypothesis]:
        """Hypotheses best first, each LM's end-of-sentence score included. Zero frames give the
        one empty hypothesis."""
        return self._hypotheses(state, final=True)

    def partial(self, state: CtcState) -> list[Hypothesis]:
        """Current hypotheses best first, without the end-of-sentence scores."""
        return self._hypotheses(state, final=False)

    def decode(self, log_probs: np.ndarray) -> list[Hypothesis]:
        """Whole-utterance decoding: ``finalize(advance(init_state(), log_probs))``."""
        return self.finalize(self.advance(self.init_state(), log_probs))

    # -- internals ----------------------------------------------------------------------------------
    def _check_vocab(self, vocab: int) -> None:
        if self.blank_id >= vocab:
            raise UserLibriError(f"CTC log-probs: blank id {self.blank_id} outside the vocabulary of {vocab}")
        self.fusion.check_vocab(vocab, "the CTC log-probs")

    def _candidates(self, lp: np.ndarray) -> tuple[list[list[int]], list[list[float]]]:
        """Per frame: the token ids that may extend a prefix (ascending) and their log-probs
        (-inf where below ``min_token_logprob``), for the whole chunk at once."""
        vocab = lp.shape[1]
        mask = self._masks.get(vocab)
        if mask is None:
            mask = np.zeros(vocab)
            mask[self.blank_id] = NEG_INF
            mask[[i for i in self.suppress_ids if i < vocab]] = NEG_INF
            self._masks[vocab] = mask
        masked = lp + mask
        allowed = int((mask == 0).sum())
        topk = self.config.token_topk
        if topk and topk < allowed:
            cand = np.argpartition(-masked, topk - 1, axis=1)[:, :topk]
            cand.sort(axis=1)
        else:
            cand = np.broadcast_to(np.flatnonzero(mask == 0), (lp.shape[0], allowed))
        cand_lp = np.take_along_axis(masked, cand, axis=1)
        cand_lp[cand_lp < self.config.min_token_logprob] = NEG_INF
        return cand.tolist(), cand_lp.tolist()

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
        per-call overhead."""
        cfg = self.config
        totals = [log_add(b, nb) for b, nb in zip(pb, pnb, strict=True)]
        priors = [node.prior for node in nodes]
        new_pb = [x + blank_lp for x in totals]
        new_pnb = [
            nb + float(row[node.token]) if nb > NEG_INF else NEG_INF
            for node, nb in zip(nodes, pnb, strict=True)
        ]
        if ext:
            cands = []
            for i, node in enumerate(nodes):
                last, total, b, prior = node.token, totals[i], pb[i], priors[i]
                for c, x in ext:
                    if c == last:
                        if b > NEG_INF:
                            cands.append((b + x + prior, i, c, b + x))
                    else:
                        cands.append((total + x + prior, i, c, total + x))
            if cands:
                best = max(
                    max(map(_add, new_pb, priors)), max(map(_add, new_pnb, priors)), max(cands)[0]
                )
                threshold = best - cfg.beam_prune
                cands = [c for c in cands if c[0] >= threshold]
                if cfg.active_cap and len(cands) > cfg.active_cap:
                    cands.sort(key=_first, reverse=True)
                    del cands[cfg.active_cap :]
                nodes, times = self._extend(t, nodes, times, new_pb, new_pnb, cands)
        return self._select(nodes, new_pb, new_pnb, times)

    def _extend(
        self,
        t: int,
        nodes: list[PrefixNode],
        times: list[TimeLink],
        new_pb: list[float],
        new_pnb: list[float],
        cands: list[tuple[float, int, int, float]],
    ) -> tuple[list[PrefixNode], list[TimeLink]]:
        """Apply extension candidates (in place on ``new_pb``/``new_pnb``): merge into live
        prefixes, create (and LM-score) the others."""
        live = {nd.key: j for j, nd in enumerate(nodes)}
        pairs: list[tuple[PrefixNode, int]] = []
        sources: list[tuple[int, float]] = []
        for _, i, token, value in cands:
            parent = nodes[i]
            j = live.get(hash((parent.key, token)))
            if j is not None:
                z = nodes[j]
                if z.token == token and z.parent is not None and z.parent.same_prefix(parent):
                    new_pnb[j] = log_add(new_pnb[j], value)
                    continue
            pairs.append((parent, token))
            sources.append((i, value))
        if not pairs:
            return nodes, times
        children = self.fusion.extend(pairs)
        new_nodes = nodes + children
        new_times = times + [(t, times[i]) for i, _ in sources]
        new_pb.extend([NEG_INF] * len(children))
        new_pnb.extend(v for _, v in sources)
        return new_nodes, new_times

    def _select(
        self,
        nodes: list[PrefixNode],
        pb: list[float],
        pnb: list[float],
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink]]:
        """Keep the ``beam`` best states within ``beam_prune`` of the best."""
        cfg = self.config
        m = len(nodes)
        scores = [b + nd.prior for nd, b in zip(nodes, pb, strict=True)]
        scores += [nb + nd.prior for nd, nb in zip(nodes, pnb, strict=True)]
        keep = top_indices(scores, cfg.beam, cfg.beam_prune)
        order: dict[int, list[float]] = {}
        for k in keep:
            j = k % m
            entry = order.get(j)
            if entry is None:
                entry = order[j] = [NEG_INF, NEG_INF]
            if k < m:
                entry[0] = pb[j]
            else:
                entry[1] = pnb[j]
        for j, node in enumerate(nodes):
            if j not in order:
                node.children.clear()  # a dropped prefix's cached extensions: free them
        return (
            [nodes[j] for j in order],
            [e[0] for e in order.values()],
            [e[1] for e in order.values()],
            [times[j] for j in order],
        )

    def _hypotheses(self, state: CtcState, final: bool) -> list[Hypothesis]:
        hyps = [
            self.fusion.hypothesis(node, log_add(b, nb), link, final)
            for node, b, nb, link in zip(state.nodes, state.pb, state.pnb, state.times, strict=True)
        ]
        hyps.sort(key=lambda h: -h.score)
        return hyps


def _first(item: tuple[float, int, int, float]) -> float:
    return item[0]


def _add(a: float, b: float) -> float:
    return a + b


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
