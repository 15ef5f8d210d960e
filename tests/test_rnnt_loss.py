"""Pure-PyTorch RNN-T loss: brute force over alignments, gradcheck, padding, reductions, bad input."""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch")

from userlibri.asr.rnnt_loss import rnnt_loss  # noqa: E402
from userlibri.errors import UserLibriError  # noqa: E402


def _brute_force_nll(log_probs: torch.Tensor, targets: list[int], blank: int) -> torch.Tensor:
    """-log sum over every alignment, enumerated explicitly. log_probs: (T, U+1, V)."""
    T, U1, _ = log_probs.shape
    U = U1 - 1
    assert len(targets) == U
    paths = []
    # An alignment emits U labels and T blanks, the last symbol being the final blank at (T-1, U).
    for label_slots in itertools.combinations(range(T - 1 + U), U):
        t = u = 0
        score = log_probs.new_zeros(())
        for i in range(T - 1 + U):
            if i in label_slots:
                score = score + log_probs[t, u, targets[u]]
                u += 1
            else:
                score = score + log_probs[t, u, blank]
                t += 1
        paths.append(score + log_probs[T - 1, U, blank])
    return -torch.logsumexp(torch.stack(paths), dim=0)


def _recursion_nll(log_probs: torch.Tensor, targets: list[int], blank: int) -> torch.Tensor:
    """Independent scalar alpha recursion over (t, u), for cases too big to enumerate."""
    T, U1, _ = log_probs.shape
    alpha = [[None] * U1 for _ in range(T)]
    for t in range(T):
        for u in range(U1):
            terms = []
            if t == 0 and u == 0:
                terms.append(log_probs.new_zeros(()))
            if t > 0:
                terms.append(alpha[t - 1][u] + log_probs[t - 1, u, blank])
            if u > 0:
                terms.append(alpha[t][u - 1] + log_probs[t, u - 1, targets[u - 1]])
            alpha[t][u] = torch.logsumexp(torch.stack(terms), dim=0)
    return -(alpha[T - 1][U1 - 1] + log_probs[T - 1, U1 - 1, blank])


def _random_case(B: int, T: int, U: int, V: int, blank: int = 0, seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(B, T, U + 1, V, generator=gen, dtype=dtype)).requires_grad_()
    choices = torch.tensor([v for v in range(V) if v != blank % V])
    targets = choices[torch.randint(len(choices), (B, U), generator=gen)]
    return logits, targets.int()


@pytest.mark.parametrize(
    ("T", "U", "V", "blank"), [(1, 0, 3, 0), (1, 3, 4, 0), (3, 2, 5, 0), (4, 3, 6, 2), (5, 4, 3, -1)]
)
def test_equals_brute_force_sum_over_alignments(T: int, U: int, V: int, blank: int) -> None:
    logits, targets = _random_case(1, T, U, V, blank, seed=T * 10 + U)
    loss = rnnt_loss(logits, targets, torch.tensor([T]), torch.tensor([U]), blank=blank, reduction="sum")
    expected = _brute_force_nll(logits[0].log_softmax(-1), targets[0].tolist(), blank % V)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, atol=1e-10, rtol=1e-8)


def test_two_frame_one_token_by_hand() -> None:
    # Uniform distribution over V=2 symbols: every transition has probability 1/2. With T=2, U=1
    # there are 2 alignments of 3 symbols (2 blanks + 1 label), each (1/2)^3.
    logits = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    loss = rnnt_loss(logits, torch.tensor([[1]]), torch.tensor([2]), torch.tensor([1]), blank=0)
    assert loss.item() == pytest.approx(-math.log(2 * 0.5**3))


def test_gradcheck_float64() -> None:
    logits, targets = _random_case(2, 3, 2, 4, seed=3)
    lengths_t, lengths_u = torch.tensor([3, 2]), torch.tensor([2, 1])
    for fused in (True, False):

        def fn(x: torch.Tensor, fused: bool = fused) -> torch.Tensor:
            inp = x if fused else x.log_softmax(-1)
            return rnnt_loss(
                inp, targets, lengths_t, lengths_u, blank=0, reduction="none", fused_log_softmax=fused
            )

        assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-7)


def test_not_fused_takes_log_probs() -> None:
    logits, targets = _random_case(3, 5, 3, 7, seed=4)
    lengths_t, lengths_u = torch.tensor([5, 4, 2]), torch.tensor([3, 0, 2])
    fused = rnnt_loss(logits, targets, lengths_t, lengths_u, blank=0, reduction="none")
    outside = rnnt_loss(
        logits.log_softmax(-1),
        targets,
        lengths_t,
        lengths_u,
        blank=0,
        reduction="none",
        fused_log_softmax=False,
    )
    torch.testing.assert_close(fused, outside, atol=1e-12, rtol=1e-12)
    (g1,) = torch.autograd.grad(fused.sum(), logits)
    (g2,) = torch.autograd.grad(outside.sum(), logits)
    torch.testing.assert_close(g1, g2, atol=1e-12, rtol=1e-10)


def test_batch_with_padding_equals_per_example() -> None:
    B, T, U, V = 4, 9, 6, 8
    logits, targets = _random_case(B, T, U, V, blank=0, seed=5)
    lengths_t, lengths_u = torch.tensor([9, 4, 1, 7]), torch.tensor([6, 2, 0, 6])
    targets = targets.clone()
    targets[1, 2:] = 0  # padding may hold anything, even the blank id
    targets[2, :] = -1
    batch = rnnt_loss(logits, targets, lengths_t, lengths_u, blank=0, reduction="none")
    (batch_grad,) = torch.autograd.grad(batch.sum(), logits)
    for b in range(B):
        t, u = int(lengths_t[b]), int(lengths_u[b])
        single_logits = logits[b : b + 1, :t, : u + 1].detach().requires_grad_()
        single = rnnt_loss(
            single_logits, targets[b : b + 1, :u], torch.tensor([t]), torch.tensor([u]), blank=0
        )
        assert batch[b].item() == pytest.approx(single.item(), abs=1e-10)
        reference = _recursion_nll(logits[b, :t, : u + 1].log_softmax(-1), targets[b, :u].tolist(), 0)
        assert batch[b].item() == pytest.approx(reference.item(), abs=1e-10)
        (single_grad,) = torch.autograd.grad(single, single_logits)
        torch.testing.assert_close(batch_grad[b, :t, : u + 1], single_grad[0], atol=1e-12, rtol=1e-10)
        # Padding gets exactly zero gradient.
        padded = batch_grad[b].clone()
        padded[:t, : u + 1] = 0
        assert torch.count_nonzero(padded) == 0


def test_reductions_follow_torchaudio() -> None:
    """torchaudio: "mean" averages per-utterance losses over the batch; blank=-1 is the last id."""
    V = 6
    logits, targets = _random_case(3, 4, 3, V, blank=-1, seed=6)
    args = (targets, torch.tensor([4, 3, 4]), torch.tensor([3, 3, 1]))
    none = rnnt_loss(logits, *args, reduction="none")
    assert none.shape == (3,)
    assert rnnt_loss(logits, *args).item() == pytest.approx(none.mean().item())
    assert rnnt_loss(logits, *args, reduction="sum").item() == pytest.approx(none.sum().item())
    torch.testing.assert_close(rnnt_loss(logits, *args, blank=V - 1, reduction="none"), none)
    # Gradients of a probability: softmax rows of the gradient sum to zero (fused log_softmax).
    (grad,) = torch.autograd.grad(none.sum(), logits)
    torch.testing.assert_close(
        grad.sum(-1), torch.zeros(grad.shape[:-1], dtype=grad.dtype), atol=1e-12, rtol=0
    )


def test_float32_matches_float64_and_is_stable_for_large_logits() -> None:
    logits, targets = _random_case(2, 30, 10, 16, seed=7)
    lengths_t, lengths_u = torch.tensor([30, 21]), torch.tensor([10, 8])
    ref = rnnt_loss(logits, targets, lengths_t, lengths_u, blank=0, reduction="none")
    f32 = rnnt_loss(logits.detach().float(), targets, lengths_t, lengths_u, blank=0, reduction="none")
    torch.testing.assert_close(f32.double(), ref, atol=1e-3, rtol=1e-5)
    big = (logits.detach() * 100).float().requires_grad_()  # log-probs around -1000: no under/overflow
    loss = rnnt_loss(big, targets, lengths_t, lengths_u, blank=0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()
    half = logits.detach().bfloat16().requires_grad_()  # mixed precision: computed in float32 inside
    loss16 = rnnt_loss(half, targets, lengths_t, lengths_u, blank=0, reduction="none")
    loss16.sum().backward()
    assert loss16.dtype == half.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss16.double(), ref, atol=0.5, rtol=0.02)


def test_long_sequences_are_finite() -> None:
    logits, targets = _random_case(1, 400, 80, 5, seed=8, dtype=torch.float32)
    loss = rnnt_loss(logits, targets, torch.tensor([400]), torch.tensor([80]), blank=0)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0 and torch.isfinite(logits.grad).all()


def test_bad_input() -> None:
    logits, targets = _random_case(2, 3, 2, 4, seed=9)
    lt, lu = torch.tensor([3, 3]), torch.tensor([2, 2])
    cases = [
        ((logits[0], targets, lt, lu), {}, "shape \\(B, T, U\\+1, V\\)"),
        ((logits, targets[:, :1], lt, lu), {}, "targets of shape \\(2, 2\\)"),
        ((logits, targets.float(), lt, lu), {}, "integer targets"),
        ((logits, targets, lt.float(), lu), {}, "integer logit_lengths"),
        ((logits, targets, torch.tensor([0, 3]), lu), {}, "logit_lengths in \\[1, 3\\]"),
        ((logits, targets, torch.tensor([4, 3]), lu), {}, "logit_lengths in \\[1, 3\\]"),
        ((logits, targets, lt, torch.tensor([3, 2])), {}, "target_lengths in \\[0, 2\\]"),
        ((logits, torch.tensor([[1, 0], [1, 2]]), lt, lu), {"blank": 0}, "other than blank 0"),
        ((logits, torch.tensor([[1, 4], [1, 2]]), lt, lu), {"blank": 0}, "target ids in \\[0, 4\\)"),
        ((logits, targets, lt, lu), {"blank": 4}, "blank in"),
        ((logits, targets, lt, lu), {"reduction": "avg"}, "reduction"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(UserLibriError, match=message):
            rnnt_loss(*args, **kwargs)


def _brute_force_modified_nll(log_probs: torch.Tensor, targets: list[int], blank: int) -> torch.Tensor:
    """One symbol per frame: every alignment puts the U labels on U of the T frames (a label at
    frame t moves to (t+1, u+1)), blanks on the others; no final blank."""
    T, U1, _ = log_probs.shape
    U = U1 - 1
    paths = []
    for label_frames in itertools.combinations(range(T), U):
        u = 0
        score = log_probs.new_zeros(())
        for t in range(T):
            if t in label_frames:
                score = score + log_probs[t, u, targets[u]]
                u += 1
            else:
                score = score + log_probs[t, u, blank]
        paths.append(score)
    if not paths:
        return torch.tensor(math.inf, dtype=log_probs.dtype)
    return -torch.logsumexp(torch.stack(paths), dim=0)


@pytest.mark.parametrize(
    ("T", "U", "V", "blank"), [(1, 0, 3, 0), (1, 1, 3, 0), (3, 2, 5, 0), (5, 3, 6, 2), (6, 4, 3, -1)]
)
def test_modified_topology_equals_brute_force(T: int, U: int, V: int, blank: int) -> None:
    logits, targets = _random_case(1, T, U, V, blank, seed=T * 7 + U)
    loss = rnnt_loss(
        logits,
        targets,
        torch.tensor([T]),
        torch.tensor([U]),
        blank=blank,
        reduction="sum",
        topology="modified",
    )
    expected = _brute_force_modified_nll(logits[0].log_softmax(-1), targets[0].tolist(), blank % V)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, atol=1e-10, rtol=1e-8)


def test_modified_topology_batch_padding_gradcheck_and_impossible() -> None:
    B, T, U, V = 3, 7, 5, 6
    logits, targets = _random_case(B, T, U, V, blank=0, seed=11)
    lengths_t, lengths_u = torch.tensor([7, 4, 3]), torch.tensor([5, 2, 0])
    batch = rnnt_loss(logits, targets, lengths_t, lengths_u, blank=0, reduction="none", topology="modified")
    (batch_grad,) = torch.autograd.grad(batch.sum(), logits)
    for b in range(B):
        t, u = int(lengths_t[b]), int(lengths_u[b])
        expected = _brute_force_modified_nll(
            logits[b, :t, : u + 1].log_softmax(-1), targets[b, :u].tolist(), 0
        )
        assert batch[b].item() == pytest.approx(expected.item(), abs=1e-10)
        padded = batch_grad[b].clone()
        padded[:t, : u + 1] = 0
        assert torch.count_nonzero(padded) == 0
    small = logits[:1, :4, :3].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(
            x, targets[:1, :2], torch.tensor([4]), torch.tensor([2]), blank=0, topology="modified"
        ),
        (small,),
    )
    # More tokens than frames: no alignment, infinite loss, zero (not NaN) gradient.
    imp = logits[:1, :2, :4].detach().clone().requires_grad_()
    loss = rnnt_loss(imp, targets[:1, :3], torch.tensor([2]), torch.tensor([3]), blank=0, topology="modified")
    assert math.isinf(loss.item())
    (g,) = torch.autograd.grad(loss, imp)
    assert torch.isfinite(g).all()
    with pytest.raises(UserLibriError, match="topology"):
        rnnt_loss(logits, targets, lengths_t, lengths_u, blank=0, topology="graves")  # type: ignore[arg-type]
