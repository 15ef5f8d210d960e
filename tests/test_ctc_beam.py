"""CTC prefix beam search: exactness against brute force, beam 1 = greedy, chunked = whole,
LM weight 0 = no LM, an LM that changes the answer, bad input, hypothesis fuzzing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from decode_toys import BigramLM, ctc_brute_force, random_bigram, random_log_probs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from userlibri.decode.ctc_beam import CtcBeamSearch, ctc_greedy
from userlibri.decode.hyp import DecoderConfig, Fusion, Hypothesis
from userlibri.errors import ConfigError, UserLibriError

DATA = Path(__file__).parent / "data" / "decode"
B = "\u2581"
PIECES = ["<blk>", "<sos/eos>", "<unk>", B + "THE", B + "CAT", B + "CAP", B + "SAT", B + "CA", "T", "P"]
ID = {p: i for i, p in enumerate(PIECES)}


def _frames(rows: list[dict[str, float]], vocab: int = len(PIECES)) -> np.ndarray:
    """Log-probs from per-frame {piece: prob}; the rest of the mass spread over the other ids."""
    out = np.empty((len(rows), vocab))
    for t, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (vocab - len(row))
        out[t] = math.log(rest)
        for piece, p in row.items():
            out[t, ID[piece]] = math.log(p)
    return out


def _tokens(hyps: list[Hypothesis]) -> list[tuple[int, ...]]:
    return [h.tokens for h in hyps]


# -- exactness -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_unpruned_beam_gives_exact_prefix_probabilities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lp = random_log_probs(rng, 4, 3)
    truth = ctc_brute_force(lp)
    hyps = CtcBeamSearch(DecoderConfig.exhaustive(beam=1000)).decode(lp)
    assert {h.tokens for h in hyps} == set(truth)
    for h in hyps:
        assert h.am_score == pytest.approx(truth[h.tokens], abs=1e-9)
        assert h.score == h.am_score
    best = max(truth, key=truth.get)
    assert hyps[0].tokens == best


@pytest.mark.parametrize("seed", range(3))
def test_unpruned_beam_with_lm_equals_brute_force_fused_scores(seed: int) -> None:
    rng = np.random.default_rng(10 + seed)
    lp = random_log_probs(rng, 4, 3)
    lm = random_bigram(rng, 3)
    weight, bonus = 0.7, 0.3
    cfg = DecoderConfig.exhaustive(beam=1000, lm_weight=weight, length_bonus=bonus)
    hyps = CtcBeamSearch(cfg, lm=lm).decode(lp)
    truth = {y: p + weight * lm.sentence(y) + bonus * len(y) for y, p in ctc_brute_force(lp).items()}
    assert {h.tokens for h in hyps} == set(truth)
    for h in hyps:
        assert h.score == pytest.approx(truth[h.tokens], abs=1e-9)
        assert h.lm_score == pytest.approx(lm.sentence(h.tokens), abs=1e-12)
        assert h.score == pytest.approx(h.am_score + weight * h.lm_score + bonus * len(h.tokens), abs=1e-12)
    assert hyps[0].tokens == max(truth, key=truth.get)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("config", [DecoderConfig(beam=1), DecoderConfig.exhaustive(beam=1)])
def test_beam_one_is_greedy(seed: int, config: DecoderConfig) -> None:
    rng = np.random.default_rng(seed)
    lp = random_log_probs(rng, 60, 7, scale=1.5)
    hyp = CtcBeamSearch(config).decode(lp)[0]
    greedy = ctc_greedy(lp)
    assert hyp.tokens == greedy.tokens
    assert hyp.timestamps == greedy.timestamps
    assert hyp.am_score == greedy.am_score


def test_greedy_collapses_repeats_and_blanks() -> None:
    rows = [{"<blk>": 0.9}, {B + "THE": 0.9}, {B + "THE": 0.9}, {"<blk>": 0.9}, {B + "THE": 0.9}, {"T": 0.9}]
    hyp = ctc_greedy(_frames(rows))
    assert hyp.tokens == (ID[B + "THE"], ID[B + "THE"], ID["T"])
    assert hyp.timestamps == (1, 4, 5)


# -- streaming ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_chunked_decoding_equals_whole(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lp = random_log_probs(rng, 80, 9, scale=3.0)
    lp[rng.random(80) < 0.3, 0] = -1e-4  # some blank-dominated frames (the skip path)
    decoder = CtcBeamSearch(DecoderConfig(beam=6, lm_weight=0.6, length_bonus=0.5), lm=random_bigram(rng, 9))
    whole = decoder.decode(lp)
    cuts = sorted(rng.choice(np.arange(1, 80), size=rng.integers(1, 12), replace=False).tolist())
    state = decoder.init_state()
    for a, b in zip([0, *cuts], [*cuts, 80], strict=True):
        state = decoder.advance(state, lp[a:b])
        state = decoder.advance(state, lp[b:b])  # empty chunks change nothing
    assert decoder.finalize(state) == whole
    assert state.frames == 80


def _peaky(rng: np.random.Generator, t: int, v: int) -> np.ndarray:
    """CTC-like output: long runs of near-certain blank between single token frames."""
    logits = rng.normal(size=(t, v))
    logits[:, 0] += 14.0
    for frame in range(2, t, 5):
        logits[frame, rng.integers(1, v)] += 20.0
        if rng.random() < 0.5:
            logits[frame, rng.integers(1, v)] += 19.0
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(4))
def test_chunked_equals_whole_across_blank_runs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lp = _peaky(rng, 120, 12)
    assert (lp[:, 0] > math.log(0.999)).mean() > 0.6  # the quiet-frame path is exercised
    lm = random_bigram(rng, 12)
    decoder = CtcBeamSearch(DecoderConfig(beam=6, lm_weight=0.5), lm=lm)
    whole = decoder.decode(lp)
    state = decoder.init_state()
    for a in range(0, 120, 7):
        state = decoder.advance(state, lp[a : a + 7])
    assert decoder.finalize(state) == whole
    unpruned = CtcBeamSearch(DecoderConfig.exhaustive(beam=6, lm_weight=0.5), lm=lm).decode(lp)
    # Pruning only drops alignments: same answer, a little less probability mass.
    assert unpruned[0].tokens == whole[0].tokens
    assert unpruned[0].score - 1e-3 < whole[0].score <= unpruned[0].score + 1e-12


def test_partial_results_grow_and_exclude_the_end_of_sentence() -> None:
    lm = BigramLM({}, 4, floor=-1.0, end={-1: -3.0, 1: -3.0, 2: -3.0, 3: -3.0})
    decoder = CtcBeamSearch(DecoderConfig(beam=4, lm_weight=1.0), lm=lm)
    lp = np.log(np.array([[0.1, 0.8, 0.05, 0.05], [0.9, 0.05, 0.025, 0.025], [0.1, 0.05, 0.8, 0.05]]))
    state = decoder.advance(decoder.init_state(), lp[:2])
    partial = decoder.partial(state)[0]
    assert partial.tokens == (1,)
    final = decoder.finalize(state)[0]
    assert final.score == pytest.approx(partial.score - 3.0)
    assert decoder.partial(decoder.advance(state, lp[2:]))[0].tokens == (1, 2)


# -- LM fusion -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_lm_weight_zero_equals_no_lm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lp = random_log_probs(rng, 50, 8, scale=2.0)
    plain = CtcBeamSearch(DecoderConfig(beam=5)).decode(lp)
    fused = CtcBeamSearch(DecoderConfig(beam=5, lm_weight=0.0), lm=random_bigram(rng, 8)).decode(lp)
    assert _tokens(fused) == _tokens(plain)
    assert [h.score for h in fused] == [h.score for h in plain]
    assert [h.am_score for h in fused] == [h.am_score for h in plain]
    assert [h.timestamps for h in fused] == [h.timestamps for h in plain]


def _ambiguous_cat() -> np.ndarray:
    """ "THE CA{P,T} SAT" where the acoustics slightly prefer P."""
    return _frames(
        [
            {B + "THE": 0.9},
            {"<blk>": 0.9},
            {B + "CA": 0.9},
            {"P": 0.5, "T": 0.42},
            {"<blk>": 0.9},
            {B + "SAT": 0.9},
            {"<blk>": 0.9},
        ]
    )


def test_word_lm_changes_the_answer() -> None:
    from userlibri.lm.kenlm_scorer import KenLMWordScorer

    lm = KenLMWordScorer(DATA / "toy.arpa", PIECES)
    lp = _ambiguous_cat()
    cat = (ID[B + "THE"], ID[B + "CA"], ID["T"], ID[B + "SAT"])
    cap = (ID[B + "THE"], ID[B + "CA"], ID["P"], ID[B + "SAT"])
    assert ctc_greedy(lp).tokens == cap
    assert CtcBeamSearch(DecoderConfig(beam=8)).decode(lp)[0].tokens == cap
    hyps = CtcBeamSearch(DecoderConfig(beam=8, lm_weight=0.5), lm=lm, suppress_ids=[1]).decode(lp)
    assert hyps[0].tokens == cat
    # The LM score of the final hypothesis is KenLM's whole-sentence score (natural log).
    assert hyps[0].lm_score == pytest.approx(lm.model.score("THE CAT SAT") * math.log(10), abs=1e-4)
    by_tokens = {h.tokens: h for h in hyps}
    assert cap in by_tokens and by_tokens[cap].am_score > hyps[0].am_score


def test_suppressed_ids_are_never_emitted() -> None:
    lp = np.log(np.array([[0.1, 0.7, 0.2], [0.1, 0.2, 0.7]]))
    assert CtcBeamSearch(DecoderConfig(beam=3)).decode(lp)[0].tokens == (1, 2)
    assert CtcBeamSearch(DecoderConfig(beam=3), suppress_ids=[1]).decode(lp)[0].tokens == (2,)


def test_fusions_are_kept_apart() -> None:
    rng = np.random.default_rng(3)
    lm, ctx = random_bigram(rng, 6), random_bigram(rng, 6)
    lp = random_log_probs(rng, 20, 6)
    decoder = CtcBeamSearch(
        DecoderConfig(beam=4, length_bonus=0.25), [Fusion(lm, 0.5, "lm"), (ctx, 2.0, "context")]
    )
    for h in decoder.decode(lp):
        assert h.fusion_scores == pytest.approx((lm.sentence(h.tokens), ctx.sentence(h.tokens)))
        assert h.lm_score == h.fusion_scores[0] and h.context_score == h.fusion_scores[1]
        expected = h.am_score + 0.5 * h.lm_score + 2.0 * h.context_score + 0.25 * len(h.tokens)
        assert h.score == pytest.approx(expected)


def test_lm_scores_each_prefix_extension_once() -> None:
    rng = np.random.default_rng(0)
    lm = random_bigram(rng, 6)
    lp = random_log_probs(rng, 40, 6, scale=1.0)
    CtcBeamSearch(DecoderConfig.exhaustive(beam=8, lm_weight=0.5), lm=lm).decode(lp)
    # At most beam prefixes x 5 tokens new per frame; without the cache it would be far more.
    assert 0 < lm.calls <= 40 * 8 * 5


# -- bad input ------------------------------------------------------------------------------------------
def test_zero_frames_all_blank_and_one_frame() -> None:
    decoder = CtcBeamSearch(DecoderConfig(beam=3))
    empty = decoder.decode(np.zeros((0, 5)))
    assert [h.tokens for h in empty] == [()] and empty[0].am_score == 0.0
    blank = np.log(np.full((6, 5), 0.01))
    blank[:, 0] = math.log(0.96)
    assert decoder.decode(blank)[0].tokens == ()
    one = np.log(np.array([[0.1, 0.2, 0.7, 0.0001, 0.0]]) + 1e-12)
    assert decoder.decode(one)[0].tokens == (2,)
    assert ctc_greedy(np.zeros((0, 5))).tokens == ()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros(5), "2 dimensions"),
        (np.zeros((2, 3, 4)), "2 dimensions"),
        (np.zeros((3, 4), dtype=np.int64), "float"),
        ([[0.0, 0.0]], "numpy array"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), "finite.*nan.*frame 0, column 1"),
        (np.array([[0.0, 0.0], [np.inf, 0.0]]), "finite.*inf.*frame 1, column 0"),
        (np.array([[0.0, 0.0], [-np.inf, 0.0]]), "finite"),
        (np.array([[0.0, -1e300]]), "magnitude <= 1e\\+10"),
    ],
)
def test_bad_log_probs_raise_clear_errors(value: object, match: str) -> None:
    with pytest.raises(UserLibriError, match=match):
        CtcBeamSearch().decode(value)  # type: ignore[arg-type]
    with pytest.raises(UserLibriError, match=match):
        ctc_greedy(value)  # type: ignore[arg-type]


def test_vocabulary_mismatch_names_both_sides() -> None:
    from userlibri.lm.kenlm_scorer import KenLMWordScorer

    lm = KenLMWordScorer(DATA / "toy.arpa", PIECES)
    decoder = CtcBeamSearch(lm=lm)
    with pytest.raises(UserLibriError, match=r"mismatch.*11 token ids.*toy\.arpa.*10"):
        decoder.decode(np.log(np.full((3, 11), 1 / 11)))
    with pytest.raises(UserLibriError, match="mismatch"):
        CtcBeamSearch(lm=lm, vocab_size=12)
    state = CtcBeamSearch().advance(CtcBeamSearch().init_state(), np.zeros((2, 4)))
    with pytest.raises(UserLibriError, match="expected 4 columns"):
        CtcBeamSearch().advance(state, np.zeros((2, 5)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beam": 0},
        {"beam_prune": 0.0},
        {"token_topk": -1},
        {"blank_skip": 0.0},
        {"lm_weight": math.nan},
        {"length_bonus": math.inf},
        {"max_active": -1},
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        CtcBeamSearch(DecoderConfig(**kwargs))


def test_bad_fusions_are_rejected() -> None:
    with pytest.raises(ConfigError, match="kind"):
        CtcBeamSearch(fusions=[(random_bigram(np.random.default_rng(0), 3), 1.0, "hotword")])
    with pytest.raises(ConfigError, match="LanguageModel"):
        CtcBeamSearch(fusions=[(object(), 1.0)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lp=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 6), st.integers(1, 6)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    beam=st.integers(1, 5),
    chunk=st.integers(1, 4),
)
def test_fuzzed_log_probs_decode_or_raise_clearly(lp: np.ndarray, beam: int, chunk: int) -> None:
    decoder = CtcBeamSearch(DecoderConfig(beam=beam))
    try:
        hyps = decoder.decode(lp)
    except UserLibriError as e:
        assert "CTC log-probs" in str(e)
        return
    assert 1 <= len(hyps) <= beam
    assert all(all(0 < t < lp.shape[1] for t in h.tokens) for h in hyps)
    assert all(len(h.timestamps) == len(h.tokens) for h in hyps)
    state = decoder.init_state()
    for a in range(0, lp.shape[0], chunk):
        state = decoder.advance(state, lp[a : a + chunk])
    assert decoder.finalize(state) == hyps


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.integers(1, 4), v=st.integers(2, 3))
def test_fuzzed_normalised_inputs_match_brute_force(seed: int, t: int, v: int) -> None:
    lp = random_log_probs(np.random.default_rng(seed), t, v)
    truth = ctc_brute_force(lp)
    hyps = CtcBeamSearch(DecoderConfig.exhaustive(beam=200)).decode(lp)
    assert {h.tokens: h.am_score for h in hyps} == pytest.approx(truth, abs=1e-9)


# -- speed paths and pruning rules ----------------------------------------------------------------------
def _peaky_batch(seed: int, t: int = 150, v: int = 20) -> tuple[np.ndarray, BigramLM]:
    rng = np.random.default_rng(seed)
    lp = _peaky(rng, t, v)
    if seed % 2:
        lp = np.round(lp, 1)  # ties at the beam's edge
        lp -= np.logaddexp.reduce(lp, axis=1, keepdims=True)
    return lp, random_bigram(rng, v)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_stay", [-5.0, -12.0])
def test_single_lm_fast_path_equals_the_general_step(seed: int, min_stay: float) -> None:
    """A single unbatched LM takes the one-pass token-frame path; the same LM with ``score_batch``
    takes the general step (nodes built with FusionSet.extend): identical hypotheses."""
    from decode_toys import BatchedBigramLM

    lp, lm = _peaky_batch(seed)
    batched = BatchedBigramLM(lm.table, lm.vocab_size, end=lm.end)
    cfg = DecoderConfig(beam=6, lm_weight=0.7, length_bonus=0.2, min_stay_logprob=min_stay)
    fast = CtcBeamSearch(cfg, lm=lm).decode(lp)
    general = CtcBeamSearch(cfg, lm=batched).decode(lp)
    assert batched.batch_calls > 0
    assert fast == general


@pytest.mark.parametrize("seed", range(4))
def test_float32_log_probs_decode_as_float64(seed: int) -> None:
    lp, lm = _peaky_batch(seed)
    lp32 = lp.astype(np.float32)
    lp32[::7, 0] = np.float32(math.log(0.999))  # exactly at the blank_skip threshold
    decoder = CtcBeamSearch(DecoderConfig(beam=5, lm_weight=0.5), lm=lm)
    assert decoder.decode(lp32) == decoder.decode(lp32.astype(np.float64))
    assert ctc_greedy(lp32) == ctc_greedy(lp32.astype(np.float64))


def test_beam_one_is_greedy_when_no_token_passes_the_threshold() -> None:
    # 400 ids with nearly flat frames: the most likely token is below min_token_logprob (-5) but
    # is still a candidate, and blank below min_stay_logprob is kept when it is the most likely.
    rng = np.random.default_rng(0)
    lp = random_log_probs(rng, 30, 400, scale=0.3)
    assert (lp.max(axis=1) < -5.0).any()
    hyp = CtcBeamSearch(DecoderConfig(beam=1, min_stay_logprob=-5.0)).decode(lp)[0]
    greedy = ctc_greedy(lp)
    assert (hyp.tokens, hyp.timestamps, hyp.am_score) == (greedy.tokens, greedy.timestamps, greedy.am_score)


def test_blank_below_min_stay_logprob_is_pruned() -> None:
    # Frame 1: blank at log(1e-4) (below -5), token 2 certain: with min_stay_logprob -5 the prefix
    # (1,) cannot stay by blank, so (1, 2) is the only hypothesis; with -12 (1,) + blank remains.
    lp = np.log(np.array([[0.01, 0.98, 0.01], [1e-4, 0.0002, 0.9997]]))
    strict = CtcBeamSearch(DecoderConfig(beam=4, min_stay_logprob=-5.0)).decode(lp)
    loose = CtcBeamSearch(DecoderConfig(beam=4, min_stay_logprob=-12.0)).decode(lp)
    assert (1,) not in {h.tokens for h in strict}
    assert (1,) in {h.tokens for h in loose}
    assert strict[0].tokens == loose[0].tokens == (1, 2)


def test_min_stay_logprob_is_validated_and_off_when_exhaustive() -> None:
    with pytest.raises(ConfigError, match="min_stay_logprob"):
        CtcBeamSearch(DecoderConfig(min_stay_logprob=math.nan))
    assert DecoderConfig.exhaustive(beam=3).min_stay_logprob == -math.inf


def test_hypotheses_are_immutable_values() -> None:
    lp, lm = _peaky_batch(0, t=40)
    hyps = CtcBeamSearch(DecoderConfig(beam=4, lm_weight=0.5), lm=lm).decode(lp)
    h = hyps[0]
    twin = Hypothesis(
        h.tokens, h.timestamps, h.score, h.am_score, h.lm_score, h.context_score, h.fusion_scores, h.lm_states
    )
    assert h == twin and hash(h) == hash(twin) and repr(h) == repr(twin)
    assert h != hyps[1]
    assert h.as_dict()["tokens"] == list(h.tokens) and len(h.timestamps) == len(h.tokens)
    with pytest.raises(AttributeError):
        h.score = 0.0  # type: ignore[misc]
