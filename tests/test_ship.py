"""``userlibri asr ship`` on the committed tiny model over a tiny LibriSpeech layout: files copied,
greedy WER equal to decoding by hand, model card, atomic failure, and the shipped-model lookup."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from userlibri.asr.ship import CARD_FILE, EVAL_FILE, MODES, logged_seconds, mode_name, ship_model
from userlibri.cli import cli
from userlibri.data.librispeech import write_transcripts
from userlibri.decode.hyp import DecoderConfig
from userlibri.errors import UserLibriError
from userlibri.models import model_dir
from userlibri.recognizer import OfflineRecognizer, RecognizerConfig

MODEL = Path(__file__).parent / "data" / "am_tiny"
TEXTS = ("ABBA CAB", "BAD DEAF FADE", "CAFE")


def _layout(root: Path) -> Path:
    """Two splits, one speaker each, three utterances of random audio; synth.json names voices."""
    readers = []
    for k, (split, spk) in enumerate((("test-clean", "11"), ("test-other", "22"))):
        d = root / split / spk / "7"
        d.mkdir(parents=True)
        trans = {}
        for i, text in enumerate(TEXTS):
            utt = f"{spk}-7-{i:04d}"
            audio = np.random.RandomState(10 * k + i).randn(8000 + 2000 * i).astype(np.float32) * 0.1
            sf.write(d / f"{utt}.flac", audio, 16000)
            trans[utt] = text
        write_transcripts(d / f"{spk}-7.trans.txt", trans)
        readers.append({"speaker_id": spk, "voice": f"flite:v{k}", "split": split})
    (root / "synth.json").write_text(json.dumps({"readers": readers, "splits": {}}))
    return root


def _exp(root: Path) -> Path:
    root.mkdir()
    train = {"speed_factors": [1.15], "noise_copies": 1, "noise_snr_db": [0, 25], "noise_slope": [0, 2]}
    (root / "config.json").write_text(json.dumps({"model": {}, "train": {**train, "reverb_prob": 0.5}}))
    log = [
        {"event": "train", "step": 20, "ctc": 3.0, "transducer": 2.0, "lr": 1e-3},
        {"event": "dev", "step": 20, "wer_full_ctc": 90.0},
        {"event": "stop", "step": 20, "epoch": 1, "reason": "max_steps", "seconds": 60.0, "averaged": ["a"]},
    ]
    (root / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return root


def test_ship_copies_evaluates_and_writes_a_card(tmp_path: Path) -> None:
    data, exp, out = _layout(tmp_path / "LS"), _exp(tmp_path / "exp"), tmp_path / "shipped"
    # A corpus added with `asr train --add-train` is listed with its synth.json numbers.
    extra = tmp_path / "LS-extra"
    extra.mkdir()
    train = {"hours": 1.8, "utterances": 514, "readers": 22, "voices": ["kokoro:jf_alpha"]}
    (extra / "synth.json").write_text(json.dumps({"splits": {"train": train}}))
    corpora = [
        {"data": str(data), "utterances": 6, "repeat": 1},
        {"data": str(extra), "utterances": 514, "repeat": 5},
    ]
    init = {"model_dir": "userlibri/models/mini", "model_version": "step13600-922dfa2e5960b58b"}
    (exp / "data.json").write_text(
        json.dumps({"train_split": "train", "corpora": corpora, "init_from": init})
    )
    meta = ship_model(exp, MODEL, data, out, precisions=("float",), progress=False)
    for name in ("encoder.onnx", "encoder-streaming.onnx", "decoder.onnx", "joiner.onnx", "tokens.txt"):
        assert (out / name).is_file()
    assert json.loads((out / EVAL_FILE).read_text())["eval"] == meta["eval"]
    # Non-streaming CTC greedy WER equals decoding the files by hand with beam 1.
    rec = OfflineRecognizer(out, config=RecognizerConfig(decoder="ctc", decoding=DecoderConfig(beam=1)))
    files = sorted((data / "test-clean").rglob("*.flac"))
    hyps = [rec.recognize_file(f).text for f in files]
    expected = round(100 * jiwer.wer(list(TEXTS), hyps), 2)
    clean = meta["eval"]["splits"]["test-clean"]
    assert clean[mode_name("ctc", False)]["wer"] == expected
    assert set(clean) == {mode_name(d, s) for d, s in MODES}
    assert clean[mode_name("ctc", False)]["voices"]["flite:v0"]["utterances"] == 3
    assert clean[mode_name("ctc", False)]["words"] == 6
    assert meta["training"]["steps"] == 20 and meta["training"]["train_seconds"] == 60.0
    card = (out / CARD_FILE).read_text()
    assert "| test-other |" in card and f"| test-clean | {expected} |" in card
    assert "factors 1.0, 1.15" in card and "slope 0-2 at 0-25 dB SNR" in card
    assert (
        "- added (LS-extra, `asr train --add-train`, x5 per epoch): 1.80 h, 514 utterances, 22 readers"
        in card
    )
    assert (
        "- Initialised from step13600-922dfa2e5960b58b (`asr train --init-from userlibri/models/mini`)"
        in card
    )


def test_ship_over_the_model_it_started_from_keeps_the_training_chain(tmp_path: Path) -> None:
    # Phase 5 ships over the model it was fine-tuned from: the card still says what trained that
    # model (read before the directory is replaced), and adds steps and wall time along the chain.
    data, exp, out = _layout(tmp_path / "LS"), _exp(tmp_path / "exp"), tmp_path / "shipped"
    out.mkdir()
    first = {"model_dir": "/elsewhere/phase3", "model_version": "step50-aaaa"}
    phase3 = {"name": "phase3", "steps": 50, "train_seconds": 300.0, "init_from": None}
    base = {
        "name": "mini",
        "hardware": "2 CPU cores",
        "training": {"steps": 100, "train_seconds": 600.0},
        "data": {"init_from": {**first, "base": phase3}},
    }
    (out / EVAL_FILE).write_text(json.dumps(base))
    (out / "model.json").write_text(json.dumps({"model_version": "step100-bbbb"}))
    init = {"model_dir": str(out), "model_version": "step100-bbbb"}
    (exp / "data.json").write_text(
        json.dumps(
            {
                "train_split": "train",
                "corpora": [{"data": str(data), "utterances": 6, "repeat": 1}],
                "init_from": init,
            }
        )
    )
    meta = ship_model(exp, MODEL, data, out, precisions=("float",), progress=False)
    assert meta["data"]["init_from"]["base"]["steps"] == 100
    card = (out / CARD_FILE).read_text()
    assert (
        "- That model (mini): 100 steps, 10.0 min (2 CPU cores); "
        "all runs from scratch to this model: 170 steps, 16.0 min" in card
    )
    # Shipping again: the directory now holds the new model, whose training is not the base's.
    meta2 = ship_model(exp, MODEL, data, tmp_path / "again", precisions=("float",), progress=False)
    assert "base" not in meta2["data"]["init_from"]


def test_ship_errors_leave_nothing_behind(tmp_path: Path) -> None:
    data, exp, out = _layout(tmp_path / "LS"), _exp(tmp_path / "exp"), tmp_path / "shipped"
    with pytest.raises(UserLibriError, match=r"missing encoder\.int8\.onnx"):
        ship_model(exp, MODEL, data, out, precisions=("int8",), progress=False)
    with pytest.raises(UserLibriError, match="no such split"):
        ship_model(exp, MODEL, data, out, splits=("dev-clean",), precisions=("float",), progress=False)
    assert not out.exists() and not list(tmp_path.glob(".shipped*"))


def test_ship_cli_and_model_lookup(tmp_path: Path) -> None:
    data, exp, out = _layout(tmp_path / "LS"), _exp(tmp_path / "exp"), tmp_path / "shipped"
    args = ["asr", "ship", "--exp", exp, "--model", MODEL, "--data", data, "--out", out, "--quiet"]
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--precisions", "float"])
    assert result.exit_code == 0, result.output
    assert "test-clean: greedy WER non-streaming ctc" in result.output
    bad = CliRunner().invoke(cli, [str(a) for a in args] + ["--precisions", "int4"])
    assert bad.exit_code != 0 and "--precisions" in bad.output
    with pytest.raises(UserLibriError, match="no-such-model"):
        model_dir("no-such-model")


def test_logged_seconds_adds_up_the_processes_of_a_run() -> None:
    def stop(seconds: float, total: float | None = None) -> dict:
        rec = {"event": "stop", "step": 1, "seconds": seconds}
        return rec if total is None else {**rec, "total_seconds": total}

    train = {"event": "train", "step": 1, "seconds": 99.0}
    # Logs from before total_seconds: each process's stop adds its own time.
    assert logged_seconds([stop(60.0), train, stop(30.5)]) == 90.5
    # total_seconds carries every earlier process (killed ones too, through the checkpoints).
    assert logged_seconds([stop(60.0), stop(40.0, 250.0)]) == 250.0
    assert logged_seconds([stop(40.0, 250.0), stop(10.0, 260.0)]) == 260.0
    assert logged_seconds([train]) == 0.0
