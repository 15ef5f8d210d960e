"""The acoustic model at inference time: exported ONNX files run by onnxruntime (no torch).

A model directory (written by ``userlibri.asr.export``) holds, for each precision
(``float``: ``*.onnx``, ``int8``: ``*.int8.onnx``, ``ort``: ``*.ort``, ``ort-int8``: ``*.int8.ort``):

``encoder``  (non-streaming, full context)
    inputs   x (N, T, F) float32 raw log-mel fbank (global CMVN is folded into the graph),
             x_lens (N,) int64
    outputs  encoder_out (N, T', J) float32 (already projected for the joiner),
             encoder_out_lens (N,) int64, ctc_log_probs (N, T', V) float32 (natural log)
``encoder-streaming``  (one chunk, explicit caches)
    inputs   x (N, t, F) with min_chunk_frames <= t <= chunk_frames, then one input per cache
             (``meta.caches``: att_cache (L, N, H, W, 2*Dh), conv_cache (L, N, D, K-1), offset (N,))
    outputs  encoder_out (N, t', J), ctc_log_probs (N, t', V), then ``new_<cache>`` (same shapes);
             t' = chunk_size for a full chunk
``decoder``  (stateless prediction network)   y (N, context_size) int64 -> decoder_out (N, J)
``joiner``   encoder_out (N, J), decoder_out (N, J) -> logprobs (N, V) (natural log)

plus ``tokens.txt``, ``tokenizer.model`` and ``model.json``. Every ONNX file carries the same
metadata (``REQUIRED_META``, plus ``role`` and ``precision``); ``ModelMeta`` is read from it, never
from flags. The CTC head is folded into both encoders (one session call per chunk gives both the
transducer's encoder output and the CTC log-probs).

Streaming: call ``run_chunk`` with ``meta.chunk_frames`` feature frames; it returns
``meta.chunk_size`` encoder frames and the next state; advance the feature window by
``meta.chunk_shift`` frames (``chunk_frames - chunk_shift`` frames of right context overlap the
next chunk). The last chunk of an utterance may be shorter (at least ``meta.min_chunk_frames``):
chunks fed this way give the encoder output of the chunk-masked full forward
(``Encoder.forward(..., chunk_size, left_chunks)``) on the same features.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from userlibri.errors import ConfigError, DataFormatError, UserLibriError, missing_dependency
from userlibri.features import FeatureConfig

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class AMState:
    """Streaming-encoder state of ``batch`` streams.

    ``caches[i]`` has the shape ``meta.caches[i].shape`` with its batch axis of size ``batch``.
    ``frames`` counts the encoder frames each stream has produced (equal for all streams of a batch).
    """

    caches: tuple[np.ndarray, ...]
    frames: int = 0
    batch: int = 1


class AMOutput(NamedTuple):
    """Encoder output (for the joiner) and CTC log-probs of the same frames."""

    encoder_out: np.ndarray  # (T', J) or (N, T', J)
    ctc_log_probs: np.ndarray  # (T', V) or (N, T', V)


def _ort():  # noqa: ANN202 - module
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - core dependency
        raise missing_dependency("onnxruntime", "run `make setup`") from e
    return onnxruntime


def read_model_meta(path: str | Path) -> dict[str, str]:
    """The raw metadata of one ONNX/ORT file (loads it with onnxruntime)."""
    ort = _ort()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise DataFormatError(path, "a loadable ONNX/ORT model", f"an error ({e})") from e
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxAcousticModel:
    """``AcousticModel`` over an exported model directory (see the module docstring).

    ``mode`` picks the sessions to load: 'streaming' (no full-context encoder), 'offline' (no
    streaming encoder) or 'both'. The object holds no per-utterance state.
    """

    def __init__(
        self,
        model_dir: str | Path,
        precision: Precision = "float",
        num_threads: int = DEFAULT_THREADS,
        mode: Mode = "both",
    ) -> None:
        self.model_dir = Path(model_dir)
        if num_threads < 1:
            raise ConfigError(f"num_threads: expected >= 1, found {num_threads}")
        roles = roles_for_mode(mode)
        files = {role: self.model_dir / model_file(role, precision) for role in roles}
        if not self.model_dir.is_dir():
            raise DataFormatError(self.model_dir, "an acoustic-model directory", "no such directory")
        needed = [*files.values(), self.model_dir / TOKENS_FILE, self.model_dir / TOKENIZER_FILE]
        missing_files = [p.name for p in needed if not p.is_file()]
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._sessions: dict[str, Any] = {}
        metas: dict[str, dict[str, str]] = {}
        problems: list[str] = []
        for role, path in files.items():
            if not path.is_file():
                continue
            try:
                session = ort.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as e:  # onnxruntime raises its own exception types
                problems.append(f"{path.name} is not a loadable model ({e})")
                continue
            self._sessions[role] = session
            metas[role] = dict(session.get_modelmeta().custom_metadata_map)
        for role, meta in metas.items():
            absent = [k for k in REQUIRED_META if k not in meta]
            if absent:
                problems.append(f"{files[role].name} lacks metadata keys {absent}")
            elif meta["role"] != role:
                problems.append(f"{files[role].name} has role {meta['role']!r}, expected {role!r}")
        if missing_files or problems:
            found = []
            if missing_files:
                found.append(f"missing files {missing_files}")
            found.extend(problems)
            raise DataFormatError(
                self.model_dir,
                f"an acoustic-model directory with {[p.name for p in needed]} (precision {precision!r}) "
                f"and metadata keys {list(REQUIRED_META)}",
                "; ".join(found),
            )
        first_role = roles[0]
        self.meta = ModelMeta.from_metadata(metas[first_role], files[first_role])
        disagree = [
            f"{files[role].name}: {k}={meta[k]!r} but {files[first_role].name} has {metas[first_role][k]!r}"
            for role, meta in metas.items()
            for k in _SHARED_META
            if meta[k] != metas[first_role][k]
        ]
        if disagree:
            raise DataFormatError(self.model_dir, "ONNX files from one export", "; ".join(disagree))
        self.precision = precision
        self.mode = mode
        self.num_threads = num_threads
        self.tokens_path = self.model_dir / TOKENS_FILE
        self.tokenizer_path = self.model_dir / TOKENIZER_FILE
        self._cache_names = [c.name for c in self.meta.caches]
        self._cache_axes = tuple(c.batch_axis for c in self.meta.caches)
        self._stream_outputs = [ENCODER_OUT, CTC_LOG_PROBS] + [
            NEW_CACHE_PREFIX + n for n in self._cache_names
        ]
        self._check_io()

    def _check_io(self) -> None:
        """Raise ``DataFormatError`` unless each session has the inputs and outputs this class feeds."""
        expected = {
            ENCODER: ([X, X_LENS], [ENCODER_OUT, ENCODER_OUT_LENS, CTC_LOG_PROBS]),
            STREAMING_ENCODER: ([X, *self._cache_names], self._stream_outputs),
            DECODER: ([Y], [DECODER_OUT]),
            JOINER: ([ENCODER_OUT, DECODER_OUT], [LOGPROBS]),
        }
        wrong = []
        for role, session in self._sessions.items():
            ins = [i.name for i in session.get_inputs()]
            outs = [o.name for o in session.get_outputs()]
            if (ins, outs) != expected[role]:
                wrong.append(f"{role}: inputs {ins} outputs {outs}, expected {expected[role]}")
        if wrong:
            raise DataFormatError(
                self.model_dir, "model inputs/outputs of this userlibri version", "; ".join(wrong)
            )

    def _session(self, role: str) -> Any:
        session = self._sessions.get(role)
        if session is None:
            raise UserLibriError(
                f"{self.model_dir} was opened with mode={self.mode!r}, which has no {role} model"
            )
        return session

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"OnnxAcousticModel({str(self.model_dir)!r}, precision={self.precision!r}, vocab={m.vocab_size}, "
            f"chunk={m.chunk_size}x{m.subsampling}, left_chunks={m.left_chunks})"
        )

    # -- checks ---------------------------------------------------------------------------------
    def check_features(self, config: FeatureConfig) -> None:
        """Raise ``ConfigError`` listing every difference between ``config`` and the model's features."""
        config.check_compatible(self.meta.features, what=f"model {self.model_dir}")

    def _check_feats(self, feats: np.ndarray, frames: tuple[int, int] | None = None) -> np.ndarray:
        arr = np.asarray(feats)
        dim = self.meta.feature_dim
        bad_len = frames is not None and arr.ndim >= 2 and not frames[0] <= arr.shape[-2] <= frames[1]
        if arr.ndim not in (2, 3) or arr.shape[-1] != dim or bad_len:
            span = "T" if frames is None else f"{frames[0]}..{frames[1]}"
            want = f"({span}, {dim}) or (N, {span}, {dim})"
            raise UserLibriError(f"acoustic model: expected features of shape {want}, found {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise UserLibriError(f"acoustic model: expected float features, found dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise UserLibriError("acoustic model: expected finite features, found NaN or infinity")
        return arr

    # -- non-streaming ----------------------------------------------------------------------------
    def run(self, feats: np.ndarray) -> AMOutput:
        """Full-context encoder, one utterance: feats (T, F) -> encoder_out (T', J), ctc_log_probs (T', V).

        An utterance shorter than ``meta.min_chunk_frames`` frames gives (0, J) and (0, V).
        """
        arr = self._check_feats(feats)
        if arr.ndim != 2:
            raise UserLibriError(f"run: expected (T, {self.meta.feature_dim}) features, found {arr.shape}")
        outs = self.run_batch([arr])
        return AMOutput(outs[0].encoder_out, outs[0].ctc_log_probs)

    def run_batch(self, feats: Sequence[np.ndarray]) -> list[AMOutput]:
        """``run`` over several utterances in one padded session call."""
        if not feats:
            return []
        arrs = [self._check_feats(f) for f in feats]
        lens = np.array([a.shape[0] for a in arrs], dtype=np.int64)
        keep = [i for i, n in enumerate(lens) if n >= self.meta.min_chunk_frames]
        results = [
            AMOutput(
                np.zeros((0, self.meta.joiner_dim), np.float32),
                np.zeros((0, self.meta.vocab_size), np.float32),
            )
            for _ in arrs
        ]
        if not keep:
            return results
        t_max = int(lens[keep].max())
        x = np.zeros((len(keep), t_max, self.meta.feature_dim), np.float32)
        for row, i in enumerate(keep):
            x[row, : lens[i]] = arrs[i]
        enc, enc_lens, ctc = self._session(ENCODER).run(None, {X: x, X_LENS: lens[keep]})
        for row, i in enumerate(keep):
            n = int(enc_lens[row])
            results[i] = AMOutput(enc[row, :n], ctc[row, :n])
        return results

    # -- streaming ------------------------------------------------------------------------------------
    def init_state(self, batch: int = 1) -> AMState:
        """The state before the first chunk, for ``batch`` streams (all caches zero)."""
        if batch < 1:
            raise UserLibriError(f"init_state: expected batch >= 1, found {batch}")
        caches = []
        for spec in self.meta.caches:
            shape = list(spec.shape)
            shape[spec.batch_axis] = batch
            caches.append(np.zeros(shape, dtype=spec.dtype))
        return AMState(tuple(caches), 0, batch)

    def run_chunk(self, feats: np.ndarray, state: AMState) -> tuple[AMOutput, AMState]:
        """One streaming step.

        feats: (t, F) for one stream, or (N, t, F) for a state of batch N, with
        ``t == meta.chunk_frames`` except for the last chunk of an utterance
        (``meta.min_chunk_frames <= t``). Returns (encoder_out (t', J) / (N, t', J),
        ctc_log_probs (..., V)) with ``t' = meta.chunk_size`` for a full chunk, and the next state.
        """
        arr = self._check_feats(feats, frames=(self.meta.min_chunk_frames, self.meta.chunk_frames))
        single = arr.ndim == 2
        x = arr[None] if single else arr
        if len(state.caches) != len(self._cache_names):
            raise UserLibriError(
                f"run_chunk: expected a state with {len(self._cache_names)} caches, found {len(state.caches)}"
            )
        if x.shape[0] != state.batch:
            raise UserLibriError(
                f"run_chunk: features for {x.shape[0]} streams, but the state holds {state.batch}"
            )
        feeds = {X: x}
        feeds.update(zip(self._cache_names, state.caches, strict=True))
        outs = self._session(STREAMING_ENCODER).run(self._stream_outputs, feeds)
        enc, ctc = outs[0], outs[1]
        new_state = AMState(tuple(outs[2:]), state.frames + enc.shape[1], state.batch)
        if single:
            return AMOutput(enc[0], ctc[0]), new_state
        return AMOutput(enc, ctc), new_state

    def stack_states(self, states: Sequence[AMState]) -> AMState:
        """Join single-stream (or batched) states into one batch, in order (all at the same frame count)."""
        if not states:
            raise UserLibriError("stack_states: expected at least one state")
        frames = {s.frames for s in states}
        if len(frames) != 1:
            raise UserLibriError(
                f"stack_states: expected states at the same frame count, found {sorted(frames)}"
            )
        caches = tuple(
            np.concatenate([s.caches[i] for s in states], axis=axis)
            for i, axis in enumerate(self._cache_axes)
        )
        return AMState(caches, states[0].frames, sum(s.batch for s in states))

    def unstack_state(self, state: AMState) -> list[AMState]:
        """Split a batched state into single-stream states."""
        return [
            AMState(
                tuple(
                    np.take(c, [b], axis=axis) for c, axis in zip(state.caches, self._cache_axes, strict=True)
                ),
                state.frames,
            )
            for b in range(state.batch)
        ]

    # -- transducer -----------------------------------------------------------------------------------
    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        """Stateless prediction network: contexts (N, context_size) int64 -> decoder_out (N, J).

        A context is the last ``context_size`` emitted tokens, left-padded with ``blank_id``.
        """
        y = np.asarray(contexts)
        if y.ndim != 2 or y.shape[1] != self.meta.context_size or not np.issubdtype(y.dtype, np.integer):
            raise UserLibriError(
                f"decoder: expected int contexts of shape (N, {self.meta.context_size}), found "
                f"{y.dtype} {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= self.meta.vocab_size):
            raise UserLibriError(
                f"decoder: expected token ids in [0, {self.meta.vocab_size}), found [{y.min()}, {y.max()}]"
            )
        if y.shape[0] == 0:
            return np.zeros((0, self.meta.joiner_dim), np.float32)
        return self._session(DECODER).run(None, {Y: y.astype(np.int64, copy=False)})[0]

    def joiner(self, encoder_out: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
        """encoder_out (N, J) or (1, J) (broadcast), decoder_out (N, J) -> log-probs (N, V) over the
        vocabulary (blank included)."""
        enc = np.ascontiguousarray(encoder_out, dtype=np.float32)
        dec = np.ascontiguousarray(decoder_out, dtype=np.float32)
        if (
            enc.ndim != 2
            or dec.ndim != 2
            or enc.shape[0] not in (1, dec.shape[0])
            or enc.shape[1] != self.meta.joiner_dim
            or dec.shape[1] != self.meta.joiner_dim
        ):
            raise UserLibriError(
                f"joiner: expected (N, {self.meta.joiner_dim}) and (N, {self.meta.joiner_dim}), found "
                f"{enc.shape} and {dec.shape}"
            )
        if dec.shape[0] == 0:
            return np.zeros((0, self.meta.vocab_size), np.float32)
        return self._session(JOINER).run(None, {ENCODER_OUT: enc, DECODER_OUT: dec})[0]

    def search_joiner(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """:meth:`joiner` for the transducer search's per-frame call, without its argument checks:
        for callers that pass float32 C-contiguous ``(1 or N, J)`` and ``(N, J)`` arrays, as the
        search does with this model's own encoder frames and decoder outputs (onnxruntime still
        refuses other shapes and dtypes, with its own message). It calls the compiled session
        directly: onnxruntime's Python ``run`` re-validates the feed on every call, ~4 of the ~15 us
        one joiner call takes here (measured), and the search calls it once per encoder frame."""
        session = self._session(JOINER)
        run = getattr(session, "_sess", session).run  # _sess: the compiled session (all ORT 1.x)
        names = [session.get_outputs()[0].name]
        vocab = self.meta.vocab_size

        def joiner(encoder_out: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
            if not decoder_out.shape[0]:
                return np.zeros((0, vocab), np.float32)
            return run(names, {ENCODER_OUT: encoder_out, DECODER_OUT: decoder_out}, None)[0]

        return joiner

    def read_tokens(self) -> list[str]:
        """The pieces of ``tokens.txt`` by id (``<piece> <id>`` lines)."""
        pieces: dict[int, str] = {}
        for lineno, line in enumerate(self.tokens_path.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.rsplit(" ", 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataFormatError(self.tokens_path, "'<piece> <id>' lines", repr(line), line=lineno)
            pieces[int(parts[1])] = parts[0]
        if sorted(pieces) != list(range(self.meta.vocab_size)):
            raise DataFormatError(
                self.tokens_path,
                f"ids 0..{self.meta.vocab_size - 1} once each",
                f"{len(pieces)} distinct ids",
            )
        return [pieces[i] for i in range(self.meta.vocab_size)]
