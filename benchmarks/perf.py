"""On-device recognizer cost (``userlibri bench perf``): RTF, per-chunk latency, first partial,
RSS, model/LM sizes and load times per precision x threads x mode x decoder, with and without the
per-user LM of the manifest's first user that has one; each configuration in a fresh process.
Writes benchmarks/results/perf.json and benchmarks/results/perf.md (the README's perf table).

Usage: python benchmarks/perf.py [--model DIR (default: the shipped model)]
       [--manifest work/demo/UserLibri/manifests/test-clean.jsonl] [--lm-root work/demo/lm]
       [--n 5] [--precisions int8,...] [--threads 1,2] [--passes 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from userlibri.bench.perf import PerfConfig, bench_perf, format_markdown, user_with_lm
from userlibri.errors import UserLibriError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEMO = ROOT / "work" / "demo"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--manifest", type=Path, default=DEMO / "UserLibri" / "manifests" / "test-clean.jsonl")
    ap.add_argument("--lm-root", type=Path, default=DEMO / "lm", help="per-user LM dirs <book>/ (lm users)")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--precisions", default=None, help="default: those the model directory holds")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--decoders", default="ctc,transducer")
    ap.add_argument("--modes", default="streaming,offline")
    ap.add_argument("--passes", type=int, default=3, help="decodes per configuration; timings: the fastest")
    ap.add_argument("--out", type=Path, default=RESULTS / "perf.json")
    ap.add_argument("--markdown", type=Path, default=RESULTS / "perf.md")
    args = ap.parse_args()
    try:
        audio, lm, user = user_with_lm(args.manifest, args.lm_root, args.n)
        config = PerfConfig(
            precisions=tuple(args.precisions.split(",")) if args.precisions else None,
            threads=tuple(int(t) for t in args.threads.split(",")),
            decoders=tuple(args.decoders.split(",")),
            modes=tuple(args.modes.split(",")),
            lm=lm,
            passes=args.passes,
        )
        notes = {"manifest": str(args.manifest), "user": user}
        results = bench_perf(args.model, audio, None, None, config, args.out, args.markdown, notes=notes)
    except UserLibriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"user {user}, LM {lm}, {len(audio)} utterances of {args.manifest}\n")
    print(format_markdown(results))
    print(f"wrote {args.out} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
