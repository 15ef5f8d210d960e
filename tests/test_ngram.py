"""lmplz/build_binary wrapper and the strict ARPA reader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from userlibri.errors import ConfigError, DataFormatError, ExternalToolError, UserLibriError
from userlibri.lm.ngram import (
    NgramConfig,
    find_tool,
    iter_arpa,
    read_arpa_counts,
    read_arpa_unigrams,
    train_ngram,
    validate_arpa,
)
from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer

kenlm = pytest.importorskip("kenlm")

DATA = Path(__file__).parent / "data" / "lm"
CORPUS = DATA / "corpus.txt"
TINY = DATA / "tiny.arpa"


@pytest.fixture(scope="module")
def word3(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return train_ngram(CORPUS, tmp_path_factory.mktemp("word3"), NgramConfig(order=3, memory="50M"))


def _logp(model, context: str, word: str) -> float:  # noqa: ANN001
    """log10 p(word | context) through kenlm, context given without <s>."""
    state, out = kenlm.State(), kenlm.State()
    model.NullContextWrite(state)
    for w in context.split():
        model.BaseScore(state, w, out)
        state, out = out, state
    return model.BaseScore(state, word, out)


def test_lmplz_outputs_and_probabilities(word3) -> None:  # noqa: ANN001
    out_dir = word3.arpa.parent
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "word-3gram.arpa",
        "word-3gram.bin",
        "word-3gram.json",
    ]
    info = validate_arpa(word3.arpa)
    assert info.counts == word3.counts and info.order == 3
    # Header counts match what the sections actually hold.
    actual = [0, 0, 0]
    for words, _, _ in iter_arpa(word3.arpa):
        actual[len(words) - 1] += 1
    assert tuple(actual) == info.counts
    # The vocabulary is the corpus's words plus the specials.
    corpus_words = set(CORPUS.read_text(encoding="utf-8").split())
    assert set(read_arpa_unigrams(word3.arpa)) == corpus_words | {"<s>", "</s>", "<unk>"}
    assert word3.sentences == 60 and word3.words == len(CORPUS.read_text(encoding="utf-8").split())
    binary, arpa = kenlm.Model(str(word3.binary)), kenlm.Model(str(word3.arpa))
    assert binary.order == 3
    # A bigram that occurs beats one that does not, for words that both occur.
    assert _logp(binary, "THE", "MILLER") > _logp(binary, "THE", "GREY")
    assert _logp(binary, "THE OLD", "MILLER") > _logp(binary, "THE OLD", "RIVER")
    # Binary and ARPA agree; a seen sentence beats its shuffle; an unseen word gets <unk>.
    seen = "THE OLD MILLER WALKED DOWN TO THE RIVER IN THE MORNING"
    assert binary.score(seen) == pytest.approx(arpa.score(seen), abs=1e-5)
    assert binary.score(seen) > binary.score(" ".join(reversed(seen.split())))
    assert list(binary.full_scores("ZEBRA"))[0][2] is True
    meta = word3.meta.read_text(encoding="utf-8")
    assert '"kind": "kenlm-word"' in meta and '"tokenizer_id": null' in meta


def test_token_unit_uses_tokenizer_pieces(tmp_path: Path) -> None:
    tok = train_tokenizer(CORPUS, tmp_path / "tok", TokenizerConfig(vocab_size=80))
    with pytest.raises(ConfigError, match="tokenizer"):
        train_ngram(CORPUS, tmp_path / "lm", NgramConfig(order=3, unit="token"))
    model = train_ngram(
        CORPUS, tmp_path / "lm", NgramConfig(order=3, unit="token", memory="50M"), tokenizer=tok
    )
    assert model.arpa.name == "token-3gram.arpa" and model.tokenizer_id == tok.model_id
    vocab = set(read_arpa_unigrams(model.arpa)) - {"<s>", "</s>", "<unk>"}
    assert vocab <= set(tok.pieces) and "\u2581THE" in vocab
    assert model.words == sum(len(tok.encode(s)) for s in CORPUS.read_text(encoding="utf-8").splitlines())


def test_prune_drops_singletons(word3, tmp_path: Path) -> None:  # noqa: ANN001
    pruned = train_ngram(CORPUS, tmp_path, NgramConfig(order=3, prune=(0, 0, 1), memory="50M"))
    assert pruned.counts[0] == word3.counts[0]
    assert pruned.counts[2] < word3.counts[2]


def test_discount_fallback_auto_retry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tiny = ["A B", "A B", "A B C"]
    with pytest.raises(ExternalToolError, match="Kneser-Ney"):
        train_ngram(tiny, tmp_path / "no", NgramConfig(order=3, memory="50M", discount_fallback=False))
    assert not (tmp_path / "no" / "word-3gram.arpa").exists()
    assert [p.name for p in (tmp_path / "no").iterdir()] == []  # no temp files left behind
    with caplog.at_level("WARNING"):
        model = train_ngram(tiny, tmp_path / "auto", NgramConfig(order=3, memory="50M"))
    assert model.discount_fallback is True
    assert "discount_fallback" in caplog.text
    assert validate_arpa(model.arpa).counts[0] == 6  # A B C + <s> </s> <unk>


def test_bad_config_and_input(tmp_path: Path) -> None:
    for config, match in [
        (NgramConfig(order=0), "order"),
        (NgramConfig(prune=(1, 1)), "unigrams"),
        (NgramConfig(order=2, prune=(0, 1, 2)), "at most 2"),
        (NgramConfig(prune=(0, 2, 1)), "non-decreasing"),
        (NgramConfig(memory="lots"), "memory"),
        (NgramConfig(unit="char"), "unit"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ConfigError, match=match):
            config.validate()
    with pytest.raises(UserLibriError, match="0 sentences"):
        train_ngram(["", "   "], tmp_path, NgramConfig(memory="50M"))
    with pytest.raises(DataFormatError, match="no such file"):
        train_ngram([tmp_path / "missing.txt"], tmp_path, NgramConfig(memory="50M"))


def test_missing_lmplz_says_run_make_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExternalToolError, match="make setup"):
        find_tool("lmplz")
    with pytest.raises(ExternalToolError, match="lmplz not found"):
        train_ngram(CORPUS, tmp_path / "lm", NgramConfig(memory="50M"))


# ---- the hand-written ARPA and corrupt copies of it -------------------------------------------


def test_read_hand_written_arpa() -> None:
    entries = {words: (p, b) for words, p, b in iter_arpa(TINY)}
    assert read_arpa_counts(TINY).counts == (8, 6, 3)
    assert entries[("THE",)] == (-0.8, -0.3)
    assert entries[("</s>",)] == (-1.0, 0.0)  # backoff omitted in the file
    assert entries[("<s>", "THE", "CAT")] == (-0.2, 0.0)
    assert read_arpa_unigrams(TINY)["THEY"] == -1.3


def _corrupt(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of the tiny ARPA with ``old`` replaced; returns it and the 1-based line changed."""
    lines = TINY.read_text(encoding="utf-8").splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.rstrip("\n") == old)
    lines[index] = new + "\n"
    path = tmp_path / "bad.arpa"
    path.write_text("".join(lines), encoding="utf-8")
    return path, index + 1


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("-0.7\tCAT SAT\t-0.05", "abc\tCAT SAT\t-0.05", "numeric log10 probability"),
        ("-0.7\tCAT SAT\t-0.05", "-0.7\tCAT SAT\tx", "numeric log10 backoff"),
        ("-0.7\tCAT SAT\t-0.05", "-0.7\tCAT SAT ON\t-0.05", "fields"),
        ("-0.7\tCAT SAT\t-0.05", "0.5\tCAT SAT\t-0.05", "<= 0"),
        ("ngram 2=6", "ngram 2=six", "integer n-gram count"),
        ("\\3-grams:", "\\4-grams:", "3-grams"),
    ],
)
def test_corrupt_arpa_names_the_line(tmp_path: Path, old: str, new: str, match: str) -> None:
    path, lineno = _corrupt(tmp_path, old, new)
    with pytest.raises(DataFormatError, match=match) as err:
        validate_arpa(path)
    assert err.value.line == lineno
    assert f"{path}:{lineno}" in str(err.value)


def test_arpa_count_mismatch(tmp_path: Path) -> None:
    # The header promises 7 bigrams, the section holds 6: reported where the section ends.
    path, _ = _corrupt(tmp_path, "ngram 2=6", "ngram 2=7")
    section_end = TINY.read_text(encoding="utf-8").splitlines().index("\\3-grams:") + 1
    with pytest.raises(DataFormatError, match="7 2-grams") as err:
        validate_arpa(path)
    assert err.value.line == section_end and "found 6" in str(err.value)
    # Fewer promised than present: reported at the first extra entry.
    path, _ = _corrupt(tmp_path, "ngram 3=3", "ngram 3=2")
    last = TINY.read_text(encoding="utf-8").splitlines().index("-0.1\tCAT SAT </s>") + 1
    with pytest.raises(DataFormatError, match="3-grams") as err:
        validate_arpa(path)
    assert err.value.line == last
    # A truncated file.
    truncated = tmp_path / "cut.arpa"
    truncated.write_text(TINY.read_text(encoding="utf-8").replace("\\end\\", ""), encoding="utf-8")
    with pytest.raises(DataFormatError, match="end"):
        validate_arpa(truncated)
    text = tmp_path / "text.arpa"
    text.write_text("hello\n\\data\\\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="first non-empty line") as err:
        validate_arpa(text)
    assert err.value.line == 1


def test_cli_tokenizer_and_ngram(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from userlibri.cli import cli

    runner = CliRunner()
    res = runner.invoke(
        cli, ["lm", "tokenizer", "--input", str(CORPUS), "--out", str(tmp_path / "tok"), "--vocab-size", "80"]
    )
    assert res.exit_code == 0, res.output
    assert "80 pieces" in res.output and (tmp_path / "tok" / "tokens.txt").is_file()
    args = [
        "lm",
        "ngram",
        "--input",
        str(CORPUS),
        "--out",
        str(tmp_path / "lm"),
        "--order",
        "3",
        "--memory",
        "50M",
    ]
    res = runner.invoke(
        cli, [*args, "--unit", "token", "--tokenizer", str(tmp_path / "tok"), "--prune", "0 0 1"]
    )
    assert res.exit_code == 0, res.output
    meta = (tmp_path / "lm" / "token-3gram.json").read_text(encoding="utf-8")
    assert '"prune": [\n      0,\n      0,\n      1\n    ]' in meta and '"unit": "token"' in meta
    res = runner.invoke(cli, [*args, "--prune", "0 x"])
    assert res.exit_code == 2 and "integers" in res.output
