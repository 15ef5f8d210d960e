"""A small LSTM language model over sentencepiece ids: background training, per-user fine-tuning
(plain or DP-SGD through Opacus), checkpoints and word-level perplexity. Training only (torch);
inference goes through the ONNX export (``lm/neural_export.py``) and ``lm/onnx_lm.py``.

A sentence is ``<sos/eos> t1 ... tn <sos/eos>``: the tokenizer's ``<sos/eos>`` id marks both ends
(the LM learns never to emit the blank id). Each sentence is one training example, so DP-SGD
protects sentences (see ``privacy/accounting.py`` for the unit of privacy and what it means for
UserLibri's shared books).

DP-SGD: Poisson sampling (Opacus' ``DPDataLoader``), per-example clipping of each sentence's
gradient (``lm/dp_lstm.py``: ghost/book-keeping clipping over an unrolled LSTM that uses
``nn.LSTM``'s own parameters, exact and ~1.5x a plain step instead of ~19x with Opacus'
``DPLSTM``), Gaussian noise (Opacus' ``DPOptimizerFastGradientClipping``). The noise multiplier
comes from our accountant (``noise_for_epsilon`` with PRV) or is given; the report carries every
accountant's epsilon plus Opacus' own running accountant as a cross-check.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.fsio import atomic_path
from userlibri.lm.neural_config import (  # noqa: F401 (re-exported)
    DEFAULT_CLIP,
    DEFAULT_EMBED_DIM,
    DEFAULT_HIDDEN_DIM,
    DEFAULT_MAX_TOKENS,
    DEFAULT_NUM_LAYERS,
    MIN_USER_SENTENCES,
    PERSONALIZE_TRAIN,
    NeuralLMConfig,
    PrivacyConfig,
    TrainConfig,
)
from userlibri.privacy import accounting
from userlibri.text.tokenizer import SOS_EOS_PIECE, Tokenizer

log = logging.getLogger(__name__)


_IGNORE = -100


class LstmLM(nn.Module):
    """Embedding -> LSTM -> (projection) -> logits. Shapes: tokens (B, T) -> logits (B, T, V);
    state ``(h, c)`` each (layers, B, hidden)."""

    def __init__(self, config: NeuralLMConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.drop = nn.Dropout(config.dropout)
        self.lstm: nn.Module = nn.LSTM(
            config.embed_dim,
            config.hidden_dim,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        out_dim = config.hidden_dim
        self.proj: nn.Module = nn.Identity()
        if config.tie_weights and config.hidden_dim != config.embed_dim:
            self.proj = nn.Linear(config.hidden_dim, config.embed_dim)
            out_dim = config.embed_dim
        elif config.tie_weights:
            out_dim = config.embed_dim
        self.out = nn.Linear(out_dim, config.vocab_size)
        if config.tie_weights:
            self.out.weight = self.embed.weight

    def forward(
        self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        y, new_state = self.lstm(self.drop(self.embed(tokens)), state)
        return self.out(self.proj(self.drop(y))), new_state

    def zero_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All-zero ``(h, c)`` for ``batch`` sequences."""
        shape = (self.config.num_layers, batch, self.config.hidden_dim)
        return torch.zeros(shape), torch.zeros(shape)


def num_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def sos_eos_id(tokenizer: Tokenizer) -> int:
    """The id marking sentence start and end (the tokenizer's ``<sos/eos>`` piece)."""
    try:
        return tokenizer.piece_to_id(SOS_EOS_PIECE)
    except KeyError:
        raise DataFormatError(tokenizer.path, f"a tokenizer with a {SOS_EOS_PIECE} piece", "none") from None


def default_config(tokenizer: Tokenizer, **overrides: Any) -> NeuralLMConfig:
    """An architecture sized for ``tokenizer``, with any field overridden."""
    cfg = NeuralLMConfig(
        vocab_size=tokenizer.vocab_size,
        sos_eos_id=sos_eos_id(tokenizer),
        tokenizer_id=tokenizer.model_id,
        **overrides,
    )
    cfg.validate()
    return cfg


def encode_sentences(
    sentences: Sequence[str], tokenizer: Tokenizer, max_tokens: int = DEFAULT_MAX_TOKENS
) -> list[list[int]]:
    """``[sos, ids..., eos]`` per non-empty sentence, truncated to ``max_tokens + 1`` ids
    (a truncated sentence keeps its start and loses its end symbol)."""
    sos = sos_eos_id(tokenizer)
    out = []
    for s in sentences:
        s = s.strip()
        if s:
            out.append(([sos, *tokenizer.encode(s), sos])[: max_tokens + 1])
    return out


class _Sentences(torch.utils.data.Dataset):
    """Fixed-shape items ``(index, ids padded to max_tokens + 1)`` (padding = -100), so Opacus'
    Poisson loader can build empty batches."""

    def __init__(self, encoded: list[list[int]], max_tokens: int) -> None:
        self.data = torch.full((len(encoded), max_tokens + 1), _IGNORE, dtype=torch.long)
        for i, ids in enumerate(encoded):
            self.data[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(i), self.data[i]


def _batch_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean over examples of each example's mean token NLL (one example = one sentence)."""
    width = int((batch != _IGNORE).sum(dim=1).max())
    batch = batch[:, :width]
    inputs = batch[:, :-1].clamp(min=0)
    targets = batch[:, 1:]
    logits, _ = model(inputs)
    nll = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=_IGNORE, reduction="none"
    ).view(targets.shape)
    mask = (targets != _IGNORE).float()
    per_example = (nll * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_example.mean()


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def _set_threads(config: TrainConfig) -> None:
    if config.threads > 0:
        torch.set_num_threads(config.threads)


def _check_sentences(encoded: list[list[int]], what: str, minimum: int) -> None:
    if len(encoded) < minimum:
        raise UserLibriError(f"{what}: expected at least {minimum} non-empty sentences, found {len(encoded)}")


def _train_plain(
    model: LstmLM, encoded: list[list[int]], config: TrainConfig, desc: str
) -> tuple[int, float]:
    """Adam over shuffled minibatches; returns (steps, seconds)."""
    gen = _seed_everything(config.seed)
    data = _Sentences(encoded, config.max_tokens)
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    total = max(1, math.ceil(config.epochs * len(loader)))
    model.train()
    steps, start = 0, time.perf_counter()
    with tqdm(total=total, desc=desc, disable=not config.progress, leave=False) as bar:
        while steps < total:
            for _, batch in loader:
                loss = _batch_loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if steps >= total:
                    break
    model.eval()
    return steps, time.perf_counter() - start


def train_background(
    sentences: Sequence[str],
    tokenizer: Tokenizer,
    model_config: NeuralLMConfig | None = None,
    train_config: TrainConfig = TrainConfig(),
) -> LstmLM:
    """Train a background LM from scratch on ``sentences`` (deterministic for a given seed)."""
    train_config.validate()
    _set_threads(train_config)
    model_config = model_config or default_config(tokenizer)
    _check_tokenizer(model_config, tokenizer)
    encoded = encode_sentences(sentences, tokenizer, train_config.max_tokens)
    _check_sentences(encoded, "background LM text", 1)
    _seed_everything(train_config.seed)
    model = LstmLM(model_config)
    steps, secs = _train_plain(model, encoded, train_config, "background LM")
    log.info(
        "background LM: %d params, %d sentences, %d steps in %.1f s",
        num_parameters(model),
        len(encoded),
        steps,
        secs,
    )
    return model


def _check_tokenizer(config: NeuralLMConfig, tokenizer: Tokenizer) -> None:
    if config.tokenizer_id and config.tokenizer_id != tokenizer.model_id:
        raise UserLibriError(
            f"tokenizer mismatch: the LM was built for tokenizer id {config.tokenizer_id[:16]}..., "
            f"but {tokenizer.path} has id {tokenizer.model_id[:16]}..."
        )
    if config.vocab_size != tokenizer.vocab_size:
        raise UserLibriError(
            f"vocabulary mismatch: the LM has {config.vocab_size} ids, "
            f"tokenizer {tokenizer.path} has {tokenizer.vocab_size}"
        )


def personalize(
    model: LstmLM,
    user_sentences: Sequence[str],
    tokenizer: Tokenizer,
    train_config: TrainConfig | None = None,
    privacy: PrivacyConfig | None = None,
) -> tuple[LstmLM, accounting.PrivacyReport]:
    """Fine-tune a copy of ``model`` on one user's sentences; returns it and its privacy report.

    Defaults: ``PERSONALIZE_TRAIN`` and no privacy."""
    train_config = train_config or PERSONALIZE_TRAIN
    privacy = privacy or PrivacyConfig()
    train_config.validate()
    privacy.validate()
    _set_threads(train_config)
    _check_tokenizer(model.config, tokenizer)
    encoded = encode_sentences(user_sentences, tokenizer, train_config.max_tokens)
    _check_sentences(encoded, "user LM text", MIN_USER_SENTENCES)
    model = copy.deepcopy(model)
    if privacy.mechanism == "none":
        steps, secs = _train_plain(model, encoded, train_config, "personalize")
        log.info("personalized (no DP): %d sentences, %d steps in %.1f s", len(encoded), steps, secs)
        return model, accounting.no_privacy_report(len(encoded), steps=steps, epochs=train_config.epochs)
    return _train_dp(model, encoded, train_config, privacy)


def _train_dp(
    model: LstmLM, encoded: list[list[int]], config: TrainConfig, privacy: PrivacyConfig
) -> tuple[LstmLM, accounting.PrivacyReport]:
    from opacus.accountants import create_accountant

    if model.config.tie_weights:
        raise ConfigError("DP-SGD with tie_weights is not supported; train the model untied")
    n = len(encoded)
    delta = privacy.delta if privacy.delta is not None else accounting.default_delta(n)
    accounting.check_delta(delta, n)
    sample_rate = min(1.0, config.batch_size / n)
    steps_per_epoch = max(1, round(1.0 / sample_rate))
    steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    if privacy.noise_multiplier is not None:
        sigma = float(privacy.noise_multiplier)
    else:
        sigma = accounting.noise_for_epsilon(
            float(privacy.target_epsilon),
            sample_rate,
            steps,
            delta,
            privacy.accountant,  # type: ignore[arg-type]
        )
    if sigma == 0:
        raise ConfigError("noise_multiplier 0 gives no privacy (epsilon is infinite); use privacy 'none'")
    log.info(
        "DP-SGD: n=%d q=%.4g steps=%d sigma=%.4g clip=%g delta=%g",
        n,
        sample_rate,
        steps,
        sigma,
        privacy.clip,
        delta,
    )

    _seed_everything(config.seed)
    ratios = np.full(n, -1.0) if privacy.individual else None  # -1: never sampled
    opacus_accountant = create_accountant("prv")
    start = time.perf_counter()
    done = dp_sgd_steps(
        model,
        _Sentences(encoded, config.max_tokens),
        torch.optim.Adam(model.parameters(), lr=config.lr),
        steps=steps,
        sample_rate=sample_rate,
        noise_multiplier=sigma,
        clip=privacy.clip,
        seed=config.seed,
        ratios=ratios,
        step_hook=opacus_accountant.get_optimizer_hook_fn(sample_rate=sample_rate),
        progress=config.progress,
    )
    secs = time.perf_counter() - start
    opacus_eps = float(opacus_accountant.get_epsilon(delta=delta))
    individual = None
    if ratios is not None:
        # An example never sampled could have been: account for it at the clip bound (worst case).
        ratios[ratios < 0] = 1.0
        eps_i = accounting.individual_epsilons(ratios, sigma, sample_rate, steps, delta)
        individual = accounting.summarize_individual(eps_i)
    report = accounting.dp_sgd_report(
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=done,
        clip_norm=privacy.clip,
        delta=delta,
        dataset_size=n,
        epochs=config.epochs,
        target_epsilon=privacy.target_epsilon,
        accountant=privacy.accountant,
        individual=individual,
    )
    gap = abs(opacus_eps - report.epsilon["prv"]) / max(report.epsilon["prv"], 1e-12)
    if gap > accounting.CROSS_CHECK_RTOL:
        log.warning(
            "Opacus' running PRV accountant says eps %.4g, ours %.4g", opacus_eps, report.epsilon["prv"]
        )
    log.info(
        "personalized (DP-SGD): %d steps in %.1f s, eps %.3g at delta %g (%s)",
        done,
        secs,
        report.epsilon_value,
        delta,
        privacy.accountant,
    )
    return model, report


def dp_sgd_steps(
    model: LstmLM,
    data: torch.utils.data.Dataset,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    sample_rate: float,
    noise_multiplier: float,
    clip: float,
    seed: int,
    ratios: np.ndarray | None = None,
    step_hook: Any = None,
    progress: bool = False,
) -> int:
    """Run ``steps`` DP-SGD steps on ``model`` in place; returns the steps taken.

    Each step: a Poisson batch at ``sample_rate`` (Opacus' ``DPDataLoader``, seeded by ``seed``;
    empty batches count), the sum of per-example gradients clipped to ``clip`` (``dp_lstm``),
    Gaussian noise of std ``noise_multiplier * clip`` and division by the expected batch size
    (Opacus' ``DPOptimizerFastGradientClipping`` around ``optimizer``; noise seeded by ``seed + 1``).
    ``ratios`` (one per example) keeps each example's largest clipped-norm / clip ratio;
    ``step_hook(optimizer)`` runs after each noisy step (an Opacus accountant's hook)."""
    from opacus.data_loader import DPDataLoader
    from opacus.optimizers import DPOptimizerFastGradientClipping

    from userlibri.lm.dp_lstm import clipped_gradients

    n = len(data)  # type: ignore[arg-type]
    loader = DPDataLoader(data, sample_rate=sample_rate, generator=torch.Generator().manual_seed(seed))
    opt = DPOptimizerFastGradientClipping(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=clip,
        expected_batch_size=sample_rate * n,
        loss_reduction="mean",
        generator=torch.Generator().manual_seed(seed + 1),
    )
    if step_hook is not None:
        opt.attach_step_hook(step_hook)
    model.train()
    done = 0
    with tqdm(total=steps, desc="personalize (DP-SGD)", disable=not progress, leave=False) as bar:
        while done < steps:
            for idx, batch in loader:
                opt.zero_grad(set_to_none=True)
                norms, losses = clipped_gradients(model, batch, clip)
                if ratios is not None and len(batch):
                    i = idx.numpy()
                    ratios[i] = np.maximum(ratios[i], (norms / clip).clamp(max=1.0).numpy())
                opt.step()
                if len(batch):
                    bar.set_postfix(loss=f"{losses.mean().item():.3f}")
                done += 1
                bar.update(1)
                if done >= steps:
                    break
    model.eval()
    return done


@torch.no_grad()
def sentence_logprobs(model: LstmLM, sentences: Sequence[str], tokenizer: Tokenizer) -> list[float]:
    """Natural-log probability of each sentence, ``<sos/eos>`` end included."""
    model.eval()
    out = []
    for ids in encode_sentences(sentences, tokenizer, max_tokens=10**6):
        x = torch.tensor(ids, dtype=torch.long)[None]
        logits, _ = model(x[:, :-1])
        lp = torch.log_softmax(logits, dim=-1)[0].gather(1, x[0, 1:, None]).sum()
        out.append(float(lp))
    return out


@torch.no_grad()
def evaluate_perplexity(model: LstmLM, sentences: Sequence[str], tokenizer: Tokenizer) -> float:
    """Word-level perplexity: exp(total token NLL / (words + sentence ends)), comparable across
    tokenisations (and with word n-gram LMs)."""
    sents = [s for s in (x.strip() for x in sentences) if s]
    if not sents:
        raise UserLibriError("perplexity: expected some sentences, found none")
    total = -sum(sentence_logprobs(model, sents, tokenizer))
    words = sum(len(s.split()) + 1 for s in sents)
    return math.exp(total / words)


def save_checkpoint(model: LstmLM, path: str | Path, report: accounting.PrivacyReport | None = None) -> None:
    """``torch.save`` of the state_dict, the architecture config and the privacy report, atomically."""
    payload = {
        "config": dataclasses.asdict(model.config),
        "state_dict": model.state_dict(),
        "privacy": report.to_dict() if report is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> tuple[LstmLM, accounting.PrivacyReport | None]:
    """Load a checkpoint written by ``save_checkpoint``."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        config = NeuralLMConfig(**payload["config"])
    except (OSError, RuntimeError, KeyError, TypeError, EOFError) as e:
        raise DataFormatError(
            path, "a neural LM checkpoint (torch.save of config + state_dict)", str(e)
        ) from e
    model = LstmLM(config)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    report = payload.get("privacy")
    return model, accounting.PrivacyReport.from_dict(report, str(path)) if report else None
