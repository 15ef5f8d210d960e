"""ONNX export of the acoustic model: torch vs ONNX (full context, streaming chunks, decoder,
joiner), int8 and ORT variants, metadata round trip, the model directory, the CLI.

Most tests share one export of a tiny random model (tests/am_export_helpers.py, ~30-60 s), so they
are marked slow; the fast ones check what the exporter refuses before exporting anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from am_export_helpers import CHUNK, LEFT, VOCAB, exported, tiny_model, tiny_tokenizer  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from userlibri.asr import onnx_model as om  # noqa: E402
from userlibri.asr.export import export_model  # noqa: E402
from userlibri.asr.model import input_frames, output_frames  # noqa: E402
from userlibri.errors import ConfigError  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return exported(tmp_path_factory.mktemp("am_export"))


def _torch_full(model: Any, stats: Any, feats: np.ndarray, lens: list[int], chunk: int = -1, left: int = -1):
    """Reference: CMVN in numpy, then the torch encoder (chunk-masked when chunk > 0) and heads."""
    x = torch.from_numpy(((feats - stats.mean) / stats.std).astype(np.float32))
    with torch.no_grad():
        enc, enc_lens = model.encoder(x, torch.tensor(lens), chunk, left)
        return (
            model.joiner.enc_proj(enc).numpy(),
            enc_lens.numpy(),
            model.ctc_head(enc).numpy(),
        )


def _feats(t: int, seed: int, batch: int | None = None) -> np.ndarray:
    rs = np.random.RandomState(seed)
    shape = (t, 80) if batch is None else (batch, t, 80)
    return (rs.randn(*shape) * 3.0 - 5.0).astype(np.float32)


def _stream(am: om.OnnxAcousticModel, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feed (T, F) features chunk by chunk (last chunk shorter); concatenated outputs."""
    state, encs, ctcs = am.init_state(), [], []
    start = 0
    while start + am.meta.min_chunk_frames <= feats.shape[0]:
        out, state = am.run_chunk(feats[start : start + am.meta.chunk_frames], state)
        encs.append(out.encoder_out)
        ctcs.append(out.ctc_log_probs)
        start += am.meta.chunk_shift
    return np.concatenate(encs), np.concatenate(ctcs)


# ----------------------------------------------------------------------------- fast: refusals


def test_export_refuses_a_tokenizer_of_another_size(tmp_path: Path) -> None:
    tiny_tokenizer(tmp_path / "tok")
    model = tiny_model()
    bigger = type(model.config)(**{**model.config.to_dict(), "vocab_size": VOCAB + 5})
    with pytest.raises(ConfigError, match="25 output ids.*20 pieces"):
        export_model(type(model)(bigger), tmp_path / "tok", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_unlimited_left_context(tmp_path: Path) -> None:
    tiny_tokenizer(tmp_path / "tok")
    with pytest.raises(ConfigError, match="left_chunks >= 0"):
        export_model(tiny_model(), tmp_path / "tok", tmp_path / "out", chunk_size=4, left_chunks=-1)


def test_cli_reports_a_missing_tokenizer(tmp_path: Path) -> None:
    from userlibri.asr.train import save_model
    from userlibri.cli.asr_export import command
    from userlibri.features import FeatureConfig

    model = tiny_model()
    tok = tiny_tokenizer(tmp_path / "tok")
    from am_export_helpers import tiny_stats

    ckpt = tmp_path / "exp" / "model-avg.pt"
    ckpt.parent.mkdir()
    save_model(ckpt, model.state_dict(), model.config, FeatureConfig(), tiny_stats(), tok, {"step": 3})
    result = CliRunner().invoke(command, ["--checkpoint", str(ckpt), "--out", str(tmp_path / "m")])
    assert result.exit_code != 0
    assert "tokenizer" in str(result.output) + str(result.exception)


# ----------------------------------------------------------------------------- slow: one export


@pytest.mark.slow
def test_directory_layout_and_summary(bundle: dict[str, Any]) -> None:
    model_dir: Path = bundle["dir"]
    names = {p.name for p in model_dir.iterdir()}
    for precision in om.PRECISION_SUFFIX:
        for role in om.ROLES:
            assert om.model_file(role, precision) in names
    assert {om.TOKENS_FILE, om.TOKENIZER_FILE, om.SUMMARY_FILE} <= names
    assert not any(n.endswith(".config") or n.startswith(".") for n in names)
    summary = json.loads((model_dir / om.SUMMARY_FILE).read_text())
    assert summary == bundle["summary"]
    assert summary["parameters"]["total"] == sum(p.numel() for p in bundle["model"].parameters())
    assert summary["size_mb"]["int8"] < 0.5 * summary["size_mb"]["float"]
    assert summary["cmvn"]["mode"] == "folded"


@pytest.mark.slow
def test_metadata_round_trip(bundle: dict[str, Any]) -> None:
    am = om.OnnxAcousticModel(bundle["dir"])
    meta, cfg = am.meta, bundle["model"].config
    assert (meta.kind, meta.vocab_size, meta.blank_id, meta.context_size) == (om.KIND, VOCAB, 0, 2)
    assert (meta.chunk_size, meta.left_chunks, meta.subsampling) == (CHUNK, LEFT, 4)
    assert (meta.chunk_frames, meta.chunk_shift, meta.min_chunk_frames) == (input_frames(CHUNK), 16, 7)
    assert meta.joiner_dim == cfg.joiner_dim and meta.feature_dim == 80 and meta.cmvn == "folded"
    assert meta.tokenizer_id == bundle["tokenizer"].model_id
    assert [c.name for c in meta.caches] == ["att_cache", "conv_cache", "offset"]
    caches = bundle["model"].encoder.init_caches(1, CHUNK, LEFT)
    assert [c.shape for c in meta.caches] == [tuple(c.shape) for c in caches]
    assert [c.batch_axis for c in meta.caches] == [1, 1, 0]
    for role in om.ROLES:
        raw = om.read_model_meta(bundle["dir"] / om.model_file(role, "int8"))
        assert raw["role"] == role and raw["precision"] == "int8"
        assert om.ModelMeta.from_metadata(raw).to_metadata(role, "int8") == raw


@pytest.mark.slow
def test_full_context_encoder_matches_torch(bundle: dict[str, Any]) -> None:
    am = om.OnnxAcousticModel(bundle["dir"], mode="offline")
    for t, seed in ((57, 1), (203, 2)):  # two lengths: the time axis is dynamic
        feats = _feats(t, seed)
        out = am.run(feats)
        enc, enc_lens, ctc = _torch_full(bundle["model"], bundle["stats"], feats[None], [t])
        assert out.encoder_out.shape == (output_frames(t), 24) and enc_lens[0] == output_frames(t)
        assert np.abs(out.encoder_out - enc[0]).max() < TOL
        assert np.abs(out.ctc_log_probs - ctc[0]).max() < TOL
    # A padded batch gives each utterance its own result.
    feats = [_feats(120, 3), _feats(64, 4)]
    batch = am.run_batch(feats)
    for f, b in zip(feats, batch, strict=True):
        single = am.run(f)
        assert np.abs(b.ctc_log_probs - single.ctc_log_probs).max() < TOL


@pytest.mark.slow
def test_streaming_encoder_matches_torch_chunked(bundle: dict[str, Any]) -> None:
    am = om.OnnxAcousticModel(bundle["dir"], mode="streaming")
    model, stats = bundle["model"], bundle["stats"]
    for t, seed in ((75, 5), (160, 6)):  # 75: a short last chunk
        feats = _feats(t, seed)
        enc, ctc = _stream(am, feats)
        ref_enc, _, ref_ctc = _torch_full(model, stats, feats[None], [t], CHUNK, LEFT)
        assert enc.shape == ref_enc[0].shape
        assert np.abs(enc - ref_enc[0]).max() < TOL
        assert np.abs(ctc - ref_ctc[0]).max() < TOL
    # ... and torch's own forward_chunk, cache for cache.
    feats = _feats(input_frames(CHUNK), 7, batch=2)
    state = am.init_state(batch=2)
    caches = model.encoder.init_caches(2, CHUNK, LEFT)
    x = torch.from_numpy(((feats - stats.mean) / stats.std).astype(np.float32))
    for _ in range(3):
        out, state = am.run_chunk(feats, state)
        with torch.no_grad():
            enc, caches = model.encoder.forward_chunk(x, caches)
            ref = model.joiner.enc_proj(enc).numpy()
        assert np.abs(out.encoder_out - ref).max() < TOL
        for mine, theirs in zip(state.caches, caches, strict=True):
            assert np.abs(mine - theirs.numpy()).max() < TOL


@pytest.mark.slow
def test_decoder_and_joiner_match_torch_batched(bundle: dict[str, Any]) -> None:
    am = om.OnnxAcousticModel(bundle["dir"], mode="streaming")
    model = bundle["model"]
    contexts = np.array([[0, 0], [0, 5], [7, 19], [3, 3], [1, 2]], dtype=np.int64)
    dec = am.decoder(contexts)
    rs = np.random.RandomState(8)
    enc = rs.randn(5, model.config.d_model).astype(np.float32)
    with torch.no_grad():
        ref_dec = model.joiner.dec_proj(model.decoder(torch.from_numpy(contexts))).numpy()
        ref_logits = model.joiner(torch.from_numpy(enc), model.decoder(torch.from_numpy(contexts)))
        enc_proj = model.joiner.enc_proj(torch.from_numpy(enc)).numpy()
    assert np.abs(dec - ref_dec).max() < TOL
    logprobs = am.joiner(enc_proj, dec)
    assert np.abs(logprobs - ref_logits.log_softmax(-1).numpy()).max() < TOL
    assert np.allclose(np.exp(logprobs).sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_int8_runs_and_mostly_agrees(bundle: dict[str, Any]) -> None:
    float_am = om.OnnxAcousticModel(bundle["dir"], precision="float", mode="offline")
    int8_am = om.OnnxAcousticModel(bundle["dir"], precision="int8", mode="offline")
    feats = _feats(400, 9)
    a, b = float_am.run(feats).ctc_log_probs, int8_am.run(feats).ctc_log_probs
    diff = float(np.abs(a - b).max())
    agree = float((a.argmax(-1) == b.argmax(-1)).mean())
    print(f"int8 vs float CTC log-probs: max abs diff {diff:.4f}, frame argmax agreement {agree:.3f}")
    assert 0 < diff < 2.0
    assert agree >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("ort,onnx", [("ort", "float"), ("ort-int8", "int8")])
def test_ort_files_match_onnx(bundle: dict[str, Any], ort: str, onnx: str) -> None:
    a = om.OnnxAcousticModel(bundle["dir"], precision=onnx)
    b = om.OnnxAcousticModel(bundle["dir"], precision=ort)
    assert b.meta == a.meta  # the .ort conversion keeps the metadata
    feats = _feats(90, 10)
    assert np.abs(a.run(feats).ctc_log_probs - b.run(feats).ctc_log_probs).max() < TOL
    ea, ca = _stream(a, feats)
    eb, cb = _stream(b, feats)
    assert np.abs(ea - eb).max() < TOL and np.abs(ca - cb).max() < TOL
    ctx = np.array([[0, 4], [5, 6]], dtype=np.int64)
    assert np.abs(a.decoder(ctx) - b.decoder(ctx)).max() < TOL
    j = a.decoder(ctx)
    assert np.abs(a.joiner(ea[:2], j) - b.joiner(ea[:2], j)).max() < TOL
