"""Torch-free configuration of federated LM training (DP-FedAvg on Flower): the hyper-parameters,
the job description shared by the launcher, the Flower ServerApp and the ClientApps (written to
``job.json``), and the fingerprint that a resumed run must match."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from userlibri.constants import DEFAULT_SEED
from userlibri.errors import ConfigError, DataFormatError
from userlibri.fsio import write_json_atomic
from userlibri.lm.neural_config import DEFAULT_MAX_TOKENS

DEFAULT_ROUNDS = 20
DEFAULT_CLIENTS_PER_ROUND = 10
DEFAULT_LOCAL_EPOCHS = 1.0
DEFAULT_LOCAL_BATCH_SIZE = 16
DEFAULT_LOCAL_LR = 2e-3
#: Client optimizers: Adam (fresh state each round) or plain SGD, as Andrew et al. (2021) use.
LOCAL_OPTIMIZERS = ("adam", "sgd")
#: Server optimizer: the new global model is ``global + server_lr * v`` with the momentum buffer
#: ``v = server_momentum * v + noisy averaged update`` (DP-FedAvgM, Andrew et al. use 0.9 and 1.0).
#: The defaults (0, 1) are plain FedAvg.
DEFAULT_SERVER_MOMENTUM = 0.0
DEFAULT_SERVER_LR = 1.0
DEFAULT_NOISE_MULTIPLIER = 0.5
#: Andrew et al. (2021) start the adaptive clip at 0.1 and move it with a geometric rate of 0.2.
DEFAULT_INITIAL_CLIP = 0.1
DEFAULT_TARGET_QUANTILE = 0.5
DEFAULT_CLIP_LR = 0.2
#: Seconds the server waits for a round's replies; clients that miss it count as failed.
DEFAULT_ROUND_TIMEOUT = 3600.0
CLIP_MODES = ("fixed", "adaptive")
RUN_MODES = ("simulation", "deployment")
#: Flower simulation-engine backends: Ray (Flower's own) or the in-process one (``federated_app``).
SIMULATION_BACKENDS = ("ray", "inprocess")
JOB_VERSION = 1
#: Fields that do not change what is trained, so a resumed run may change them.
UNFINGERPRINTED = ("rounds", "threads", "parallel", "eval_every", "round_timeout")


@dataclasses.dataclass(frozen=True)
class FederatedConfig:
    """DP-FedAvg settings. Each round samples ``clients_per_round`` clients uniformly; each trains
    the global model on its own text (``local_*``; Adam or SGD); the server clips every update to the
    clip norm (``clip='fixed'``: ``initial_clip`` throughout; ``'adaptive'``: moved each round
    toward the ``target_quantile`` of update norms, Andrew et al. 2021), averages them with equal
    weights and adds Gaussian noise of std ``noise_multiplier * clip / clients_per_round``; the
    noisy average then takes a server step (``server_lr``, ``server_momentum``: post-processing,
    so the privacy guarantee is unchanged)."""

    rounds: int = DEFAULT_ROUNDS
    clients_per_round: int = DEFAULT_CLIENTS_PER_ROUND
    local_epochs: float = DEFAULT_LOCAL_EPOCHS
    local_batch_size: int = DEFAULT_LOCAL_BATCH_SIZE
    local_lr: float = DEFAULT_LOCAL_LR
    local_optimizer: Literal["adam", "sgd"] = "adam"
    server_lr: float = DEFAULT_SERVER_LR
    server_momentum: float = DEFAULT_SERVER_MOMENTUM
    max_tokens: int = DEFAULT_MAX_TOKENS
    clip: Literal["fixed", "adaptive"] = "adaptive"
    #: Total noise multiplier z. With adaptive clipping part of the privacy budget goes to the
    #: noisy clipped count (std ``clipped_count_stddev``); the update noise is raised so that
    #: the combined mechanism has multiplier z (Andrew et al., Theorem 1).
    noise_multiplier: float = DEFAULT_NOISE_MULTIPLIER
    initial_clip: float = DEFAULT_INITIAL_CLIP
    target_quantile: float = DEFAULT_TARGET_QUANTILE
    clip_lr: float = DEFAULT_CLIP_LR
    clipped_count_stddev: float | None = None  # default: clients_per_round / 20 (Andrew et al.)
    delta: float | None = None  # default: accounting.default_delta(number of clients)
    seed: int = DEFAULT_SEED
    threads: int = 1  # torch threads per client
    parallel: int = 1  # clients trained at once (simulation)
    eval_every: int = 1  # rounds between server-side held-out evaluations (the last is always done)
    round_timeout: float = DEFAULT_ROUND_TIMEOUT

    def count_stddev(self) -> float:
        """The std of the noise on the clipped count (adaptive clipping)."""
        if self.clipped_count_stddev is not None:
            return float(self.clipped_count_stddev)
        return self.clients_per_round / 20.0 if self.noise_multiplier > 0 else 0.0

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible or contradictory values."""
        for name in ("rounds", "clients_per_round", "local_batch_size", "threads", "parallel", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1, found {getattr(self, name)}")
        for name in ("local_epochs", "local_lr", "server_lr", "initial_clip", "clip_lr", "round_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: expected > 0, found {getattr(self, name)}")
        if self.max_tokens < 2:
            raise ConfigError(f"max_tokens: expected >= 2, found {self.max_tokens}")
        if self.local_optimizer not in LOCAL_OPTIMIZERS:
            raise ConfigError(
                f"local_optimizer: expected one of {LOCAL_OPTIMIZERS}, found {self.local_optimizer!r}"
            )
        if not 0 <= self.server_momentum < 1:
            raise ConfigError(f"server_momentum: expected in [0, 1), found {self.server_momentum}")
        if self.clip not in CLIP_MODES:
            raise ConfigError(f"clip: expected one of {CLIP_MODES}, found {self.clip!r}")
        if not self.noise_multiplier >= 0:
            raise ConfigError(f"noise_multiplier: expected >= 0, found {self.noise_multiplier}")
        if not 0.0 < self.target_quantile < 1.0:
            raise ConfigError(f"target_quantile: expected in (0, 1), found {self.target_quantile}")
        if self.delta is not None and not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta: expected in (0, 1), found {self.delta}")
        if self.clipped_count_stddev is not None and self.clipped_count_stddev < 0:
            raise ConfigError(f"clipped_count_stddev: expected >= 0, found {self.clipped_count_stddev}")
        if self.clip == "adaptive" and self.noise_multiplier > 0:
            sb = self.count_stddev()
            if self.noise_multiplier >= 2 * sb:
                raise ConfigError(
                    f"adaptive clipping: noise_multiplier {self.noise_multiplier:g} must be below "
                    f"2 x clipped_count_stddev = {2 * sb:g} (the count noise alone already costs that "
                    f"much privacy); raise clipped_count_stddev (default clients_per_round / 20 = "
                    f"{self.clients_per_round / 20:g}) or clients_per_round, or lower the noise"
                )

    def update_noise_multiplier(self) -> float:
        """The multiplier of the noise on the averaged update (the whole ``noise_multiplier`` for
        fixed clipping; for adaptive clipping ``(z^-2 - (2 sigma_b)^-2)^-1/2``, as Flower does)."""
        z = self.noise_multiplier
        if self.clip == "fixed" or z == 0:
            return z
        return float((z**-2 - (2 * self.count_stddev()) ** -2) ** -0.5)

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must keep (``local_optimizer`` and the server step only when
        not their defaults, so that checkpoints written before those options existed still
        resume)."""
        d = dataclasses.asdict(self)
        for k in UNFINGERPRINTED:
            d.pop(k)
        for k, default in (
            ("local_optimizer", "adam"),
            ("server_lr", DEFAULT_SERVER_LR),
            ("server_momentum", DEFAULT_SERVER_MOMENTUM),
        ):
            if d[k] == default:
                d.pop(k)
        return d


@dataclasses.dataclass(frozen=True)
class FederatedJob:
    """Everything the ServerApp and ClientApps need, as plain data (written to ``job.json``).

    ``clients`` are absolute paths, one text file (one sentence a line) per client; a client's
    partition id is its index here. ``init``: the absolute path of an LM checkpoint (``lm.pt``)
    the first round starts from, or empty for a fresh random model. ``fingerprint`` identifies
    what is trained (config minus ``UNFINGERPRINTED``, model config, tokenizer id, client data
    hash, initial model hash) so that a resume can refuse a checkpoint of another configuration."""

    config: FederatedConfig
    model: dict[str, Any]
    clients: tuple[str, ...]
    tokenizer: str
    work_dir: str
    dev: tuple[str, ...] = ()
    resume: bool = False
    init: str = ""
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: int = JOB_VERSION

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.work_dir) / "checkpoint.pt"

    @property
    def progress_path(self) -> Path:
        return Path(self.work_dir) / "progress.jsonl"

    @property
    def path(self) -> Path:
        return Path(self.work_dir) / "job.json"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["clients"] = list(self.clients)
        d["dev"] = list(self.dev)
        return d

    def save(self) -> Path:
        """Write ``job.json`` into the work directory (atomically); returns its path."""
        write_json_atomic(self.path, self.to_dict())
        return self.path

    @classmethod
    def load(cls, path: str | Path) -> FederatedJob:
        """Read a ``job.json`` written by ``save``."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("version") != JOB_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {JOB_VERSION}")
            d["config"] = FederatedConfig(**d["config"])
            d["clients"] = tuple(d["clients"])
            d["dev"] = tuple(d["dev"])
            return cls(**d)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise DataFormatError(path, "a federated job description (job.json)", str(e)) from e


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable ``key: old -> new`` lines for every differing leaf of two fingerprints."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(fingerprint_differences(a, b, f"{prefix}{k}."))
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} (checkpoint) vs {b!r} (now)")
    return out
