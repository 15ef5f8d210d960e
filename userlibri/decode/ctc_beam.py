"""CTC prefix beam search with shallow fusion of any number of language models.

The search runs over the states of the CTC topology: a prefix ``y`` ending in blank and ``y``
ending in its last token are two states with split scores ``p_b(y)`` and ``p_nb(y)`` (Hannun et
al.'s prefix search). States reached by different alignments merge by log-add; the beam keeps the
``beam`` best *states*, as flashlight's lexicon-free decoder and pyctcdecode do (a prefix holds
one or two of them). Hence beam 1 is exactly greedy decoding, and an unpruned beam gives the exact
prefix probability ``log(p_b + p_nb)`` of every prefix (the sum over all its alignments).

LMs score a token when it is appended to a prefix (not when an emission repeats); a prefix's
fused LM score and LM states live in its :class:`~userlibri.decode.prefix.PrefixNode`, computed
once per prefix and token (and, for a single LM, once per LM state and token). ``final_score`` of
each LM is added by :meth:`CtcBeamSearch.finalize`. The per-frame search is
:mod:`userlibri.decode.ctc_step`.

Streaming: the decoder holds no per-utterance state. ``init_state()``, then ``advance(state,
log_probs)`` for each chunk of ``(T_chunk, V)`` log-probs, then ``finalize(state)``; since every
frame is processed the same way whatever the chunking, chunked decoding equals whole decoding.

Pruning per frame (see :class:`~userlibri.decode.hyp.DecoderConfig`): only the ``token_topk``
most likely tokens at or above ``min_token_logprob`` extend prefixes, plus the frame's most likely
label if it is a token; a prefix stays by blank or by repeating its last token only where that
label's log-prob is at least ``min_stay_logprob`` (or it is the most likely label); in frames
whose blank probability exceeds ``blank_skip`` each prefix's two states merge and extend by blank
(no new tokens, no repeat, no LM work, no pruning); candidate states more than ``beam_prune``
below the best are dropped, before LM scoring (on the score without the new token's LM score) and
after; at most ``max_active`` new prefixes per frame are LM-scored. Beam 1 is greedy decoding
under every setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from userlibri.decode.ctc_step import CtcFrameStep
from userlibri.decode.hyp import (
    NEG_INF,
    DecoderConfig,
    FusionLike,
    Hypothesis,
    TimeLink,
    ceil_float32,
    check_matrix,
    floor_float32,
    log_add,
    make_fusions,
)
from userlibri.decode.prefix import FusionSet, PrefixNode
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


class CtcBeamSearch(CtcFrameStep, StreamingSearch):
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
        # The float32 bounds that compare float32 log-probs exactly as their float64 values would.
        self._log_skip32 = floor_float32(self._log_skip)
        self._min_token32 = ceil_float32(config.min_token_logprob)
        # The fusion's hot-path pieces, looked up once.
        fusion = self.fusion
        self._inline = fusion.inline
        self._scored = bool(fusion.fusions)
        self._memo_get = fusion.memo.get
        self._score_single = fusion.score_single
        #: The single LM's ``score`` (unmemoised): the fast path memoises it itself.
        self._score0 = fusion.fusions[0].lm.score if fusion.fusions else None
        self._w0 = fusion.weights[0] if fusion.fusions else 0.0
        self._cap = config.active_cap
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
        skip = blank > (self._log_skip32 if blank.dtype == np.float32 else self._log_skip)
        cands, amax, ext_frames = self._candidates(lp, skip)
        skip_l = skip.tolist()
        nodes, pb, pnb, times = list(state.nodes), list(state.pb), list(state.pnb), list(state.times)
        quiet = max(pnb, default=NEG_INF) == NEG_INF
        step = self._step
        fast = self._inline
        blank, min_lp = self.blank_id, self.config.min_stay_logprob
        #: The last tokens of the live prefixes, when known (None: to compute).
        live: set[int] | None = None
        #: Whether every live prefix ends in its last token only (pb all -inf).
        only_nb = False
        t0 = state.frames
        t = 0
        for te in [*ext_frames, n_frames]:
            # Frames t..te-1 have no candidates (blank frames), te has some (or is the end).
            while t < te:
                if quiet:
                    # Every prefix ends in blank and nothing extends: all scores shift by the
                    # blank log-probs, so the ranking and the prune margins cannot change.
                    pb = _shifted(pb, blank_lp[t:te])
                    t = te
                elif skip_l[t]:
                    # A blank-dominated frame (see blank_skip): each prefix's two states merge
                    # and extend by blank; the repeat path (< 1 - blank_skip of the frame) is
                    # dropped. The rest of the gap then only shifts the scores (as above), done
                    # here in the same pass.
                    if only_nb:  # every prefix ends in its last token (after the fast path)
                        pb = _shifted(pnb, blank_lp[t:te])
                    else:
                        x = blank_lp[t]
                        pb = [
                            (b if nb == NEG_INF else nb if b == NEG_INF else log_add(b, nb)) + x
                            for b, nb in zip(pb, pnb, strict=True)
                        ]
                        if te > t + 1:
                            pb = _shifted(pb, blank_lp[t + 1 : te])
                    pnb = [NEG_INF] * len(pb)
                    quiet, only_nb = True, False
                    t = te
                else:
                    nodes, pb, pnb, times = step(
                        t0 + t, lp, t, blank_lp[t], (), amax[t], nodes, pb, pnb, times
                    )
                    quiet = max(pnb, default=NEG_INF) == NEG_INF
                    live, only_nb = None, False
                    t += 1
            if te == n_frames:
                break
            ext, x = cands[te], blank_lp[te]
            if fast and quiet and nodes:
                # Every prefix ends in blank (a token frame after blank frames): unless a new
                # prefix equals a live one, no states merge and nothing repeats. If blank is
                # pruned in this frame, only new prefixes survive; else prefixes stay by blank
                # or extend. The fast paths compute these for a fraction of the general work.
                if live is None:
                    live = {nd.token for nd in nodes}
                for c, _ in ext:
                    if c in live:
                        break
                else:
                    if x < min_lp and amax[te] != blank:
                        nodes, pb, pnb, times, live = self._extend_only(t0 + te, ext, nodes, pb, times)
                        quiet, only_nb = not nodes, True
                    else:
                        nodes, pb, pnb, times = self._extend_stay(t0 + te, ext, x, nodes, pb, times)
                        quiet = max(pnb, default=NEG_INF) == NEG_INF
                        live, only_nb = None, False
                    t = te + 1
                    continue
            nodes, pb, pnb, times = step(t0 + te, lp, te, x, ext, amax[te], nodes, pb, pnb, times)
            quiet = max(pnb, default=NEG_INF) == NEG_INF
            live, only_nb = None, False
            t = te + 1
        return CtcState(state.frames + n_frames, tuple(nodes), tuple(pb), tuple(pnb), tuple(times), vocab)

    # -- internals ----------------------------------------------------------------------------------
    def _candidates(
        self, lp: np.ndarray, skip: np.ndarray
    ) -> tuple[list[Sequence[tuple[int, float]]], list[int], list[int]]:
        """Per frame, the ``(token, log-prob)`` pairs that may extend a prefix, in ascending token
        order: at most ``token_topk`` of the most likely tokens (ties: lower id first) at or above
        ``min_token_logprob``, and always the frame's most likely label if it is a token; none on
        skipped frames. Also per frame that most likely label (the blank id when it is blank, a
        suppressed id or the frame is skipped), and the frames that have candidates. One
        vectorised pass over the chunk."""
        cfg = self.config
        n_frames, vocab = lp.shape
        blank = self.blank_id
        active = np.flatnonzero(~skip)
        out: list[Sequence[tuple[int, float]]] = [()] * n_frames
        if active.size == 0:
            return out, [blank] * n_frames, []
        sub = lp[active]
        threshold = cfg.min_token_logprob
        ok = sub >= (self._min_token32 if sub.dtype == np.float32 else threshold)
        best = sub.argmax(axis=1)  # first of ties, as ctc_greedy
        ok[np.arange(active.size), best] = True
        ok[:, blank] = False
        suppressed = [i for i in self.suppress_ids if i < vocab]
        most = np.full(n_frames, blank)
        most[active] = best
        if suppressed:
            ok[:, suppressed] = False
            for i in suppressed:
                most[most == i] = blank
        # flatnonzero + divmod: several times faster than np.nonzero on a 2-D mask.
        flat = np.flatnonzero(ok)
        if flat.size == 0:
            return out, most.tolist(), []
        rows, cols = np.divmod(flat, vocab)
        pairs = list(zip(cols.tolist(), sub.ravel()[flat].tolist(), strict=True))
        starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
        frames = active[rows[starts]].tolist()
        topk = cfg.token_topk
        for t, a, b in zip(frames, starts.tolist(), [*starts[1:].tolist(), rows.size], strict=True):
            row = pairs[a:b]
            if topk and b - a > topk:
                row = sorted(sorted(row, key=_neg_second)[:topk])
            out[t] = row
        return out, most.tolist(), frames

    def _hypotheses(self, state: CtcState, final: bool) -> list[Hypothesis]:
        ams = [log_add(b, nb) for b, nb in zip(state.pb, state.pnb, strict=True)]
        return self.fusion.hypotheses(state.nodes, ams, state.times, final)


def _shifted(scores: list[float], xs: list[float]) -> list[float]:
    """Each score plus the log-probs ``xs`` added one at a time, in order (``((s + x0) + x1) +
    ...``: the float sums of frame-by-frame decoding), in one pass for gaps of up to 4 frames."""
    n = len(xs)
    if n == 1:
        x0 = xs[0]
        return [s + x0 for s in scores]
    if n == 2:
        x0, x1 = xs
        return [s + x0 + x1 for s in scores]
    if n == 3:
        x0, x1, x2 = xs
        return [s + x0 + x1 + x2 for s in scores]
    if n == 4:
        x0, x1, x2, x3 = xs
        return [s + x0 + x1 + x2 + x3 for s in scores]
    for x in xs:
        scores = [s + x for s in scores]
    return scores


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
