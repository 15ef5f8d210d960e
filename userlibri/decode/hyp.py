"""What the decoders share: the search config, LM fusions, hypotheses and input checks.

Scores are natural logs. The decoder owns the fusion weights (DESIGN.md):
``total = am + sum_i weight_i * lm_i + length_bonus * len(tokens)``, where each fusion ``i`` is a
:class:`~userlibri.lm.base.LanguageModel` (an n-gram, a neural LM, an interpolation, a hotword
context graph) of kind ``"lm"`` or ``"context"``. A :class:`Hypothesis` keeps the acoustic score,
the raw (unweighted) LM and context scores and each fusion's own score apart.
The prefix tree both searches grow is :mod:`userlibri.decode.prefix`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import FrozenInstanceError, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from userlibri.errors import ConfigError, UserLibriError
from userlibri.lm.base import LanguageModel

if TYPE_CHECKING:
    from userlibri.decode.prefix import PrefixNode

log = logging.getLogger(__name__)

DEFAULT_BEAM = 10
DEFAULT_LM_WEIGHT = 0.5
DEFAULT_CONTEXT_WEIGHT = 1.0
DEFAULT_LENGTH_BONUS = 0.0
#: States scoring more than this below the best one (natural log) are dropped (as pyctcdecode).
DEFAULT_BEAM_PRUNE = 10.0
#: Tokens considered per frame (the most likely ones); 0 considers all.
DEFAULT_TOKEN_TOPK = 16
#: Tokens less likely than this (natural log) in a frame are not considered (as pyctcdecode),
#: except the frame's most likely label.
DEFAULT_MIN_TOKEN_LOGPROB = -5.0
#: CTC: a prefix stays (by blank, or by repeating its last token) only where that label's log-prob
#: is at least this (or it is the frame's most likely label). -5, as for new tokens, is what
#: pyctcdecode does (its token_min_logp applies to blank too), but it loses paths by which an LM
#: overrides confident acoustics (benchmarks/ctc_beam_speed.py "noisy": WER 4.5% at -5, 1.7% at
#: -12, 1.5% with no limit); at -12 it drops only labels of probability below e^-12 in their
#: frame. A token frame after blank frames then only creates new prefixes (a fast path).
DEFAULT_MIN_STAY_LOGPROB = -12.0
#: CTC: in frames whose blank probability is above this, each prefix's two states merge and
#: extend by blank: the repeat path (less than 1 - blank_skip of the frame) is dropped, nothing
#: else is scored (1.0: never). Beam 1 is unaffected (greedy takes blank there too).
DEFAULT_BLANK_SKIP = 0.999
#: Most new-token candidates per frame (the best by acoustic + prefix score) scored by the LMs,
#: as a multiple of the beam (sherpa-onnx scores one beam's worth; 2 lost no accuracy in our tests).
DEFAULT_ACTIVE_PER_BEAM = 2

FUSION_KINDS = ("lm", "context")
#: Largest magnitude accepted in log-probs / model outputs: sums over long utterances stay finite.
MAX_MAGNITUDE = 1e10
NEG_INF = -math.inf


@dataclass(frozen=True)
class DecoderConfig:
    """Beam search settings shared by the CTC and transducer decoders."""

    beam: int = DEFAULT_BEAM
    #: Weight of an LM passed as ``lm=`` to a decoder (fusions given explicitly carry their own).
    lm_weight: float = DEFAULT_LM_WEIGHT
    #: Weight of a context graph passed as ``context=``.
    context_weight: float = DEFAULT_CONTEXT_WEIGHT
    #: Added to the total per emitted token (counters the LM's preference for short outputs).
    length_bonus: float = DEFAULT_LENGTH_BONUS
    beam_prune: float = DEFAULT_BEAM_PRUNE
    token_topk: int = DEFAULT_TOKEN_TOPK
    min_token_logprob: float = DEFAULT_MIN_TOKEN_LOGPROB
    #: CTC only (see ``DEFAULT_MIN_STAY_LOGPROB``).
    min_stay_logprob: float = DEFAULT_MIN_STAY_LOGPROB
    blank_skip: float = DEFAULT_BLANK_SKIP
    #: Cap on new-token candidates LM-scored per frame; None: ``DEFAULT_ACTIVE_PER_BEAM * beam``;
    #: 0: no cap.
    max_active: int | None = None

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad value."""
        if self.beam < 1:
            raise ConfigError(f"beam: expected >= 1, found {self.beam}")
        for name in ("lm_weight", "context_weight", "length_bonus", "min_token_logprob", "min_stay_logprob"):
            value = getattr(self, name)
            if math.isnan(value) or (not name.startswith("min_") and math.isinf(value)):
                raise ConfigError(f"{name}: expected a finite number, found {value}")
        if not self.beam_prune > 0:
            raise ConfigError(f"beam_prune: expected > 0 (inf disables it), found {self.beam_prune}")
        if self.token_topk < 0:
            raise ConfigError(f"token_topk: expected >= 0 (0: all tokens), found {self.token_topk}")
        if not 0.0 < self.blank_skip <= 1.0:
            raise ConfigError(
                f"blank_skip: expected a probability in (0, 1] (1: off), found {self.blank_skip}"
            )
        if self.max_active is not None and self.max_active < 0:
            raise ConfigError(f"max_active: expected >= 0 (0: no cap) or None, found {self.max_active}")

    @property
    def active_cap(self) -> int:
        """The effective ``max_active`` (0: no cap)."""
        return DEFAULT_ACTIVE_PER_BEAM * self.beam if self.max_active is None else self.max_active

    @classmethod
    def exhaustive(cls, beam: int, **kwargs: Any) -> DecoderConfig:
        """A config with every pruning except the beam width switched off (for exact tests)."""
        return cls(
            beam=beam,
            beam_prune=math.inf,
            token_topk=0,
            min_token_logprob=-math.inf,
            min_stay_logprob=-math.inf,
            blank_skip=1.0,
            max_active=0,
            **kwargs,
        )


@dataclass(frozen=True)
class Fusion:
    """One LM fused into the search: ``weight * lm`` is added to the total."""

    lm: LanguageModel
    weight: float
    kind: str = "lm"

    def validate(self) -> None:
        if self.kind not in FUSION_KINDS:
            raise ConfigError(f"fusion kind: expected one of {FUSION_KINDS}, found {self.kind!r}")
        if not math.isfinite(self.weight):
            raise ConfigError(f"fusion weight of {self.lm!r}: expected a finite number, found {self.weight}")
        for method in ("start_state", "score", "final_score"):
            if not callable(getattr(self.lm, method, None)):
                raise ConfigError(
                    f"fusion: expected a LanguageModel (start_state/score/final_score), "
                    f"found {type(self.lm).__name__} without {method}()"
                )


FusionLike = Fusion | tuple[LanguageModel, float] | tuple[LanguageModel, float, str]


_HYP_FIELDS = (
    "tokens",
    "timestamps",
    "score",
    "am_score",
    "lm_score",
    "context_score",
    "fusion_scores",
    "lm_states",
)


class Hypothesis:
    """One decoding result (immutable). ``score`` is the fused total the search ranked by.

    Fields: ``tokens``; ``timestamps``, the frame index (encoder frames) at which each token was
    emitted; ``score``; ``am_score``; ``lm_score``, the raw (unweighted) sum of the ``"lm"``
    fusions' log-probs, end of sentence included if final; ``context_score``, the raw sum of the
    ``"context"`` fusions' scores (hotword bonuses); ``fusion_scores``, each fusion's raw score in
    the decoder's fusion order; ``lm_states``, each fusion's state after the last token (before
    the end of sentence). Equality, hashing and ``repr`` go by these fields, as a frozen dataclass.

    The decoders build hypotheses with :meth:`from_search`: ``tokens`` and ``timestamps`` are then
    unrolled from the search's prefix tree when first read (most callers read only the best one's).
    """

    __slots__ = (
        "_tokens",
        "_timestamps",
        "score",
        "am_score",
        "lm_score",
        "context_score",
        "fusion_scores",
        "lm_states",
        "_node",
        "_link",
    )

    def __init__(
        self,
        tokens: tuple[int, ...],
        timestamps: tuple[int, ...],
        score: float,
        am_score: float,
        lm_score: float,
        context_score: float,
        fusion_scores: tuple[float, ...],
        lm_states: tuple[Hashable, ...],
    ) -> None:
        for name, value in (
            ("_tokens", tokens),
            ("_timestamps", timestamps),
            ("score", score),
            ("am_score", am_score),
            ("lm_score", lm_score),
            ("context_score", context_score),
            ("fusion_scores", fusion_scores),
            ("lm_states", lm_states),
            ("_node", None),
            ("_link", None),
        ):
            _set(self, name, value)

    @classmethod
    def from_search(
        cls,
        node: PrefixNode,
        times: TimeLink,
        score: float,
        am_score: float,
        lm_score: float,
        context_score: float,
        fusion_scores: tuple[float, ...],
    ) -> Hypothesis:
        """A hypothesis whose tokens (``node.tokens()``) and timestamps (``unroll_times(times)``)
        are computed when first read."""
        hyp = _new_object(cls)
        _set(hyp, "_tokens", None)
        _set(hyp, "_timestamps", None)
        _set(hyp, "score", score)
        _set(hyp, "am_score", am_score)
        _set(hyp, "lm_score", lm_score)
        _set(hyp, "context_score", context_score)
        _set(hyp, "fusion_scores", fusion_scores)
        _set(hyp, "lm_states", node.states)
        _set(hyp, "_node", node)
        _set(hyp, "_link", times)
        return hyp

    @property
    def tokens(self) -> tuple[int, ...]:
        tokens = self._tokens
        if tokens is None:
            tokens = self._node.tokens()  # type: ignore[union-attr]
            _set(self, "_tokens", tokens)
        return tokens

    @property
    def timestamps(self) -> tuple[int, ...]:
        stamps = self._timestamps
        if stamps is None:
            stamps = unroll_times(self._link)
            _set(self, "_timestamps", stamps)
        return stamps

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _HYP_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in _HYP_FIELDS)
        return f"Hypothesis({inner})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Hypothesis, self._fields())

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (no LM states)."""
        return {
            "tokens": list(self.tokens),
            "timestamps": list(self.timestamps),
            "score": self.score,
            "am_score": self.am_score,
            "lm_score": self.lm_score,
            "context_score": self.context_score,
            "fusion_scores": list(self.fusion_scores),
        }


_set = object.__setattr__
_new_object = object.__new__


#: Frame timestamps as a persistent linked list: ``(frame, previous link)`` or ``None``.
TimeLink = tuple[int, Any] | None


def unroll_times(link: TimeLink) -> tuple[int, ...]:
    out = []
    append = out.append
    while link is not None:
        append(link[0])
        link = link[1]
    out.reverse()
    return tuple(out)


def make_fusions(
    config: DecoderConfig,
    fusions: Sequence[FusionLike] = (),
    lm: LanguageModel | None = None,
    context: LanguageModel | None = None,
) -> list[Fusion]:
    """Explicit fusions, then ``lm`` (weight ``config.lm_weight``) and ``context`` (``context_weight``)."""
    out: list[Fusion] = []
    for f in fusions:
        if isinstance(f, Fusion):
            out.append(f)
        elif isinstance(f, tuple) and len(f) in (2, 3):
            out.append(Fusion(*f))
        else:
            raise ConfigError(f"fusion: expected Fusion or (lm, weight[, kind]), found {f!r}")
    if lm is not None:
        out.append(Fusion(lm, config.lm_weight, "lm"))
    if context is not None:
        out.append(Fusion(context, config.context_weight, "context"))
    return out


_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
_min, _max = np.minimum.reduce, np.maximum.reduce


def check_matrix(x: object, what: str, columns: int | None = None) -> np.ndarray:
    """A finite 2-D float array, else ``UserLibriError`` saying what was found.

    float32 and float64 arrays come back as they are (model outputs are float32: no copy), other
    float types as float64. Callers read values as Python floats (``tolist``/``item``, exact) or
    combine them with float64 arrays, so the arithmetic is float64 either way."""
    if not isinstance(x, np.ndarray):
        raise UserLibriError(f"{what}: expected a numpy array of shape (T, V), found {type(x).__name__}")
    if x.ndim != 2:
        raise UserLibriError(f"{what}: expected 2 dimensions (T, V), found shape {x.shape}")
    kind = x.dtype
    if kind.kind != "f":
        raise UserLibriError(f"{what}: expected a float array, found dtype {x.dtype}")
    if columns is not None and x.shape[1] != columns:
        raise UserLibriError(f"{what}: expected {columns} columns, found shape {x.shape}")
    if kind != _FLOAT32 and kind != _FLOAT64:
        x = np.asarray(x, dtype=np.float64)
    # min/max propagate NaN, so two passes check everything; locate the culprit only on failure.
    if x.size and not (_min(x, axis=None) >= -MAX_MAGNITUDE and _max(x, axis=None) <= MAX_MAGNITUDE):
        bad = ~(np.abs(x) <= MAX_MAGNITUDE)  # NaN compares False
        if bad.any():
            t, v = np.argwhere(bad)[0]
            raise UserLibriError(
                f"{what}: expected finite values of magnitude <= {MAX_MAGNITUDE:g}, found {x[t, v]} "
                f"at frame {t}, column {v} ({int(bad.sum())} such values in shape {x.shape})"
            )
    return x


def ceil_float32(x: float) -> np.float32:
    """The smallest float32 >= ``x``: for float32 values ``v``, ``v >= ceil_float32(x)`` exactly
    when ``float(v) >= x`` (comparing with ``x`` itself would round it to float32 first)."""
    y = np.float32(x)
    if float(y) < x:
        y = np.nextafter(y, np.float32(np.inf))
    return y


def floor_float32(x: float) -> np.float32:
    """The largest float32 <= ``x``: ``v > floor_float32(x)`` exactly when ``float(v) > x``."""
    y = np.float32(x)
    if float(y) > x:
        y = np.nextafter(y, np.float32(-np.inf))
    return y


def select_top(scores: np.ndarray, beam: int, prune: float) -> np.ndarray:
    """Indices of the ``beam`` best finite scores within ``prune`` of the best, best first
    (ties keep input order)."""
    finite = np.flatnonzero(scores > NEG_INF)
    if finite.size == 0:
        return finite
    s = scores[finite]
    if finite.size > beam:
        # argpartition narrows; a stable sort of the survivors keeps ties in input order.
        part = np.argpartition(-s, beam - 1)[:beam]
        kth = s[part].min()
        keep = np.flatnonzero(s >= kth)
        order = keep[np.argsort(-s[keep], kind="stable")][:beam]
    else:
        order = np.argsort(-s, kind="stable")
    if math.isfinite(prune):
        order = order[s[order] >= s[order[0]] - prune]
    return finite[order]


def log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` for Python floats; exact when either is -inf."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def top_indices(scores: list[float], beam: int, prune: float) -> list[int]:
    """Indices of the ``beam`` best finite scores within ``prune`` of the best, best first
    (ties keep input order)."""
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:beam]
    if not order or scores[order[0]] == NEG_INF:
        return []
    floor = scores[order[0]] - prune
    return [k for k in order if scores[k] >= floor and scores[k] > NEG_INF]
