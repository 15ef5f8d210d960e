"""Memorisation audit: the "secret sharer" exposure of Carlini et al. (2019).

Random canaries of a fixed format ("MY PIN IS <digit> x 6", digits as words, the way normalised
text spells them) are inserted into a user's text, each repeated 1, 4, 16, ... times; an LM is
trained on that text, and every canary's log-probability is ranked against ``candidates`` random
fillings of the same format that were never inserted. With ``R`` the candidates plus the canary:

    exposure = log2 |R| - log2 rank          (rank 1 = the LM prefers the canary to every candidate)

so a canary the LM has memorised reaches ``log2 |R|`` and one it has not sits around 1 bit. The
*extrapolated* exposure fits a skew-normal to the candidates' log-probabilities and reads the
canary's tail probability from it, ``-log2 P(score >= canary score)``: an estimate against the
whole format space (10^6 here) rather than the sample (the paper's approach).

LMs audited: the n-gram (lmplz, no DP), the neural LM fine-tuned without privacy and with DP-SGD
(through ``userlibri.lm.neural``). Everything is seeded: the same config gives the same canaries,
insertion points, candidates and models.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.constants import DEFAULT_SEED
from userlibri.errors import ConfigError, UserLibriError
from userlibri.fsio import write_json_atomic

log = logging.getLogger(__name__)

DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
DEFAULT_PREFIX = ("MY", "PIN", "IS")
DEFAULT_REPETITIONS = (1, 4, 16)
DEFAULT_CANDIDATES = 10_000
#: Fewer candidates than this give a coarse exposure (max log2(n+1) bits); allowed for tests.
RECOMMENDED_CANDIDATES = 10_000
AUDIT_KINDS = ("ngram", "neural", "neural-dp")

#: A scorer: natural-log probabilities of whole sentences (end of sentence included).
Scorer = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class AuditConfig:
    """Canary format, repetition counts and the candidate sample."""

    prefix: tuple[str, ...] = DEFAULT_PREFIX
    slots: int = 6
    repetitions: tuple[int, ...] = DEFAULT_REPETITIONS
    canaries_per_repetition: int = 2
    candidates: int = DEFAULT_CANDIDATES
    seed: int = DEFAULT_SEED

    @property
    def space_size(self) -> int:
        return 10**self.slots

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible values."""
        if not 1 <= self.slots <= 18:
            raise ConfigError(f"slots: expected 1..18 digits, found {self.slots}")
        if not self.repetitions or min(self.repetitions) < 1:
            raise ConfigError(f"repetitions: expected counts >= 1, found {list(self.repetitions)}")
        if self.canaries_per_repetition < 1:
            raise ConfigError(f"canaries_per_repetition: expected >= 1, found {self.canaries_per_repetition}")
        n_canaries = len(self.repetitions) * self.canaries_per_repetition
        if not 100 <= self.candidates <= self.space_size - n_canaries:
            raise ConfigError(
                f"candidates: expected 100..{self.space_size - n_canaries} (the format has "
                f"{self.space_size} fillings, {n_canaries} of them canaries), found {self.candidates}"
            )


@dataclass(frozen=True)
class Canary:
    """One inserted secret."""

    text: str
    code: int
    repetitions: int


def render(config: AuditConfig, code: int) -> str:
    """The sentence of format filling ``code`` (0 <= code < 10**slots)."""
    digits = str(code).zfill(config.slots)
    return " ".join((*config.prefix, *(DIGIT_WORDS[int(d)] for d in digits)))


def make_canaries(config: AuditConfig) -> list[Canary]:
    """``canaries_per_repetition`` distinct random canaries per repetition count (seeded)."""
    config.validate()
    rng = np.random.default_rng([config.seed, 1])
    n = len(config.repetitions) * config.canaries_per_repetition
    codes = rng.choice(config.space_size, size=n, replace=False)
    reps = [r for r in config.repetitions for _ in range(config.canaries_per_repetition)]
    return [Canary(render(config, int(c)), int(c), r) for c, r in zip(codes, reps, strict=True)]


def insert_canaries(
    sentences: Sequence[str], canaries: Sequence[Canary], seed: int = DEFAULT_SEED
) -> list[str]:
    """``sentences`` with each canary inserted ``repetitions`` times at seeded random positions."""
    out = list(sentences)
    rng = np.random.default_rng([seed, 2])
    for c in canaries:
        for _ in range(c.repetitions):
            out.insert(int(rng.integers(0, len(out) + 1)), c.text)
    return out


def sample_candidates(config: AuditConfig, exclude: Sequence[int]) -> list[str]:
    """``config.candidates`` distinct random fillings of the format, none of them a canary."""
    rng = np.random.default_rng([config.seed, 3])
    banned = set(int(x) for x in exclude)
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < config.candidates:
        for c in rng.integers(0, config.space_size, size=2 * config.candidates).tolist():
            if c not in banned and c not in seen:
                seen.add(c)
                chosen.append(c)
                if len(chosen) == config.candidates:
                    break
    return [render(config, c) for c in chosen]


@dataclass(frozen=True)
class Exposure:
    """A canary's rank among the candidates and its exposures (bits)."""

    rank: int
    exposure: float
    max_exposure: float
    extrapolated: float | None


def exposure(canary_score: float, candidate_scores: np.ndarray, extrapolate: bool = True) -> Exposure:
    """Rank (1 + candidates scoring strictly higher) and exposure of one canary; with
    ``extrapolate`` also the skew-normal tail estimate."""
    scores = np.asarray(candidate_scores, dtype=np.float64)
    rank = 1 + int(np.sum(scores > canary_score))
    size = len(scores) + 1
    extra = None
    if extrapolate and np.ptp(scores) > 0:
        from scipy import stats

        a, loc, scale = stats.skewnorm.fit(scores)
        extra = float(-stats.skewnorm.logsf(canary_score, a, loc, scale) / math.log(2.0))
    return Exposure(rank, math.log2(size) - math.log2(rank), math.log2(size), extra)


# ---------------------------------------------------------------------------------------------
# Scorers


def kenlm_scorer(model_path: str | Path) -> Scorer:
    """Sentence log-probabilities (natural log) from a KenLM model."""
    from userlibri.lm.kenlm_scorer import LN10, load_kenlm

    model = load_kenlm(model_path)

    def score(sentences: Sequence[str]) -> np.ndarray:
        return np.array([model.score(s, bos=True, eos=True) * LN10 for s in sentences])

    return score


def torch_scorer(model: Any, tokenizer: Any, batch_size: int = 1024) -> Scorer:
    """Sentence log-probabilities from a ``userlibri.lm.neural.LstmLM``, batched."""
    import torch

    from userlibri.lm.neural import encode_sentences

    def score(sentences: Sequence[str]) -> np.ndarray:
        encoded = encode_sentences(sentences, tokenizer, max_tokens=10**6)
        if len(encoded) != len(sentences):
            raise UserLibriError("neural scorer: every sentence must be non-empty")
        out = np.empty(len(encoded))
        model.eval()
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start : start + batch_size]
                width = max(len(x) for x in chunk)
                ids = torch.zeros((len(chunk), width), dtype=torch.long)
                mask = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
                for i, x in enumerate(chunk):
                    ids[i, : len(x)] = torch.tensor(x)
                    mask[i, : len(x) - 1] = True
                logits, _ = model(ids[:, :-1])
                lp = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:, None])[..., 0]
                out[start : start + len(chunk)] = (lp * mask).sum(dim=1).double().numpy()
        return out

    return score


# ---------------------------------------------------------------------------------------------
# The audit


@dataclass(frozen=True)
class NeuralAuditSetup:
    """What the neural audits fine-tune: a background LM, its tokenizer, training and DP settings."""

    background: Any  # userlibri.lm.neural.LstmLM
    tokenizer: Any  # userlibri.text.tokenizer.Tokenizer
    train: Any = None  # userlibri.lm.neural_config.TrainConfig; default PERSONALIZE_TRAIN
    dp: Any = None  # userlibri.lm.neural_config.PrivacyConfig with mechanism "dp-sgd"


@dataclass
class KindResult:
    """One audited LM: per-canary exposures and their mean per repetition count."""

    kind: str
    canaries: list[dict[str, Any]] = field(default_factory=list)
    by_repetition: dict[str, dict[str, float]] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    seconds: float = 0.0


def score_canaries(
    kind: str, scorer: Scorer, canaries: Sequence[Canary], candidates: Sequence[str]
) -> KindResult:
    """Exposure of every canary against the same candidates."""
    cand = scorer(candidates)
    own = scorer([c.text for c in canaries])
    result = KindResult(kind)
    for c, s in zip(canaries, own, strict=True):
        e = exposure(float(s), cand)
        result.canaries.append(
            {"text": c.text, "repetitions": c.repetitions, "logprob": float(s), **asdict(e)}
        )
    for r in sorted({c.repetitions for c in canaries}):
        rows = [x for x in result.canaries if x["repetitions"] == r]
        ext = [x["extrapolated"] for x in rows if x["extrapolated"] is not None]
        result.by_repetition[str(r)] = {
            "mean_exposure": float(np.mean([x["exposure"] for x in rows])),
            "min_rank": float(min(x["rank"] for x in rows)),
            "mean_extrapolated": float(np.mean(ext)) if ext else float("nan"),
        }
    return result


def _train_kind(
    kind: str, text: list[str], neural: NeuralAuditSetup | None, workdir: Path
) -> tuple[Scorer, dict[str, Any] | None]:
    if kind == "ngram":
        from userlibri.lm.ngram import NgramConfig, train_ngram

        model = train_ngram(text, workdir, NgramConfig(), name="audit")
        return kenlm_scorer(model.binary), {"mechanism": "none", "note": "n-gram counts: no DP guarantee"}
    if neural is None:
        raise ConfigError(f"audit kind {kind!r} needs a background neural LM and its tokenizer")
    from userlibri.lm import neural as nn_lm

    if kind == "neural":
        privacy = nn_lm.PrivacyConfig()
    else:
        if neural.dp is None or neural.dp.mechanism != "dp-sgd":
            raise ConfigError("audit kind 'neural-dp' needs a PrivacyConfig with mechanism 'dp-sgd'")
        privacy = neural.dp
    model, report = nn_lm.personalize(neural.background, text, neural.tokenizer, neural.train, privacy)
    return torch_scorer(model, neural.tokenizer), report.to_dict()


def run_audit(
    sentences: Sequence[str],
    kinds: Sequence[str] = ("ngram",),
    config: AuditConfig = AuditConfig(),
    neural: NeuralAuditSetup | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Insert canaries into ``sentences``, train each kind of LM, report exposures.

    Returns (and writes to ``out``, a JSON path, atomically) the canaries, candidates count and
    per kind the per-canary exposures and their means per repetition count.
    """
    config.validate()
    unknown = [k for k in kinds if k not in AUDIT_KINDS]
    if unknown or not kinds:
        raise ConfigError(f"audit kinds: expected some of {list(AUDIT_KINDS)}, found {list(kinds)}")
    sents = [s.strip() for s in sentences if s.strip()]
    if not sents:
        raise UserLibriError("audit: expected user text, found 0 non-empty sentences")
    if config.candidates < RECOMMENDED_CANDIDATES:
        log.warning(
            "audit with %d candidates: exposure is capped at %.1f bits (use >= %d)",
            config.candidates,
            math.log2(config.candidates + 1),
            RECOMMENDED_CANDIDATES,
        )
    canaries = make_canaries(config)
    text = insert_canaries(sents, canaries, config.seed)
    candidates = sample_candidates(config, [c.code for c in canaries])
    results = []
    with tempfile.TemporaryDirectory(prefix="userlibri-audit.") as tmp:
        for kind in kinds:
            start = time.perf_counter()
            scorer, privacy = _train_kind(kind, text, neural, Path(tmp))
            res = score_canaries(kind, scorer, canaries, candidates)
            res.privacy = privacy
            res.seconds = time.perf_counter() - start
            results.append(res)
            log.info(
                "audit %s: mean exposure by repetitions %s (max %.1f bits)",
                kind,
                {r: round(v["mean_exposure"], 2) for r, v in res.by_repetition.items()},
                math.log2(config.candidates + 1),
            )
    report = {
        "method": "secret sharer exposure (Carlini et al. 2019): log2|R| - log2 rank among random candidates",
        "config": {**asdict(config), "prefix": list(config.prefix), "repetitions": list(config.repetitions)},
        "format": " ".join(config.prefix) + " " + " ".join(["<digit>"] * config.slots),
        "user_sentences": len(sents),
        "inserted_sentences": len(text) - len(sents),
        "max_exposure": math.log2(config.candidates + 1),
        "results": {r.kind: asdict(r) for r in results},
    }
    if out is not None:
        write_json_atomic(out, report)
    return report
