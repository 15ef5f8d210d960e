"""Hotword biasing: an Aho-Corasick context graph over token sequences, as a ``LanguageModel``.

Each phrase (a token-id sequence) is a path in a trie; every token along a matched path earns a
bonus (``token_score``). A node's ``node_score`` is the sum of the bonuses on its path, so a
partial match that fails gives its bonus back: moving along a failure arc scores
``node_score(new) - node_score(old)`` (negative), and :meth:`ContextGraph.final_score` removes
the bonus of a match still pending at the end of the utterance. A completed phrase keeps its
bonus: reaching a phrase end adds ``output_score`` (the ``node_score`` of every phrase ending
there, including shorter phrases on the failure chain), which cancels the give-back that follows.
This is the context graph of icefall / sherpa-onnx (Wei Kang, 2023) in its strict mode.

The decoder fuses it like any LM with its own weight (kind ``"context"``), and keeps the context
score apart from the LM score in each hypothesis. States are node ids (ints).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.lm.base import register_lm

log = logging.getLogger(__name__)

#: Per-token hotword bonus (sherpa-onnx's default ``hotwords_score``).
DEFAULT_CONTEXT_BONUS = 1.5
ROOT = 0


class ContextGraph:
    """Aho-Corasick automaton over token phrases with per-token bonuses and back-off.

    ``phrases``: token-id sequences; ``bonuses``: a per-token bonus for each phrase (default
    ``bonus``); where phrases share a prefix, a shared token earns the largest of their bonuses.
    ``vocab_size``: when given, token ids are checked against it (and the decoder checks it
    against the acoustic model's vocabulary).
    """

    def __init__(
        self,
        phrases: Sequence[Sequence[int]],
        bonus: float = DEFAULT_CONTEXT_BONUS,
        bonuses: Sequence[float] | None = None,
        vocab_size: int | None = None,
    ) -> None:
        if bonuses is not None and len(bonuses) != len(phrases):
            raise ConfigError(
                f"context graph: expected {len(phrases)} bonuses (one per phrase), found {len(bonuses)}"
            )
        self.vocab_size = vocab_size
        self.phrases = tuple(tuple(int(t) for t in p) for p in phrases)
        # Trie arrays, indexed by node id; node 0 is the root.
        self._next: list[dict[int, int]] = [{}]
        self._token: list[int] = [-1]
        self._parent: list[int] = [-1]
        self._token_score: list[float] = [0.0]
        self._end: list[int] = [-1]  # phrase index ending here, or -1
        for k, phrase in enumerate(self.phrases):
            b = float(bonus if bonuses is None else bonuses[k])
            if not math.isfinite(b):
                raise ConfigError(f"context graph: bonus of phrase {k} must be finite, found {b}")
            self._insert(k, phrase, b)
        self._build()
        self._memo: dict[tuple[int, int], tuple[float, int]] = {}

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        tokenizer,  # noqa: ANN001 - a userlibri Tokenizer (encode, vocab_size)
        bonus: float = DEFAULT_CONTEXT_BONUS,
        bonuses: Sequence[float] | None = None,
    ) -> ContextGraph:
        """Phrases given as text, encoded with the acoustic model's tokenizer; empty ones skipped."""
        texts = list(texts)
        if bonuses is not None and len(bonuses) != len(texts):
            raise ConfigError(
                f"context graph: expected {len(texts)} bonuses (one per phrase), found {len(bonuses)}"
            )
        phrases, kept = [], []
        for k, text in enumerate(texts):
            ids = tokenizer.encode(text.strip()) if text.strip() else []
            if not ids:
                log.warning("context phrase %r encodes to no tokens; skipped", text)
                continue
            phrases.append(ids)
            kept.append(bonus if bonuses is None else bonuses[k])
        return cls(phrases, bonus, kept, vocab_size=tokenizer.vocab_size)

    def _insert(self, index: int, phrase: tuple[int, ...], bonus: float) -> None:
        if not phrase:
            raise ConfigError(f"context graph: phrase {index} is empty; expected at least one token id")
        node = ROOT
        for token in phrase:
            if token < 0 or (self.vocab_size is not None and token >= self.vocab_size):
                raise ConfigError(
                    f"context graph: phrase {index} has token id {token}, expected ids in "
                    f"[0, {self.vocab_size if self.vocab_size is not None else 'V'})"
                )
            child = self._next[node].get(token)
            if child is None:
                child = len(self._token)
                self._next[node][token] = child
                self._next.append({})
                self._token.append(token)
                self._parent.append(node)
                self._token_score.append(bonus)
                self._end.append(-1)
            else:
                self._token_score[child] = max(self._token_score[child], bonus)
            node = child
        if self._end[node] < 0:
            self._end[node] = index

    def _build(self) -> None:
        """Node scores, failure links and output scores, breadth first."""
        n = len(self._token)
        self._node_score = [0.0] * n
        self._fail = [ROOT] * n
        self._output = [-1] * n  # nearest phrase end on the failure chain (not itself)
        self._output_score = [0.0] * n
        queue = deque(self._next[ROOT].values())
        while queue:
            node = queue.popleft()
            parent = self._parent[node]
            self._node_score[node] = self._node_score[parent] + self._token_score[node]
            if parent != ROOT:
                self._fail[node] = self._goto(self._fail[parent], self._token[node])
            fail = self._fail[node]
            self._output[node] = fail if self._end[fail] >= 0 else self._output[fail]
            own = self._node_score[node] if self._end[node] >= 0 else 0.0
            inherited = self._output_score[self._output[node]] if self._output[node] >= 0 else 0.0
            self._output_score[node] = own + inherited
            queue.extend(self._next[node].values())

    def _goto(self, node: int, token: int) -> int:
        """Follow failure links from ``node`` until ``token`` can be taken (or the root is hit)."""
        while True:
            child = self._next[node].get(token)
            if child is not None:
                return child
            if node == ROOT:
                return ROOT
            node = self._fail[node]

    @property
    def num_nodes(self) -> int:
        return len(self._token)

    def __repr__(self) -> str:
        return f"ContextGraph({len(self.phrases)} phrases, {self.num_nodes} nodes)"

    # -- LanguageModel --------------------------------------------------------------------------------
    def start_state(self) -> int:
        """The root: no pending match."""
        return ROOT

    def score(self, state: int, token: int) -> tuple[float, int]:
        """Bonus (or give-back, when a partial match fails) for ``token``, and the next node."""
        if not 0 <= state < len(self._token):
            raise UserLibriError(f"context graph: state {state} is not a node id of {self!r}")
        child = self._next[state].get(token)
        if child is not None:
            return self._token_score[child] + self._output_score[child], child
        memo = self._memo.get((state, token))
        if memo is not None:
            return memo
        node = self._goto(self._fail[state], token) if state != ROOT else ROOT
        result = (self._node_score[node] - self._node_score[state] + self._output_score[node], node)
        self._memo[(state, token)] = result
        return result

    def final_score(self, state: int) -> float:
        """Give back the bonus of a match still pending at the end."""
        return -self._node_score[state]

    # -- inspection --------------------------------------------------------------------------------
    def node_score(self, state: int) -> float:
        """The bonus earned so far along the current (partial) match."""
        return self._node_score[state]

    def matched(self, state: int) -> int | None:
        """Index of a phrase that ends at ``state`` (itself or on its failure chain), if any."""
        if self._end[state] >= 0:
            return self._end[state]
        out = self._output[state]
        return self._end[out] if out >= 0 else None


def read_hotwords(path: str | Path) -> list[tuple[str, float | None]]:
    """Phrases from a hotwords file: one a line, optionally ending in ``:<bonus>`` (sherpa-onnx's
    format); blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "a hotwords file (one phrase a line)", "no such file")
    out: list[tuple[str, float | None]] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bonus = None
        head, sep, tail = line.rpartition(":")
        if sep and head.strip() and " " not in tail.strip():
            try:
                bonus = float(tail)
            except ValueError as e:
                raise DataFormatError(path, "'PHRASE' or 'PHRASE :BONUS'", repr(line), line=lineno) from e
            if not math.isfinite(bonus):
                raise DataFormatError(path, "a finite bonus", repr(tail), line=lineno)
            line = head.strip()
        out.append((line, bonus))
    return out


@register_lm("hotwords")
def load_hotwords(path: str | Path, tokenizer, bonus: float = DEFAULT_CONTEXT_BONUS) -> ContextGraph:  # noqa: ANN001
    """Registry loader: a hotwords file encoded with the acoustic model's tokenizer."""
    if tokenizer is None:
        raise UserLibriError(f"{path}: a hotwords context graph needs the acoustic model's tokenizer")
    entries = read_hotwords(path)
    return ContextGraph.from_texts(
        [p for p, _ in entries], tokenizer, bonus, [bonus if b is None else b for _, b in entries]
    )
