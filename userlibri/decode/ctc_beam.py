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
    NO_CHILDREN,
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
        # The fusion's hot-path pieces, looked up once.
        fusion = self.fusion
        self._inline = fusion.inline
        self._scored = bool(fusion.fusions)
        self._memo_get = fusion.memo.get
        self._score_single = fusion.score_single
        self._w0 = fusion.weights[0] if fusion.fusions else 0.0
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
        cands, amax, ext_frames = self._candidates(lp, skip)
        skip_l = skip.tolist()
        nodes, pb, pnb, times = list(state.nodes), list(state.pb), list(state.pnb), list(state.times)
        quiet = max(pnb, default=NEG_INF) == NEG_INF
        step = self._step
        extend_only = self._extend_only_inline if self._inline else self._extend_only
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
                    # blank log-prob, so the ranking and the prune margins cannot change.
                    for x in blank_lp[t:te]:
                        pb = [b + x for b in pb]
                    t = te
                elif skip_l[t]:
                    # A blank-dominated frame (see blank_skip): each prefix's two states merge
                    # and extend by blank; the repeat path (< 1 - blank_skip of the frame) is
                    # dropped. The rest of the gap then only shifts the scores (above).
                    x = blank_lp[t]
                    if only_nb:  # every prefix ends in its last token (after the fast path)
                        pb = [nb + x for nb in pnb]
                    else:
                        pb = [
                            (b if nb == NEG_INF else nb if b == NEG_INF else log_add(b, nb)) + x
                            for b, nb in zip(pb, pnb, strict=True)
                        ]
                    pnb = [NEG_INF] * len(pb)
                    quiet, only_nb = True, False
                    t += 1
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
            if quiet and nodes and x < min_lp and amax[te] != blank:
                # Every prefix ends in blank and blank is pruned in this frame (a token frame
                # after blank frames): unless a new prefix equals a live one, only new prefixes
                # survive, which the fast paths compute for a fraction of the general work.
                if live is None:
                    live = {nd.token for nd in nodes}
                for c, _ in ext:
                    if c in live:
                        break
                else:
                    nodes, pb, pnb, times, live = extend_only(t0 + te, ext, nodes, pb, times)
                    quiet, only_nb = not nodes, True
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
        ok = sub >= (ceil_float32(threshold) if sub.dtype == np.float32 else threshold)
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

    def _step(
        self,
        t: int,
        lp: np.ndarray,
        tl: int,
        blank_lp: float,
        ext: Sequence[tuple[int, float]],
        amax: int,
        nodes: list[PrefixNode],
        pb: list[float],
        pnb: list[float],
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink]]:
        """One frame: stay (blank / repeat) and extension candidates, merge, keep the best states.

        ``amax``: the frame's most likely label (see :meth:`_candidates`). Blank and repeats below
        ``min_stay_logprob`` are not considered, unless they are the most likely label.

        Plain Python floats and lists: with beams of ~10 and a few tokens per frame this beats
        numpy's per-call overhead (this loop is the decoder's hot path). New prefixes are
        LM-scored before the selection, but get a :class:`PrefixNode` only if they are kept."""
        cfg = self.config
        prune = cfg.beam_prune
        threshold = cfg.min_stay_logprob
        allow_blank = blank_lp >= threshold or amax == self.blank_id
        row = lp[tl]
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
                y = item(node.token)
                if y >= threshold or node.token == amax:
                    x = nb + y
                    new_pnb.append(x)
                    x += prior
                    s_nb.append(x)
                    if x > best:
                        best = x
                else:
                    new_pnb.append(NEG_INF)
                    s_nb.append(NEG_INF)
            if allow_blank:
                x = total + blank_lp
                new_pb.append(x)
                x += prior
                s_b.append(x)
                if x > best:
                    best = x
            else:
                new_pb.append(NEG_INF)
                s_b.append(NEG_INF)
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
            floor = (best if best > top else top) - prune
            cands = [c for c in cands if c[0] >= floor]
            cap = cfg.active_cap
            if cap and len(cands) > cap:
                cands.sort(key=_first, reverse=True)
                del cands[cap:]
            new, s_new = self._new_prefixes(cands, nodes, new_pnb, s_nb)
        else:
            n_states = sum(1 for x in s_b if x > NEG_INF) + sum(1 for x in s_nb if x > NEG_INF)
            if allow_blank and n_states <= cfg.beam:
                # No new prefixes and no more states than the beam (typical of blank frames):
                # only the prune margin can drop a state; when none falls outside it, nothing changes.
                floor = best - prune
                if all(x >= floor or x == NEG_INF for x in s_b) and all(
                    x >= floor or x == NEG_INF for x in s_nb
                ):
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
        clear = not self._inline
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
        self._emit_new(t, nodes, times, new, s_new, floor, out_nodes, out_pb, out_pnb, out_times)
        return out_nodes, out_pb, out_pnb, out_times

    def _extend_only(
        self,
        t: int,
        ext: Sequence[tuple[int, float]],
        nodes: list[PrefixNode],
        pb: list[float],
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink], set[int]]:
        """:meth:`_step` when every live prefix ends in blank, blank is pruned in this frame and no
        new prefix equals a live one (a token frame after blank frames): only the new prefixes
        can survive (the same result as :meth:`_step`, for a fraction of its work). Also returns
        the last tokens of the new prefixes."""
        cfg = self.config
        cands: list[tuple[float, int, int, float]] = []
        top = NEG_INF
        for i, node in enumerate(nodes):
            b, prior = pb[i], node.prior
            for c, x in ext:
                v = b + x
                s = v + prior
                if s > top:
                    top = s
                cands.append((s, i, c, v))
        floor = top - cfg.beam_prune
        cands = [c for c in cands if c[0] >= floor]
        cap = cfg.active_cap
        if cap and len(cands) > cap:
            cands.sort(key=_first, reverse=True)
            del cands[cap:]
        new, s_new = self._new_prefixes(cands, nodes, [], [], merge=False)
        if not self._inline:
            for node in nodes:
                node.children.clear()
        beam = cfg.beam
        ranked = sorted(s_new, reverse=True)
        if ranked[0] == NEG_INF:
            return [], [], [], [], set()
        floor = ranked[0] - cfg.beam_prune
        if len(ranked) > beam:
            kth = ranked[beam - 1]
            if kth > floor:
                floor = kth
            if ranked[beam] == kth and kth > NEG_INF:
                keep = set(top_indices(s_new, beam, cfg.beam_prune))
                s_new = [y if k in keep else NEG_INF for k, y in enumerate(s_new)]
                floor = NEG_INF
        out_nodes: list[PrefixNode] = []
        out_pb: list[float] = []
        out_pnb: list[float] = []
        out_times: list[TimeLink] = []
        self._emit_new(t, nodes, times, new, s_new, floor, out_nodes, out_pb, out_pnb, out_times)
        return out_nodes, out_pb, out_pnb, out_times, {nd.token for nd in out_nodes}

    def _extend_only_inline(
        self,
        t: int,
        ext: Sequence[tuple[int, float]],
        nodes: list[PrefixNode],
        pb: list[float],
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink], set[int]]:
        """:meth:`_extend_only` for at most one unbatched LM, in one pass: every candidate is
        LM-scored (memoised) as it is made, the pre-LM prune and cap are applied after."""
        cfg = self.config
        prune = cfg.beam_prune
        scored, memo_get, w, bonus = self._scored, self._memo_get, self._w0, self.fusion.length_bonus
        # (score without the new LM score, fused score, prefix index, token, am score, LM score,
        #  LM state, fused LM score, prior)
        ents: list[tuple[float, float, int, int, float, float, Any, float, float]] = []
        top, low = NEG_INF, math.inf
        d, st = 0.0, None
        ys: list[float] = []
        for i, node in enumerate(nodes):
            b, prior, fused0, n1 = pb[i], node.prior, node.fused, node.n + 1
            st0 = node.states[0] if scored else None
            for c, x in ext:
                v = b + x
                s = v + prior
                if s > top:
                    top = s
                if s < low:
                    low = s
                if scored:
                    hit = memo_get((st0, c))
                    if hit is None:
                        hit = self._score_single(st0, c)
                    d, st = hit
                    fused = fused0 + w * d if w else fused0
                else:
                    fused = fused0
                pr = fused + bonus * n1
                y = v + pr
                ents.append((s, y, i, c, v, d, st, fused, pr))
                ys.append(y)
        floor = top - prune
        cap = cfg.active_cap
        if low < floor or (cap and len(ents) > cap):
            ents = [e for e in ents if e[0] >= floor]
            if cap and len(ents) > cap:
                ents.sort(key=_first, reverse=True)
                del ents[cap:]
            ys = [e[1] for e in ents]
        beam = cfg.beam
        ys.sort(reverse=True)
        ranked = ys
        if ranked[0] == NEG_INF:
            return [], [], [], [], set()
        floor = ranked[0] - prune
        if len(ranked) > beam:
            kth = ranked[beam - 1]
            if kth > floor:
                floor = kth
            if ranked[beam] == kth and kth > NEG_INF:
                keep = set(top_indices([e[1] for e in ents], beam, prune))
                ents = [e for k, e in enumerate(ents) if k in keep]
                floor = NEG_INF
        out_nodes: list[PrefixNode] = []
        out_pnb: list[float] = []
        out_times: list[TimeLink] = []
        live: set[int] = set()
        for _, y, i, c, v, d, st, fused, pr in ents:
            if y >= floor and y > NEG_INF:
                parent = nodes[i]
                node = _new_object(PrefixNode)  # inlined PrefixNode.make
                node.parent = parent
                node.token = c
                node.n = parent.n + 1
                node._key = None  # computed when needed (PrefixNode.key)
                node.states = (st,) if scored else ()
                node.raw = (parent.raw[0] + d,) if scored else ()
                node.fused = fused
                node.prior = pr
                node.children = NO_CHILDREN  # read-only: this decoder never caches children
                node.ctx = ()
                out_nodes.append(node)
                out_pnb.append(v)
                out_times.append((t, times[i]))
                live.add(c)
        return out_nodes, [NEG_INF] * len(out_nodes), out_pnb, out_times, live

    @staticmethod
    def _emit_new(
        t: int,
        nodes: list[PrefixNode],
        times: list[TimeLink],
        new: list[_NewPrefix],
        s_new: list[float],
        floor: float,
        out_nodes: list[PrefixNode],
        out_pb: list[float],
        out_pnb: list[float],
        out_times: list[TimeLink],
    ) -> None:
        """Append the new prefixes scoring at least ``floor`` (and more than -inf) to the outputs,
        building their nodes where needed."""
        for k, y in enumerate(s_new):
            if y >= floor and y > NEG_INF:
                i, c, v, node, d, st, fused, prior = new[k]
                if node is None:  # inlined PrefixNode.make (the hot path)
                    parent = nodes[i]
                    node = _new_object(PrefixNode)
                    node.parent = parent
                    node.token = c
                    node.n = parent.n + 1
                    node._key = None
                    node.states = (st,) if parent.states else ()
                    node.raw = (parent.raw[0] + d,) if parent.raw else ()
                    node.fused = fused
                    node.prior = prior
                    node.children = NO_CHILDREN
                    node.ctx = ()
                out_nodes.append(node)
                out_pb.append(NEG_INF)
                out_pnb.append(v)
                out_times.append((t, times[i]))

    def _new_prefixes(
        self,
        cands: list[tuple[float, int, int, float]],
        nodes: list[PrefixNode],
        new_pnb: list[float],
        s_nb: list[float],
        merge: bool = True,
    ) -> tuple[list[_NewPrefix], list[float]]:
        """Merge candidates into live prefixes (in place on ``new_pnb``/``s_nb``) and LM-score the
        others. Returns, per new prefix, ``(prefix index, token, am score, node, lm score, lm
        state, fused, prior)`` and its fused score; ``node`` is None where the (single,
        unbatched) LM was scored here and the node is built only if the prefix is kept."""
        inline, scored, memo_get = self._inline, self._scored, self._memo_get
        w, bonus = self._w0, self.fusion.length_bonus
        live_tokens = {nd.token for nd in nodes} if merge else set()
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
                    hit = self._score_single(st, c)
                d, st = hit
                fused = parent.fused + w * d if w else parent.fused
            else:
                d, st, fused = 0.0, None, parent.fused
            prior = fused + bonus * (parent.n + 1)
            new.append((i, c, v, None, d, st, fused, prior))
            s_new.append(v + prior)
        if todo:
            # Several or batched LMs: build the nodes at once (one score_batch call per LM).
            children = self.fusion.extend([(nodes[new[k][0]], new[k][1]) for k in todo])
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
            elif not self._inline:
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
