"""The conditions ``userlibri bench wer`` decodes, and which LM files each user gets in each.

A condition is a decoding mode (``offline`` = non-streaming full-context encoder, ``streaming`` =
chunked encoder) and an LM: none, or one of ``background``, ``personal``, ``interpolated``,
``dp-eps<E>`` of a kind (``ngram`` or ``neural``). LM files come from the layouts the LM commands
write::

    <ngram_dir>/background/ngram.bin|.arpa        lm users: background word 4-gram
    <ngram_dir>/<book>/ngram.bin|.arpa            lm users: the book's own 4-gram     (personal)
    <ngram_dir>/<book>/mix.bin|.arpa              lm users: + background, EM-tuned    (interpolated)
    <ngram_dir>/<book>/eps<E>/mix.bin|ngram.bin   lm sampled-ngram: DP n-gram sampled from the
                                                  DP-SGD neural LM at epsilon E        (dp-eps<E>)
    <ngram_dir>/<book>/heldout.txt                held-out LM text (neural mixture weight)
    <neural_dir>/background/lm[.int8].onnx        recipes/mini/neural.sh: background LSTM LM
    <neural_dir>/<book>/inf/                      non-private fine-tune                (personal)
    <neural_dir>/<book>/eps<E>/                   DP-SGD fine-tune at epsilon E        (dp-eps<E>)

The neural ``interpolated`` LM is the linear mixture ``l * personal + (1 - l) * background`` with
``l`` fitted by EM on the book's held-out LM text (never on any audio transcript). Neural LMs with a
tokenizer of their own (not the acoustic model's) are fused word-synchronously
(:mod:`userlibri.lm.neural_word`), the mixture taken per LM piece. A condition
whose files are absent for some user is skipped for that user's split, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.errors import ConfigError, UserLibriError
from userlibri.lm.kenlm_scorer import LOOKAHEADS, word_kind

log = logging.getLogger(__name__)

MODES = ("offline", "streaming")
MODE_LABELS = {"offline": "non-streaming", "streaming": "streaming"}
KINDS = ("ngram", "neural")
KIND_LABELS = {"ngram": "n-gram", "neural": "neural"}
NON_PRIVATE_LMS = ("background", "personal", "interpolated")
LM_LABELS = {
    "none": "no LM",
    "background": "background LM",
    "personal": "per-user LM",
    "interpolated": "per-user interpolated LM",
}
DEFAULT_EPSILONS = (1.0, 8.0)
#: Held-out sentences used to fit the neural mixture weight.
DEFAULT_MIX_SENTENCES = 200
NEURAL_FILES = {"int8": ("lm.int8.onnx", "lm.onnx"), "float": ("lm.onnx",)}


def eps_name(epsilon: float) -> str:
    """``dp-eps8`` for 8.0, ``dp-eps0.5`` for 0.5."""
    return f"dp-eps{epsilon:g}"


@dataclass(frozen=True)
class Condition:
    """One decoding condition. ``kind`` is None exactly when ``lm == "none"``."""

    mode: str
    lm: str = "none"
    kind: str | None = None
    epsilon: float | None = None

    @property
    def name(self) -> str:
        """``offline/none``, ``streaming/ngram/interpolated``, ``offline/neural/dp-eps8``."""
        return f"{self.mode}/none" if self.kind is None else f"{self.mode}/{self.kind}/{self.lm}"

    @property
    def slug(self) -> str:
        """The name as a file name (``offline.ngram.personal``)."""
        return self.name.replace("/", ".")

    @property
    def label(self) -> str:
        """Human-readable: ``streaming, n-gram per-user LM``."""
        if self.kind is None:
            return f"{MODE_LABELS[self.mode]}, no LM"
        what = LM_LABELS.get(self.lm) or f"per-user DP LM (epsilon {self.epsilon:g})"
        return f"{MODE_LABELS[self.mode]}, {KIND_LABELS[self.kind]} {what}"

    @property
    def has_lm(self) -> bool:
        return self.kind is not None


def condition_matrix(
    modes: Sequence[str] = MODES,
    kinds: Sequence[str] = KINDS,
    lms: Sequence[str] = (*NON_PRIVATE_LMS, "dp"),
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
) -> list[Condition]:
    """Every condition: per mode, no LM, then per kind each LM (``dp`` expands to the epsilons)."""
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"mode: expected one of {MODES}, found {m!r}")
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"LM kind: expected one of {KINDS}, found {k!r}")
    known = ("none", *NON_PRIVATE_LMS, "dp")
    for name in lms:
        if name not in known:
            raise ConfigError(f"LM condition: expected one of {known}, found {name!r}")
    for e in epsilons:
        if not (e > 0 and math.isfinite(e)):
            raise ConfigError(f"epsilon: expected a finite number > 0, found {e}")
    out = []
    for m in modes:
        out.append(Condition(m))
        for k in kinds:
            for name in lms:
                if name == "dp":
                    out.extend(Condition(m, eps_name(e), k, e) for e in epsilons)
                elif name != "none":
                    out.append(Condition(m, name, k))
    return out


@dataclass(frozen=True)
class LMSpec:
    """What a worker loads for one user: one LM, or a linear mixture of several.

    ``parts``: ``(kind, file)`` pairs (``kenlm-word`` / ``neural-onnx``); ``weights``: mixture weights
    summing to 1 (one part: ``(1.0,)``); ``shared``: which parts every user shares (the background
    LMs: a worker keeps them loaded).
    """

    parts: tuple[tuple[str, str], ...]
    weights: tuple[float, ...] = (1.0,)
    shared: tuple[bool, ...] = (False,)

    def fingerprint(self) -> list[Any]:
        """Paths, sizes and modification times of the files, and the weights (cache keys)."""
        return [[k, *file_stamp(p)] for k, p in self.parts] + [list(self.weights)]


def file_stamp(path: str | Path) -> tuple[str, int, int]:
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


class MissingLM(UserLibriError):
    """A condition's LM files are absent for a user."""


def _first(dir_: Path, names: Sequence[str], what: str) -> Path:
    for n in names:
        if (dir_ / n).is_file():
            return dir_ / n
    raise MissingLM(f"{what}: none of {', '.join(names)} in {dir_}")


@dataclass(frozen=True)
class LMLayout:
    """Where the LMs are: ``ngram_dir`` (``lm users`` output), ``neural_dir`` (``neural.sh`` output)."""

    ngram_dir: Path | None = None
    neural_dir: Path | None = None
    neural_precision: str = "int8"
    #: The n-grams' partial-word look-ahead (``bigram`` / ``unigram``; :mod:`userlibri.lm.lookahead`).
    ngram_lookahead: str = "bigram"

    @property
    def ngram_kind(self) -> str:
        """The LM kind the n-grams load as (``kenlm-word`` or ``kenlm-word-unigram``)."""
        return word_kind(self.ngram_lookahead)

    def validate(self) -> LMLayout:
        if self.ngram_lookahead not in LOOKAHEADS:
            raise ConfigError(
                f"n-gram look-ahead: expected one of {', '.join(LOOKAHEADS)}, found {self.ngram_lookahead!r}"
            )
        if self.neural_precision not in NEURAL_FILES:
            raise ConfigError(
                f"neural LM precision: expected one of {tuple(NEURAL_FILES)}, found {self.neural_precision!r}"
            )
        for name in ("ngram_dir", "neural_dir"):
            d = getattr(self, name)
            if d is not None and not Path(d).is_dir():
                raise ConfigError(f"{name} {d}: expected a directory, found none")
        return self

    def _ngram(self, rel: str, names: Sequence[str], what: str) -> Path:
        if self.ngram_dir is None:
            raise MissingLM("no n-gram LM directory given (--lm-dir)")
        return _first(Path(self.ngram_dir) / rel, names, what)

    def _neural(self, rel: str, what: str) -> Path:
        if self.neural_dir is None:
            raise MissingLM("no neural LM directory given (--neural-dir)")
        return _first(Path(self.neural_dir) / rel, NEURAL_FILES[self.neural_precision], what)

    def heldout(self, book: str) -> Path:
        """The book's held-out LM text (``lm users`` writes it)."""
        return self._ngram(book, ("heldout.txt",), f"book {book} held-out text")

    def resolve(self, cond: Condition, book: str) -> tuple[Path, ...]:
        """The LM files of ``cond`` for a user of ``book`` (``MissingLM`` naming what is absent).

        The neural ``interpolated`` condition gives (personal, background); its weight is fitted
        separately (:func:`neural_mix_weight`).
        """
        if cond.kind is None:
            return ()
        what = f"{cond.kind} {cond.lm} LM of book {book}"
        if cond.kind == "ngram":
            arpa_bin = {"personal": "ngram", "interpolated": "mix", "background": "ngram"}
            if cond.lm == "background":
                return (self._ngram("background", ("ngram.bin", "ngram.arpa"), what),)
            if cond.lm in arpa_bin:
                stem = arpa_bin[cond.lm]
                return (self._ngram(book, (f"{stem}.bin", f"{stem}.arpa"), what),)
            rel = f"{book}/eps{cond.epsilon:g}"
            names = ("mix.bin", "mix.arpa", "ngram.bin", "ngram.arpa")
            try:
                return (self._ngram(rel, names, what),)
            except MissingLM as e:
                raise MissingLM(
                    f"{e} (no DP n-gram LM yet: lm sampled-ngram builds it, see recipes/mini/neural.sh)"
                ) from None
        if cond.lm == "background":
            return (self._neural("background", what),)
        if cond.lm == "personal":
            return (self._neural(f"{book}/inf", what),)
        if cond.lm == "interpolated":
            return (self._neural(f"{book}/inf", what), self._neural("background", what))
        return (self._neural(f"{book}/eps{cond.epsilon:g}", what),)


def spec_for(
    cond: Condition, files: tuple[Path, ...], mix_weight: float | None = None, ngram_kind: str = "kenlm-word"
) -> LMSpec | None:
    """The :class:`LMSpec` of resolved ``files`` (None for no LM); n-grams load as ``ngram_kind``."""
    if not files:
        return None
    kind = ngram_kind if cond.kind == "ngram" else "neural-onnx"
    if len(files) == 1:
        return LMSpec(((kind, str(files[0])),), shared=(cond.lm == "background",))
    if mix_weight is None or not 0.0 <= mix_weight <= 1.0:
        raise ConfigError(f"{cond.name}: expected a mixture weight in [0, 1], found {mix_weight}")
    return LMSpec(tuple((kind, str(f)) for f in files), (mix_weight, 1.0 - mix_weight), (False, True))


def neural_mix_weight(
    personal: Path,
    background: Path,
    sentences: Sequence[str],
    tokenizer: Any,
) -> float:
    """Weight of ``personal`` in the linear mixture with ``background`` that maximises the
    likelihood of ``sentences`` (EM over per-token probabilities, end of sentence included).

    The mixture is over the LMs' own pieces: LMs trained with another tokenizer than
    ``tokenizer`` (the acoustic model's) are fused word-synchronously, mixed per LM piece."""
    from userlibri.lm.base import load_lm
    from userlibri.lm.evaluate import em_weights
    from userlibri.lm.neural_word import NeuralWordScorer

    lms: list[Any] = [load_lm("neural-onnx", p, tokenizer) for p in (personal, background)]
    if isinstance(lms[0], NeuralWordScorer):
        tokenizer = lms[0].lm_tokenizer
        lms = [lm.components[0][0] if isinstance(lm, NeuralWordScorer) else lm for lm in lms]
    columns = []
    for lm in lms:
        probs: list[float] = []
        for s in sentences:
            state = lm.start_state()
            for t in tokenizer.encode(s):
                lp, state = lm.score(state, t)
                probs.append(lp)
            probs.append(lm.final_score(state))
            getattr(lm, "clear_cache", lambda: None)()
        columns.append(np.exp(np.array(probs, dtype=np.float64)))
    if not columns[0].size:
        raise UserLibriError(f"neural mixture weight of {personal}: expected held-out sentences, found none")
    w, _ = em_weights(np.stack(columns, axis=1))
    return float(w[0])
