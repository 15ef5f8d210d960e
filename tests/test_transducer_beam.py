"""Transducer modified beam search on toy numpy decoder/joiner functions: brute force on tiny
cases, beam 1 = greedy, chunked = whole, LM weight 0 = no LM, batching, bad input, fuzzing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from decode_toys import BatchedBigramLM, BigramLM, ToyTransducer, random_bigram, transducer_brute_force
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from userlibri.decode.hyp import DecoderConfig
from userlibri.decode.transducer_beam import TransducerBeamSearch, transducer_greedy
from userlibri.errors import UserLibriError


def _model(seed: int, vocab: int = 3, scale: float = 2.0) -> tuple[ToyTransducer, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return ToyTransducer(rng, vocab, scale=scale), rng


@pytest.mark.parametrize("seed", range(4))
def test_unpruned_beam_equals_brute_force(seed: int) -> None:
    model, rng = _model(seed)
    enc = rng.normal(size=(3, 4))
    truth = transducer_brute_force(model, enc)
    search = TransducerBeamSearch(model.decoder, model.joiner, DecoderConfig.exhaustive(beam=1000))
    hyps = search.decode(enc)
    assert {h.tokens: h.am_score for h in hyps} == pytest.approx(truth, abs=1e-9)
    assert hyps[0].tokens == max(truth, key=truth.get)


@pytest.mark.parametrize("seed", range(3))
def test_unpruned_beam_with_lm_equals_brute_force(seed: int) -> None:
    model, rng = _model(20 + seed)
    enc = rng.normal(size=(3, 4))
    lm = random_bigram(rng, 3)
    cfg = DecoderConfig.exhaustive(beam=1000, lm_weight=0.8, length_bonus=-0.2)
    hyps = TransducerBeamSearch(model.decoder, model.joiner, cfg, lm=lm).decode(enc)
    truth = {
        y: p + 0.8 * lm.sentence(y) - 0.2 * len(y) for y, p in transducer_brute_force(model, enc).items()
    }
    assert {h.tokens: h.score for h in hyps} == pytest.approx(truth, abs=1e-9)
    assert hyps[0].tokens == max(truth, key=truth.get)
    for h in hyps:
        assert h.lm_score == pytest.approx(lm.sentence(h.tokens))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("config", [DecoderConfig(beam=1), DecoderConfig.exhaustive(beam=1)])
def test_beam_one_is_greedy(seed: int, config: DecoderConfig) -> None:
    model, rng = _model(seed, vocab=6, scale=1.0)
    enc = rng.normal(size=(40, 4))
    hyp = TransducerBeamSearch(model.decoder, model.joiner, config).decode(enc)[0]
    greedy = transducer_greedy(enc, model.decoder, model.joiner)
    assert greedy.tokens  # the toy model emits something
    assert hyp.tokens == greedy.tokens
    assert hyp.timestamps == greedy.timestamps
    assert hyp.am_score == greedy.am_score


@pytest.mark.parametrize("seed", range(4))
def test_chunked_decoding_equals_whole(seed: int) -> None:
    model, rng = _model(seed, vocab=7, scale=1.5)
    enc = rng.normal(size=(50, 4))
    search = TransducerBeamSearch(
        model.decoder, model.joiner, DecoderConfig(beam=4, lm_weight=0.5), lm=random_bigram(rng, 7)
    )
    whole = search.decode(enc)
    cuts = sorted(rng.choice(np.arange(1, 50), size=rng.integers(1, 10), replace=False).tolist())
    state = search.init_state()
    for a, b in zip([0, *cuts], [*cuts, 50], strict=True):
        state = search.advance(state, enc[a:b])
    assert search.finalize(state) == whole


@pytest.mark.parametrize("seed", range(3))
def test_lm_weight_zero_equals_no_lm(seed: int) -> None:
    model, rng = _model(seed, vocab=6, scale=1.0)
    enc = rng.normal(size=(30, 4))
    plain = TransducerBeamSearch(model.decoder, model.joiner, DecoderConfig(beam=4)).decode(enc)
    fused = TransducerBeamSearch(
        model.decoder, model.joiner, DecoderConfig(beam=4, lm_weight=0.0), lm=random_bigram(rng, 6)
    ).decode(enc)
    assert [(h.tokens, h.score, h.am_score, h.timestamps) for h in fused] == [
        (h.tokens, h.score, h.am_score, h.timestamps) for h in plain
    ]


def test_lm_changes_the_answer() -> None:
    # A joiner that slightly prefers token 2 over token 1 in frame 0 and blank afterwards.
    def decoder(ctx: np.ndarray) -> np.ndarray:
        return np.zeros((ctx.shape[0], 1))

    def joiner(enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return np.log(np.repeat(enc[:, :3], 1, axis=0))

    enc = np.array([[0.1, 0.42, 0.48], [0.98, 0.01, 0.01]])
    assert transducer_greedy(enc, decoder, joiner, context_size=1).tokens == (2,)
    lm = BigramLM({(-1, 1): math.log(0.9), (-1, 2): math.log(0.1)}, 3, end={1: 0.0, 2: 0.0})
    hyps = TransducerBeamSearch(
        decoder, joiner, DecoderConfig(beam=3, lm_weight=1.0), lm=lm, context_size=1
    ).decode(enc)
    assert hyps[0].tokens == (1,)


def test_joiner_is_batched_and_decoder_outputs_are_cached() -> None:
    model, rng = _model(1, vocab=6, scale=1.0)
    enc = rng.normal(size=(25, 4))
    search = TransducerBeamSearch(model.decoder, model.joiner, DecoderConfig(beam=5))
    first = search.decode(enc)
    assert model.joiner_calls == 25  # one call per frame, all hypotheses at once
    assert model.decoder_calls <= 26  # at most one batched call per frame (+ the start context)
    assert model.decoder_rows <= 6 * 6  # each distinct 2-token context once
    calls = model.decoder_calls
    assert search.decode(enc) == first  # a second utterance: every context is cached
    assert model.decoder_calls == calls and model.joiner_calls == 50
    fresh = TransducerBeamSearch(model.decoder, model.joiner, DecoderConfig(beam=5)).decode(enc)
    assert fresh == first


def test_batched_lm_is_called_once_per_frame() -> None:
    model, rng = _model(2, vocab=6, scale=1.0)
    enc = rng.normal(size=(20, 4))
    table = random_bigram(rng, 6)
    lm = BatchedBigramLM(table.table, 6, end=table.end)
    hyps = TransducerBeamSearch(
        model.decoder, model.joiner, DecoderConfig(beam=4, lm_weight=0.5), lm=lm
    ).decode(enc)
    assert 0 < lm.batch_calls <= 20
    assert hyps[0].lm_score == pytest.approx(table.sentence(hyps[0].tokens))


def test_zero_frames_and_bad_input() -> None:
    model, _ = _model(0)
    search = TransducerBeamSearch(model.decoder, model.joiner)
    assert [h.tokens for h in search.decode(np.zeros((0, 4)))] == [()]
    assert transducer_greedy(np.zeros((0, 4)), model.decoder, model.joiner).tokens == ()
    with pytest.raises(UserLibriError, match="2 dimensions"):
        search.decode(np.zeros(4))
    with pytest.raises(UserLibriError, match="finite"):
        search.decode(np.array([[0.0, np.nan, 0.0, 0.0]]))

    def nan_joiner(enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        out = model.joiner(enc, dec)
        out[0, 1] = np.nan
        return out

    with pytest.raises(UserLibriError, match="joiner log-probs.*finite"):
        TransducerBeamSearch(model.decoder, nan_joiner).decode(np.ones((2, 4)))

    def bad_shape(enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return model.joiner(enc, dec)[:, None]

    with pytest.raises(UserLibriError, match="joiner output: expected shape"):
        TransducerBeamSearch(model.decoder, bad_shape).decode(np.ones((2, 4)))
    with pytest.raises(UserLibriError, match="start_context"):
        TransducerBeamSearch(model.decoder, model.joiner, start_context=[0])


def test_vocabulary_mismatch_is_reported() -> None:
    model, _ = _model(0, vocab=3)
    lm = BigramLM({}, 5)
    with pytest.raises(UserLibriError, match="mismatch.*3 token ids.*scores 5"):
        TransducerBeamSearch(model.decoder, model.joiner, lm=lm).decode(np.ones((2, 4)))


@settings(max_examples=80, deadline=None)
@given(
    enc=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 5), st.just(4)),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    beam=st.integers(1, 4),
)
def test_fuzzed_encoder_frames_decode_or_raise_clearly(enc: np.ndarray, beam: int) -> None:
    model, _ = _model(0, vocab=4)
    search = TransducerBeamSearch(model.decoder, model.joiner, DecoderConfig(beam=beam))
    try:
        with np.errstate(all="ignore"):
            hyps = search.decode(enc)
    except UserLibriError as e:
        assert "transducer" in str(e)
        return
    assert 1 <= len(hyps) <= beam
    assert all(len(h.tokens) <= enc.shape[0] for h in hyps)


# -- candidate selection and input precision ------------------------------------------------------------
def _reference_candidates(
    search: TransducerBeamSearch, logp: np.ndarray, base: np.ndarray, best_stay: float
) -> list[tuple[int, int]]:
    """The documented rule, spelled out: per row the token_topk most likely allowed tokens (lower
    id first on ties) at or above min_token_logprob, within beam_prune of the best score (stays
    included), at most max_active in all (the best, ties in row-major order), row-major order."""
    cfg = search.config
    masked = np.asarray(logp, dtype=np.float64).copy()
    masked[:, [search.blank_id, *search.suppress_ids]] = -np.inf
    cands = []
    for i in range(masked.shape[0]):
        order = sorted(range(masked.shape[1]), key=lambda c: (-masked[i, c], c))
        if cfg.token_topk:
            order = order[: cfg.token_topk]
        cands += [(i, c) for c in sorted(order)]
    scored = {(i, c): base[i] + masked[i, c] for i, c in cands}
    floor = max(best_stay, max(scored.values())) - cfg.beam_prune
    ok = [
        k for k in cands if masked[k] >= cfg.min_token_logprob and scored[k] >= floor and scored[k] > -np.inf
    ]
    cap = cfg.active_cap
    if cap and len(ok) > cap:
        ok = sorted(sorted(ok, key=lambda k: -scored[k])[:cap])
    return ok


@pytest.mark.parametrize("seed", range(24))
def test_candidates_follow_the_documented_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, v = int(rng.integers(1, 6)), int(rng.integers(4, 40))
    logp = (rng.normal(size=(n, v)) * rng.uniform(0.5, 3)).astype(np.float32 if seed % 2 else np.float64)
    base = rng.normal(size=n) * 3
    topk, cap = int(rng.choice([0, 2, 5, 50])), int(rng.choice([0, 3, 8]))
    cfg = DecoderConfig(
        beam=4,
        token_topk=topk,
        max_active=cap,
        min_token_logprob=float(rng.choice([-3, -np.inf])),
        beam_prune=float(rng.choice([1.0, 3.0, np.inf])),
    )
    model, _ = _model(seed, vocab=v)
    search = TransducerBeamSearch(model.decoder, model.joiner, cfg, suppress_ids=[1] if seed % 3 else [])
    best_stay = float(base.max() + rng.normal())
    rows, tokens, tok_lp = search._candidates(logp, base, best_stay)
    assert list(zip(rows, tokens, strict=True)) == _reference_candidates(search, logp, base, best_stay)
    assert tok_lp == [float(logp[i, c]) for i, c in zip(rows, tokens, strict=True)]


@pytest.mark.parametrize("seed", range(3))
def test_broadcasting_joiner_gets_one_frame_and_decodes_the_same(seed: int) -> None:
    model, rng = _model(seed, vocab=6)
    enc = rng.normal(size=(25, 4))
    lm = random_bigram(rng, 6)
    seen: list[int] = []

    def broadcasting(e: np.ndarray, d: np.ndarray) -> np.ndarray:
        seen.append(e.shape[0])
        return model.joiner(np.repeat(e, d.shape[0], axis=0), d)

    cfg = DecoderConfig(beam=4, lm_weight=0.5)
    a = TransducerBeamSearch(model.decoder, model.joiner, cfg, lm=lm).decode(enc)
    b = TransducerBeamSearch(model.decoder, broadcasting, cfg, lm=lm, joiner_broadcasts=True).decode(enc)
    assert a == b and set(seen) == {1}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float32_joiner_nan_or_inf_is_a_clear_error(bad: float) -> None:
    model, rng = _model(7, vocab=5)

    def joiner(e: np.ndarray, d: np.ndarray) -> np.ndarray:
        out = model.joiner(e, d).astype(np.float32)
        out[-1, 2] = bad
        return out

    search = TransducerBeamSearch(model.decoder, joiner, DecoderConfig(beam=3))
    with pytest.raises(UserLibriError, match="joiner log-probs: expected finite"):
        search.decode(rng.normal(size=(4, 4)))


@pytest.mark.parametrize("seed", range(3))
def test_float32_joiner_output_decodes_as_float64(seed: int) -> None:
    model, rng = _model(seed, vocab=8, scale=2.0)
    enc = rng.normal(size=(30, 4))
    lm = random_bigram(rng, 8)

    def joiner32(e: np.ndarray, d: np.ndarray) -> np.ndarray:
        return model.joiner(e, d).astype(np.float32)

    def joiner64(e: np.ndarray, d: np.ndarray) -> np.ndarray:
        return joiner32(e, d).astype(np.float64)

    cfg = DecoderConfig(beam=4, lm_weight=0.5, min_token_logprob=-3.0)
    a = TransducerBeamSearch(model.decoder, joiner32, cfg, lm=lm).decode(enc)
    b = TransducerBeamSearch(model.decoder, joiner64, cfg, lm=lm).decode(enc)
    assert a == b
