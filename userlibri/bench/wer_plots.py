"""PNG plots of ``userlibri bench wer`` results (matplotlib, Agg backend; the ``bench`` extra):

* ``scatter_<mode>.png``: each user's WER without an LM (x) against with the per-user LM (y), one
  panel per LM kind, one colour per split; points below the diagonal improved.
* ``wer_vs_lm_weight.png``: the tuning grid, average per-user WER of the tune split's users
  against the LM weight, one line per condition, one panel per mode.
* ``wer_vs_epsilon.png``: average per-user WER (with its CI) of the DP LMs against epsilon, the
  non-private per-user LM at the right edge, no-LM and background levels as lines; one panel per
  split, one line per mode and kind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from userlibri.errors import missing_dependency
from userlibri.fsio import atomic_path

_PERSONAL_ORDER = ("interpolated", "personal")


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise missing_dependency("matplotlib", "pip install 'userlibri[bench]'") from e
    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def scatter(results: Mapping[str, Any], mode: str, path: Path) -> Path | None:
    """Per-user WER without vs with the per-user LM (interpolated, else personal) of each kind."""
    plt = _plt()
    panels = []
    for kind in ("ngram", "neural"):
        for lm in _PERSONAL_ORDER:
            name = f"{mode}/{kind}/{lm}"
            if any(name in sd["per_user"] for sd in results["splits"].values()):
                panels.append((kind, name))
                break
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (kind, name) in zip(axes[0], panels, strict=True):
        top = 0.0
        for split, sd in results["splits"].items():
            per = sd["per_user"]
            if name not in per or f"{mode}/none" not in per:
                continue
            base = {u["user"]: u["wer"] for u in per[f"{mode}/none"]}
            pts = [
                (base[u["user"]], u["wer"])
                for u in per[name]
                if u["wer"] is not None and base.get(u["user"]) is not None
            ]
            if not pts:
                continue
            xs, ys = [100 * p[0] for p in pts], [100 * p[1] for p in pts]
            top = max(top, *xs, *ys)
            ax.scatter(xs, ys, s=22, alpha=0.8, label=f"{split} ({len(pts)} users)")
        top = top * 1.05 or 1.0
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
        ax.set_xlabel("per-user WER %, no LM")
        ax.set_ylabel(f"per-user WER %, {name.split('/')[-1]} {kind} LM")
        ax.set_title(f"{mode}: {kind}")
        ax.legend(fontsize=8)
    fig.suptitle("Per-user WER: baseline vs personalised (below the line: improved)")
    return _save(fig, path)


def weight_curves(tun: Mapping[str, Any], path: Path) -> Path | None:
    """Tune-split average per-user WER against the LM weight (at the default bonus); ``tun``: one
    tune split's record (``results["tuning"][split]``)."""
    grid = tun["grid"]
    modes = sorted({n.split("/")[0] for n in grid if "/none" not in n})
    if not modes:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 4.0), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for name, pts in sorted(grid.items()):
            if not name.startswith(mode + "/") or name.endswith("/none"):
                continue
            row = sorted(
                (p["lm_weight"], p["avg_user_wer"]) for p in pts if p["length_bonus"] == tun["default_bonus"]
            )
            row = [(w, v) for w, v in row if math.isfinite(v)]
            if row:
                ax.plot(
                    [w for w, _ in row], [100 * v for _, v in row], marker="o", label=name.split("/", 1)[1]
                )
        none = [p for p in grid.get(f"{mode}/none", []) if p["length_bonus"] == tun["default_bonus"]]
        if none and math.isfinite(none[0]["avg_user_wer"]):
            ax.axhline(100 * none[0]["avg_user_wer"], color="grey", ls=":", lw=1, label="no LM")
        ax.set_xlabel("LM weight")
        ax.set_ylabel(f"avg per-user WER % ({tun['split']} users)")
        ax.set_title(f"{mode} (bonus {tun['default_bonus']:g})")
        ax.legend(fontsize=7)
    fig.suptitle(f"WER vs LM weight on the tuning users ({tun['split']})")
    return _save(fig, path)


def epsilon_curves(results: Mapping[str, Any], path: Path) -> Path | None:
    """Average per-user WER of the DP LMs against epsilon; non-private at the right edge."""
    conds = {c["name"]: c for c in results["conditions"]}
    dp = [c for c in conds.values() if c["epsilon"] is not None]
    if not dp:
        return None
    plt = _plt()
    splits = list(results["splits"])
    eps_all = sorted({c["epsilon"] for c in dp})
    x_inf = eps_all[-1] * 4
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 4.0), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        summ = results["splits"][split]["summaries"]
        for mode, kind in sorted({(c["mode"], c["kind"]) for c in dp}):
            pts = []
            for c in dp:
                s = summ.get(c["name"])
                if c["mode"] == mode and c["kind"] == kind and s and s["avg_user_wer"] is not None:
                    pts.append((c["epsilon"], s["avg_user_wer"], s["ci"]))
            np_ = summ.get(f"{mode}/{kind}/personal")
            if np_ and np_["avg_user_wer"] is not None:
                pts.append((x_inf, np_["avg_user_wer"], np_["ci"]))
            if not pts:
                continue
            pts.sort()
            xs = [p[0] for p in pts]
            ys = [100 * p[1] for p in pts]
            err = [[100 * (p[1] - p[2][0]) for p in pts], [100 * (p[2][1] - p[1]) for p in pts]]
            line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{mode} {kind} per-user")
            color = line[0].get_color()
            for ref, ls in (("none", ":"), (f"{kind}/background", "--")):
                s = summ.get(f"{mode}/{ref}")
                if s and s["avg_user_wer"] is not None:
                    ax.axhline(100 * s["avg_user_wer"], color=color, ls=ls, lw=0.8)
        ax.set_xscale("log")
        ticks = [*eps_all, x_inf]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{e:g}" for e in eps_all] + ["\u221e"])
        ax.set_xlabel("epsilon (\u221e: non-private)")
        ax.set_ylabel("avg per-user WER %")
        ax.set_title(f"{split} (dotted: no LM, dashed: background)")
        ax.legend(fontsize=7)
    fig.suptitle("WER vs privacy budget of the per-user DP LM")
    return _save(fig, path)


def write_plots(results: Mapping[str, Any], out: Path) -> list[Path]:
    """Every plot that the results support, written under ``out``."""
    made = []
    modes = sorted({c["mode"] for c in results["conditions"]})
    for mode in modes:
        made.append(scatter(results, mode, out / f"scatter_{mode}.png"))
    tunings = results["tuning"]
    for split, tun in tunings.items():  # one tune split: wer_vs_lm_weight.png
        suffix = f"_{split}" if len(tunings) > 1 else ""
        made.append(weight_curves(tun, out / f"wer_vs_lm_weight{suffix}.png"))
    made.append(epsilon_curves(results, out / "wer_vs_epsilon.png"))
    return [p for p in made if p is not None]
