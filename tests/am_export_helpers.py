"""Shared by the acoustic-model tests: a tiny random acoustic model and its exported model directory,
built once per test process (the dynamo export takes ~30-60 s), and the 4 texts of the ``corpus``
fixture (tests/conftest.py)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

WORDS = ("ABBA", "CAB", "BAD", "DEAF", "FADE", "BEAD", "FACE", "CAFE", "DAB", "GAG", "EGG")
VOCAB = 20
#: The 4 utterances of the ``corpus`` fixture (train = dev).
TEXTS = ["HELLO WORLD", "THE CAT SAT ON THE MAT", "GOOD MORNING SIR", "YES OR NO"]
CHUNK, LEFT = 4, 2

_CACHE: dict[str, Any] = {}


def tiny_tokenizer(out_dir: Path) -> Any:
    """A 20-piece sentencepiece model over a 7-letter alphabet."""
    from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer

    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(200)]
    return train_tokenizer(sentences, out_dir, TokenizerConfig(vocab_size=VOCAB))


def tiny_am_config(**overrides: Any) -> Any:
    """A tiny AMConfig (2 layers of d_model 32) with ``overrides``; shared by the AM tests."""
    from userlibri.asr.config import AMConfig

    base: dict[str, Any] = dict(
        vocab_size=VOCAB,
        d_model=32,
        num_heads=4,
        ff_dim=64,
        num_layers=2,
        conv_kernel=5,
        subsampling_channels=8,
        decoder_dim=16,
        joiner_dim=24,
        dropout=0.0,
    )
    base.update(overrides)
    return AMConfig(**base)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run as fast on one thread, and the shared 2-core machine is not oversubscribed.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")`` after importing it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model() -> Any:
    import torch

    from userlibri.asr.model import AcousticModel

    torch.manual_seed(0)
    return AcousticModel(tiny_am_config(decode_chunk=CHUNK, decode_left_chunks=LEFT)).eval()


def tiny_stats() -> Any:
    from userlibri.features import FeatureStats

    rs = np.random.RandomState(0)
    return FeatureStats(rs.randn(80) * 2.0, np.abs(rs.randn(80)) + 0.5, 1000)


def exported(base: Path) -> dict[str, Any]:
    """{'model', 'stats', 'tokenizer', 'dir', 'summary'}: the tiny model exported (float, int8, ort)."""
    if "dir" not in _CACHE:
        from userlibri.asr.export import export_model

        tok_dir = base / "tokenizer"
        tokenizer = tiny_tokenizer(tok_dir)
        model, stats = tiny_model(), tiny_stats()
        summary = export_model(model, tok_dir, base / "model", stats=stats)
        _CACHE.update(model=model, stats=stats, tokenizer=tokenizer, dir=base / "model", summary=summary)
    return _CACHE
