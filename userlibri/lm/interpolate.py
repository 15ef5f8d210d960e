"""Interpolation of several language models over the same token ids, as one ``LanguageModel``.

* ``log-linear``: ``score = sum_i w_i * log p_i(token | state_i)``. Weights are any finite
  numbers and the result is not renormalised (shallow fusion does not need it). A **density
  ratio / LODR** scorer is exactly this with a negative weight on a background (source-domain)
  LM: ``InterpolatedLM([(user_lm, 1.0), (background_lm, -0.4)])`` scores ``log p_user -
  0.4 log p_background`` (McDermott et al. 2019; LODR: Zhao et al. 2023 use a low-order
  background LM). :func:`density_ratio` builds it.
* ``linear``: ``score = log sum_i w_i * p_i(token | state_i)``, weights >= 0 summing to 1. Each
  component keeps its own state, so this is the usual mixture of conditional probabilities; it
  is a proper distribution only when every component's ``score`` is a conditional token
  probability (token n-grams, neural LMs), not for the word scorer's look-ahead scores.

The state is the tuple of the components' states (hashable). ``score_batch`` uses the components'
own ``score_batch`` where they have one (the neural ONNX LM batches over hypotheses).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

from userlibri.errors import ConfigError, UserLibriError
from userlibri.lm.base import LanguageModel

Mode = Literal["log-linear", "linear"]
MODES = ("log-linear", "linear")
_WEIGHT_SUM_TOLERANCE = 1e-6


def _vocab_size(lm: object) -> int | None:
    size = getattr(lm, "vocab_size", None)
    if isinstance(size, int):
        return size
    pieces = getattr(lm, "pieces", None)
    return len(pieces) if pieces is not None else None


class InterpolatedLM:
    """Several LMs over the same token ids combined log-linearly or linearly with fixed weights."""

    def __init__(
        self,
        components: Sequence[tuple[LanguageModel, float]],
        mode: Mode = "log-linear",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"interpolation mode: expected one of {MODES}, found {mode!r}")
        if not components:
            raise ConfigError("interpolation: expected at least one (lm, weight) component, found none")
        lms = [c[0] for c in components]
        weights = [float(c[1]) for c in components]
        for lm, w in zip(lms, weights, strict=True):
            if not math.isfinite(w):
                raise ConfigError(f"interpolation weight of {lm!r}: expected a finite number, found {w}")
        if mode == "linear":
            if any(w < 0 for w in weights):
                raise ConfigError(f"linear interpolation: expected weights >= 0, found {weights}")
            if abs(sum(weights) - 1.0) > _WEIGHT_SUM_TOLERANCE:
                raise ConfigError(
                    f"linear interpolation: expected weights summing to 1, found sum {sum(weights)}"
                )
        sizes = {(repr(lm), s) for lm in lms if (s := _vocab_size(lm)) is not None}
        if len({s for _, s in sizes}) > 1:
            raise UserLibriError(
                "interpolation: expected LMs over the same token ids, found vocabulary sizes "
                + ", ".join(f"{name}: {s}" for name, s in sorted(sizes))
            )
        self.lms = tuple(lms)
        self.weights = tuple(weights)
        self.mode = mode
        self._log_weights = tuple(math.log(w) if w > 0 else -math.inf for w in weights)
        self._batched = tuple(callable(getattr(lm, "score_batch", None)) for lm in self.lms)
        self.vocab_size: int | None = next(iter(sizes))[1] if sizes else None

    def __repr__(self) -> str:
        parts = ", ".join(f"{w:g}*{lm!r}" for lm, w in zip(self.lms, self.weights, strict=True))
        return f"InterpolatedLM({self.mode}: {parts})"

    def _combine(self, scores: Sequence[float]) -> float:
        if self.mode == "log-linear":
            total = 0.0
            for w, s in zip(self.weights, scores, strict=True):
                if w:
                    total += w * s
            return total
        terms = [lw + s for lw, s in zip(self._log_weights, scores, strict=True) if lw > -math.inf]
        top = max(terms)
        if top == -math.inf:
            return -math.inf
        return top + math.log(sum(math.exp(x - top) for x in terms))

    def start_state(self) -> tuple[Hashable, ...]:
        """The components' start states."""
        return tuple(lm.start_state() for lm in self.lms)

    def score(self, state: tuple[Hashable, ...], token: int) -> tuple[float, tuple[Hashable, ...]]:
        """The combined score of ``token``; every component advances its own state."""
        scores = []
        states = []
        for lm, s in zip(self.lms, state, strict=True):
            x, nxt = lm.score(s, token)
            scores.append(x)
            states.append(nxt)
        return self._combine(scores), tuple(states)

    def final_score(self, state: tuple[Hashable, ...]) -> float:
        """The components' end-of-sentence scores, combined the same way."""
        return self._combine([lm.final_score(s) for lm, s in zip(self.lms, state, strict=True)])

    def score_batch(
        self, states: Sequence[tuple[Hashable, ...]], tokens: Sequence[int]
    ) -> tuple[np.ndarray, list[tuple[Hashable, ...]]]:
        """``score`` for N (state, token) pairs: ((N,) scores, N states); batched per component."""
        if len(states) != len(tokens):
            raise UserLibriError(f"score_batch: {len(states)} states but {len(tokens)} tokens")
        per_lm: list[list[float]] = []
        per_states: list[list[Hashable]] = []
        for k, lm in enumerate(self.lms):
            comp = [s[k] for s in states]
            if self._batched[k]:
                sc, nxt = lm.score_batch(comp, tokens)
                per_lm.append([float(x) for x in sc])
                per_states.append(list(nxt))
            else:
                pairs = [lm.score(s, t) for s, t in zip(comp, tokens, strict=True)]
                per_lm.append([p[0] for p in pairs])
                per_states.append([p[1] for p in pairs])
        scores = np.array([self._combine(col) for col in zip(*per_lm, strict=True)], dtype=np.float64)
        return scores, [tuple(col) for col in zip(*per_states, strict=True)]


def density_ratio(
    target: LanguageModel, background: LanguageModel, background_weight: float
) -> InterpolatedLM:
    """LODR / density ratio: ``log p_target - background_weight * log p_background``.

    ``background_weight`` >= 0 (the usual range is 0.1-0.6); it is applied with a minus sign.
    The decoder's fusion weight then scales the whole difference.
    """
    if not (math.isfinite(background_weight) and background_weight >= 0):
        raise ConfigError(f"background_weight: expected a finite number >= 0, found {background_weight}")
    return InterpolatedLM([(target, 1.0), (background, -background_weight)], mode="log-linear")
