"""Federated training of the background LSTM LM with user-level differential privacy: DP-FedAvg
on Flower, with fixed or adaptive clipping (Andrew et al. 2021), run by Flower's simulation
engine (default) or as real SuperLink/SuperNode processes over loopback (deployment).

Each client is one user's text (one file, one sentence a line). Training starts from a random
model or from ``init`` (an LM pre-trained centrally, e.g. on public text, as deployed systems
do). Every round Flower samples ``clients_per_round`` clients; each trains the global model on
its text (Adam or SGD); the server clips each
update, averages them with equal weights and adds Gaussian noise (Flower's DP strategy wrappers;
``federated_app`` has the apps and the corrections we apply to Flower's adaptive clipping). The
privacy unit is the client: ``privacy.json`` gives the user-level epsilon at delta from
dp-accounting (RDP; PLD too when epsilon is small enough to matter) for the rounds actually run.

Outputs: ``out`` is an LM directory like ``lm neural-train`` writes (``lm.pt``, ``lm.onnx``,
``lm.int8.onnx``, ``privacy.json``, ``train.json`` with the round history), so decoding, ``lm
eval`` and the benchmarks use it unchanged. The work directory (default ``<out>.fed``) holds the
per-round ``checkpoint.pt``, ``job.json``, ``progress.jsonl`` and, in deployment mode, Flower's
state and process logs; ``resume=True`` continues from its checkpoint, which must come from the
same configuration (rounds, threads and evaluation cadence may change).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from userlibri.errors import ConfigError, DataFormatError, ExternalToolError, UserLibriError
from userlibri.lm.federated_config import (
    RUN_MODES,
    SIMULATION_BACKENDS,
    FederatedConfig,
    FederatedJob,
    fingerprint_differences,
)
from userlibri.lm.federated_data import data_fingerprint, list_clients, read_client
from userlibri.privacy import accounting

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
#: Above this RDP epsilon the PLD accountant (slow with little noise) is skipped: no meaningful
#: guarantee is left to tighten.
PLD_MAX_EPSILON = 100.0
#: PLD grid step: 10x faster than dp-accounting's default 1e-4, same epsilon to 4 digits here.
PLD_DISCRETIZATION = 1e-3
FEDERATED_NOTE = (
    "User-level DP: the unit of privacy is one client (user), i.e. neighbouring datasets differ in "
    "all the text of one client. The server is trusted (central DP): it sees each update, clips it "
    "to the clip norm, averages the updates with equal weights and adds Gaussian noise of std "
    "noise_multiplier * clip / clients_per_round. Each round Flower samples clients_per_round of the "
    "dataset_size clients uniformly without replacement; epsilon treats this as Poisson sampling at "
    "rate sample_rate = clients_per_round / clients (the usual DP-FedAvg accounting, McMahan et al. "
    "2018). A round in which only m of the k sampled clients answered is accounted with the smaller "
    "effective noise multiplier z m / k. With adaptive clipping (Andrew et al. 2021) noise_multiplier "
    "is the combined multiplier of the update noise and the noisy clipped count, and clip_norm is the "
    "clip reached after the last round. UserLibri users who read the same book share its text: a "
    "client-level guarantee covers one client file, not every user reading that book."
)


def user_level_epsilons(
    noise_multipliers: Sequence[float], sample_rate: float, delta: float
) -> dict[str, float]:
    """Epsilon at ``delta`` of rounds of the Poisson-subsampled Gaussian mechanism, one noise
    multiplier per round (dp-accounting: ``dp-rdp`` always, ``dp-pld`` when RDP gives at most
    ``PLD_MAX_EPSILON``). A multiplier of 0 gives ``inf``; no rounds give 0."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    if not noise_multipliers:
        return {"dp-rdp": 0.0}
    if min(noise_multipliers) <= 0:
        return {"dp-rdp": math.inf}
    counts = collections.Counter(round(float(z), 12) for z in noise_multipliers)
    event = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(z)), n
            )
            for z, n in sorted(counts.items())
        ]
    )
    with accounting._quiet_opacus():
        rdp = rdp_privacy_accountant.RdpAccountant()
        rdp.compose(event)
        out = {"dp-rdp": float(rdp.get_epsilon(delta))}
        if out["dp-rdp"] <= PLD_MAX_EPSILON:
            pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
            pld.compose(event)
            out["dp-pld"] = float(pld.get_epsilon(delta))
    return out


def privacy_report(
    history: Sequence[dict[str, Any]], config: FederatedConfig, num_clients: int, final_clip: float
) -> accounting.PrivacyReport:
    """``privacy.json`` of a federated run: user-level epsilon for the rounds in ``history``."""
    delta = config.delta if config.delta is not None else accounting.default_delta(num_clients)
    accounting.check_delta(delta, num_clients)
    released = [h for h in history if h["aggregated"] > 0]
    if config.noise_multiplier == 0:
        return accounting.PrivacyReport(
            mechanism="none",
            dataset_size=num_clients,
            unit="user",
            note="Federated averaging without noise: no differential privacy. " + FEDERATED_NOTE,
            steps=len(released),
        )
    q = config.clients_per_round / num_clients
    eps = user_level_epsilons([h["effective_noise_multiplier"] for h in released], q, delta)
    report = accounting.PrivacyReport(
        mechanism="dp-fedavg",
        dataset_size=num_clients,
        unit="user",
        note=FEDERATED_NOTE,
        noise_multiplier=config.noise_multiplier,
        sample_rate=q,
        steps=len(released),
        clip_norm=float(final_clip),
        delta=delta,
        epsilon=eps,
        accountant="dp-rdp",
    )
    report.validate()
    return report


@contextlib.contextmanager
def _backend(name: str) -> Iterator[None]:
    """Flower 1.41's simulation engine always builds ``RayBackend`` (looked up in its module when
    the engine starts); for ``inprocess`` we put our ``InProcessBackend`` in its place meanwhile."""
    if name == "ray":
        yield
        return
    from flwr.server.superlink.fleet.vce.backend import raybackend

    from userlibri.lm.federated_app import InProcessBackend

    saved = raybackend.RayBackend
    raybackend.RayBackend = InProcessBackend  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        raybackend.RayBackend = saved  # type: ignore[misc]


def _run_simulation(job: FederatedJob, progress: Any, backend_name: str) -> None:
    from flwr.simulation import run_simulation

    from userlibri.lm.federated_app import client_app, make_server_app

    cfg = job.config
    flwr_log = logging.getLogger("flwr")
    old = flwr_log.level
    verbose = log.isEnabledFor(logging.DEBUG)
    # Flower logs every message and, for a failing client, a full traceback; we log failures
    # ourselves in one line (RoundLog), so keep Flower quiet unless debugging.
    flwr_log.setLevel(logging.INFO if verbose else logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Flower's state database set-up
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cfg.parallel,
            "num_gpus": 0,
            "logging_level": "WARNING" if verbose else "ERROR",
            "log_to_driver": verbose,
        },
    }
    try:
        with _backend(backend_name):
            run_simulation(
                server_app=make_server_app(job, progress),
                client_app=client_app,
                num_supernodes=len(job.clients),
                backend_config=backend,  # type: ignore[arg-type]
            )
    finally:
        flwr_log.setLevel(old)


def _check_resume(job: FederatedJob) -> dict[str, Any] | None:
    from userlibri.lm.federated_app import load_state

    ckpt = job.checkpoint_path
    if not job.resume:
        if ckpt.exists():
            raise UserLibriError(
                f"{ckpt} exists: pass resume (--resume) to continue that run, or remove {job.work_dir}"
            )
        return None
    if not ckpt.exists():
        raise UserLibriError(f"nothing to resume: no checkpoint at {ckpt}")
    state = load_state(ckpt)
    diffs = fingerprint_differences(state["fingerprint"], job.fingerprint)
    if diffs:
        raise ConfigError(
            f"{ckpt} was written by a run with another configuration; it cannot be resumed with "
            "this one:\n  " + "\n  ".join(diffs)
        )
    return state


def prepare_job(
    data: str | Path,
    tokenizer: str | Path,
    work_dir: str | Path,
    config: FederatedConfig,
    model_overrides: dict[str, Any] | None = None,
    dev: Sequence[str | Path] = (),
    resume: bool = False,
    init: str | Path | None = None,
) -> FederatedJob:
    """Validate the inputs (clients, tokenizer, model, initial model, dev text) and describe the
    job. ``init``: an LM directory or ``lm.pt`` to start from (its architecture; any
    ``model_overrides`` must agree with it)."""
    from userlibri.lm import neural
    from userlibri.text.tokenizer import Tokenizer

    config.validate()
    clients = list_clients(data)
    n = len(clients)
    if config.clients_per_round > n:
        raise ConfigError(
            f"clients_per_round: expected at most the {n} clients in {data}, found {config.clients_per_round}"
        )
    sizes = [len(read_client(f)) for f in clients]
    empty = [f.name for f, s in zip(clients, sizes, strict=True) if s == 0]
    if len(empty) == n:
        raise DataFormatError(data, "at least one client file with sentences", f"all {n} files empty")
    if empty:
        log.warning(
            "%d of %d clients have no data (%s): when sampled they fail and are left out of the round",
            len(empty),
            n,
            ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else ""),
        )
    for p in dev:
        if not read_client(p):
            raise DataFormatError(p, "held-out sentences", "an empty file")
    tok = Tokenizer.load(tokenizer)
    init_path, init_hash = None, None
    if init is not None:
        init_path, model_config = _init_checkpoint(init, model_overrides or {})
        neural._check_tokenizer(model_config, tok)
        init_hash = hashlib.sha256(init_path.read_bytes()).hexdigest()
    else:
        model_config = neural.default_config(tok, **(model_overrides or {}))
    if model_config.tie_weights:
        raise ConfigError(
            "federated training with tie_weights is not supported (the tied weight would be averaged twice)"
        )
    fingerprint = {
        "config": config.fingerprint(),
        "model": dataclasses.asdict(model_config),
        "data": data_fingerprint(clients),
    }
    if init_hash is not None:  # absent for a random start (checkpoints of earlier versions match)
        fingerprint["init_sha256"] = init_hash
    return FederatedJob(
        config=config,
        model=dataclasses.asdict(model_config),
        clients=tuple(str(f.resolve()) for f in clients),
        tokenizer=str(tok.path.resolve()),
        work_dir=str(Path(work_dir).resolve()),
        dev=tuple(str(Path(p).resolve()) for p in dev),
        resume=resume,
        init=str(init_path.resolve()) if init_path is not None else "",
        fingerprint=fingerprint,
    )


def _init_checkpoint(init: str | Path, overrides: dict[str, Any]) -> tuple[Path, Any]:
    """The ``lm.pt`` of ``init`` (a directory or the file) and its architecture; raises
    ``ConfigError`` when ``overrides`` ask for another one."""
    from userlibri.lm import neural
    from userlibri.lm.neural_pipeline import CHECKPOINT_FILE as LM_FILE

    path = Path(init)
    path = path / LM_FILE if path.is_dir() else path
    if not path.is_file():
        raise DataFormatError(path, "an LM checkpoint (lm.pt) to start from", "no such file")
    model, _ = neural.load_checkpoint(path)
    config = model.config
    diffs = [
        f"{k}: {getattr(config, k)!r} (--init) vs {v!r} (asked)"
        for k, v in sorted(overrides.items())
        if getattr(config, k) != v
    ]
    if diffs:
        raise ConfigError(
            f"the model options disagree with the initial model {path}:\n  " + "\n  ".join(diffs)
        )
    return path, config


def _progress_printer(total: int, start: int, enabled: bool) -> tuple[Any, Any]:
    bar = tqdm(total=total, initial=start, desc="federated rounds", unit="round", disable=not enabled)

    def show(entry: dict[str, Any]) -> None:
        fields = {
            "clients": f"{entry['aggregated']}/{entry['sampled']}",
            "clip": f"{entry['clip']:.3g}",
        }
        if "loss" in entry:
            fields["loss"] = f"{entry['loss']:.3f}"
        if "dev_perplexity" in entry:
            fields["dev ppl"] = f"{entry['dev_perplexity']:.1f}"
        bar.update(1)
        bar.set_postfix(fields)
        log.info("round %d/%d: %s", entry["round"], total, ", ".join(f"{k} {v}" for k, v in fields.items()))

    return bar, show


def train_federated(
    data: str | Path,
    tokenizer: str | Path,
    out: str | Path,
    config: FederatedConfig | None = None,
    model_overrides: dict[str, Any] | None = None,
    dev: Sequence[str | Path] = (),
    mode: str = "simulation",
    backend: str = "ray",
    resume: bool = False,
    work_dir: str | Path | None = None,
    int8: bool = True,
    progress: bool = True,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train the LM with DP-FedAvg over the clients in ``data`` (``*.txt``, one client each);
    write the LM directory ``out`` (atomically) and return its ``train.json`` content.

    ``mode``: ``simulation`` (Flower's simulation engine; ``backend`` ``ray``, Flower's default,
    or ``inprocess``: clients run one at a time in this process, no Ray start-up) or
    ``deployment`` (SuperLink + SuperNode processes over loopback). ``init``: start from this LM
    (directory or ``lm.pt``, e.g. one pre-trained centrally on public text) instead of a random
    model."""
    from userlibri.lm import neural
    from userlibri.lm.federated_app import load_state
    from userlibri.lm.neural_pipeline import _write_dir

    config = config or FederatedConfig()
    if mode not in RUN_MODES:
        raise ConfigError(f"mode: expected one of {RUN_MODES}, found {mode!r}")
    if backend not in SIMULATION_BACKENDS:
        raise ConfigError(f"backend: expected one of {SIMULATION_BACKENDS}, found {backend!r}")
    out = Path(out)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".fed")
    job = prepare_job(data, tokenizer, work, config, model_overrides, dev, resume, init)
    state = _check_resume(job)
    done = int(state["round"]) if state else 0
    work.mkdir(parents=True, exist_ok=True)
    job.save()
    job.progress_path.unlink(missing_ok=True)
    start = time.perf_counter()
    if done < config.rounds:
        log.info(
            "DP-FedAvg (%s clipping, z=%g) of %d clients, %d per round, rounds %d-%d, %s mode",
            config.clip,
            config.noise_multiplier,
            len(job.clients),
            config.clients_per_round,
            done + 1,
            config.rounds,
            mode,
        )
        bar, show = _progress_printer(config.rounds, done, progress)
        try:
            if mode == "simulation":
                _run_simulation(job, show, backend)
            else:
                from userlibri.lm.federated_deploy import run_deployment

                run_deployment(job, show)
        finally:
            bar.close()
    if not job.checkpoint_path.exists():
        raise ExternalToolError(
            f"the federated run wrote no checkpoint ({job.checkpoint_path}); see the log above"
        )
    state = load_state(job.checkpoint_path)
    if int(state["round"]) < config.rounds:
        raise ExternalToolError(
            f"the federated run stopped after round {state['round']} of {config.rounds}; "
            f"continue it with resume (--resume) from {job.checkpoint_path}"
        )
    model = neural.LstmLM(neural.NeuralLMConfig(**job.model))
    model.load_state_dict(state["state_dict"])
    model.eval()
    history = list(state["history"])
    report = privacy_report(history, config, len(job.clients), float(state["clip"]))
    dev_ppl = [h["dev_perplexity"] for h in history if "dev_perplexity" in h]
    info: dict[str, Any] = {
        "kind": "federated",
        "mode": mode if mode == "deployment" else f"simulation ({backend})",
        "model_config": job.model,
        "federated_config": dataclasses.asdict(config),
        "clients": len(job.clients),
        "client_files": [Path(c).name for c in job.clients],
        "parameters": neural.num_parameters(model),
        "train_seconds": time.perf_counter() - start,
        "tokenizer": job.tokenizer,
        "init": job.init or None,
        "final_clip": float(state["clip"]),
        "epsilon": None if report.mechanism == "none" else report.epsilon_value,
        "delta": report.delta,
        "initial_dev_perplexity": state.get("initial_dev_perplexity"),
        "history": history,
        "work_dir": str(work),
    }
    if dev_ppl:
        info["dev_perplexity"] = dev_ppl[-1]
    info = _write_dir(out, model, report, info, int8)
    log.info(
        "federated LM -> %s: %d rounds, epsilon %s at delta %s",
        out,
        len(history),
        "inf (no noise)" if info["epsilon"] is None else f"{info['epsilon']:.3g}",
        report.delta,
    )
    return info
