"""Toy models and brute-force references shared by the decoder tests (not a test module)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def random_log_probs(rng: np.random.Generator, t: int, v: int, scale: float = 2.0) -> np.ndarray:
    return log_softmax(rng.normal(size=(t, v)) * scale)


class BigramLM:
    """A token bigram LM given as a table: ``log p(token | previous)`` (natural log); unknown pairs
    get ``floor``. State: the previous token (``-1`` at the start). Scores every id but ``blank``."""

    def __init__(
        self,
        table: dict[tuple[int, int], float],
        vocab_size: int,
        floor: float = -5.0,
        end: dict[int, float] | None = None,
    ) -> None:
        self.table = dict(table)
        self.vocab_size = vocab_size
        self.floor = floor
        self.end = dict(end or {})
        self.calls = 0

    def start_state(self) -> int:
        return -1

    def score(self, state: int, token: int) -> tuple[float, int]:
        self.calls += 1
        if not 0 < token < self.vocab_size:
            raise ValueError(f"BigramLM cannot score token {token}")
        return self.table.get((state, token), self.floor), token

    def final_score(self, state: int) -> float:
        return self.end.get(state, -1.0)

    def sentence(self, tokens: tuple[int, ...]) -> float:
        state, total = self.start_state(), 0.0
        for tok in tokens:
            s, state = self.score(state, tok)
            total += s
        return total + self.final_score(state)


class BatchedBigramLM(BigramLM):
    """The same LM with ``score_batch`` (counts batched calls)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.batch_calls = 0

    def score_batch(self, states, tokens):  # noqa: ANN001, ANN201
        self.batch_calls += 1
        out = [BigramLM.score(self, s, t) for s, t in zip(states, tokens, strict=True)]
        return np.array([o[0] for o in out]), [o[1] for o in out]


def random_bigram(rng: np.random.Generator, vocab: int) -> BigramLM:
    table = {(a, b): float(-rng.exponential(1.5)) for a in range(-1, vocab) for b in range(1, vocab)}
    end = {a: float(-rng.exponential(1.0)) for a in range(-1, vocab)}
    return BigramLM(table, vocab, end=end)


# -- CTC brute force -------------------------------------------------------------------------------
def ctc_collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out = []
    prev = None
    for p in path:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return tuple(out)


def ctc_brute_force(log_probs: np.ndarray, blank: int = 0) -> dict[tuple[int, ...], float]:
    """log P(y) for every label sequence y, summing over all V^T alignments."""
    t_max, v = log_probs.shape
    acc: dict[tuple[int, ...], list[float]] = defaultdict(list)
    for path in itertools.product(range(v), repeat=t_max):
        score = float(sum(log_probs[t, p] for t, p in enumerate(path)))
        acc[ctc_collapse(path, blank)].append(score)
    return {y: float(np.logaddexp.reduce(s)) for y, s in acc.items()}


# -- transducer toys ------------------------------------------------------------------------------------
class ToyTransducer:
    """A stateless decoder (embedding sum over the context) and a tanh joiner, numpy only."""

    def __init__(
        self, rng: np.random.Generator, vocab: int, enc_dim: int = 4, dec_dim: int = 4, scale: float = 2.0
    ) -> None:
        self.vocab = vocab
        self.emb = rng.normal(size=(vocab, dec_dim))
        self.w_enc = rng.normal(size=(enc_dim, dec_dim))
        self.w_out = rng.normal(size=(dec_dim, vocab)) * scale
        self.decoder_calls = 0
        self.decoder_rows = 0
        self.joiner_calls = 0

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        assert contexts.dtype == np.int64 and contexts.ndim == 2
        self.decoder_calls += 1
        self.decoder_rows += contexts.shape[0]
        weights = np.arange(1, contexts.shape[1] + 1)[None, :, None]
        return (self.emb[contexts] * weights).sum(axis=1)

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        assert enc.shape[0] == dec.shape[0]
        self.joiner_calls += 1
        return log_softmax(np.tanh(enc @ self.w_enc + dec) @ self.w_out)


def transducer_brute_force(
    model: ToyTransducer, enc: np.ndarray, blank: int = 0, context_size: int = 2
) -> dict[tuple[int, ...], float]:
    """log P(y) for every y with len(y) <= T under the one-symbol-per-frame topology: each frame
    emits blank or exactly one token. Sums over all ways of placing y's tokens on frames."""
    t_max = enc.shape[0]
    tokens = [v for v in range(model.vocab) if v != blank]
    out = {}
    for length in range(t_max + 1):
        for y in itertools.product(tokens, repeat=length):
            # alpha[u]: log-prob of having emitted y[:u] after the frames so far.
            alpha = np.full(length + 1, -math.inf)
            alpha[0] = 0.0
            for t in range(t_max):
                new = np.full(length + 1, -math.inf)
                for u in range(length + 1):
                    if alpha[u] == -math.inf:
                        continue
                    ctx = ((blank,) * context_size + tuple(y[:u]))[-context_size:]
                    dec = model.decoder(np.array([ctx], dtype=np.int64))
                    lp = model.joiner(enc[t][None], dec)[0]
                    new[u] = np.logaddexp(new[u], alpha[u] + lp[blank])
                    if u < length:
                        new[u + 1] = np.logaddexp(new[u + 1], alpha[u] + lp[y[u]])
                alpha = new
            out[y] = float(alpha[length])
    return out
