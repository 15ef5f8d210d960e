"""OnlineRecognizer and Stream on the committed tiny random model: any chunking of the audio equals
feeding it whole, batched streams equal streams decoded alone (at different offsets, with
different LMs), LM weight 0 equals no LM, per-stream LMs loaded once, endpointing, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from userlibri.decode import DecoderConfig
from userlibri.errors import ConfigError, UserLibriError
from userlibri.recognizer import RecognitionResult, RecognizerConfig
from userlibri.stream import EndpointConfig, OnlineRecognizer, Stream

DATA = Path(__file__).parent / "data"
MODEL = DATA / "am_tiny"
ARPA = DATA / "recognizer" / "words.arpa"


def _audio(seconds: float, seed: int) -> np.ndarray:
    return (np.random.RandomState(seed).randn(int(16000 * seconds)) * 0.1).astype(np.float32)


def _rec(decoder: str = "ctc", lm_weight: float = 0.5, **kw: object) -> OnlineRecognizer:
    config = RecognizerConfig(decoder=decoder, decoding=DecoderConfig(beam=4, lm_weight=lm_weight))
    return OnlineRecognizer(MODEL, config=config, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ctc() -> OnlineRecognizer:
    return _rec("ctc")


@pytest.fixture(scope="module")
def rnnt() -> OnlineRecognizer:
    return _rec("transducer")


def _whole(
    rec: OnlineRecognizer, audio: np.ndarray, lm: object = None, rate: int = 16000
) -> RecognitionResult:
    s = rec.create_stream(lm=lm)  # type: ignore[arg-type]
    s.accept_waveform(audio, rate)
    s.input_finished()
    rec.decode_streams([s])
    return rec.get_result(s)


def _chunked(
    rec: OnlineRecognizer, audio: np.ndarray, sizes: list[int], lm: object = None
) -> RecognitionResult:
    s = rec.create_stream(lm=lm)  # type: ignore[arg-type]
    pos, k = 0, 0
    while pos < audio.size:
        n = sizes[k % len(sizes)]
        s.accept_waveform(audio[pos : pos + n], 16000)
        rec.decode_streams([s])
        partial = rec.get_result(s)
        assert not partial.final
        pos, k = pos + n, k + 1
    s.input_finished()
    rec.decode_streams([s])
    return rec.get_result(s)


def _same(a: RecognitionResult, b: RecognitionResult) -> None:
    assert a.tokens == b.tokens and a.timestamps == b.timestamps
    assert a.score == pytest.approx(b.score, abs=1e-6) and a.lm_score == pytest.approx(b.lm_score, abs=1e-9)


@pytest.mark.parametrize("decoder", ["ctc", "transducer"])
def test_chunked_equals_whole_for_fixed_chunkings(
    decoder: str, ctc: OnlineRecognizer, rnnt: OnlineRecognizer
) -> None:
    rec = ctc if decoder == "ctc" else rnnt
    audio = _audio(1.3, 0)
    whole = _whole(rec, audio, lm=ARPA)
    assert whole.final and whole.tokens and whole.lm_score < 0
    for sizes in ([1, 7, 160], [2560], [4000, 1, 333], [audio.size]):
        _same(_chunked(rec, audio, sizes, lm=ARPA), whole)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=6), seconds=st.floats(0.0, 1.2))
def test_chunked_equals_whole_for_random_chunkings(
    ctc: OnlineRecognizer, sizes: list[int], seconds: float
) -> None:
    audio = _audio(seconds, 1)
    _same(_chunked(ctc, audio, sizes), _whole(ctc, audio))


@pytest.mark.parametrize("decoder", ["ctc", "transducer"])
def test_batched_streams_equal_streams_alone(
    decoder: str, ctc: OnlineRecognizer, rnnt: OnlineRecognizer
) -> None:
    rec = ctc if decoder == "ctc" else rnnt
    audios = [_audio(s, 20 + i) for i, s in enumerate((1.4, 0.5, 1.0, 0.0))]
    lms = [ARPA, None, ARPA, None]
    alone = [_whole(rec, a, lm) for a, lm in zip(audios, lms, strict=True)]
    streams = [rec.create_stream(lm=lm) for lm in lms]
    # The first stream starts early: the batch mixes streams at different offsets.
    streams[0].accept_waveform(audios[0][:9000], 16000)
    rec.decode_streams(streams)
    assert streams[0].encoder_frames > 0
    for i, (s, a) in enumerate(zip(streams, audios, strict=True)):
        s.accept_waveform(a[9000:] if i == 0 else a, 16000)
        s.input_finished()
    rec.decode_streams(streams)
    for s, one in zip(streams, alone, strict=True):
        _same(rec.get_result(s), one)


def test_lm_weight_zero_equals_no_lm_when_streaming() -> None:
    audio = _audio(1.0, 3)
    plain = _whole(_rec("ctc"), audio)
    zero = _whole(_rec("ctc", lm_weight=0.0), audio, lm=ARPA)
    assert zero.tokens == plain.tokens and zero.score == pytest.approx(plain.score)
    assert zero.lm_score < 0


def test_per_stream_lm_is_loaded_once_and_load_time_reported(tmp_path: Path) -> None:
    rec = _rec("ctc")
    user = tmp_path / "1342"
    user.mkdir()
    (user / "ngram.arpa").write_bytes(ARPA.read_bytes())
    first, second, plain = (
        rec.create_stream(lm=user),
        rec.create_stream(lm=user / "ngram.arpa"),
        rec.create_stream(),
    )
    assert first.lm_load_seconds > 0 and second.lm_load_seconds == 0 and plain.lm is None
    assert first.lm is second.lm and first.search is second.search and plain.search is not first.search
    assert len(rec.lms) == 1
    first.accept_waveform(_audio(0.5, 4), 16000)
    first.input_finished()
    rec.decode_streams([first])
    assert rec.get_result(first).timings["lm_load"] == first.lm_load_seconds


def test_resampled_and_stereo_input(ctc: OnlineRecognizer, caplog: pytest.LogCaptureFixture) -> None:
    audio8k = _audio(1.0, 5)[::2].copy()
    with caplog.at_level(logging.WARNING):
        whole = _whole(ctc, audio8k, rate=8000)
    assert "resampling" in caplog.text and whole.audio_seconds == pytest.approx(1.0, abs=0.01)
    s = ctc.create_stream()
    for k in range(0, audio8k.size, 777):
        s.accept_waveform(audio8k[k : k + 777], 8000)
    s.input_finished()
    ctc.decode_streams([s])
    assert ctc.get_result(s).audio_seconds == pytest.approx(whole.audio_seconds, abs=1e-3)
    stereo = np.stack([_audio(0.6, 6)] * 2, axis=1)
    with caplog.at_level(logging.WARNING):
        res = _whole(ctc, stereo)
    assert "downmixing" in caplog.text
    _same(res, _whole(ctc, stereo[:, 0].copy()))


def test_empty_stream_gives_an_empty_final_result(ctc: OnlineRecognizer) -> None:
    s = ctc.create_stream()
    s.input_finished()
    ctc.decode_streams([s])
    res = ctc.get_result(s)
    assert res.final and res.text == "" and res.audio_seconds == 0.0


def test_bad_stream_input_is_refused(ctc: OnlineRecognizer) -> None:
    s = ctc.create_stream()
    s.accept_waveform(_audio(0.1, 7), 16000)
    with pytest.raises(UserLibriError, match="8000 Hz"):
        s.accept_waveform(_audio(0.1, 7), 8000)
    with pytest.raises(UserLibriError, match="float"):
        s.accept_waveform(np.zeros(10, np.int16), 16000)
    s.input_finished()
    with pytest.raises(UserLibriError, match="after input_finished"):
        s.accept_waveform(_audio(0.1, 7), 16000)


def test_endpoint_rules() -> None:
    ep = EndpointConfig()
    assert not ep.is_endpoint(False, 2.3, 2.3) and ep.is_endpoint(False, 2.4, 2.4)
    assert not ep.is_endpoint(True, 1.1, 5.0) and ep.is_endpoint(True, 1.2, 5.0)
    assert ep.is_endpoint(True, 0.0, 20.0)
    assert not EndpointConfig(enabled=False).is_endpoint(False, 99.0, 99.0)
    assert not EndpointConfig(rule1_min_trailing_silence=0).is_endpoint(False, 99.0, 1.0)
    with pytest.raises(ConfigError, match="rule2"):
        EndpointConfig(rule2_min_trailing_silence=float("nan")).validate()


def _feed_until_endpoint(rec: OnlineRecognizer, s: Stream, audio: np.ndarray) -> int:
    for k in range(0, audio.size, 1600):
        s.accept_waveform(audio[k : k + 1600], 16000)
        rec.decode_streams([s])
        if rec.is_endpoint(s):
            return k + 1600
    return -1


def test_endpoint_by_segment_length_and_reset() -> None:
    rec = _rec("ctc", endpoint=EndpointConfig(rule3_min_utterance_length=0.5))
    s = rec.create_stream()
    at = _feed_until_endpoint(rec, s, _audio(2.0, 8))
    assert 0 < at <= 16000 * 0.5 + 2 * 1600 + rec.am.meta.chunk_frames * 160
    first = rec.get_result(s)
    rec.reset(s)
    assert not rec.is_endpoint(s) and rec.get_result(s).tokens == ()
    s.accept_waveform(_audio(0.4, 9), 16000)
    rec.decode_streams([s])
    later = rec.get_result(s)
    assert later.tokens and later.timestamps[0] >= first.timestamps[-1]


def test_trailing_silence_counts_frames_after_the_last_token() -> None:
    rec = _rec("ctc")
    s = rec.create_stream()
    s.accept_waveform(_audio(1.0, 10), 16000)
    rec.decode_streams([s])
    speech, silence, length = rec.trailing_silence(s)
    best = rec.get_result(s)
    assert speech and length == pytest.approx(s.encoder_frames * rec.frame_seconds)
    assert silence == pytest.approx(length - best.timestamps[-1] - rec.frame_seconds)
