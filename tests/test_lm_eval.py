"""Held-out perplexity, weight tuning, the per-user n-gram pipeline and the lm eval CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("kenlm")

from userlibri.data.books import Book, BookCorpus, Chapter  # noqa: E402
from userlibri.errors import ConfigError, DataFormatError, UserLibriError  # noqa: E402
from userlibri.lm import evaluate as ev  # noqa: E402
from userlibri.lm.ngram import NgramConfig, find_tool, train_ngram  # noqa: E402

DATA = Path(__file__).parent / "data" / "lm"

try:
    find_tool("lmplz")
except UserLibriError:  # pragma: no cover - setup builds lmplz
    pytest.skip("lmplz not built (run make setup)", allow_module_level=True)

SEA = "THE CAPTAIN SAW THE WHALE FROM THE SHIP AND THE SEA WAS GREY AND COLD".split()
TOWN = "THE LADY WALKED TO THE TOWN WITH HER SISTER AND THEY SPOKE OF THE BALL".split()


def _text(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i = rng.randrange(len(words) - 4)
        out.append(" ".join(words[i : i + rng.randint(4, 9)]))
    return out


# ------------------------------------------------------------------ perplexity by hand


def test_perplexity_by_hand_on_a_hand_written_arpa() -> None:
    # tiny.arpa: THE CAT SAT = -0.4 -0.2 -0.25 -0.1 (all listed); THEY SAT = (-0.5 - 1.3) - 0.6 - 0.3
    # (backoff from <s>, then listed bigrams); DOG is out of vocabulary: (-0.5 - 1.5) - 1.4 - 0.3.
    ppl = ev.ngram_perplexity(DATA / "tiny.arpa", ["THE CAT SAT", "THEY SAT"])
    assert (ppl.words, ppl.sentences, ppl.tokens, ppl.oovs) == (5, 2, 7, 0)
    assert ppl.logprob == pytest.approx(-3.65 * math.log(10), abs=1e-5)
    assert ppl.perplexity == pytest.approx(10 ** (3.65 / 7), rel=1e-5)
    with_oov = ev.ngram_perplexity(DATA / "tiny.arpa", ["THE CAT SAT", "THEY  SAT ", "DOG SAT"])
    assert with_oov.oovs == 1 and with_oov.tokens == 10
    assert with_oov.perplexity == pytest.approx(10 ** (7.35 / 10), rel=1e-5)
    assert with_oov.to_dict()["oov_rate"] == pytest.approx(1 / 7)


def test_perplexity_needs_sentences() -> None:
    with pytest.raises(UserLibriError, match="held-out"):
        ev.ngram_perplexity(DATA / "tiny.arpa", ["", "  "])


def test_corrupt_arpa_is_reported_with_its_line(tmp_path) -> None:
    bad = tmp_path / "bad.arpa"
    lines = (DATA / "tiny.arpa").read_text().splitlines()
    lines[8] = "-0.8\tTHE\tnot-a-number"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.arpa:9: expected a numeric log10 backoff"):
        ev.ngram_perplexity(bad, ["THE CAT"])


# ------------------------------------------------------------------ held-out split


def test_heldout_split_is_deterministic_and_disjoint() -> None:
    sents = [f"S{i}" for i in range(95)] + ["", "  "]
    split = ev.split_heldout(sents, every=10)
    assert split.heldout == [f"S{i}" for i in range(9, 95, 10)]
    assert len(split.train) == 95 - 9 and not set(split.train) & set(split.heldout)
    assert ev.split_heldout(sents, every=10) == split


def test_tiny_user_text_error_gives_counts() -> None:
    with pytest.raises(UserLibriError, match=r"found 12 \(11 training, 1 held out"):
        ev.split_heldout([f"S{i}" for i in range(12)], every=10, min_train=20, what="book 7")
    with pytest.raises(UserLibriError, match=r"found 0 \(0 training, 0 held out"):
        ev.split_heldout([], every=10)
    with pytest.raises(ConfigError):
        ev.split_heldout(["A"] * 50, every=1)


# ------------------------------------------------------------------ weights


def test_em_finds_the_known_optimum() -> None:
    rng = np.random.default_rng(0)
    p1, p2 = rng.uniform(0.01, 1, 400), rng.uniform(0.01, 1, 400)
    probs = np.stack([p1, p2], axis=1)
    grid = np.linspace(0, 1, 100_001)
    ll = np.log(np.outer(p1, grid) + np.outer(p2, 1 - grid)).sum(axis=0)
    w, _ = ev.em_weights(probs, iterations=5000, tol=0)
    assert w[0] == pytest.approx(grid[np.argmax(ll)], abs=1e-3)
    assert w.sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def two_lms(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("lms")
    a = train_ngram(_text(SEA, 200, 1), out, NgramConfig(order=3), name="sea")
    b = train_ngram(_text(TOWN, 200, 2), out, NgramConfig(order=3), name="town")
    return a.binary, b.binary


def test_tuning_prefers_the_model_the_heldout_comes_from(two_lms) -> None:
    heldout = _text(SEA, 30, 7)
    tuned = ev.tune_mixture(list(two_lms), heldout)
    assert tuned.weights[0] > 0.9
    flipped = ev.tune_mixture(list(two_lms[::-1]), heldout)
    assert flipped.weights[1] == pytest.approx(tuned.weights[0], abs=1e-3)
    # the tuned mixture is at least as good as any other weight
    for lam in (0.5, 0.8, 0.99):
        other = ev.mixture_perplexity(list(two_lms), [lam, 1 - lam], heldout)
        assert tuned.perplexity.perplexity <= other.perplexity * (1 + 1e-6)


def test_mixture_with_weight_one_is_the_model(two_lms) -> None:
    heldout = _text(SEA, 10, 3)
    alone = ev.ngram_perplexity(two_lms[0], heldout)
    mixed = ev.mixture_perplexity(list(two_lms), [1.0, 0.0], heldout)
    assert mixed.perplexity == pytest.approx(alone.perplexity, rel=1e-9)
    with pytest.raises(UserLibriError, match="probability 0"):
        ev.mixture_perplexity(list(two_lms), [0.0, 1.0], ["THE CAPTAIN SAW THE WHALE"])


# ------------------------------------------------------------------ per-user pipeline


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny UserLibri release (two books with LM text, users without audio) and a book cache."""
    root = tmp_path_factory.mktemp("release")
    lm = root / "UserLibri" / "lm_data"
    lm.mkdir(parents=True)
    (lm / "11_lm_train.txt").write_text("\n".join(_text(SEA, 120, 11)) + "\n")
    (lm / "22_lm_train.txt").write_text("\n".join(_text(TOWN, 120, 22)) + "\n")
    (lm / "33_lm_train.txt").write_text("THE SEA\nTHE SHIP\n")
    for user in ("speaker-1-book-11", "speaker-2-book-22", "speaker-3-book-33"):
        (root / "UserLibri" / "audio_data" / "test-clean" / user).mkdir(parents=True)
    corpus = BookCorpus.create(root / "corpora")
    for book_id, words in (("11", SEA), ("22", TOWN), ("90", SEA + TOWN), ("sotu", TOWN[::-1] + SEA)):
        paras = tuple(
            s.capitalize() + "." for s in _text(words, 150, int(book_id) if book_id.isdigit() else 5)
        )
        corpus.add(Book(book_id, f"Book {book_id}", "Anon", (Chapter("One", paras),)))
    return root, root / "corpora"


def test_user_pipeline_writes_book_dirs(release, tmp_path) -> None:
    from userlibri.lm import users

    root, corpus = release
    out = tmp_path / "lms"
    summary = users.build_user_lms(root, out, corpus_dir=corpus, books=["11", "22"], progress=False)
    sources = json.loads((out / "background" / "sources.json").read_text())
    assert sorted(sources["books"]) == ["90", "sotu"]  # books of test users are left out
    assert sorted(sources["excluded"]) == ["11", "22", "33"]
    for book in ("11", "22"):
        d = out / book
        for name in ("ngram.arpa", "ngram.bin", "mix.arpa", "mix.bin", "mix.json", "privacy.json"):
            assert (d / name).is_file(), name
        train = (d / "train.txt").read_text().splitlines()
        heldout = (d / "heldout.txt").read_text().splitlines()
        assert len(heldout) == 12 and len(train) == 108
        mix = json.loads((d / "mix.json").read_text())
        assert sum(mix["weights"]) == pytest.approx(1.0) and mix["weight_user"] > 0.5
        h = mix["heldout"]
        assert h["interpolated"]["perplexity"] < h["background"]["perplexity"]
        privacy = json.loads((d / "privacy.json").read_text())
        assert privacy["mechanism"] == "none" and "No differential privacy" in privacy["note"]
    assert [r["book_id"] for r in summary["books"]] == ["11", "22"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers

    result = users.evaluate_user_lms(out, progress=False)
    assert [r["book_id"] for r in result["books"]] == ["11", "22"]
    assert result["books"][0]["users"] == ["speaker-1-book-11"]
    assert result["mean_reduction_vs_background"]["interpolated"] > 0.1
    table = users.format_table(result)
    assert "| 11 | 1 |" in table and "interpolated_exact" in table

    # Rebuilding one book with the same background keeps the other book's row and LM untouched.
    stamp = (out / "11" / "mix.bin").stat().st_mtime_ns
    bg = out / "background" / "ngram.arpa"
    again = users.build_user_lms(root, out, background_arpa=bg, books=["22"], progress=False)
    assert again["books"][0] == summary["books"][0] and [r["book_id"] for r in again["books"]] == ["11", "22"]
    assert (out / "11" / "mix.bin").stat().st_mtime_ns == stamp
    assert json.loads((out / "summary.json").read_text()) == again
    # With another background LM the other books' rows no longer describe this run: dropped.
    other = tmp_path / "other.arpa"
    other.write_bytes(bg.read_bytes())
    alone = users.build_user_lms(root, out, background_arpa=other, books=["22"], progress=False)
    assert [r["book_id"] for r in alone["books"]] == ["22"]


def test_user_lms_survive_moving_the_work_directory(release, tmp_path) -> None:
    """summary.json records the background LM and the dataset relative to itself: a work directory
    moved as a whole still evaluates (with the users listed); a summary from before, with absolute
    paths that no longer exist, falls back to the background LM beside it."""
    import shutil

    from userlibri.lm import users

    root, corpus = release
    work = tmp_path / "work"
    shutil.copytree(root / "UserLibri", work / "UserLibri")
    users.build_user_lms(work / "UserLibri", work / "lm", corpus_dir=corpus, books=["11"], progress=False)
    summary = json.loads((work / "lm" / "summary.json").read_text())
    assert summary["background"] == "background/ngram.arpa" and summary["dataset"] == "../UserLibri"
    moved = tmp_path / "moved"
    work.rename(moved)
    result = users.evaluate_user_lms(moved / "lm", progress=False)
    assert result["books"][0]["users"] == ["speaker-1-book-11"]
    summary.update(background=str(work / "lm" / "background" / "ngram.arpa"), dataset=str(work / "UserLibri"))
    (moved / "lm" / "summary.json").write_text(json.dumps(summary))
    old = users.evaluate_user_lms(moved / "lm", progress=False)  # absolute, gone: the local background
    assert old["books"][0]["perplexity"] == result["books"][0]["perplexity"]
    assert old["books"][0]["users"] == []
    del summary["background"]  # no background recorded: the one beside it, from a relative users dir
    (moved / "lm" / "summary.json").write_text(json.dumps(summary))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        none = users.evaluate_user_lms(Path("moved/lm"), progress=False)
    assert none["books"][0]["perplexity"] == result["books"][0]["perplexity"]


def test_user_pipeline_refuses_tiny_book(release, tmp_path) -> None:
    from userlibri.lm import users

    root, corpus = release
    with pytest.raises(UserLibriError, match=r"book 33.*found 2 \(2 training, 0 held out"):
        users.build_user_lms(root, tmp_path / "o", corpus_dir=corpus, books=["33"], progress=False)
    with pytest.raises(UserLibriError, match="no LM text for book"):
        users.build_user_lms(root, tmp_path / "o", corpus_dir=corpus, books=["44"], progress=False)


# ------------------------------------------------------------------ CLI


def _group() -> click.Group:
    from userlibri.cli.lm_eval import COMMANDS

    group = click.Group("lm")
    for c in COMMANDS:
        group.add_command(c)
    return group


def test_cli_users_interpolate_eval_audit(release, tmp_path) -> None:
    root, corpus = release
    runner = CliRunner()
    out = tmp_path / "lms"
    res = runner.invoke(
        _group(),
        ["users", "--dataset", str(root), "--out", str(out), "--corpus", str(corpus), "--books", "11"],
    )
    assert res.exit_code == 0, res.output
    assert "book 11: user weight" in res.output
    res = runner.invoke(
        _group(),
        [
            "interpolate",
            "--lm", str(out / "11" / "ngram.arpa"),
            "--lm", str(out / "background" / "ngram.arpa"),
            "--tune-on", str(out / "11" / "heldout.txt"),
            "--out", str(tmp_path / "m" / "mix.arpa"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "m" / "mix.json").read_text())
    mix = json.loads((out / "11" / "mix.json").read_text())
    assert info["weights"] == pytest.approx(mix["weights"])
    res = runner.invoke(
        _group(),
        ["interpolate", "--lm", str(out / "11" / "ngram.arpa"),
         "--lm", str(out / "background" / "ngram.arpa"),
         "--weight", "0.3", "--out", str(tmp_path / "w" / "mix.arpa")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "w" / "mix.json").read_text())["weights"] == pytest.approx([0.3, 0.7])
    res = runner.invoke(_group(), ["eval", "--users-dir", str(out)])
    assert res.exit_code == 0, res.output
    assert "| 11 | 1 |" in res.output and (out / "eval.json").is_file()
    text = out / "11" / "train.txt"
    res = runner.invoke(
        _group(),
        ["audit", "--text", str(text), "--out", str(tmp_path / "a.json"), "--candidates", "1000",
         "--repetitions", "4,16"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "ngram: mean exposure" in res.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["results"]["ngram"]["by_repetition"]["16"]["min_rank"] == 1


@pytest.mark.slow
def test_neural_perplexity_onnx_matches_torch(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from userlibri.lm import neural as N
    from userlibri.lm.neural_export import export_lm
    from userlibri.privacy.accounting import no_privacy_report
    from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer

    sents = _text(SEA, 300, 1) + _text(TOWN, 300, 2)
    tok = train_tokenizer(sents, tmp_path / "tok", TokenizerConfig(vocab_size=40))
    cfg = N.default_config(tok, embed_dim=16, hidden_dim=32, dropout=0.0)
    model = N.train_background(sents, tok, cfg, N.TrainConfig(epochs=1, batch_size=32, progress=False))
    export_lm(model, tmp_path / "nlm", no_privacy_report(len(sents)), int8=False)
    heldout = _text(SEA, 5, 9)
    onnx = ev.neural_perplexity(tmp_path / "nlm", heldout, tok)
    assert onnx.perplexity == pytest.approx(N.evaluate_perplexity(model, heldout, tok), rel=1e-4)
    assert onnx.tokens == sum(len(s.split()) + 1 for s in heldout)
