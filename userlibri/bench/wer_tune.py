"""Which users ``bench wer`` tunes the LM weight and length bonus on, and the coordinate search.

Tune-split specs (``--tune-split``):

- ``auto`` (default): each reported test split on its own dev split when the dataset has one
  (test-clean on dev-clean, test-other on dev-other, as LibriSpeech pairs them: noisier test audio
  wants other weights than clean audio), else on ``dev``, else on the one dev split there is.
- ``NAME``: every reported split on the users of split ``NAME`` (a test split named here is not
  reported: weights tuned on its users would flatter it).
- ``test-clean=dev-clean,test-other=dev-other``: explicitly, per reported split.

The search (:func:`coordinate_search`) runs once per tune split, over the conditions reported on a
split tuned there; it knows nothing about decoding: it asks an ``evaluate`` callback for the
average and pooled WER of (condition, weight, bonus) points.

Search rounds (``--tune-rounds``, :func:`parse_tune_rounds`): ``N`` for every condition, or
``KIND=N`` pairs per LM kind (``ngram=0,neural=2``: the full grid where decoding is cheap, the
coordinate search where it is not; kinds not named, and no LM, get the default 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from userlibri.constants import DEV_SPLITS, TEST_SPLITS
from userlibri.errors import ConfigError, UserLibriError

log = logging.getLogger("userlibri.bench.wer_run")

AUTO = "auto"
#: Rounds of the coordinate search when ``--tune-rounds`` does not say (0: the full grid).
DEFAULT_TUNE_ROUNDS = 2
#: Test split -> the dev split ``auto`` tunes it on when the dataset has it.
MATCHED_DEV = {"test-clean": "dev-clean", "test-other": "dev-other"}
#: Dev splits ``auto`` falls back on, in order.
FALLBACK_DEV = DEV_SPLITS

#: (condition name, lm weight, length bonus) -> (average per-user WER, pooled WER)
Evaluate = Callable[
    [dict[str, list[tuple[float, float]]], str], dict[tuple[str, float, float], tuple[float, float]]
]


def parse_tune_spec(spec: str) -> str | dict[str, str]:
    """``auto``, one split name, or ``{reported split: tune split}`` from ``a=b,c=d``."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("tune_split: expected 'auto', a split name or SPLIT=TUNE_SPLIT pairs, found ''")
    if "=" not in spec:
        if "," in spec:
            raise ConfigError(f"tune_split: expected one split or SPLIT=TUNE_SPLIT pairs, found {spec!r}")
        return spec
    pairs: dict[str, str] = {}
    for part in spec.split(","):
        split, sep, tune = (x.strip() for x in part.partition("="))
        if not sep or not split or not tune or split in pairs:
            raise ConfigError(
                f"tune_split: expected distinct SPLIT=TUNE_SPLIT pairs separated by commas, found {spec!r}"
            )
        if split == tune:
            raise ConfigError(f"tune_split: {split} cannot be tuned on its own users ({spec!r})")
        pairs[split] = tune
    tunes = set(pairs.values())
    if tunes & set(pairs):
        raise ConfigError(
            f"tune_split: {sorted(tunes & set(pairs))} are both reported and tuned on ({spec!r}): "
            "weights tuned on a split's users would flatter it"
        )
    return pairs


def parse_tune_rounds(spec: str | int, kinds: Sequence[str]) -> dict[str, int]:
    """``{kind: rounds, "": rounds for the rest}`` from ``N`` or ``KIND=N,...`` (kinds from
    ``kinds``; the rest, and the no-LM conditions, get :data:`DEFAULT_TUNE_ROUNDS`)."""
    if isinstance(spec, int):
        text, pairs = str(spec), [("", str(spec))]
    else:
        text = spec.strip()
        pairs = [("", text)]
        if "=" in text:
            pairs = [(k.strip(), n.strip()) for k, _, n in (p.partition("=") for p in text.split(","))]
    out = {"": DEFAULT_TUNE_ROUNDS}
    seen: set[str] = set()
    for kind, n in pairs:
        if (kind not in kinds if "=" in text else kind) or kind in seen or not n.isdigit():
            raise ConfigError(
                f"tune_rounds: expected a number >= 0 (0: the full grid) or KIND=N pairs with KIND one of "
                f"{', '.join(kinds)}, found {text!r}"
            )
        seen.add(kind)
        out[kind] = int(n)
    return out


def rounds_text(rounds: int) -> str:
    """How ``rounds`` rounds search (the ``method`` of a tuning record)."""
    if rounds == 0:
        return "full grid of weight x bonus"
    return f"coordinate search, at most {rounds} round(s) of weight then bonus"


def choose_splits(
    dataset: Any, spec: str, splits: Sequence[str] | None, have: Sequence[str]
) -> tuple[list[str], dict[str, str], list[str]]:
    """(reported splits, reported split -> tune split, notes) for ``spec`` on a dataset with
    splits ``have``; ``splits``: the reported splits asked for (None: the test splits there are,
    minus any tune split)."""
    parsed = parse_tune_spec(spec)
    if isinstance(parsed, dict) and splits is None:
        splits = list(parsed)
    if splits is not None:
        missing = [s for s in splits if s not in have]
        if missing:
            raise UserLibriError(f"{dataset}: no split(s) {missing} (have {', '.join(have)})")
    if parsed == AUTO:
        reported = list(splits) if splits is not None else [s for s in TEST_SPLITS if s in have]
        tune_for = {}
        for s in reported:
            match = MATCHED_DEV.get(s)
            tune = match if match in have else next((d for d in FALLBACK_DEV if d in have), None)
            if tune is None:
                raise UserLibriError(
                    f"{dataset}: no dev split to tune {s} on (have {', '.join(have)}; looked for "
                    f"{', '.join(dict.fromkeys([*([match] if match else []), *FALLBACK_DEV]))}); rebuild "
                    "the dataset with `userlibri build` on a corpus with a dev split, or pass "
                    "--tune-split <test split> to tune on one test split and report the others"
                )
            tune_for[s] = tune
    elif isinstance(parsed, str):
        if parsed not in have:
            raise UserLibriError(
                f"{dataset}: no {parsed!r} split to tune on (have {', '.join(have)}); rebuild the dataset "
                "with `userlibri build` on a corpus with a dev split, or pass --tune-split <test split> "
                "to tune on one test split and report the others"
            )
        reported = (
            list(splits) if splits is not None else [s for s in TEST_SPLITS if s in have and s != parsed]
        )
        tune_for = dict.fromkeys(reported, parsed)
    else:
        absent = sorted({t for t in parsed.values() if t not in have})
        if absent:
            raise UserLibriError(f"{dataset}: no split(s) {absent} to tune on (have {', '.join(have)})")
        unmapped = [s for s in splits or () if s not in parsed]
        if unmapped:
            raise ConfigError(f"splits {unmapped}: not in --tune-split {spec!r}, so nothing to tune them on")
        reported = list(splits or parsed)
        tune_for = {s: parsed[s] for s in reported}
    clash = sorted(set(reported) & set(tune_for.values()))
    if clash:
        raise ConfigError(
            f"splits {clash}: tuned on, so they cannot be reported (weights tuned on their users would "
            "flatter them)"
        )
    if not reported:
        raise UserLibriError(f"{dataset}: no split left to report after tuning on {spec!r}")
    notes = []
    tested_on = {t for t in tune_for.values() if t in TEST_SPLITS}
    if tested_on:
        notes.append(
            f"No dev users: weights were tuned on the {', '.join(sorted(tested_on))} users, so "
            f"{', '.join(sorted(tested_on))} is not reported; only {', '.join(reported)} are."
        )
    else:
        by_tune: dict[str, list[str]] = {}
        for s, t in tune_for.items():
            by_tune.setdefault(t, []).append(s)
        where = "; ".join(f"{', '.join(ss)} on the {t} users" for t, ss in by_tune.items())
        notes.append(f"LM weight and length bonus tuned per condition: {where}; never on test users.")
    return reported, tune_for, notes


def coordinate_search(
    split: str,
    users: Sequence[str],
    conditions: Sequence[tuple[str, bool]],
    evaluate: Evaluate,
    is_dead: Callable[[str], bool],
    lm_weights: Sequence[float],
    length_bonuses: Sequence[float],
    default_bonus: float,
    rounds: Mapping[str, int],
    method: str,
) -> dict[str, Any]:
    """Coordinate search on ``split``'s ``users``; returns the tuning record (grid and choices).

    ``conditions``: (name, has an LM). Per condition, round 1 picks the LM weight over
    ``lm_weights`` at ``default_bonus``, then the length bonus over ``length_bonuses`` at that
    weight (no LM: the bonus only); each further round (up to ``rounds``) picks the weight again
    at the chosen bonus and the bonus at the new weight, and stops once the bonus comes out as the
    one the weight was picked at (the next round would repeat itself). Weight and bonus trade off
    (a heavier LM shortens hypotheses, a bonus lengthens them), so the weight picked at bonus 0 is
    rarely the best at the bonus picked next. ``rounds`` 0 decodes every (weight, bonus) pair of the
    grids instead (no LM: every bonus), the exhaustive search that the coordinate search
    approximates at about 60% of the decodes of a 4 x 4 grid, and can miss: from bonus 0 it may
    settle where neither coordinate alone improves, away from the grid's optimum. ``rounds`` has
    one number per condition name (:func:`parse_tune_rounds` applies the defaults); ``method``
    describes them in the record (:func:`rounds_text`). Points already decoded are
    not decoded again; a condition ``is_dead`` (its decoding failed) drops out. The criterion is
    the average per-user WER (ties: pooled WER, then the earlier grid point). A choice at the
    largest value of its grid is logged (the grid may be too narrow) and listed under
    ``at_grid_edge``."""
    names = [n for n, _ in conditions]
    has_lm = dict(conditions)
    grid: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    seen: dict[str, dict[tuple[float, float], tuple[float, float]]] = {n: {} for n in names}
    weight = dict.fromkeys(names, 0.0)
    bonus = dict.fromkeys(names, default_bonus)
    per = {n: rounds[n] for n in names}

    def run(points: dict[str, list[tuple[float, float]]], desc: str) -> None:
        todo = {n: [p for p in pts if p not in seen[n]] for n, pts in points.items() if not is_dead(n)}
        todo = {n: pts for n, pts in todo.items() if pts}
        got = evaluate(todo, desc) if todo else {}
        for name, pts in todo.items():
            if is_dead(name):
                continue
            for w, b in pts:
                avg, pooled = got[(name, w, b)]
                seen[name][(w, b)] = (avg, pooled)
                grid[name].append(
                    {"lm_weight": w, "length_bonus": b, "avg_user_wer": avg, "pooled_wer": pooled}
                )

    def best(name: str, pts: list[tuple[float, float]]) -> tuple[float, float]:
        return min((*seen[name][p], i, p) for i, p in enumerate(pts))[3]

    pts = {
        n: [(w, b) for w in (lm_weights if has_lm[n] else (0.0,)) for b in length_bonuses]
        for n in sorted(names)
        if per[n] == 0
    }
    if pts:
        run(pts, f"tune weight x bonus ({split}, full grid)")
        for name, p in pts.items():
            if not is_dead(name):
                weight[name], bonus[name] = best(name, p)
    open_ = {n for n in names if per[n] > 0}  # conditions still in the coordinate search
    for r in range(1, max((per[n] for n in open_), default=0) + 1):
        open_ = {n for n in open_ if per[n] >= r}
        if not open_:
            break
        at_bonus = dict(bonus)
        pts = {n: [(w, bonus[n]) for w in lm_weights] for n in sorted(open_) if has_lm[n]}
        run(pts, f"tune weight ({split}, round {r})")
        for name, p in pts.items():
            if not is_dead(name):
                weight[name] = best(name, p)[0]
        pts = {n: [(weight[n], b) for b in length_bonuses] for n in sorted(open_) if not is_dead(n)}
        run(pts, f"tune bonus ({split}, round {r})")
        for name, p in pts.items():
            if not is_dead(name):
                bonus[name] = best(name, p)[1]
        # Converged: the next round would pick the same weight (same bonus) and then the same bonus.
        open_ = {n for n in open_ if not is_dead(n) and has_lm[n] and bonus[n] != at_bonus[n]}
        if not open_:
            break
    live = [n for n in names if not is_dead(n)]
    chosen = {n: {"lm_weight": weight[n], "length_bonus": bonus[n]} for n in live}
    edges: dict[str, list[str]] = {}
    for n in live:
        hit = [
            k
            for k, grid_ in (("lm_weight", lm_weights), ("length_bonus", length_bonuses))
            if (has_lm[n] or k == "length_bonus") and len(grid_) > 1 and chosen[n][k] == max(grid_)
        ]
        if hit:
            edges[n] = hit
            log.warning("%s: the tuned %s is the largest of its grid: try a wider grid", n, " and ".join(hit))
        log.info(
            "tuned %s on %s: lm weight %g, length bonus %g",
            n,
            split,
            chosen[n]["lm_weight"],
            chosen[n]["length_bonus"],
        )
    return {
        "split": split,
        "users": list(users),
        "criterion": "average per-user WER (ties: pooled WER, then the earlier grid point)",
        "method": method,
        "lm_weights": list(lm_weights),
        "length_bonuses": list(length_bonuses),
        "default_bonus": default_bonus,
        "grid": {n: grid[n] for n in live},
        "chosen": chosen,
        "at_grid_edge": edges,
    }


def tuned_splits(tune_for: Mapping[str, str]) -> list[str]:
    """The distinct tune splits, in the order of the reported splits."""
    return list(dict.fromkeys(tune_for.values()))
