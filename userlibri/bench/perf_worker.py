"""One performance measurement in a fresh process: what ``userlibri bench perf`` runs per
configuration, so that the peak RSS (``ru_maxrss``) it reports is that configuration's alone.

``python -m userlibri.bench.perf_worker`` reads one JSON :class:`RunSpec` on stdin and writes one
JSON result on stdout (see :func:`measure`). Torch-free: it imports what the phone would.

Streaming: each utterance is fed to a new stream in pieces of ``chunk_ms`` (default: the model's
chunk, e.g. 320 ms); after each piece ``decode_streams`` runs (timed: the per-chunk latency of calls
that decoded at least one encoder chunk) and the partial result is read (timed separately). The
first non-empty partial gives the first-partial figures: compute spent until then, the audio fed,
the timestamp of its first token, and how much audio passed between the decode call that first
produced that token's encoder frame and the call that showed it (0: shown at once).

The audio is decoded ``passes`` times (default 3). RTF, time shares and decode seconds come from
the fastest pass, as ``timeit`` takes the minimum: on a shared machine the slower passes measure
the neighbours (single passes of 5 utterances drifted by +-0.015 in the search share, measured);
latencies pool all passes and ``pass_seconds`` lists every pass.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.errors import ConfigError

MODES = ("streaming", "offline")
#: Seconds of low-level noise decoded (untimed) before measuring: session allocation, caches.
WARMUP_SECONDS = 1.0


@dataclass(frozen=True)
class RunSpec:
    """One configuration to measure: model precision and threads, decoder, mode and LM."""

    model: str
    precision: str
    threads: int
    decoder: str
    mode: str
    lm: str | None
    audio: tuple[str, ...]
    beam: int
    lm_weight: float
    #: Audio fed per ``accept_waveform`` call (streaming); None: the model's chunk.
    chunk_ms: float | None = None
    warmup: bool = True
    #: Times the audio is decoded; timings from the fastest pass (see the module docstring).
    passes: int = 3

    def validate(self) -> RunSpec:
        if self.mode not in MODES:
            raise ConfigError(f"mode: expected one of {MODES}, found {self.mode!r}")
        if self.chunk_ms is not None and not self.chunk_ms > 0:
            raise ConfigError(f"chunk_ms: expected > 0 (or None: the model's chunk), found {self.chunk_ms}")
        if not self.audio:
            raise ConfigError("audio: expected at least one audio file, found none")
        if self.passes < 1:
            raise ConfigError(f"passes: expected >= 1, found {self.passes}")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"run spec: unknown keys {unknown}, expected {sorted(names)}")
        data["audio"] = tuple(data["audio"])
        return cls(**data).validate()


def rss_mb() -> float:
    """Current resident set size in MB (``/proc/self/status`` VmRSS; peak RSS where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float | int | None]:
    """p50/p95/max (times ``scale``: ms by default) and the count; None when empty."""
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    arr = np.asarray(values) * scale
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "max": round(float(arr.max()), 3),
        "n": len(values),
    }


def _stream_one(rec: Any, samples: np.ndarray, rate: int, piece: int) -> dict[str, Any]:
    """Feed one utterance to a new stream ``piece`` samples at a time; its timings."""
    stream = rec.create_stream()
    chunk_s: list[float] = []
    partial_s: list[float] = []
    # Encoder frames decoded after each call, and the audio (s) fed by then.
    frames_after: list[int] = []
    audio_after: list[float] = []
    first: dict[str, Any] | None = None
    spent = 0.0
    t_start, cpu_start = time.perf_counter(), time.process_time()
    for start in range(0, len(samples), piece):
        t0 = time.perf_counter()
        stream.accept_waveform(samples[start : start + piece], rate)
        before = stream.encoder_frames
        t1 = time.perf_counter()
        rec.decode_streams([stream])
        t2 = time.perf_counter()
        result = rec.get_result(stream)
        t3 = time.perf_counter()
        spent += t3 - t0
        if stream.encoder_frames > before:
            chunk_s.append(t2 - t1)
        partial_s.append(t3 - t2)
        frames_after.append(stream.encoder_frames)
        audio_after.append(min(start + piece, len(samples)) / rate)
        if first is None and result.tokens:
            token_frame = round(result.timestamps[0] / rec.frame_seconds)
            produced = next(i for i, f in enumerate(frames_after) if f > token_frame)
            first = {
                "compute_seconds": spent,
                "step_seconds": t3 - t0,
                "audio_seconds": audio_after[-1],
                "token_seconds": result.timestamps[0],
                "wait_seconds": audio_after[-1] - audio_after[produced],
            }
    stream.input_finished()
    rec.decode_streams([stream])
    final = rec.get_result(stream)
    wall = time.perf_counter() - t_start
    return {
        "wall": wall,
        "cpu": time.process_time() - cpu_start,
        "audio": final.audio_seconds,
        "timings": final.timings,
        "chunks": chunk_s,
        "partials": partial_s,
        "first": first,
        "words": len(final.text.split()),
    }


def _offline_one(rec: Any, samples: np.ndarray, rate: int) -> dict[str, Any]:
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = rec.recognize(samples, rate)
    return {
        "wall": time.perf_counter() - t0,
        "cpu": time.process_time() - cpu0,
        "audio": result.audio_seconds,
        "timings": result.timings,
        "words": len(result.text.split()),
    }


def measure(spec: RunSpec) -> dict[str, Any]:
    """Load the recognizer of ``spec`` (timed; RSS after loading) and decode its audio: RTF, time
    shares, per-chunk latency, first partial and peak RSS."""
    from userlibri.data.audio import read_audio
    from userlibri.decode.hyp import DecoderConfig
    from userlibri.recognizer import OfflineRecognizer, RecognizerConfig

    spec.validate()
    rss_start = rss_mb()
    config = RecognizerConfig(
        spec.decoder, DecoderConfig(beam=spec.beam, lm_weight=spec.lm_weight), spec.precision, spec.threads
    ).validate()
    lm_load = None
    t0 = time.perf_counter()
    if spec.mode == "streaming":
        from userlibri.stream import EndpointConfig, OnlineRecognizer

        rec: Any = OnlineRecognizer(spec.model, config, EndpointConfig(enabled=False), lm=spec.lm)
        model_load = time.perf_counter() - t0
        if spec.lm is not None:
            lm_load = rec.lms.get(spec.lm)[0].load_seconds
    else:
        rec = OfflineRecognizer(spec.model, lm=spec.lm, config=config)
        lm_load = rec.lm_info.load_seconds if rec.lm_info is not None else None
        model_load = time.perf_counter() - t0 - (lm_load or 0.0)
    rss_loaded, peak_loaded = rss_mb(), peak_rss_mb()
    meta = rec.am.meta
    rate = meta.features.sample_rate
    model_chunk_ms = meta.chunk_shift * meta.features.frame_shift_ms
    chunk_ms = spec.chunk_ms if spec.chunk_ms is not None else model_chunk_ms
    piece = max(1, round(rate * chunk_ms / 1000))
    if spec.warmup:
        noise = np.random.RandomState(0).randn(int(WARMUP_SECONDS * rate)).astype(np.float32) * 0.01
        if spec.mode == "streaming":
            _stream_one(rec, noise, rate, piece)
        else:
            _offline_one(rec, noise, rate)
    clips = [read_audio(path, expected_rate=None) for path in spec.audio]
    passes = []
    for _ in range(spec.passes):
        passes.append(
            [
                _stream_one(rec, samples, sr, piece)
                if spec.mode == "streaming"
                else _offline_one(rec, samples, sr)
                for samples, sr in clips
            ]
        )
    pass_seconds = [sum(r["wall"] for r in runs) for runs in passes]
    runs = passes[pass_seconds.index(min(pass_seconds))]
    every = [r for runs_ in passes for r in runs_]
    audio = sum(r["audio"] for r in runs)
    wall = sum(r["wall"] for r in runs)
    cpu = sum(r["cpu"] for r in runs)
    parts = {k: sum(r["timings"].get(k, 0.0) for r in runs) for k in ("features", "encoder", "search")}
    out: dict[str, Any] = {
        "utterances": len(runs),
        "passes": len(passes),
        "pass_seconds": [round(w, 4) for w in pass_seconds],
        "audio_seconds": round(audio, 3),
        "decode_seconds": round(wall, 4),
        "rtf": round(wall / audio, 5) if audio > 0 else None,
        # CPU seconds of the process (all its threads) per audio second: robust to a busy machine.
        "rtf_cpu": round(cpu / audio, 5) if audio > 0 else None,
        "shares": {k: round(v / wall, 4) if wall > 0 else None for k, v in parts.items()},
        "words": sum(r["words"] for r in runs),
        "model_load_seconds": round(model_load, 4),
        "lm_load_seconds": None if lm_load is None else round(lm_load, 4),
        "rss_start_mb": round(rss_start, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "peak_rss_loaded_mb": round(peak_loaded, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_loaded": "torch" in sys.modules,
    }
    out["shares"]["other"] = (
        round(1.0 - sum(v or 0.0 for v in out["shares"].values()), 4) if wall > 0 else None
    )
    if spec.mode == "streaming":
        firsts = [r["first"] for r in every if r["first"] is not None]
        out["chunk_ms"] = chunk_ms
        out["model_chunk_ms"] = model_chunk_ms
        out["chunk_latency_ms"] = _percentiles([t for r in every for t in r["chunks"]])
        out["partial_result_ms"] = _percentiles([t for r in every for t in r["partials"]])
        out["first_partial"] = {
            "decodes": len(firsts),  # utterances x passes with a partial
            "compute_ms": _percentiles([f["compute_seconds"] for f in firsts]),
            "step_ms": _percentiles([f["step_seconds"] for f in firsts]),
            "audio_s": _percentiles([f["audio_seconds"] for f in firsts], scale=1.0),
            "token_s": _percentiles([f["token_seconds"] for f in firsts], scale=1.0),
            "wait_s": _percentiles([f["wait_seconds"] for f in firsts], scale=1.0),
        }
    return out


def main() -> int:
    """Read a RunSpec (JSON) on stdin, write the measurement (JSON) on stdout."""
    try:
        spec = RunSpec.from_json(sys.stdin.read())
        result = measure(spec)
    except Exception as e:  # reported to the parent process, which raises it with context
        json.dump({"error": f"{type(e).__name__}: {e}"}, sys.stdout)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
