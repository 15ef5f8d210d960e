"""Tables of ``userlibri bench wer`` results: paired comparisons, CSV rows, the markdown report and
the issue's targets. Works on the results dict (``results.json``) alone, so a report can be
rebuilt without decoding."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.bench import wer as W
from userlibri.errors import UserLibriError
from userlibri.fsio import write_text_atomic

#: The issue's targets (relative changes are negative when WER drops).
TARGET_VS_NONE = -0.20
TARGET_VS_BACKGROUND = -0.08
TARGET_DP_RETENTION = 0.75
TARGET_EPSILON = 8.0


def comparisons_for_split(
    scores: Mapping[str, Sequence[W.UserScore]], indices: np.ndarray, seed: int, confidence: float
) -> list[dict[str, Any]]:
    """Paired bootstrap of every pair of conditions (baseline = the earlier one), one shared
    resample of users."""
    names = list(scores)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            try:
                c = W.compare(
                    scores[a], scores[b], (a, b), indices.shape[0], seed, confidence, indices=indices
                )
            except UserLibriError:
                continue  # no users with reference words: nothing to compare
            out.append(c.to_dict())
    return out


def _lookup(split: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["baseline"], c["candidate"]): c for c in split["comparisons"]}


def _cond(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in results["conditions"]}


def baselines(cond: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(no-LM, background) condition names to compare ``cond`` against (None: itself or n/a)."""
    none = f"{cond['mode']}/none"
    if cond["kind"] is None:
        return None, None
    bg = f"{cond['mode']}/{cond['kind']}/background"
    return none, (None if cond["lm"] == "background" else bg)


def results_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (split, condition): the summary and its comparisons with no LM and background."""
    rows = []
    conds = _cond(results)
    for split, sd in results["splits"].items():
        comps = _lookup(sd)
        for name, s in sd["summaries"].items():
            c = conds[name]
            row: dict[str, Any] = {
                "split": split,
                "condition": name,
                "mode": c["mode"],
                "kind": c["kind"] or "",
                "lm": c["lm"],
                "epsilon": "" if c["epsilon"] is None else c["epsilon"],
                "lm_weight": s["lm_weight"],
                "length_bonus": s["length_bonus"],
                "users": s["scored_users"],
                "utterances": s["utterances"],
                "ref_words": s["ref_words"],
                "errors": s["errors"],
                "empty_refs": s["empty_refs"],
                "avg_user_wer": s["avg_user_wer"],
                "ci_low": s["ci"][0] if s["ci"] else None,
                "ci_high": s["ci"][1] if s["ci"] else None,
                "pooled_wer": s["pooled_wer"],
                "search_rtf": s.get("search_rtf"),
            }
            for tag, base in zip(("none", "background"), baselines(c), strict=True):
                cmp_ = comps.get((base, name)) if base else None
                row[f"rel_vs_{tag}"] = cmp_["relative"] if cmp_ else None
                row[f"p_vs_{tag}"] = cmp_["p_value"] if cmp_ else None
                row[f"improved_vs_{tag}"] = cmp_["improved"] if cmp_ else None
                row[f"worse_vs_{tag}"] = cmp_["worse"] if cmp_ else None
                row[f"unchanged_vs_{tag}"] = cmp_["unchanged"] if cmp_ else None
            rows.append(row)
    return rows


def per_user_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (split, condition, user), with the user's WER without an LM (same mode) and the
    difference."""
    rows = []
    conds = _cond(results)
    for split, sd in results["splits"].items():
        per = sd["per_user"]
        for name, users in per.items():
            none = per.get(f"{conds[name]['mode']}/none", [])
            base = {u["user"]: u["wer"] for u in none}
            for u in users:
                b = base.get(u["user"])
                rows.append(
                    {
                        "split": split,
                        "condition": name,
                        **{
                            k: u[k] for k in ("user", "utterances", "ref_words", "substitutions", "deletions")
                        },
                        **{k: u[k] for k in ("insertions", "errors", "empty_refs", "wer")},
                        "wer_no_lm": b,
                        "delta_vs_no_lm": None if b is None or u["wer"] is None else u["wer"] - b,
                    }
                )
    return rows


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as CSV (header from the first row; empty cells for None), atomically."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    write_text_atomic(path, buf.getvalue())


# ---------------------------------------------------------------- targets


def targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets per split, mode and LM kind: per-user LM fusion (interpolated, else
    personal) >= 20% relative below no LM and >= 8% below the background LM, each with the paired
    95% CI of the difference excluding 0; the DP LM at epsilon 8 keeps >= 75% of the non-private
    per-user LM's gain over no LM."""
    out = []
    for split, sd in results["splits"].items():
        comps = _lookup(sd)
        summ = sd["summaries"]
        modes = sorted({n.split("/")[0] for n in summ})
        for mode in modes:
            none = f"{mode}/none"
            for kind in ("ngram", "neural"):
                pers = next(
                    (
                        f"{mode}/{kind}/{x}"
                        for x in ("interpolated", "personal")
                        if f"{mode}/{kind}/{x}" in summ
                    ),
                    None,
                )
                if pers is None or none not in summ:
                    continue
                for tag, base, limit in (
                    ("vs no LM", none, TARGET_VS_NONE),
                    ("vs background", f"{mode}/{kind}/background", TARGET_VS_BACKGROUND),
                ):
                    c = comps.get((base, pers))
                    if c is None or c["relative"] is None:
                        continue
                    ok = c["relative"] <= limit and c["delta_ci"][1] < 0
                    out.append(
                        {
                            "split": split,
                            "condition": pers,
                            "check": f"relative change {tag} <= {limit:+.0%}, CI of the difference < 0",
                            "value": c["relative"],
                            "delta_ci": c["delta_ci"],
                            "passed": bool(ok),
                        }
                    )
                dp = f"{mode}/{kind}/dp-eps{TARGET_EPSILON:g}"
                np_ = f"{mode}/{kind}/personal"
                if dp in summ and np_ in summ:
                    base = summ[none]["avg_user_wer"]
                    gain_np = base - summ[np_]["avg_user_wer"]
                    gain_dp = base - summ[dp]["avg_user_wer"]
                    kept = gain_dp / gain_np if gain_np > 0 else None
                    out.append(
                        {
                            "split": split,
                            "condition": dp,
                            "check": f"keeps >= {TARGET_DP_RETENTION:.0%} of the gain of {np_} over no LM",
                            "value": kept,
                            "gain_non_private": gain_np,
                            "gain_dp": gain_dp,
                            "passed": bool(kept is not None and kept >= TARGET_DP_RETENTION),
                        }
                    )
    return out


# ---------------------------------------------------------------- markdown


def _wer_cell(s: Mapping[str, Any] | None) -> str:
    if not s or s["avg_user_wer"] is None:
        return "\u2013"
    lo, hi = s["ci"]
    return f"{W.fmt_pct(s['avg_user_wer'])} [{W.fmt_pct(lo)}, {W.fmt_pct(hi)}]"


def _rel_cell(c: Mapping[str, Any] | None) -> str:
    if not c or c["relative"] is None:
        return ""
    p = c["p_value"]
    p_s = f"p<{1e-3:g}" if p < 1e-3 else f"p={p:.3f}"
    return f"{100 * c['relative']:+.1f}% ({p_s}; {c['improved']}/{c['worse']}/{c['unchanged']})"


def markdown(results: Mapping[str, Any]) -> str:
    """The paper-shaped table (rows: conditions; columns: splits), then pooled WER, tuning,
    targets, skipped conditions and notes."""
    splits = list(results["splits"])
    conds = results["conditions"]
    cfg = results["config"]
    n_users = {s: len(results["splits"][s]["users"]) for s in splits}
    lines = [
        "# Per-user WER",
        "",
        f"Average per-user WER % [{cfg['confidence']:.0%} CI from {cfg['resamples']:,} bootstrap "
        "resamples of users]; relative change of the average vs no LM and vs the background LM of "
        "the same mode and kind, with the two-sided paired-bootstrap p-value and users "
        "improved/worse/unchanged. " + " ".join(results["notes"]),
        "",
    ]
    # One weight / bonus column when every split is tuned on the same users, else one per split.
    tunings = tunings_of(results)
    per_split = len({tunings[s]["split"] for s in splits}) > 1
    head = ["Condition"] + ([] if per_split else ["LM weight / bonus"])
    for s in splits:
        head += [f"{s} ({n_users[s]} users)"] + (["LM weight / bonus"] if per_split else [])
        head += ["vs no LM", "vs background"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in conds:
        name = c["name"]
        cells = [c["label"]] + ([] if per_split else [_tuned_cell(c, tunings[splits[0]])])
        for s in splits:
            sd = results["splits"][s]
            comps = _lookup(sd)
            none, bg = baselines(c)
            cells += [_wer_cell(sd["summaries"].get(name))]
            cells += [_tuned_cell(c, tunings[s])] if per_split else []
            cells += [
                _rel_cell(comps.get((none, name))) if none else "",
                _rel_cell(comps.get((bg, name))) if bg else "",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Pooled WER % (all errors / all reference words):", ""]
    lines += ["| Condition | " + " | ".join(splits) + " |", "|" + "---|" * (len(splits) + 1)]
    for c in conds:
        cells = [
            W.fmt_pct(results["splits"][s]["summaries"].get(c["name"], {}).get("pooled_wer")) for s in splits
        ]
        lines.append(f"| {c['label']} | " + " | ".join(cells) + " |")
    empty = {s: results["splits"][s]["summaries"] for s in splits}
    notes = []
    for s, summ in empty.items():
        first = next(iter(summ.values()), None)
        if first and (first["empty_refs"] or first["users_without_words"]):
            notes.append(
                f"{s}: {first['empty_refs']} utterance(s) with an empty reference (their words count as "
                f"insertions); users without reference words, left out of the average: "
                f"{', '.join(first['users_without_words']) or 'none'}."
            )
    tg = results.get("targets") or []
    if tg:
        lines += ["", "Targets:", ""]
        for t in tg:
            v = (
                "\u2013"
                if t["value"] is None
                else (f"{100 * t['value']:+.1f}%" if "relative" in t["check"] else f"{t['value']:.2f}")
            )
            lines.append(
                f"- {t['split']} {t['condition']}: {t['check']}: {v} \u2192 "
                + ("met" if t["passed"] else "NOT met")
            )
    lines.append("")
    for tun in results["tuning"].values():
        reported = [s for s in splits if tunings[s] is tun]
        lines.append(
            f"Tuning for {', '.join(reported)}: {tun['split']} users ({len(tun['users'])}), LM weights "
            f"{tun['lm_weights']}, length bonuses {tun['length_bonuses']}"
            + (f", {tun['method']}" if tun.get("method") else "")
            + (
                f" (from bonus {tun['default_bonus']:g})"
                if "coordinate" in tun.get("method", "coordinate")
                else ""
            )
            + f"; criterion: {tun['criterion']}."
        )
        if tun.get("at_grid_edge"):
            edge = ", ".join(f"{k} ({' and '.join(v)})" for k, v in sorted(tun["at_grid_edge"].items()))
            lines.append(f"At the largest grid value on {tun['split']} (a wider grid may do better): {edge}.")
    if results["skipped"]:
        lines += ["", "Skipped:", ""]
        for sk in results["skipped"]:
            where = f" on {sk['split']}" if sk["split"] else ""
            lines.append(f"- {sk['condition']}{where}: {sk['reason']}")
    if notes:
        lines += ["", *notes]
    lines.append("")
    return "\n".join(lines)


def tunings_of(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Reported split -> the tuning record of the users its weights were tuned on."""
    return {s: results["tuning"][t] for s, t in results["tune_splits"].items()}


def _tuned_cell(c: Mapping[str, Any], tun: Mapping[str, Any]) -> str:
    tuned = tun["chosen"].get(c["name"])
    if not tuned:
        return "\u2013"
    if c["kind"] is None:
        return f"\u2013 / {tuned['length_bonus']:g}"
    return f"{tuned['lm_weight']:g} / {tuned['length_bonus']:g}"


def write_markdown(path: Path, results: Mapping[str, Any]) -> None:
    write_text_atomic(path, markdown(results))
