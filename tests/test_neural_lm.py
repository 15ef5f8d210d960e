"""Neural LM: training, personalisation (plain and DP-SGD), ONNX export and the ONNX scorer."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
pytest.importorskip("onnxscript")

from userlibri.errors import ConfigError, UserLibriError  # noqa: E402
from userlibri.lm import neural as N  # noqa: E402
from userlibri.lm import neural_export as E  # noqa: E402
from userlibri.lm.base import LanguageModel  # noqa: E402
from userlibri.lm.onnx_lm import OnnxNeuralLM  # noqa: E402
from userlibri.privacy import accounting  # noqa: E402
from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer  # noqa: E402

WORDS = "THE A MAN WOMAN DOG CAT SAW HEARD FOUND LIKED BIG SMALL RED OLD HOUSE GARDEN RIVER".split()


def background(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


def user_text(n: int, seed: int = 1) -> list[str]:
    """A user whose sentences follow one distinctive pattern."""
    rng = random.Random(seed)
    return [
        f"THE CAPTAIN SAW THE {rng.choice(['WHALE', 'SHIP', 'SEA'])} "
        f"AND THE {rng.choice(['MAN', 'DOG'])} HEARD IT"
        for _ in range(n)
    ]


FAST = N.TrainConfig(epochs=2, batch_size=32, lr=1e-2, progress=False, threads=1)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(background(1500) + user_text(300), out, TokenizerConfig(vocab_size=40))


@pytest.fixture(scope="module")
def bg_model(tok):
    cfg = N.default_config(tok, embed_dim=16, hidden_dim=32, num_layers=2, dropout=0.0)
    return N.train_background(background(600), tok, cfg, FAST)


@pytest.fixture(scope="module")
def exported(bg_model, tmp_path_factory):
    report = accounting.no_privacy_report(600, steps=3)
    return E.export_lm(bg_model, tmp_path_factory.mktemp("onnx"), report)


def test_configs_validate(tok) -> None:
    with pytest.raises(ConfigError, match="hidden_dim"):
        N.default_config(tok, hidden_dim=0)
    with pytest.raises(ConfigError, match="exactly one"):
        N.PrivacyConfig("dp-sgd").validate()
    with pytest.raises(ConfigError, match="epochs"):
        N.TrainConfig(epochs=0).validate()
    with pytest.raises(UserLibriError, match="unknown accountant"):
        N.PrivacyConfig("dp-sgd", noise_multiplier=1.0, accountant="nope").validate()


def test_default_size_fits_on_device(tok) -> None:
    cfg = N.NeuralLMConfig(vocab_size=500, sos_eos_id=1)
    assert 1_000_000 <= N.num_parameters(N.LstmLM(cfg)) <= 3_000_000


def test_background_training_is_deterministic(tok) -> None:
    cfg = N.default_config(tok, embed_dim=8, hidden_dim=8)
    tc = N.TrainConfig(epochs=1, batch_size=16, progress=False, threads=1)
    a = N.train_background(background(64), tok, cfg, tc)
    b = N.train_background(background(64), tok, cfg, tc)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_personalize_lowers_user_perplexity(tok, bg_model) -> None:
    held_out = user_text(20, seed=7)
    before = N.evaluate_perplexity(bg_model, held_out, tok)
    personal, report = N.personalize(bg_model, user_text(200), tok, FAST)
    after = N.evaluate_perplexity(personal, held_out, tok)
    assert after < 0.5 * before
    assert report.mechanism == "none" and report.dataset_size == 200
    # The background model is untouched.
    assert N.evaluate_perplexity(bg_model, held_out, tok) == pytest.approx(before)


def test_too_little_user_text(tok, bg_model) -> None:
    with pytest.raises(UserLibriError, match=r"at least 10 non-empty sentences, found 2"):
        N.personalize(bg_model, ["A DOG", "  ", "A CAT"], tok, FAST)


def test_dp_sgd_epsilon_matches_dp_accounting(tok, bg_model) -> None:
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    sentences = user_text(160)
    tc = N.TrainConfig(epochs=0.5, batch_size=16, lr=1e-2, progress=False, threads=1)
    priv = N.PrivacyConfig("dp-sgd", noise_multiplier=1.1, clip=1.0, delta=1e-4)
    model, report = N.personalize(bg_model, sentences, tok, tc, priv)
    assert report.mechanism == "dp-sgd"
    assert report.sample_rate == pytest.approx(16 / 160) and report.steps == 5
    assert report.noise_multiplier == 1.1 and report.clip_norm == 1.0
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 5
        )
    )
    expected = acc.get_epsilon(1e-4)
    assert report.epsilon_value == pytest.approx(expected, rel=0.01)  # PRV (Opacus) vs PLD
    assert report.epsilon["dp-rdp"] == pytest.approx(report.epsilon["rdp"], rel=0.01)
    ind = report.individual
    assert ind is not None and ind["n"] == 160 and ind["max"] <= report.epsilon["rdp"] * 1.0001
    # Weights changed, and the model is a plain nn.LSTM again (exportable).
    assert isinstance(model.lstm, torch.nn.LSTM)
    assert not torch.equal(model.out.weight, bg_model.out.weight)


def test_dp_sgd_meets_target_epsilon(tok, bg_model) -> None:
    tc = N.TrainConfig(epochs=1, batch_size=16, lr=1e-2, progress=False, threads=1)
    priv = N.PrivacyConfig("dp-sgd", target_epsilon=4.0, individual=False, accountant="rdp")
    _, report = N.personalize(bg_model, user_text(160), tok, tc, priv)
    assert report.delta == pytest.approx(1e-4)  # default: 1/(10 n) rounded down to a power of 10
    assert report.accountant == "rdp" and 3.9 <= report.epsilon_value <= 4.0
    assert report.epsilon["prv"] < report.epsilon["rdp"]
    assert report.target_epsilon == 4.0 and report.individual is None


def test_checkpoint_roundtrip(tok, bg_model, tmp_path) -> None:
    report = accounting.no_privacy_report(600)
    N.save_checkpoint(bg_model, tmp_path / "lm.pt", report)
    model, rep = N.load_checkpoint(tmp_path / "lm.pt")
    assert rep == report and model.config == bg_model.config
    s = background(3, seed=5)
    assert N.sentence_logprobs(model, s, tok) == N.sentence_logprobs(bg_model, s, tok)


def test_onnx_step_matches_torch_over_a_sequence(bg_model, exported) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported["float"]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    seq = rng.integers(0, bg_model.config.vocab_size, size=(4, 12))
    with torch.no_grad():
        logits, _ = bg_model(torch.tensor(seq))
        ref = torch.log_softmax(logits, dim=-1).numpy()
    h = np.zeros((2, 4, 32), np.float32)
    c = np.zeros_like(h)
    for t in range(seq.shape[1]):
        lp, h, c = sess.run(None, {"tokens": seq[:, t].astype(np.int64), "h": h, "c": c})
        assert np.abs(lp - ref[:, t]).max() < 1e-4
    meta = E.read_metadata(exported["float"])
    assert meta["kind"] == "lstm-lm" and meta["tokenizer_id"] == bg_model.config.tokenizer_id
    assert accounting.PrivacyReport.from_dict(__import__("json").loads(meta["privacy"])).mechanism == "none"


def test_onnx_scorer_matches_torch_sentence_logprob(tok, bg_model, exported) -> None:
    lm = OnnxNeuralLM(exported["float"], tok)
    assert isinstance(lm, LanguageModel)
    sents = background(5, seed=9)
    expected = N.sentence_logprobs(bg_model, sents, tok)
    for s, ref in zip(sents, expected, strict=True):
        assert lm.sentence_logprob(tok.encode(s)) == pytest.approx(ref, abs=1e-3)
    # Batched scoring equals one-by-one scoring; a tiny cache (evictions) changes nothing.
    small = OnnxNeuralLM(exported["float"], tok, cache_size=2)
    ids = [tok.encode(s) for s in sents]
    states = [tuple(x[:-1]) for x in ids]
    tokens = [x[-1] for x in ids]
    scores, new_states = lm.score_batch(states, tokens)
    for st, t, sc, ns in zip(states, tokens, scores, new_states, strict=True):
        one, ns1 = small.score(st, t)
        assert one == pytest.approx(sc, abs=1e-5) and ns1 == ns
    assert lm.next_logprobs(states).shape == (5, tok.vocab_size)
    with pytest.raises(UserLibriError, match="outside the LM vocabulary"):
        lm.score((), 10_000)


def test_int8_model_runs_and_is_close(tok, exported) -> None:
    f = OnnxNeuralLM(exported["float"], tok)
    q = OnnxNeuralLM(exported["int8"], tok)
    assert q.meta.precision == "int8"
    assert exported["int8"].stat().st_size < exported["float"].stat().st_size
    for s in background(5, seed=11):
        ids = tok.encode(s)
        a, b = f.sentence_logprob(ids), q.sentence_logprob(ids)
        assert abs(a - b) < 0.05 * abs(a) + 0.5


def test_tokenizer_mismatch_names_both(tok, exported, tmp_path) -> None:
    other = train_tokenizer(background(300, seed=3), tmp_path / "other", TokenizerConfig(vocab_size=30))
    with pytest.raises(UserLibriError, match=r"tokenizer mismatch: .*lm\.onnx.*other"):
        OnnxNeuralLM(exported["float"], other)


def test_onnx_scorer_does_not_import_torch(exported) -> None:
    code = (
        "import sys; from userlibri.lm.onnx_lm import OnnxNeuralLM; "
        f"lm = OnnxNeuralLM({str(exported['float'])!r}); lm.final_score(lm.score((), 3)[1]); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_privacy_report() -> None:
    from click.testing import CliRunner

    from userlibri.cli.lm_neural import privacy_report

    args = ["--noise-multiplier", "1.0", "--sample-rate", "0.125", "--steps", "40", "--delta", "1e-5"]
    res = CliRunner().invoke(privacy_report, args)
    assert res.exit_code == 0, res.output
    assert "prv" in res.output and "6.59" in res.output
    res = CliRunner().invoke(privacy_report, ["--noise-multiplier", "1.0", "--sample-rate", "0.1"])
    assert res.exit_code != 0 and "exactly one of --steps and --epochs" in res.output


@pytest.mark.slow
def test_cli_train_and_personalize_write_lm_dirs(tok, tmp_path) -> None:
    from click.testing import CliRunner

    from userlibri.cli.lm_neural import neural_personalize, neural_train

    bg, user, dev = tmp_path / "bg.txt", tmp_path / "user.txt", tmp_path / "dev.txt"
    bg.write_text("\n".join(background(200)) + "\n")
    user.write_text("\n".join(user_text(100)) + "\n")
    dev.write_text("\n".join(user_text(10, seed=5)) + "\n")
    tiny = ["--embed-dim", "8", "--hidden-dim", "16", "--threads", "1"]
    res = CliRunner().invoke(
        neural_train,
        ["--input", str(bg), "--tokenizer", str(tok.path), "--out", str(tmp_path / "bglm"), *tiny],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "user-lm"
    res = CliRunner().invoke(
        neural_personalize,
        [
            "--background",
            str(tmp_path / "bglm"),
            "--input",
            str(user),
            "--tokenizer",
            str(tok.path),
            "--out",
            str(out),
            "--privacy",
            "dp-sgd",
            "--noise-multiplier",
            "1.0",
            "--epochs",
            "1",
            "--batch-size",
            "20",
            "--dev",
            str(dev),
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "epsilon" in res.output and "dev perplexity" in res.output
    assert {p.name for p in out.iterdir()} == {
        "lm.pt",
        "lm.onnx",
        "lm.int8.onnx",
        "privacy.json",
        "train.json",
        "tokenizer.model",  # the LM's own tokenizer, for word-synchronous fusion under another AM's
    }
    report = accounting.PrivacyReport.load(out / "privacy.json")
    assert report.mechanism == "dp-sgd" and report.steps == 5 and report.dataset_size == 100
    lm = OnnxNeuralLM(out / "lm.int8.onnx", tok)
    assert lm.meta.privacy is not None and lm.meta.privacy["noise_multiplier"] == 1.0
