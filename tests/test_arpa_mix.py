"""Static linear interpolation of ARPA n-grams (lm/arpa_mix.py), checked through KenLM."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

kenlm = pytest.importorskip("kenlm")

from userlibri.errors import ConfigError, DataFormatError, UserLibriError  # noqa: E402
from userlibri.lm import arpa_mix as am  # noqa: E402
from userlibri.lm.ngram import NgramConfig, find_tool, train_ngram  # noqa: E402

DATA = Path(__file__).parent / "data" / "lm"

try:
    find_tool("lmplz")
except UserLibriError:  # pragma: no cover - setup builds lmplz
    pytest.skip("lmplz not built (run make setup)", allow_module_level=True)

WORDS_A = "THE CAT SAT ON A MAT AND THE DOG RAN TO HIS OLD HOUSE".split()
WORDS_B = "THE SHIP SAILED ON A GREY SEA AND THE MAN SAW HIS OLD WHALE".split()


def _text(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(len(words) - 3)
        out.append(" ".join(words[start : start + rng.randint(3, 8)]))
    return out


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("mix")
    cfg = NgramConfig(order=3)
    a = train_ngram(_text(WORDS_A, 80, 1) + _text(WORDS_B, 5, 2), out, cfg, name="a")
    b = train_ngram(
        _text(WORDS_B, 80, 3) + [(DATA / "corpus.txt").read_text().splitlines()[0]], out, cfg, name="b"
    )
    return a.arpa, b.arpa


def _model(path: Path):
    return kenlm.Model(str(path))


def _prob(model, context: list[str], word: str, vocab: set[str]) -> float:
    """P(word | context) by KenLM; 0 for a word outside ``vocab`` (the mixing convention)."""
    if word not in vocab:
        return 0.0
    state = kenlm.State()
    if context[:1] == ["<s>"]:
        model.BeginSentenceWrite(state)
        context = context[1:]
    else:
        model.NullContextWrite(state)
    for w in context:
        nxt = kenlm.State()
        model.BaseScore(state, w, nxt)
        state = nxt
    return 10.0 ** model.BaseScore(state, word, kenlm.State())


def _mix(lms, weights, tmp_path, models=None) -> tuple[Path, am.MixResult]:
    out = tmp_path / "mix.arpa"
    result = am.mix_arpa_files(list(lms), weights, out, tmp_path / "mix.bin", models=models)
    return tmp_path / "mix.bin", result


CONTEXTS = [
    ["<s>"],
    ["THE"],
    ["<s>", "THE"],
    ["ON", "A"],
    ["THE", "OLD"],
    ["HIS", "OLD"],
    ["SEA", "AND"],
    ["OLD"],
]


@pytest.mark.parametrize("lam", [0.3, 0.75])
def test_listed_ngrams_are_exact_mixtures(lms, tmp_path, lam) -> None:
    binary, result = _mix(lms, [lam, 1 - lam], tmp_path)
    a, b = (am.read_arpa(p) for p in lms)
    va, vb = set(a.vocab), set(b.vocab)
    ma, mb, mm = _model(lms[0]), _model(lms[1]), _model(binary)
    listed = {tuple(result.vocab[i] for i in row) for o in result.orders for row in o.ids.tolist()}
    checked = 0
    for ctx in CONTEXTS:
        for w in sorted((va | vb) - {"<s>"}):
            if tuple(ctx + [w]) not in listed:
                continue
            expected = lam * _prob(ma, ctx, w, va) + (1 - lam) * _prob(mb, ctx, w, vb)
            got = _prob(mm, ctx, w, va | vb)
            assert got == pytest.approx(expected, abs=1e-4, rel=1e-4), (ctx, w)
            checked += 1
    assert checked > 40


@pytest.mark.parametrize("lam", [0.2, 0.6])
def test_mixed_distributions_sum_to_one(lms, tmp_path, lam) -> None:
    binary, result = _mix(lms, [lam, 1 - lam], tmp_path)
    vocab = set(result.vocab)
    mm = _model(binary)
    for ctx in CONTEXTS + [["DOG", "RAN"], ["WHALE"], ["GREY", "SEA"]]:
        total = sum(_prob(mm, ctx, w, vocab) for w in vocab - {"<s>"})
        assert total == pytest.approx(1.0, abs=1e-4), ctx


def test_three_models_and_union_vocabulary(lms, tmp_path) -> None:
    third = train_ngram(_text(WORDS_A[::-1], 40, 9), tmp_path, NgramConfig(order=2), name="c").arpa
    binary, result = _mix([*lms, third], [0.5, 0.3, 0.2], tmp_path)
    assert set(result.vocab) == set().union(*(am.read_arpa(p).vocab for p in [*lms, third]))
    assert len(result.orders) == 3
    mm = _model(binary)
    for ctx in CONTEXTS[:4]:
        assert sum(_prob(mm, ctx, w, set(result.vocab)) for w in set(result.vocab) - {"<s>"}) == (
            pytest.approx(1.0, abs=1e-4)
        )


def test_weight_one_reproduces_the_first_model(lms, tmp_path) -> None:
    binary, _ = _mix(lms, [1.0, 0.0], tmp_path)
    a = am.read_arpa(lms[0])
    ma, mm = _model(lms[0]), _model(binary)
    for ctx in CONTEXTS:
        for w in set(a.vocab) - {"<s>"}:
            assert _prob(mm, ctx, w, {w}) == pytest.approx(_prob(ma, ctx, w, {w}), rel=1e-4)
    # a word only the second model knows gets (almost) nothing
    assert _prob(mm, ["<s>"], "WHALE", {"WHALE"}) < 1e-90 or "WHALE" in a.vocab


def test_written_arpa_reads_back(lms, tmp_path) -> None:
    _, result = _mix(lms, [0.5, 0.5], tmp_path)
    back = am.read_arpa(tmp_path / "mix.arpa")
    assert back.counts == result.counts
    assert back.vocab == result.vocab


def test_bad_weights(lms, tmp_path) -> None:
    models = [am.read_arpa(p) for p in lms]
    for weights in ([0.5], [0.7, 0.7], [1.2, -0.2], [float("nan"), 1.0]):
        with pytest.raises(ConfigError, match="weights"):
            am.mix_models(models, weights)
    with pytest.raises(ConfigError, match="at least 2"):
        am.mix_models(models[:1], [1.0])


def test_corrupt_arpa_names_the_line(tmp_path) -> None:
    bad = tmp_path / "bad.arpa"
    lines = (DATA / "tiny.arpa").read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.endswith("THE CAT\t-0.15"))
    lines[i] = "oops\tTHE CAT\t-0.15"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"bad.arpa:{i + 1}: expected a numeric log10 probability"):
        am.read_arpa(bad)


def test_vocabulary_mismatch_is_refused(lms, tmp_path) -> None:
    pieces = tmp_path / "pieces.arpa"
    pieces.write_text(
        "\\data\\\nngram 1=5\n\n\\1-grams:\n-1\t<unk>\n0\t<s>\n-0.5\t</s>\n"
        "-0.6\t\u2581TH\n-0.7\tE\n\n\\end\\\n"
    )
    with pytest.raises(UserLibriError, match="vocabulary mismatch.*share only 0 words"):
        am.mix_models([am.read_arpa(lms[0]), am.read_arpa(pieces)], [0.5, 0.5])
    # by the sidecars: a word LM with a token LM
    shutil.copy(lms[1], tmp_path / "tok.arpa")
    (tmp_path / "tok.json").write_text('{"kind": "kenlm-token", "tokenizer_id": "abc"}')
    with pytest.raises(UserLibriError, match="vocabulary mismatch.*kenlm-token"):
        am.mix_models([am.read_arpa(lms[0]), am.read_arpa(tmp_path / "tok.arpa")], [0.5, 0.5])


def test_unknown_word_in_ngram(tmp_path) -> None:
    broken = tmp_path / "broken.arpa"
    broken.write_text(
        "\\data\\\nngram 1=4\nngram 2=1\n\n\\1-grams:\n-1\t<unk>\t0\n0\t<s>\t-0.3\n-0.5\t</s>\t0\n"
        "-0.4\tTHE\t0\n\n\\2-grams:\n-0.2\t<s> CAT\n\n\\end\\\n"
    )
    with pytest.raises(DataFormatError, match="listed as a unigram.*CAT"):
        am.read_arpa(broken)


def test_arpa_not_closed_under_suffixes(lms, tmp_path) -> None:
    broken = tmp_path / "broken.arpa"
    broken.write_text(
        "\\data\\\nngram 1=5\nngram 2=1\nngram 3=1\n\n\\1-grams:\n-1\t<unk>\t0\n0\t<s>\t0\n"
        "-0.5\t</s>\t0\n-0.4\tTHE\t0\n-0.6\tCAT\t0\n\n\\2-grams:\n-0.2\tTHE CAT\t-0.1\n\n"
        "\\3-grams:\n-0.1\tTHE CAT THE\n\n\\end\\\n"
    )
    with pytest.raises(DataFormatError, match="closed under suffixes.*'CAT', 'THE'"):
        am.mix_models([am.read_arpa(lms[0]), am.read_arpa(broken)], [0.5, 0.5])
