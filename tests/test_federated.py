"""Federated LM training (DP-FedAvg on Flower): the corrected adaptive clipping, an in-process
3-client run through Flower's simulation engine (clip norm toward the target quantile, loss
falls, privacy.json, LM directory), failing and empty clients, resume and its refusals, client
splitting, the CLI, and (slow) the Ray backend and deployment mode's processes on loopback."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr")
pytest.importorskip("onnxscript")

from click.testing import CliRunner  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping, FedAvg  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from userlibri.cli.lm_federated import federated, federated_clients  # noqa: E402
from userlibri.errors import ConfigError, DataFormatError, UserLibriError  # noqa: E402
from userlibri.lm import federated as F  # noqa: E402
from userlibri.lm import federated_app as A  # noqa: E402
from userlibri.lm.federated_config import FederatedConfig  # noqa: E402
from userlibri.lm.federated_data import _groups  # noqa: E402
from userlibri.privacy import accounting  # noqa: E402
from userlibri.privacy.accounting import PrivacyReport  # noqa: E402
from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer  # noqa: E402

WORDS = "THE A MAN WOMAN DOG CAT SAW HEARD FOUND LIKED BIG SMALL RED OLD HOUSE GARDEN RIVER".split()
#: Small model, small noise, quick clients: the run must show learning in two rounds.
MODEL = ["--embed-dim", "16", "--hidden-dim", "24", "--dropout", "0"]
TINY = dict(embed_dim=16, hidden_dim=24, dropout=0.0)


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(n)]


def write_clients(root, n: int, per_client: int = 30):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"user{i}.txt").write_text("\n".join(sentences(per_client, i)) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(
        sentences(1200, 99), tmp_path_factory.mktemp("tok"), TokenizerConfig(vocab_size=40)
    )


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "dev.txt"
    path.write_text("\n".join(sentences(40, 1234)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run3(tok, dev, tmp_path_factory):
    """``lm federated``: 3 clients, 2 rounds, adaptive clipping from far below the update norms,
    in-process simulation backend."""
    root = tmp_path_factory.mktemp("run3")
    data = write_clients(root / "clients", 3)
    out = root / "lm"
    args = ["--data", data, "--tokenizer", tok.path, "--out", out, "--dev", dev, "--rounds", "2"]
    args += ["--clients-per-round", "3", "--local-lr", "0.02", "--local-batch-size", "8"]
    args += ["--noise-multiplier", "0.05", "--clip", "adaptive", "--initial-clip", "0.02"]
    args += ["--backend", "inprocess", "--no-int8", "--no-progress", *MODEL]
    result = CliRunner().invoke(federated, [str(a) for a in args], catch_exceptions=False)
    return root, out, result


@pytest.fixture()
def flower_task(monkeypatch):
    """Messages outside a Flower run need a task identity."""
    for k in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, k, 1)


def _reply(update: np.ndarray) -> Message:
    instr = Message(
        content=RecordDict({"config": ConfigRecord({})}), dst_node_id=7, message_type=MessageType.TRAIN
    )
    content = RecordDict(
        {"arrays": ArrayRecord([update.astype(np.float32)]), "metrics": MetricRecord({"weight": 1.0})}
    )
    return Message(content=content, reply_to=instr)


def _adaptive(clip: float, z: float = 0.0, k: int = 3, sb: float = 0.0) -> A.AdaptiveClipping:
    s = A.AdaptiveClipping(FedAvg(weighted_by_key="weight"), z, k, clip, 0.5, 0.2, sb)
    s.current_arrays = ArrayRecord([np.zeros(4, dtype=np.float32)])
    return s


def test_adaptive_clip_moves_toward_the_target_quantile(flower_task) -> None:
    norms = [1.0, 2.0, 3.0]
    updates = [np.full(4, n / 2.0) for n in norms]  # L2 norm n
    low = _adaptive(0.1)  # every update clipped: the clip must grow by exp(0.2 * 0.5)
    low.aggregate_train(1, [_reply(u) for u in updates])
    assert low.clipping_norm == pytest.approx(0.1 * math.exp(0.1))
    high = _adaptive(10.0)  # none clipped: the clip must shrink
    high.aggregate_train(1, [_reply(u) for u in updates])
    assert high.clipping_norm == pytest.approx(10.0 * math.exp(-0.1))
    # Iterated, it settles around the median norm.
    for _ in range(60):
        low.aggregate_train(1, [_reply(u) for u in updates])
    assert 1.0 < low.clipping_norm < 3.0
    # Flower's own class (1.41/1.42) moves the other way; if this fails, Flower fixed it and
    # AdaptiveClipping's rule override can go.
    flower = DifferentialPrivacyServerSideAdaptiveClipping(FedAvg(weighted_by_key="weight"), 0.0, 3, 0.1)
    flower.current_arrays = ArrayRecord([np.zeros(4, dtype=np.float32)])
    flower.aggregate_train(1, [_reply(u) for u in updates])
    assert flower.clipping_norm < 0.1


def test_adaptive_noise_is_scaled_to_the_clip_applied(flower_task) -> None:
    np.random.seed(0)
    k, z, sb, clip = 3, 0.5, 1.0, 0.2
    s = _adaptive(clip, z=z, k=k, sb=sb)
    s.current_arrays = ArrayRecord([np.zeros(200_000, dtype=np.float32)])
    update = np.zeros(200_000)
    update[0] = 5.0  # norm 5: clipped to 0.2, so the clip grows
    arrays, _ = s.aggregate_train(1, [_reply(update) for _ in range(k)])
    noise = arrays.to_numpy_ndarrays()[0][1:]
    z_update = (z**-2 - (2 * sb) ** -2) ** -0.5
    assert s.clipping_norm > clip
    assert noise.std() == pytest.approx(z_update * clip / k, rel=0.02)
    assert s.applied_clip == clip


def test_effective_noise_and_accounting() -> None:
    cfg = FederatedConfig(clients_per_round=10, noise_multiplier=0.8, clip="fixed")
    assert A.effective_noise(cfg, 10) == pytest.approx(0.8)
    assert A.effective_noise(cfg, 5) == pytest.approx(0.4)
    ada = FederatedConfig(clients_per_round=10, noise_multiplier=0.8, clip="adaptive")
    assert ada.update_noise_multiplier() > 0.8
    assert A.effective_noise(ada, 10) == pytest.approx(0.8)  # Andrew et al., Theorem 1
    q, delta = 0.1, 1e-3
    eps = F.user_level_epsilons([1.2] * 10, q, delta)
    assert eps["dp-rdp"] == pytest.approx(accounting.epsilon(1.2, q, 10, delta, "dp-rdp"), rel=1e-9)
    assert eps["dp-pld"] <= eps["dp-rdp"]
    assert F.user_level_epsilons([1.2] * 9 + [0.6], q, delta)["dp-rdp"] > eps["dp-rdp"]
    assert F.user_level_epsilons([], q, delta) == {"dp-rdp": 0.0}
    assert F.user_level_epsilons([0.0], q, delta)["dp-rdp"] == math.inf


def test_config_errors(tok, tmp_path) -> None:
    with pytest.raises(ConfigError, match="clipped_count_stddev"):
        FederatedConfig(clients_per_round=10, noise_multiplier=1.0, clip="adaptive").validate()
    FederatedConfig(clients_per_round=10, noise_multiplier=1.0, clip="fixed").validate()
    with pytest.raises(ConfigError, match="target_quantile"):
        FederatedConfig(target_quantile=1.0).validate()
    data = write_clients(tmp_path / "c", 3)
    with pytest.raises(ConfigError, match="at most the 3 clients"):
        F.prepare_job(data, tok.path, tmp_path / "w", FederatedConfig(clients_per_round=4, clip="fixed"))
    fixed2 = FederatedConfig(clients_per_round=2, clip="fixed")
    with pytest.raises(ConfigError, match="tie_weights"):
        F.prepare_job(data, tok.path, tmp_path / "w", fixed2, {"tie_weights": True})
    with pytest.raises(DataFormatError, match="client text files"):
        F.prepare_job(tmp_path, tok.path, tmp_path / "w", fixed2)
    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(2):
        (empty / f"{i}.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="all 2 files empty"):
        F.prepare_job(empty, tok.path, tmp_path / "w", FederatedConfig(clients_per_round=1, clip="fixed"))
    with pytest.raises(ConfigError, match="mode"):
        F.train_federated(data, tok.path, tmp_path / "o", fixed2, mode="cloud")


def test_three_clients_two_rounds(run3, tok) -> None:
    root, out, result = run3
    assert "3 clients, 2 rounds, 0 failed client updates" in result.output
    info = json.loads((out / "train.json").read_text())
    hist = info["history"]
    assert [h["round"] for h in hist] == [1, 2] and all(h["aggregated"] == 3 for h in hist)
    # The clip starts far below every update norm and moves toward their median each round.
    for h in hist:
        median = float(np.median(h["update_norms"]))
        assert h["clip"] < min(h["update_norms"])
        assert h["clip"] < h["next_clip"] < median
    first, last = hist[0], hist[-1]
    assert abs(math.log(last["next_clip"] / np.median(last["update_norms"]))) < abs(
        math.log(first["clip"] / np.median(first["update_norms"]))
    )
    assert info["final_clip"] == pytest.approx(last["next_clip"])
    # The loss falls: the clients' loss of the incoming global model, and held-out perplexity.
    assert last["loss"] < first["loss"]
    params = info["parameters"]
    for h in hist:  # noise norm = std * sqrt(parameters); the mean clipped update is <= the clip
        assert h["noise_norm"] == pytest.approx(h["noise_std"] * math.sqrt(params))
        assert 0 < h["mean_clipped_update_norm"] <= h["clip"] * (1 + 1e-9)
    assert info["dev_perplexity"] < info["initial_dev_perplexity"]
    # privacy.json: user-level DP over the two rounds.
    report = PrivacyReport.load(out / "privacy.json")
    assert (report.mechanism, report.unit, report.dataset_size, report.steps) == ("dp-fedavg", "user", 3, 2)
    assert report.sample_rate == 1.0 and report.accountant == "dp-rdp"
    assert 0 < report.epsilon_value < math.inf
    assert report.epsilon_value == pytest.approx(
        F.user_level_epsilons([0.05, 0.05], 1.0, report.delta)["dp-rdp"]
    )
    # The same directory layout as `lm neural-train`, usable by the ONNX scorer.
    assert {"lm.pt", "lm.onnx", "privacy.json", "train.json"} <= {p.name for p in out.iterdir()}
    from userlibri.lm.onnx_lm import OnnxNeuralLM

    lm = OnnxNeuralLM(out / "lm.onnx", tok)
    state = lm.start_state()
    logp, _ = lm.score(state, 5)
    assert logp < 0
    assert (root / "lm.fed" / "checkpoint.pt").is_file()


def _tiny_checkpoint(tok, path, seed: int):
    import torch

    from userlibri.lm import neural

    torch.manual_seed(seed)
    model = neural.LstmLM(neural.default_config(tok, **TINY))
    neural.save_checkpoint(model, path)
    return model


@pytest.mark.parametrize("server_lr, server_momentum", [(1.0, 0.0), (2.0, 0.9)])
def test_no_noise_no_clipping_is_plain_fedavg_from_init(tok, tmp_path, server_lr, server_momentum) -> None:
    """Noise 0 and a clip no update reaches: one round must give exactly the mean of the
    clients' locally trained models (times the server learning rate: the momentum buffer starts
    at zero), starting from the --init model (catches a wrong sign, weighting, server step or
    initial model)."""
    import torch

    from userlibri.lm import neural

    data = write_clients(tmp_path / "clients", 3)
    init = _tiny_checkpoint(tok, tmp_path / "init.pt", seed=7)
    cfg = FederatedConfig(
        rounds=1,
        clients_per_round=3,
        noise_multiplier=0.0,
        clip="fixed",
        initial_clip=1e9,
        local_lr=0.01,
        server_lr=server_lr,
        server_momentum=server_momentum,
    )
    info = F.train_federated(
        data,
        tok.path,
        tmp_path / "lm",
        cfg,
        backend="inprocess",
        int8=False,
        progress=False,
        init=tmp_path / "init.pt",
    )
    assert info["init"] == str((tmp_path / "init.pt").resolve())
    (h,) = info["history"]
    assert h["aggregated"] == 3 and h["noise_std"] == 0.0
    locals_ = []
    for pid, f in enumerate(sorted(data.glob("*.txt"))):
        model = neural.LstmLM(init.config)
        model.load_state_dict(init.state_dict())
        encoded = neural.encode_sentences(A.read_client(f), tok, cfg.max_tokens)
        A.client_update(model, encoded, cfg, A.client_seed(cfg.seed, 1, pid))
        locals_.append(model.state_dict())
    fed, _ = neural.load_checkpoint(tmp_path / "lm" / "lm.pt")
    moved = 0.0
    for k, v in fed.state_dict().items():
        mean = torch.stack([sd[k] for sd in locals_]).mean(0)
        start = init.state_dict()[k]
        assert torch.allclose(v, start + server_lr * (mean - start), atol=1e-6), k
        moved = max(moved, float((mean - start).abs().max()))
    assert moved > 1e-3  # the clients did train
    if server_momentum > 0:  # the checkpoint keeps the momentum buffer: the mean update
        velocity = A.load_state(tmp_path / "lm.fed" / "checkpoint.pt")["velocity"]
        assert velocity.keys() == init.state_dict().keys()
        assert all(
            torch.allclose(velocity[k] * server_lr, fed.state_dict()[k] - init.state_dict()[k], atol=1e-5)
            for k in velocity
        )
    # The updates' norms are those of local model - init (the clip never bit).
    expected = sorted(
        float(torch.sqrt(sum(((sd[k] - init.state_dict()[k]) ** 2).sum() for k in sd))) for sd in locals_
    )
    assert h["update_norms"] == pytest.approx(expected, rel=1e-4)
    mean_update = torch.sqrt(
        sum(((fed.state_dict()[k] - init.state_dict()[k]).double() ** 2).sum() for k in locals_[0])
    )
    assert h["mean_clipped_update_norm"] == pytest.approx(float(mean_update) / server_lr, rel=1e-4)
    assert h["noise_norm"] == 0.0


def test_server_step_momentum() -> None:
    import torch

    cur = {"w": torch.tensor([1.0, 2.0])}
    new, v = A.server_step(cur, {"w": torch.tensor([2.0, 2.0])}, None, 0.9, 0.5)
    assert torch.allclose(v["w"], torch.tensor([1.0, 0.0])) and torch.allclose(
        new["w"], torch.tensor([1.5, 2.0])
    )
    new, v = A.server_step(new, {"w": torch.tensor([1.5, 3.5])}, v, 0.9, 0.5)
    assert torch.allclose(v["w"], torch.tensor([0.9, 1.5]))  # 0.9 * [1, 0] + [0, 1.5]
    assert torch.allclose(new["w"], torch.tensor([1.95, 2.75]))
    assert {"server_lr", "server_momentum"}.isdisjoint(FederatedConfig().fingerprint())
    assert FederatedConfig(server_momentum=0.9).fingerprint()["server_momentum"] == 0.9
    for bad in ({"server_momentum": 1.0}, {"server_momentum": -0.1}, {"server_lr": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            FederatedConfig(**bad).validate()  # type: ignore[arg-type]


def test_resume_keeps_server_momentum(tok, tmp_path) -> None:
    """All clients every round and no noise make a run deterministic: 2 rounds straight equal
    1 round, then a resume to 2 (the momentum buffer must come back from the checkpoint)."""
    import torch

    from userlibri.lm import neural

    data = write_clients(tmp_path / "clients", 3)
    cfg = FederatedConfig(
        rounds=2,
        clients_per_round=3,
        noise_multiplier=0.0,
        clip="fixed",
        initial_clip=1e9,
        local_lr=0.02,
        server_momentum=0.9,
    )
    common = dict(model_overrides=TINY, backend="inprocess", int8=False, progress=False)
    F.train_federated(data, tok.path, tmp_path / "straight", cfg, **common)
    one = dataclasses.replace(cfg, rounds=1)
    F.train_federated(data, tok.path, tmp_path / "resumed", one, **common)
    info = F.train_federated(data, tok.path, tmp_path / "resumed", cfg, resume=True, **common)
    assert info["history"][-1]["server_velocity_norm"] > 0
    a = neural.load_checkpoint(tmp_path / "straight" / "lm.pt")[0].state_dict()
    b = neural.load_checkpoint(tmp_path / "resumed" / "lm.pt")[0].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_sgd_client_step_and_fingerprint(tok) -> None:
    """A client SGD step moves the model by -lr * the (norm-clipped) gradient; the optimizer is
    part of the fingerprint only when it is not the default (old checkpoints still resume)."""
    import torch

    from userlibri.lm import neural

    torch.manual_seed(0)
    model = neural.LstmLM(neural.default_config(tok, **TINY))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encoded = neural.encode_sentences(sentences(1, 3), tok, 64)
    data = neural._Sentences(encoded, 64).data
    model.zero_grad()
    neural._batch_loss(model, data).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    gnorm = float(torch.sqrt(sum((g**2).sum() for g in grads.values())))
    cfg = FederatedConfig(local_optimizer="sgd", local_lr=0.1, local_batch_size=1, local_epochs=1.0)
    metrics = A.client_update(model, encoded, cfg, seed=1)
    assert metrics["steps"] == 1.0
    scale = 0.1 * min(1.0, 1.0 / gnorm)  # TrainConfig's grad_clip 1.0
    for n, p in model.named_parameters():
        assert torch.allclose(p.detach(), before[n] - scale * grads[n], atol=1e-6), n
    assert "local_optimizer" not in FederatedConfig().fingerprint()
    assert cfg.fingerprint()["local_optimizer"] == "sgd"
    with pytest.raises(ConfigError, match="local_optimizer"):
        FederatedConfig(local_optimizer="lion").validate()  # type: ignore[arg-type]


def test_init_errors(tok, tmp_path) -> None:
    data = write_clients(tmp_path / "clients", 2)
    _tiny_checkpoint(tok, tmp_path / "init.pt", seed=1)
    cfg = FederatedConfig(clients_per_round=2, clip="fixed")
    with pytest.raises(ConfigError, match=r"hidden_dim: 24 \(--init\) vs 32 \(asked\)"):
        F.prepare_job(data, tok.path, tmp_path / "w", cfg, {"hidden_dim": 32}, init=tmp_path / "init.pt")
    job = F.prepare_job(data, tok.path, tmp_path / "w", cfg, {"hidden_dim": 24}, init=tmp_path / "init.pt")
    assert job.model["hidden_dim"] == 24 and len(job.fingerprint["init_sha256"]) == 64
    with pytest.raises(DataFormatError, match="lm.pt"):
        F.prepare_job(data, tok.path, tmp_path / "w", cfg, init=tmp_path)
    other = train_tokenizer(sentences(300, 5), tmp_path / "tok2", TokenizerConfig(vocab_size=40))
    with pytest.raises(UserLibriError, match="tokenizer mismatch"):
        F.prepare_job(data, other.path, tmp_path / "w", cfg, init=tmp_path / "init.pt")


def test_failing_and_empty_clients_are_left_out(tok, tmp_path, monkeypatch, caplog) -> None:
    data = write_clients(tmp_path / "clients", 4)
    (data / "user3.txt").write_text("", encoding="utf-8")  # a client with no data
    real = A._client_data

    def crash_user1(job, path):
        if path.name == "user1.txt":
            raise RuntimeError("disk vanished mid-round")
        return real(job, path)

    monkeypatch.setattr(A, "_client_data", crash_user1)
    cfg = FederatedConfig(rounds=1, clients_per_round=4, noise_multiplier=0.3, clip="fixed", initial_clip=1.0)
    with caplog.at_level("WARNING"):
        info = F.train_federated(
            data, tok.path, tmp_path / "lm", cfg, TINY, backend="inprocess", int8=False, progress=False
        )
    (h,) = info["history"]
    assert (h["sampled"], h["aggregated"]) == (4, 2)
    assert any("disk vanished mid-round" in r for r in h["failed"])
    assert any("empty file" in r for r in h["failed"])
    assert "1 of 4 clients have no data (user3.txt)" in caplog.text
    assert "disk vanished mid-round" in caplog.text
    # The noise was sized for 4 updates but 2 were averaged: accounted at z * 2 / 4.
    assert h["effective_noise_multiplier"] == pytest.approx(0.15)
    report = PrivacyReport.load(tmp_path / "lm" / "privacy.json")
    assert report.epsilon_value == pytest.approx(F.user_level_epsilons([0.15], 1.0, report.delta)["dp-rdp"])


def test_resume(run3, tok, dev, tmp_path) -> None:
    root, out, _ = run3
    data = root / "clients"
    work = tmp_path / "work"
    shutil.copytree(root / "lm.fed", work)
    cfg = FederatedConfig(
        rounds=3,
        clients_per_round=3,
        local_lr=0.02,
        local_batch_size=8,
        noise_multiplier=0.05,
        initial_clip=0.02,
    )
    common = dict(
        model_overrides=TINY, dev=[dev], backend="inprocess", work_dir=work, int8=False, progress=False
    )
    # Without resume an existing checkpoint is not overwritten.
    with pytest.raises(UserLibriError, match="pass resume"):
        F.train_federated(data, tok.path, tmp_path / "lm", cfg, **common)
    # Another configuration: refused, naming what differs.
    other = dataclasses.replace(cfg, noise_multiplier=0.1)
    with pytest.raises(ConfigError, match=r"noise_multiplier: 0\.05 \(checkpoint\) vs 0\.1 \(now\)"):
        F.train_federated(data, tok.path, tmp_path / "lm", other, resume=True, **common)
    _tiny_checkpoint(tok, tmp_path / "init.pt", seed=3)
    with pytest.raises(ConfigError, match="init_sha256"):
        F.train_federated(
            data, tok.path, tmp_path / "lm", cfg, resume=True, init=tmp_path / "init.pt", **common
        )
    changed = write_clients(tmp_path / "changed", 3, per_client=31)
    with pytest.raises(ConfigError, match="data.sha256"):
        F.train_federated(changed, tok.path, tmp_path / "lm", cfg, resume=True, **common)
    with pytest.raises(UserLibriError, match="nothing to resume"):
        F.train_federated(
            data, tok.path, tmp_path / "lm", cfg, resume=True, **{**common, "work_dir": tmp_path / "none"}
        )
    # The same configuration with more rounds continues from round 2.
    info = F.train_federated(data, tok.path, tmp_path / "lm", cfg, resume=True, **common)
    assert [h["round"] for h in info["history"]] == [1, 2, 3]
    before = json.loads((out / "train.json").read_text())["history"]
    assert info["history"][:2] == before
    assert PrivacyReport.load(tmp_path / "lm" / "privacy.json").steps == 3


def test_groups_cut_chapters() -> None:
    sents = [f"S{i}" for i in range(23)]
    owner = [0] * 3 + [1] * 4 + [2] * 12 + [3] * 4  # chapter 2 is long, the last run is short
    groups = _groups(sents, owner, target=5)
    assert [g[0] for g in groups] == [[0, 1], [2], [2], [3]]
    assert [len(g[1]) for g in groups] == [7, 5, 7, 4]
    assert [s for g in groups for s in g[1]] == sents


def test_federated_clients_cli(tmp_path) -> None:
    from userlibri.data.books import Book, BookCorpus, Chapter

    corpus = BookCorpus(root=tmp_path / "corpus")
    for book_id in ("1", "2", "3"):
        chapters = tuple(
            Chapter(f"CHAPTER {c}", tuple(f"Sentence {c} {i} of book {book_id} is here." for i in range(6)))
            for c in range(5)
        )
        corpus.add(Book(book_id=book_id, title=f"Book {book_id}", author="A", chapters=chapters))
    out = tmp_path / "fed"
    args = ["--corpus", corpus.root, "--exclude", "3", "--out", out, "--sentences-per-client", "12"]
    result = CliRunner().invoke(federated_clients, [str(a) for a in [*args, "--heldout-clients", "1"]])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "clients.json").read_text())
    assert {c["book"] for c in summary["clients"] + summary["heldout"]} == {"1", "2"}
    # 5 chapters of 6 sentences a book: chapters 0-1, 2-3, 4 (half the target is not merged)
    assert [len(c["chapters"]) for c in summary["clients"] + summary["heldout"]].count(1) == 2
    assert len(summary["clients"]) + len(summary["heldout"]) == 6
    files = sorted((out / "clients").glob("*.txt"))
    assert len(files) == 5 and (out / "heldout.txt").is_file()
    lines = (out / "all_train.txt").read_text().splitlines()
    assert len(lines) == summary["train_sentences"] == sum(c["sentences"] for c in summary["clients"])
    assert not set(lines) & set((out / "heldout.txt").read_text().splitlines())


@pytest.mark.slow
def test_ray_simulation_backend(tok, tmp_path) -> None:
    data = write_clients(tmp_path / "clients", 2)
    cfg = FederatedConfig(rounds=1, clients_per_round=2, noise_multiplier=0.1, clip="fixed", initial_clip=1.0)
    info = F.train_federated(
        data, tok.path, tmp_path / "lm", cfg, TINY, backend="ray", int8=False, progress=False
    )
    assert info["mode"] == "simulation (ray)" and info["history"][0]["aggregated"] == 2


@pytest.mark.slow
def test_deployment_starts_and_stops_processes_on_loopback(tok, tmp_path, monkeypatch) -> None:
    from userlibri.lm import federated_deploy as D

    started: list[int] = []
    real = D.run_deployment
    monkeypatch.setattr(D, "run_deployment", lambda job, progress: real(job, progress, started=started))
    data = write_clients(tmp_path / "clients", 2)
    cfg = FederatedConfig(
        rounds=1, clients_per_round=2, noise_multiplier=0.1, clip="adaptive", clipped_count_stddev=1.0
    )
    info = F.train_federated(
        data, tok.path, tmp_path / "lm", cfg, TINY, mode="deployment", int8=False, progress=False
    )
    assert info["mode"] == "deployment" and info["history"][0]["aggregated"] == 2
    assert len(started) == 4  # SuperLink, 2 SuperNodes, flwr run
    for pid in started:  # every process group we started is gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    logs = tmp_path / "lm.fed" / "deployment"
    assert {"superlink.log", "supernode-0.log", "supernode-1.log", "flwr-run.log"} <= {
        p.name for p in logs.iterdir()
    }
