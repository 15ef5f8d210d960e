"""Log-mel filterbank features: one implementation for training and inference, batch and streaming.

Built on kaldi-native-fbank (the feature extractor sherpa-onnx uses), so the runtime needs no torch.
Conventions (the same as sherpa-onnx and icefall/lhotse, so their models and ours agree):

* Input samples are float32 in [-1, 1]. They are multiplied by ``FeatureConfig.sample_scale``
  (default 1.0) before the filterbank; Kaldi itself works on int16-range samples, which is
  ``sample_scale=32768``. The choice shifts every log-mel value by ``2*ln(scale)``, so it is part
  of the config and of the compatibility check.
* ``snip_edges=False``: frames are centred on multiples of the frame shift, the signal is
  reflected at the edges, and an utterance of ``n`` samples gives ``(n + shift // 2) // shift``
  frames (``shift`` in samples).
* ``dither=0`` by default, so features are deterministic. Bins with (near) zero power, e.g. digital
  silence, sit at the log floor ``ln(float32 eps) = -15.94``.

Optional global mean/variance normalisation (``FeatureStats``) is computed on training data,
saved as JSON beside the model, and applied by both ``compute_fbank`` and ``StreamingFbank``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kaldi_native_fbank as knf
import numpy as np

from userlibri.constants import DEFAULT_SAMPLE_RATE
from userlibri.errors import AudioError, ConfigError, DataFormatError, UserLibriError
from userlibri.fsio import write_json_atomic

logger = logging.getLogger(__name__)

WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular", "sine", "blackman")

#: Fields that do not change what a model was trained on; ``check_compatible`` ignores them.
#: Dither is training-time noise (sherpa-onnx runs dither-trained models with dither 0).
_NOT_COMPARED = frozenset({"dither"})

#: Peak above which input is probably int16-range samples passed as floats.
_SUSPICIOUS_PEAK = 2.0


@dataclass(frozen=True)
class FeatureConfig:
    """Fbank options. Defaults follow sherpa-onnx/icefall (lhotse's ``high_freq=-400``)."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    #: Gaussian noise added to samples (in the scaled domain); > 0 makes features random.
    dither: float = 0.0
    snip_edges: bool = False
    low_freq: float = 20.0
    #: Upper mel edge in Hz; a value <= 0 is an offset from the Nyquist frequency.
    high_freq: float = -400.0
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    #: Samples in [-1, 1] are multiplied by this before the filterbank (32768 = Kaldi's range).
    sample_scale: float = 1.0

    # -- derived values -------------------------------------------------------------------
    @property
    def frame_shift_samples(self) -> int:
        """Frame shift in samples (Kaldi truncates)."""
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def frame_length_samples(self) -> int:
        """Window length in samples (Kaldi truncates)."""
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def padded_window_samples(self) -> int:
        """FFT size."""
        n = self.frame_length_samples
        if self.round_to_power_of_two:
            return 1 << max(0, (n - 1).bit_length())
        return n

    @property
    def effective_high_freq(self) -> float:
        """Upper mel edge in Hz after resolving a non-positive ``high_freq``."""
        nyquist = 0.5 * self.sample_rate
        return self.high_freq if self.high_freq > 0 else nyquist + self.high_freq

    def num_frames(self, num_samples: int) -> int:
        """Frames ``compute_fbank`` returns for ``num_samples`` samples (Kaldi's NumFrames)."""
        shift, length = self.frame_shift_samples, self.frame_length_samples
        if self.snip_edges:
            return 0 if num_samples < length else 1 + (num_samples - length) // shift
        return (num_samples + shift // 2) // shift

    # -- validation and (de)serialisation ------------------------------------------------
    def validate(self) -> FeatureConfig:
        """Raise ``ConfigError`` for impossible values (kaldi-native-fbank silently outputs
        garbage for many of them); return ``self``."""
        problems: list[str] = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be > 0, found {self.sample_rate}")
        if self.num_mel_bins < 1:
            problems.append(f"num_mel_bins must be >= 1, found {self.num_mel_bins}")
        if not self.frame_shift_ms > 0 or not self.frame_length_ms > 0:
            problems.append(
                f"frame_shift_ms and frame_length_ms must be > 0, found "
                f"{self.frame_shift_ms} and {self.frame_length_ms}"
            )
        elif self.sample_rate > 0 and (self.frame_shift_samples < 1 or self.frame_length_samples < 2):
            problems.append(
                f"frames must span >= 2 samples and shift >= 1 sample at {self.sample_rate} Hz, found "
                f"length {self.frame_length_samples} and shift {self.frame_shift_samples} samples"
            )
        if not self.dither >= 0:
            problems.append(f"dither must be >= 0, found {self.dither}")
        if not 0.0 <= self.preemph_coeff <= 1.0:
            problems.append(f"preemph_coeff must be in [0, 1], found {self.preemph_coeff}")
        if self.window_type not in WINDOW_TYPES:
            problems.append(f"window_type must be one of {WINDOW_TYPES}, found {self.window_type!r}")
        if not (self.sample_scale > 0 and math.isfinite(self.sample_scale)):
            problems.append(f"sample_scale must be a positive number, found {self.sample_scale}")
        if self.sample_rate > 0:
            nyquist = 0.5 * self.sample_rate
            high = self.effective_high_freq
            if not 0.0 <= self.low_freq < nyquist:
                problems.append(f"low_freq must be in [0, {nyquist:g}), found {self.low_freq}")
            elif not self.low_freq < high <= nyquist:
                problems.append(
                    f"high_freq must resolve to ({self.low_freq:g}, {nyquist:g}] Hz, found "
                    f"{self.high_freq} (= {high:g} Hz)"
                )
        if problems:
            raise ConfigError("invalid FeatureConfig: " + "; ".join(problems))
        empty = _empty_mel_bins(self)
        if empty:
            raise ConfigError(
                f"invalid FeatureConfig: mel bins {empty[:5]}{'...' if len(empty) > 5 else ''} cover no "
                f"FFT bin ({self.num_mel_bins} bins between {self.low_freq:g} and "
                f"{self.effective_high_freq:g} Hz with a {self.padded_window_samples}-point FFT); "
                "use fewer mel bins or a longer frame"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for ONNX metadata and ``model.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        """Inverse of ``to_dict``; also accepts string values (ONNX metadata is a string map).

        Unknown keys raise ``ConfigError``; missing keys take the defaults. The result is validated.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"FeatureConfig: unknown keys {unknown}; expected a subset of {sorted(fields)}")
        defaults = cls()
        values = {name: _coerce(name, data[name], type(getattr(defaults, name))) for name in data}
        return cls(**values).validate()

    def check_compatible(self, other: FeatureConfig, what: str = "model") -> None:
        """Raise ``ConfigError`` listing every field where ``other`` (e.g. the config a model was
        trained with, read from its metadata) differs from ``self`` (``dither`` is not compared)."""
        diffs = []
        for f in dataclasses.fields(self):
            if f.name in _NOT_COMPARED:
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            same = (
                math.isclose(mine, theirs, rel_tol=1e-6, abs_tol=1e-9)
                if isinstance(mine, float) and isinstance(theirs, (int, float))
                else mine == theirs
            )
            if not same:
                diffs.append(f"{f.name}: expected {theirs!r} ({what}), found {mine!r}")
        if diffs:
            raise ConfigError(f"feature config does not match the {what}: " + "; ".join(diffs))

    def to_knf(self) -> knf.FbankOptions:
        """kaldi-native-fbank options for this config."""
        opts = knf.FbankOptions()
        fo = opts.frame_opts
        fo.samp_freq = float(self.sample_rate)
        fo.frame_shift_ms = float(self.frame_shift_ms)
        fo.frame_length_ms = float(self.frame_length_ms)
        fo.dither = float(self.dither)
        fo.preemph_coeff = float(self.preemph_coeff)
        fo.remove_dc_offset = bool(self.remove_dc_offset)
        fo.window_type = self.window_type
        fo.round_to_power_of_two = bool(self.round_to_power_of_two)
        fo.snip_edges = bool(self.snip_edges)
        mo = opts.mel_opts
        mo.num_bins = int(self.num_mel_bins)
        mo.low_freq = float(self.low_freq)
        mo.high_freq = float(self.high_freq)
        opts.use_energy = False
        opts.use_log_fbank = True
        opts.use_power = True
        return opts


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Convert a metadata value to the field's type, or raise ``ConfigError``."""
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes"):
                    return True
                if low in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"FeatureConfig.{name}: expected a {kind.__name__}, found {value!r}") from None


def _mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def _inverse_mel(mel: np.ndarray) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def _mel_edges(config: FeatureConfig) -> np.ndarray:
    """Left edge, centre and right edge (mel) of each bin, shape (num_mel_bins, 3); Kaldi's layout."""
    lo, hi = _mel(config.low_freq), _mel(config.effective_high_freq)
    delta = (hi - lo) / (config.num_mel_bins + 1)
    idx = np.arange(config.num_mel_bins, dtype=np.float64)[:, None]
    return lo + (idx + np.array([0.0, 1.0, 2.0])) * delta


def mel_center_frequencies(config: FeatureConfig) -> np.ndarray:
    """Centre frequency in Hz of each mel bin, shape (num_mel_bins,)."""
    return _inverse_mel(_mel_edges(config)[:, 1])


def _empty_mel_bins(config: FeatureConfig) -> list[int]:
    """Indices of mel bins whose triangle contains no FFT bin centre (Kaldi refuses these)."""
    n_fft = config.padded_window_samples
    fft_mel = _mel(np.arange(n_fft // 2) * (config.sample_rate / n_fft))
    edges = _mel_edges(config)
    inside = (fft_mel[None, :] > edges[:, :1]) & (fft_mel[None, :] < edges[:, 2:])
    return [int(i) for i in np.flatnonzero(~inside.any(axis=1))]


def _check_samples(samples: np.ndarray) -> np.ndarray:
    """Validate a waveform chunk; return it as contiguous float32 (1-D)."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise AudioError(f"expected 1-D mono samples, found an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(
            f"expected float samples in [-1, 1], found dtype {arr.dtype} (convert integer PCM by dividing "
            "by 32768)"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise AudioError("expected finite samples, found NaN or infinity")
    return arr


class FeatureStats:
    """Global per-dimension mean and standard deviation of features (for normalisation)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, count: int, min_std: float = 1e-5) -> None:
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise UserLibriError(
                f"FeatureStats: expected 1-D mean and std of equal shape, found {mean.shape} and {std.shape}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all()):
            raise UserLibriError("FeatureStats: expected finite mean and non-negative finite std")
        self.mean = mean.astype(np.float32)
        self.std = np.maximum(std, min_std).astype(np.float32)
        self.count = int(count)
        self._inv_std = (1.0 / self.std).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_features(cls, feature_arrays: Iterable[np.ndarray]) -> FeatureStats:
        """Accumulate (in float64) over arrays of shape (T, D); empty arrays are skipped."""
        total = sq = None
        count = 0
        for feats in feature_arrays:
            feats = np.asarray(feats, dtype=np.float64)
            if feats.ndim != 2:
                raise UserLibriError(f"FeatureStats: expected (T, D) features, found shape {feats.shape}")
            if total is None:
                total, sq = np.zeros(feats.shape[1]), np.zeros(feats.shape[1])
            if feats.shape[1] != total.shape[0]:
                raise UserLibriError(
                    f"FeatureStats: expected feature dim {total.shape[0]}, found {feats.shape[1]}"
                )
            total += feats.sum(axis=0)
            sq += np.square(feats).sum(axis=0)
            count += feats.shape[0]
        if count == 0 or total is None or sq is None:
            raise UserLibriError("FeatureStats: expected at least one feature frame, found none")
        mean = total / count
        var = np.maximum(sq / count - np.square(mean), 0.0)
        return cls(mean, np.sqrt(var), count)

    def apply(self, feats: np.ndarray) -> np.ndarray:
        """Normalise (T, D) features: ``(x - mean) / std``, float32."""
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise UserLibriError(
                f"FeatureStats: expected (T, {self.dim}) features, found shape {feats.shape}"
            )
        return ((feats - self.mean) * self._inv_std).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> FeatureStats:
        try:
            return cls(np.asarray(data["mean"], float), np.asarray(data["std"], float), int(data["count"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(
                source, "feature stats with keys count, mean, std (equal-length number lists)", repr(exc)
            ) from None

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataFormatError(path, "a JSON feature-stats file", f"{type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict):
            raise DataFormatError(path, "a JSON object", type(data).__name__)
        return cls.from_dict(data, source=str(path))


def _check_stats(stats: FeatureStats | None, config: FeatureConfig) -> None:
    if stats is not None and stats.dim != config.num_mel_bins:
        raise ConfigError(f"feature stats have dim {stats.dim}, expected num_mel_bins={config.num_mel_bins}")


def compute_fbank(
    samples: np.ndarray,
    sample_rate: int,
    config: FeatureConfig | None = None,
    stats: FeatureStats | None = None,
) -> np.ndarray:
    """Log-mel features of a whole utterance, shape (T, num_mel_bins), float32.

    ``samples`` are mono floats in [-1, 1] at ``sample_rate``, which must equal
    ``config.sample_rate`` (resample with ``userlibri.data.audio`` first). Audio shorter than
    half a frame shift gives (0, num_mel_bins). ``stats`` applies global normalisation.
    """
    stream = StreamingFbank(config, stats)
    if sample_rate != stream.config.sample_rate:
        raise ConfigError(
            f"compute_fbank: expected audio at {stream.config.sample_rate} Hz, found {sample_rate} Hz "
            "(resample first)"
        )
    stream.accept_waveform(samples)
    stream.input_finished()
    return stream.get_frames(0, stream.num_frames_ready)


class StreamingFbank:
    """Incremental features: feed chunks of any size, read frames as they become ready.

    Frames equal ``compute_fbank`` on the concatenated samples exactly. With ``snip_edges=False``
    the last frames need the end of the signal (Kaldi reflects it), so they are ready only after
    ``input_finished()``. Call ``release(n)`` to free frames before ``n`` once consumed.
    """

    def __init__(self, config: FeatureConfig | None = None, stats: FeatureStats | None = None) -> None:
        self.config = (config or FeatureConfig()).validate()
        _check_stats(stats, self.config)
        self.stats = stats
        self._fbank = knf.OnlineFbank(self.config.to_knf())
        self._finished = False
        self._released = 0
        self._num_samples = 0
        self._warned_peak = False

    @property
    def num_samples(self) -> int:
        """Samples accepted so far."""
        return self._num_samples

    @property
    def num_frames_ready(self) -> int:
        """Frames computed so far (absolute count, including released ones)."""
        return int(self._fbank.num_frames_ready)

    @property
    def finished(self) -> bool:
        return self._finished

    def accept_waveform(self, samples: np.ndarray) -> None:
        """Append float samples in [-1, 1] at ``config.sample_rate``."""
        if self._finished:
            raise UserLibriError("StreamingFbank: accept_waveform called after input_finished")
        arr = _check_samples(samples)
        if arr.size == 0:
            return
        if not self._warned_peak:
            peak = float(np.abs(arr).max())
            if peak > _SUSPICIOUS_PEAK:
                self._warned_peak = True
                logger.warning(
                    "samples peak at %.1f; expected floats in [-1, 1] (int16-range input passed as float?)",
                    peak,
                )
        if self.config.sample_scale != 1.0:
            arr = arr * np.float32(self.config.sample_scale)
        self._fbank.accept_waveform(float(self.config.sample_rate), arr)
        self._num_samples += arr.size

    def input_finished(self) -> None:
        """No more samples: flush the final frames. Idempotent."""
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True

    def get_frames(self, start: int, n: int) -> np.ndarray:
        """Frames ``start .. start + n - 1`` as (n, num_mel_bins) float32, normalised if stats are set."""
        if n < 0 or start < self._released or start + n > self.num_frames_ready:
            raise UserLibriError(
                f"StreamingFbank.get_frames: expected 0 <= n and {self._released} <= start and "
                f"start + n <= {self.num_frames_ready} (frames ready), found start={start}, n={n}"
            )
        if n == 0:
            return np.zeros((0, self.config.num_mel_bins), dtype=np.float32)
        get = self._fbank.get_frame
        feats = np.stack([get(i) for i in range(start, start + n)]).astype(np.float32, copy=False)
        return self.stats.apply(feats) if self.stats is not None else feats

    def release(self, before: int) -> None:
        """Free frames with index < ``before``; they can no longer be read."""
        if before > self.num_frames_ready:
            raise UserLibriError(
                f"StreamingFbank.release: expected before <= {self.num_frames_ready}, found {before}"
            )
        if before > self._released:
            self._fbank.pop(before - self._released)
            self._released = before
