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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from userlibri.asr.model_format import (  # noqa: F401 - re-exported: the format's names live there
    _SHARED_META,
    CTC_LOG_PROBS,
    DECODER,
    DECODER_OUT,
    DEFAULT_THREADS,
    ENCODER,
    ENCODER_OUT,
    ENCODER_OUT_LENS,
    FORMAT_VERSION,
    JOINER,
    KIND,
    LOGPROBS,
    NEW_CACHE_PREFIX,
    PRECISION_SUFFIX,
    REQUIRED_META,
    ROLES,
    STREAMING_ENCODER,
    SUMMARY_FILE,
    TOKENIZER_FILE,
    TOKENS_FILE,
    X_LENS,
    CacheSpec,
    Mode,
    ModelMeta,
    Precision,
    X,
    Y,
    default_precision,
    model_file,
    roles_for_mode,
)
from userlibri.errors import ConfigError, DataFormatError, UserLibriError, missing_dependency
from userlibri.features import FeatureConfig

log = logging.getLogger(__name__)


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
