"""CTC beam search speed and accuracy: ours vs pyctcdecode on synthetic CTC log-probs.

Trains a V=500 sentencepiece tokenizer and a word 4-gram (lmplz) on one book's LM text, builds
synthetic (T=1000, V=500) log-probs from held-in sentences of that text, and decodes them at beam
10 with the KenLM word scorer fused, with our ``CtcBeamSearch`` and (when installed) pyctcdecode
0.5 with the same KenLM model. Two kinds of log-probs:

* ``noisy``: every token for 2-4 frames with p ~ 0.85 (a confusable competitor 25% of the time),
  blank frames with p(blank) ~ 0.94 only: no frame is "quiet" (a hard case for our decoder);
* ``peaky``: CTC-like, one frame per token (p ~ 0.9), then 1-4 blank frames with p(blank) > 0.999.

Speed is CPU time of this process (``time.process_time``), frames per second over all
utterances, the median of ``--repeats`` interleaved runs (each repeat runs every decoder once);
WER is word errors over reference words.

    .venv/bin/python benchmarks/ctc_beam_speed.py [--text FILE] [--utts 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from userlibri.decode.ctc_beam import CtcBeamSearch, ctc_greedy
from userlibri.decode.hyp import DecoderConfig
from userlibri.fsio import write_json_atomic
from userlibri.lm.kenlm_scorer import KenLMWordScorer
from userlibri.lm.ngram import NgramConfig, train_ngram
from userlibri.text.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEXT = ROOT / "work/demo/UserLibri/lm_data/1342_lm_train.txt"
FRAMES = 1000


def _word_errors(ref: str, hyp: str) -> tuple[int, int]:
    r, h = ref.split(), hyp.split()
    d = list(range(len(h) + 1))
    for i, a in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, b in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a != b))
    return d[-1], len(r)


def _sentences_ids(tok: Tokenizer, lines: list[str], rng: np.random.Generator, n: int) -> list[int]:
    ids: list[int] = []
    i = int(rng.integers(len(lines)))
    while len(ids) < n:
        ids += tok.encode(lines[i % len(lines)])
        i += 1
    return ids[:n]


def noisy(tok: Tokenizer, lines: list[str], seed: int) -> tuple[list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    v = tok.vocab_size
    ids = _sentences_ids(tok, lines, rng, FRAMES // 4)
    logits = rng.normal(0, 1.5, size=(FRAMES, v))
    t = 0
    for k in ids:
        for j in range(int(rng.integers(2, 5))):
            if t >= FRAMES:
                break
            if j < 2:
                logits[t, k] += 9
                if rng.random() < 0.25:
                    logits[t, rng.integers(3, v)] += 9 + rng.normal()
            else:
                logits[t, 0] += 10
            t += 1
    logits[t:, 0] += 10
    return ids, logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def peaky(tok: Tokenizer, lines: list[str], seed: int) -> tuple[list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    v = tok.vocab_size
    ids = _sentences_ids(tok, lines, rng, FRAMES // 4)
    logits = rng.normal(0, 1.0, size=(FRAMES, v))
    t = 0
    for k in ids:
        if t >= FRAMES:
            break
        logits[t, k] += 14
        if rng.random() < 0.25:
            logits[t, rng.integers(3, v)] += 13 + rng.normal()
        t += 1
        for _ in range(int(rng.integers(1, 5))):
            if t >= FRAMES:
                break
            logits[t, 0] += 16
            t += 1
    logits[t:, 0] += 16
    return ids, logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def _timed(runs, data, repeats: int) -> dict[str, tuple[float, list[str]]]:  # noqa: ANN001
    """Per run ``(name, fn, reset)``: frames per second (CPU time, median of ``repeats``) and the
    outputs. Repeats are interleaved (each runs every decoder once) so that load on a shared
    machine affects all alike; ``reset()`` before each run empties caches so that no repeat
    profits from having seen the same utterances."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    outs: dict[str, list[str]] = {}
    for r in range(repeats):
        for name, fn, reset in runs[r % len(runs) :] + runs[: r % len(runs)]:  # order rotates
            if reset is not None:
                reset()
            t0 = time.process_time()
            outs[name] = [fn(lp) for _, lp in data]
            times[name].append(time.process_time() - t0)
    return {name: (len(data) * FRAMES / statistics.median(times[name]), outs[name]) for name, _, _ in runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    ap.add_argument("--utts", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ctc_beam_speed.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lines = [s for s in args.text.read_text(encoding="utf-8").splitlines() if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer(args.text, Path(tmp) / "tok", TokenizerConfig(vocab_size=500))
        model = train_ngram(args.text, Path(tmp) / "lm", NgramConfig(order=4))
        lm = KenLMWordScorer(model.binary, tok)
        try:
            from pyctcdecode import build_ctcdecoder

            labels = ["", "\u2047", "<unk>", *tok.pieces[3:]]
            peer = build_ctcdecoder(
                labels,
                kenlm_model_path=str(model.binary),
                unigrams=list(lm.vocabulary),
                alpha=args.lm_weight,
                beta=0.0,
            )
        except ImportError:
            peer = None
        config = DecoderConfig(beam=args.beam, lm_weight=args.lm_weight)
        # The scorer built its vocabulary's prefix look-ahead table when loaded, before timing,
        # as pyctcdecode builds its unigram CharTrie in build_ctcdecoder.
        decoders = [CtcBeamSearch(config, lm=lm, suppress_ids=[1])]

        def fresh() -> None:
            # A new decoder: its LM-state memo starts empty.
            decoders[0] = CtcBeamSearch(config, lm=lm, suppress_ids=[1])

        results: dict[str, object] = {
            "frames_per_utt": FRAMES,
            "vocab": tok.vocab_size,
            "utts": args.utts,
            "beam": args.beam,
            "lm": "KenLM word 4-gram via KenLMWordScorer",
            "lm_weight": args.lm_weight,
            "timing": "CPU seconds of this process (time.process_time), median of interleaved repeats",
            "machine": platform.processor() or platform.machine(),
            "kinds": {},
        }
        for kind, make in (("noisy", noisy), ("peaky", peaky)):
            data = [make(tok, lines, 1000 + s) for s in range(args.utts)]
            refs = [tok.decode(ids) for ids, _ in data]
            row: dict[str, object] = {
                "quiet_frame_share": float(np.mean([(lp[:, 0] > np.log(0.999)).mean() for _, lp in data]))
            }
            runs = [
                ("ours", lambda lp: tok.decode(list(decoders[0].decode(lp)[0].tokens)), fresh),
                ("greedy", lambda lp: tok.decode(list(ctc_greedy(lp).tokens)), None),
            ]
            if peer is not None:
                runs.append(("pyctcdecode", lambda lp: peer.decode(lp, beam_width=args.beam), None))
            for name, (fps, outs) in _timed(runs, data, args.repeats).items():
                errs = [_word_errors(r, h) for r, h in zip(refs, outs, strict=True)]
                wer = sum(e for e, _ in errs) / sum(n for _, n in errs)
                row[name] = {"frames_per_s": round(fps), "wer": wer}
            if peer is not None:
                ratio = row["ours"]["frames_per_s"] / row["pyctcdecode"]["frames_per_s"]
                row["speedup_vs_pyctcdecode"] = round(ratio, 2)
            results["kinds"][kind] = row  # type: ignore[index]
            print(kind, json.dumps(row))
    write_json_atomic(args.out, results)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
