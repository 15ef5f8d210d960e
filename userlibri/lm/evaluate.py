"""Word-level perplexity of LMs on held-out sentences, held-out splits, and mixture-weight tuning.

Perplexity is ``exp(-sum ln p / (words + sentences))``: every word and every end of sentence is
predicted, so n-gram (KenLM full-sentence scores, ``</s>`` included) and sub-word neural LMs
(sentence log-probability over its pieces, end symbol included) are comparable. Words outside an
n-gram's vocabulary are scored as ``<unk>`` (counted in ``oovs``; compare models on the same
text). Interpolated LMs: a word one component does not know gets probability 0 from it (the
convention :mod:`userlibri.lm.arpa_mix` uses), unless no component knows it, when every
component's ``<unk>`` probability is used.

Weight tuning is EM for a linear mixture (as SRILM's ``compute-best-mix``): the held-out
log-likelihood is concave in the weights, so EM converges to the optimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.lm.kenlm_scorer import LN10, load_kenlm

#: Every N-th sentence (the N-th, 2N-th, ...) of a user's text is held out.
DEFAULT_HELDOUT_EVERY = 10
#: A user LM needs at least this many training sentences (and one held-out sentence).
MIN_TRAIN_SENTENCES = 20
DEFAULT_EM_ITERATIONS = 200
DEFAULT_EM_TOLERANCE = 1e-9


@dataclass(frozen=True)
class HeldoutSplit:
    """A user's text split deterministically into training and held-out sentences."""

    train: list[str]
    heldout: list[str]
    every: int


def split_heldout(
    sentences: Sequence[str],
    every: int = DEFAULT_HELDOUT_EVERY,
    min_train: int = MIN_TRAIN_SENTENCES,
    what: str = "user text",
) -> HeldoutSplit:
    """Hold out sentences ``every-1, 2*every-1, ...`` (0-based); the rest is for training.

    Raises ``UserLibriError`` with the counts when the text is too small for both parts.
    """
    if every < 2:
        raise ConfigError(f"heldout_every: expected >= 2, found {every}")
    sents = [s.strip() for s in sentences if s.strip()]
    train = [s for i, s in enumerate(sents) if i % every != every - 1]
    heldout = [s for i, s in enumerate(sents) if i % every == every - 1]
    if len(train) < min_train or not heldout:
        raise UserLibriError(
            f"{what}: expected at least {min_train + (min_train + every - 2) // (every - 1)} non-empty "
            f"sentences ({min_train} to train on and >= 1 held out, every {every}th), found "
            f"{len(sents)} ({len(train)} training, {len(heldout)} held out)"
        )
    return HeldoutSplit(train, heldout, every)


@dataclass(frozen=True)
class Perplexity:
    """Word-level perplexity and what it was computed from (``logprob`` natural log)."""

    perplexity: float
    logprob: float
    words: int
    sentences: int
    oovs: int = 0

    @property
    def tokens(self) -> int:
        return self.words + self.sentences

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "oov_rate": self.oovs / max(self.words, 1)}


def perplexity_from_logprob(logprob: float, sentences: Sequence[str], oovs: int = 0) -> Perplexity:
    """Perplexity from a total natural-log probability of ``sentences``."""
    words = sum(len(s.split()) for s in sentences)
    n = len(sentences)
    if n == 0:
        raise UserLibriError("perplexity: expected some held-out sentences, found none")
    return Perplexity(math.exp(-logprob / (words + n)), logprob, words, n, oovs)


def _clean(sentences: Sequence[str]) -> list[str]:
    out = [" ".join(s.split()) for s in sentences]
    out = [s for s in out if s]
    if not out:
        raise UserLibriError("perplexity: expected some non-empty held-out sentences, found none")
    return out


def ngram_token_scores(model: Any, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per token (each word, then ``</s>``, sentence after sentence): KenLM log10 probability and
    whether the word is out of the model's vocabulary. ``model``: a path or a ``kenlm.Model``."""
    if isinstance(model, (str, Path)):
        model = load_kenlm(model)
    probs: list[float] = []
    oov: list[bool] = []
    for s in sentences:
        for prob, _length, is_oov in model.full_scores(s, bos=True, eos=True):
            probs.append(prob)
            oov.append(is_oov)
    return np.array(probs, dtype=np.float64), np.array(oov, dtype=bool)


def ngram_perplexity(model: Any, sentences: Sequence[str]) -> Perplexity:
    """Word-level perplexity of a KenLM model (binary or ARPA path, or ``kenlm.Model``)."""
    sents = _clean(sentences)
    log10p, oov = ngram_token_scores(model, sents)
    return perplexity_from_logprob(float(log10p.sum()) * LN10, sents, int(oov.sum()))


def mixture_token_probs(models: Sequence[Any], sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(T, M) per-token probabilities of each component, with the zero-outside-vocabulary rule,
    and the (T,) mask of tokens no component knows."""
    if len(models) < 2:
        raise ConfigError(f"a mixture needs at least 2 models, found {len(models)}")
    scores = [ngram_token_scores(m, sentences) for m in models]
    probs = np.stack([np.power(10.0, lp) for lp, _ in scores], axis=1)
    oov = np.stack([o for _, o in scores], axis=1)
    unknown_to_all = oov.all(axis=1)
    probs = np.where(oov & ~unknown_to_all[:, None], 0.0, probs)
    return probs, unknown_to_all


def _mixture_logprob(probs: np.ndarray, weights: Sequence[float]) -> float:
    mixed = probs @ np.asarray(weights, dtype=np.float64)
    if np.any(mixed <= 0):
        raise UserLibriError("mixture gives probability 0 to a held-out word; give every model weight > 0")
    return float(np.log(mixed).sum())


def mixture_perplexity(
    models: Sequence[Any], weights: Sequence[float], sentences: Sequence[str]
) -> Perplexity:
    """Perplexity of the exact linear mixture ``sum_i w_i P_i`` (a runtime interpolation)."""
    sents = _clean(sentences)
    probs, unknown = mixture_token_probs(models, sents)
    return perplexity_from_logprob(_mixture_logprob(probs, weights), sents, int(unknown.sum()))


@dataclass(frozen=True)
class TunedMixture:
    """Mixture weights that maximise held-out likelihood, and the resulting perplexity."""

    weights: tuple[float, ...]
    perplexity: Perplexity
    iterations: int


def em_weights(
    probs: np.ndarray,
    iterations: int = DEFAULT_EM_ITERATIONS,
    tol: float = DEFAULT_EM_TOLERANCE,
    init: Sequence[float] | None = None,
) -> tuple[np.ndarray, int]:
    """EM for mixture weights given (T, M) component probabilities of held-out tokens."""
    t, m = probs.shape
    if t == 0:
        raise UserLibriError("weight tuning: expected held-out tokens, found none")
    w = np.full(m, 1.0 / m) if init is None else np.asarray(init, dtype=np.float64)
    prev = -np.inf
    for it in range(1, iterations + 1):
        mixed = probs @ w
        ll = float(np.log(np.maximum(mixed, 1e-300)).sum())
        post = probs * w / np.maximum(mixed, 1e-300)[:, None]
        w = post.mean(axis=0)
        w = w / w.sum()
        if ll - prev < tol * t:
            return w, it
        prev = ll
    return w, iterations


def tune_mixture(
    models: Sequence[Any], sentences: Sequence[str], iterations: int = DEFAULT_EM_ITERATIONS
) -> TunedMixture:
    """Weights of ``models`` (paths or ``kenlm.Model``) minimising perplexity on ``sentences``."""
    sents = _clean(sentences)
    probs, unknown = mixture_token_probs(models, sents)
    w, its = em_weights(probs, iterations)
    ppl = perplexity_from_logprob(_mixture_logprob(probs, w), sents, int(unknown.sum()))
    return TunedMixture(tuple(float(x) for x in w), ppl, its)


def neural_perplexity(lm_path: str | Path, sentences: Sequence[str], tokenizer: Any = None) -> Perplexity:
    """Word-level perplexity of a neural LM through its ONNX step model (torch-free).

    ``lm_path``: a neural LM directory (``lm.onnx``) or the ``.onnx`` file; ``tokenizer``: a
    ``Tokenizer`` or its path (default: the one named in the directory's ``train.json``).
    """
    import json

    from userlibri.lm.onnx_lm import load_onnx_lm
    from userlibri.text.tokenizer import Tokenizer

    lm_path = Path(lm_path)
    if tokenizer is None:
        info = (lm_path if lm_path.is_dir() else lm_path.parent) / "train.json"
        if not info.is_file():
            raise UserLibriError(f"{lm_path}: no tokenizer given and no train.json naming one")
        tokenizer = json.loads(info.read_text(encoding="utf-8"))["tokenizer"]
    if not hasattr(tokenizer, "encode"):
        tokenizer = Tokenizer.load(tokenizer)
    lm = load_onnx_lm(lm_path, tokenizer)
    sents = _clean(sentences)
    total = 0.0
    for s in sents:
        total += lm.sentence_logprob(tokenizer.encode(s))
        lm.clear_cache()
    return perplexity_from_logprob(total, sents)


def read_sentences_file(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file (one sentence a line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, "a UTF-8 text file, one sentence a line", str(e)) from e
    return [line.strip() for line in text.splitlines() if line.strip()]
