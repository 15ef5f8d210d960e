"""A DP n-gram by sampling a neural LM: deterministic sampling that follows the LM, the n-gram
directory the bench reads, the privacy report carried over, and bad input."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from test_neural_lm import background  # noqa: E402

from userlibri.bench.wer_conditions import Condition, LMLayout  # noqa: E402
from userlibri.errors import ConfigError, DataFormatError, UserLibriError  # noqa: E402
from userlibri.lm import neural as N  # noqa: E402
from userlibri.lm import neural_export as E  # noqa: E402
from userlibri.lm.kenlm_scorer import KenLMWordScorer  # noqa: E402
from userlibri.lm.ngram import NgramConfig, train_ngram  # noqa: E402
from userlibri.lm.onnx_lm import OnnxNeuralLM  # noqa: E402
from userlibri.lm.sampled_ngram import build_sampled_ngram, sample_sentences  # noqa: E402
from userlibri.privacy.accounting import PrivacyReport  # noqa: E402
from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer  # noqa: E402

CORPUS = ["THE CAPTAIN SAW THE WHALE", "A SMALL DOG FOUND THE OLD HOUSE"]
EPSILON = 7.5


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(background(800) + CORPUS * 50, out, TokenizerConfig(vocab_size=40))


@pytest.fixture(scope="module")
def neural_dir(tok, tmp_path_factory):
    """An LSTM LM that learnt the two sentences of CORPUS, exported with a DP-SGD privacy report."""
    cfg = N.default_config(tok, embed_dim=16, hidden_dim=32, num_layers=1, dropout=0.0)
    tc = N.TrainConfig(epochs=4, batch_size=16, lr=2e-2, progress=False, threads=1)
    model = N.train_background(CORPUS * 100, tok, cfg, tc)
    report = PrivacyReport(
        mechanism="dp-sgd",
        dataset_size=200,
        noise_multiplier=1.0,
        sample_rate=0.08,
        steps=50,
        clip_norm=1.0,
        delta=1e-4,
        epsilon={"prv": EPSILON},
        accountant="prv",
    )
    out = tmp_path_factory.mktemp("nlm")
    E.export_lm(model, out, report, int8=False)
    report.save(out / "privacy.json")
    return out


@pytest.fixture(scope="module")
def lm(tok, neural_dir):
    return OnnxNeuralLM(neural_dir / "lm.onnx", tok)


def test_sampling_is_deterministic_per_seed(tok, lm) -> None:
    a, sa = sample_sentences(lm, tok, 30, seed=1, batch=8, progress=False)
    b, _ = sample_sentences(lm, tok, 30, seed=1, batch=8, progress=False)
    c, _ = sample_sentences(lm, tok, 30, seed=2, batch=8, progress=False)
    assert a == b and a != c
    assert sa.requested == 30 and sa.kept + sa.empty + sa.truncated == 30 and sa.tokens > 0


def test_samples_follow_the_lm(tok, lm) -> None:
    samples, _ = sample_sentences(lm, tok, 60, seed=0, progress=False)
    hits = [s for s in samples if s in CORPUS]
    assert len(hits) >= 0.8 * 60 and set(hits) == set(CORPUS)
    # A high temperature flattens the distribution: fewer samples are the training sentences.
    hot, _ = sample_sentences(lm, tok, 60, seed=0, temperature=5.0, progress=False)
    assert sum(s in CORPUS for s in hot) < len(hits)
    # max_tokens shorter than either sentence: every sample runs past it; it is dropped, or kept
    # without its last (maybe cut) word: then whole words that start a training sentence.
    short, stats = sample_sentences(lm, tok, 10, seed=0, max_tokens=4, keep_truncated=False, progress=False)
    assert short == [] and stats.truncated == 10 and stats.kept == 0
    cut, stats = sample_sentences(lm, tok, 10, seed=0, max_tokens=4, progress=False)
    assert stats.truncated == 10 and stats.kept + stats.empty == 10 and stats.kept >= 5
    starts = {" ".join(c.split()[:k]) for c in CORPUS for k in range(1, 4)}
    assert set(cut) <= starts


def test_build_writes_the_bench_layout(tok, neural_dir, tmp_path) -> None:
    bg = train_ngram(background(300, seed=3), tmp_path / "background", NgramConfig(order=3), name="ngram")
    out = tmp_path / "lm" / "1342" / "eps7.5"
    info = build_sampled_ngram(
        neural_dir, tok.path, out, sentences=120, order=3, seed=4, background=bg.arpa, progress=False
    )
    names = {p.name for p in out.iterdir()}
    assert {"ngram.arpa", "ngram.bin", "ngram.json", "mix.arpa", "mix.bin", "mix.json"} <= names
    assert {"privacy.json", "sampled.json", "samples.txt"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    samples = (out / "samples.txt").read_text().splitlines()
    assert len(samples) == info["sampled"]["kept"] > 100
    # The n-gram learnt the sampled sentences: they score far above a shuffled one.
    scorer = KenLMWordScorer(out / "ngram.arpa", tok)
    assert scorer.model.score(CORPUS[0]) > scorer.model.score("WHALE THE SAW CAPTAIN THE") + 2
    # The privacy report is the neural LM's, with the post-processing note.
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["mechanism"] == "dp-sgd" and privacy["epsilon"]["prv"] == EPSILON
    assert privacy["delta"] == 1e-4 and privacy["unit"] == "sentence"
    assert "post-processing" in privacy["note"]
    mix = json.loads((out / "mix.json").read_text())
    assert mix["weights"] == [0.2, 0.8] and "not tuned" in mix["tuned_on"]
    sampled = json.loads((out / "sampled.json").read_text())
    assert sampled["config"]["seed"] == 4 and sampled["sampled"]["requested"] == 120
    # `bench wer` finds it as the book's DP n-gram at epsilon 7.5.
    cond = Condition("offline", "dp-eps7.5", "ngram", 7.5)
    assert LMLayout(ngram_dir=tmp_path / "lm").resolve(cond, "1342") == (out / "mix.bin",)


def test_cli_without_background(tok, neural_dir, tmp_path) -> None:
    from click.testing import CliRunner

    from userlibri.cli.lm_neural import sampled_ngram

    out = tmp_path / "dp"
    args = ["--neural", str(neural_dir), "--tokenizer", str(tok.path), "--out", str(out)]
    res = CliRunner().invoke(sampled_ngram, [*args, "--sentences", "50", "--order", "2", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "sampled sentences kept" in res.output
    assert (out / "ngram.bin").is_file() and not (out / "mix.arpa").exists()


def test_bad_input(tok, lm, neural_dir, tmp_path) -> None:
    with pytest.raises(ConfigError, match="sentences: expected >= 1, found 0"):
        sample_sentences(lm, tok, 0, progress=False)
    with pytest.raises(ConfigError, match="temperature"):
        sample_sentences(lm, tok, 5, temperature=0.0, progress=False)
    with pytest.raises(ConfigError, match="mix_weight"):
        build_sampled_ngram(neural_dir, tok.path, tmp_path / "x", mix_weight=0.0)
    with pytest.raises(DataFormatError, match="lm.onnx or lm.int8.onnx"):
        build_sampled_ngram(tmp_path, tok.path, tmp_path / "x", sentences=5)
    with pytest.raises(DataFormatError, match="background n-gram ARPA"):
        build_sampled_ngram(neural_dir, tok.path, tmp_path / "x", background=tmp_path / "none.arpa")
    other = train_tokenizer(background(300, seed=9), tmp_path / "tok2", TokenizerConfig(vocab_size=30))
    with pytest.raises(UserLibriError, match="tokenizer mismatch"):
        build_sampled_ngram(neural_dir, other.path, tmp_path / "x", sentences=5)
    with pytest.raises(UserLibriError, match="tokenizer mismatch"):
        sample_sentences(lm, other, 5, progress=False)
    assert not (tmp_path / "x").exists()
