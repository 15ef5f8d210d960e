"""Neural LM speed: non-private vs DP-SGD step time, ONNX step latency per token (batch 1 and 8,
float and int8), model sizes, and (optionally) end-to-end per-user fine-tuning runs.
Writes benchmarks/results/neural_lm.json.

DP-SGD is timed as ``personalize`` runs it (``lm/dp_lstm.py`` book-keeping ghost clipping, Opacus'
noise) and, with ``--opacus-reference``, as Opacus itself would: ``DPLSTM`` with per-sample
gradient hooks ("hooks"), and ``DPLSTM`` under ``grad_sample_mode="ghost"`` (its RNNLinear layers
are not ghost-clippable, so Opacus falls back to per-sample gradients plus a second backward).
Modes are interleaved step by step (the machine may be shared), and the ratio is the median of
per-round DP / plain ratios.

Usage: python benchmarks/neural_lm.py --tokenizer DIR --text FILE [--threads 2]
       [--opacus-reference] [--user-run LM_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from userlibri.fsio import write_json_atomic
from userlibri.lm import neural as N
from userlibri.lm.dp_lstm import clipped_gradients
from userlibri.lm.neural_export import export_lm
from userlibri.lm.neural_pipeline import TRAIN_INFO_FILE, read_sentences
from userlibri.lm.onnx_lm import OnnxNeuralLM
from userlibri.text.tokenizer import Tokenizer

Step = Callable[[torch.Tensor], None]


def _plain_step(model: N.LstmLM) -> Step:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(b: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        N._batch_loss(model, b).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def _dp_step(model: N.LstmLM, batch_size: int, clip: float = 1.0) -> Step:
    """What ``neural.dp_sgd_steps`` does per step."""
    from opacus.optimizers import DPOptimizerFastGradientClipping

    opt = DPOptimizerFastGradientClipping(
        torch.optim.Adam(model.parameters(), lr=1e-3),
        noise_multiplier=1.0,
        max_grad_norm=clip,
        expected_batch_size=batch_size,
    )

    def step(b: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        clipped_gradients(model, b, clip)
        opt.step()

    return step


def _dplstm(model: N.LstmLM) -> N.LstmLM:
    """A copy of ``model`` whose nn.LSTM is Opacus' DPLSTM (same state_dict)."""
    from opacus.layers import DPLSTM

    m = N.LstmLM(model.config)
    m.load_state_dict(model.state_dict())
    cfg = model.config
    m.lstm = DPLSTM(cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers, batch_first=True)
    m.lstm.load_state_dict(model.lstm.state_dict())
    m.train()
    return m


def _opacus_hooks_step(model: N.LstmLM, batch_size: int, clip: float = 1.0) -> Step:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    net = GradSampleModule(_dplstm(model))
    opt = DPOptimizer(
        torch.optim.Adam(net.parameters(), lr=1e-3),
        noise_multiplier=1.0,
        max_grad_norm=clip,
        expected_batch_size=batch_size,
    )

    def step(b: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        N._batch_loss(net, b).backward()
        opt.step()

    return step


def _opacus_ghost_step(model: N.LstmLM, batch_size: int, clip: float = 1.0) -> Step:
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

    net = GradSampleModuleFastGradientClipping(_dplstm(model), max_grad_norm=clip, use_ghost_clipping=True)
    opt = DPOptimizerFastGradientClipping(
        torch.optim.Adam(net.parameters(), lr=1e-3),
        noise_multiplier=1.0,
        max_grad_norm=clip,
        expected_batch_size=batch_size,
    )

    def step(b: torch.Tensor) -> None:
        from userlibri.lm.dp_lstm import _per_example_loss

        opt.zero_grad(set_to_none=True)
        width = int((b != -100).sum(dim=1).max())
        b = b[:, :width]
        logits, _ = net(b[:, :-1].clamp(min=0))
        losses = _per_example_loss(logits, b[:, 1:])
        DPTensorFastGradientClipping(net, opt, losses, "mean").backward()
        opt.step()

    return step


def _interleaved(steps: dict[str, Step], batches: list[torch.Tensor], rounds: dict[str, int]) -> dict:
    """Per mode, seconds of each step, taking modes in turn on the same batch (first round is warm-up)."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r, b in enumerate(batches):
        for name, fn in steps.items():
            if r >= rounds[name]:
                continue
            t = time.perf_counter()
            fn(b)
            times[name].append(time.perf_counter() - t)
    return times


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


def _user_runs(dirs: list[str]) -> list[dict]:
    out = []
    for d in dirs:
        info = json.loads((Path(d) / TRAIN_INFO_FILE).read_text())
        privacy = json.loads((Path(d) / "privacy.json").read_text())
        out.append(
            {
                "dir": d,
                "privacy": info["privacy_config"]["mechanism"],
                "epsilon": info.get("epsilon"),
                "delta": privacy.get("delta"),
                "noise_multiplier": privacy.get("noise_multiplier"),
                "steps": privacy.get("steps"),
                "sentences": info["sentences"],
                "epochs": info["train_config"]["epochs"],
                "batch_size": info["train_config"]["batch_size"],
                "lr": info["train_config"]["lr"],
                "threads": info["train_config"]["threads"],
                "train_minutes": info["train_seconds"] / 60.0,
                "dev_perplexity_background": info.get("dev_perplexity_background"),
                "dev_perplexity": info.get("dev_perplexity"),
            }
        )
    return out


def _default_inputs(text: str | None, tokenizer: str | None) -> tuple[str, str]:
    """Prepare what ``make bench`` does not pass: book sentences from the fetched cache (normalised
    like UserLibri LM text) and a 500-piece tokenizer trained on them."""
    from userlibri.constants import DEFAULT_CACHE_DIR
    from userlibri.data.books import BookCorpus
    from userlibri.text import normalize_transcript, split_sentences
    from userlibri.text.tokenizer import TokenizerConfig, train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="neural_lm_bench."))
    if text is None:
        book = BookCorpus.open(DEFAULT_CACHE_DIR / "corpora").load("2701")
        lines = []
        for chapter in book.chapters:
            for sentence in split_sentences(chapter.text):
                norm = normalize_transcript(sentence)
                if len(norm.split()) >= 3:
                    lines.append(norm)
        text = str(work / "sentences.txt")
        Path(text).write_text("\n".join(lines[:8000]) + "\n", encoding="utf-8")
    if tokenizer is None:
        tokenizer = str(train_tokenizer(Path(text), work / "tokenizer", TokenizerConfig(vocab_size=500)).path)
    return text, tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", help="sentencepiece dir/model (default: trained on --text)")
    ap.add_argument("--text", help="one sentence a line (default: 8,000 Moby-Dick sentences from the cache)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--opacus-reference", action="store_true", help="also time Opacus DPLSTM (slow)")
    ap.add_argument("--user-run", action="append", default=[], help="a personal LM dir to report")
    ap.add_argument("--out", default="benchmarks/results/neural_lm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.text is None or args.tokenizer is None:
        args.text, args.tokenizer = _default_inputs(args.text, args.tokenizer)
    tok = Tokenizer.load(args.tokenizer)
    sents = read_sentences([args.text])
    enc = N.encode_sentences(sents, tok)
    data = N._Sentences(enc, N.DEFAULT_MAX_TOKENS).data
    g = torch.Generator().manual_seed(0)
    n_batches = args.rounds + 1
    batches = [data[torch.randperm(len(data), generator=g)[: args.batch_size]] for _ in range(n_batches)]
    torch.manual_seed(0)
    model = N.LstmLM(N.default_config(tok))
    steps: dict[str, Step] = {
        "plain": _plain_step(N.LstmLM(model.config).train()),
        "dp_sgd": _dp_step(N.LstmLM(model.config).train(), args.batch_size),
    }
    rounds = {"plain": args.rounds + 1, "dp_sgd": args.rounds + 1}
    if args.opacus_reference:
        steps["opacus_dplstm_hooks"] = _opacus_hooks_step(model, args.batch_size)
        steps["opacus_dplstm_ghost"] = _opacus_ghost_step(model, args.batch_size)
        rounds.update(opacus_dplstm_hooks=3, opacus_dplstm_ghost=3)
    times = _interleaved(steps, batches, rounds)
    med = {k: float(np.median(v[1:])) for k, v in times.items()}
    ratios = [d / p for p, d in zip(times["plain"][1:], times["dp_sgd"][1:], strict=True)]
    res: dict = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "parameters": N.num_parameters(model),
        "mean_tokens_per_sentence": float(np.mean([len(e) for e in enc])),
        "timed_steps": {k: len(v) - 1 for k, v in times.items()},
        "step_seconds_plain": med["plain"],
        "step_seconds_dp_sgd": med["dp_sgd"],
        "dp_over_plain": float(np.median(ratios)),
        "dp_over_plain_range": [float(min(ratios)), float(max(ratios))],
        "dp_sgd_method": "book-keeping ghost clipping over an unrolled nn.LSTM (lm/dp_lstm.py)",
    }
    for k in ("opacus_dplstm_hooks", "opacus_dplstm_ghost"):
        if k in med:
            res[f"step_seconds_{k}"] = med[k]
            res[f"{k}_over_plain"] = med[k] / med["plain"]
    with tempfile.TemporaryDirectory() as d:
        files = export_lm(model, d)
        for kind, path in files.items():
            res[f"size_mb_{kind}"] = path.stat().st_size / 1e6
            for b in (1, 8):
                res[f"onnx_ms_per_token_{kind}_batch{b}"] = 1e3 * _onnx_latency(path, tok, b)
    if args.user_run:
        res["per_user_runs"] = _user_runs(args.user_run)
    write_json_atomic(args.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
