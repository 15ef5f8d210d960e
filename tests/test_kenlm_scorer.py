"""KenLM scorers: hand-computed scores from the tiny ARPA, exact agreement with KenLM on whole
sentences, the partial-word look-ahead, <unk>, vocabulary mismatches, the LM registry."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.lm.base import LM_KINDS, LanguageModel, Registry, load_lm
from userlibri.lm.kenlm_scorer import (
    DEFAULT_OOV_PENALTY,
    LOOKAHEADS,
    KenLMTokenScorer,
    KenLMWordScorer,
    prefix_lookahead,
)
from userlibri.lm.ngram import NgramConfig, train_ngram
from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer

kenlm = pytest.importorskip("kenlm")

DATA = Path(__file__).parent / "data" / "lm"
CORPUS = DATA / "corpus.txt"
TINY = DATA / "tiny.arpa"
LN10 = math.log(10.0)
B = "\u2581"
# Pieces for the tiny ARPA: ids 0-2 special, as in our tokenizers.
PIECES = [
    "<blk>",
    "<sos/eos>",
    "<unk>",
    B + "THE",
    B + "TH",
    "E",
    "Y",
    "RE",
    B + "CAT",
    B + "SAT",
    B,
    "X",
    B + "C",
    "AT",
]
ID = {p: i for i, p in enumerate(PIECES)}


def _feed_ids(lm: LanguageModel, ids: list[int]) -> tuple[float, list[float]]:
    """Score ids one by one; return the sentence total (with final_score) and each step's score."""
    state = lm.start_state()
    steps = []
    for i in ids:
        s, state = lm.score(state, i)
        steps.append(s)
    return sum(steps) + lm.final_score(state), steps


def _feed(lm: LanguageModel, pieces: list[str], ids: dict[str, int] = ID) -> tuple[float, list[float]]:
    return _feed_ids(lm, [ids[p] for p in pieces])


# ---- hand-computed values from tests/data/lm/tiny.arpa (log10, then * ln 10) -------------------


@pytest.mark.parametrize(
    ("pieces", "log10"),
    [
        # <s> THE: bigram -0.4; THE CAT | <s> THE: trigram -0.2; SAT | THE CAT: -0.25; </s> | CAT SAT: -0.1
        ([B + "THE", B + "CAT", B + "SAT"], -0.4 - 0.2 - 0.25 - 0.1),
        # CAT | <s>: -0.9; SAT | <s> CAT: no trigram, bo(<s> CAT)=0 + p(SAT|CAT) -0.7; </s>: trigram -0.1
        ([B + "C", "AT", B + "SAT"], -0.9 - 0.7 - 0.1),
        # THEY | <s> THE: bo(<s> THE) -0.2 + bo(THE) -0.3 + p(THEY) -1.3; SAT | THE THEY: p(SAT|THEY) -0.6;
        # </s> | THEY SAT: bo(THEY SAT)=0 + p(</s>|SAT) -0.3
        ([B + "THE", B + "TH", "E", "Y", B + "SAT"], -0.4 - 1.8 - 0.6 - 0.3),
        # THERE | <s>: bo(<s>) -0.5 + p(THERE) -1.6; </s> | THERE: bo(THERE) -0.25 + p(</s>) -1.0
        ([B + "TH", "E", "RE"], -2.1 - 1.25),
        # X is not in the LM: <unk> | <s> THE = -0.2 - 0.3 - 1.5; </s> | <unk>: p(</s>) -1.0
        # (plus the OOV penalty, added below)
        ([B + "THE", B, "X"], -0.4 - 2.0 - 1.0),
    ],
)
@pytest.mark.parametrize("lookahead", LOOKAHEADS)
def test_word_scorer_matches_hand_computed_scores(pieces: list[str], log10: float, lookahead: str) -> None:
    # Whatever the look-ahead, it is taken back when a word completes: the sum is the same.
    n_oov = pieces.count("X")
    total, _ = _feed(KenLMWordScorer(TINY, PIECES, lookahead=lookahead), pieces)
    assert total == pytest.approx(log10 * LN10 + n_oov * DEFAULT_OOV_PENALTY, abs=1e-6)
    total, _ = _feed(KenLMWordScorer(TINY, PIECES, oov_penalty=-5.0, lookahead=lookahead), pieces)
    assert total == pytest.approx(log10 * LN10 - 5.0 * n_oov, abs=1e-6)
    # With no penalty the sum is KenLM's own sentence score, <unk> included.
    total, _ = _feed(KenLMWordScorer(TINY, PIECES, oov_penalty=0.0, lookahead=lookahead), pieces)
    assert total == pytest.approx(log10 * LN10, abs=1e-6)


def test_oov_penalty_default_and_validation() -> None:
    # pyctcdecode's unk_score_offset = -10 (log10), in nats.
    assert DEFAULT_OOV_PENALTY == pytest.approx(-23.02585, abs=1e-5)
    lm = KenLMWordScorer(TINY, PIECES)
    assert lm.oov_penalty == DEFAULT_OOV_PENALTY
    assert lm.vocabulary == ("CAT", "SAT", "THE", "THERE", "THEY")
    for bad in (1.0, float("nan"), float("-inf")):
        with pytest.raises(ConfigError, match="oov_penalty"):
            KenLMWordScorer(TINY, PIECES, oov_penalty=bad)
        with pytest.raises(ConfigError, match="unknown_prefix_score"):
            KenLMWordScorer(TINY, PIECES, unknown_prefix_score=bad)
    # A vocabulary word KenLM does not know is out of vocabulary all the same.
    extra = KenLMWordScorer(TINY, PIECES, vocabulary=["THE", "CAT", "XYZZY"])
    assert extra.vocabulary == ("CAT", "THE")
    assert extra.prefix_score("SA") == extra.unknown_prefix_score


def test_unknown_prefix_is_penalised_at_once_and_settled_exactly() -> None:
    lm = KenLMWordScorer(TINY, PIECES)
    unk_unigram = -1.5 * LN10
    assert lm.unknown_prefix_score == pytest.approx(unk_unigram + DEFAULT_OOV_PENALTY, abs=1e-9)
    # "THE" then "X..." : the first piece of the impossible word already costs the OOV price...
    state = lm.start_state()
    s1, state = lm.score(state, ID[B + "THE"])
    s2, state = lm.score(state, ID[B + "C"])  # C: CAT's prefix, no penalty
    assert s2 > -5.0
    s3, state = lm.score(state, ID["Y"])  # CY: no word starts with it
    assert s3 < DEFAULT_OOV_PENALTY
    s4, state = lm.score(state, ID["X"])  # CYX: still unknown, no further change
    assert s4 == 0.0
    # ...and the sentence total is KenLM's score with <unk> for CYX, plus one penalty.
    # <s> THE -0.4; <unk> | <s> THE: bo(<s> THE) -0.2 + bo(THE) -0.3 + p(<unk>) -1.5; </s> -1.0
    end = lm.final_score(state)
    expected = (-0.4 - 2.0 - 1.0) * LN10 + DEFAULT_OOV_PENALTY
    assert s1 + s2 + s3 + s4 + end == pytest.approx(expected, abs=1e-6)
    # An OOV merge of two good words loses to the two words by about the penalty.
    merged, _ = _feed(lm, [B + "CAT", "AT"])  # CATAT
    split, _ = _feed(lm, [B + "CAT", B + "C", "AT"])  # CAT CAT
    assert merged < split + DEFAULT_OOV_PENALTY / 2
    assert _feed(KenLMWordScorer(TINY, PIECES, oov_penalty=0.0), [B + "CAT", "AT"])[0] > split


def test_token_scorer_matches_hand_computed_scores() -> None:
    # Here the LM's "words" are the pieces themselves.
    pieces = ["<blk>", "<sos/eos>", "<unk>", "THE", "THEY", "THERE", "CAT", "SAT", "DOG"]
    ids = {p: i for i, p in enumerate(pieces)}
    lm = KenLMTokenScorer(TINY, pieces)
    assert _feed(lm, ["THE", "CAT", "SAT"], ids)[0] == pytest.approx(-0.95 * LN10, abs=1e-6)
    total, steps = _feed(lm, ["THE", "THEY", "SAT"], ids)
    assert steps == pytest.approx([-0.4 * LN10, -1.8 * LN10, -0.6 * LN10], abs=1e-6)
    assert total == pytest.approx(-3.1 * LN10, abs=1e-6)
    # DOG is not in the LM: the <unk> path, as hand-computed above.
    assert _feed(lm, ["THE", "DOG"], ids)[0] == pytest.approx(-3.4 * LN10, abs=1e-6)
    with pytest.raises(UserLibriError, match="<blk>"):
        lm.score(lm.start_state(), 0)


def test_partial_word_lookahead_present_mid_word_and_cancelled_at_word_end() -> None:
    lm = KenLMWordScorer(TINY, PIECES, lookahead="unigram")
    state = lm.start_state()
    s1, state = lm.score(state, ID[B + "TH"])
    # Best unigram among THE (-0.8), THEY (-1.3), THERE (-1.6).
    assert s1 == pytest.approx(-0.8 * LN10, abs=1e-6)
    s2, state = lm.score(state, ID["E"])  # THE: still THE's -0.8
    assert s2 == pytest.approx(0.0, abs=1e-9)
    s3, state = lm.score(state, ID["Y"])  # THEY: only THEY, -1.3
    assert s3 == pytest.approx(-0.5 * LN10, abs=1e-6)
    assert s1 + s2 + s3 == pytest.approx(lm.prefix_score("THEY"))
    # At the next word start THEY is scored in context (bo(<s>) -0.5 + p(THEY) -1.3 = -1.8), the
    # look-ahead -1.3 is taken back, and SAT's look-ahead (-1.4) is added.
    s4, state = lm.score(state, ID[B + "SAT"])
    assert s4 == pytest.approx((-1.8 + 1.3 - 1.4) * LN10, abs=1e-6)
    assert s1 + s2 + s3 + s4 == pytest.approx((-1.8 - 1.4) * LN10, abs=1e-6)
    # A prefix no word has gets the unknown-prefix score (by default what an OOV word costs as a
    # unigram: <unk>'s unigram + the OOV penalty; or as set).
    assert lm.prefix_score("X") == pytest.approx(-1.5 * LN10 + DEFAULT_OOV_PENALTY, abs=1e-6)
    assert KenLMWordScorer(TINY, PIECES, unknown_prefix_score=-20.0).prefix_score("X") == -20.0
    assert lm.prefix_score("C") == pytest.approx(-1.2 * LN10, abs=1e-6)


def test_bigram_lookahead_scores_partial_words_given_the_previous_word() -> None:
    lm = KenLMWordScorer(TINY, PIECES, lookahead="bigram")
    assert "lookahead=bigram" in repr(lm)

    def steps(pieces: list[str]) -> list[float]:
        return [x / LN10 for x in _feed(lm, pieces)[1]]

    # After <s>, TH: the bigram <s> THE (-0.4) beats bo(<s>) -0.5 + the best unigram THE -0.8.
    # Then E: still THE; Y: THEY has no bigram after <s>: bo(<s>) -0.5 + p(THEY) -1.3 = -1.8.
    assert steps([B + "TH", "E", "Y"]) == pytest.approx([-0.4, 0.0, -1.4], abs=1e-6)
    # After THE, C: the bigram THE CAT -0.5 (the unigram look-ahead would say -1.2). THE itself
    # scores -0.4 in context, its look-ahead -0.4 is taken back: the step is C's look-ahead.
    assert steps([B + "THE", B + "C"]) == pytest.approx([-0.4, -0.5], abs=1e-6)
    # After CAT, TH: no bigram CAT TH...: bo(CAT) -0.4 + the best unigram THE -0.8.
    assert steps([B + "C", "AT", B + "TH"])[2] == pytest.approx(-0.9 + 0.9 - 1.2, abs=1e-6)
    # After THEY, S: the bigram THEY SAT -0.6 beats bo(THEY) -0.2 + p(SAT) -1.4.
    # (THEY completes at -1.8 after <s>, its look-ahead -1.8 is taken back.)
    s = steps([B + "TH", "E", "Y", B + "SAT"])
    assert s[3] == pytest.approx(-1.8 - (-1.8) - 0.6, abs=1e-6)
    # A prefix no word has costs the unknown-prefix score in any context; after an OOV word the
    # look-ahead is the unigram one (KenLM's context after <unk> is empty).
    assert steps([B + "THE", B, "X"])[2] == pytest.approx(lm.unknown_prefix_score / LN10, abs=1e-6)
    s = steps([B, "X", B + "C"])
    # X completes as <unk> after <s> (bo -0.5 + p(<unk>) -1.5) with the OOV penalty, its look-ahead
    # is taken back, and C gets the unigram look-ahead of CAT (-1.2).
    unk, oov = lm.unknown_prefix_score / LN10, DEFAULT_OOV_PENALTY / LN10
    assert s[2] == pytest.approx(-2.0 + oov - unk - 1.2, abs=1e-6)


def test_bigram_lookahead_agrees_with_brute_force_on_a_trained_lm(tmp_path: Path) -> None:
    from userlibri.lm.lookahead import BigramLookahead
    from userlibri.lm.ngram import iter_arpa

    model = train_ngram(CORPUS, tmp_path, NgramConfig(order=3, memory="50M"))
    arpa = model.arpa
    lm = KenLMWordScorer(model.binary, PIECES, lookahead="bigram")  # reads the .arpa beside it
    la = lm._bigram
    assert isinstance(la, BigramLookahead) and la.n_bigrams > 0
    uni: dict[str, float] = {}
    bo: dict[str, float] = {}
    bi: dict[tuple[str, str], float] = {}
    for gram, prob, backoff in iter_arpa(arpa, max_order=2):
        if len(gram) == 1:
            uni[gram[0]], bo[gram[0]] = prob * LN10, backoff * LN10
        else:
            bi[gram] = prob * LN10
    vocab = lm.vocabulary
    contexts = ["<s>", *vocab[:: max(1, len(vocab) // 25)]]
    prefixes = sorted({w[:k] for w in vocab[:: max(1, len(vocab) // 40)] for k in (1, 2, 3)})
    for u in contexts:
        ctx = la.start if u == "<s>" else vocab.index(u)
        for p in prefixes:
            cands = [w for w in vocab if w.startswith(p)]
            explicit = [bi[(u, w)] for w in cands if (u, w) in bi]
            expected = max([bo[u] + max(uni[w] for w in cands), *explicit])
            assert la.score(ctx, p) == pytest.approx(expected, abs=1e-5), (u, p)  # KenLM: float32
        assert la.score(ctx, "QQQQ") == lm.unknown_prefix_score


def test_lookahead_must_be_known() -> None:
    with pytest.raises(ConfigError, match="lookahead"):
        KenLMWordScorer(TINY, PIECES, lookahead="trigram")


def test_prefix_lookahead_maps_each_prefix_to_its_best_word() -> None:
    words = ["THE", "THEY", "THERE", "CAT", "CATS", "A"]
    scores = [-0.8, -1.3, -1.6, -1.2, -0.5, -2.0]
    table = prefix_lookahead(words, scores)
    # Every non-empty prefix of every word, and nothing else (no "", no non-prefixes).
    assert set(table) == {w[:k] for w in words for k in range(1, len(w) + 1)}
    for prefix, value in table.items():
        assert value == max(s for w, s in zip(words, scores, strict=True) if w.startswith(prefix)), prefix
    assert table["T"] == table["TH"] == table["THE"] == -0.8
    assert table["THER"] == -1.6
    assert table["C"] == table["CAT"] == -0.5  # CATS beats CAT
    assert "" not in table and "X" not in table and "THEX" not in table and "THEYS" not in table
    assert prefix_lookahead([], []) == {}
    with pytest.raises(ValueError):
        prefix_lookahead(["A"], [])
    # The scorer's table agrees with a brute-force search over its vocabulary.
    lm = KenLMWordScorer(TINY, PIECES)
    vocab = lm.vocabulary
    for prefix in ["T", "TH", "THE", "THEY", "THER", "C", "CA", "S", "X", "THEX", "CATS", "Z"]:
        best = [lm.word_score(_null(lm), w)[0] for w in vocab if w.startswith(prefix)]
        expected = max(best) if best else lm.unknown_prefix_score
        assert lm.prefix_score(prefix) == pytest.approx(expected, abs=1e-9), prefix


def _null(lm: KenLMWordScorer):  # noqa: ANN202 - kenlm.State
    state = kenlm.State()
    lm.model.NullContextWrite(state)
    return state


def test_word_scorer_bad_token_ids_name_the_file() -> None:
    lm = KenLMWordScorer(TINY, PIECES)
    state = lm.start_state()
    for bad, what in [(0, "<blk>"), (1, "<sos/eos>"), (-1, "out of range"), (len(PIECES), "out of range")]:
        with pytest.raises(UserLibriError, match=str(TINY)) as err:
            lm.score(state, bad)
        assert what in str(err.value), bad
    # Mid-word too (the state is not touched by a refused id).
    _, state = lm.score(state, ID[B + "TH"])
    with pytest.raises(UserLibriError, match="out of range"):
        lm.score(state, 10**9)
    assert lm.score(state, ID["E"])[0] == pytest.approx(0.0, abs=1e-9)


def test_word_states_merge_across_segmentations() -> None:
    lm = KenLMWordScorer(TINY, PIECES)
    a = lm.start_state()
    for p in [B + "THE", B + "C", "AT"]:
        _, a = lm.score(a, ID[p])
    b = lm.start_state()
    for p in [B + "TH", "E", B + "CAT"]:
        _, b = lm.score(b, ID[p])
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    c = lm.start_state()
    _, c = lm.score(c, ID[B + "CAT"])
    assert c != a  # same partial word, different history


# ---- a real tokenizer and an lmplz-trained LM ---------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("scorer")
    tok = train_tokenizer(CORPUS, root / "tok", TokenizerConfig(vocab_size=80))
    word = train_ngram(CORPUS, root / "lm", NgramConfig(order=3, memory="50M"))
    token = train_ngram(CORPUS, root / "lm", NgramConfig(order=4, unit="token", memory="50M"), tokenizer=tok)
    return tok, word, token


SENTENCES = [
    "THE MILLER WALKED HOME",
    "THE OLD MILLER WALKED DOWN TO THE RIVER IN THE MORNING",
    "A ZEBRA SAT BY THE QUIET FIRE",  # ZEBRA is out of vocabulary (and Z is not even a piece)
    "HARBOURS AND SHIPS",  # HARBOURS is an unseen word made of seen pieces
    "THE",
]


@pytest.mark.parametrize("binary", [True, False])
def test_word_scorer_equals_kenlm_sentence_score(trained, binary: bool) -> None:  # noqa: ANN001
    tok, word, _ = trained
    path = word.binary if binary else word.arpa
    lm = KenLMWordScorer(path, tok)
    model = kenlm.Model(str(path))
    n_oov_seen = 0
    for sentence in SENTENCES:
        total, steps = _feed_ids(lm, tok.encode(sentence))
        scores = list(model.full_scores(sentence, bos=True, eos=True))
        n_oov = sum(oov for _, _, oov in scores)
        n_oov_seen += n_oov
        # Identical to KenLM's per-word log10 scores summed in double precision, plus the OOV
        # penalty once per out-of-vocabulary word (none in the in-vocabulary sentences)...
        exact = sum(p for p, _, _ in scores) * LN10
        assert total == pytest.approx(exact + n_oov * DEFAULT_OOV_PENALTY, abs=1e-9), sentence
        # ...and to kenlm.Model.score, which sums in float32.
        kenlm_total = model.score(sentence, bos=True, eos=True) * LN10
        assert total - n_oov * DEFAULT_OOV_PENALTY == pytest.approx(kenlm_total, abs=1e-5)
        assert len(steps) == len(tok.encode(sentence))
    assert n_oov_seen == 2  # ZEBRA, HARBOURS
    assert sum(not any(o for _, _, o in model.full_scores(s)) for s in SENTENCES) == 3


def test_word_scorer_unknown_word_gets_unk_score_plus_penalty(trained) -> None:  # noqa: ANN001
    tok, word, _ = trained
    lm = KenLMWordScorer(word.binary, tok)
    assert lm.vocabulary == tuple(sorted(set(CORPUS.read_text(encoding="utf-8").split())))
    model = kenlm.Model(str(word.binary))
    assert [oov for _, _, oov in model.full_scores("THE ZEBRA")] == [False, True, False]
    assert tok.unk_id in tok.encode("THE ZEBRA")
    total, _ = _feed_ids(lm, tok.encode("THE ZEBRA"))
    # ZEBRA is scored exactly as the word <unk> in its context, plus the OOV penalty.
    out = kenlm.State()
    expected = (
        model.BaseScore(_after(model, []), "THE", out)
        + model.BaseScore(_after(model, ["THE"]), "<unk>", out)
        + model.BaseScore(_after(model, ["THE", "<unk>"]), "</s>", out)
    )
    assert total == pytest.approx(expected * LN10 + DEFAULT_OOV_PENALTY, abs=1e-9)
    assert total == pytest.approx(_feed_ids(lm, tok.encode("THE QX"))[0], abs=1e-9)
    plain = KenLMWordScorer(word.binary, tok, oov_penalty=0.0)
    assert _feed_ids(plain, tok.encode("THE ZEBRA"))[0] == pytest.approx(expected * LN10, abs=1e-9)


def _after(model, words: list[str]):  # noqa: ANN001, ANN202
    state, out = kenlm.State(), kenlm.State()
    model.BeginSentenceWrite(state)
    for w in words:
        model.BaseScore(state, w, out)
        state, out = out, state
    return state


def test_token_scorer_equals_kenlm_on_pieces(trained) -> None:  # noqa: ANN001
    tok, _, token = trained
    lm = load_lm("kenlm-token", token.binary, tok)
    assert isinstance(lm, KenLMTokenScorer) and lm.order == 4
    model = kenlm.Model(str(token.binary))
    for sentence in SENTENCES[:2]:
        ids = tok.encode(sentence)
        total, _ = _feed_ids(lm, ids)
        exact = sum(p for p, _, _ in model.full_scores(" ".join(tok.id_to_piece(i) for i in ids))) * LN10
        assert total == pytest.approx(exact, abs=1e-9)


def test_vocabulary_mismatch_names_both(trained, tmp_path: Path) -> None:  # noqa: ANN001
    tok, word, token = trained
    other = train_tokenizer(CORPUS, tmp_path / "other", TokenizerConfig(vocab_size=70))
    # By tokenizer id, from the LM's sidecar.
    with pytest.raises(UserLibriError, match="mismatch") as err:
        KenLMTokenScorer(token.binary, other)
    assert str(token.binary) in str(err.value) and str(other.path) in str(err.value)
    # Without a sidecar: by LM words that are not pieces of the tokenizer.
    bare = tmp_path / "bare.arpa"
    shutil.copy(token.arpa, bare)
    KenLMTokenScorer(bare, tok)  # the right tokenizer is accepted
    with pytest.raises(UserLibriError, match="not pieces of tokenizer") as err:
        KenLMTokenScorer(bare, other)
    assert str(bare) in str(err.value) and str(other.path) in str(err.value)
    # A word LM is not a token LM and vice versa.
    with pytest.raises(UserLibriError, match="token-level"):
        KenLMTokenScorer(word.binary, tok)
    with pytest.raises(UserLibriError, match="word-level"):
        KenLMWordScorer(token.binary, tok)


def test_corrupt_or_missing_models(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arpa"
    bad.write_text(TINY.read_text(encoding="utf-8").replace("-0.6\tTHEY SAT", "-0.6\tTHEY"), encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        KenLMWordScorer(bad, PIECES)
    assert err.value.line == TINY.read_text(encoding="utf-8").splitlines().index("-0.6\tTHEY SAT") + 1
    with pytest.raises(DataFormatError, match="no such file"):
        KenLMTokenScorer(tmp_path / "none.bin", PIECES)
    lone_binary = tmp_path / "lone.bin"
    shutil.copy(train_ngram(CORPUS, tmp_path / "lm", NgramConfig(order=2, memory="50M")).binary, lone_binary)
    with pytest.raises(DataFormatError, match="lone.arpa"):
        KenLMWordScorer(lone_binary, PIECES)
    # With the vocabulary given, a lone binary is fine, with the unigram look-ahead (no bigrams to read).
    lone = KenLMWordScorer(lone_binary, PIECES, vocabulary=["THE", "MILLER"])
    assert lone.prefix_score("MIL") < 0 and lone.lookahead == "unigram"


# ---- registry ------------------------------------------------------------------------------------


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    load_lm("kenlm-word", TINY, PIECES)  # registers the built-in kinds
    assert {"kenlm-word", "kenlm-token"} <= set(LM_KINDS.names())
    with pytest.raises(ConfigError, match="already registered"):
        LM_KINDS.register("kenlm-word")(lambda path, tok: None)
    with pytest.raises(ConfigError, match="unknown LM kind 'nope'.*kenlm-token"):
        load_lm("nope", TINY, PIECES)
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    assert reg.get("a") == 1 and "a" in reg and list(reg) == ["a"]
    with pytest.raises(ConfigError, match="non-empty"):
        reg.register(" b")(2)
    with pytest.raises(UserLibriError, match="needs"):
        load_lm("kenlm-word", TINY, None)


def test_word_kinds_pick_the_lookahead() -> None:
    assert load_lm("kenlm-word", TINY, PIECES).lookahead == "bigram"
    assert load_lm("kenlm-word-unigram", TINY, PIECES).lookahead == "unigram"
    with pytest.raises(UserLibriError, match="needs"):
        load_lm("kenlm-word-unigram", TINY, None)


def test_bigram_reader_names_the_bad_line(tmp_path: Path) -> None:
    from userlibri.lm.lookahead import read_arpa_bigrams

    unigrams, bigrams = read_arpa_bigrams(TINY)
    assert ("THE", -0.3) in unigrams and ("<s>", -0.5) in unigrams and len(unigrams) == 7  # not </s>
    assert bigrams[0] == ("<s>", "THE", -0.4) and len(bigrams) == 6
    lines = TINY.read_text(encoding="utf-8").splitlines()
    bad = lines.index("-0.6\tTHEY SAT")
    lines[bad] = "oops\tTHEY SAT"
    broken = tmp_path / "broken.arpa"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="2-gram") as err:
        read_arpa_bigrams(broken)
    assert err.value.line == bad + 1
    with pytest.raises(DataFormatError, match="1-grams"):
        read_arpa_bigrams(CORPUS)


def test_bigram_tables_are_cached_on_disk_per_file_version(tmp_path: Path) -> None:
    from userlibri.lm.lookahead import BigramLookahead, prefix_lookahead

    arpa = tmp_path / "lm.arpa"
    shutil.copy(TINY, arpa)
    words = ("CAT", "SAT", "THE", "THERE", "THEY")
    uni = prefix_lookahead(words, [-1.2, -1.4, -0.8, -1.6, -1.3])
    cache = tmp_path / "cache"
    first = BigramLookahead(arpa, words, uni, -30.0, cache_dir=cache)
    again = BigramLookahead(arpa, words, uni, -30.0, cache_dir=cache)
    assert not first.from_cache and again.from_cache and len(list(cache.glob("*.npz"))) == 1
    for a, b in zip(
        (first.ptr, first.succ, first.probs, first.backoff),
        (again.ptr, again.succ, again.probs, again.backoff),
        strict=True,
    ):
        assert np.array_equal(a, b)
    assert again.score(again.start, "TH") == pytest.approx(-0.4 * LN10)
    # Another vocabulary or a rewritten file is another entry; a corrupt entry is rebuilt.
    assert not BigramLookahead(arpa, words[:3], uni, -30.0, cache_dir=cache).from_cache
    arpa.write_text(
        TINY.read_text(encoding="utf-8").replace("-0.4\t<s> THE", "-0.3\t<s> THE"), encoding="utf-8"
    )
    changed = BigramLookahead(arpa, words, uni, -30.0, cache_dir=cache)
    assert not changed.from_cache and changed.score(changed.start, "TH") == pytest.approx(-0.3 * LN10)
    for f in cache.glob("*.npz"):
        f.write_bytes(b"not a zip")
    assert not BigramLookahead(arpa, words, uni, -30.0, cache_dir=cache).from_cache
    # A cache that cannot be written is skipped.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    assert not BigramLookahead(arpa, words, uni, -30.0, cache_dir=blocked / "x").from_cache
    assert not BigramLookahead(arpa, words, uni, -30.0, cache_dir=None).from_cache
