"""Configuration of ``userlibri synth``: frozen dataclasses loaded from YAML (unknown keys rejected),
every field overridable with ``--set dotted.key=value``.

A split names its books, its base voices (``engine:voice``, see ``userlibri.data.tts``) and how many
readers it has; reader ``i`` reads with ``voices[i % len(voices)]`` and a deterministic perturbation
drawn from ``perturbation`` (speed, pitch, tempo, gain; with ``noise``/``reverb`` also additive noise
at an SNR and sox reverberation).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from userlibri.constants import ALL_SPLITS, DEFAULT_SAMPLE_RATE, DEFAULT_SEED, TEST_SPLITS
from userlibri.errors import ConfigError

DEFAULT_MIN_UTT_SECONDS = 5.0
DEFAULT_MAX_UTT_SECONDS = 20.0
DEFAULT_MIN_CHAPTER_WORDS = 300
NOISE_COLORS = ("white", "pink", "brown")


@dataclass(frozen=True)
class PerturbConfig:
    """Ranges (low, high) that reader perturbations are drawn from, uniformly."""

    speed: tuple[float, float] = (0.9, 1.1)  # sox speed: changes tempo and pitch
    pitch_cents: tuple[float, float] = (-250.0, 250.0)  # sox pitch
    tempo: tuple[float, float] = (0.92, 1.08)  # sox tempo -s: changes tempo only
    gain_db: tuple[float, float] = (-8.0, -1.0)
    snr_db: tuple[float, float] = (5.0, 20.0)  # only in splits with noise
    reverberance: tuple[float, float] = (20.0, 80.0)  # sox reverb %, only in splits with reverb
    room_scale: tuple[float, float] = (30.0, 100.0)  # sox reverb room-scale %
    noise_colors: tuple[str, ...] = NOISE_COLORS

    def validate(self) -> None:
        for name in ("speed", "pitch_cents", "tempo", "gain_db", "snr_db", "reverberance", "room_scale"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"perturbation.{name}: expected low <= high, found ({lo}, {hi})")
        for name in ("speed", "tempo"):
            lo, hi = getattr(self, name)
            if not 0.5 <= lo <= hi <= 2.0:
                raise ConfigError(
                    f"perturbation.{name}: expected a range within [0.5, 2.0], found ({lo}, {hi})"
                )
        for name in ("reverberance", "room_scale"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 100:
                raise ConfigError(
                    f"perturbation.{name}: expected a range within [0, 100], found ({lo}, {hi})"
                )
        if self.gain_db[1] > 0:
            raise ConfigError(
                f"perturbation.gain_db: expected values <= 0 dB (no clipping), found {self.gain_db}"
            )
        bad = [c for c in self.noise_colors if c not in NOISE_COLORS]
        if not self.noise_colors or bad:
            raise ConfigError(
                f"perturbation.noise_colors: expected a non-empty subset of {NOISE_COLORS}, "
                f"found {self.noise_colors}"
            )


@dataclass(frozen=True)
class SplitConfig:
    """One split: who reads what, and how much."""

    books: tuple[str, ...]
    voices: tuple[str, ...]
    readers: int
    chapters_per_reader: int = 1
    max_utterances_per_chapter: int = 20  # 0: the whole chapter
    minutes_per_reader: float = 0.0  # 0: no limit (estimated minutes; stops adding utterances)
    perturb: bool = True  # speed/pitch/tempo/gain per reader
    noise: bool = False
    reverb: bool = False

    def validate(self, name: str) -> None:
        from userlibri.data.tts import get_voice

        if not self.books:
            raise ConfigError(f"{name}.books: expected at least one book id, found none")
        if not self.voices:
            raise ConfigError(f"{name}.voices: expected at least one 'engine:voice', found none")
        for v in self.voices:
            get_voice(v)
        if len(set(self.voices)) != len(self.voices) or len(set(self.books)) != len(self.books):
            raise ConfigError(
                f"{name}: expected no repeated books or voices, found {self.books} / {self.voices}"
            )
        if self.readers < 1 or self.chapters_per_reader < 1:
            raise ConfigError(
                f"{name}: expected readers >= 1 and chapters_per_reader >= 1, found "
                f"{self.readers} and {self.chapters_per_reader}"
            )
        if self.max_utterances_per_chapter < 0 or self.minutes_per_reader < 0:
            raise ConfigError(f"{name}: expected max_utterances_per_chapter >= 0 and minutes_per_reader >= 0")
        if not self.perturb and not self.noise and not self.reverb and self.readers > len(self.voices):
            raise ConfigError(
                f"{name}: {self.readers} readers from {len(self.voices)} voices without perturbation would "
                "repeat a reader; set perturb: true or add voices"
            )


@dataclass(frozen=True)
class SynthConfig:
    """The whole synthesized corpus."""

    splits: dict[str, SplitConfig]
    seed: int = DEFAULT_SEED
    sample_rate: int = DEFAULT_SAMPLE_RATE
    min_seconds: float = DEFAULT_MIN_UTT_SECONDS
    max_seconds: float = DEFAULT_MAX_UTT_SECONDS
    min_chapter_words: int = DEFAULT_MIN_CHAPTER_WORDS
    allow_shared_voices: bool = False  # allow a base voice in train and in a test split
    perturbation: PerturbConfig = field(default_factory=PerturbConfig)

    def validate(self) -> None:
        if not self.splits:
            raise ConfigError(f"splits: expected at least one of {ALL_SPLITS}, found none")
        for name, split in self.splits.items():
            if name not in ALL_SPLITS:
                raise ConfigError(f"splits: unknown split {name!r}; expected one of {ALL_SPLITS}")
            split.validate(name)
        if not 0 < self.min_seconds < self.max_seconds:
            raise ConfigError(
                f"expected 0 < min_seconds < max_seconds, found {self.min_seconds} and {self.max_seconds}"
            )
        if self.sample_rate not in (8000, 16000, 22050, 24000, 44100, 48000):
            raise ConfigError(
                f"sample_rate: expected a standard rate such as 16000, found {self.sample_rate}"
            )
        if self.min_chapter_words < 1:
            raise ConfigError(f"min_chapter_words: expected >= 1, found {self.min_chapter_words}")
        self.perturbation.validate()
        train = self.splits.get("train")
        if train is not None:
            for name, split in self.splits.items():
                if name == "train":
                    continue
                shared = sorted(set(train.books) & set(split.books))
                if shared:
                    raise ConfigError(
                        f"books {shared} are in train and in {name}; held-out splits need unseen books"
                    )
                voices = sorted(set(train.voices) & set(split.voices))
                if voices and name in TEST_SPLITS and not self.allow_shared_voices:
                    raise ConfigError(
                        f"base voices {voices} are in train and in {name}; hold out whole voices for "
                        "the test splits (or set allow_shared_voices: true)"
                    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ loading


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` (dataclasses, tuples, dicts, scalars)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, found {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, found {len(value)}")
        return tuple(
            _convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {value!r}")
        ktp, vtp = typing.get_args(tp)
        return {str(k): _convert(vtp, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        return _convert(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, found {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ConfigError(f"{where}: expected a string, found {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - programming error


def _build(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, found {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown keys {unknown}; expected some of {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where or 'config'}: missing required keys {missing}")
    return cls(**kwargs)


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. splits.test-clean.readers=6")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({e})") from e
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {p!r} is not a mapping")
        node = nxt
    node[parts[-1]] = value


def synth_config_from_dict(data: dict[str, Any], overrides: tuple[str, ...] = ()) -> SynthConfig:
    """Build and validate a ``SynthConfig`` from a plain mapping plus ``KEY=VALUE`` overrides."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for item in overrides:
        _apply_override(data, item)
    cfg = _build(SynthConfig, data, "")
    cfg.validate()
    return cfg


def load_synth_config(path: str | Path, overrides: tuple[str, ...] = ()) -> SynthConfig:
    """Read a YAML synth config; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: expected a readable YAML synth config, found {e}") from e
    try:
        return synth_config_from_dict(data if data is not None else {}, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
