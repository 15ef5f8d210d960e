"""One frame of the CTC prefix beam search: the hot path of :class:`~userlibri.decode.ctc_beam.CtcBeamSearch`.

:meth:`CtcFrameStep._step` is the general frame (stay by blank or repeat, extend by new tokens,
merge, select); :meth:`CtcFrameStep._extend_only` is the frame that dominates real CTC output, a
token frame after blank frames, computed in one pass with the same result. Plain Python floats and
lists: with beams of ~10 and a few tokens per frame this beats numpy's per-call overhead. New
prefixes are LM-scored before the selection, but get a :class:`PrefixNode` only if they are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import exp, log1p
from typing import Any

import numpy as np

from userlibri.decode.hyp import NEG_INF, DecoderConfig, TimeLink, log_add, top_indices
from userlibri.decode.prefix import _MEMO_SIZE as MEMO_SIZE
from userlibri.decode.prefix import NO_CHILDREN, FusionSet, PrefixNode

_new_object = object.__new__
#: A scored new prefix: (live prefix index, token, am score, node or None, lm score, lm state,
#: fused LM score, prior); see ``CtcBeamSearch._new_prefixes``.
_NewPrefix = tuple[int, int, float, PrefixNode | None, float, Any, float, float]


class CtcFrameStep:
    """Mixin of :class:`~userlibri.decode.ctc_beam.CtcBeamSearch`: the per-frame search. Uses its
    ``config``, ``fusion``, ``blank_id`` and the fusion pieces it looks up once (``_inline``,
    ``_scored``, ``_memo_get``, ``_score_single``, ``_score0``, ``_w0``)."""

    config: DecoderConfig
    fusion: FusionSet
    blank_id: int
    _inline: bool
    _scored: bool
    _memo_get: Any
    _score_single: Any
    _score0: Any
    _w0: float
    _cap: int

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
            cap = self._cap
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
        return self._select(t, nodes, times, new_pb, new_pnb, s_b, s_nb, new, s_new)

    def _select(
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
        """Keep the beam best states within beam_prune of the best (a float sort finds the
        beam-th best score; ties at that score fall back to the order of the states)."""
        cfg = self.config
        beam = cfg.beam
        ranked = sorted(s_b + s_nb + s_new, reverse=True)
        if ranked[0] == NEG_INF:
            return [], [], [], []
        floor = ranked[0] - cfg.beam_prune
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

    def _extend_stay(
        self,
        t: int,
        ext: Sequence[tuple[int, float]],
        blank_lp: float,
        nodes: list[PrefixNode],
        pb: list[float],
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink]]:
        """:meth:`_step` when every live prefix ends in blank, blank is allowed in this frame and
        no new prefix equals a live one, for at most one unbatched LM: each prefix stays by blank
        or is extended (no repeats, no merges); the result is :meth:`_step`'s."""
        cfg = self.config
        new_pb: list[float] = []
        s_b: list[float] = []
        # New prefixes: (score without the new token's LM score, prefix index, token, am score).
        cands: list[tuple[float, int, int, float]] = []
        best = top = NEG_INF
        for i, node in enumerate(nodes):
            b, prior = pb[i], node.prior
            x = b + blank_lp
            new_pb.append(x)
            x += prior
            s_b.append(x)
            if x > best:
                best = x
            for c, y in ext:
                v = b + y
                s = v + prior
                if s > top:
                    top = s
                cands.append((s, i, c, v))
        floor = (best if best > top else top) - cfg.beam_prune
        cands = [c for c in cands if c[0] >= floor]
        cap = self._cap
        if cap and len(cands) > cap:
            cands.sort(key=_first, reverse=True)
            del cands[cap:]
        scored, memo_get, w, bonus = self._scored, self._memo_get, self._w0, self.fusion.length_bonus
        new: list[_NewPrefix] = []
        s_new: list[float] = []
        d, st = 0.0, None
        for _, i, c, v in cands:
            parent = nodes[i]
            fused = parent.fused
            if scored:
                st = parent.states[0]
                hit = memo_get((st, c))
                if hit is None:
                    hit = self._score_single(st, c)
                d, st = hit
                if w:
                    fused += w * d
            prior = fused + bonus * (parent.n + 1)
            new.append((i, c, v, None, d, st, fused, prior))
            s_new.append(v + prior)
        none = [NEG_INF] * len(nodes)
        return self._select(t, nodes, times, new_pb, none, s_b, none, new, s_new)

    def _extend_only(
        self,
        t: int,
        ext: Sequence[tuple[int, float]],
        nodes: list[PrefixNode],
        pb: list[float],
        times: list[TimeLink],
    ) -> tuple[list[PrefixNode], list[float], list[float], list[TimeLink], set[int]]:
        """:meth:`_step` when every live prefix ends in blank, blank is pruned in this frame and no
        new prefix equals a live one (a token frame after blank frames), for at most one
        unbatched LM: only new prefixes can survive. One pass: every candidate is LM-scored
        (memoised) as it is made, the pre-LM prune and cap are applied after, and nodes are built
        only for kept prefixes; the result is :meth:`_step`'s. Also returns the kept tokens."""
        cfg = self.config
        prune = cfg.beam_prune
        bonus = self.fusion.length_bonus
        # (score without the new LM score, fused score, prefix index, token, am score, LM score,
        #  LM state, fused LM score, prior)
        ents: list[tuple[float, float, int, int, float, float, Any, float, float]] = []
        append = ents.append
        top = ytop = NEG_INF
        low = math.inf
        if self._scored:
            memo, w, score0 = self.fusion.memo, self._w0, self._score0
            memo_get = memo.get
            for i, node in enumerate(nodes):
                b, prior, fused0, st0 = pb[i], node.prior, node.fused, node.states[0]
                bn = bonus * (node.n + 1)
                for c, x in ext:
                    v = b + x
                    s = v + prior
                    if s > top:
                        top = s
                    if s < low:
                        low = s
                    key = (st0, c)
                    hit = memo_get(key)
                    if hit is None:  # FusionSet.score_single, inlined
                        hit = score0(st0, c)
                        if len(memo) >= MEMO_SIZE:
                            memo.clear()
                        memo[key] = hit
                    d, st = hit
                    fused = fused0 + w * d if w else fused0
                    pr = fused + bn
                    y = v + pr
                    if y > ytop:
                        ytop = y
                    append((s, y, i, c, v, d, st, fused, pr))
        else:
            for i, node in enumerate(nodes):
                b, prior, fused = pb[i], node.prior, node.fused
                pr = fused + bonus * (node.n + 1)
                for c, x in ext:
                    v = b + x
                    s = v + prior
                    if s > top:
                        top = s
                    if s < low:
                        low = s
                    y = v + pr
                    if y > ytop:
                        ytop = y
                    append((s, y, i, c, v, 0.0, None, fused, pr))
        floor = top - prune
        cap = self._cap
        if low < floor or (cap and len(ents) > cap):
            ents = [e for e in ents if e[0] >= floor]
            if cap and len(ents) > cap:
                ents.sort(key=_first, reverse=True)
                del ents[cap:]
            ytop = max([e[1] for e in ents])
        if ytop == NEG_INF:
            return [], [], [], [], set()
        floor = ytop - prune
        beam = cfg.beam
        if len(ents) > beam:
            ranked = sorted([e[1] for e in ents], reverse=True)
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
        scored = self._scored
        for _, y, i, c, v, d, st, fused, pr in ents:
            if y >= floor and y > NEG_INF:
                parent = nodes[i]
                node = _new_object(PrefixNode)  # inlined PrefixNode.make
                node.parent = parent
                node.token = c
                node.n = parent.n + 1
                node.key = None  # computed when needed (PrefixNode.full_key)
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
                    node.key = None
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
    ) -> tuple[list[_NewPrefix], list[float]]:
        """Merge candidates into live prefixes (in place on ``new_pnb``/``s_nb``) and LM-score the
        others. Returns, per new prefix, ``(prefix index, token, am score, node, lm score, lm
        state, fused, prior)`` and its fused score; ``node`` is None where the (single,
        unbatched) LM was scored here and the node is built only if the prefix is kept."""
        inline, scored, memo_get = self._inline, self._scored, self._memo_get
        w, bonus = self._w0, self.fusion.length_bonus
        live_tokens = {nd.token for nd in nodes}
        live: dict[int, int] | None = None
        new: list[_NewPrefix] = []
        s_new: list[float] = []
        todo: list[int] = []
        for _, i, c, v in cands:
            parent = nodes[i]
            if c in live_tokens:  # parent + c may be a live prefix: merge into it
                if live is None:
                    live = {nd.full_key(): j for j, nd in enumerate(nodes)}
                j = live.get(hash((parent.full_key(), c)))
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
                        hash((parent.full_key(), c)),
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


def _first(item: tuple[float, int, int, float]) -> float:
    return item[0]
