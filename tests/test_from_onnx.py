"""asr.from_onnx and ``asr train --init-from``: torch weights back from an exported model directory."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from am_export_helpers import exported, one_thread, tiny_am_config  # noqa: F401 (fixture)
from click.testing import CliRunner

from userlibri.asr.config import ExperimentConfig, TrainConfig
from userlibri.asr.from_onnx import import_model_dir
from userlibri.asr.train import train
from userlibri.errors import ConfigError, DataFormatError
from userlibri.features import FeatureStats
from userlibri.text.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return exported(tmp_path_factory.mktemp("export"))


def _int8_only(model_dir: Path, dest: Path) -> Path:
    """A copy of ``model_dir`` as the shipped models are: int8 ONNX files, model.json, tokenizer."""
    dest.mkdir()
    for f in sorted(model_dir.iterdir()):
        if f.name.endswith(".int8.onnx") or f.suffix in (".json", ".model", ".txt"):
            shutil.copy2(f, dest / f.name)
    return dest


def _linear_weights(model: torch.nn.Module) -> set[str]:
    return {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def test_float_directory_gives_the_exact_weights(bundle: dict[str, Any]) -> None:
    im = import_model_dir(bundle["dir"])
    assert im.files == {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "joiner": "joiner.onnx"}
    ref, got = bundle["model"].state_dict(), im.model.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, atol=1e-6, rtol=0, msg=k)
    assert im.model.config == bundle["model"].config
    assert abs(im.stats.mean - bundle["stats"].mean).max() < 1e-6
    assert im.tokenizer_id == bundle["tokenizer"].model_id


def test_int8_directory_gives_each_weight_within_half_a_step(bundle: dict[str, Any], tmp_path: Path) -> None:
    """Only the nn.Linear weights are int8 (the MatMuls); each comes back transposed to torch's
    layout, within half a quantization step; everything else is exact."""
    im = import_model_dir(_int8_only(bundle["dir"], tmp_path / "m"))
    assert im.files == {
        "encoder": "encoder.int8.onnx",
        "decoder": "decoder.int8.onnx",
        "joiner": "joiner.int8.onnx",
    }
    ref, got = bundle["model"].state_dict(), im.model.state_dict()
    inexact = set()
    for k, v in ref.items():
        diff = (got[k] - v).abs().max().item()
        if diff > 1e-6:
            inexact.add(k)
        assert diff <= v.abs().max().item() / 250 + 1e-6, (k, diff)
    assert inexact == _linear_weights(bundle["model"])


def test_bad_directories_are_named(bundle: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"model\.json.*no file"):
        import_model_dir(tmp_path)
    d = _int8_only(bundle["dir"], tmp_path / "no-joiner")
    (d / "joiner.int8.onnx").unlink()
    with pytest.raises(DataFormatError, match=r"joiner\.onnx or joiner\.int8\.onnx"):
        import_model_dir(d)
    d = _int8_only(bundle["dir"], tmp_path / "other-size")
    summary = json.loads((d / "model.json").read_text())
    summary["am_config"]["ff_dim"] = 2 * summary["am_config"]["ff_dim"]
    (d / "model.json").write_text(json.dumps(summary))
    with pytest.raises(DataFormatError, match=r"ff1\.net\.1\.weight: \(64, 32\) \(ONNX\) vs \(128, 32\)"):
        import_model_dir(d)


def _config(**model_kw: Any) -> ExperimentConfig:
    tc = TrainConfig(
        lr=1e-12,
        warmup_steps=1,
        max_batch_frames=400,
        dev_max_utts=0,
        tokenizer_book_sentences=0,
        checkpoint_minutes=60,
        average_last=1,
    )
    return ExperimentConfig(
        model=tiny_am_config(max_chunk=4, max_left_chunks=2, **model_kw), train=tc
    ).validate()


def test_train_init_from_starts_at_the_models_weights(
    corpus: Path, bundle: dict[str, Any], tmp_path: Path
) -> None:
    model_dir = _int8_only(bundle["dir"], tmp_path / "shipped")
    imported = import_model_dir(model_dir).model.state_dict()
    out = tmp_path / "exp"
    result = train(_config(), corpus, out, max_steps=1, init_from=model_dir, progress=False)
    assert result.step == 1
    ck = torch.load(sorted((out / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    for k, v in imported.items():  # one step at lr 1e-12 moves nothing measurably
        torch.testing.assert_close(ck["model"][k], v, atol=1e-6, rtol=0, msg=k)
    assert Tokenizer.load(out / "tokenizer").model_id == bundle["tokenizer"].model_id
    assert abs(FeatureStats.load(out / "feature_stats.json").mean - bundle["stats"].mean).max() < 1e-6
    record = json.loads((out / "data.json").read_text())["init_from"]
    assert record["model_dir"] == str(model_dir) and record["model_version"]
    # A resumed run keeps its own weights and the record of where it started.
    train(_config(), corpus, out, resume=True, max_steps=2, progress=False)
    assert json.loads((out / "data.json").read_text())["init_from"] == record


def test_train_init_from_refuses_another_architecture_or_features(
    corpus: Path, bundle: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"ff_dim: 64 \(model\) vs 128 \(config\)"):
        train(
            _config(ff_dim=128), corpus, tmp_path / "a", max_steps=1, init_from=bundle["dir"], progress=False
        )
    cfg = _config()
    cfg = replace(cfg, features=replace(cfg.features, low_freq=40.0))
    with pytest.raises(ConfigError, match=r"low_freq: expected 20\.0 \(--init-from model .*\), found 40\.0"):
        train(cfg, corpus, tmp_path / "b", max_steps=1, init_from=bundle["dir"], progress=False)


def test_cli_init_from_error(corpus: Path, bundle: dict[str, Any], tmp_path: Path) -> None:
    from userlibri.cli.asr import command

    cfg = tmp_path / "am.yaml"
    cfg.write_text("model: {d_model: 64, num_heads: 4, num_layers: 2}\n")
    args = ["train", "--config", str(cfg), "--data", str(corpus), "--out", str(tmp_path / "exp")]
    result = CliRunner().invoke(command, [*args, "--init-from", str(bundle["dir"]), "--max-steps", "1"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "d_model: 32 (model) vs 64 (config)" in str(result.exception)


def test_the_shipped_model_continues_with_the_phase_5_config() -> None:
    """recipes/mini/continue_am.sh: the shipped int8 model imports, and conf/am-blends.yaml has its
    architecture, features and tokenizer (what `asr train --init-from` checks before training)."""
    from userlibri.asr.config import load_config
    from userlibri.asr.from_onnx import check_init, import_for_training
    from userlibri.models import shipped_models

    root = Path(__file__).resolve().parents[1]
    shipped = root / "userlibri" / "models" / "mini"
    if "mini" not in shipped_models():
        pytest.skip("no shipped model")
    config = load_config(root / "recipes/mini/conf/am-blends.yaml")
    im = import_for_training(shipped, config)
    tok = Tokenizer.load(shipped)
    check_init(im, replace(config.model, vocab_size=tok.vocab_size, blank_id=tok.blank_id), tok)
    assert (
        sum(p.numel() for p in im.model.parameters())
        == json.loads((shipped / "model.json").read_text())["parameters"]["total"]
    )
