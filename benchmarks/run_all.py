"""Run every benchmark script in this directory (``make bench``); each writes results/<name>.json."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Benchmarks that need inputs ``make bench`` cannot make; reported as skipped, with the reason.
NEEDS_INPUTS = {
    "stream_recognizer.py": "an exported acoustic model, a per-user LM and a manifest: run it by hand as "
    "'benchmarks/stream_recognizer.py MODEL LM MANIFEST' (perf.py covers it for the shipped model)",
}


def _missing_inputs() -> dict[str, str]:
    """NEEDS_INPUTS plus perf.py while no acoustic model is shipped or the demo corpus is absent."""
    from userlibri.models import shipped_models

    missing = dict(NEEDS_INPUTS)
    if not shipped_models() or not (HERE.parent / "work" / "demo" / "lm").is_dir():
        missing["perf.py"] = (
            "a shipped acoustic model (recipes/mini/train_am.sh) and the demo corpus with per-user LMs "
            "(make demo): run 'benchmarks/perf.py --model DIR' by hand"
        )
    return missing


def main() -> int:
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    failed, skipped = [], []
    missing = _missing_inputs()
    for script in scripts:
        if script.name in missing:
            print(f"== {script.name}: skipped: needs {missing[script.name]}", flush=True)
            skipped.append(script.name)
            continue
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"== {script.name}: exit {rc} in {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(script.name)
    if skipped:
        print(f"skipped: {', '.join(skipped)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
