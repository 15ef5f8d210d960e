"""Acoustic model: shapes, chunked streaming == chunk-masked full forward, padding, causality,
heads, losses, config sizes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from am_export_helpers import one_thread, tiny_am_config  # noqa: F401 (fixture)

from userlibri.asr.config import AMConfig
from userlibri.asr.model import (
    AcousticModel,
    chunk_attention_mask,
    ctc_greedy,
    input_frames,
    output_frames,
    sample_chunk,
    streaming_forward,
    transducer_greedy,
)
from userlibri.errors import ConfigError, UserLibriError

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**kw) -> AMConfig:
    return tiny_am_config(**{"num_layers": 3, **kw})


@pytest.fixture(scope="module")
def model() -> AcousticModel:
    torch.manual_seed(0)
    return AcousticModel(tiny_config()).eval()


def test_shapes(model: AcousticModel) -> None:
    feats = torch.randn(3, 101, 80)
    lens = torch.tensor([101, 60, 7])
    enc, enc_lens = model.encoder(feats, lens)
    assert enc.shape == (3, output_frames(101), 32)
    assert enc_lens.tolist() == [output_frames(101), output_frames(60), 1]
    assert model.ctc_head(enc).shape == (3, enc.shape[1], 20)
    assert torch.allclose(model.ctc_head(enc).exp().sum(-1), torch.ones(3, enc.shape[1]), atol=1e-5)
    dec = model.decoder(torch.tensor([[0, 0], [0, 5], [3, 4]]))
    assert dec.shape == (3, 16)
    assert model.joiner(enc, dec[:, None, :]).shape == (3, enc.shape[1], 20)
    assert model.decoder.forward_sequence(torch.tensor([[3, 4, 5]])).shape == (1, 4, 16)


def test_frame_arithmetic() -> None:
    assert [output_frames(t) for t in (0, 6, 7, 10, 11, 35)] == [0, 0, 1, 1, 2, 8]
    assert input_frames(8) == 35 and output_frames(input_frames(8)) == 8
    assert output_frames(torch.tensor([6, 7, 100])).tolist() == [0, 1, 24]


def test_decoder_sequence_matches_step(model: AcousticModel) -> None:
    ys = torch.tensor([[5, 6, 7, 8]])
    seq = model.decoder.forward_sequence(ys)
    padded = [0, 0, 5, 6, 7, 8]
    for u in range(5):
        step = model.decoder(torch.tensor([padded[u : u + 2]]))
        assert torch.allclose(seq[0, u], step[0], atol=1e-6)


@pytest.mark.parametrize("chunk,left", [(1, 0), (2, 1), (4, 3), (8, 2), (5, 50)])
def test_streaming_equals_chunk_masked_forward(model: AcousticModel, chunk: int, left: int) -> None:
    torch.manual_seed(chunk)
    T = 233
    feats = torch.randn(2, T, 80)
    full, full_lens = model.encoder(feats, torch.tensor([T, T]), chunk, left)
    caches = model.encoder.init_caches(2, chunk, left)
    outs, start = [], 0
    while T - start >= input_frames(1):
        out, caches = model.encoder.forward_chunk(feats[:, start : start + input_frames(chunk)], caches)
        outs.append(out)
        start += 4 * chunk
    streamed = torch.cat(outs, dim=1)
    assert streamed.shape == full.shape
    assert (streamed - full).abs().max().item() < 1e-5
    assert caches.offset.tolist() == [full.shape[1]] * 2
    assert torch.equal(streaming_forward(model.encoder, feats, chunk, left), streamed)


def test_chunking_changes_output(model: AcousticModel) -> None:
    feats = torch.randn(1, 120, 80)
    lens = torch.tensor([120])
    full, _ = model.encoder(feats, lens)
    chunked, _ = model.encoder(feats, lens, 2, 1)
    assert (full - chunked).abs().max() > 1e-3


@pytest.mark.parametrize("chunk,left", [(-1, -1), (4, 2)])
def test_padding_does_not_change_valid_frames(model: AcousticModel, chunk: int, left: int) -> None:
    torch.manual_seed(1)
    a = torch.randn(1, 90, 80)
    alone, alone_lens = model.encoder(a, torch.tensor([90]), chunk, left)
    batch = torch.cat([a, torch.zeros(1, 50, 80)], dim=1)
    batch = torch.cat([batch, torch.randn(1, 140, 80)], dim=0)
    padded, lens = model.encoder(batch, torch.tensor([90, 140]), chunk, left)
    n = int(alone_lens[0])
    assert int(lens[0]) == n
    assert (padded[0, :n] - alone[0, :n]).abs().max() < 1e-5
    assert torch.isfinite(padded).all()


def test_conv_module_is_causal(model: AcousticModel) -> None:
    conv = model.encoder.layers[0].conv
    x = torch.randn(1, 30, 32)
    y, _ = conv(x)
    x2 = x.clone()
    x2[:, 20:] = torch.randn(1, 10, 32)
    y2, _ = conv(x2)
    assert torch.allclose(y[:, :20], y2[:, :20], atol=1e-6)
    assert not torch.allclose(y[:, 20:], y2[:, 20:])


def test_chunk_mask() -> None:
    m = chunk_attention_mask(6, 2, 1)
    assert m[5].tolist() == [False, False, True, True, True, True]
    assert m[0].tolist() == [True, True, False, False, False, False]
    assert chunk_attention_mask(4, -1, -1).all()
    assert chunk_attention_mask(6, 2, -1)[5].all()


def test_sample_chunk() -> None:
    cfg = tiny_config(max_chunk=5, max_left_chunks=3, full_context_prob=0.5)
    draws = [sample_chunk(cfg, random.Random(i)) for i in range(200)]
    full = sum(d == (-1, -1) for d in draws)
    assert 60 < full < 140
    assert all(1 <= c <= 5 and 0 <= left <= 3 for c, left in draws if c != -1)
    assert sample_chunk(tiny_config(dynamic_chunk=False), random.Random(0)) == (-1, -1)


def test_losses_and_backward(model: AcousticModel) -> None:
    torch.manual_seed(0)
    m = AcousticModel(tiny_config())
    feats = torch.randn(2, 80, 80)
    out = m.losses(feats, torch.tensor([80, 60]), [[3, 4, 5], [6]], chunk_size=4, left_chunks=1)
    assert set(out) == {"ctc", "transducer", "total"}
    assert all(torch.isfinite(v) and v > 0 for v in out.values())
    assert torch.allclose(out["total"], 0.3 * out["ctc"] + 0.7 * out["transducer"])
    out["total"].backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert m.encoder.subsampling.out.weight.grad.abs().sum() > 0
    padded = m.losses(
        feats,
        torch.tensor([80, 60]),
        torch.tensor([[3, 4, 5], [6, 0, 0]]),
        torch.tensor([3, 1]),
        chunk_size=4,
        left_chunks=1,
    )
    assert torch.allclose(padded["total"], out["total"])


def test_modified_topology_and_per_call_weights() -> None:
    """One-symbol-per-frame transducer loss: finite and trains the prediction network;
    utterances without an alignment are left out; ``weights`` override the config's."""
    torch.manual_seed(0)
    m = AcousticModel(tiny_config(transducer_topology="modified"))
    feats = torch.randn(2, 80, 80)
    lens = torch.tensor([80, 60])
    out = m.losses(feats, lens, [[3, 4, 5], [6]])
    assert torch.isfinite(out["transducer"]) and out["transducer"] > 0
    out["total"].backward()
    assert m.decoder.embedding.weight.grad.abs().sum() > 0
    # A second utterance with more tokens than its 13 encoder frames: dropped from the sum.
    m.eval()
    with torch.no_grad():
        many = m.losses(feats, lens, [[3, 4, 5], [6] * 40])
        alone = m.losses(feats[:1], lens[:1], [[3, 4, 5]])
    ntok = 3 + 40
    assert torch.isfinite(many["transducer"])
    assert float(many["transducer"]) * ntok == pytest.approx(float(alone["transducer"]) * 3, rel=1e-5)
    ctc_only = m.losses(feats, lens, [[3, 4, 5], [6]], weights=(1.0, 0.0))
    assert ctc_only["transducer"] == 0 and torch.allclose(ctc_only["total"], ctc_only["ctc"])
    with pytest.raises(ConfigError, match="transducer_topology"):
        tiny_config(transducer_topology="graves").validate()


def test_greedy_search_runs(model: AcousticModel) -> None:
    enc, lens = model.encoder(torch.randn(2, 60, 80), torch.tensor([60, 40]))
    hyps = ctc_greedy(model.ctc_head(enc), lens)
    assert len(hyps) == 2 and all(0 not in h for h in hyps)
    th = transducer_greedy(model, enc, lens)
    assert len(th) == 2 and all(len(h) <= 3 * int(n) for h, n in zip(th, lens, strict=True))


def test_ctc_greedy_collapses() -> None:
    lp = torch.full((1, 7, 4), -10.0)
    for t, k in enumerate([1, 1, 0, 1, 2, 2, 3]):
        lp[0, t, k] = 0.0
    assert ctc_greedy(lp, torch.tensor([7])) == [[1, 1, 2, 3]]
    assert ctc_greedy(lp, torch.tensor([4])) == [[1, 1]]


def test_bad_input(model: AcousticModel) -> None:
    with pytest.raises(UserLibriError, match="feature frames"):
        model.encoder(torch.randn(1, 5, 80), torch.tensor([5]))
    with pytest.raises(UserLibriError, match="expected features"):
        model.encoder(torch.randn(1, 50, 40), torch.tensor([50]))
    with pytest.raises(UserLibriError, match="streaming"):
        model.encoder.init_caches(1, 4, -1)
    with pytest.raises(ConfigError, match="num_heads"):
        tiny_config(d_model=30).validate()
