"""``userlibri bench wer``'s tuning: the coordinate search and the full grid (per condition and per
LM kind), ``--tune-rounds`` and ``--tune-split`` specs, each test split tuned on its own dev users,
and what happens without dev users."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bench_wer_helpers import bench_cli, make_layout

from userlibri.bench.wer_conditions import Condition
from userlibri.errors import ConfigError, UserLibriError


def test_cli_tune_rounds_per_kind_with_one_kind(tmp_path: Path) -> None:
    """``--tune-rounds ngram=0`` with only n-gram LMs: every (weight, bonus) pair of the n-gram
    conditions on dev, and the method is the full grid's alone (no LM tunes the bonus either way)."""
    root, lm = make_layout(tmp_path)
    results, output = bench_cli(tmp_path, root, lm, "--modes", "offline", "--tune-rounds", "ngram=0")
    tun = results["tuning"]["dev"]
    assert tun["method"] == "full grid of weight x bonus"
    assert {len(tun["grid"][n]) for n in tun["grid"]} == {2, 4}  # no LM: the 2 bonuses
    assert "full grid of weight x bonus;" in output and "from bonus" not in output


def test_without_dev_users_tuning_on_a_test_split_is_said(tmp_path: Path) -> None:
    root, lm = make_layout(tmp_path)
    shutil.rmtree(root / "audio_data" / "dev")
    with pytest.raises(UserLibriError, match="no dev split to tune test-clean on.*--tune-split"):
        bench_cli(tmp_path, root, lm, "--modes", "offline")
    with pytest.raises(UserLibriError, match="no 'dev' split to tune on.*--tune-split"):
        bench_cli(tmp_path, root, lm, "--modes", "offline", "--tune-split", "dev")
    results, output = bench_cli(
        tmp_path, root, lm, "--modes", "offline", "--lms", "interpolated", "--tune-split", "test-other"
    )
    assert (
        list(results["splits"]) == ["test-clean"] and results["tuning"]["test-other"]["split"] == "test-other"
    )
    assert "test-other is not reported" in results["notes"][0] and "test-other is not reported" in output
    with pytest.raises(ConfigError, match="cannot be reported"):
        bench_cli(tmp_path, root, lm, "--tune-split", "test-other", "--splits", "test-other")


def test_tuning_is_a_coordinate_search_that_revisits_the_weight() -> None:
    """Weight and bonus trade off: the weight picked at bonus 0 (0.3) is not the best at the bonus
    picked next (1.0), so round 2 moves it (to 0.8) and keeps the bonus; the no-LM condition only
    tunes its bonus (0 is best without an LM here). Points already decoded are not decoded again;
    the largest grid value is flagged."""
    from userlibri.bench.wer_tune import coordinate_search, rounds_text

    def dev_wer(w: float, b: float) -> float:  # best at w = 0.3 + 0.5 b, and better with a bonus
        return 0.4 + 0.5 * (w - 0.3 - 0.5 * b) ** 2 - 0.2 * b

    decoded: list[tuple[str, float, float]] = []

    def evaluate(points, desc):  # noqa: ANN001, ANN202
        out = {}
        for name, pts in points.items():
            for w, b in pts:
                decoded.append((name, w, b))
                out[(name, w, b)] = (dev_wer(w, b), dev_wer(w, b))
        return out

    lm_cond, none_cond = Condition("offline", "personal", "ngram"), Condition("offline")
    conds = [(none_cond.name, none_cond.has_lm), (lm_cond.name, lm_cond.has_lm)]

    def search(rounds: int | dict[str, int]) -> dict:
        per = rounds if isinstance(rounds, dict) else {n: rounds for n, _ in conds}
        method = "; ".join(f"{n}: {rounds_text(r)}" for n, r in sorted(per.items()))
        return coordinate_search(
            "dev", ["u1"], conds, evaluate, lambda n: False, (0.3, 0.5, 0.8), (0.0, 1.0), 0.0, per, method
        )

    record = search(3)
    assert record["chosen"]["offline/ngram/personal"] == {"lm_weight": 0.8, "length_bonus": 1.0}
    assert record["chosen"]["offline/none"] == {"lm_weight": 0.0, "length_bonus": 0.0}
    lm_points = [(w, b) for n, w, b in decoded if n == "offline/ngram/personal"]
    # Round 1: weights at bonus 0, bonuses at 0.3; round 2: weights at bonus 1 (0.3 already done),
    # bonuses at 0.8 (both decoded already); round 3 is not needed (the bonus stayed 1.0).
    assert lm_points == [(0.3, 0.0), (0.5, 0.0), (0.8, 0.0), (0.3, 1.0), (0.5, 1.0), (0.8, 1.0)]
    assert len(set(lm_points)) == len(lm_points)  # nothing decoded twice
    assert record["at_grid_edge"] == {"offline/ngram/personal": ["lm_weight", "length_bonus"]}
    decoded.clear()  # one round: the old procedure, the weight stays where bonus 0 put it
    assert search(1)["chosen"]["offline/ngram/personal"] == {"lm_weight": 0.3, "length_bonus": 1.0}
    decoded.clear()  # rounds 0: the full grid, every pair once, and its optimum
    record = search(0)
    assert record["chosen"]["offline/ngram/personal"] == {"lm_weight": 0.8, "length_bonus": 1.0}
    assert record["chosen"]["offline/none"] == {"lm_weight": 0.0, "length_bonus": 0.0}
    assert sorted(decoded) == sorted(
        [("offline/ngram/personal", w, b) for w in (0.3, 0.5, 0.8) for b in (0.0, 1.0)]
        + [("offline/none", 0.0, b) for b in (0.0, 1.0)]
    )
    assert record["method"] == (
        "offline/ngram/personal: full grid of weight x bonus; offline/none: full grid of weight x bonus"
    )
    decoded.clear()  # rounds per condition: the full grid for one, the coordinate search (3) for the other
    lm2 = Condition("streaming", "personal", "ngram").name
    conds.append((lm2, True))
    record = search({lm2: 0, "offline/ngram/personal": 3, "offline/none": 2})
    full = sorted([w, b] for w in (0.3, 0.5, 0.8) for b in (0.0, 1.0))
    assert sorted(p for n, *p in decoded if n == lm2) == full
    assert [(w, b) for n, w, b in decoded if n == "offline/ngram/personal"] == lm_points
    assert record["chosen"][lm2] == record["chosen"]["offline/ngram/personal"]
    assert record["method"].startswith("offline/ngram/personal: coordinate search, at most 3 round(s)")


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("0", {"": 0}),
        (3, {"": 3}),
        ("ngram=0", {"": 2, "ngram": 0}),
        (" ngram=0, neural=1 ", {"": 2, "ngram": 0, "neural": 1}),
        ("-1", None),
        ("two", None),
        ("ngram=0,ngram=1", None),
        ("lstm=1", None),
        ("ngram=", None),
        ("ngram=0,=1", None),
        ("", None),
    ],
)
def test_tune_rounds_spec(spec: str | int, want: dict | None) -> None:
    from userlibri.bench.wer_tune import parse_tune_rounds

    if want is None:
        with pytest.raises(ConfigError, match="tune_rounds: expected a number >= 0"):
            parse_tune_rounds(spec, ("ngram", "neural"))
    else:
        assert parse_tune_rounds(spec, ("ngram", "neural")) == want


def test_tune_splits_match_each_test_split_to_its_dev_split() -> None:
    from userlibri.bench.wer_tune import choose_splits, parse_tune_spec

    libri = ["test-clean", "test-other", "dev-clean", "dev-other"]
    reported, tune_for, notes = choose_splits("ds", "auto", None, libri)
    assert reported == ["test-clean", "test-other"]
    assert tune_for == {"test-clean": "dev-clean", "test-other": "dev-other"}
    assert "test-clean on the dev-clean users; test-other on the dev-other users" in notes[0]
    # Only one dev split (the mini corpus's dev): both test splits are tuned on it.
    assert choose_splits("ds", "auto", None, ["test-clean", "test-other", "dev"])[1] == {
        "test-clean": "dev",
        "test-other": "dev",
    }
    assert (
        choose_splits("ds", "auto", None, ["test-clean", "test-other", "dev-clean"])[1]["test-other"]
        == "dev-clean"
    )
    assert choose_splits("ds", "dev-clean", None, libri)[1] == {
        "test-clean": "dev-clean",
        "test-other": "dev-clean",
    }
    pairs = "test-other=dev-clean,test-clean=dev-other"
    assert choose_splits("ds", pairs, None, libri)[:2] == (
        ["test-other", "test-clean"],
        {"test-other": "dev-clean", "test-clean": "dev-other"},
    )
    assert choose_splits("ds", pairs, ["test-clean"], libri)[1] == {"test-clean": "dev-other"}
    # A test split as the tune split is left out of the report, and the notes say so.
    reported, tune_for, notes = choose_splits("ds", "test-other", None, libri)
    assert reported == ["test-clean"] and "test-other is not reported" in notes[0]
    for bad in ("", "a,b", "x=", "a=b,a=c", "a=a", "test-clean=test-other,test-other=dev"):
        with pytest.raises(ConfigError, match="tune_split"):
            parse_tune_spec(bad)
    with pytest.raises(UserLibriError, match=r"ds: no split\(s\) \['dev-x'\] to tune on"):
        choose_splits("ds", "test-clean=dev-x", None, libri)
    with pytest.raises(ConfigError, match=r"splits \['test-other'\]: not in --tune-split"):
        choose_splits("ds", "test-clean=dev-clean", ["test-other"], libri)
    with pytest.raises(UserLibriError, match="no dev split to tune test-clean on"):
        choose_splits("ds", "auto", None, ["test-clean", "test-other"])
    for spec in ("dev-clean", "auto"):
        with pytest.raises(ConfigError, match=r"\['dev-clean'\]: tuned on, so they cannot be reported"):
            choose_splits("ds", spec, ["test-clean", "dev-clean"], libri)


def test_cli_tunes_each_test_split_on_its_own_dev_users(tmp_path: Path) -> None:
    root, lm = make_layout(tmp_path)
    dev = root / "audio_data" / "dev"
    shutil.copytree(dev, root / "audio_data" / "dev-other")
    dev.rename(root / "audio_data" / "dev-clean")
    results, output = bench_cli(tmp_path, root, lm, "--modes", "offline", "--lms", "personal")
    assert results["tune_splits"] == {"test-clean": "dev-clean", "test-other": "dev-other"}
    assert list(results["tuning"]) == ["dev-clean", "dev-other"]
    for split, tune in results["tune_splits"].items():
        chosen = results["tuning"][tune]["chosen"]
        for name, s in results["splits"][split]["summaries"].items():
            assert (s["lm_weight"], s["length_bonus"]) == (
                chosen[name]["lm_weight"],
                chosen[name]["length_bonus"],
            )
    md = (tmp_path / "bench" / "results.md").read_text()
    assert md.count("LM weight / bonus") == 2  # one column per split: each has its own tuning
    assert (
        "Tuning for test-clean: dev-clean users (1)" in md
        and "Tuning for test-other: dev-other users (1)" in md
    )
    pngs = sorted(p.name for p in (tmp_path / "bench").glob("wer_vs_lm_weight*.png"))
    assert pngs == ["wer_vs_lm_weight_dev-clean.png", "wer_vs_lm_weight_dev-other.png"]
    # An LM missing for the dev-other users: that condition cannot be tuned for test-other only.
    shutil.rmtree(tmp_path / "bench")
    shutil.rmtree(root / "audio_data" / "dev-other")
    shutil.copytree(
        root / "audio_data" / "test-clean" / "speaker-21-book-5",
        root / "audio_data" / "dev-other" / "speaker-21-book-9",
    )
    results, _ = bench_cli(tmp_path, root, lm, "--modes", "offline", "--lms", "personal")
    skipped = {(s["condition"], s["split"]): s["reason"] for s in results["skipped"]}
    assert "1 dev-other user(s), so it cannot be tuned" in skipped[("offline/ngram/personal", "test-other")]
    assert "offline/ngram/personal" in results["splits"]["test-clean"]["summaries"]
    assert set(results["splits"]["test-other"]["summaries"]) == {"offline/none"}
