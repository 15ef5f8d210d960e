"""Streaming recognizer cost: RTF, per-user LM load time, first-partial latency and peak RSS of an
OnlineRecognizer (one thread) with a per-user word 4-gram, over manifest audio fed in 160 ms pieces.
``search_share`` is the beam search's part of features + encoder + search (Stream.timings; the
search includes the joiner and decoder network calls it makes), from the repeat with the median
share.

    .venv/bin/python benchmarks/stream_recognizer.py MODEL_DIR LM MANIFEST [--decoder transducer] [--n 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from userlibri.data.audio import read_audio
from userlibri.data.manifest import read_manifest
from userlibri.decode import DecoderConfig
from userlibri.fsio import write_json_atomic
from userlibri.recognizer import RecognizerConfig
from userlibri.stream import OnlineRecognizer
from userlibri.transcribe import _stream_decode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("lm", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--decoder", default="transducer")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="Decode the utterances this many times.")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = RecognizerConfig(args.decoder, DecoderConfig(beam=args.beam), args.precision, 1)
    t0 = time.perf_counter()
    rec = OnlineRecognizer(args.model, cfg)
    model_load = time.perf_counter() - t0
    loaded, _ = rec.lms.get(args.lm)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    utts = [read_audio(u.audio, expected_rate=None) for u in read_manifest(args.manifest)[: args.n]]
    runs = []
    firsts: list[float] = []
    for _ in range(args.repeats):
        audio = search = enc = feats = 0.0
        firsts = []
        for samples, rate in utts:
            res, first = _stream_decode(rec, samples, rate, args.lm, rate * 160 // 1000)
            audio += res.audio_seconds
            search += res.timings["search"]
            enc += res.timings["encoder"]
            feats += res.timings["features"]
            firsts.append(first)
        runs.append((search + enc + feats, search, enc, audio))
    # The repeat with the median search share (the machine may be shared: one load spike must
    # not decide the result); every repeat's share is listed.
    shares = [r[1] / r[0] for r in runs]
    total, search, enc, audio = runs[sorted(range(len(runs)), key=shares.__getitem__)[len(runs) // 2]]
    out = {
        "model": str(args.model),
        "precision": args.precision,
        "decoder": args.decoder,
        "beam": args.beam,
        "threads": 1,
        "lm": str(args.lm),
        "utterances": args.n,
        "audio_seconds": round(audio, 2),
        "rtf": round(total / audio, 4),
        "rtf_encoder": round(enc / audio, 4),
        "rtf_search": round(search / audio, 4),
        "search_share": round(search / total, 3),
        "search_share_per_repeat": [round(x, 3) for x in shares],
        "timing": "wall seconds per component (Stream.timings); the repeat with the median search share",
        "model_load_seconds": round(model_load, 3),
        "lm_load_seconds": round(loaded.load_seconds, 3),
        "first_partial_compute_seconds": [round(f, 4) for f in firsts],
        "peak_rss_mb_before": round(rss0, 1),
        "peak_rss_mb_after_load": round(rss_loaded, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out, indent=1))
    if args.out:
        write_json_atomic(args.out, out)


if __name__ == "__main__":
    main()
