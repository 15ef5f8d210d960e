"""The Flower apps of federated LM training: a ClientApp that trains the global LSTM LM on one
client's text, and a ServerApp that runs DP-FedAvg with Flower's own strategies.

Server: Flower's ``FedAvg`` (uniform weights: every client's update counts the same, which the
DP sensitivity needs) wrapped in Flower's ``DifferentialPrivacyServerSideFixedClipping`` or
``DifferentialPrivacyServerSideAdaptiveClipping``, wrapped in ``RoundLog``, run by Flower's
``Strategy.start`` (the round loop is Flower's). The ``evaluate_fn`` hook that Flower calls after
every round evaluates on held-out text and writes the checkpoint.

Corrections to Flower 1.41's adaptive clipping (``AdaptiveClipping``; 1.42 has the same code):

1. Flower counts *clipped* updates but applies the update rule of Andrew et al. (2021) that is
   written for the *unclipped* count, ``C <- C exp(-lr (b - target))``, so the clip moves away
   from the target quantile (all updates clipped -> the clip shrinks further). We apply the
   paper's rule with ``b`` = the noisy fraction of unclipped updates and ``target`` = the target
   quantile of update norms (0.5: the median).
2. Flower updates the clip before adding the noise, so the noise is scaled to the *next* round's
   clip, not to the clip that bounded this round's updates (too little noise whenever the clip
   shrinks). We scale it to the clip applied.

And one to its handling of failures (``RoundLog``): Flower's DP wrappers skip aggregation for the
whole round when any reply is an error. ``RoundLog`` logs failed clients and aggregates the rest;
the average then has ``m < k`` terms while the noise was sized for ``k``, so the round's effective
noise multiplier is ``z * m / k`` and the accounting (``federated.privacy_report``) uses it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no phoning home (and no network here)
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.clientapp.client_app import ClientAppException  # noqa: E402
from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import (  # noqa: E402
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)

from userlibri.errors import DataFormatError, UserLibriError  # noqa: E402
from userlibri.fsio import atomic_path  # noqa: E402
from userlibri.lm import neural  # noqa: E402
from userlibri.lm.federated_config import FederatedConfig, FederatedJob  # noqa: E402
from userlibri.lm.federated_data import read_client  # noqa: E402
from userlibri.lm.neural_config import NeuralLMConfig, TrainConfig  # noqa: E402
from userlibri.text.tokenizer import Tokenizer  # noqa: E402

log = logging.getLogger(__name__)

WEIGHT_KEY = "weight"
CHECKPOINT_VERSION = 1
#: A node config entry that names a SuperNode's own data file (deployment); else partition-id.
DATA_FILE_KEY = "data-file"


# ----------------------------------------------------------------------------------- client side


_CACHE: dict[tuple[Any, ...], tuple[Tokenizer, list[list[int]]]] = {}


def _client_data(job: FederatedJob, path: Path) -> list[list[int]]:
    """The client's encoded sentences (cached per process: a Ray actor serves many rounds)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, job.tokenizer, job.config.max_tokens)
    if key not in _CACHE:
        tok = Tokenizer.load(job.tokenizer)
        _CACHE[key] = (tok, neural.encode_sentences(read_client(path), tok, job.config.max_tokens))
    return _CACHE[key][1]


def client_seed(seed: int, server_round: int, partition: int) -> int:
    """A client's training seed for a round (independent of which other clients were sampled)."""
    return int(np.random.SeedSequence([seed, server_round, partition]).generate_state(1)[0])


@torch.no_grad()
def mean_loss(model: neural.LstmLM, encoded: list[list[int]], max_tokens: int, batch_size: int = 64) -> float:
    """Mean over sentences of each sentence's mean token NLL (the training loss, no dropout)."""
    model.eval()
    data = neural._Sentences(encoded, max_tokens)
    total = 0.0
    for i in range(0, len(data), batch_size):
        batch = data.data[i : i + batch_size]
        total += float(neural._batch_loss(model, batch)) * batch.shape[0]
    return total / max(1, len(data))


def _train_sgd(model: neural.LstmLM, encoded: list[list[int]], tc: TrainConfig) -> tuple[int, float]:
    """Plain SGD over shuffled minibatches (``neural._train_plain``'s loop with SGD for Adam:
    the update is then a sum of gradients, so its norm follows the gradients, Andrew et al.'s
    setting); returns (steps, seconds)."""
    gen = neural._seed_everything(tc.seed)
    data = neural._Sentences(encoded, tc.max_tokens)
    loader = torch.utils.data.DataLoader(data, batch_size=tc.batch_size, shuffle=True, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr)
    total = max(1, math.ceil(tc.epochs * len(loader)))
    model.train()
    steps, start = 0, time.perf_counter()
    while steps < total:
        for _, batch in loader:
            loss = neural._batch_loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            steps += 1
            if steps >= total:
                break
    model.eval()
    return steps, time.perf_counter() - start


def client_update(
    model: neural.LstmLM, encoded: list[list[int]], config: FederatedConfig, seed: int
) -> dict[str, float]:
    """Train ``model`` in place on one client's sentences (``local_optimizer``: ``neural``'s Adam
    loop with fresh optimizer state, or SGD); returns its metrics: the incoming model's loss on
    this text, steps, sentences."""
    before = mean_loss(model, encoded, config.max_tokens)
    tc = TrainConfig(
        epochs=config.local_epochs,
        batch_size=config.local_batch_size,
        lr=config.local_lr,
        max_tokens=config.max_tokens,
        seed=seed,
        progress=False,
    )
    if config.local_optimizer == "sgd":
        steps, secs = _train_sgd(model, encoded, tc)
    else:
        steps, secs = neural._train_plain(model, encoded, tc, "client")
    return {"loss": before, "steps": float(steps), "sentences": float(len(encoded)), "seconds": secs}


_JOBS: dict[str, FederatedJob] = {}


def _client_file(job: FederatedJob, context: Context) -> tuple[int, Path]:
    node = context.node_config
    if DATA_FILE_KEY in node:
        return int(node.get("partition-id", -1)), Path(str(node[DATA_FILE_KEY]))
    if "partition-id" not in node:
        raise UserLibriError(f"node config {dict(node)}: expected partition-id or {DATA_FILE_KEY}")
    pid = int(node["partition-id"])
    if not 0 <= pid < len(job.clients):
        raise UserLibriError(f"partition-id {pid}: expected in [0, {len(job.clients)})")
    return pid, Path(job.clients[pid])


client_app = ClientApp()


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    job_path = str(cfg["job"])
    if job_path not in _JOBS:
        _JOBS[job_path] = FederatedJob.load(job_path)
    job = _JOBS[job_path]
    torch.set_num_threads(job.config.threads)
    pid, path = _client_file(job, context)
    encoded = _client_data(job, path)
    if not encoded:
        raise DataFormatError(
            path, "at least one sentence (a client with no data cannot train)", "an empty file"
        )
    model = neural.LstmLM(NeuralLMConfig(**job.model))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(cfg["server-round"]) + int(cfg["round-offset"])
    metrics = client_update(model, encoded, job.config, client_seed(job.config.seed, server_round, pid))
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({WEIGHT_KEY: 1.0, **metrics})}
    )
    return Message(content=content, reply_to=msg)


class InProcessBackend(Backend):
    """A Flower simulation-engine backend that runs each ClientApp call in this process, one at
    a time (Flower's ``Backend`` interface; the engine, its LinkState and message routing stay
    Flower's). Ray's start-up costs a minute or more on a small loaded machine; this costs none."""

    def __init__(self, backend_config: BackendConfig) -> None:
        super().__init__(backend_config)
        self.app_fn: Callable[[], ClientApp] | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self.app_fn = app_fn

    @property
    def num_workers(self) -> int:
        return 1

    def is_worker_idle(self) -> bool:
        return True

    def terminate(self) -> None:
        self.app_fn = None

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        if self.app_fn is None:
            raise RuntimeError("InProcessBackend.process_message before build()")
        # The client seeds the global RNGs; the server's noise comes from numpy's global RNG
        # (Flower's wrappers), so keep the server's stream as it would be with separate processes.
        saved = np.random.get_state(), random.getstate(), torch.get_rng_state()
        try:
            return self.app_fn()(message=message, context=context), context
        except Exception as e:  # reported to the server as an error reply, like Ray's actors do
            raise ClientAppException(str(e)) from e
        finally:
            np.random.set_state(saved[0])
            random.setstate(saved[1])
            torch.set_rng_state(saved[2])


# ----------------------------------------------------------------------------------- server side


class AdaptiveClipping(DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's server-side adaptive clipping with the two corrections in the module docstring.
    ``target_quantile`` is the share of update norms meant to fall below the clip (Andrew et al.'s
    gamma); Flower's ``target_clipped_quantile`` is set to ``1 - target_quantile``."""

    def __init__(
        self,
        strategy: Strategy,
        noise_multiplier: float,
        num_sampled_clients: int,
        initial_clipping_norm: float,
        target_quantile: float,
        clip_norm_lr: float,
        clipped_count_stddev: float,
    ) -> None:
        super().__init__(
            strategy,
            noise_multiplier,
            num_sampled_clients,
            initial_clipping_norm=initial_clipping_norm,
            target_clipped_quantile=1.0 - target_quantile,
            clip_norm_lr=clip_norm_lr,
            clipped_count_stddev=clipped_count_stddev,
        )
        self.target_quantile = target_quantile
        self.applied_clip = initial_clipping_norm
        self.noisy_clipped_fraction: float | None = None

    def _geometric_update(self, clipped_fraction: float) -> None:
        self.applied_clip = self.clipping_norm
        self.noisy_clipped_fraction = clipped_fraction
        unclipped = 1.0 - clipped_fraction
        self.clipping_norm *= math.exp(-self.clip_norm_lr * (unclipped - self.target_quantile))

    def _add_noise_to_aggregated_arrays(self, aggregated: ArrayRecord) -> ArrayRecord:
        following, self.clipping_norm = self.clipping_norm, self.applied_clip
        try:
            return super()._add_noise_to_aggregated_arrays(aggregated)
        finally:
            self.clipping_norm = following


def _short_reason(reason: str, limit: int = 300) -> str:
    """The useful end of a client error (Ray wraps it in a long traceback)."""
    if "Message:" in reason:
        reason = reason.rsplit("Message:", 1)[1]
    lines = [s.strip() for s in reason.replace("\\n", "\n").splitlines() if s.strip().strip("'>")]
    text = lines[-1].strip("'>") if lines else reason
    return text[:limit]


def _norm(update: list[np.ndarray]) -> float:
    return float(math.sqrt(sum(float(np.sum(np.square(u, dtype=np.float64))) for u in update)))


def server_step(
    current: dict[str, torch.Tensor],
    averaged: dict[str, torch.Tensor],
    velocity: dict[str, torch.Tensor] | None,
    momentum: float,
    lr: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The server optimizer (SGD with momentum on the noisy averaged update, DP-FedAvgM):
    ``v = momentum * v + (averaged - current)``, ``new = current + lr * v``; returns
    ``(new, v)``. ``velocity`` None is a zero buffer (the first round)."""
    new, v = {}, {}
    for k, c in current.items():
        d = averaged[k].to(torch.float64) - c.to(torch.float64)
        v[k] = d if velocity is None else momentum * velocity[k].to(torch.float64) + d
        new[k] = (c.to(torch.float64) + lr * v[k]).to(c.dtype)
        v[k] = v[k].to(torch.float32)
    return new, v


class RoundLog(Strategy):
    """The outermost strategy: delegates to the DP strategy, drops failed replies (logged) so a
    round finishes with the clients that answered, applies the server step (``server_step``,
    when not plain FedAvg) to the DP average, and keeps per-round statistics."""

    def __init__(self, dp: Strategy, config: FederatedConfig) -> None:
        super().__init__()
        self.dp = dp
        self.config = config
        self.current: ArrayRecord | None = None
        #: The server momentum buffer (checkpointed), None before the first server step.
        self.velocity: dict[str, torch.Tensor] | None = None
        self.sampled = 0
        self.stats: dict[str, Any] = {}

    def summary(self) -> None:
        self.dp.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = arrays
        msgs = list(self.dp.configure_train(server_round, arrays, config, grid))
        self.sampled = len(msgs)
        return msgs

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        ok, failed = [], []
        current = self.current.to_numpy_ndarrays() if self.current is not None else []
        norms = []
        k = self.config.clients_per_round
        clip = getattr(self.dp, "clipping_norm", self.config.initial_clip)
        clipped_sum: list[np.ndarray] | None = None
        for r in replies:
            if r.has_error():
                failed.append(_short_reason(str(r.error.reason)))
                continue
            arrays = next(iter(r.content.array_records.values())).to_numpy_ndarrays()
            update = [a.astype(np.float64) - c for a, c in zip(arrays, current, strict=True)]
            norm = _norm(update)
            if norm == 0.0:  # Flower's clipping divides by the norm
                failed.append("an all-zero update")
                continue
            ok.append(r)
            norms.append(norm)
            scale = min(1.0, clip / norm)  # statistics only: Flower's wrapper does the clipping
            if clipped_sum is None:
                clipped_sum = [u * scale for u in update]
            else:
                for acc, u in zip(clipped_sum, update, strict=True):
                    acc += u * scale
        missing = self.sampled - len(replies)
        if missing > 0:
            failed.extend(["no reply before the round timeout"] * missing)
        for reason in failed:
            log.warning("round %d: a client failed and is left out of the round: %s", server_round, reason)
        self.stats = {
            "sampled": self.sampled,
            "aggregated": len(ok),
            "failed": failed,
            "clip": clip,
            "update_norms": sorted(norms),
        }
        if not ok:
            log.warning("round %d: no client answered; the global model is unchanged", server_round)
            self.stats.update(effective_noise_multiplier=math.inf, noise_std=0.0, next_clip=clip)
            return None, None
        arrays, metrics = self.dp.aggregate_train(server_round, ok)
        z_update = float(getattr(self.dp, "noise_multiplier", 0.0))
        self.stats["noise_std"] = z_update * clip / k
        # The signal the noise competes with: the mean clipped update (before noise), and the
        # noise's expected norm, std * sqrt(parameters).
        if clipped_sum is not None:  # always set when ok is not empty
            self.stats["mean_clipped_update_norm"] = _norm(clipped_sum) / len(ok)
            self.stats["noise_norm"] = self.stats["noise_std"] * math.sqrt(sum(u.size for u in clipped_sum))
        self.stats["effective_noise_multiplier"] = effective_noise(self.config, len(ok))
        self.stats["next_clip"] = getattr(self.dp, "clipping_norm", clip)
        if isinstance(self.dp, AdaptiveClipping):
            self.stats["noisy_clipped_fraction"] = self.dp.noisy_clipped_fraction
        if metrics is not None:
            self.stats["loss"] = float(metrics["loss"])
        cfg = self.config
        plain = cfg.server_momentum == 0 and cfg.server_lr == 1
        if arrays is not None and self.current is not None and not plain:
            new, self.velocity = server_step(
                self.current.to_torch_state_dict(),
                arrays.to_torch_state_dict(),
                self.velocity,
                cfg.server_momentum,
                cfg.server_lr,
            )
            self.stats["server_velocity_norm"] = _norm([v.numpy() for v in self.velocity.values()])
            arrays = ArrayRecord(new)
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # held-out evaluation runs on the server (evaluate_fn)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None


def effective_noise(config: FederatedConfig, aggregated: int) -> float:
    """The noise multiplier of a round that averaged ``aggregated`` of the sampled updates: the
    noise was sized for ``clients_per_round`` terms; with adaptive clipping it combines with the
    count noise as in Andrew et al. (Theorem 1)."""
    z = config.update_noise_multiplier() * aggregated / config.clients_per_round
    if z == 0:
        return 0.0
    sb = config.count_stddev()
    if config.clip == "adaptive" and sb > 0:
        return float((z**-2 + (2 * sb) ** -2) ** -0.5)
    return float(z)


def build_strategy(config: FederatedConfig, num_clients: int, clip: float) -> RoundLog:
    """FedAvg (uniform weights, ``clients_per_round`` sampled of ``num_clients``) in Flower's DP
    wrapper, in ``RoundLog``. ``clip``: the (current) clip norm."""
    k = config.clients_per_round
    fedavg = FedAvg(
        fraction_train=k / num_clients,
        fraction_evaluate=0.0,
        min_train_nodes=k,
        min_evaluate_nodes=0,
        min_available_nodes=num_clients,
        weighted_by_key=WEIGHT_KEY,
    )
    dp: Strategy
    if config.clip == "fixed":
        dp = DifferentialPrivacyServerSideFixedClipping(fedavg, config.noise_multiplier, clip, k)
    else:
        dp = AdaptiveClipping(
            fedavg,
            config.noise_multiplier,
            k,
            initial_clipping_norm=clip,
            target_quantile=config.target_quantile,
            clip_norm_lr=config.clip_lr,
            clipped_count_stddev=config.count_stddev(),
        )
    return RoundLog(dp, config)


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(path: Path, job: FederatedJob, model: neural.LstmLM, state: dict[str, Any]) -> None:
    """The per-round checkpoint: model, clip norm, history, RNG states, fingerprint (atomic)."""
    payload = {
        "version": CHECKPOINT_VERSION,
        "fingerprint": job.fingerprint,
        "model_config": job.model,
        "state_dict": model.state_dict(),
        "rng": _rng_state(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``save_state``."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != CHECKPOINT_VERSION:
            raise KeyError(f"version {payload.get('version')!r}, expected {CHECKPOINT_VERSION}")
        for k in ("fingerprint", "state_dict", "round", "clip", "history"):
            payload[k]  # noqa: B018 - presence check
    except (OSError, RuntimeError, KeyError, TypeError, EOFError, AttributeError) as e:
        raise DataFormatError(path, "a federated LM checkpoint", str(e)) from e
    return payload


ProgressFn = Callable[[dict[str, Any]], None]


def run_server(grid: Grid, job: FederatedJob, progress: ProgressFn | None = None) -> None:
    """The ServerApp body: DP-FedAvg rounds until ``job.config.rounds``, resuming from the
    checkpoint when ``job.resume``; a checkpoint and a progress line after every round."""
    cfg = job.config
    torch.set_num_threads(cfg.threads)  # more threads than free cores makes torch crawl
    tok = Tokenizer.load(job.tokenizer)
    dev = [s for p in job.dev for s in read_client(p)]
    if job.resume:
        state = load_state(job.checkpoint_path)
        model = neural.LstmLM(NeuralLMConfig(**job.model))
        model.load_state_dict(state["state_dict"])
        _set_rng_state(state["rng"])
        meta = {k: state[k] for k in ("round", "clip", "history", "initial_dev_perplexity")}
        if state.get("velocity") is not None:
            meta["velocity"] = state["velocity"]
    else:
        torch.manual_seed(cfg.seed)
        model = neural.LstmLM(NeuralLMConfig(**job.model))
        if job.init:
            model.load_state_dict(neural.load_checkpoint(job.init)[0].state_dict())
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        meta = {"round": 0, "clip": cfg.initial_clip, "history": [], "initial_dev_perplexity": None}
    model.eval()
    start = int(meta["round"])
    if start >= cfg.rounds:
        log.info("checkpoint already at round %d of %d: nothing to train", start, cfg.rounds)
        return
    strategy = build_strategy(cfg, len(job.clients), float(meta["clip"]))
    strategy.velocity = meta.get("velocity")
    t0 = time.perf_counter()

    def after_round(local_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        r = start + local_round
        evaluate = bool(dev) and (r % cfg.eval_every == 0 or r == cfg.rounds or local_round == 0)
        if local_round == 0:
            if evaluate and meta["initial_dev_perplexity"] is None:
                meta["initial_dev_perplexity"] = neural.evaluate_perplexity(model, dev, tok)
            return None
        model.load_state_dict(arrays.to_torch_state_dict())
        entry = {"round": r, **strategy.stats, "seconds": time.perf_counter() - t0}
        if evaluate:
            entry["dev_perplexity"] = neural.evaluate_perplexity(model, dev, tok)
        meta["history"].append(entry)
        meta["round"] = r
        meta["clip"] = entry.get("next_clip", meta["clip"])
        if strategy.velocity is not None:
            meta["velocity"] = strategy.velocity
        save_state(job.checkpoint_path, job, model, meta)
        with job.progress_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if progress is not None:
            progress(entry)
        return (
            MetricRecord({"dev-perplexity": entry["dev_perplexity"]}) if "dev_perplexity" in entry else None
        )

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.rounds - start,
        timeout=cfg.round_timeout,
        train_config=ConfigRecord({"job": str(job.path), "round-offset": start}),
        evaluate_fn=after_round,
    )


def make_server_app(job: FederatedJob, progress: ProgressFn | None = None) -> ServerApp:
    """A ServerApp bound to ``job`` (simulation: it runs in this process)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, job, progress)

    return app


#: The deployment ServerApp (``flwr run``): reads the job from the run config key ``job``.
server_app = ServerApp()


@server_app.main()
def _deployment_main(grid: Grid, context: Context) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_server(grid, FederatedJob.load(str(context.run_config["job"])))
