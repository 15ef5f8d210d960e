"""Privacy accounting for DP-SGD (Poisson-subsampled Gaussian mechanism) and the privacy report.

Accountants are looked up by name in a small registry (duplicates and unknown names are rejected):

- ``prv``: Opacus' PRV accountant (Gopi et al. 2021), numerically tight; our primary accountant.
- ``rdp``: Opacus' Renyi-DP accountant (Mironov et al.), an upper bound that is looser than PRV.
- ``dp-rdp``: Google's dp-accounting RDP accountant, an independent implementation of ``rdp``.
- ``dp-pld``: Google's dp-accounting privacy-loss-distribution accountant, the peer of ``prv``.

The report cross-checks the Opacus numbers against dp-accounting: ``rdp`` ~ ``dp-rdp`` and
``prv`` ~ ``dp-pld`` should agree within a few percent; a larger gap is logged as a warning.

``noise_for_epsilon`` inverts ``epsilon`` by bisection over the noise multiplier (epsilon falls
monotonically as the noise grows). A target is *unreachable* when it is not positive, or when even
the largest noise we allow (``DEFAULT_MAX_NOISE``) leaves epsilon above it; the error then states
the smallest achievable epsilon. We also refuse a ``delta`` that is not below ``1 / n``
(``check_delta``): a larger delta permits releasing a whole example in the clear.

Opacus and dp-accounting are imported lazily, so reading a ``privacy.json`` needs neither.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.errors import DataFormatError, UserLibriError, missing_dependency
from userlibri.fsio import write_json_atomic

logger = logging.getLogger(__name__)

#: An accountant maps (noise_multiplier, sample_rate, steps, delta) to epsilon.
AccountantFn = Callable[[float, float, int, float], float]

DEFAULT_ACCOUNTANT = "prv"
#: Accountants computed for every report (the Opacus pair, then their dp-accounting peers).
REPORT_ACCOUNTANTS = ("prv", "rdp", "dp-pld", "dp-rdp")
#: Pairs that must agree (Opacus, dp-accounting) and the relative tolerance for the agreement.
CROSS_CHECK_PAIRS = (("rdp", "dp-rdp"), ("prv", "dp-pld"))
CROSS_CHECK_RTOL = 0.03
#: The largest noise multiplier ``noise_for_epsilon`` will return.
DEFAULT_MAX_NOISE = 100.0
#: The smallest noise multiplier ``noise_for_epsilon`` considers (less gives no useful privacy).
DEFAULT_MIN_NOISE = 0.1
#: Bisection stops when the bracket on the noise multiplier is this tight (relative).
DEFAULT_NOISE_RTOL = 1e-3
#: Mechanisms a report may describe.
MECHANISMS = ("none", "dp-sgd", "dp-fedavg")
UNIT_NOTE = (
    "The unit of privacy is one training sentence: neighbouring datasets differ in one sentence. "
    "UserLibri users share books (the LM text is per book), so every user reading a book has the "
    "same LM text; a sentence-level guarantee says nothing about the book as a whole, and a "
    "book-level guarantee (one book = one unit) would cover all users reading it."
)
DELTA_RULE = "delta < 1/n (n = number of training sentences)"
REPORT_VERSION = 1

_ACCOUNTANTS: dict[str, AccountantFn] = {}


def register_accountant(name: str, fn: AccountantFn, *, force: bool = False) -> None:
    """Register an accountant under ``name``; a duplicate name is an error unless ``force``."""
    if name in _ACCOUNTANTS and not force:
        raise UserLibriError(f"accountant {name!r} is already registered")
    _ACCOUNTANTS[name] = fn


def get_accountant(name: str) -> AccountantFn:
    """The accountant registered as ``name``."""
    try:
        return _ACCOUNTANTS[name]
    except KeyError:
        raise UserLibriError(
            f"unknown accountant {name!r}; expected one of {', '.join(sorted(_ACCOUNTANTS))}"
        ) from None


def available_accountants() -> tuple[str, ...]:
    """Names of the registered accountants, sorted."""
    return tuple(sorted(_ACCOUNTANTS))


@contextlib.contextmanager
def _quiet_opacus() -> Iterator[None]:
    # Opacus' RDP analysis warns for every low order that does not converge; the order is then
    # simply excluded from the minimum, so the warnings carry no information for our users.
    # (dp-accounting logs the same through absl.)
    loggers = [logging.getLogger(n) for n in ("opacus.accountants.analysis.rdp", "opacus", "absl")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, old, strict=True):
            lg.setLevel(level)


def _opacus_accountant(kind: str) -> AccountantFn:
    def fn(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
        try:
            from opacus.accountants import PRVAccountant, RDPAccountant
        except ImportError as e:  # pragma: no cover - opacus is in the train extra
            raise missing_dependency("opacus", "pip install 'userlibri[train]'") from e
        acc = PRVAccountant() if kind == "prv" else RDPAccountant()
        acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
        with _quiet_opacus():
            return float(acc.get_epsilon(delta=delta))

    return fn


def _dp_accounting_accountant(kind: str) -> AccountantFn:
    def fn(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
        try:
            import dp_accounting
            from dp_accounting.pld import pld_privacy_accountant
            from dp_accounting.rdp import rdp_privacy_accountant
        except ImportError as e:  # pragma: no cover - dp-accounting is in the train extra
            raise missing_dependency("dp_accounting", "pip install 'userlibri[train]'") from e
        acc = (
            pld_privacy_accountant.PLDAccountant()
            if kind == "pld"
            else rdp_privacy_accountant.RdpAccountant()
        )
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                float(sample_rate), dp_accounting.GaussianDpEvent(float(noise_multiplier))
            ),
            int(steps),
        )
        with _quiet_opacus():
            acc.compose(event)
            return float(acc.get_epsilon(delta))

    return fn


register_accountant("prv", _opacus_accountant("prv"))
register_accountant("rdp", _opacus_accountant("rdp"))
register_accountant("dp-pld", _dp_accounting_accountant("pld"))
register_accountant("dp-rdp", _dp_accounting_accountant("rdp"))


def _check_params(sample_rate: float, steps: int, delta: float) -> None:
    if not 0.0 < sample_rate <= 1.0:
        raise UserLibriError(f"sample rate must be in (0, 1], found {sample_rate}")
    if steps < 0:
        raise UserLibriError(f"steps must be >= 0, found {steps}")
    if not 0.0 < delta < 1.0:
        raise UserLibriError(f"delta must be in (0, 1), found {delta}")


def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> float:
    """Epsilon at ``delta`` of ``steps`` Poisson-subsampled Gaussian steps (DP-SGD).

    A noise multiplier of 0 gives ``inf`` (no privacy); 0 steps give 0.
    """
    fn = get_accountant(accountant)
    _check_params(sample_rate, steps, delta)
    if noise_multiplier < 0:
        raise UserLibriError(f"noise multiplier must be >= 0, found {noise_multiplier}")
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    return fn(noise_multiplier, sample_rate, steps, delta)


def _epsilon_or_inf(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    # With very little noise the numerical accountants (PRV, PLD) may overflow or try to allocate
    # huge grids; such a noise level is far too small for any sensible target, so count it as inf.
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return epsilon(noise_multiplier, sample_rate, steps, delta, accountant)
    except (MemoryError, OverflowError, ValueError, FloatingPointError):
        return math.inf


def _bisect_noise(
    target: float, lo: float, hi: float, q: float, steps: int, delta: float, accountant: str, rtol: float
) -> float:
    # Invariant: eps(lo) > target >= eps(hi).
    while hi / lo > 1.0 + rtol:
        mid = math.sqrt(lo * hi)
        if _epsilon_or_inf(mid, q, steps, delta, accountant) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def noise_for_epsilon(
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = DEFAULT_ACCOUNTANT,
    *,
    max_noise: float = DEFAULT_MAX_NOISE,
    rtol: float = DEFAULT_NOISE_RTOL,
) -> float:
    """The smallest noise multiplier (within ``rtol``) whose epsilon at ``delta`` is <= the target.

    Bisection on log(sigma) over [``DEFAULT_MIN_NOISE``, ``max_noise``] with the fast and robust
    ``rdp`` accountant; for another accountant the RDP answer (an upper bound: RDP is never tighter
    than PRV/PLD) seeds a narrow bracket, because the numerical accountants are slow, or blow up,
    far from the answer. Raises ``UserLibriError`` if the target is not positive, or if even
    ``max_noise`` gives an epsilon above the target (the message states that smallest epsilon).
    """
    get_accountant(accountant)
    _check_params(sample_rate, steps, delta)
    if not target_epsilon > 0 or math.isnan(target_epsilon):
        raise UserLibriError(f"target epsilon must be > 0, found {target_epsilon}")
    if steps == 0:
        return 0.0
    q, t, d = sample_rate, steps, delta
    hi = float(max_noise)
    if epsilon(hi, q, t, d, "rdp") > target_epsilon:
        eps_hi = epsilon(hi, q, t, d, accountant)
        if eps_hi > target_epsilon:
            raise UserLibriError(
                f"privacy target unreachable: epsilon {target_epsilon:g} at delta {d:g} with sample "
                f"rate {q:g} over {t} steps needs more noise than the maximum noise multiplier "
                f"{max_noise:g}; the smallest achievable epsilon is {eps_hi:.4g} ({accountant}). "
                "Train fewer steps, use a smaller sampling rate, or accept a larger epsilon."
            )
    else:
        lo = DEFAULT_MIN_NOISE
        if epsilon(lo, q, t, d, "rdp") <= target_epsilon:
            hi = lo
        else:
            hi = _bisect_noise(target_epsilon, lo, hi, q, t, d, "rdp", rtol)
    if accountant == "rdp":
        return hi
    while _epsilon_or_inf(hi, q, t, d, accountant) > target_epsilon:  # PRV error margins
        if hi >= max_noise:
            raise UserLibriError(
                f"privacy target unreachable: epsilon {target_epsilon:g} ({accountant}) needs more "
                f"noise than the maximum noise multiplier {max_noise:g}"
            )
        hi = min(hi * 1.1, max_noise)
    lo = hi
    while lo > DEFAULT_MIN_NOISE:
        lo = max(lo * 0.8, DEFAULT_MIN_NOISE)
        if _epsilon_or_inf(lo, q, t, d, accountant) > target_epsilon:
            return _bisect_noise(target_epsilon, lo, hi, q, t, d, accountant, rtol)
        hi = lo
    return hi


def default_delta(dataset_size: int) -> float:
    """A delta well below ``1/n``: the power of ten at or below ``1 / (10 n)``."""
    if dataset_size < 1:
        raise UserLibriError(f"dataset size must be >= 1, found {dataset_size}")
    return 10.0 ** math.floor(math.log10(1.0 / (10.0 * dataset_size)))


def check_delta(delta: float, dataset_size: int) -> None:
    """Refuse a delta that is not below ``1/n``: it would allow leaking one example in the clear."""
    if not 0.0 < delta < 1.0 / dataset_size:
        raise UserLibriError(
            f"delta must be in (0, 1/n) = (0, {1.0 / dataset_size:.3g}) for n = {dataset_size} "
            f"sentences, found {delta:g}; the suggested value is {default_delta(dataset_size):g}"
        )


def individual_epsilons(
    norm_ratios: np.ndarray | Sequence[float],
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    bins: int = 50,
) -> np.ndarray:
    """Per-example epsilons (Yu et al. 2023, "Individual privacy accounting for DP-SGD").

    ``norm_ratios[i]`` is example i's clipped gradient norm divided by the clip bound, in [0, 1]
    (take its maximum over the steps where it was sampled: a conservative estimate). Example i then
    sees an effective noise multiplier ``sigma / ratio`` and its RDP is that of the subsampled
    Gaussian with that noise. Ratios are rounded *up* to a grid of ``bins`` values, so each
    epsilon is an upper bound for its example. These numbers describe the run, not a release-level
    guarantee: the gradient norms themselves depend on the data.
    """
    ratios = np.clip(np.asarray(norm_ratios, dtype=np.float64), 0.0, 1.0)
    if ratios.ndim != 1:
        raise UserLibriError(f"norm ratios must be a 1-d array, found shape {ratios.shape}")
    grid = np.ceil(ratios * bins) / bins
    out = np.zeros_like(grid)
    try:
        from opacus.accountants.analysis import rdp as rdp_analysis
        from opacus.accountants.rdp import RDPAccountant
    except ImportError as e:  # pragma: no cover
        raise missing_dependency("opacus", "pip install 'userlibri[train]'") from e
    orders = RDPAccountant.DEFAULT_ALPHAS
    for value in np.unique(grid):
        if value <= 0.0:
            continue
        with _quiet_opacus():
            rdp = rdp_analysis.compute_rdp(
                q=sample_rate, noise_multiplier=noise_multiplier / value, steps=steps, orders=orders
            )
            eps, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
        out[grid == value] = float(eps)
    return out


def summarize_individual(epsilons: np.ndarray) -> dict[str, float]:
    """Percentiles (p10 ... max) and mean of per-example epsilons, for the report."""
    eps = np.asarray(epsilons, dtype=np.float64)
    if eps.size == 0:
        return {}
    qs = {"p10": 10, "p25": 25, "p50": 50, "p75": 75, "p90": 90, "p99": 99}
    summary = {k: float(np.percentile(eps, q)) for k, q in qs.items()}
    summary["max"] = float(eps.max())
    summary["mean"] = float(eps.mean())
    summary["n"] = float(eps.size)
    return summary


@dataclasses.dataclass(frozen=True)
class PrivacyReport:
    """What a trained LM promises about its training text; serialised as ``privacy.json``.

    ``epsilon`` maps accountant name -> epsilon at ``delta`` (empty for mechanism ``none``).
    ``sample_rate`` is the Poisson sampling rate (expected batch size / n); ``steps`` counts
    optimizer steps. ``individual`` holds percentiles of per-example epsilons, when computed.
    """

    mechanism: str
    dataset_size: int
    unit: str = "sentence"
    note: str = UNIT_NOTE
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int = 0
    epochs: float = 0.0
    clip_norm: float | None = None
    delta: float | None = None
    target_epsilon: float | None = None
    epsilon: Mapping[str, float] = dataclasses.field(default_factory=dict)
    accountant: str = DEFAULT_ACCOUNTANT
    delta_rule: str = DELTA_RULE
    individual: Mapping[str, float] | None = None
    version: int = REPORT_VERSION

    def validate(self) -> None:
        """Check the fields are consistent; raises ``UserLibriError``."""
        if self.mechanism not in MECHANISMS:
            raise UserLibriError(f"mechanism must be one of {MECHANISMS}, found {self.mechanism!r}")
        if self.dataset_size < 0:
            raise UserLibriError(f"dataset size must be >= 0, found {self.dataset_size}")
        if self.mechanism != "none":
            for name in ("noise_multiplier", "sample_rate", "clip_norm", "delta"):
                if getattr(self, name) is None:
                    raise UserLibriError(f"a {self.mechanism} report needs {name}")
            if self.accountant not in self.epsilon:
                raise UserLibriError(
                    f"report has no epsilon for its accountant {self.accountant!r}; "
                    f"found {sorted(self.epsilon)}"
                )

    @property
    def epsilon_value(self) -> float:
        """Epsilon from the primary accountant (``inf`` when there is no DP mechanism)."""
        if self.mechanism == "none":
            return math.inf
        return float(self.epsilon[self.accountant])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["epsilon"] = dict(self.epsilon)
        d["individual"] = dict(self.individual) if self.individual is not None else None
        return d

    def to_json(self) -> str:
        """Compact, key-sorted JSON (used as ONNX metadata)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> PrivacyReport:
        """Build a report from ``to_dict`` output; unknown or missing fields name ``source``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise DataFormatError(source, f"privacy report fields {sorted(fields)}", f"unknown {unknown}")
        missing = sorted(k for k in ("mechanism", "dataset_size") if k not in data)
        if missing:
            raise DataFormatError(
                source, "privacy report fields mechanism, dataset_size", f"missing {missing}"
            )
        try:
            report = cls(**data)
            report.validate()
        except (TypeError, UserLibriError) as e:
            raise DataFormatError(source, "a valid privacy report", str(e)) from e
        return report

    def save(self, path: str | Path) -> None:
        """Write ``privacy.json`` atomically."""
        self.validate()
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PrivacyReport:
        """Read a ``privacy.json``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataFormatError(path, "JSON", f"invalid JSON ({e.msg})", line=e.lineno) from e
        if not isinstance(data, dict):
            raise DataFormatError(path, "a JSON object", type(data).__name__)
        return cls.from_dict(data, source=str(path))


def all_epsilons(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountants: Sequence[str] = REPORT_ACCOUNTANTS,
) -> dict[str, float]:
    """Epsilon from each named accountant."""
    return {a: epsilon(noise_multiplier, sample_rate, steps, delta, a) for a in accountants}


def cross_check(epsilons: Mapping[str, float], rtol: float = CROSS_CHECK_RTOL) -> dict[str, float]:
    """Relative gaps between each Opacus accountant and its dp-accounting peer; warns past ``rtol``."""
    gaps: dict[str, float] = {}
    for a, b in CROSS_CHECK_PAIRS:
        if a in epsilons and b in epsilons and math.isfinite(epsilons[a]) and epsilons[b] > 0:
            gap = abs(epsilons[a] - epsilons[b]) / epsilons[b]
            gaps[f"{a}/{b}"] = gap
            if gap > rtol:
                logger.warning(
                    "accountants disagree: %s eps %.4g vs %s eps %.4g (%.1f%% apart, tolerance %.1f%%)",
                    a,
                    epsilons[a],
                    b,
                    epsilons[b],
                    100 * gap,
                    100 * rtol,
                )
    return gaps


def dp_sgd_report(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    clip_norm: float,
    delta: float,
    dataset_size: int,
    epochs: float = 0.0,
    target_epsilon: float | None = None,
    accountants: Sequence[str] = REPORT_ACCOUNTANTS,
    accountant: str = DEFAULT_ACCOUNTANT,
    individual: Mapping[str, float] | None = None,
    mechanism: str = "dp-sgd",
) -> PrivacyReport:
    """A report for a DP-SGD run, with epsilon from every accountant, cross-checked."""
    check_delta(delta, dataset_size)
    if clip_norm <= 0:
        raise UserLibriError(f"clip norm must be > 0, found {clip_norm}")
    names = tuple(accountants) if accountant in accountants else (accountant, *accountants)
    eps = all_epsilons(noise_multiplier, sample_rate, steps, delta, names)
    cross_check(eps)
    report = PrivacyReport(
        mechanism=mechanism,
        dataset_size=dataset_size,
        noise_multiplier=float(noise_multiplier),
        sample_rate=float(sample_rate),
        steps=int(steps),
        epochs=float(epochs),
        clip_norm=float(clip_norm),
        delta=float(delta),
        target_epsilon=None if target_epsilon is None else float(target_epsilon),
        epsilon=eps,
        accountant=accountant,
        individual=individual,
    )
    report.validate()
    return report


def no_privacy_report(dataset_size: int, steps: int = 0, epochs: float = 0.0) -> PrivacyReport:
    """A report for plain (non-private) training: no formal guarantee."""
    return PrivacyReport(mechanism="none", dataset_size=dataset_size, steps=steps, epochs=epochs)


def privacy_table(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    dataset_size: int | None = None,
    accountants: Sequence[str] = REPORT_ACCOUNTANTS,
) -> dict[str, Any]:
    """Epsilon from every accountant plus the cross-check gaps (``privacy-report``'s table)."""
    if dataset_size is not None:
        check_delta(delta, dataset_size)
    eps = all_epsilons(noise_multiplier, sample_rate, steps, delta, accountants)
    return {
        "noise_multiplier": noise_multiplier,
        "sample_rate": sample_rate,
        "steps": steps,
        "delta": delta,
        "dataset_size": dataset_size,
        "epsilon": eps,
        "cross_check": cross_check(eps),
    }
