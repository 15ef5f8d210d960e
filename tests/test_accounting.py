"""Privacy accounting: accountants agree with each other and with known values; the report round-trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("opacus")
pytest.importorskip("dp_accounting")

from userlibri.errors import DataFormatError, UserLibriError  # noqa: E402
from userlibri.privacy import accounting as acc  # noqa: E402

# NOTES.md: q=0.125, sigma=1.0, 40 steps, delta=1e-5 -> RDP 6.59 (both), PLD 5.79, PRV 5.80.
Q, SIGMA, STEPS, DELTA = 0.125, 1.0, 40, 1e-5


def test_known_values_and_cross_library_agreement() -> None:
    eps = acc.all_epsilons(SIGMA, Q, STEPS, DELTA)
    assert eps["rdp"] == pytest.approx(6.59, abs=0.01)
    assert eps["dp-rdp"] == pytest.approx(6.59, abs=0.01)
    assert eps["dp-pld"] == pytest.approx(5.79, abs=0.02)
    assert eps["prv"] == pytest.approx(5.80, abs=0.02)
    gaps = acc.cross_check(eps)
    assert set(gaps) == {"rdp/dp-rdp", "prv/dp-pld"}
    assert max(gaps.values()) < 0.01
    # PRV/PLD are tighter than RDP.
    assert eps["prv"] < eps["rdp"]


def test_epsilon_edge_cases() -> None:
    assert acc.epsilon(1.0, 0.1, 0, 1e-5) == 0.0
    assert acc.epsilon(0.0, 0.1, 10, 1e-5) == math.inf
    with pytest.raises(UserLibriError, match="sample rate"):
        acc.epsilon(1.0, 1.5, 10, 1e-5)
    with pytest.raises(UserLibriError, match="delta"):
        acc.epsilon(1.0, 0.1, 10, 0.0)
    # More noise, less epsilon; more steps, more epsilon.
    assert acc.epsilon(2.0, 0.1, 100, 1e-5, "rdp") < acc.epsilon(1.0, 0.1, 100, 1e-5, "rdp")
    assert acc.epsilon(1.0, 0.1, 200, 1e-5, "rdp") > acc.epsilon(1.0, 0.1, 100, 1e-5, "rdp")


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    assert set(acc.REPORT_ACCOUNTANTS) <= set(acc.available_accountants())
    with pytest.raises(UserLibriError, match="already registered"):
        acc.register_accountant("rdp", lambda s, q, t, d: 0.0)
    with pytest.raises(UserLibriError, match="unknown accountant 'gdp-x'.*dp-pld"):
        acc.epsilon(1.0, 0.1, 10, 1e-5, "gdp-x")
    acc.register_accountant("test-const", lambda s, q, t, d: 1.25)
    try:
        assert acc.epsilon(1.0, 0.1, 10, 1e-5, "test-const") == 1.25
    finally:
        acc._ACCOUNTANTS.pop("test-const")


@pytest.mark.parametrize(("accountant", "targets"), [("rdp", (1.0, 4.0, 8.0)), ("prv", (4.0,))])
def test_noise_for_epsilon_inverts_epsilon(accountant: str, targets: tuple[float, ...]) -> None:
    q, steps, delta = 0.02, 500, 1e-5
    for target in targets:
        sigma = acc.noise_for_epsilon(target, q, steps, delta, accountant)
        eps = acc.epsilon(sigma, q, steps, delta, accountant)
        assert eps <= target * 1.0001
        # Minimal: a little less noise overshoots the target.
        assert acc.epsilon(sigma * 0.99, q, steps, delta, accountant) > target


def test_noise_for_epsilon_unreachable_states_smallest_epsilon() -> None:
    with pytest.raises(UserLibriError, match=r"smallest achievable epsilon is \d"):
        acc.noise_for_epsilon(1e-4, 1.0, 10_000, 1e-5, "rdp", max_noise=5.0)
    with pytest.raises(UserLibriError, match="must be > 0"):
        acc.noise_for_epsilon(0.0, 0.1, 10, 1e-5)


def test_delta_rule() -> None:
    assert acc.default_delta(8000) == pytest.approx(1e-5)
    assert acc.default_delta(100) == pytest.approx(1e-3)
    acc.check_delta(1e-5, 8000)
    with pytest.raises(UserLibriError, match=r"1/n"):
        acc.check_delta(1e-3, 8000)


def test_report_roundtrip_and_validation(tmp_path) -> None:
    report = acc.dp_sgd_report(
        noise_multiplier=SIGMA,
        sample_rate=Q,
        steps=STEPS,
        clip_norm=1.0,
        delta=DELTA,
        dataset_size=1000,
        epochs=5.0,
        target_epsilon=6.0,
    )
    assert report.epsilon_value == pytest.approx(report.epsilon["prv"])
    assert "share books" in report.note
    path = tmp_path / "privacy.json"
    report.save(path)
    loaded = acc.PrivacyReport.load(path)
    assert loaded == report
    assert json.loads(report.to_json())["mechanism"] == "dp-sgd"
    none = acc.no_privacy_report(10, steps=3)
    assert none.epsilon_value == math.inf
    assert acc.PrivacyReport.from_dict(none.to_dict()) == none
    bad = tmp_path / "bad.json"
    bad.write_text('{"mechanism": "dp-sgd", "dataset_size": 3, "colour": 1}')
    with pytest.raises(DataFormatError, match="bad.json.*colour"):
        acc.PrivacyReport.load(bad)
    bad.write_text('{"mechanism": "dp-sgd", "dataset_size": 3}')
    with pytest.raises(DataFormatError, match="needs noise_multiplier"):
        acc.PrivacyReport.load(bad)
    with pytest.raises(UserLibriError, match="1/n"):
        acc.dp_sgd_report(
            noise_multiplier=1.0, sample_rate=0.1, steps=1, clip_norm=1.0, delta=0.01, dataset_size=1000
        )


def test_individual_epsilons() -> None:
    ratios = np.array([0.0, 0.1, 0.5, 1.0, 1.0])
    eps = acc.individual_epsilons(ratios, SIGMA, Q, STEPS, DELTA)
    assert eps[0] == 0.0
    assert eps[1] < eps[2] < eps[3]
    # The worst case (norm at the clip bound) is the usual RDP epsilon.
    assert eps[3] == pytest.approx(acc.epsilon(SIGMA, Q, STEPS, DELTA, "rdp"), rel=1e-6)
    summary = acc.summarize_individual(eps)
    assert summary["max"] == eps.max() and summary["n"] == 5
