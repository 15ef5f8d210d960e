"""Per-user LM benchmark: 4-gram estimation time on a 100k-word book, the held-out perplexity table
(background vs personal vs interpolated n-gram, optionally DP neural LMs at several epsilons) on
a UserLibri build, and the n-gram memorisation audit. Writes benchmarks/results/lm.json.

Usage: python benchmarks/lm.py [--dataset work/demo/UserLibri] [--out work/lm_bench]
       [--neural-background DIR --tokenizer MODEL [--epsilons 1,4,8,inf] [--neural-sentences N]]

Without ``--neural-background`` the DP neural rows are not run (the JSON says why).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from userlibri.fsio import write_json_atomic
from userlibri.lm import evaluate as ev
from userlibri.lm.ngram import NgramConfig, train_ngram
from userlibri.lm.users import build_user_lms, evaluate_user_lms, format_table
from userlibri.privacy.audit import AuditConfig, run_audit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "lm.json"
NEURAL_NOT_RUN = (
    "DP neural rows not run: pass --neural-background and --tokenizer. On this 2-core CPU a DP-SGD "
    "fine-tune of the default 1M-parameter LSTM on one book takes minutes per epsilon, and 4 books x "
    "4 epsilons plus a background LM do not fit in a few minutes."
)


def _words(lines: list[str]) -> int:
    return sum(len(s.split()) for s in lines)


def time_4gram(dataset: Path, target_words: int = 100_000, repeats: int = 3) -> dict:
    """lmplz + build_binary on the first ``target_words`` words of the largest demo book."""
    from userlibri.data.dataset import Dataset

    ds = Dataset(dataset)
    book = max(ds.lm_books(), key=lambda b: _words(ds.lm_text(b)))
    text, n = [], 0
    for s in ds.lm_text(book):
        if n >= target_words:
            break
        text.append(s)
        n += len(s.split())
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            t0 = time.perf_counter()
            model = train_ngram(text, tmp, NgramConfig(order=4), name=f"u{i}")
            times.append(time.perf_counter() - t0)
    return {
        "book": book,
        "sentences": len(text),
        "words": n,
        "counts": list(model.counts),
        "seconds": times,
        "median_seconds": statistics.median(times),
        "target_seconds": 2.0,
    }


def neural_rows(
    users_dir: Path,
    background: Path,
    tokenizer: Path,
    epsilons: list[float],
    max_sentences: int,
    books: list[str] | None = None,
) -> dict:
    """Personalise the neural background LM on each book's train.txt at each epsilon; held-out ppl."""
    from userlibri.lm import neural as N
    from userlibri.lm.neural_pipeline import personalize_dir

    out: dict = {
        "background": str(background),
        "epsilons": epsilons,
        "train": "first N sentences of the book's train.txt, 1 epoch, batch 64, lr 1e-3",
        "max_sentences": max_sentences,
        "books": {},
    }
    ckpt = background / "lm.pt" if background.is_dir() else background
    train_cfg = N.TrainConfig(epochs=1.0, lr=1e-3, batch_size=64, progress=False, threads=2)
    for bdir in sorted(p for p in users_dir.iterdir() if (p / "mix.json").is_file()):
        if books and bdir.name not in books:
            continue
        train = ev.read_sentences_file(bdir / "train.txt")[:max_sentences]
        heldout = ev.read_sentences_file(bdir / "heldout.txt")
        row = {
            "train_sentences": len(train),
            "background": ev.neural_perplexity(background, heldout, tokenizer).perplexity,
        }
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "train.txt").write_text("\n".join(train) + "\n")
            for eps in epsilons:
                privacy = (
                    N.PrivacyConfig()
                    if math.isinf(eps)
                    else N.PrivacyConfig(mechanism="dp-sgd", target_epsilon=eps)
                )
                t0 = time.perf_counter()
                lm_dir = Path(tmp) / f"eps{eps}"
                personalize_dir(
                    ckpt, [Path(tmp) / "train.txt"], tokenizer, lm_dir, train_cfg, privacy, int8=False
                )
                row[f"eps_{eps}"] = {
                    "perplexity": ev.neural_perplexity(lm_dir, heldout, tokenizer).perplexity,
                    "seconds": time.perf_counter() - t0,
                }
        out["books"][bdir.name] = row
        logging.info("neural %s: %s", bdir.name, row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=ROOT / "work" / "demo" / "UserLibri")
    ap.add_argument("--out", type=Path, default=ROOT / "work" / "lm_bench")
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--neural-background", type=Path, default=None)
    ap.add_argument("--tokenizer", type=Path, default=None)
    ap.add_argument("--epsilons", default="1,4,8,inf")
    ap.add_argument("--neural-sentences", type=int, default=2000)
    ap.add_argument("--neural-books", default="", help="Only these books for the neural rows.")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.dataset.exists():
        raise SystemExit(f"{args.dataset}: no UserLibri build (run the mini recipe first)")
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_start": list(os.getloadavg()),
        }
    }
    result["per_user_4gram"] = time_4gram(args.dataset)
    t0 = time.perf_counter()
    kw = {"corpus_dir": args.corpus} if args.corpus else {}
    summary = build_user_lms(args.dataset, args.out, progress=False, **kw)
    result["pipeline_seconds"] = time.perf_counter() - t0
    result["pipeline"] = summary
    table = evaluate_user_lms(args.out, progress=False)
    result["perplexity"] = table
    print(format_table(table))
    if args.neural_background and args.tokenizer:
        eps = [float(x) for x in args.epsilons.split(",")]
        t0 = time.perf_counter()
        result["neural"] = neural_rows(
            args.out,
            args.neural_background,
            args.tokenizer,
            eps,
            args.neural_sentences,
            args.neural_books.replace(",", " ").split() or None,
        )
        result["neural"]["seconds"] = time.perf_counter() - t0
    else:
        result["neural"] = {"not_run": NEURAL_NOT_RUN}
    book = result["per_user_4gram"]["book"]
    audit = run_audit(
        ev.read_sentences_file(args.out / book / "train.txt"),
        ["ngram"],
        AuditConfig(repetitions=(1, 4, 16), canaries_per_repetition=4, candidates=10_000),
    )
    result["audit_ngram"] = {
        "book": book,
        "max_exposure": audit["max_exposure"],
        "by_repetition": audit["results"]["ngram"]["by_repetition"],
    }
    result["machine"]["load_average_end"] = list(os.getloadavg())
    write_json_atomic(args.results, result)
    print(f"per-user 4-gram: {result['per_user_4gram']['median_seconds']:.2f} s; wrote {args.results}")


if __name__ == "__main__":
    main()
