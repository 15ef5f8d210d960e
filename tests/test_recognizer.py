"""OfflineRecognizer on the committed tiny random model (tests/data/am_tiny): results, LM weight 0
equals no LM, batch equals single, bad audio, a model directory missing a file, an LM whose
vocabulary does not match."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from userlibri.decode import DecoderConfig, ctc_greedy
from userlibri.errors import AudioError, DataFormatError, UserLibriError
from userlibri.lm.loader import LMCache, resolve_lm
from userlibri.recognizer import OfflineRecognizer, RecognizerConfig

DATA = Path(__file__).parent / "data"
MODEL = DATA / "am_tiny"
ARPA = DATA / "recognizer" / "words.arpa"
LOWER_ARPA = DATA / "recognizer" / "lower.arpa"


def _audio(seconds: float, seed: int) -> np.ndarray:
    return (np.random.RandomState(seed).randn(int(16000 * seconds)) * 0.1).astype(np.float32)


def _config(decoder: str = "ctc", **kw: object) -> RecognizerConfig:
    return RecognizerConfig(decoder=decoder, decoding=DecoderConfig(beam=4, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ctc() -> OfflineRecognizer:
    return OfflineRecognizer(MODEL, config=_config())


def test_result_fields_are_consistent(ctc: OfflineRecognizer) -> None:
    res = ctc.recognize(_audio(1.5, 0), 16000)
    assert res.tokens, "the random model emits tokens on noise"
    assert res.text == ctc.tokenizer.decode(res.tokens)
    assert len(res.timestamps) == len(res.tokens) == len(res.pieces)
    assert list(res.timestamps) == sorted(res.timestamps) and res.timestamps[-1] < 1.5
    assert res.audio_seconds == pytest.approx(1.5)
    assert res.score == pytest.approx(res.am_score) and res.lm_score == 0.0
    assert set(res.timings) == {"features", "encoder", "search"} and res.rtf > 0
    d = res.to_dict()
    assert d["text"] == res.text and d["scores"]["am"] == res.am_score


def test_beam_one_equals_greedy_on_the_model_output(ctc: OfflineRecognizer) -> None:
    rec = OfflineRecognizer(MODEL, config=RecognizerConfig(decoding=DecoderConfig.exhaustive(1)))
    audio = _audio(1.0, 1)
    res = rec.recognize(audio, 16000)
    feats = rec._features(audio, 16000, "x")[0]
    greedy = ctc_greedy(rec.am.run(feats).ctc_log_probs, rec.am.meta.blank_id)
    assert res.tokens == greedy.tokens


@pytest.mark.parametrize("decoder", ["ctc", "transducer"])
def test_lm_weight_zero_equals_no_lm(decoder: str) -> None:
    audio = _audio(1.2, 2)
    plain = OfflineRecognizer(MODEL, config=_config(decoder)).recognize(audio, 16000)
    zero = OfflineRecognizer(MODEL, lm=ARPA, config=_config(decoder, lm_weight=0.0)).recognize(audio, 16000)
    assert zero.tokens == plain.tokens and zero.timestamps == plain.timestamps
    assert zero.score == pytest.approx(plain.score) and zero.am_score == pytest.approx(plain.am_score)
    assert zero.lm_score < 0  # scored, only not weighted
    fused = OfflineRecognizer(MODEL, lm=ARPA, config=_config(decoder, lm_weight=0.8)).recognize(audio, 16000)
    assert fused.score == pytest.approx(fused.am_score + 0.8 * fused.lm_score)


def test_batch_equals_one_at_a_time(ctc: OfflineRecognizer) -> None:
    audios = [_audio(s, 10 + i) for i, s in enumerate((0.7, 1.9, 0.0, 1.1))]
    batch = ctc.recognize_batch([(a, 16000) for a in audios])
    for a, b in zip(audios, batch, strict=True):
        one = ctc.recognize(a, 16000)
        assert b.tokens == one.tokens
        assert b.score == pytest.approx(one.score, abs=1e-3)


def test_empty_and_too_short_audio_give_empty_results(ctc: OfflineRecognizer) -> None:
    for n in (0, 1, 100):
        res = ctc.recognize(np.zeros(n, np.float32), 16000)
        assert res.text == "" and res.tokens == () and res.rtf >= 0


def test_files_wrong_rate_and_stereo_are_converted_with_warnings(
    ctc: OfflineRecognizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = _audio(1.0, 3)
    sf.write(tmp_path / "a.wav", audio, 16000)
    assert (
        ctc.recognize_file(tmp_path / "a.wav").tokens
        == ctc.recognize(sf.read(tmp_path / "a.wav", dtype="float32")[0], 16000).tokens
    )
    sf.write(tmp_path / "s.flac", np.stack([audio, audio], axis=1), 8000)
    with caplog.at_level(logging.WARNING):
        res = ctc.recognize_file(tmp_path / "s.flac")
    assert "downmixing" in caplog.text and "resampling" in caplog.text
    assert res.audio_seconds == pytest.approx(2.0, abs=1e-3)  # 16000 samples at 8 kHz


def test_unreadable_and_truncated_audio_raise_audio_errors(ctc: OfflineRecognizer, tmp_path: Path) -> None:
    (tmp_path / "text.flac").write_text("not audio")
    with pytest.raises(AudioError, match="text.flac"):
        ctc.recognize_file(tmp_path / "text.flac")
    sf.write(tmp_path / "full.flac", _audio(1.0, 4), 16000)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:40])
    with pytest.raises(AudioError, match="cut.flac"):
        ctc.recognize_file(tmp_path / "cut.flac")
    with pytest.raises(AudioError, match="finite"):
        ctc.recognize(np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(AudioError, match="float"):
        ctc.recognize(np.zeros(10, np.int16), 16000)


def test_model_dir_missing_a_file_lists_it(tmp_path: Path) -> None:
    shutil.copytree(MODEL, tmp_path / "m")
    (tmp_path / "m" / "joiner.onnx").unlink()
    (tmp_path / "m" / "tokens.txt").unlink()
    with pytest.raises(DataFormatError, match=r"joiner\.onnx.*tokens\.txt|tokens\.txt.*joiner\.onnx"):
        OfflineRecognizer(tmp_path / "m")


def test_lm_with_another_vocabulary_is_refused_naming_both() -> None:
    with pytest.raises(UserLibriError, match="vocabulary mismatch") as e:
        OfflineRecognizer(MODEL, lm=LOWER_ARPA)
    assert "lower.arpa" in str(e.value) and "am_tiny" in str(e.value)


def test_lm_directory_convention_and_cache(tmp_path: Path) -> None:
    (tmp_path / "u").mkdir()
    shutil.copy(ARPA, tmp_path / "u" / "ngram.arpa")
    assert resolve_lm(tmp_path / "u") == ("kenlm-word", tmp_path / "u" / "ngram.arpa")
    shutil.copy(ARPA, tmp_path / "u" / "mix.arpa")
    assert resolve_lm(tmp_path / "u")[1].name == "mix.arpa"
    with pytest.raises(DataFormatError, match="lm.int8.onnx"):
        resolve_lm(tmp_path / "u", "neural-onnx")
    with pytest.raises(DataFormatError, match="no such file"):
        resolve_lm(tmp_path / "nothing")
    rec = OfflineRecognizer(MODEL)
    cache = LMCache(rec.tokenizer, MODEL)
    first, hit1 = cache.get(tmp_path / "u")
    again, hit2 = cache.get(tmp_path / "u" / "mix.arpa")
    assert (hit1, hit2) == (False, True) and again is first and first.load_seconds > 0


def test_transducer_decoder_runs_and_beam_is_not_worse_than_greedy() -> None:
    audio = _audio(1.0, 5)
    beam = OfflineRecognizer(MODEL, config=_config("transducer")).recognize(audio, 16000)
    greedy = OfflineRecognizer(
        MODEL, config=RecognizerConfig(decoder="transducer", decoding=DecoderConfig.exhaustive(1))
    ).recognize(audio, 16000)
    assert beam.tokens and greedy.tokens
    assert beam.am_score >= greedy.am_score - 1e-4
