"""Audio I/O: read any soundfile-readable file as float32 mono, write 16-bit FLAC atomically,
and resample (soxr, the SoX resampler as a library).

``read_audio`` is what every consumer of corpus audio calls (features, benchmarks, builders):
errors name the file and say what was expected and found.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from userlibri.constants import DEFAULT_SAMPLE_RATE
from userlibri.errors import AudioError, missing_dependency
from userlibri.fsio import atomic_path

log = logging.getLogger(__name__)


def read_audio(
    path: str | Path,
    expected_rate: int | None = DEFAULT_SAMPLE_RATE,
    resample: bool = False,
) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 mono samples in [-1, 1] and return ``(samples, rate)``.

    Multi-channel audio is averaged to mono with a warning. When ``expected_rate`` is given and the
    file has another rate, raise ``AudioError``, or with ``resample=True`` resample to it.
    ``expected_rate=None`` accepts any rate.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(
            f"{path}: expected an audio file, found {'a directory' if path.exists() else 'nothing'}"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: expected a readable audio file (flac/wav/ogg), found an error: {e}") from e
    if data.shape[1] > 1:
        log.warning("%s: %d channels, downmixing to mono", path, data.shape[1])
        samples = data.mean(axis=1, dtype=np.float32)
    else:
        samples = data[:, 0]
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if expected_rate is not None and rate != expected_rate:
        if not resample:
            raise AudioError(f"{path}: expected sample rate {expected_rate} Hz, found {rate} Hz")
        samples = resample_audio(samples, rate, expected_rate)
        rate = expected_rate
    return samples, int(rate)


def write_flac(path: str | Path, samples: np.ndarray, rate: int = DEFAULT_SAMPLE_RATE) -> None:
    """Write mono float samples (clipped to [-1, 1]) as 16-bit FLAC, atomically."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise AudioError(f"{path}: expected 1-D mono samples, found shape {samples.shape}")
    if samples.size == 0:
        raise AudioError(f"{path}: expected at least one sample, found none")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: expected finite samples, found NaN or inf")
    if rate <= 0:
        raise AudioError(f"{path}: expected a positive sample rate, found {rate}")
    clipped = np.clip(samples.astype(np.float32, copy=False), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), clipped, int(rate), format="FLAC", subtype="PCM_16")


def resample_audio(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample mono float samples from ``orig_rate`` to ``new_rate`` (soxr, high quality)."""
    if orig_rate <= 0 or new_rate <= 0:
        raise AudioError(f"expected positive sample rates, found {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return np.asarray(samples, dtype=np.float32)
    try:
        import soxr
    except ImportError as e:
        raise missing_dependency("soxr", "pip install soxr==1.1.0") from e
    out = soxr.resample(np.asarray(samples, dtype=np.float32), orig_rate, new_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: expected a readable audio file, found an error: {e}") from e
    return info.frames / info.samplerate
