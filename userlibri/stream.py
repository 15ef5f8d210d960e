"""Streaming recognition: ``OnlineRecognizer`` and its ``Stream`` objects (sherpa-onnx's API shape).

A :class:`Stream` owns everything per utterance: the streaming fbank, the encoder caches, the
beam-search state and its LM (chosen per stream: each user brings their own). The recognizer holds
the shared, stateless parts: the ONNX model, one beam search per LM, and the loaded LMs (each
loaded once, its load time measured)::

    rec = OnlineRecognizer(model_dir)
    s = rec.create_stream(lm="lms/1342")            # the user's LM directory (or None)
    s.accept_waveform(samples, 16000)               # any chunk size, any number of times
    rec.decode_streams([s, ...])                    # encode ready chunks of all streams as a batch
    rec.get_result(s).text                          # partial result
    s.input_finished(); rec.decode_streams([s]); rec.get_result(s)   # final result

Chunking: the encoder consumes ``meta.chunk_frames`` feature frames per call and the window moves
by ``meta.chunk_shift``; the last chunk after ``input_finished`` may be shorter (at least
``meta.min_chunk_frames``; fewer leftover frames are dropped). The schedule depends only on the
frame count, so the result does not depend on how the audio was split across
``accept_waveform`` calls. Streams whose next chunks have the same length are encoded in one
batched call (their caches stacked; each stream keeps its own offset).

Endpointing (as sherpa-onnx's three rules, all configurable): an endpoint is detected when
trailing silence (encoder frames since the last emitted token, or since the start when nothing was
emitted) reaches ``rule1_min_trailing_silence`` without speech, or ``rule2_...`` after speech, or
the segment reaches ``rule3_min_utterance_length``. ``reset(stream)`` starts a new segment
(encoder caches and features are kept: the audio is continuous).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.asr.onnx_model import AMState, OnnxAcousticModel
from userlibri.errors import ConfigError, UserLibriError, missing_dependency
from userlibri.features import StreamingFbank
from userlibri.lm.base import LanguageModel
from userlibri.lm.loader import LMCache, LoadedLM
from userlibri.recognizer import RecognitionResult, RecognizerConfig, Search, make_result, make_search
from userlibri.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_RULE1_SILENCE = 2.4
DEFAULT_RULE2_SILENCE = 1.2
DEFAULT_RULE3_LENGTH = 20.0


@dataclass(frozen=True)
class EndpointConfig:
    """Endpoint rules in seconds (sherpa-onnx's defaults); a rule with a value <= 0 is off."""

    enabled: bool = True
    #: Trailing silence that ends a segment in which nothing was recognised.
    rule1_min_trailing_silence: float = DEFAULT_RULE1_SILENCE
    #: Trailing silence that ends a segment after something was recognised.
    rule2_min_trailing_silence: float = DEFAULT_RULE2_SILENCE
    #: Segment length that ends it regardless.
    rule3_min_utterance_length: float = DEFAULT_RULE3_LENGTH

    def validate(self) -> EndpointConfig:
        for name in (
            "rule1_min_trailing_silence",
            "rule2_min_trailing_silence",
            "rule3_min_utterance_length",
        ):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise ConfigError(f"endpoint {name}: expected a finite number of seconds, found {value}")
        return self

    def is_endpoint(self, speech: bool, trailing_silence: float, segment_length: float) -> bool:
        """Whether any enabled rule fires."""
        if not self.enabled:
            return False
        r1, r2, r3 = (
            self.rule1_min_trailing_silence,
            self.rule2_min_trailing_silence,
            self.rule3_min_utterance_length,
        )
        return (
            (r1 > 0 and not speech and trailing_silence >= r1)
            or (r2 > 0 and speech and trailing_silence >= r2)
            or (r3 > 0 and segment_length >= r3)
        )


class Stream:
    """One audio stream: features, encoder caches and beam-search state. Create with
    :meth:`OnlineRecognizer.create_stream`."""

    def __init__(
        self, recognizer: OnlineRecognizer, search: Search, lm: LoadedLM | None, lm_load_seconds: float
    ) -> None:
        meta = recognizer.am.meta
        self.sample_rate = meta.features.sample_rate
        self.fbank = StreamingFbank(meta.features)
        self.am_state: AMState = recognizer.am.init_state(1)
        self.search = search
        self.search_state: Any = search.init_state()
        self.lm = lm
        #: Seconds spent loading this stream's LM (0 when it was already loaded).
        self.lm_load_seconds = lm_load_seconds
        #: First feature frame of the next encoder chunk.
        self.next_frame = 0
        #: Encoder frames decoded in total, and where the current segment started.
        self.encoder_frames = 0
        self.segment_start = 0
        self.timings = {"features": 0.0, "encoder": 0.0, "search": 0.0}
        self._resampler: Any = None
        self._input_rate: int | None = None
        self._warned_stereo = False

    @property
    def finished(self) -> bool:
        return self.fbank.finished

    def accept_waveform(self, samples: np.ndarray, sample_rate: int) -> None:
        """Append audio: float samples in [-1, 1], (n,) or (n, channels) (downmixed with a
        warning), at any rate (resampled to the model's with a warning; the rate must not change)."""
        arr = np.asarray(samples)
        if arr.ndim == 2:
            if not self._warned_stereo:
                log.warning("stream: %d channels, downmixing to mono", arr.shape[1])
                self._warned_stereo = True
            arr = arr.mean(axis=1)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating):
            raise UserLibriError(
                f"accept_waveform: expected float samples of shape (n,) or (n, channels), found "
                f"{arr.dtype} {arr.shape}"
            )
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if self._input_rate is None:
            if sample_rate <= 0:
                raise UserLibriError(f"accept_waveform: expected a positive sample rate, found {sample_rate}")
            self._input_rate = int(sample_rate)
            if sample_rate != self.sample_rate:
                log.warning(
                    "stream: sample rate %d Hz, resampling to the model's %d Hz",
                    sample_rate,
                    self.sample_rate,
                )
                try:
                    import soxr
                except ImportError as e:
                    raise missing_dependency("soxr", "pip install soxr==1.1.0") from e
                self._resampler = soxr.ResampleStream(
                    sample_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
                )
        elif sample_rate != self._input_rate:
            raise UserLibriError(
                f"accept_waveform: expected the stream's sample rate {self._input_rate} Hz, "
                f"found {sample_rate} Hz"
            )
        t0 = time.perf_counter()
        if self._resampler is not None:
            arr = self._resampler.resample_chunk(arr, last=False)
        self.fbank.accept_waveform(arr)
        self.timings["features"] += time.perf_counter() - t0

    def input_finished(self) -> None:
        """No more audio: the remaining frames become decodable. Idempotent."""
        if self.finished:
            return
        if self._resampler is not None:
            self.fbank.accept_waveform(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        self.fbank.input_finished()

    @property
    def audio_seconds(self) -> float:
        return self.fbank.num_samples / self.sample_rate


class OnlineRecognizer:
    """Streaming recognition over the chunked ONNX encoder; stateless apart from loaded LMs.

    ``lm``/``lm_kind``: the default LM of new streams (a path, a loaded ``LanguageModel``, or
    None); ``create_stream(lm=...)`` picks another per stream.
    """

    def __init__(
        self,
        model_dir: str | Path,
        config: RecognizerConfig | None = None,
        endpoint: EndpointConfig | None = None,
        lm: LanguageModel | str | Path | None = None,
        lm_kind: str | None = None,
    ) -> None:
        self.config = (config or RecognizerConfig()).validate()
        self.endpoint = (endpoint or EndpointConfig()).validate()
        self.am = OnnxAcousticModel(
            model_dir,
            self.config.precision,
            self.config.num_threads,
            mode="streaming",  # type: ignore[arg-type]
        )
        self.tokenizer = Tokenizer(self.am.tokenizer_path)
        self.pieces = self.am.read_tokens()
        self.lms = LMCache(self.tokenizer, self.am.model_dir)
        self._searches: dict[Any, Search] = {}
        self.default_lm = lm
        self.default_lm_kind = lm_kind
        meta = self.am.meta
        self.frame_seconds = meta.subsampling * meta.features.frame_shift_ms / 1000.0

    def __repr__(self) -> str:
        return f"OnlineRecognizer({self.am!r}, {self.config.decoder}, lms={len(self.lms)})"

    # -- streams ----------------------------------------------------------------------------------
    def create_stream(
        self, lm: LanguageModel | str | Path | None = None, lm_kind: str | None = None
    ) -> Stream:
        """A new stream decoding with ``lm`` (default: the recognizer's); loaded LMs are reused."""
        if lm is None:
            lm, lm_kind = self.default_lm, lm_kind or self.default_lm_kind
        loaded: LoadedLM | None = None
        load_s = 0.0
        if isinstance(lm, (str, Path)):
            loaded, cached = self.lms.get(lm, lm_kind)
            load_s = 0.0 if cached else loaded.load_seconds
            lm = loaded.lm
        key = id(lm) if lm is not None else None
        search = self._searches.get(key)
        if search is None:
            search = make_search(self.am, self.config, lm, self.pieces)
            self._searches[key] = search
        return Stream(self, search, loaded, load_s)

    def _chunk_len(self, s: Stream) -> int:
        """Feature frames of the stream's next chunk, 0 if none is ready."""
        meta = self.am.meta
        avail = s.fbank.num_frames_ready - s.next_frame
        if avail >= meta.chunk_frames:
            return meta.chunk_frames
        if s.finished and avail >= meta.min_chunk_frames:
            return avail
        return 0

    def is_ready(self, stream: Stream) -> bool:
        """Whether the stream has a chunk to decode."""
        return self._chunk_len(stream) > 0

    def decode_stream(self, stream: Stream) -> None:
        self.decode_streams([stream])

    def decode_streams(self, streams: Sequence[Stream]) -> None:
        """Decode every ready chunk of ``streams``; streams with equal chunk lengths share one
        batched encoder call per step."""
        while True:
            groups: dict[int, list[Stream]] = {}
            for s in streams:
                n = self._chunk_len(s)
                if n:
                    groups.setdefault(n, []).append(s)
            if not groups:
                return
            for n, group in sorted(groups.items()):
                self._decode_chunk(group, n)

    def _decode_chunk(self, group: list[Stream], n: int) -> None:
        am = self.am
        t0 = time.perf_counter()
        feats = np.stack([s.fbank.get_frames(s.next_frame, n) for s in group])
        t1 = time.perf_counter()
        # Each stream's position is in its own offset cache; AMState.frames is bookkeeping only.
        state = am.stack_states([dataclasses.replace(s.am_state, frames=0) for s in group])
        out, new_state = am.run_chunk(feats, state)
        t2 = time.perf_counter()
        shift = am.meta.chunk_shift
        for b, (s, st) in enumerate(zip(group, am.unstack_state(new_state), strict=True)):
            produced = out.encoder_out.shape[1]
            s.am_state = dataclasses.replace(st, frames=s.am_state.frames + produced)
            s.next_frame += shift
            s.fbank.release(min(s.next_frame, s.fbank.num_frames_ready))
            s.timings["features"] += (t1 - t0) / len(group)
            s.timings["encoder"] += (t2 - t1) / len(group)
            t3 = time.perf_counter()
            frames = out.ctc_log_probs[b] if self.config.decoder == "ctc" else out.encoder_out[b]
            s.search_state = s.search.advance(s.search_state, frames)
            s.encoder_frames += produced
            s.timings["search"] += time.perf_counter() - t3

    # -- results ----------------------------------------------------------------------------------
    def _best(self, stream: Stream, final: bool) -> Any:
        hyps = (
            stream.search.finalize(stream.search_state)
            if final
            else stream.search.partial(stream.search_state)
        )
        return hyps[0] if hyps else None

    def get_result(self, stream: Stream) -> RecognitionResult:
        """The current segment's best hypothesis: final (end-of-sentence LM scores included) once
        input is finished and every chunk decoded, partial before."""
        final = stream.finished and not self.is_ready(stream)
        timings = dict(stream.timings)
        if stream.lm_load_seconds:
            timings["lm_load"] = stream.lm_load_seconds
        return make_result(
            self._best(stream, final),
            self.tokenizer,
            self.frame_seconds,
            stream.audio_seconds,
            timings,
            final=final,
            frame_offset=stream.segment_start,
        )

    def trailing_silence(self, stream: Stream) -> tuple[bool, float, float]:
        """(speech seen, trailing silence seconds, segment seconds) of the current segment."""
        seg_frames = stream.encoder_frames - stream.segment_start
        hyp = self._best(stream, final=False)
        if hyp is None or not hyp.timestamps:
            return False, seg_frames * self.frame_seconds, seg_frames * self.frame_seconds
        silent = seg_frames - (hyp.timestamps[-1] + 1)
        return True, silent * self.frame_seconds, seg_frames * self.frame_seconds

    def is_endpoint(self, stream: Stream) -> bool:
        """Whether the endpoint rules fire for the current segment."""
        return self.endpoint.is_endpoint(*self.trailing_silence(stream))

    def reset(self, stream: Stream) -> None:
        """Start a new segment after an endpoint (features and encoder caches continue)."""
        stream.search_state = stream.search.init_state()
        stream.segment_start = stream.encoder_frames
