"""Interpolated LMs and LODR / density ratio: scores computed by hand, batching, validation, and
their use as fusions in the decoders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from decode_toys import BatchedBigramLM, BigramLM, random_bigram, random_log_probs

from userlibri.decode.ctc_beam import CtcBeamSearch
from userlibri.decode.hyp import DecoderConfig, Fusion
from userlibri.errors import ConfigError, UserLibriError
from userlibri.lm.base import LanguageModel
from userlibri.lm.interpolate import InterpolatedLM, density_ratio

LN10 = math.log(10.0)
DATA = Path(__file__).parent / "data"
B = "\u2581"
PIECES = ["<blk>", "<sos/eos>", "<unk>", B + "THE", B + "CAT", B + "CAP", B + "SAT", B + "CA", "T", "P"]
ID = {p: i for i, p in enumerate(PIECES)}

#: Two token bigrams over ids 0..4 with hand-picked natural-log probabilities.
A = BigramLM(
    {(-1, 1): math.log(0.5), (1, 2): math.log(0.25)}, 5, floor=math.log(0.01), end={2: math.log(0.5)}
)
C = BigramLM({(-1, 1): math.log(0.1), (1, 2): math.log(0.5)}, 5, floor=math.log(0.02), end={2: math.log(0.2)})


def _sentence(lm: LanguageModel, ids: list[int]) -> tuple[float, list[float]]:
    state, steps = lm.start_state(), []
    for i in ids:
        s, state = lm.score(state, i)
        steps.append(s)
    return sum(steps) + lm.final_score(state), steps


def test_log_linear_scores_by_hand() -> None:
    lm = InterpolatedLM([(A, 0.7), (C, 0.3)])
    total, steps = _sentence(lm, [1, 2, 3])
    assert isinstance(lm, LanguageModel)
    assert steps[0] == pytest.approx(0.7 * math.log(0.5) + 0.3 * math.log(0.1))
    assert steps[1] == pytest.approx(0.7 * math.log(0.25) + 0.3 * math.log(0.5))
    assert steps[2] == pytest.approx(0.7 * math.log(0.01) + 0.3 * math.log(0.02))
    # final: end of sentence after 3 is not in either table: BigramLM's default -1.0.
    assert total == pytest.approx(sum(steps) - 1.0)
    assert lm.start_state() == (-1, -1)


def test_linear_mixture_by_hand() -> None:
    lm = InterpolatedLM([(A, 0.25), (C, 0.75)], mode="linear")
    total, steps = _sentence(lm, [1, 2])
    assert steps[0] == pytest.approx(math.log(0.25 * 0.5 + 0.75 * 0.1))
    assert steps[1] == pytest.approx(math.log(0.25 * 0.25 + 0.75 * 0.5))
    assert total - sum(steps) == pytest.approx(math.log(0.25 * 0.5 + 0.75 * 0.2))
    # A zero-weight component contributes nothing (and no -inf).
    only_a = InterpolatedLM([(A, 1.0), (C, 0.0)], mode="linear")
    assert _sentence(only_a, [1, 2])[0] == pytest.approx(A.sentence((1, 2)))


def test_lodr_is_a_negative_log_linear_weight() -> None:
    # LODR: log p_user - 0.4 log p_background, computed by hand for "1 2 </s>".
    lodr = density_ratio(A, C, 0.4)
    assert lodr.weights == (1.0, -0.4) and lodr.mode == "log-linear"
    total, steps = _sentence(lodr, [1, 2])
    assert steps == pytest.approx([math.log(0.5) - 0.4 * math.log(0.1), math.log(0.25) - 0.4 * math.log(0.5)])
    assert total == pytest.approx(math.log(0.5 * 0.25 * 0.5) - 0.4 * math.log(0.1 * 0.5 * 0.2))
    with pytest.raises(ConfigError):
        density_ratio(A, C, -0.1)


def test_lodr_with_kenlm_by_hand() -> None:
    """The word LM of tests/data/decode against tests/data/lm/tiny.arpa as a background."""
    from userlibri.lm.kenlm_scorer import KenLMWordScorer

    user = KenLMWordScorer(DATA / "decode" / "toy.arpa", PIECES)
    background = KenLMWordScorer(DATA / "lm" / "tiny.arpa", PIECES)
    lodr = density_ratio(user, background, 0.5)
    total, _ = _sentence(lodr, [ID[B + "THE"], ID[B + "CA"], ID["T"], ID[B + "SAT"]])
    # toy.arpa: <s> THE -0.1, THE CAT -0.2, CAT SAT -0.1, SAT </s> -0.3.
    # tiny.arpa: <s> THE -0.4, <s> THE CAT -0.2, THE CAT SAT -0.25, CAT SAT </s> -0.1.
    assert total == pytest.approx((-0.7 - 0.5 * -0.95) * LN10, abs=1e-5)


def test_decoder_with_two_lm_fusions_equals_one_interpolated_fusion() -> None:
    rng = np.random.default_rng(0)
    lp = random_log_probs(rng, 30, 5)
    two = CtcBeamSearch(DecoderConfig(beam=5), [Fusion(A, 0.5), Fusion(C, -0.2)]).decode(lp)
    mixed = InterpolatedLM([(A, 1.0), (C, -0.4)])
    one = CtcBeamSearch(DecoderConfig(beam=5), [Fusion(mixed, 0.5)]).decode(lp)
    assert [h.tokens for h in two] == [h.tokens for h in one]
    assert [h.score for h in two] == pytest.approx([h.score for h in one])
    for h in two:
        assert h.fusion_scores == pytest.approx((A.sentence(h.tokens), C.sentence(h.tokens)))
        assert h.lm_score == pytest.approx(A.sentence(h.tokens) + C.sentence(h.tokens))


def test_score_batch_matches_score_and_batches_components() -> None:
    rng = np.random.default_rng(1)
    table = random_bigram(rng, 6)
    batched = BatchedBigramLM(table.table, 6, end=table.end)
    for mode, weights in (("log-linear", (0.6, -0.3)), ("linear", (0.6, 0.4))):
        lm = InterpolatedLM([(batched, weights[0]), (random_bigram(rng, 6), weights[1])], mode=mode)
        states = [lm.start_state(), lm.score(lm.start_state(), 3)[1], lm.score(lm.start_state(), 5)[1]]
        tokens = [1, 2, 4]
        scores, nxt = lm.score_batch(states, tokens)
        for s, t, x, n in zip(states, tokens, scores, nxt, strict=True):
            assert lm.score(s, t) == (pytest.approx(x), n)
    assert batched.batch_calls == 2
    with pytest.raises(UserLibriError, match="2 states but 1 tokens"):
        lm.score_batch(states[:2], [1])


@pytest.mark.parametrize(
    ("components", "mode", "match"),
    [
        ([], "log-linear", "at least one"),
        ([(A, 0.5), (C, 0.4)], "linear", "summing to 1"),
        ([(A, 1.5), (C, -0.5)], "linear", ">= 0"),
        ([(A, math.nan)], "log-linear", "finite"),
        ([(A, 1.0)], "geometric", "mode"),
    ],
)
def test_bad_interpolations_are_rejected(components: list, mode: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InterpolatedLM(components, mode=mode)  # type: ignore[arg-type]


def test_components_must_share_the_vocabulary() -> None:
    with pytest.raises(UserLibriError, match="same token ids.*5.*7|same token ids.*7.*5"):
        InterpolatedLM([(A, 1.0), (BigramLM({}, 7), -0.5)])
    assert InterpolatedLM([(A, 1.0), (C, 1.0)]).vocab_size == 5


def test_interpolated_lm_vocabulary_is_checked_by_the_decoder() -> None:
    lm = InterpolatedLM([(A, 1.0), (C, -0.3)])
    with pytest.raises(UserLibriError, match="mismatch"):
        CtcBeamSearch(lm=lm).decode(np.log(np.full((2, 6), 1 / 6)))


def test_decoders_and_scorers_do_not_import_torch() -> None:
    import json
    import subprocess
    import sys

    modules = [
        "userlibri.decode.hyp",
        "userlibri.decode.ctc_beam",
        "userlibri.decode.transducer_beam",
        "userlibri.lm.interpolate",
        "userlibri.lm.context",
        "userlibri.lm.kenlm_scorer",
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
