"""Secret-sharer memorisation audit (privacy/audit.py)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from userlibri.errors import ConfigError, UserLibriError
from userlibri.privacy import audit as A

WORDS = "THE A MAN WOMAN DOG CAT SAW HEARD FOUND LIKED BIG SMALL RED OLD HOUSE GARDEN RIVER MY PIN IS".split()


def text(n: int, seed: int) -> list[str]:
    """Random sentences that also use the canary's words (digits included), so a model that
    ranks the canary first has memorised it rather than just knowing its words."""
    rng = random.Random(seed)
    vocab = WORDS + list(A.DIGIT_WORDS)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def test_exposure_of_ranks() -> None:
    cands = np.linspace(-50.0, -10.0, 999)
    best = A.exposure(-1.0, cands)
    assert best.rank == 1 and best.exposure == pytest.approx(math.log2(1000))
    worst = A.exposure(-60.0, cands)
    assert worst.rank == 1000 and worst.exposure == pytest.approx(0.0)
    mid = A.exposure(-30.0 + 1e-9, cands)
    assert mid.rank == 500 and mid.exposure == pytest.approx(math.log2(1000 / 500))
    assert A.exposure(-5.0, cands).extrapolated > A.exposure(-30.0, cands).extrapolated


def test_extrapolated_exposure_reads_the_tail() -> None:
    """Gaussian candidate scores: a canary 4 sigma above them has tail probability ~3.2e-5,
    i.e. ~15 bits, beyond what 999 candidates can show (log2 1000 ~ 10 bits)."""
    cands = np.random.default_rng(0).normal(-30.0, 5.0, size=999)
    e = A.exposure(-10.0, cands)
    assert e.rank == 1 and e.extrapolated == pytest.approx(-math.log2(3.167e-5), abs=2.5)
    assert e.extrapolated > e.max_exposure


def test_canaries_and_candidates_are_deterministic_and_disjoint() -> None:
    cfg = A.AuditConfig(repetitions=(1, 4, 16), canaries_per_repetition=2, candidates=500, seed=3)
    canaries = A.make_canaries(cfg)
    assert canaries == A.make_canaries(cfg)
    assert [c.repetitions for c in canaries] == [1, 1, 4, 4, 16, 16]
    assert len({c.code for c in canaries}) == 6
    assert all(c.text.startswith("MY PIN IS ") and len(c.text.split()) == 9 for c in canaries)
    assert canaries[0].text == A.render(cfg, canaries[0].code)
    text_in = ["A B C"] * 50
    out = A.insert_canaries(text_in, canaries, seed=3)
    assert out == A.insert_canaries(text_in, canaries, seed=3)
    for c in canaries:
        assert out.count(c.text) == c.repetitions
    cands = A.sample_candidates(cfg, [c.code for c in canaries])
    assert len(cands) == len(set(cands)) == 500
    assert not set(cands) & {c.text for c in canaries}
    assert A.make_canaries(A.AuditConfig(candidates=500, seed=4)) != A.make_canaries(
        A.AuditConfig(candidates=500, seed=3)
    )


def test_bad_config_and_input() -> None:
    with pytest.raises(ConfigError, match="candidates"):
        A.AuditConfig(slots=2, candidates=200).validate()
    with pytest.raises(ConfigError, match="repetitions"):
        A.AuditConfig(repetitions=(0,)).validate()
    with pytest.raises(ConfigError, match="audit kinds"):
        A.run_audit(text(20, 1), ["lstm"], A.AuditConfig(candidates=100))
    with pytest.raises(UserLibriError, match="0 non-empty sentences"):
        A.run_audit(["", "  "], ["ngram"], A.AuditConfig(candidates=100))
    with pytest.raises(ConfigError, match="background neural LM"):
        A.run_audit(text(20, 1), ["neural"], A.AuditConfig(candidates=100))


def test_ngram_memorises_repeated_canaries(tmp_path) -> None:
    pytest.importorskip("kenlm")
    cfg = A.AuditConfig(repetitions=(4, 16), canaries_per_repetition=2, candidates=10_000, seed=0)
    out = tmp_path / "audit.json"
    report = A.run_audit(text(300, 2), ["ngram"], cfg, out=out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    res = report["results"]["ngram"]
    top = math.log2(10_001)
    assert report["max_exposure"] == pytest.approx(top)
    for rep in ("4", "16"):
        assert res["by_repetition"][rep]["min_rank"] == 1
        assert res["by_repetition"][rep]["mean_exposure"] == pytest.approx(top)
    assert res["privacy"]["mechanism"] == "none"


@pytest.mark.slow
def test_neural_memorises_and_dp_does_not(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    from userlibri.lm import neural as N
    from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer

    tok = train_tokenizer(text(1500, 0), tmp_path / "tok", TokenizerConfig(vocab_size=50))
    cfg = N.default_config(tok, embed_dim=32, hidden_dim=64, num_layers=1, dropout=0.0)
    fast = N.TrainConfig(epochs=2, batch_size=32, lr=1e-2, progress=False, threads=1)
    bg = N.train_background(text(600, 1), tok, cfg, fast)
    setup = A.NeuralAuditSetup(
        bg,
        tok,
        N.TrainConfig(epochs=8, batch_size=32, lr=1e-2, progress=False, threads=1),
        N.PrivacyConfig(mechanism="dp-sgd", noise_multiplier=20.0),
    )
    audit_cfg = A.AuditConfig(repetitions=(1, 16), canaries_per_repetition=1, candidates=2000, seed=0)
    report = A.run_audit(text(200, 2), ["neural", "neural-dp"], audit_cfg, setup)
    top = math.log2(2001)
    plain, dp = report["results"]["neural"], report["results"]["neural-dp"]
    assert plain["by_repetition"]["16"]["min_rank"] == 1
    assert plain["by_repetition"]["16"]["mean_exposure"] == pytest.approx(top)
    assert dp["by_repetition"]["16"]["min_rank"] > 10
    assert dp["by_repetition"]["16"]["mean_exposure"] < top - 3
    assert dp["privacy"]["mechanism"] == "dp-sgd" and dp["privacy"]["noise_multiplier"] == 20.0
