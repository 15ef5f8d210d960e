"""Word-synchronous fusion of a neural LM over its own tokenizer (userlibri.lm.neural_word)."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from userlibri.decode import CtcBeamSearch, DecoderConfig  # noqa: E402
from userlibri.errors import DataFormatError, UserLibriError  # noqa: E402
from userlibri.lm import neural as N  # noqa: E402
from userlibri.lm import neural_export as E  # noqa: E402
from userlibri.lm.base import LanguageModel, load_lm  # noqa: E402
from userlibri.lm.neural_word import NeuralWordScorer, find_lm_tokenizer  # noqa: E402
from userlibri.lm.onnx_lm import OnnxNeuralLM  # noqa: E402
from userlibri.privacy import accounting  # noqa: E402
from userlibri.text.tokenizer import MODEL_FILE, TokenizerConfig, train_tokenizer  # noqa: E402

WORDS = "THE A MAN WOMAN DOG CAT SAW HEARD FOUND LIKED BIG SMALL RED OLD HOUSE GARDEN RIVER".split()
LETTERS = sorted(set("".join(WORDS)) | set("XZQ"))
#: A character-level acoustic-model vocabulary: blank, sos/eos, bare boundary, word-initial letters,
#: letters (what the shipped mini model's 34 pieces are, without its three whole-word pieces).
AM_PIECES = ("<blk>", "<sos/eos>", "\u2581", *(f"\u2581{c}" for c in LETTERS), *LETTERS)
AM_ID = {p: i for i, p in enumerate(AM_PIECES)}


def am_ids(text: str) -> list[int]:
    ids: list[int] = []
    for word in text.split():
        ids.append(AM_ID[f"\u2581{word[0]}"])
        ids.extend(AM_ID[c] for c in word[1:])
    return ids


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"THE {rng.choice(['BIG', 'OLD', 'RED'])} {rng.choice(['DOG', 'CAT', 'MAN'])} "
        f"{rng.choice(['SAW', 'HEARD', 'FOUND'])} THE {rng.choice(['HOUSE', 'GARDEN', 'RIVER'])}"
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A tiny trained LSTM LM over a 30-piece tokenizer, exported with its tokenizer beside it."""
    root = tmp_path_factory.mktemp("nlm")
    rng = random.Random(2)
    words = [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(800)]
    tok = train_tokenizer(corpus(800, 0) + words, root / "tok", TokenizerConfig(vocab_size=40))
    cfg = N.default_config(tok, embed_dim=16, hidden_dim=32, num_layers=1, dropout=0.0)
    fast = N.TrainConfig(epochs=3, batch_size=32, lr=1e-2, progress=False, threads=1)
    model = N.train_background(corpus(400, 1), tok, cfg, fast)
    out = root / "lm"
    E.export_lm(model, out, accounting.no_privacy_report(400, steps=3), int8=False)
    shutil.copyfile(tok.path, out / MODEL_FILE)
    torch.manual_seed(5)
    other = N.LstmLM(N.default_config(tok, embed_dim=8, hidden_dim=16, num_layers=1, dropout=0.0)).eval()
    E.export_lm(other, root / "other", accounting.no_privacy_report(10, steps=1), int8=False)
    return out


@pytest.fixture(scope="module")
def scorer(lm_dir) -> NeuralWordScorer:
    lm = load_lm("neural-onnx", lm_dir, AM_PIECES)
    assert isinstance(lm, NeuralWordScorer)
    return lm


def sentence_score(lm, ids) -> float:
    state, total = lm.start_state(), 0.0
    for t in ids:
        s, state = lm.score(state, t)
        total += s
    return total + lm.final_score(state)


@pytest.mark.parametrize(
    "text", ["THE BIG DOG SAW THE HOUSE", "A", "THE ZQX GARDEN", "OLD OLD OLD", "RIVERHOUSE CAT"]
)
def test_sentence_score_is_the_lm_sentence_logprob(scorer, text) -> None:
    """Look-aheads cancel: a finished sentence scores exactly the LM's log-prob of its words."""
    inner: OnnxNeuralLM = scorer.components[0][0]
    expected = inner.sentence_logprob(scorer.lm_tokenizer.encode(text))
    assert isinstance(scorer, LanguageModel)
    assert sentence_score(scorer, am_ids(text)) == pytest.approx(expected, abs=1e-6)


def test_a_tiny_cache_changes_nothing(scorer, lm_dir) -> None:
    """Distributions evicted mid-call are recomputed: scores equal those of a roomy cache."""
    tiny = NeuralWordScorer(list(scorer.components), scorer.lm_tokenizer, AM_PIECES, cache_entries=2)
    for text in ("THE BIG DOG SAW THE HOUSE", "RIVERHOUSE CAT"):
        assert sentence_score(tiny, am_ids(text)) == pytest.approx(
            sentence_score(scorer, am_ids(text)), abs=1e-9
        )
    states = [scorer.start_state()] * 3
    tokens = [AM_ID["\u2581T"], AM_ID["\u2581D"], AM_ID["\u2581R"]]
    np.testing.assert_allclose(tiny.score_batch(states, tokens)[0], scorer.score_batch(states, tokens)[0])


def test_tiny_memos_change_nothing(scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair planned from a memo that the same batch evicts before scoring it (its LM steps were
    therefore not computed) still gets the score of a roomy cache."""
    import userlibri.lm.neural_word as nw

    monkeypatch.setattr(nw, "_MEMO_ENTRIES", 2)
    tiny = NeuralWordScorer(list(scorer.components), scorer.lm_tokenizer, AM_PIECES, cache_entries=2)

    def before(text: str) -> tuple:
        state = tiny.start_state()
        for t in am_ids(text):
            state = tiny.score(state, t)[1]
        return state

    # Each pair completes a word; the last one's word and look-ahead are memoised first.
    pairs = [(before("A RED"), AM_ID["\u2581C"]), (before("OLD MAN"), AM_ID["\u2581H"])]
    last = (before("THE BIG DOG"), AM_ID["\u2581S"])
    tiny.score(*last)
    states, tokens = zip(*pairs, last, strict=True)
    got = tiny.score_batch(list(states), list(tokens))[0]
    np.testing.assert_allclose(got, scorer.score_batch(list(states), list(tokens))[0], atol=1e-6)


def test_score_batch_equals_score(scorer) -> None:
    rng = random.Random(3)
    text_ids = [i for i, p in enumerate(AM_PIECES) if not p.startswith("<")]
    states, tokens = [], []
    for _ in range(40):
        state = scorer.start_state()
        for t in am_ids(rng.choice(corpus(5, rng.randint(0, 99))))[: rng.randint(0, 12)]:
            state = scorer.score(state, t)[1]
        states.append(state)
        tokens.append(rng.choice(text_ids))
    scorer.clear_cache()
    batch, new_states = scorer.score_batch(states, tokens)
    single = [scorer.score(s, t) for s, t in zip(states, tokens, strict=True)]
    np.testing.assert_allclose(batch, [x for x, _ in single], atol=1e-9)
    assert new_states == [s for _, s in single]


def test_lookahead_prefers_likely_word_starts(scorer) -> None:
    """After "THE BIG", the partial "D" (DOG) beats "Q" (no such word), and a bare boundary costs 0."""
    state = scorer.start_state()
    for t in am_ids("THE BIG"):
        state = scorer.score(state, t)[1]
    likely, _ = scorer.score(state, AM_ID["\u2581D"])
    unlikely, _ = scorer.score(state, AM_ID["\u2581Q"])
    assert likely > unlikely + 2.0
    assert scorer.score(scorer.start_state(), AM_ID["\u2581"])[0] == 0.0


def test_mixture_mixes_per_lm_piece(lm_dir) -> None:
    a = load_lm("neural-onnx", lm_dir, AM_PIECES)
    b = load_lm("neural-onnx", lm_dir.parent / "other", AM_PIECES)  # finds ../tok/tokenizer.model
    mix = NeuralWordScorer.mixture([a, b], [0.3, 0.7])
    text = "THE RED CAT FOUND THE RIVER"
    pieces = a.lm_tokenizer.encode(text)
    la, lb = a.components[0][0], b.components[0][0]
    hist: tuple[int, ...] = ()
    expected = 0.0
    for t in [*pieces, la.meta.eos_id]:
        pa = np.exp(la.next_logprobs([hist])[0][t])
        pb = np.exp(lb.next_logprobs([hist])[0][t])
        expected += float(np.log(0.3 * pa + 0.7 * pb))
        hist = (*hist, t)
    assert sentence_score(mix, am_ids(text)) == pytest.approx(expected, abs=1e-5)
    only_a = NeuralWordScorer.mixture([a, b], [1.0, 0.0])
    assert sentence_score(only_a, am_ids(text)) == pytest.approx(sentence_score(a, am_ids(text)), abs=1e-9)


def test_fusion_changes_the_ctc_answer(scorer) -> None:
    """Acoustics slightly prefer "THE DOQ"; the LM (which knows DOG, not DOQ) turns it into DOG."""
    target = am_ids("THE DOG")
    frames = []
    for t in target:
        row = np.full(len(AM_PIECES), -8.0)
        row[t] = -0.05
        frames += [row, np.full(len(AM_PIECES), -8.0)]
        frames[-1][0] = -0.01
    frames[-2][AM_ID["G"]] = -1.0  # the last letter: Q a little likelier than G
    frames[-2][AM_ID["Q"]] = -0.6
    lp = np.array(frames, dtype=np.float32)
    lp = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
    plain = CtcBeamSearch(DecoderConfig(beam=8)).decode(lp)[0].tokens
    fused = CtcBeamSearch(DecoderConfig(beam=8, lm_weight=1.0), lm=scorer).decode(lp)[0].tokens
    assert list(plain) == am_ids("THE DOQ")
    assert list(fused) == target


def test_loader_choices_and_errors(lm_dir, tmp_path) -> None:
    own = OnnxNeuralLM(lm_dir / "lm.onnx").meta.tokenizer_id
    assert find_lm_tokenizer(lm_dir / "lm.onnx", own) == lm_dir / MODEL_FILE
    from userlibri.text.tokenizer import Tokenizer

    same = load_lm("neural-onnx", lm_dir, Tokenizer(lm_dir / MODEL_FILE))
    assert isinstance(same, OnnxNeuralLM)  # the LM's own tokenizer: token-level fusion
    forced = load_lm("neural-word", lm_dir, AM_PIECES)
    assert isinstance(forced, NeuralWordScorer)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copyfile(lm_dir / "lm.onnx", lonely / "lm.onnx")
    with pytest.raises(UserLibriError, match="tokenizer mismatch.*no tokenizer of its own"):
        load_lm("neural-onnx", lonely, AM_PIECES)
    with pytest.raises(DataFormatError, match="its tokenizer"):
        load_lm("neural-word", lonely, AM_PIECES)
    scorer = load_lm("neural-word", lm_dir, AM_PIECES)
    with pytest.raises(UserLibriError, match="expected a text token id"):
        scorer.score(scorer.start_state(), AM_ID["<blk>"])
    with pytest.raises(UserLibriError, match="expected a text token id"):
        scorer.score(scorer.start_state(), len(AM_PIECES))


def test_neural_mix_weight_uses_the_lms_own_tokenizer(lm_dir) -> None:
    """bench wer's EM mixture weight for LMs over their own tokenizer: fitted per LM piece; the LM
    trained on text like the held-out sentences gets most of the weight against a random one."""
    from userlibri.bench.wer_conditions import neural_mix_weight

    held_out = corpus(30, 7)
    w = neural_mix_weight(lm_dir / "lm.onnx", lm_dir.parent / "other" / "lm.onnx", held_out, AM_PIECES)
    assert 0.8 < w <= 1.0
    w_swapped = neural_mix_weight(
        lm_dir.parent / "other" / "lm.onnx", lm_dir / "lm.onnx", held_out, AM_PIECES
    )
    assert w_swapped == pytest.approx(1.0 - w, abs=1e-3)
