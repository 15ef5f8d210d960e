"""RNN-T (transducer) loss in pure PyTorch, vectorised over the anti-diagonals of the lattice.

torchaudio's compiled ``rnnt_loss`` is missing from CPU builds (see shared/NOTES.md), so this is
ours. The definition is Graves (2012) and torchaudio's: for one utterance with ``T`` encoder frames
and ``U`` target tokens, ``logits[t, u]`` is the joiner output after frame ``t`` and ``u`` emitted
tokens; an alignment moves from (0, 0) to (T-1, U) by blanks (t+1) and labels (u+1), then emits a
final blank; the loss is ``-log`` of the summed probability of all alignments.

Memory: only the ``(B, T, U+1, V)`` input and its gradient are kept. The forward pass takes a
transient log_softmax (freed at once), gathers the blank and target log-probabilities
(``(B, T, U+1)`` each) and runs the alpha recursion on them; the
backward pass runs the beta recursion and writes the gradient in one ``(B, T, U+1, V)`` buffer
(``softmax * occupancy - transition posteriors``), instead of autograd keeping a full
``log_softmax`` and per-step graphs. Each recursion is ``T + U`` steps over ``(B, U+1)`` tensors.

``topology="modified"`` is the one-symbol-per-frame transducer (icefall's ``rnnt_type="modified"``;
Graves' lattice restricted so that every frame emits exactly one symbol): a label moves (t, u) to
(t+1, u+1), a blank (t, u) to (t+1, u), and there is no final blank, so ``U <= T`` is required
(otherwise the loss is infinite). It trains the model that our decoders search (greedy and
modified beam search emit at most one token per frame), and its recursions take ``T`` steps.
"""

from __future__ import annotations

from typing import Literal

import torch

from userlibri.errors import UserLibriError

Reduction = Literal["mean", "sum", "none"]
Topology = Literal["standard", "modified"]

__all__ = ["rnnt_loss"]


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = -1,
    reduction: Reduction = "mean",
    fused_log_softmax: bool = True,
    topology: Topology = "standard",
) -> torch.Tensor:
    """Transducer loss (negative log-likelihood), torchaudio's ``rnnt_loss`` semantics.

    Args:
        logits: (B, T, U+1, V) joiner outputs; with ``fused_log_softmax=False`` they must already
            be log-probabilities (log_softmax taken outside).
        targets: (B, U) integer token ids; entries past ``target_lengths`` are ignored.
        logit_lengths: (B,) valid frames per utterance, 1 <= length <= T.
        target_lengths: (B,) valid tokens per utterance, 0 <= length <= U.
        blank: blank id; negative counts from the end (-1 = V-1, torchaudio's default).
        reduction: "mean" (over the batch, like torchaudio), "sum" or "none" (per utterance, (B,)).
        fused_log_softmax: apply log_softmax over V inside the loss.
        topology: "standard" (Graves) or "modified" (one symbol per frame; see the module
            docstring). A modified-topology utterance with more tokens than frames has an infinite
            loss (and a NaN-free zero gradient).

    Returns the loss in the dtype of ``logits`` (computed in float32 at least).
    """
    blank_id = _check_inputs(logits, targets, logit_lengths, target_lengths, blank, reduction)
    if topology not in ("standard", "modified"):
        raise UserLibriError(f"rnnt_loss: expected topology standard or modified, found {topology!r}")
    fn = _RNNTLoss if topology == "standard" else _ModifiedRNNTLoss
    losses = fn.apply(logits, targets, logit_lengths, target_lengths, blank_id, fused_log_softmax)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def _check_inputs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
    reduction: str,
) -> int:
    """Validate shapes, dtypes and values; return the non-negative blank id."""
    if logits.dim() != 4 or not logits.is_floating_point():
        raise UserLibriError(
            f"rnnt_loss: expected float logits of shape (B, T, U+1, V), found {logits.dtype} "
            f"{tuple(logits.shape)}"
        )
    B, T, U1, V = logits.shape
    if targets.shape != (B, U1 - 1) or targets.is_floating_point():
        raise UserLibriError(
            f"rnnt_loss: expected integer targets of shape ({B}, {U1 - 1}), found {targets.dtype} "
            f"{tuple(targets.shape)}"
        )
    for name, lengths in (("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if lengths.shape != (B,) or lengths.is_floating_point():
            raise UserLibriError(
                f"rnnt_loss: expected integer {name} of shape ({B},), found {lengths.dtype} "
                f"{tuple(lengths.shape)}"
            )
    if reduction not in ("mean", "sum", "none"):
        raise UserLibriError(f"rnnt_loss: expected reduction mean, sum or none, found {reduction!r}")
    if not -V <= blank < V:
        raise UserLibriError(f"rnnt_loss: expected blank in [-{V}, {V}), found {blank}")
    blank_id = blank % V
    if B == 0:
        return blank_id
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > T:
        raise UserLibriError(f"rnnt_loss: expected logit_lengths in [1, {T}], found {logit_lengths.tolist()}")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > U1 - 1:
        raise UserLibriError(
            f"rnnt_loss: expected target_lengths in [0, {U1 - 1}], found {target_lengths.tolist()}"
        )
    valid = torch.arange(U1 - 1, device=targets.device)[None, :] < target_lengths[:, None]
    used = targets[valid]
    if used.numel() and (int(used.min()) < 0 or int(used.max()) >= V or bool((used == blank_id).any())):
        raise UserLibriError(
            f"rnnt_loss: expected target ids in [0, {V}) other than blank {blank_id}, found "
            f"min {int(used.min())}, max {int(used.max())}, blank present: {bool((used == blank_id).any())}"
        )
    return blank_id


def _skew_index(T: int, U1: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index of lattice cell (t, u) on anti-diagonal n = t + u, for t in 0..T (one extra row).

    Returns (t_of, u_of, valid), each (N, U1) with N = T + U1: diagonal n, position u holds cell
    (n - u, u) when ``valid``.
    """
    n = torch.arange(T + U1, device=device)[:, None]
    u = torch.arange(U1, device=device)[None, :]
    t = n - u
    valid = (t >= 0) & (t <= T)
    return t.clamp(0, T), u.expand_as(t), valid


class _RNNTLoss(torch.autograd.Function):
    """Per-utterance loss (B,) with an analytic gradient (see module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        logit_lengths: torch.Tensor,
        target_lengths: torch.Tensor,
        blank: int,
        fused: bool,
    ) -> torch.Tensor:
        B, T, U1, V = logits.shape
        device = logits.device
        with torch.no_grad():
            lengths_t, lengths_u, label_idx, lp_blank, lp_label, norm = _transition_log_probs(
                logits, targets, logit_lengths, target_lengths, blank, fused
            )
            skew_blank, skew_label = _skew(lp_blank, T, U1), _skew(lp_label, T, U1)
            alpha = _alpha(skew_blank, skew_label)  # (B, N, U1)
            # Total log-likelihood = alpha at the virtual cell (T_b, U_b) after the final blank.
            batch = torch.arange(B, device=device)
            loglik = alpha[batch, lengths_t + lengths_u, lengths_u]
        ctx.save_for_backward(logits, norm, skew_blank, skew_label, alpha, loglik, label_idx)
        ctx.lengths = (lengths_t, lengths_u)
        ctx.blank = blank
        ctx.fused = fused
        return (-loglik).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        logits, norm, skew_blank, skew_label, alpha, loglik, label_idx = ctx.saved_tensors
        lengths_t, lengths_u = ctx.lengths
        B, T, U1, V = logits.shape
        with torch.no_grad():
            beta = _beta(skew_blank, skew_label, lengths_t, lengths_u)  # (B, N, U1)
            # Posterior probability of each transition: alpha * p(transition) * beta(next) / total.
            next_blank = beta[:, 1:]  # cell (t+1, u) is on diagonal n+1, position u
            next_label = _next_label(beta)
            total = loglik[:, None, None]
            post_blank = torch.exp(alpha[:, :-1] + skew_blank[:, :-1] + next_blank - total)
            post_label = torch.exp(alpha[:, :-1] + skew_label[:, :-1] + next_label - total)
            post_blank = torch.nan_to_num(_unskew(post_blank, T, U1), nan=0.0)
            post_label = torch.nan_to_num(_unskew(post_label, T, U1), nan=0.0)
            grad = _logit_gradient(
                logits, norm, label_idx, post_blank, post_label, grad_out, ctx.blank, ctx.fused
            )
        return grad, None, None, None, None, None


def _transition_log_probs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
    fused: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frames (B,), tokens (B,), label index (B, U1), blank and label log-probs (B, T, U1) masked
    to -inf outside each utterance's lattice, log-partition (B, T, U1) for the backward pass), in
    float64 for float64 logits, else float32."""
    B, T, U1, V = logits.shape
    device = logits.device
    work = torch.float64 if logits.dtype == torch.float64 else torch.float32
    targets = targets.long().clamp(0, V - 1)  # padding entries are masked below
    lengths_t = logit_lengths.long().to(device)
    lengths_u = target_lengths.long().to(device)
    label_idx = torch.cat([targets, targets.new_zeros((B, 1))], dim=1)  # (B, U1); last unused
    gather_idx = label_idx[:, None, :, None].expand(B, T, U1, 1)
    if fused:
        # A transient full log_softmax is faster than logsumexp on CPU (one pass, not four).
        log_probs = logits.to(work).log_softmax(dim=-1)
        lp_blank = log_probs[..., blank]
        lp_label = log_probs.gather(3, gather_idx)[..., 0]
        del log_probs
        norm = logits[..., blank].to(work) - lp_blank
    else:
        lp_blank = logits[..., blank].to(work)
        lp_label = logits.gather(3, gather_idx)[..., 0].to(work)
        norm = torch.zeros_like(lp_blank)
    # Mask transitions that leave an utterance's own lattice, so padding never contributes.
    t_grid = torch.arange(T, device=device)[None, :, None]
    u_grid = torch.arange(U1, device=device)[None, None, :]
    inside_t = t_grid < lengths_t[:, None, None]
    neg_inf = torch.tensor(float("-inf"), dtype=work, device=device)
    lp_blank = torch.where(inside_t & (u_grid <= lengths_u[:, None, None]), lp_blank, neg_inf)
    lp_label = torch.where(inside_t & (u_grid < lengths_u[:, None, None]), lp_label, neg_inf)
    return lengths_t, lengths_u, label_idx, lp_blank, lp_label, norm


def _logit_gradient(
    logits: torch.Tensor,
    norm: torch.Tensor,
    label_idx: torch.Tensor,
    post_blank: torch.Tensor,
    post_label: torch.Tensor,
    grad_out: torch.Tensor,
    blank: int,
    fused: bool,
) -> torch.Tensor:
    """d loss / d logits from the transition posteriors (B, T, U1)."""
    B, T, U1, V = logits.shape
    # d(-loglik)/d(log-prob) = -posterior; scale by the incoming gradient per utterance.
    scale = grad_out.to(post_blank.dtype)[:, None, None]
    g_blank, g_label = -post_blank * scale, -post_label * scale
    if fused:
        # d lp_k / d z_j = [k == j] - softmax_j
        grad = logits.to(norm.dtype, copy=True).sub_(norm[..., None]).exp_()
        grad.mul_(-(g_blank + g_label)[..., None])
    else:
        grad = torch.zeros((B, T, U1, V), dtype=norm.dtype, device=logits.device)
    grad[..., blank] += g_blank
    grad.scatter_add_(3, label_idx[:, None, :, None].expand(B, T, U1, 1), g_label[..., None])
    return grad.to(logits.dtype)


class _ModifiedRNNTLoss(torch.autograd.Function):
    """One symbol per frame: alpha/beta recursions over t on (B, U1) rows."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        logit_lengths: torch.Tensor,
        target_lengths: torch.Tensor,
        blank: int,
        fused: bool,
    ) -> torch.Tensor:
        B, T, U1, V = logits.shape
        device = logits.device
        with torch.no_grad():
            lengths_t, lengths_u, label_idx, lp_blank, lp_label, norm = _transition_log_probs(
                logits, targets, logit_lengths, target_lengths, blank, fused
            )
            # alpha[:, t, u] = log P(after t frames, u labels emitted)
            alpha = torch.full((B, T + 1, U1), float("-inf"), dtype=lp_blank.dtype, device=device)
            alpha[:, 0, 0] = 0.0
            for t in range(T):
                prev, cur = alpha[:, t], alpha[:, t + 1]
                torch.add(prev, lp_blank[:, t], out=cur)
                cur[:, 1:] = torch.logaddexp(cur[:, 1:], prev[:, :-1] + lp_label[:, t, :-1])
            batch = torch.arange(B, device=device)
            loglik = alpha[batch, lengths_t, lengths_u]
        ctx.save_for_backward(logits, norm, lp_blank, lp_label, alpha, loglik, label_idx)
        ctx.lengths = (lengths_t, lengths_u)
        ctx.blank = blank
        ctx.fused = fused
        return (-loglik).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        logits, norm, lp_blank, lp_label, alpha, loglik, label_idx = ctx.saved_tensors
        lengths_t, lengths_u = ctx.lengths
        B, T, U1, V = logits.shape
        with torch.no_grad():
            # beta[:, t, u] = log P(finish | after t frames, u labels); 0 at (T_b, U_b).
            beta = torch.full_like(alpha, float("-inf"))
            batch = torch.arange(B, device=logits.device)
            ends = _group_by_end(lengths_t)
            for t in range(T, -1, -1):
                cur = beta[:, t]
                if t < T:
                    nxt = beta[:, t + 1]
                    torch.add(nxt, lp_blank[:, t], out=cur)
                    cur[:, :-1] = torch.logaddexp(cur[:, :-1], nxt[:, 1:] + lp_label[:, t, :-1])
                if t in ends:
                    idx = batch[ends[t]]
                    cur[idx, lengths_u[idx]] = 0.0
            total = loglik[:, None, None]
            next_label = _next_label(beta)
            post_blank = torch.exp(alpha[:, :-1] + lp_blank + beta[:, 1:] - total)
            post_label = torch.exp(alpha[:, :-1] + lp_label + next_label - total)
            # An impossible utterance (U > T) has loglik -inf: no gradient rather than NaN.
            post_blank = torch.nan_to_num(post_blank, nan=0.0)
            post_label = torch.nan_to_num(post_label, nan=0.0)
            grad = _logit_gradient(
                logits, norm, label_idx, post_blank, post_label, grad_out, ctx.blank, ctx.fused
            )
        return grad, None, None, None, None, None


def _group_by_end(ends: torch.Tensor) -> dict[int, list[int]]:
    """End index (a diagonal or a frame) -> the utterances that end there, for the beta recursions."""
    groups: dict[int, list[int]] = {}
    for b, end in enumerate(ends.tolist()):
        groups.setdefault(end, []).append(b)
    return groups


def _next_label(beta: torch.Tensor) -> torch.Tensor:
    """beta of the cell a label leads to, (B, N-1, U1): one step on, one token further (-inf past
    the last token)."""
    return torch.cat([beta[:, 1:, 1:], torch.full_like(beta[:, 1:, :1], float("-inf"))], 2)


def _skew(x: torch.Tensor, T: int, U1: int) -> torch.Tensor:
    """(B, T, U1) lattice values to (B, N, U1) by anti-diagonal; cells off the lattice are -inf."""
    B = x.shape[0]
    padded = torch.cat([x, torch.full((B, 1, U1), float("-inf"), dtype=x.dtype, device=x.device)], 1)
    t_of, u_of, valid = _skew_index(T, U1, x.device)
    out = padded[:, t_of, u_of]
    return out.masked_fill(~valid, float("-inf"))


def _unskew(x: torch.Tensor, T: int, U1: int) -> torch.Tensor:
    """(B, N', U1) by anti-diagonal (N' >= T + U1 - 1) back to (B, T, U1)."""
    t = torch.arange(T, device=x.device)[:, None]
    u = torch.arange(U1, device=x.device)[None, :]
    return x[:, t + u, u.expand(T, U1)]


def _alpha(skew_blank: torch.Tensor, skew_label: torch.Tensor) -> torch.Tensor:
    """Forward variables by anti-diagonal: alpha[:, n, u] = log P(reach cell (n-u, u))."""
    alpha = torch.full_like(skew_blank, float("-inf"))
    alpha[:, 0, 0] = 0.0
    for n in range(1, alpha.shape[1]):
        prev, cur = alpha[:, n - 1], alpha[:, n]
        torch.add(prev, skew_blank[:, n - 1], out=cur)  # (t-1, u) -> (t, u)
        # (t, u-1) -> (t, u); torch.logaddexp gives -inf (not NaN) for two -inf.
        cur[:, 1:] = torch.logaddexp(cur[:, 1:], prev[:, :-1] + skew_label[:, n - 1, :-1])
    return alpha


def _beta(
    skew_blank: torch.Tensor, skew_label: torch.Tensor, lengths_t: torch.Tensor, lengths_u: torch.Tensor
) -> torch.Tensor:
    """Backward variables by anti-diagonal: beta[:, n, u] = log P(finish | at cell (n-u, u)).

    The end is the virtual cell (T_b, U_b) after the final blank, where beta = 0.
    """
    B, N, U1 = skew_blank.shape
    beta = torch.full_like(skew_blank, float("-inf"))
    batch = torch.arange(B, device=beta.device)
    ends = _group_by_end(lengths_t + lengths_u)
    for n in range(N - 1, -1, -1):
        cur = beta[:, n]
        if n < N - 1:
            nxt = beta[:, n + 1]
            torch.add(nxt, skew_blank[:, n], out=cur)  # (t, u) -> (t+1, u): diagonal n+1, position u
            cur[:, :-1] = torch.logaddexp(cur[:, :-1], nxt[:, 1:] + skew_label[:, n, :-1])  # -> (t, u+1)
        if n in ends:
            idx = batch[ends[n]]
            cur[idx, lengths_u[idx]] = 0.0
    return beta
