"""Whole-utterance recognition: audio -> fbank -> ONNX encoder -> beam search with LM fusion.

``OfflineRecognizer`` runs the full-context encoder; the streaming counterpart is
:mod:`userlibri.stream`. Both share :class:`RecognizerConfig`, :class:`RecognitionResult` and the
search construction here. Torch-free: numpy, onnxruntime, kenlm, sentencepiece, soundfile.

The ``<sos/eos>`` token is never emitted (text LMs cannot score it), with or without an LM, so an
LM weight of 0 gives exactly the no-LM result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.asr.onnx_model import OnnxAcousticModel
from userlibri.data.audio import read_audio, resample_audio
from userlibri.decode.ctc_beam import CtcBeamSearch
from userlibri.decode.hyp import DecoderConfig, Hypothesis
from userlibri.decode.transducer_beam import TransducerBeamSearch
from userlibri.errors import AudioError, ConfigError
from userlibri.features import compute_fbank
from userlibri.lm.base import LanguageModel
from userlibri.lm.loader import LMCache, LoadedLM
from userlibri.text.tokenizer import SOS_EOS_PIECE, Tokenizer

log = logging.getLogger(__name__)

DECODERS = ("ctc", "transducer")
DEFAULT_DECODER = "ctc"
PRECISIONS = ("float", "int8", "ort", "ort-int8")


@dataclass(frozen=True)
class RecognizerConfig:
    """How audio is decoded: which decoder, its beam settings, and how the model runs."""

    decoder: str = DEFAULT_DECODER
    decoding: DecoderConfig = field(default_factory=DecoderConfig)
    precision: str = "float"
    num_threads: int = 1

    def validate(self) -> RecognizerConfig:
        """Raise ``ConfigError`` naming the first bad value; return self."""
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder: expected one of {DECODERS}, found {self.decoder!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {PRECISIONS}, found {self.precision!r}")
        if self.num_threads < 1:
            raise ConfigError(f"num_threads: expected >= 1, found {self.num_threads}")
        self.decoding.validate()
        return self


@dataclass(frozen=True)
class RecognitionResult:
    """One decoded utterance (or a partial result of a stream).

    ``timestamps`` are seconds from the start of the audio at which each token was emitted;
    scores are natural logs (``lm_score`` unweighted). ``timings`` holds seconds spent in
    ``features``, ``encoder`` and ``search`` (and ``lm_load`` when an LM was loaded for it).
    """

    text: str
    tokens: tuple[int, ...]
    pieces: tuple[str, ...]
    timestamps: tuple[float, ...]
    score: float
    am_score: float
    lm_score: float
    context_score: float
    audio_seconds: float
    timings: dict[str, float]
    final: bool = True

    @property
    def decode_seconds(self) -> float:
        """Compute time spent on this utterance (features + encoder + search)."""
        return sum(v for k, v in self.timings.items() if k in ("features", "encoder", "search"))

    @property
    def rtf(self) -> float:
        """Real-time factor: decode seconds per audio second (0 for empty audio)."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "pieces": list(self.pieces),
            "timestamps": [round(t, 3) for t in self.timestamps],
            "scores": {
                "total": self.score,
                "am": self.am_score,
                "lm": self.lm_score,
                "context": self.context_score,
            },
            "audio_seconds": round(self.audio_seconds, 4),
            "decode_seconds": round(self.decode_seconds, 6),
            "rtf": round(self.rtf, 6),
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "final": self.final,
        }


Search = CtcBeamSearch | TransducerBeamSearch


def suppressed_ids(pieces: Sequence[str]) -> list[int]:
    """Ids the decoders never emit: ``<sos/eos>`` (always, so LM weight 0 equals no LM)."""
    return [i for i, p in enumerate(pieces) if p == SOS_EOS_PIECE]


def make_search(
    am: OnnxAcousticModel, config: RecognizerConfig, lm: LanguageModel | None, pieces: Sequence[str]
) -> Search:
    """The beam search of ``config.decoder`` over ``am``'s outputs, fusing ``lm`` (if any)."""
    meta = am.meta
    common: dict[str, Any] = dict(
        lm=lm,
        blank_id=meta.blank_id,
        suppress_ids=suppressed_ids(pieces),
        vocab_size=meta.vocab_size,
    )
    if config.decoder == "ctc":
        return CtcBeamSearch(config.decoding, **common)
    return TransducerBeamSearch(
        am.decoder,
        am.search_joiner(),
        config.decoding,
        context_size=meta.context_size,
        joiner_broadcasts=True,
        **common,
    )


def prepare_samples(
    samples: np.ndarray, sample_rate: int, target_rate: int, what: str = "audio"
) -> np.ndarray:
    """Mono float32 at ``target_rate``: (n,) or (n, channels) input, downmixed and resampled with
    a warning."""
    arr = np.asarray(samples)
    if arr.ndim == 2:
        log.warning("%s: %d channels, downmixing to mono", what, arr.shape[1])
        arr = arr.mean(axis=1)
    if arr.ndim != 1:
        raise AudioError(f"{what}: expected samples of shape (n,) or (n, channels), found {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{what}: expected float samples in [-1, 1], found dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise AudioError(f"{what}: expected finite samples, found NaN or infinity")
    if sample_rate != target_rate:
        if sample_rate <= 0:
            raise AudioError(f"{what}: expected a positive sample rate, found {sample_rate}")
        log.warning("%s: sample rate %d Hz, resampling to the model's %d Hz", what, sample_rate, target_rate)
        arr = resample_audio(arr, sample_rate, target_rate) if arr.size else arr
    return arr


def make_result(
    hyp: Hypothesis | None,
    tokenizer: Tokenizer,
    frame_seconds: float,
    audio_seconds: float,
    timings: dict[str, float],
    final: bool = True,
    frame_offset: int = 0,
) -> RecognitionResult:
    """A :class:`RecognitionResult` from the best hypothesis (None: empty)."""
    if hyp is None:
        return RecognitionResult("", (), (), (), 0.0, 0.0, 0.0, 0.0, audio_seconds, timings, final)
    return RecognitionResult(
        text=tokenizer.decode(hyp.tokens),
        tokens=hyp.tokens,
        pieces=tuple(tokenizer.id_to_piece(t) for t in hyp.tokens),
        timestamps=tuple((frame_offset + f) * frame_seconds for f in hyp.timestamps),
        score=hyp.score,
        am_score=hyp.am_score,
        lm_score=hyp.lm_score,
        context_score=hyp.context_score,
        audio_seconds=audio_seconds,
        timings=timings,
        final=final,
    )


class OfflineRecognizer:
    """Full-context recognition of whole utterances with an optional LM (fused by the decoder).

    ``lm``: a loaded ``LanguageModel``, or a path to an LM file or per-user LM directory
    (see :mod:`userlibri.lm.loader`; ``lm_kind`` overrides the kind). The LM weight and length
    bonus are ``config.decoding.lm_weight`` / ``length_bonus``.
    """

    def __init__(
        self,
        model_dir: str | Path,
        lm: LanguageModel | str | Path | None = None,
        lm_kind: str | None = None,
        config: RecognizerConfig | None = None,
    ) -> None:
        self.config = (config or RecognizerConfig()).validate()
        self.am = OnnxAcousticModel(
            model_dir,
            self.config.precision,
            self.config.num_threads,
            mode="offline",  # type: ignore[arg-type]
        )
        self.tokenizer = Tokenizer(self.am.tokenizer_path)
        self.pieces = self.am.read_tokens()
        self.lm_info: LoadedLM | None = None
        if isinstance(lm, (str, Path)):
            self.lm_info, _ = LMCache(self.tokenizer, self.am.model_dir).get(lm, lm_kind)
            lm = self.lm_info.lm
        self.lm = lm
        self.search = make_search(self.am, self.config, lm, self.pieces)
        meta = self.am.meta
        self.sample_rate = meta.features.sample_rate
        self.frame_seconds = meta.subsampling * meta.features.frame_shift_ms / 1000.0

    def __repr__(self) -> str:
        return f"OfflineRecognizer({self.am!r}, {self.config.decoder}, lm={self.lm!r})"

    def _features(self, samples: np.ndarray, sample_rate: int, what: str) -> tuple[np.ndarray, float, float]:
        t0 = time.perf_counter()
        arr = prepare_samples(samples, sample_rate, self.sample_rate, what)
        feats = compute_fbank(arr, self.sample_rate, self.am.meta.features)
        return feats, arr.size / self.sample_rate, time.perf_counter() - t0

    def _search(self, encoder_out: np.ndarray, ctc_log_probs: np.ndarray) -> list[Hypothesis]:
        if self.config.decoder == "ctc":
            return self.search.decode(ctc_log_probs)
        return self.search.decode(encoder_out)

    def _decode(
        self, enc: np.ndarray, ctc: np.ndarray, seconds: float, timings: dict[str, float]
    ) -> RecognitionResult:
        t0 = time.perf_counter()
        hyps = self._search(enc, ctc)
        timings["search"] = time.perf_counter() - t0
        return make_result(hyps[0] if hyps else None, self.tokenizer, self.frame_seconds, seconds, timings)

    def recognize(self, samples: np.ndarray, sample_rate: int, what: str = "audio") -> RecognitionResult:
        """Decode one utterance: float samples in [-1, 1], mono (n,) or multi-channel (n, c)."""
        feats, seconds, feat_s = self._features(samples, sample_rate, what)
        t0 = time.perf_counter()
        out = self.am.run(feats)
        timings = {"features": feat_s, "encoder": time.perf_counter() - t0}
        return self._decode(out.encoder_out, out.ctc_log_probs, seconds, timings)

    def recognize_file(self, path: str | Path) -> RecognitionResult:
        """Decode an audio file (any rate or channel count soundfile reads; resampled/downmixed)."""
        samples, rate = read_audio(path, expected_rate=None)
        return self.recognize(samples, rate, str(path))

    def recognize_batch(self, audio: Sequence[tuple[np.ndarray, int]]) -> list[RecognitionResult]:
        """Decode several ``(samples, sample_rate)`` utterances; the encoder runs once on the padded
        batch (its time is shared out by audio length)."""
        prepared = [self._features(s, r, f"audio[{i}]") for i, (s, r) in enumerate(audio)]
        t0 = time.perf_counter()
        outs = self.am.run_batch([p[0] for p in prepared])
        enc_s = time.perf_counter() - t0
        total = sum(p[1] for p in prepared) or 1.0
        results = []
        for (_, seconds, feat_s), out in zip(prepared, outs, strict=True):
            timings = {"features": feat_s, "encoder": enc_s * seconds / total}
            results.append(self._decode(out.encoder_out, out.ctc_log_probs, seconds, timings))
        return results
