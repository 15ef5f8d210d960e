"""The shipped mini acoustic model (userlibri/models/mini): `userlibri decode` with no --model and
no --precision recognizes a sentence spoken by one of its training voices, and its card and eval
files agree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest

from userlibri.models import model_dir, shipped_models

SENTENCE = "THE OLD MAN WENT TO THE HOUSE AND SAT DOWN BY THE FIRE WITH HIS WIFE"


def test_shipped_model_files_and_card() -> None:
    assert "mini" in shipped_models()
    model = model_dir()
    meta = json.loads((model / "model.json").read_text())
    assert meta["vocab_size"] == 34
    card = (model / "MODEL_CARD.md").read_text()
    ev = json.loads((model / "eval.json").read_text())
    wer = ev["eval"]["splits"]["test-clean"]["non-streaming ctc"]["wer"]
    assert f"| test-clean | {wer} |" in card


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite (installed by make setup) is missing")
def test_decode_cli_recognizes_a_training_voice(tmp_path: Path) -> None:
    wav = tmp_path / "awb.wav"
    subprocess.run(["flite", "-voice", "awb", "-t", SENTENCE.lower(), "-o", str(wav)], check=True)
    out = tmp_path / "hyp.jsonl"
    cli = [str(Path(sys.executable).parent / "userlibri"), "decode", str(wav), "--out", str(out), "--quiet"]
    subprocess.run(cli, check=True, capture_output=True)
    hyp = json.loads(out.read_text().splitlines()[0])["text"]
    # Measured 13% (2 of 15 words: "ALDMEN" for "OLD MAN"); deterministic for this model.
    assert jiwer.wer(SENTENCE, hyp) <= 0.3, hyp


def test_onnx_joiner_broadcasts_one_frame_over_decoder_rows() -> None:
    from userlibri.asr.onnx_model import OnnxAcousticModel

    am = OnnxAcousticModel(model_dir(), precision="int8", mode="offline")
    rng = np.random.default_rng(0)
    enc = rng.normal(size=(1, am.meta.joiner_dim)).astype(np.float32)
    dec = rng.normal(size=(5, am.meta.joiner_dim)).astype(np.float32)
    assert np.array_equal(am.joiner(enc, dec), am.joiner(np.repeat(enc, 5, axis=0), dec))
    assert am.joiner(enc, dec[:0]).shape == (0, am.meta.vocab_size)


def test_search_joiner_equals_the_checked_joiner() -> None:
    from userlibri.asr.onnx_model import OnnxAcousticModel

    am = OnnxAcousticModel(model_dir(), precision="int8", mode="offline")
    fast = am.search_joiner()
    rng = np.random.default_rng(1)
    enc = rng.normal(size=(1, am.meta.joiner_dim)).astype(np.float32)
    dec = rng.normal(size=(7, am.meta.joiner_dim)).astype(np.float32)
    assert np.array_equal(fast(enc, dec), am.joiner(enc, dec))
    assert np.array_equal(fast(np.repeat(enc, 7, axis=0), dec), am.joiner(enc, dec))
    assert fast(enc, dec[:0]).shape == (0, am.meta.vocab_size)
    with pytest.raises(Exception, match="(?i)type|dtype"):  # onnxruntime's own refusal
        fast(enc.astype(np.float64), dec)
