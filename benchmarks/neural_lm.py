"""Neural LM speed: non-private vs DP-SGD (Opacus DPLSTM) step time, ONNX step latency per token
(batch 1 and 8, float and int8) and model sizes. Writes benchmarks/results/neural_lm.json.

Usage: python benchmarks/neural_lm.py --tokenizer DIR --text FILE [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from userlibri.fsio import write_json_atomic
from userlibri.lm import neural as N
from userlibri.lm.neural_export import export_lm
from userlibri.lm.neural_pipeline import read_sentences
from userlibri.lm.onnx_lm import OnnxNeuralLM
from userlibri.text.tokenizer import Tokenizer


def _step_times(model: N.LstmLM, batches: list[torch.Tensor], dp: bool, clip: float = 1.0) -> float:
    """Median seconds per optimizer step (forward, backward, clip/noise, Adam)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model = N.LstmLM(model.config)
    if dp:
        N._swap_lstm(model, dp=True)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    net: torch.nn.Module = model
    if dp:
        net = GradSampleModule(model)
        opt = DPOptimizer(opt, noise_multiplier=1.0, max_grad_norm=clip, expected_batch_size=len(batches[0]))
    times = []
    for b in batches:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        N._batch_loss(net, b).backward()
        if not dp:
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def _onnx_latency(path: Path, tok: Tokenizer, batch: int, tokens: int = 50) -> float:
    """Seconds per token step for ``batch`` hypotheses (each step extends all of them)."""
    lm = OnnxNeuralLM(path, tok, threads=1)
    rng = np.random.default_rng(0)
    states = [(int(i),) for i in rng.integers(3, tok.vocab_size, batch)]
    lm.next_logprobs(states)
    t = time.perf_counter()
    for _ in range(tokens):
        _, states = lm.score_batch(states, [int(x) for x in rng.integers(3, tok.vocab_size, batch)])
        lm.next_logprobs(states)  # forces the step for the new prefixes
    return (time.perf_counter() - t) / tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/neural_lm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = Tokenizer.load(args.tokenizer)
    sents = read_sentences([args.text])
    enc = N.encode_sentences(sents, tok)
    data = N._Sentences(enc, N.DEFAULT_MAX_TOKENS).data
    g = torch.Generator().manual_seed(0)
    batches = [data[torch.randperm(len(data), generator=g)[: args.batch_size]] for _ in range(6)]
    model = N.LstmLM(N.default_config(tok))
    plain = _step_times(model, batches, dp=False)
    dp = _step_times(model, batches[:4], dp=True)
    res: dict = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "parameters": N.num_parameters(model),
        "mean_tokens_per_sentence": float(np.mean([len(e) for e in enc])),
        "step_seconds_plain": plain,
        "step_seconds_dp_sgd_opacus_dplstm": dp,
        "dp_over_plain": dp / plain,
    }
    with tempfile.TemporaryDirectory() as d:
        files = export_lm(model, d)
        for kind, path in files.items():
            res[f"size_mb_{kind}"] = path.stat().st_size / 1e6
            for b in (1, 8):
                res[f"onnx_ms_per_token_{kind}_batch{b}"] = 1e3 * _onnx_latency(path, tok, b)
    write_json_atomic(args.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
