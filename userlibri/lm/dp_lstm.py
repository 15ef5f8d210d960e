"""Per-example gradient clipping for the LSTM LM without per-example gradients ("book-keeping"
ghost clipping, Bu et al. 2023; ghost norms, Goodfellow 2015 / Li et al. 2022).

Every weight of the model is used as ``output = input @ W.T`` (the embedding as a lookup), so
example ``i``'s gradient of ``W`` is ``G_i.T @ A_i``, summed over its time steps, where ``A_i`` is
the layer input ``(T, d_in)`` and ``G_i`` the loss gradient at the layer output ``(T, d_out)``.
One forward and one backward pass (to the layer outputs only) give every ``A`` and ``G``; from
them, per example, the squared gradient norm ``||G_i.T A_i||^2 = sum_ts (A_i A_i.T)_ts (G_i G_i.T)_ts``
(or ``G_i.T A_i`` itself when that is cheaper), then the clip factors
``c_i = min(1, C / (||g_i|| + 1e-6))`` (Opacus' formula), then ``sum_i c_i G_i.T A_i`` as one matrix
product. No per-example gradient is ever stored and no second backward pass runs.

The LSTM is unrolled in Python over ``nn.LSTM``'s own parameters (nothing is swapped, the
state_dict stays ``nn.LSTM``'s): the input projection of all time steps is one matrix product
before the loop, and the gradient at its output is exactly the gradient at the gate
pre-activations, which is ``G`` for both ``weight_ih`` and ``weight_hh`` (whose input is the
previous hidden state). Noise, Poisson sampling and accounting stay Opacus'
(``DPOptimizerFastGradientClipping``, ``DPDataLoader``, its accountants): this module only fills
``p.grad`` with the sum of clipped per-example gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from userlibri.lm.neural import LstmLM

_IGNORE = -100
#: Opacus' clip factor: C / (norm + eps), at most 1.
_CLIP_EPS = 1e-6


@dataclass
class _Linear:
    """One ``input @ weight.T + bias`` use: input ``(B, T, d_in)``, output gradient ``(B, T, d_out)``."""

    weight: nn.Parameter
    biases: tuple[nn.Parameter, ...]  # each receives the summed output gradient
    inputs: torch.Tensor
    out: torch.Tensor  # the output (grad requested), later replaced by its gradient


def _lstm_layer(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer over ``x`` (B, T, d_in) from a zero state, gate order i, f, g, o as
    ``nn.LSTM``. Returns outputs (B, T, H), the gate pre-activation projection of the inputs
    (B, T, 4H, a graph node whose gradient is the gates' gradient) and the previous hidden states
    (B, T, H, detached)."""
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    xproj = torch.addmm(b_ih + b_hh, x.reshape(batch * steps, -1), w_ih.t()).view(batch, steps, 4 * hidden)
    h = x.new_zeros(batch, hidden)
    c = x.new_zeros(batch, hidden)
    w_hh_t = w_hh.t()
    outs = []
    # unbind/chunk (not indexing): their backward is one stack/cat, not a zero-filled tensor per step.
    for xp in xproj.unbind(1):
        i, f, g, o = torch.addmm(xp, h, w_hh_t).chunk(4, dim=1)
        c = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    y = torch.stack(outs, dim=1)
    prev = torch.cat([y.new_zeros(batch, 1, hidden), y[:, :-1]], dim=1).detach()
    return y, xproj, prev


def _per_example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each example's mean token NLL (B,); targets ``-100`` are padding."""
    nll = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=_IGNORE, reduction="none"
    ).view(targets.shape)
    mask = (targets != _IGNORE).to(nll.dtype)
    return (nll * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _gram(x: torch.Tensor) -> torch.Tensor:
    return torch.bmm(x, x.transpose(1, 2))


def _sq_norms_linear(a: torch.Tensor, g: torch.Tensor, grams: dict[int, torch.Tensor]) -> torch.Tensor:
    """``||g_i.T @ a_i||_F^2`` per example, by the Gram (ghost) form or explicitly, whichever costs
    less. ``grams`` caches the output-gradient Gram matrices shared by several weights."""
    steps, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    if steps * (d_in + d_out) < d_in * d_out:
        if id(g) not in grams:
            grams[id(g)] = _gram(g)
        return (_gram(a) * grams[id(g)]).sum(dim=(1, 2))
    return torch.bmm(g.transpose(1, 2), a).pow(2).sum(dim=(1, 2))


def _sq_norms_embedding(tokens: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-example squared norm of an embedding's gradient: rows of equal tokens add up."""
    same = (tokens[:, :, None] == tokens[:, None, :]).to(g.dtype)
    return (_gram(g) * same).sum(dim=(1, 2))


def _check_model(model: LstmLM) -> None:
    if model.config.tie_weights or not isinstance(model.proj, nn.Identity):
        raise ValueError("per-example clipping supports the untied LstmLM only (tie_weights=False)")
    if not isinstance(model.lstm, nn.LSTM):
        raise ValueError(f"expected model.lstm to be an nn.LSTM, found {type(model.lstm).__name__}")


def clipped_gradients(model: LstmLM, batch: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Set each parameter's ``.grad`` to ``sum_i c_i g_i``, the sum over the batch of per-example
    gradients (of each example's mean token NLL) clipped to L2 norm ``clip`` jointly over all
    parameters; returns the unclipped per-example gradient norms (B,) and the losses (B,).

    ``batch``: (B, L) token ids padded with -100 (``neural._Sentences`` rows). An empty batch
    gives zero gradients. The model's dropout applies if it is in training mode."""
    _check_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if len(params) != len(list(model.parameters())):
        raise ValueError("per-example clipping expects every parameter to be trainable")
    if batch.shape[0] == 0:
        for p in params:
            p.grad = torch.zeros_like(p)
        return torch.zeros(0), torch.zeros(0)
    width = int((batch != _IGNORE).sum(dim=1).max())
    batch = batch[:, :width]
    inputs, targets = batch[:, :-1].clamp(min=0), batch[:, 1:]

    lstm: nn.LSTM = model.lstm  # type: ignore[assignment]
    emb = model.embed(inputs)
    x = model.drop(emb)
    uses: list[_Linear] = []
    for k in range(lstm.num_layers):
        w_ih, w_hh = getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")
        b_ih, b_hh = getattr(lstm, f"bias_ih_l{k}"), getattr(lstm, f"bias_hh_l{k}")
        y, xproj, prev = _lstm_layer(x, w_ih, w_hh, b_ih, b_hh)
        uses.append(_Linear(w_ih, (b_ih, b_hh), x.detach(), xproj))
        uses.append(_Linear(w_hh, (), prev, xproj))
        x = nn.functional.dropout(y, lstm.dropout, lstm.training) if k < lstm.num_layers - 1 else y
    z = model.drop(x)
    logits = model.out(z)
    uses.append(_Linear(model.out.weight, (model.out.bias,), z.detach(), logits))
    losses = _per_example_loss(logits, targets)

    wanted = [emb, *{id(u.out): u.out for u in uses}.values()]
    grads = dict(zip((id(t) for t in wanted), torch.autograd.grad(losses.sum(), wanted), strict=True))
    g_emb = grads[id(emb)]

    sq = _sq_norms_embedding(inputs, g_emb)
    bias_sums: dict[int, torch.Tensor] = {}
    grams: dict[int, torch.Tensor] = {}
    for u in uses:
        g = grads[id(u.out)]
        sq = sq + _sq_norms_linear(u.inputs, g, grams)
        if u.biases:
            s = bias_sums.setdefault(id(u.out), g.sum(dim=1))
            sq = sq + len(u.biases) * s.pow(2).sum(dim=1)
    norms = sq.sqrt()
    coef = (clip / (norms + _CLIP_EPS)).clamp(max=1.0)

    with torch.no_grad():
        w_emb = model.embed.weight
        ge = (g_emb * coef[:, None, None]).reshape(-1, g_emb.shape[-1])
        w_emb.grad = torch.zeros_like(w_emb).index_add_(0, inputs.reshape(-1), ge)
        scaled: dict[int, torch.Tensor] = {}
        for u in uses:
            if id(u.out) not in scaled:
                scaled[id(u.out)] = grads[id(u.out)] * coef[:, None, None]
            g = scaled[id(u.out)]
            d_out = g.shape[-1]
            u.weight.grad = g.reshape(-1, d_out).t() @ u.inputs.reshape(-1, u.inputs.shape[-1])
            for b in u.biases:
                b.grad = g.reshape(-1, d_out).sum(dim=0)
    return norms.detach(), losses.detach()
