"""Acoustic-model ONNX export and runtime speed: export time, file sizes (float / int8 / ORT),
load time, streaming chunk latency, full-context RTF and batched decoder/joiner latency per
precision, one intra-op thread. Random weights are fine for timing.

Usage: python benchmarks/am_onnx.py --config recipes/mini/conf/am.yaml [--vocab-size 256]
       [--model-dir DIR (reuse an export instead of exporting)] [--threads 1]
Writes benchmarks/results/am_onnx.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.asr.onnx_model import PRECISION_SUFFIX, OnnxAcousticModel
from userlibri.fsio import write_json_atomic

RESULTS = Path(__file__).parent / "results" / "am_onnx.json"


def _export(config_path: Path, vocab_size: int, out: Path) -> dict[str, Any]:
    import torch

    from userlibri.asr.config import load_config
    from userlibri.asr.export import export_model
    from userlibri.asr.model import AcousticModel
    from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer

    rng = random.Random(0)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    sentences = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(5000)]
    tok = train_tokenizer(sentences, out / "tokenizer", TokenizerConfig(vocab_size=vocab_size))
    cfg = load_config(config_path)
    am = dataclasses.replace(cfg.model, vocab_size=tok.vocab_size, blank_id=tok.blank_id)
    torch.manual_seed(0)
    model = AcousticModel(am).eval()
    return export_model(model, out / "tokenizer", out / "model", features=cfg.features)


def _median_ms(fn: Any, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)), 1000 * float(np.percentile(times, 90))


def bench_precision(model_dir: Path, precision: str, threads: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    am = OnnxAcousticModel(model_dir, precision=precision, num_threads=threads)
    load_s = time.perf_counter() - t0
    rs = np.random.RandomState(0)
    chunk = (rs.randn(am.meta.chunk_frames, am.meta.feature_dim) * 3 - 5).astype(np.float32)
    state = [am.init_state()]

    def step() -> None:
        _, state[0] = am.run_chunk(chunk, state[0])

    for _ in range(5):
        step()
    chunk_ms, chunk_p90 = _median_ms(step, 100)
    utt = (rs.randn(1000, am.meta.feature_dim) * 3 - 5).astype(np.float32)  # 10 s
    am.run(utt)
    full_ms, _ = _median_ms(lambda: am.run(utt), 10)
    ctx = np.zeros((4, am.meta.context_size), np.int64)
    enc = rs.randn(4, am.meta.joiner_dim).astype(np.float32)
    dec = am.decoder(ctx)
    decoder_ms, _ = _median_ms(lambda: am.decoder(ctx), 300)
    joiner_ms, _ = _median_ms(lambda: am.joiner(enc, dec), 300)
    chunk_s = am.meta.chunk_shift * am.meta.features.frame_shift_ms / 1000
    return {
        "load_s": round(load_s, 3),
        "streaming_chunk_ms": round(chunk_ms, 3),
        "streaming_chunk_p90_ms": round(chunk_p90, 3),
        "streaming_rtf": round(chunk_ms / 1000 / chunk_s, 4),
        "full_context_10s_ms": round(full_ms, 2),
        "full_context_rtf": round(full_ms / 1000 / 10.0, 4),
        "decoder_batch4_ms": round(decoder_ms, 4),
        "joiner_batch4_ms": round(joiner_ms, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("recipes/mini/conf/am.yaml"))
    parser.add_argument("--vocab-size", type=int, default=256)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary: dict[str, Any] = {}
        model_dir = args.model_dir
        if model_dir is None:
            summary = _export(args.config, args.vocab_size, Path(tmp))
            model_dir = Path(tmp) / "model"
        else:
            import json

            summary = json.loads((model_dir / "model.json").read_text())
        runtime = {}
        for precision in PRECISION_SUFFIX:
            runtime[precision] = bench_precision(model_dir, precision, args.threads)
            print(precision, runtime[precision], flush=True)
    result = {
        "config": str(args.config) if args.model_dir is None else str(args.model_dir),
        "parameters": summary.get("parameters"),
        "streaming": {k: v for k, v in summary.get("streaming", {}).items() if k != "caches"},
        "export_seconds": summary.get("export", {}).get("seconds"),
        "size_mb": summary.get("size_mb"),
        "threads": args.threads,
        "runtime": runtime,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
