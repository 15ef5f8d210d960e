"""Per-example clipping for the LSTM LM (lm/dp_lstm.py): exact against per-example backward passes,
the same update as plain SGD when clipping is inactive, and bounded per-example contributions."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from opacus.data_loader import DPDataLoader  # noqa: E402
from opacus.optimizers import DPOptimizerFastGradientClipping  # noqa: E402

from userlibri.lm import neural as N  # noqa: E402
from userlibri.lm.dp_lstm import clipped_gradients  # noqa: E402

VOCAB = 30


def tiny_model(num_layers: int = 2, dropout: float = 0.0) -> N.LstmLM:
    torch.manual_seed(0)
    cfg = N.NeuralLMConfig(
        vocab_size=VOCAB, sos_eos_id=1, embed_dim=8, hidden_dim=12, num_layers=num_layers, dropout=dropout
    )
    return N.LstmLM(cfg)


def padded_batch(n: int, width: int = 12, seed: int = 0) -> torch.Tensor:
    """``n`` rows of 3..width ids padded with -100, as ``neural._Sentences`` stores them."""
    g = torch.Generator().manual_seed(seed)
    data = torch.full((n, width), -100, dtype=torch.long)
    for i in range(n):
        length = int(torch.randint(3, width + 1, (), generator=g))
        data[i, :length] = torch.randint(0, VOCAB, (length,), generator=g)
    return data


def per_example_grads(model: N.LstmLM, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Brute force: one backward pass of the plain (nn.LSTM) model per example."""
    out = []
    for i in range(len(batch)):
        model.zero_grad(set_to_none=True)
        N._batch_loss(model, batch[i : i + 1]).backward()
        out.append({k: p.grad.clone() for k, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    return out


def flat_norm(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("clip", [1e6, 0.05])
def test_matches_per_example_backward(num_layers: int, clip: float) -> None:
    model = tiny_model(num_layers).double()
    batch = padded_batch(6)
    ref = per_example_grads(model, batch)
    ref_norms = torch.stack([flat_norm(g) for g in ref])
    norms, losses = clipped_gradients(model, batch, clip)
    assert torch.allclose(norms, ref_norms, rtol=1e-10, atol=0)
    assert losses.shape == (6,) and bool((losses > 0).all())
    coef = (clip / (ref_norms + 1e-6)).clamp(max=1.0)
    if clip < 1:
        assert bool((coef < 1).all())  # every example is clipped
    for name, p in model.named_parameters():
        expected = sum(c * g[name] for c, g in zip(coef, ref, strict=True))
        assert torch.allclose(p.grad, expected, rtol=1e-9, atol=1e-12), name


def test_tiny_clip_bounds_each_example() -> None:
    model = tiny_model()
    batch = padded_batch(5, seed=3)
    clip = 1e-3
    for i in range(len(batch)):
        model.zero_grad(set_to_none=True)
        norms, _ = clipped_gradients(model, batch[i : i + 1], clip)
        assert float(norms[0]) > clip
        total = flat_norm({k: p.grad for k, p in model.named_parameters()})
        assert float(total) == pytest.approx(clip, rel=1e-4)  # clipped onto the bound, not below
    model.zero_grad(set_to_none=True)
    clipped_gradients(model, batch, clip)
    assert float(flat_norm({k: p.grad for k, p in model.named_parameters()})) <= len(batch) * clip * 1.0001


def test_empty_batch_gives_zero_gradients() -> None:
    model = tiny_model()
    norms, losses = clipped_gradients(model, torch.zeros((0, 12), dtype=torch.long), 1.0)
    assert norms.numel() == 0 and losses.numel() == 0
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_huge_clip_no_noise_equals_plain_sgd_on_the_same_poisson_batch() -> None:
    """DP-SGD with clipping inactive and sigma=0 takes plain SGD's step on the sum of the Poisson
    batch's example losses over the expected batch size (Opacus' 'mean' reduction)."""
    model = tiny_model()
    data = N._Sentences([list(map(int, padded_batch(1, seed=s)[0][:6])) for s in range(40)], 11)
    rate = 0.25
    loader = DPDataLoader(data, sample_rate=rate, generator=torch.Generator().manual_seed(5))
    _, batch = next(iter(loader))
    assert 1 <= len(batch) < 40  # a genuine Poisson batch
    expected_batch = rate * len(data)

    plain = copy.deepcopy(model)
    sgd = torch.optim.SGD(plain.parameters(), lr=0.5)
    (N._batch_loss(plain, batch) * len(batch) / expected_batch).backward()
    sgd.step()

    opt = DPOptimizerFastGradientClipping(
        torch.optim.SGD(model.parameters(), lr=0.5),
        noise_multiplier=0.0,
        max_grad_norm=1e6,
        expected_batch_size=expected_batch,
        loss_reduction="mean",
    )
    opt.zero_grad(set_to_none=True)
    clipped_gradients(model, batch, 1e6)
    opt.step()
    for (name, a), b in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert isinstance(model.lstm, torch.nn.LSTM)  # nothing swapped: the state_dict exports as is


def test_dp_sgd_steps_without_clipping_or_noise_follow_the_poisson_batches() -> None:
    """``neural.dp_sgd_steps`` (what ``personalize`` runs) with sigma=0 and an inactive clip equals
    plain SGD over the batches Opacus' Poisson sampler draws from the same seed."""
    model = tiny_model(num_layers=1)
    data = N._Sentences([list(map(int, padded_batch(1, seed=s)[0][:8])) for s in range(30)], 11)
    plain = copy.deepcopy(model)
    ratios = np.full(30, -1.0)
    done = N.dp_sgd_steps(
        model,
        data,
        torch.optim.SGD(model.parameters(), lr=0.5),
        steps=3,
        sample_rate=0.2,
        noise_multiplier=0.0,
        clip=1e6,
        seed=11,
        ratios=ratios,
    )
    assert done == 3
    sgd = torch.optim.SGD(plain.parameters(), lr=0.5)
    loader = DPDataLoader(data, sample_rate=0.2, generator=torch.Generator().manual_seed(11))
    sampled = set()
    for (idx, batch), _ in zip(loader, range(3), strict=False):
        sgd.zero_grad()
        if len(batch):
            (N._batch_loss(plain, batch) * len(batch) / 6.0).backward()
            sgd.step()
        sampled |= set(idx.tolist())
    for (name, a), b in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    # Ratios were recorded for exactly the sampled examples (clip inactive: tiny ratios).
    assert set(np.flatnonzero(ratios >= 0).tolist()) == sampled and len(sampled) > 0
    assert ratios.max() < 1e-3


def test_zero_noise_is_refused_by_personalize() -> None:
    from userlibri.errors import ConfigError

    class Tok:  # the tiny subset of Tokenizer that personalize needs
        vocab_size, model_id, path = VOCAB, "", "chars"

        def piece_to_id(self, piece: str) -> int:
            return 1

        def encode(self, text: str) -> list[int]:
            return [3 + (ord(ch) - 65) % (VOCAB - 3) for ch in text.replace(" ", "")]

    priv = N.PrivacyConfig("dp-sgd", noise_multiplier=0.0, delta=1e-3)
    tc = N.TrainConfig(epochs=1, batch_size=5, progress=False)
    with pytest.raises(ConfigError, match="no privacy"):
        N.personalize(tiny_model(), ["AB CD EF"] * 20, Tok(), tc, priv)  # type: ignore[arg-type]
