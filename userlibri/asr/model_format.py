"""The exported acoustic-model format: file names per role and precision, input/output names, and
the metadata every ONNX file of a model directory carries (``ModelMeta``). Shared by the exporter
(``userlibri.asr.export``, torch) and the runtime (``userlibri.asr.onnx_model``, no torch); the
format itself is described in ``userlibri.asr.onnx_model``'s docstring."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from userlibri.errors import ConfigError, DataFormatError
from userlibri.features import FeatureConfig

KIND = "ctc+transducer"
FORMAT_VERSION = "1"
DEFAULT_THREADS = 1

ENCODER = "encoder"
STREAMING_ENCODER = "encoder-streaming"
DECODER = "decoder"
JOINER = "joiner"
ROLES = (ENCODER, STREAMING_ENCODER, DECODER, JOINER)

TOKENS_FILE = "tokens.txt"
TOKENIZER_FILE = "tokenizer.model"
SUMMARY_FILE = "model.json"

Precision = Literal["float", "int8", "ort", "ort-int8"]
Mode = Literal["both", "streaming", "offline"]
#: File suffix of each precision.
PRECISION_SUFFIX: dict[str, str] = {
    "float": ".onnx",
    "int8": ".int8.onnx",
    "ort": ".ort",
    "ort-int8": ".int8.ort",
}

# Input and output names (shared with the exporter).
X, X_LENS = "x", "x_lens"
ENCODER_OUT, ENCODER_OUT_LENS, CTC_LOG_PROBS = "encoder_out", "encoder_out_lens", "ctc_log_probs"
Y, DECODER_OUT = "y", "decoder_out"
LOGPROBS = "logprobs"
NEW_CACHE_PREFIX = "new_"

#: Metadata every ONNX file of a model directory carries (all values are strings).
REQUIRED_META = (
    "kind",
    "format_version",
    "role",
    "precision",
    "vocab_size",
    "blank_id",
    "context_size",
    "subsampling",
    "chunk_size",
    "left_chunks",
    "chunk_frames",
    "chunk_shift",
    "feature_dim",
    "joiner_dim",
    "caches",
    "features",
    "cmvn",
    "tokenizer_id",
    "model_version",
    "userlibri_version",
)
#: Keys whose values must agree across the files of one directory.
_SHARED_META = tuple(k for k in REQUIRED_META if k not in ("role", "precision"))


def default_precision(model_dir: str | Path) -> str:
    """``float`` when ``model_dir`` holds the float encoder, else the first of int8, ort-int8, ort
    it holds (the shipped models are int8 only); ``float`` when it holds none (the loader then
    names what is missing)."""
    for precision in ("float", "int8", "ort-int8", "ort"):
        if (Path(model_dir) / model_file("encoder", precision)).is_file():
            return precision
    return "float"


def model_file(role: str, precision: str) -> str:
    """File name of ``role`` at ``precision`` (``decoder`` + ``int8`` -> ``decoder.int8.onnx``)."""
    if precision not in PRECISION_SUFFIX:
        raise ConfigError(f"precision: expected one of {sorted(PRECISION_SUFFIX)}, found {precision!r}")
    return role + PRECISION_SUFFIX[precision]


def roles_for_mode(mode: str) -> tuple[str, ...]:
    """The ONNX roles a model opened in ``mode`` needs."""
    if mode == "both":
        return ROLES
    if mode == "streaming":
        return (STREAMING_ENCODER, DECODER, JOINER)
    if mode == "offline":
        return (ENCODER, DECODER, JOINER)
    raise ConfigError(f"mode: expected 'both', 'streaming' or 'offline', found {mode!r}")


@dataclass(frozen=True)
class CacheSpec:
    """One streaming-encoder cache: its input name, its shape for one stream, and its batch axis."""

    name: str
    shape: tuple[int, ...]
    batch_axis: int
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "batch_axis": self.batch_axis,
            "dtype": self.dtype,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheSpec:
        shape = tuple(int(d) for d in data["shape"])
        axis = int(data["batch_axis"])
        if not 0 <= axis < len(shape) or shape[axis] != 1 or any(d < 0 for d in shape):
            raise ValueError(f"cache {data.get('name')!r}: bad shape {shape} / batch_axis {axis}")
        return cls(str(data["name"]), shape, axis, str(data.get("dtype", "float32")))


@dataclass(frozen=True)
class ModelMeta:
    """What a model directory says about itself (read from ONNX metadata)."""

    kind: str
    vocab_size: int
    blank_id: int
    #: Tokens of left context the stateless decoder sees.
    context_size: int
    #: Feature frames per encoder frame.
    subsampling: int
    #: Encoder frames per streaming chunk, and chunks of left context attended to (-1: all).
    chunk_size: int
    left_chunks: int
    #: Feature frames fed to one streaming call, and how far the window then advances.
    chunk_frames: int
    chunk_shift: int
    feature_dim: int
    #: Width of ``encoder_out`` and ``decoder_out`` (both already projected for the joiner).
    joiner_dim: int
    caches: tuple[CacheSpec, ...]
    features: FeatureConfig
    #: 'folded' (global mean/variance normalisation inside the encoder graph) or 'none'.
    cmvn: str
    tokenizer_id: str
    model_version: str
    userlibri_version: str
    precision: str

    @property
    def min_chunk_frames(self) -> int:
        """Fewest feature frames a streaming call takes (one encoder frame)."""
        return self.chunk_frames - self.chunk_shift + self.subsampling

    def to_metadata(self, role: str, precision: str) -> dict[str, str]:
        """The ONNX ``metadata_props`` of the file with ``role`` (inverse of ``from_metadata``)."""
        return {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "role": role,
            "precision": precision,
            "vocab_size": str(self.vocab_size),
            "blank_id": str(self.blank_id),
            "context_size": str(self.context_size),
            "subsampling": str(self.subsampling),
            "chunk_size": str(self.chunk_size),
            "left_chunks": str(self.left_chunks),
            "chunk_frames": str(self.chunk_frames),
            "chunk_shift": str(self.chunk_shift),
            "feature_dim": str(self.feature_dim),
            "joiner_dim": str(self.joiner_dim),
            "caches": json.dumps([c.to_dict() for c in self.caches], sort_keys=True),
            "features": json.dumps(self.features.to_dict(), sort_keys=True),
            "cmvn": self.cmvn,
            "tokenizer_id": self.tokenizer_id,
            "model_version": self.model_version,
            "userlibri_version": self.userlibri_version,
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str | Path = "<metadata>") -> ModelMeta:
        """Parse and validate; raise ``DataFormatError`` naming ``source`` and every problem."""
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise DataFormatError(source, f"ONNX metadata keys {list(REQUIRED_META)}", f"missing {missing}")
        problems: list[str] = []

        def integer(key: str, low: int) -> int:
            try:
                value = int(meta[key])
            except ValueError:
                problems.append(f"{key}={meta[key]!r} is not an integer")
                return low
            if value < low:
                problems.append(f"{key}={value} is below {low}")
            return value

        ints = {
            "vocab_size": integer("vocab_size", 2),
            "blank_id": integer("blank_id", 0),
            "context_size": integer("context_size", 1),
            "subsampling": integer("subsampling", 1),
            "chunk_size": integer("chunk_size", 1),
            "left_chunks": integer("left_chunks", -1),
            "chunk_frames": integer("chunk_frames", 1),
            "chunk_shift": integer("chunk_shift", 1),
            "feature_dim": integer("feature_dim", 1),
            "joiner_dim": integer("joiner_dim", 1),
        }
        if meta["kind"] != KIND:
            problems.append(f"kind={meta['kind']!r}, expected {KIND!r}")
        if meta["format_version"] != FORMAT_VERSION:
            problems.append(f"format_version={meta['format_version']!r}, expected {FORMAT_VERSION!r}")
        if not problems:
            if ints["blank_id"] >= ints["vocab_size"]:
                problems.append(f"blank_id={ints['blank_id']} outside the vocabulary ({ints['vocab_size']})")
            if ints["chunk_shift"] > ints["chunk_frames"]:
                problems.append(f"chunk_shift={ints['chunk_shift']} > chunk_frames={ints['chunk_frames']}")
            if ints["chunk_shift"] != ints["chunk_size"] * ints["subsampling"]:
                problems.append(
                    f"chunk_shift={ints['chunk_shift']}, expected chunk_size * subsampling = "
                    f"{ints['chunk_size'] * ints['subsampling']}"
                )
        caches: tuple[CacheSpec, ...] = ()
        try:
            caches = tuple(CacheSpec.from_dict(c) for c in json.loads(meta["caches"]))
        except (ValueError, TypeError, KeyError) as e:
            problems.append(f"caches: expected a JSON list of {{name, shape, batch_axis}}, found error {e}")
        features = FeatureConfig()
        try:
            features = FeatureConfig.from_dict(json.loads(meta["features"]))
            if features.num_mel_bins != ints["feature_dim"]:
                problems.append(
                    f"features.num_mel_bins={features.num_mel_bins} != feature_dim={ints['feature_dim']}"
                )
        except (ValueError, TypeError) as e:  # ConfigError is a ValueError
            problems.append(f"features: expected a FeatureConfig as JSON, found error {e}")
        if meta["cmvn"] not in ("folded", "none"):
            problems.append(f"cmvn={meta['cmvn']!r}, expected 'folded' or 'none'")
        if problems:
            raise DataFormatError(source, "valid acoustic-model metadata", "; ".join(problems))
        return cls(
            kind=meta["kind"],
            caches=caches,
            features=features,
            cmvn=meta["cmvn"],
            tokenizer_id=meta["tokenizer_id"],
            model_version=meta["model_version"],
            userlibri_version=meta["userlibri_version"],
            precision=meta["precision"],
            **ints,
        )
