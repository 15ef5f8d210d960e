"""Audio I/O: read/write round trip, downmix, rate checks, resampling, clear errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from userlibri.data.audio import audio_duration, read_audio, resample_audio, write_flac
from userlibri.errors import AudioError


def _sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_flac_round_trip(tmp_path):
    x = _sine(440, 16000)
    path = tmp_path / "a" / "x.flac"
    write_flac(path, x, 16000)
    y, rate = read_audio(path)
    assert rate == 16000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(x - y)) < 1e-4  # 16-bit quantisation
    assert audio_duration(path) == pytest.approx(1.0)
    assert [p.name for p in path.parent.iterdir()] == ["x.flac"]  # no temporary left behind
    assert sf.info(str(path)).subtype == "PCM_16"


def test_write_clips(tmp_path):
    write_flac(tmp_path / "c.flac", np.array([2.0, -3.0, 0.25], dtype=np.float32), 16000)
    y, _ = read_audio(tmp_path / "c.flac")
    assert y[0] == pytest.approx(1.0, abs=1e-4) and y[1] == pytest.approx(-1.0, abs=1e-4)


def test_stereo_is_downmixed_with_warning(tmp_path, caplog):
    left, right = _sine(440, 16000), np.zeros(16000, dtype=np.float32)
    path = tmp_path / "st.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 16000)
    with caplog.at_level(logging.WARNING):
        y, rate = read_audio(path)
    assert y.ndim == 1 and np.allclose(y, left / 2, atol=1e-4)
    assert "2 channels" in caplog.text and "st.wav" in caplog.text


def test_rate_mismatch_is_an_error_unless_resampling(tmp_path):
    path = tmp_path / "r.wav"
    sf.write(str(path), _sine(440, 22050), 22050)
    with pytest.raises(AudioError, match=r"r\.wav: expected sample rate 16000 Hz, found 22050 Hz"):
        read_audio(path)
    y, rate = read_audio(path, resample=True)
    assert rate == 16000 and abs(len(y) - 16000) <= 1
    assert _peak_hz(y, 16000) == pytest.approx(440, abs=2)
    y, rate = read_audio(path, expected_rate=None)
    assert rate == 22050 and len(y) == 22050


def test_resample_audio():
    x = _sine(1000, 48000)
    y = resample_audio(x, 48000, 16000)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    assert _peak_hz(y, 16000) == pytest.approx(1000, abs=2)
    assert np.sqrt(np.mean(y[100:-100] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert resample_audio(x, 16000, 16000) is not None
    with pytest.raises(AudioError, match="positive sample rates"):
        resample_audio(x, 0, 16000)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.flac: expected an audio file, found nothing"):
        read_audio(tmp_path / "missing.flac")
    bad = tmp_path / "bad.flac"
    bad.write_text("not audio at all")
    with pytest.raises(AudioError, match=r"bad\.flac: expected a readable audio file"):
        read_audio(bad)
    with pytest.raises(AudioError, match="a directory"):
        read_audio(tmp_path)
    with pytest.raises(AudioError, match=r"bad\.flac: expected a readable"):
        audio_duration(bad)


@pytest.mark.parametrize(
    ("samples", "rate", "message"),
    [
        (np.zeros((2, 100), dtype=np.float32), 16000, "1-D mono"),
        (np.zeros(0, dtype=np.float32), 16000, "at least one sample"),
        (np.array([0.0, np.nan], dtype=np.float32), 16000, "finite"),
        (np.zeros(10, dtype=np.float32), 0, "positive sample rate"),
    ],
)
def test_write_errors(tmp_path, samples, rate, message):
    with pytest.raises(AudioError, match=message):
        write_flac(tmp_path / "w.flac", samples, rate)
    assert not (tmp_path / "w.flac").exists()
