"""Fbank features: streaming equals batch, known properties, config and stats handling."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from userlibri.errors import AudioError, ConfigError, DataFormatError, UserLibriError
from userlibri.features import (
    FeatureConfig,
    FeatureStats,
    StreamingFbank,
    compute_fbank,
    mel_center_frequencies,
)

SR = 16000


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise plus a few harmonics with an amplitude envelope: exercises all mel bins."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.05 * rng.standard_normal(t.size)
    for f0 in (180.0, 360.0, 1200.0, 3100.0):
        x += 0.1 * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)
    return x.astype(np.float32)


def _stream(samples: np.ndarray, sizes, config: FeatureConfig | None = None, stats=None) -> np.ndarray:
    """Feed ``samples`` in chunks of the given sizes (cycled), reading frames as they are ready."""
    fb = StreamingFbank(config, stats)
    out, pos, read, i = [], 0, 0, 0
    while pos < samples.size:
        n = sizes[i % len(sizes)]
        fb.accept_waveform(samples[pos : pos + n])
        pos += n
        i += 1
        ready = fb.num_frames_ready
        if ready > read:
            out.append(fb.get_frames(read, ready - read))
            fb.release(ready)
            read = ready
    fb.input_finished()
    out.append(fb.get_frames(read, fb.num_frames_ready - read))
    return np.concatenate(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_random_chunks_equals_batch(seed: int) -> None:
    x = _speechlike(1.37, seed)
    whole = compute_fbank(x, SR)
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(1, 2000, size=50)]
    streamed = _stream(x, sizes)
    assert streamed.shape == whole.shape == (FeatureConfig().num_frames(x.size), 80)
    np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize("sizes", [[1], [7, 1, 160, 3], [400], [10**6]])
def test_streaming_edge_chunk_sizes(sizes: list[int]) -> None:
    x = _speechlike(0.3, seed=5)
    np.testing.assert_array_equal(_stream(x, sizes), compute_fbank(x, SR))


def test_streaming_with_stats_and_snip_edges() -> None:
    config = FeatureConfig(snip_edges=True, num_mel_bins=40)
    x = _speechlike(0.5, seed=3)
    stats = FeatureStats.from_features([compute_fbank(x, SR, config)])
    whole = compute_fbank(x, SR, config, stats)
    np.testing.assert_array_equal(_stream(x, [333, 1, 17], config, stats), whole)
    # Normalised with its own stats: zero mean, unit variance per dimension.
    np.testing.assert_allclose(whole.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(whole.std(axis=0), 1.0, atol=1e-3)


def test_frames_become_ready_incrementally() -> None:
    fb = StreamingFbank()
    fb.accept_waveform(np.zeros(SR, dtype=np.float32))
    ready_before = fb.num_frames_ready
    assert 0 < ready_before < 100  # the last frames wait for the end of the signal
    fb.input_finished()
    assert fb.num_frames_ready == 100
    with pytest.raises(UserLibriError, match="after input_finished"):
        fb.accept_waveform(np.zeros(10, dtype=np.float32))


@pytest.mark.parametrize("n", [0, 1, 79, 80, 159, 160, 161, 239, 240, 399, 400, 401, 16000, 16079, 16080])
def test_frame_count_formula_no_snip_edges(n: int) -> None:
    feats = compute_fbank(np.full(n, 0.01, dtype=np.float32), SR)
    assert feats.shape == ((n + 80) // 160, 80) == (FeatureConfig().num_frames(n), 80)
    assert feats.dtype == np.float32


@pytest.mark.parametrize("n", [0, 399, 400, 401, 560])
def test_frame_count_formula_snip_edges(n: int) -> None:
    config = FeatureConfig(snip_edges=True)
    expected = 0 if n < 400 else 1 + (n - 400) // 160
    assert compute_fbank(np.full(n, 0.01, dtype=np.float32), SR, config).shape == (expected, 80)


def test_empty_and_short_audio() -> None:
    assert compute_fbank(np.zeros(0, dtype=np.float32), SR).shape == (0, 80)
    assert compute_fbank(np.zeros(50, dtype=np.float32), SR).shape == (0, 80)
    fb = StreamingFbank()
    fb.input_finished()
    assert fb.num_frames_ready == 0
    assert fb.get_frames(0, 0).shape == (0, 80)


def test_silence_is_low_and_constant() -> None:
    feats = compute_fbank(np.zeros(SR, dtype=np.float32), SR)
    # Zero power hits the log floor (float32 epsilon): ln(1.19e-7) = -15.94.
    np.testing.assert_allclose(feats, np.log(np.finfo(np.float32).eps), rtol=1e-6)
    speech = compute_fbank(_speechlike(1.0), SR)
    assert speech.min() > feats.max() + 1.0


def test_sine_peaks_at_the_right_mel_bin() -> None:
    config = FeatureConfig()
    t = np.arange(SR) / SR
    for freq in (300.0, 1000.0, 4000.0):
        feats = compute_fbank((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, config)
        peak_bins = feats[5:-5].argmax(axis=1)
        expected = int(np.argmin(np.abs(mel_center_frequencies(config) - freq)))
        assert set(peak_bins.tolist()) <= {expected - 1, expected, expected + 1}
        assert np.bincount(peak_bins).argmax() == expected


def test_sample_scale_shifts_log_mel_by_constant() -> None:
    x = _speechlike(0.5)
    base = compute_fbank(x, SR)
    scaled = compute_fbank(x, SR, FeatureConfig(sample_scale=32768.0))
    above_floor = base > np.log(np.finfo(np.float32).eps) + 1.0  # the log floor does not scale
    assert above_floor.mean() > 0.99
    np.testing.assert_allclose((scaled - base)[above_floor], 2 * np.log(32768.0), atol=1e-3)


def test_dither_zero_is_deterministic() -> None:
    x = _speechlike(0.4)
    np.testing.assert_array_equal(compute_fbank(x, SR), compute_fbank(x.copy(), SR))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"num_mel_bins": 0}, "num_mel_bins"),
        ({"frame_shift_ms": 0.0}, "frame_shift_ms"),
        ({"frame_length_ms": 0.05}, "2 samples"),
        ({"dither": -1.0}, "dither"),
        ({"preemph_coeff": 1.5}, "preemph_coeff"),
        ({"window_type": "kaiser"}, "window_type"),
        ({"sample_scale": 0.0}, "sample_scale"),
        ({"low_freq": 9000.0}, "low_freq"),
        ({"low_freq": 5000.0, "high_freq": 4000.0}, "high_freq"),
        ({"high_freq": 9000.0}, "high_freq"),
        ({"num_mel_bins": 128}, "cover no FFT bin"),
    ],
)
def test_config_validation(changes: dict, message: str) -> None:
    config = dataclasses.replace(FeatureConfig(), **changes)
    with pytest.raises(ConfigError, match=message):
        config.validate()
    with pytest.raises(ConfigError):
        StreamingFbank(config)


def test_config_round_trip_and_metadata_strings() -> None:
    config = FeatureConfig(num_mel_bins=64, snip_edges=True, high_freq=-200.0)
    assert FeatureConfig.from_dict(config.to_dict()) == config
    assert FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    as_strings = {k: str(v) for k, v in config.to_dict().items()}
    assert FeatureConfig.from_dict(as_strings) == config
    assert FeatureConfig.from_dict({}) == FeatureConfig()
    with pytest.raises(ConfigError, match="unknown keys"):
        FeatureConfig.from_dict({"num_bins": 80})
    with pytest.raises(ConfigError, match="num_mel_bins: expected a int"):
        FeatureConfig.from_dict({"num_mel_bins": "80.5"})
    with pytest.raises(ConfigError, match="snip_edges: expected a bool"):
        FeatureConfig.from_dict({"snip_edges": "maybe"})
    with pytest.raises(ConfigError, match="num_mel_bins"):
        FeatureConfig.from_dict({"num_mel_bins": -3})


def test_check_compatible_lists_every_difference() -> None:
    model = FeatureConfig()
    FeatureConfig().check_compatible(model)
    FeatureConfig(dither=1e-5).check_compatible(model)  # dither is training-time noise
    FeatureConfig(frame_shift_ms=10).check_compatible(model)  # int vs float of the same value
    runtime = FeatureConfig(num_mel_bins=40, snip_edges=True, sample_scale=32768.0)
    with pytest.raises(ConfigError) as info:
        runtime.check_compatible(model)
    text = str(info.value)
    for name in ("num_mel_bins", "snip_edges", "sample_scale"):
        assert name in text
    assert "frame_shift_ms" not in text
    assert "expected 80 (model), found 40" in text


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="expected audio at 16000 Hz, found 8000 Hz"):
        compute_fbank(np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(AudioError, match="1-D"):
        compute_fbank(np.zeros((2, 800), dtype=np.float32), SR)
    with pytest.raises(AudioError, match="int16"):
        compute_fbank(np.zeros(800, dtype=np.int16), SR)
    with pytest.raises(AudioError, match="finite"):
        compute_fbank(np.array([0.0, np.nan] * 400, dtype=np.float32), SR)
    with pytest.raises(ConfigError, match="stats have dim 40"):
        StreamingFbank(FeatureConfig(), FeatureStats(np.zeros(40), np.ones(40), 1))
    fb = StreamingFbank()
    fb.accept_waveform(np.zeros(SR, dtype=np.float32))
    with pytest.raises(UserLibriError, match="get_frames"):
        fb.get_frames(0, fb.num_frames_ready + 1)
    fb.release(10)
    with pytest.raises(UserLibriError, match="get_frames"):
        fb.get_frames(5, 2)
    assert fb.get_frames(10, 2).shape == (2, 80)


def test_int16_range_float_input_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="userlibri.features"):
        compute_fbank(np.full(800, 1000.0, dtype=np.float32), SR)
    assert "int16-range" in caplog.text


def test_float64_input_equals_float32() -> None:
    x = _speechlike(0.3)
    np.testing.assert_array_equal(compute_fbank(x.astype(np.float64), SR), compute_fbank(x, SR))


def test_feature_stats_save_load_and_errors(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(3.0, 2.0, size=(n, 80)).astype(np.float32) for n in (50, 0, 70)]
    stats = FeatureStats.from_features(arrays)
    assert stats.count == 120
    stacked = np.concatenate(arrays).astype(np.float64)
    np.testing.assert_allclose(stats.mean, stacked.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, stacked.std(axis=0), rtol=1e-4)
    path = tmp_path / "stats.json"
    stats.save(path)
    loaded = FeatureStats.load(path)
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.std, stats.std)
    np.testing.assert_array_equal(loaded.apply(arrays[0]), stats.apply(arrays[0]))
    # Constant dimensions are floored, not divided by zero.
    const = FeatureStats.from_features([np.ones((10, 80), dtype=np.float32)])
    assert np.isfinite(const.apply(np.ones((3, 80), dtype=np.float32))).all()
    with pytest.raises(UserLibriError, match="at least one"):
        FeatureStats.from_features([np.zeros((0, 80))])
    with pytest.raises(UserLibriError, match="feature dim 80"):
        FeatureStats.from_features([np.zeros((2, 80)), np.zeros((2, 40))])
    with pytest.raises(UserLibriError, match=r"\(T, 80\)"):
        stats.apply(np.zeros((2, 40), dtype=np.float32))
    bad = tmp_path / "bad.json"
    bad.write_text('{"mean": [0.0]}')
    with pytest.raises(DataFormatError, match="bad.json"):
        FeatureStats.load(bad)
    bad.write_text("not json")
    with pytest.raises(DataFormatError, match="JSON"):
        FeatureStats.load(bad)
