"""``asr inspect``: encoder health numbers (temporal variation per layer, blank rate) and the CLI."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from am_export_helpers import one_thread, tiny_am_config  # noqa: F401 (fixture)
from click.testing import CliRunner

from userlibri.asr.inspect import encoder_health
from userlibri.asr.model import AcousticModel
from userlibri.asr.train import save_model
from userlibri.cli import cli
from userlibri.data.audio import write_flac
from userlibri.data.librispeech import write_transcripts
from userlibri.features import FeatureConfig, FeatureStats

pytestmark = pytest.mark.usefixtures("one_thread")


def _feats(n: int = 3) -> list[np.ndarray]:
    rs = np.random.RandomState(0)
    return [rs.randn(60 + 20 * i, 80).astype(np.float32) for i in range(n)]


def test_health_of_a_random_and_of_a_collapsed_encoder() -> None:
    torch.manual_seed(0)
    model = AcousticModel(tiny_am_config(num_layers=2))
    stats = FeatureStats(np.zeros(80), np.ones(80), 1)
    h = encoder_health(model, _feats(), stats)
    assert h["utterances"] == 3 and len(h["time_std"]) == 3 and len(h["attention_time_std"]) == 2
    assert all(v > 0.05 for v in h["time_std"])  # a random encoder keeps the frames apart
    assert 0 <= h["blank_prob"] <= 1 and 0 <= h["nonblank_frames"] <= 1
    # Collapse it: the subsampling projection ignores its input (constant output).
    with torch.no_grad():
        model.encoder.subsampling.out.weight.zero_()
    c = encoder_health(model, _feats(), stats)
    # Only positions (rotary, the causal conv's edge) still vary over time.
    assert c["time_std"][0] < 1e-6 and max(c["time_std"]) < 0.5 * min(h["time_std"])


def test_inspect_cli(tmp_path: Path) -> None:
    model = AcousticModel(tiny_am_config(vocab_size=20))
    ckpt = tmp_path / "model-avg.pt"
    tok = SimpleNamespace(model_id="tok")
    stats = FeatureStats(np.zeros(80), np.ones(80), 1)
    save_model(ckpt, model.state_dict(), model.config, FeatureConfig(), stats, tok, {"step": 7})
    d = tmp_path / "LS" / "dev" / "1" / "2"
    d.mkdir(parents=True)
    for i in range(2):
        write_flac(
            d / f"1-2-{i:04d}.flac", np.random.RandomState(i).randn(16000).astype(np.float32) * 0.1, 16000
        )
    write_transcripts(d / "1-2.trans.txt", {"1-2-0000": "A B", "1-2-0001": "C"})
    args = ["asr", "inspect", "--checkpoint", str(ckpt), "--data", str(tmp_path / "LS"), "--n", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert '"utterances": 2' in result.output and '"step": 7' in result.output
    bad = CliRunner().invoke(cli, args[:-1] + ["0"])
    assert bad.exit_code != 0 and "--n" in bad.output
