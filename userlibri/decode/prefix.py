"""The prefix tree both searches grow, and the LM fusions that score it.

A :class:`PrefixNode` holds what depends only on its token sequence: its LM states and its raw and
fused LM scores. What depends on the alignment (acoustic scores, frame timestamps) lives in the
decoder state. :class:`FusionSet` builds nodes, scoring new tokens with every fused LM: the score
of extending a prefix by a token is computed once per (prefix, token) (cached in the parent's
``children``) and, for a single LM, once per (LM state, token) (a memo: prefixes that differ only
beyond the LM's history share its state), so a prefix that stays in the beam for many frames is
never re-scored.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from types import MappingProxyType

from userlibri.decode.hyp import Fusion, Hypothesis, TimeLink
from userlibri.errors import UserLibriError

_MEMO_SIZE = 1 << 16
_new_object = object.__new__


class PrefixNode:
    """A token prefix with its LM states and fused LM score (shared by all its alignments)."""

    __slots__ = ("parent", "token", "n", "key", "states", "raw", "fused", "prior", "children", "ctx")

    def __init__(
        self,
        parent: PrefixNode | None,
        token: int,
        states: tuple[Hashable, ...],
        raw: tuple[float, ...],
        fused: float,
        length_bonus: float,
        ctx: tuple[int, ...] = (),
    ) -> None:
        self.parent = parent
        self.token = token
        self.n = 0 if parent is None else parent.n + 1
        # Python's hash of a tuple of ints is deterministic; collisions are checked by same_prefix.
        #: ``hash((parent key, token))``, 0 for the root (see :meth:`full_key`); None where not
        #: computed yet (nodes of the CTC fast path).
        self.key: int | None = 0 if parent is None else hash((parent.full_key(), token))
        self.states = states
        self.raw = raw
        self.fused = fused
        #: Everything but the acoustic score: fused LM score plus the length bonus.
        self.prior = fused + length_bonus * self.n
        #: Child nodes by token. (The transducer's single-LM path also parks scored candidates
        #: here as tuples until they are kept; see ``TransducerBeamSearch._pending``.)
        self.children: dict[int, PrefixNode] = {}
        #: Transducer decoder context (the last tokens), empty for CTC.
        self.ctx = ctx

    @classmethod
    def make(
        cls,
        parent: PrefixNode,
        token: int,
        key: int,
        states: tuple[Hashable, ...],
        raw: tuple[float, ...],
        fused: float,
        prior: float,
        ctx: tuple[int, ...] = (),
    ) -> PrefixNode:
        """A child of ``parent`` with ``key``/``prior`` already computed (as ``__init__`` would:
        ``hash((parent.key, token))`` and ``fused + length_bonus * (parent.n + 1)``); the decoders'
        fast path, about half the cost of ``__init__``."""
        node = _new_object(cls)
        node.parent = parent
        node.token = token
        node.n = parent.n + 1
        node.key = key
        node.states = states
        node.raw = raw
        node.fused = fused
        node.prior = prior
        node.children = {}
        node.ctx = ctx
        return node

    def full_key(self) -> int:
        """``hash((parent key, token))``, 0 for the root: equal token sequences have equal keys
        (the decoders find merges by key, then confirm with :meth:`same_prefix`). Nodes built on
        the CTC fast path compute it here when first asked (most never are)."""
        key = self.key
        if key is None:
            chain = []
            node = self
            while node.key is None:
                chain.append(node)
                node = node.parent  # type: ignore[assignment]
            key = node.key
            for node in reversed(chain):
                key = hash((key, node.token))
                node.key = key
        return key  # type: ignore[return-value]

    def tokens(self) -> tuple[int, ...]:
        out = []
        append = out.append
        node = self
        while node.parent is not None:
            append(node.token)
            node = node.parent
        out.reverse()
        return tuple(out)

    def same_prefix(self, other: PrefixNode) -> bool:
        """Whether two nodes stand for the same token sequence."""
        a: PrefixNode | None = self
        b: PrefixNode | None = other
        while a is not b:
            if a is None or b is None or a.token != b.token or a.n != b.n:
                return False
            a, b = a.parent, b.parent
        return True


_new_object = object.__new__
#: ``children`` of prefix nodes that never cache their extensions (read-only: a write raises).
NO_CHILDREN: dict[int, PrefixNode] = MappingProxyType({})  # type: ignore[assignment]


def lm_vocab_size(lm: object) -> int | None:
    """The number of token ids an LM scores, when it says (``vocab_size`` or ``pieces``)."""
    size = getattr(lm, "vocab_size", None)
    if isinstance(size, int):
        return size
    pieces = getattr(lm, "pieces", None)
    if pieces is not None:
        return len(pieces)
    return None


class FusionSet:
    """The fusions of one decoder: builds prefix nodes, scoring new tokens with every LM."""

    def __init__(self, fusions: Sequence[Fusion], length_bonus: float, context_size: int = 0) -> None:
        for f in fusions:
            f.validate()
        self.fusions = tuple(fusions)
        self.weights = tuple(f.weight for f in self.fusions)
        self._kinds = tuple(f.kind for f in self.fusions)
        self.length_bonus = length_bonus
        self.context_size = context_size
        self._batched = tuple(callable(getattr(f.lm, "score_batch", None)) for f in self.fusions)
        #: Whether any LM scores batches (then :meth:`extend` is worth calling with many pairs).
        self.batched = any(self._batched)
        #: (LM state, token) -> (score, next state) of a single unbatched LM; a cache of a pure
        #: function (LM scores depend on the state only), bounded by clearing.
        self._memo: dict[tuple[Hashable, int], tuple[float, Hashable]] = {}
        self._score0 = self.fusions[0].lm.score if self.fusions else None
        self._w0 = self.weights[0] if self.fusions else 0.0

    def root(self, ctx: tuple[int, ...] = ()) -> PrefixNode:
        states = tuple(f.lm.start_state() for f in self.fusions)
        return PrefixNode(None, -1, states, (0.0,) * len(self.fusions), 0.0, self.length_bonus, ctx)

    @property
    def inline(self) -> bool:
        """Whether the decoders may score new prefixes with :meth:`score_single` and build their
        nodes themselves: at most one LM, without ``score_batch``."""
        return len(self.fusions) <= 1 and not self.batched

    @property
    def memo(self) -> dict[tuple[Hashable, int], tuple[float, Hashable]]:
        """``(state, token) -> (log-prob, next state)`` of the single LM (see :meth:`score_single`)."""
        return self._memo

    def score_single(self, state: Hashable, token: int) -> tuple[float, Hashable]:
        """The single LM's ``score(state, token)``, memoised: prefixes that differ only beyond the
        LM's history share its state, so each (state, token) is scored once."""
        memo = self._memo
        hit = memo.get((state, token))
        if hit is None:
            hit = self._score0(state, token)  # type: ignore[misc]
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[(state, token)] = hit
        return hit

    def check_vocab(self, vocab_size: int, what: str) -> None:
        """``UserLibriError`` naming both sides if an LM scores a different number of ids."""
        for f in self.fusions:
            size = lm_vocab_size(f.lm)
            if size is not None and size != vocab_size:
                raise UserLibriError(
                    f"vocabulary mismatch: {what} has {vocab_size} token ids, but the {f.kind} "
                    f"model {f.lm!r} scores {size}; they must use the same tokenizer"
                )

    def child(self, parent: PrefixNode, token: int) -> PrefixNode:
        """The child of ``parent`` by ``token`` (cached; LMs scored one at a time)."""
        node = parent.children.get(token)
        if node is not None:
            return node
        csize = self.context_size
        ctx = (*parent.ctx[1:], token) if csize else ()
        nf = len(self.fusions)
        if nf == 0:
            node = PrefixNode(parent, token, (), (), parent.fused, self.length_bonus, ctx)
        elif nf == 1:
            # Prefixes that differ only beyond the LM's history share its state: score once.
            state = parent.states[0]
            memo = self._memo
            hit = memo.get((state, token))
            if hit is None:
                hit = self._score0(state, token)
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[(state, token)] = hit
            d, st = hit
            w = self._w0
            fused = parent.fused + w * d if w else parent.fused
            node = PrefixNode(parent, token, (st,), (parent.raw[0] + d,), fused, self.length_bonus, ctx)
        else:
            return self.extend([(parent, token)])[0]
        parent.children[token] = node
        return node

    def extend(self, pairs: Sequence[tuple[PrefixNode, int]]) -> list[PrefixNode]:
        """The child node of each ``(parent, token)``, LM-scored once and cached in the parent.

        LMs with ``score_batch`` are called once for all new children."""
        out: list[PrefixNode | None] = []
        todo: list[int] = []
        for k, (parent, token) in enumerate(pairs):
            child = parent.children.get(token)
            if child is None:
                todo.append(k)
            out.append(child)
        if not todo:
            return out  # type: ignore[return-value]
        parents = [pairs[k][0] for k in todo]
        tokens = [pairs[k][1] for k in todo]
        scores: list[list[float]] = []
        states: list[list[Hashable]] = []
        for j, f in enumerate(self.fusions):
            before = [p.states[j] for p in parents]
            if self._batched[j] and len(todo) > 1:
                sc, st = f.lm.score_batch(before, tokens)
                scores.append([float(x) for x in sc])
                states.append(list(st))
            else:
                res = list(map(f.lm.score, before, tokens))
                scores.append([r[0] for r in res])
                states.append([r[1] for r in res])
        bonus = self.length_bonus
        csize = self.context_size
        nf = len(self.fusions)
        if nf == 0:
            for k, parent, token in zip(todo, parents, tokens, strict=True):
                ctx = (*parent.ctx[1:], token) if csize else ()
                out[k] = parent.children[token] = PrefixNode(parent, token, (), (), parent.fused, bonus, ctx)
        elif nf == 1:
            w = self.weights[0]
            make = PrefixNode.make
            for k, parent, token, d, st in zip(todo, parents, tokens, scores[0], states[0], strict=True):
                ctx = (*parent.ctx[1:], token) if csize else ()
                fused = parent.fused + w * d if w else parent.fused
                out[k] = parent.children[token] = make(
                    parent,
                    token,
                    hash((parent.full_key(), token)),
                    (st,),
                    (parent.raw[0] + d,),
                    fused,
                    fused + bonus * (parent.n + 1),
                    ctx,
                )
        else:
            for m, (k, parent, token) in enumerate(zip(todo, parents, tokens, strict=True)):
                d = [sc[m] for sc in scores]
                fused = parent.fused
                for w, x in zip(self.weights, d, strict=True):
                    if w:
                        fused += w * x
                raw = tuple(a + x for a, x in zip(parent.raw, d, strict=True))
                ctx = (*parent.ctx[1:], token) if csize else ()
                out[k] = parent.children[token] = PrefixNode(
                    parent, token, tuple(st[m] for st in states), raw, fused, bonus, ctx
                )
        return out  # type: ignore[return-value]

    def final(self, node: PrefixNode) -> tuple[tuple[float, ...], float]:
        """Each fusion's raw score with the end of sentence, and the fused score of the ending."""
        raws = []
        fused = 0.0
        for f, w, state, raw in zip(self.fusions, self.weights, node.states, node.raw, strict=True):
            end = f.lm.final_score(state)
            raws.append(raw + end)
            if w:
                fused += w * end
        return tuple(raws), fused

    def hypotheses(
        self, nodes: Sequence[PrefixNode], ams: Sequence[float], times: Sequence[TimeLink], final: bool
    ) -> list[Hypothesis]:
        """:meth:`hypothesis` of each ``(node, am, times)``, sorted best first (stable)."""
        hyps = [
            self.hypothesis(node, am, link, final) for node, am, link in zip(nodes, ams, times, strict=True)
        ]
        hyps.sort(key=_neg_score)
        return hyps

    def hypothesis(self, node: PrefixNode, am: float, times: TimeLink, final: bool) -> Hypothesis:
        """Package a node (and its acoustic score) as a :class:`Hypothesis`."""
        if final:
            raw, end = self.final(node)
        else:
            raw, end = node.raw, 0.0
        lm = context = 0.0
        for kind, r in zip(self._kinds, raw, strict=True):
            if kind == "lm":
                lm += r
            else:
                context += r
        return Hypothesis.from_search(node, times, am + node.prior + end, am, lm, context, raw)


def _neg_score(h: Hypothesis) -> float:
    return -h.score
