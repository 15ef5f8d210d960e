"""A DP word n-gram LM by post-processing a DP neural LM: sample sentences from it, count them.

Suresh et al. 2022 ("Private n-gram LMs via sampling a DP neural LM"): an LSTM fine-tuned with
DP-SGD is (epsilon, delta)-DP, and anything computed from it alone (here: sentences sampled from
it, the n-gram estimated on them, its mixture with a public background n-gram at a fixed weight) is
too, with the same epsilon and delta. The user's text is never read, so nothing here spends
privacy. Tuning the mixture weight on the user's held-out text would; the weight is therefore fixed.

Output (``out_dir``, written atomically)::

    samples.txt                  the sampled sentences (post-processing of the DP LM: as private)
    ngram.{arpa,bin,json}        word n-gram on the samples
    mix.{arpa,bin} mix.json      + public background n-gram at a fixed weight (with --background)
    privacy.json                 the neural LM's report, with a post-processing note
    sampled.json                 sampling config, counts, timings
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from userlibri.constants import DEFAULT_SEED
from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.fsio import atomic_path, write_json_atomic, write_text_atomic
from userlibri.lm.arpa_mix import mix_arpa_files
from userlibri.lm.neural_config import DEFAULT_MAX_TOKENS
from userlibri.lm.ngram import DEFAULT_NGRAM_ORDER, NgramConfig, train_ngram
from userlibri.lm.onnx_lm import DEFAULT_CACHE_SIZE, OnnxNeuralLM
from userlibri.text.tokenizer import WORD_BOUNDARY, Tokenizer

log = logging.getLogger(__name__)

#: Sentences sampled per book: one book builds in well under a minute on one core.
DEFAULT_SAMPLED_SENTENCES = 20000
#: Sentences sampled together (one session call per token position); at most half the LM cache.
DEFAULT_SAMPLE_BATCH = 256
#: Weight of the sampled n-gram in its mixture with the background: fixed, never tuned on a user's
#: text (that would spend privacy). Chosen on the demo's dev user (book 161, DP-SGD at epsilon 8):
#: the EM-optimal weight on its held-out text was 0.19 (perplexity 358; 0.5 gave 380); the test
#: books 105 and 1342 measured 0.16-0.19 afterwards.
DEFAULT_MIX_WEIGHT = 0.2
NEURAL_FILES = ("lm.onnx", "lm.int8.onnx")
SAMPLES_FILE = "samples.txt"
NGRAM_NAME = "ngram"
MIX_NAME = "mix"
POST_PROCESSING_NOTE = (
    "This word n-gram LM is a post-processing of the DP neural LM above: it was estimated only on "
    "sentences sampled from that model (and mixed, at a fixed weight, with an n-gram of public "
    "background text), never on the user's text, so it has the same (epsilon, delta) guarantee for "
    "the same unit of privacy."
)


@dataclass(frozen=True)
class SampleStats:
    """What one sampling run produced."""

    requested: int
    kept: int
    empty: int
    truncated: int
    tokens: int
    seconds: float

    @property
    def sentences_per_second(self) -> float:
        return self.requested / self.seconds if self.seconds > 0 else math.inf


@dataclass(frozen=True)
class SampledNgramConfig:
    """How sentences are sampled and the n-gram estimated."""

    sentences: int = DEFAULT_SAMPLED_SENTENCES
    order: int = DEFAULT_NGRAM_ORDER
    seed: int = DEFAULT_SEED
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    batch: int = DEFAULT_SAMPLE_BATCH
    mix_weight: float = DEFAULT_MIX_WEIGHT
    #: Keep samples cut at ``max_tokens`` (without their last word), as training keeps long sentences' starts.
    keep_truncated: bool = True
    #: Which ONNX file of the neural LM directory: ``float`` (lm.onnx) or ``int8`` (lm.int8.onnx).
    precision: str = "float"

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible values."""
        _check_sampling(self.sentences, self.max_tokens, self.temperature, self.batch)
        if not 0.0 < self.mix_weight <= 1.0:
            raise ConfigError(f"mix_weight: expected in (0, 1], found {self.mix_weight}")
        if self.precision not in ("float", "int8"):
            raise ConfigError(f"precision: expected 'float' or 'int8', found {self.precision!r}")
        NgramConfig(order=self.order).validate()


def _check_sampling(n: int, max_tokens: int, temperature: float, batch: int) -> None:
    if n < 1:
        raise ConfigError(f"sentences: expected >= 1, found {n}")
    if max_tokens < 1:
        raise ConfigError(f"max_tokens: expected >= 1, found {max_tokens}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature: expected a finite value > 0, found {temperature}")
    if batch < 1:
        raise ConfigError(f"batch: expected >= 1, found {batch}")


def _banned_ids(lm: OnnxNeuralLM, tokenizer: Tokenizer) -> list[int]:
    """Ids never sampled: ``<unk>`` (decodes to a non-word) and the blank, unless either is the end."""
    ids = {tokenizer.unk_id, tokenizer.blank_id, lm.meta.sos_id}
    return sorted(i for i in ids if 0 <= i < lm.meta.vocab_size and i != lm.meta.eos_id)


def _without_last_word(ids: tuple[int, ...], word_start: np.ndarray) -> tuple[int, ...]:
    """``ids`` up to (not including) the piece that starts their last word."""
    starts = [k for k, t in enumerate(ids) if word_start[t]]
    return ids[: starts[-1]] if starts else ()


def sample_sentences(
    lm: OnnxNeuralLM,
    tokenizer: Tokenizer,
    n: int,
    seed: int = DEFAULT_SEED,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 1.0,
    batch: int = DEFAULT_SAMPLE_BATCH,
    keep_truncated: bool = True,
    progress: bool = True,
) -> tuple[list[str], SampleStats]:
    """Draw ``n`` sentences by ancestral sampling from ``lm`` (deterministic for ``seed``, ``batch``).

    Each sentence starts after ``<sos/eos>`` and ends when ``lm.meta.eos_id`` is drawn; ``<unk>``
    and the blank are never drawn. A sentence still running after ``max_tokens`` tokens (the
    training length: training truncates longer sentences, ~20-30% of a book's, so the LM never
    learnt to end them) is counted as truncated and, with ``keep_truncated``, kept without its
    last word (which may be cut mid-word), as training kept their starts; else dropped. Sentences
    that decode to nothing are dropped. ``temperature`` scales the log-probabilities
    (1: the model's own distribution). Sentences are sampled ``batch`` at a time, one batched
    ``next_logprobs`` call per token position; ``batch`` should be at most half the LM's cache
    size, or evicted prefixes are recomputed. Returns the kept sentences and counts.
    """
    _check_sampling(n, max_tokens, temperature, batch)
    lm.check_tokenizer(tokenizer)
    rng = np.random.default_rng(seed)
    banned = _banned_ids(lm, tokenizer)
    word_start = np.array([p.startswith(WORD_BOUNDARY) for p in tokenizer.pieces], dtype=bool)
    eos = lm.meta.eos_id
    kept: list[str] = []
    empty = truncated = tokens = 0
    start = time.perf_counter()
    with tqdm(total=n, desc="sampling", unit="sent", disable=not progress) as bar:
        for first in range(0, n, batch):
            size = min(batch, n - first)
            states: list[tuple[int, ...]] = [()] * size
            done: list[tuple[int, ...] | None] = [None] * size
            active = list(range(size))
            for _ in range(max_tokens + 1):
                if not active:
                    break
                logits = lm.next_logprobs([states[i] for i in active]).astype(np.float64) / temperature
                logits[:, banned] = -np.inf
                logits -= logits.max(axis=1, keepdims=True)
                cdf = np.cumsum(np.exp(logits), axis=1)
                u = rng.random(len(active)) * cdf[:, -1]
                picks = np.minimum((cdf < u[:, None]).sum(axis=1), cdf.shape[1] - 1)
                still = []
                for i, t in zip(active, picks.tolist(), strict=True):
                    if t == eos:
                        done[i] = states[i]
                    elif len(states[i]) < max_tokens:
                        states[i] = (*states[i], t)
                        still.append(i)
                    else:
                        truncated += 1
                        done[i] = _without_last_word(states[i], word_start) if keep_truncated else None
                active = still
            lm.clear_cache()
            for ids in done:
                if ids is None:
                    continue
                text = tokenizer.decode(ids)
                if text:
                    kept.append(text)
                    tokens += len(ids)
                else:
                    empty += 1
            bar.update(size)
    stats = SampleStats(n, len(kept), empty, truncated, tokens, time.perf_counter() - start)
    log.info(
        "sampled %d sentences (%d kept, %d truncated, %d empty) in %.1f s (%.0f sentences/s)",
        n,
        len(kept),
        truncated,
        empty,
        stats.seconds,
        stats.sentences_per_second,
    )
    return kept, stats


def neural_model_file(neural_dir: str | Path, precision: str = "float") -> Path:
    """The ONNX file of a neural LM directory: ``lm.onnx`` (float) or ``lm.int8.onnx`` (int8),
    the other one when the preferred one is absent."""
    neural_dir = Path(neural_dir)
    names = NEURAL_FILES if precision == "float" else tuple(reversed(NEURAL_FILES))
    for name in names:
        if (neural_dir / name).is_file():
            return neural_dir / name
    found = sorted(p.name for p in neural_dir.iterdir()) if neural_dir.is_dir() else "no such directory"
    raise DataFormatError(neural_dir, f"a neural LM directory with {' or '.join(NEURAL_FILES)}", str(found))


def _privacy(neural_dir: Path, model_file: Path, lm: OnnxNeuralLM) -> dict[str, Any]:
    """The source LM's privacy report (its ``privacy.json``, else the ONNX metadata) plus the note."""
    path = neural_dir / "privacy.json"
    if path.is_file():
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataFormatError(path, "JSON", f"invalid JSON ({e.msg})", line=e.lineno) from e
        source_name = str(path)
    elif lm.meta.privacy is not None:
        source, source_name = dict(lm.meta.privacy), f"{model_file} (ONNX metadata)"
    else:
        raise DataFormatError(neural_dir, "privacy.json (or privacy in the ONNX metadata)", "neither")
    if not isinstance(source, dict) or "mechanism" not in source:
        raise DataFormatError(source_name, "a privacy report with a mechanism", repr(source)[:80])
    if source["mechanism"] == "none":
        log.warning("%s: the neural LM has no DP guarantee, so neither has its sampled n-gram", source_name)
    note = source.get("note", "")
    return {
        **source,
        "note": f"{note} {POST_PROCESSING_NOTE}".strip(),
        "model": "word n-gram estimated on sentences sampled from a neural LM (post-processing)",
        "post_processing_of": source_name,
    }


def build_sampled_ngram(
    neural_dir: str | Path,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    sentences: int = DEFAULT_SAMPLED_SENTENCES,
    order: int = DEFAULT_NGRAM_ORDER,
    seed: int = DEFAULT_SEED,
    background: str | Path | None = None,
    mix_weight: float = DEFAULT_MIX_WEIGHT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 1.0,
    batch: int = DEFAULT_SAMPLE_BATCH,
    keep_truncated: bool = True,
    precision: str = "float",
    progress: bool = True,
) -> dict[str, Any]:
    """Sample ``sentences`` from the neural LM in ``neural_dir``, estimate a word n-gram on them
    and, with a public ``background`` ARPA, mix them at ``mix_weight``; writes ``out_dir`` (see the
    module docstring) atomically and returns ``sampled.json``'s content."""
    config = SampledNgramConfig(
        sentences, order, seed, max_tokens, temperature, batch, mix_weight, keep_truncated, precision
    )
    config.validate()
    neural_dir, out_dir = Path(neural_dir), Path(out_dir)
    background = Path(background) if background is not None else None
    if background is not None and not background.is_file():
        raise DataFormatError(background, "a background n-gram ARPA file", "no such file")
    model_file = neural_model_file(neural_dir, precision)
    tok = Tokenizer.load(tokenizer_path)
    lm = OnnxNeuralLM(model_file, tok, cache_size=max(DEFAULT_CACHE_SIZE, 2 * batch))
    privacy = _privacy(neural_dir, model_file, lm)
    start = time.perf_counter()
    samples, stats = sample_sentences(
        lm, tok, sentences, seed, max_tokens, temperature, batch, keep_truncated, progress
    )
    if not samples:
        raise UserLibriError(
            f"{model_file}: expected some complete sentences among {sentences} samples, found none "
            f"({stats.truncated} ran past {max_tokens} tokens, {stats.empty} were empty)"
        )
    info: dict[str, Any] = {
        "kind": "sampled-ngram",
        "neural_lm": str(model_file),
        "tokenizer": str(tok.path),
        "tokenizer_id": tok.model_id,
        "config": dataclasses.asdict(config),
        "banned_ids": _banned_ids(lm, tok),
        "sampled": dataclasses.asdict(stats),
        "sentences_per_second": stats.sentences_per_second,
        "words": sum(len(s.split()) for s in samples),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_text_atomic(tmp / SAMPLES_FILE, "\n".join(samples) + "\n")
        t0 = time.perf_counter()
        ngram = train_ngram(samples, tmp, NgramConfig(order=order), name=NGRAM_NAME)
        info["counts"] = {"sampled": list(ngram.counts)}
        info["seconds"] = {"sampling": stats.seconds, "ngram": time.perf_counter() - t0}
        if background is not None:
            t0 = time.perf_counter()
            mixed = mix_arpa_files(
                [ngram.arpa, background],
                (mix_weight, 1.0 - mix_weight),
                tmp / f"{MIX_NAME}.arpa",
                tmp / f"{MIX_NAME}.bin",
            )
            info["counts"]["mix"] = list(mixed.counts)
            info["seconds"]["mix"] = time.perf_counter() - t0
            write_json_atomic(
                tmp / f"{MIX_NAME}.json",
                {
                    "kind": "kenlm-word",
                    "models": [f"{NGRAM_NAME}.arpa", str(background)],
                    "weights": list(mixed.weights),
                    "weight_user": mixed.weights[0],
                    "tuned_on": "not tuned: a fixed weight (tuning it on the user's held-out text "
                    "would spend privacy); the background n-gram is public text",
                    "counts": {"sampled": list(ngram.counts), "mix": list(mixed.counts)},
                },
            )
        info["seconds"]["total"] = time.perf_counter() - start
        write_json_atomic(tmp / "privacy.json", privacy)
        write_json_atomic(tmp / "sampled.json", info)
    log.info(
        "sampled n-gram -> %s: %d sentences kept of %d, counts %s (%.1f s)",
        out_dir,
        stats.kept,
        sentences,
        info["counts"],
        info["seconds"]["total"],
    )
    return info
