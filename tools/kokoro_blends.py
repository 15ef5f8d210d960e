#!/usr/bin/env python3
"""Print N random Kokoro voice blends as the `voices:` entries of a synth config.

    .venv/bin/python tools/kokoro_blends.py --n 40 --seed 20261206   # conf/synth-kokoro-blends.yaml

See userlibri.data.kokoro_voices.random_blends (Dirichlet weights over the five base voices).
"""

from __future__ import annotations

import argparse
import sys

from userlibri.data.kokoro_voices import random_blends
from userlibri.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True, help="number of blends")
    ap.add_argument("--seed", type=int, required=True, help="numpy default_rng seed")
    ap.add_argument("--alpha", type=float, default=0.6, help="Dirichlet concentration")
    ap.add_argument("--floor", type=float, default=0.08, help="drop components under this weight")
    args = ap.parse_args(argv)
    try:
        voices = random_blends(args.n, args.seed, args.alpha, args.floor)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for v in voices:
        print(f'             "{v}",')
    return 0


if __name__ == "__main__":
    sys.exit(main())
