"""Torch-free configuration of the acoustic model and its training, and the YAML loader.

A config file has up to four sections, each optional (missing keys take the defaults below, unknown
keys are an error)::

    model: {d_model: 176, num_layers: 10, ...}      # AMConfig
    train: {max_minutes: 150, lr: 2.0e-3, ...}       # TrainConfig
    tokenizer: {vocab_size: 256, model_type: unigram} # text.tokenizer.TokenizerConfig
    features: {num_mel_bins: 80, ...}                 # features.FeatureConfig

``AMConfig.vocab_size`` and ``blank_id`` are filled from the tokenizer at training time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from userlibri.constants import DEFAULT_SEED
from userlibri.errors import ConfigError, DataFormatError
from userlibri.features import FeatureConfig
from userlibri.text.tokenizer import TokenizerConfig

#: Streaming decode defaults: 8 frames after x4 subsampling at a 10 ms shift = 320 ms chunks.
DEFAULT_DECODE_CHUNK = 8
DEFAULT_DECODE_LEFT_CHUNKS = 8
SUBSAMPLING_FACTOR = 4
#: Input frames the x4 subsampling (two 3x3 convs, stride 2, no padding) needs beyond 4 per output:
#: an output frame ``i`` reads input frames ``4i .. 4i+6``, so a chunk of ``c`` outputs needs
#: ``4c + 3`` inputs and consecutive chunks overlap by 3 input frames.
SUBSAMPLING_RIGHT_CONTEXT = 3


#: AMConfig fields that fix the weights' shapes (an `asr train --init-from` model must match them).
ARCH_FIELDS = (
    "vocab_size",
    "blank_id",
    "feat_dim",
    "subsampling_channels",
    "d_model",
    "num_layers",
    "num_heads",
    "ff_dim",
    "conv_kernel",
    "decoder_dim",
    "context_size",
    "joiner_dim",
)


@dataclass(frozen=True)
class AMConfig:
    """Architecture of the Conformer acoustic model (CTC + stateless transducer heads)."""

    vocab_size: int = 256
    blank_id: int = 0
    feat_dim: int = 80
    subsampling_channels: int = 64
    d_model: int = 144
    num_layers: int = 8
    num_heads: int = 4
    ff_dim: int = 576
    conv_kernel: int = 15
    dropout: float = 0.1
    #: Stateless prediction network: embedding dim and left context (tokens).
    decoder_dim: int = 256
    context_size: int = 2
    joiner_dim: int = 256
    #: Loss weights: total = ctc_weight * ctc + transducer_weight * transducer.
    ctc_weight: float = 0.3
    transducer_weight: float = 0.7
    #: Transducer loss lattice: "standard" (Graves: any number of tokens per frame) or "modified"
    #: (exactly one symbol per frame, the model our greedy and modified beam searches decode;
    #: needed when tokens are short, e.g. ~0.76 characters per 40 ms frame).
    transducer_topology: str = "standard"
    #: Dynamic chunk training: per batch, full context with ``full_context_prob``, else a chunk of
    #: U{1..max_chunk} frames (after subsampling) and a left context of U{0..max_left_chunks}
    #: chunks (-1 = always unlimited).
    dynamic_chunk: bool = True
    full_context_prob: float = 0.5
    max_chunk: int = 25
    max_left_chunks: int = 8
    #: Streaming defaults written into exported models (frames after subsampling / chunks).
    decode_chunk: int = DEFAULT_DECODE_CHUNK
    decode_left_chunks: int = DEFAULT_DECODE_LEFT_CHUNKS

    def validate(self) -> AMConfig:
        """Raise ``ConfigError`` for impossible sizes; return ``self``."""
        for name in (*(f for f in ARCH_FIELDS if f != "blank_id"), "max_chunk", "decode_chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}: expected >= 1, found {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ConfigError(f"model.vocab_size: expected >= 2 (blank + a token), found {self.vocab_size}")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ConfigError(f"model.blank_id: expected in [0, {self.vocab_size}), found {self.blank_id}")
        if self.feat_dim < 7:
            raise ConfigError(
                f"model.feat_dim: expected >= 7 (two stride-2 3x3 convs), found {self.feat_dim}"
            )
        head_dim, rem = divmod(self.d_model, self.num_heads)
        if rem or head_dim % 2:
            raise ConfigError(
                f"model.d_model: expected a multiple of num_heads ({self.num_heads}) with an even head "
                f"dim (rotary positions), found {self.d_model}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: expected in [0, 1), found {self.dropout}")
        if self.ctc_weight < 0 or self.transducer_weight < 0 or self.ctc_weight + self.transducer_weight <= 0:
            raise ConfigError(
                f"model.ctc_weight/transducer_weight: expected >= 0 with a positive sum, found "
                f"{self.ctc_weight}/{self.transducer_weight}"
            )
        if self.transducer_topology not in ("standard", "modified"):
            raise ConfigError(
                "model.transducer_topology: expected standard or modified, found "
                f"{self.transducer_topology!r}"
            )
        if not 0.0 <= self.full_context_prob <= 1.0:
            raise ConfigError(f"model.full_context_prob: expected in [0, 1], found {self.full_context_prob}")
        if self.max_left_chunks < -1 or self.decode_left_chunks < -1:
            raise ConfigError(
                "model.max_left_chunks/decode_left_chunks: expected >= -1 (-1 = unlimited), found "
                f"{self.max_left_chunks}/{self.decode_left_chunks}"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Batches are formed by total input frames (10 ms each), not utterance count."""

    seed: int = DEFAULT_SEED
    #: Stop after this many epochs or this much wall time (minutes, 0 = no limit), whichever first.
    epochs: int = 30
    max_minutes: float = 0.0
    max_steps: int = 0  # 0 = no limit
    max_batch_frames: int = 20000
    max_utt_seconds: float = 20.0
    num_buckets: int = 10
    #: First epoch shortest-first (a curriculum that helps CTC leave the blank plateau).
    sortagrad: bool = True
    #: Sentences of the training books added to the transcripts when a tokenizer is trained here.
    tokenizer_book_sentences: int = 20000
    #: Peak learning rate (AdamW), linear warm-up, then cosine decay to ``final_lr_ratio * lr``
    #: over ``decay_steps`` (0 = to the end of ``epochs``).
    lr: float = 2e-3
    warmup_steps: int = 1000
    decay_steps: int = 0
    final_lr_ratio: float = 0.05
    weight_decay: float = 1e-3
    grad_clip: float = 5.0
    #: SpecAugment and dropout are off until ``augment_start`` steps, then ramp linearly to full
    #: strength over ``augment_ramp`` steps (a TTS-trained model stalls on the blank plateau otherwise).
    augment_start: int = 1000
    augment_ramp: int = 2000
    #: Train the CTC head alone for the first ``ctc_only_steps`` steps (the transducer loss is not
    #: computed: ~2.7x cheaper steps on a CPU), then both heads with the model's loss weights. A
    #: CTC-trained encoder gets the transducer off the ground quickly.
    ctc_only_steps: int = 0
    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 4
    time_mask_ratio: float = 0.05
    #: Speed perturbation factors applied per utterance (1.0 always included); [] disables it.
    #: Done on the waveform when features are cached: each factor makes one more cached copy.
    speed_factors: tuple[float, ...] = ()
    #: Noise and reverberation augmentation: ``noise_copies`` more cached copies of the training
    #: split. In each, every utterance gets (deterministically from seed, copy and utterance id) one
    #: of the speeds (1.0 and ``speed_factors``), sox reverberation with probability
    #: ``reverb_prob``, and additive noise whose power spectrum falls as 1/f**slope (slope uniform
    #: in ``noise_slope``: 0 white, 1 pink, 2 brown) at an SNR uniform in ``noise_snr_db``.
    noise_copies: int = 0
    noise_snr_db: tuple[float, float] = (0.0, 25.0)
    noise_slope: tuple[float, float] = (0.0, 2.0)
    reverb_prob: float = 0.5
    #: Corpora added with ``asr train --add-train``: each of their cached copies (the same speeds
    #: and noise copies as the main corpus) appears this many times per epoch, so a small corpus
    #: of new voices is not drowned by the main one.
    add_train_repeat: int = 1
    #: Checkpoints: every ``checkpoint_minutes`` and at each epoch end; keep the newest ``keep``.
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 5
    average_last: int = 5
    #: Dev greedy WER after each epoch on at most this many utterances (0 = skip).
    dev_max_utts: int = 200
    threads: int = 0  # 0: leave torch's default
    num_workers: int = 0
    amp: bool = True  # only used on cuda
    log_every: int = 20

    def validate(self) -> TrainConfig:
        """Raise ``ConfigError`` for impossible values; return ``self``."""
        positive = (
            "epochs",
            "max_batch_frames",
            "num_buckets",
            "keep_checkpoints",
            "average_last",
            "log_every",
            "add_train_repeat",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: expected >= 1, found {getattr(self, name)}")
        for name in (
            "max_minutes",
            "max_steps",
            "warmup_steps",
            "decay_steps",
            "augment_start",
            "augment_ramp",
            "ctc_only_steps",
            "freq_masks",
            "freq_mask_width",
            "time_masks",
            "dev_max_utts",
            "noise_copies",
            "threads",
            "num_workers",
            "weight_decay",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected >= 0, found {getattr(self, name)}")
        for name in ("lr", "grad_clip", "max_utt_seconds", "checkpoint_minutes"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"train.{name}: expected > 0, found {getattr(self, name)}")
        if not 0.0 < self.final_lr_ratio <= 1.0:
            raise ConfigError(f"train.final_lr_ratio: expected in (0, 1], found {self.final_lr_ratio}")
        if not 0.0 <= self.time_mask_ratio < 1.0:
            raise ConfigError(f"train.time_mask_ratio: expected in [0, 1), found {self.time_mask_ratio}")
        for f in self.speed_factors:
            if not 0.5 <= f <= 2.0:
                raise ConfigError(f"train.speed_factors: expected factors in [0.5, 2], found {f}")
        for name, lo, hi in (("noise_snr_db", -20.0, 60.0), ("noise_slope", 0.0, 3.0)):
            r = getattr(self, name)
            if len(r) != 2 or not lo <= r[0] <= r[1] <= hi:
                raise ConfigError(
                    f"train.{name}: expected [low, high] within [{lo:g}, {hi:g}], found {list(r)}"
                )
        if not 0.0 <= self.reverb_prob <= 1.0:
            raise ConfigError(f"train.reverb_prob: expected in [0, 1], found {self.reverb_prob}")
        return self


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything ``asr train`` reads from one YAML file."""

    model: AMConfig = field(default_factory=AMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def validate(self) -> ExperimentConfig:
        self.model.validate()
        self.train.validate()
        self.tokenizer.validate()
        self.features.validate()
        if self.features.num_mel_bins != self.model.feat_dim:
            raise ConfigError(
                f"model.feat_dim ({self.model.feat_dim}) must equal features.num_mel_bins "
                f"({self.features.num_mel_bins})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: dataclasses.asdict(getattr(self, k)) for k in ("model", "train", "tokenizer", "features")}


def _build(cls: type, data: Any, section: str, source: str) -> Any:
    """A ``cls`` from a mapping; unknown keys and wrong value types raise errors naming ``source``."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise DataFormatError(source, f"a mapping under '{section}'", type(data).__name__)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown keys in '{section}': {unknown}; expected some of {sorted(fields)}"
        )
    defaults = cls()
    values: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(defaults, name)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{source}: {section}.{name}: expected a list, found {value!r}")
            value = tuple(float(v) for v in value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {section}.{name}: expected true/false, found {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{source}: {section}.{name}: expected a number, found {value!r}")
            value = float(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{source}: {section}.{name}: expected an integer, found {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{source}: {section}.{name}: expected a string, found {value!r}")
        values[name] = value
    return cls(**values)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """An ``ExperimentConfig`` from a parsed YAML mapping (validated)."""
    sections = {
        "model": AMConfig,
        "train": TrainConfig,
        "tokenizer": TokenizerConfig,
        "features": FeatureConfig,
    }
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{source}: unknown sections {unknown}; expected some of {sorted(sections)}")
    parts = {name: _build(cls, data.get(name), name, source) for name, cls in sections.items()}
    return ExperimentConfig(**parts).validate()


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment config (see the module docstring for its sections)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataFormatError(path, "a readable YAML file", str(e)) from None
    except yaml.YAMLError as e:
        raise DataFormatError(path, "valid YAML", str(e).replace("\n", " ")) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise DataFormatError(
            path, "a YAML mapping with sections model/train/tokenizer/features", type(data).__name__
        )
    return config_from_dict(data, str(path))
