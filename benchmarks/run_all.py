"""Run every benchmark script in this directory (``make bench``); each writes results/<name>.json."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Benchmarks that need inputs ``make bench`` cannot make yet; reported as skipped, with the reason.
NEEDS_INPUTS = {
    "stream_recognizer.py": "a trained, exported acoustic model (none is shipped yet), a per-user LM and a "
    "manifest: run it by hand as 'benchmarks/stream_recognizer.py MODEL LM MANIFEST'",
}


def main() -> int:
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    failed, skipped = [], []
    for script in scripts:
        if script.name in NEEDS_INPUTS:
            print(f"== {script.name}: skipped: needs {NEEDS_INPUTS[script.name]}", flush=True)
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
