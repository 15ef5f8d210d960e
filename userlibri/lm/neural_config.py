"""Torch-free configuration of the neural LM (sizes, training, privacy), so that the CLI and
metadata readers can use it without importing torch."""

from __future__ import annotations

import dataclasses
from typing import Literal

from userlibri.constants import DEFAULT_SEED
from userlibri.errors import ConfigError
from userlibri.privacy import accounting

DEFAULT_EMBED_DIM = 128
DEFAULT_HIDDEN_DIM = 384
DEFAULT_NUM_LAYERS = 1
DEFAULT_MAX_TOKENS = 64
DEFAULT_CLIP = 1.0
#: Fewer user sentences than this cannot be fine-tuned meaningfully (nor privately).
MIN_USER_SENTENCES = 10


@dataclasses.dataclass(frozen=True)
class NeuralLMConfig:
    """Architecture of the LSTM LM (defaults: ~1.4M parameters with a 500-piece vocabulary)."""

    vocab_size: int
    sos_eos_id: int
    embed_dim: int = DEFAULT_EMBED_DIM
    hidden_dim: int = DEFAULT_HIDDEN_DIM
    num_layers: int = DEFAULT_NUM_LAYERS
    dropout: float = 0.1
    #: Share the input embedding with the output layer (adds a hidden->embed projection if needed).
    tie_weights: bool = False
    tokenizer_id: str = ""

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible sizes."""
        for name in ("vocab_size", "embed_dim", "hidden_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, found {getattr(self, name)}")
        if not 0 <= self.sos_eos_id < self.vocab_size:
            raise ConfigError(f"sos_eos_id: expected in [0, {self.vocab_size}), found {self.sos_eos_id}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: expected in [0, 1), found {self.dropout}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train or fine-tune. ``batch_size`` is the expected batch size under DP-SGD."""

    epochs: float = 3.0
    batch_size: int = 64
    lr: float = 2e-3
    #: Gradient-norm clip for plain training (the per-example clip for DP-SGD is separate).
    grad_clip: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = DEFAULT_SEED
    threads: int = 0  # 0: leave torch's default
    progress: bool = True

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible values."""
        if not self.epochs > 0:
            raise ConfigError(f"epochs: expected > 0, found {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: expected >= 1, found {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr: expected > 0, found {self.lr}")
        if self.max_tokens < 2:
            raise ConfigError(f"max_tokens: expected >= 2, found {self.max_tokens}")


#: Fine-tuning defaults: fewer passes and a smaller learning rate than background training.
PERSONALIZE_TRAIN = TrainConfig(epochs=2.0, lr=1e-3)


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD settings. Give ``target_epsilon`` or ``noise_multiplier`` (not both) for dp-sgd."""

    mechanism: Literal["none", "dp-sgd"] = "none"
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None  # default: accounting.default_delta(n)
    clip: float = DEFAULT_CLIP
    accountant: str = accounting.DEFAULT_ACCOUNTANT
    individual: bool = True

    def validate(self) -> None:
        """Raise ``ConfigError`` for contradictory settings."""
        if self.mechanism not in ("none", "dp-sgd"):
            raise ConfigError(f"privacy: expected 'none' or 'dp-sgd', found {self.mechanism!r}")
        if self.mechanism == "dp-sgd":
            if (self.target_epsilon is None) == (self.noise_multiplier is None):
                raise ConfigError("dp-sgd needs exactly one of target_epsilon and noise_multiplier")
            if self.noise_multiplier is not None and self.noise_multiplier < 0:
                raise ConfigError(f"noise_multiplier: expected >= 0, found {self.noise_multiplier}")
            if not self.clip > 0:
                raise ConfigError(f"clip: expected > 0, found {self.clip}")
            accounting.get_accountant(self.accountant)
