"""The torch-free acoustic-model runtime: metadata parsing and validation, model-directory errors
that list everything missing, feature-config checks, batching and streaming state handling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from userlibri.asr import onnx_model as om
from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.features import FeatureConfig


def _meta(**kw: Any) -> om.ModelMeta:
    base = dict(
        kind=om.KIND,
        vocab_size=20,
        blank_id=0,
        context_size=2,
        subsampling=4,
        chunk_size=4,
        left_chunks=2,
        chunk_frames=19,
        chunk_shift=16,
        feature_dim=80,
        joiner_dim=24,
        caches=(om.CacheSpec("att_cache", (2, 1, 4, 8, 16), 1), om.CacheSpec("offset", (1,), 0, "int64")),
        features=FeatureConfig(),
        cmvn="folded",
        tokenizer_id="abc",
        model_version="step1-x",
        userlibri_version="0.1.0",
        precision="float",
    )
    base.update(kw)
    return om.ModelMeta(**base)


# ----------------------------------------------------------------------------- fast


def test_metadata_round_trip_and_strings_only() -> None:
    meta = _meta()
    raw = meta.to_metadata(om.DECODER, "float")
    assert set(raw) == set(om.REQUIRED_META)
    assert all(isinstance(v, str) for v in raw.values())
    assert om.ModelMeta.from_metadata(raw) == meta
    assert meta.min_chunk_frames == 7


def test_missing_metadata_keys_are_all_listed() -> None:
    raw = _meta().to_metadata(om.JOINER, "float")
    for key in ("vocab_size", "caches", "features"):
        del raw[key]
    with pytest.raises(DataFormatError) as e:
        om.ModelMeta.from_metadata(raw, "joiner.onnx")
    assert "joiner.onnx" in str(e.value)
    assert all(k in str(e.value) for k in ("'vocab_size'", "'caches'", "'features'"))


def test_bad_metadata_values_are_all_listed() -> None:
    raw = _meta().to_metadata(om.ENCODER, "float")
    raw.update(kind="lstm-lm", vocab_size="many", cmvn="maybe", caches="[{", features='{"num_mel_bins": 40}')
    with pytest.raises(DataFormatError) as e:
        om.ModelMeta.from_metadata(raw)
    msg = str(e.value)
    for part in ("kind='lstm-lm'", "vocab_size='many'", "cmvn='maybe'", "caches:", "num_mel_bins=40"):
        assert part in msg


def test_inconsistent_chunk_metadata() -> None:
    raw = _meta().to_metadata(om.ENCODER, "float")
    raw["chunk_shift"] = "12"
    with pytest.raises(DataFormatError, match="chunk_size \\* subsampling = 16"):
        om.ModelMeta.from_metadata(raw)


def test_file_names_and_modes() -> None:
    assert om.model_file(om.STREAMING_ENCODER, "ort-int8") == "encoder-streaming.int8.ort"
    assert om.model_file(om.DECODER, "int8") == "decoder.int8.onnx"
    with pytest.raises(ConfigError, match="precision"):
        om.model_file(om.DECODER, "fp16")
    assert om.roles_for_mode("streaming") == (om.STREAMING_ENCODER, om.DECODER, om.JOINER)
    with pytest.raises(ConfigError, match="mode"):
        om.roles_for_mode("fast")


def test_empty_directory_lists_every_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as e:
        om.OnnxAcousticModel(tmp_path, precision="int8")
    msg = str(e.value)
    for name in ("encoder.int8.onnx", "encoder-streaming.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"):
        assert name in msg
    assert om.TOKENS_FILE in msg and om.TOKENIZER_FILE in msg
    with pytest.raises(DataFormatError, match="no such directory"):
        om.OnnxAcousticModel(tmp_path / "nope")


def _identity_onnx(path: Path, meta: dict[str, str]) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


def test_missing_files_and_metadata_keys_listed_together(tmp_path: Path) -> None:
    full = _meta().to_metadata(om.DECODER, "float")
    partial = {k: v for k, v in full.items() if k not in ("blank_id", "tokenizer_id")}
    _identity_onnx(tmp_path / "decoder.onnx", partial)
    _identity_onnx(tmp_path / "joiner.onnx", {**full, "role": om.JOINER})
    (tmp_path / "encoder-streaming.onnx").write_bytes(b"not a model")
    (tmp_path / om.TOKENS_FILE).write_text("<blk> 0\n")
    with pytest.raises(DataFormatError) as e:
        om.OnnxAcousticModel(tmp_path, mode="streaming")
    msg = str(e.value)
    assert "missing files ['tokenizer.model']" in msg
    assert "decoder.onnx lacks metadata keys ['blank_id', 'tokenizer_id']" in msg
    assert "encoder-streaming.onnx is not a loadable model" in msg
    assert "joiner.onnx" not in msg.split("found")[-1]


# ----------------------------------------------------------------------------- slow: exported model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from am_export_helpers import exported

    return exported(tmp_path_factory.mktemp("am_export"))["dir"]


@pytest.mark.slow
def test_check_features_lists_differences(model_dir: Path) -> None:
    am = om.OnnxAcousticModel(model_dir, mode="streaming")
    am.check_features(FeatureConfig())
    am.check_features(FeatureConfig(dither=1.0))  # training-time noise is not compared
    with pytest.raises(ConfigError) as e:
        am.check_features(FeatureConfig(sample_rate=8000, frame_shift_ms=20.0, low_freq=10.0))
    msg = str(e.value)
    assert "sample_rate" in msg and "frame_shift_ms" in msg and "low_freq" in msg and str(model_dir) in msg


@pytest.mark.slow
def test_batched_streams_equal_single_streams(model_dir: Path) -> None:
    am = om.OnnxAcousticModel(model_dir, mode="streaming")
    rs = np.random.RandomState(0)
    feats = [rs.randn(3, am.meta.chunk_frames, 80).astype(np.float32) for _ in range(2)]
    singles = [am.init_state(), am.init_state()]
    batch = am.stack_states(singles)
    assert batch.batch == 2
    for step in range(3):
        outs = []
        for i in range(2):
            out, singles[i] = am.run_chunk(feats[i][step], singles[i])
            outs.append(out.encoder_out)
        out_b, batch = am.run_chunk(np.stack([feats[0][step], feats[1][step]]), batch)
        assert out_b.encoder_out.shape == (2, am.meta.chunk_size, am.meta.joiner_dim)
        assert np.abs(out_b.encoder_out - np.stack(outs)).max() < 1e-5
    assert batch.frames == singles[0].frames == 3 * am.meta.chunk_size
    for split, single in zip(am.unstack_state(batch), singles, strict=True):
        for a, b in zip(split.caches, single.caches, strict=True):
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5


@pytest.mark.slow
def test_bad_inputs_raise_clear_errors(model_dir: Path) -> None:
    am = om.OnnxAcousticModel(model_dir)
    state = am.init_state()
    with pytest.raises(UserLibriError, match="7..19"):
        am.run_chunk(np.zeros((6, 80), np.float32), state)
    with pytest.raises(UserLibriError, match="features for 2 streams"):
        am.run_chunk(np.zeros((2, 19, 80), np.float32), state)
    with pytest.raises(UserLibriError, match="finite"):
        am.run(np.full((30, 80), np.nan, np.float32))
    with pytest.raises(UserLibriError, match="80"):
        am.run(np.zeros((30, 40), np.float32))
    with pytest.raises(UserLibriError, match="token ids in"):
        am.decoder(np.array([[0, 20]]))
    with pytest.raises(UserLibriError, match=r"\(N, 2\)"):
        am.decoder(np.array([[0, 1, 2]]))
    with pytest.raises(UserLibriError, match="joiner"):
        am.joiner(np.zeros((2, 24), np.float32), np.zeros((3, 24), np.float32))
    offline = om.OnnxAcousticModel(model_dir, mode="offline")
    with pytest.raises(UserLibriError, match="no encoder-streaming"):
        offline.run_chunk(np.zeros((19, 80), np.float32), state)


@pytest.mark.slow
def test_short_and_empty_inputs(model_dir: Path) -> None:
    am = om.OnnxAcousticModel(model_dir, mode="offline")
    for t in (0, 3, 6):
        out = am.run(np.zeros((t, 80), np.float32))
        assert out.encoder_out.shape == (0, 24) and out.ctc_log_probs.shape == (0, 20)
    assert am.run(np.zeros((7, 80), np.float32)).ctc_log_probs.shape == (1, 20)
    assert am.decoder(np.zeros((0, 2), np.int64)).shape == (0, 24)
    assert am.joiner(np.zeros((0, 24), np.float32), np.zeros((0, 24), np.float32)).shape == (0, 20)
    assert am.run_batch([]) == []


@pytest.mark.slow
def test_tokens_and_summary(model_dir: Path) -> None:
    am = om.OnnxAcousticModel(model_dir, precision="ort-int8", num_threads=2)
    tokens = am.read_tokens()
    assert len(tokens) == am.meta.vocab_size and tokens[0] == "<blk>"
    summary = json.loads((model_dir / om.SUMMARY_FILE).read_text())
    assert summary["tokenizer_id"] == am.meta.tokenizer_id
    assert dataclasses.replace(am.meta, precision="float") == om.OnnxAcousticModel(model_dir).meta
    assert "precision='ort-int8'" in repr(am)
