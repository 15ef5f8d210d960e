"""``userlibri bench perf``: on-device cost of the recognizer for every configuration of
{precision} x {intra-op threads} x {streaming, offline} x {CTC, transducer} x {no LM, per-user LM}.

Each configuration runs in a fresh process (:mod:`userlibri.bench.perf_worker`), so its peak RSS
is its own. Reported per configuration: RTF (wall time of decoding / audio seconds), the shares
of feature, encoder and search time (beam search + LM fusion is "search"), per-chunk latency
(streaming: the wall time of each ``decode_streams`` call on one chunk of fed audio) p50/p95,
first-partial figures, RSS after model + LM load and peak RSS, model and LM load time; plus the
model file sizes per precision and the LM file sizes. :data:`TARGETS` (issue 5) are checked on
the one-thread int8 streaming transducer with the LM. Torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from userlibri.asr.onnx_model import (
    PRECISION_SUFFIX,
    ROLES,
    TOKENIZER_FILE,
    TOKENS_FILE,
    model_file,
    roles_for_mode,
)
from userlibri.bench.perf_worker import MODES, RunSpec
from userlibri.decode.hyp import DEFAULT_BEAM, DEFAULT_LM_WEIGHT
from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.lm.loader import LM_DIR_CANDIDATES, resolve_lm
from userlibri.recognizer import DECODERS, PRECISIONS

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("benchmarks/results/perf.json")
DEFAULT_THREADS = (1, 2)
DEFAULT_UTTERANCES = 5
#: Seconds one configuration may run before it is stopped.
DEFAULT_RUN_TIMEOUT = 1800.0
_MB = 1024 * 1024


@dataclass(frozen=True)
class PerfConfig:
    """Which configurations to measure, and the decoding settings they share."""

    #: None: every precision whose files the model directory holds.
    precisions: tuple[str, ...] | None = None
    threads: tuple[int, ...] = DEFAULT_THREADS
    decoders: tuple[str, ...] = DECODERS
    modes: tuple[str, ...] = MODES
    #: Per-user LM directory or file; None: no-LM runs only.
    lm: Path | None = None
    #: With an LM, also run every configuration without it.
    no_lm: bool = True
    beam: int = DEFAULT_BEAM
    lm_weight: float = DEFAULT_LM_WEIGHT
    #: Streaming audio fed per call in ms; None: the model's chunk.
    chunk_ms: float | None = None
    warmup: bool = True
    #: Decodes of the audio per configuration; timings from the fastest (perf_worker docstring).
    passes: int = 3
    timeout: float = DEFAULT_RUN_TIMEOUT

    def validate(self) -> PerfConfig:
        """Raise ``ConfigError`` naming the first bad value; return self."""

        def check(name: str, values: Sequence[Any], allowed: Sequence[Any]) -> None:
            if not values:
                raise ConfigError(f"{name}: expected at least one of {list(allowed)}, found none")
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"{name}: expected values from {list(allowed)}, found {bad}")

        if self.precisions is not None:
            check("precisions", self.precisions, PRECISIONS)
        check("decoders", self.decoders, DECODERS)
        check("modes", self.modes, MODES)
        if not self.threads or any(t < 1 for t in self.threads):
            raise ConfigError(f"threads: expected one or more counts >= 1, found {list(self.threads)}")
        if self.beam < 1:
            raise ConfigError(f"beam: expected >= 1, found {self.beam}")
        if self.chunk_ms is not None and not self.chunk_ms > 0:
            raise ConfigError(f"chunk_ms: expected > 0 (or the model's chunk), found {self.chunk_ms}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout: expected > 0 seconds, found {self.timeout}")
        if self.passes < 1:
            raise ConfigError(f"passes: expected >= 1, found {self.passes}")
        return self


# -- inputs -------------------------------------------------------------------------------------
def audio_from_manifest(path: str | Path, n: int | None = None) -> list[Path]:
    """Audio files of the first ``n`` utterances (all: None) of a jsonl manifest; an error for an
    empty manifest."""
    from userlibri.data.manifest import read_manifest

    utts = read_manifest(path)
    if not utts:
        raise DataFormatError(path, "a manifest with at least one utterance", "no utterances")
    return [Path(u.audio) for u in (utts[:n] if n else utts)]


def user_with_lm(
    manifest: str | Path, lm_root: str | Path, n: int | None = None
) -> tuple[list[Path], Path, str]:
    """``(audio of the user's first n utterances, the user's LM dir, user id)`` for the first user
    (sorted ids) of ``manifest`` whose book has a per-user LM directory ``lm_root/<book>``."""
    from userlibri.data.manifest import read_manifest

    utts = read_manifest(manifest)
    if not utts:
        raise DataFormatError(manifest, "a manifest with at least one utterance", "no utterances")
    for user in sorted({u.user for u in utts}):
        mine = [u for u in utts if u.user == user]
        lm_dir = Path(lm_root) / mine[0].book
        if lm_dir.is_dir():
            return [Path(u.audio) for u in (mine[:n] if n else mine)], lm_dir, user
    books = sorted({u.book for u in utts})
    raise DataFormatError(lm_root, f"a per-user LM directory for one of the books {books}", "none of them")


def check_audio(paths: Sequence[str | Path]) -> list[Path]:
    """The paths, or ``UserLibriError`` listing those that are not files."""
    if not paths:
        raise UserLibriError(
            "bench perf: expected at least one audio file (--audio or --manifest), found none"
        )
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise UserLibriError(
            f"bench perf: expected audio files, found nothing at {missing[:5]}"
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return [Path(p) for p in paths]


def _missing_files(model: Path, precision: str, modes: Sequence[str]) -> list[str]:
    roles = sorted({r for m in modes for r in roles_for_mode(m)})
    names = [model_file(r, precision) for r in roles] + [TOKENS_FILE, TOKENIZER_FILE]
    return [n for n in names if not (model / n).is_file()]


def resolve_precisions(model: Path, config: PerfConfig) -> tuple[list[str], dict[str, list[str]]]:
    """``(precisions to run, {skipped precision: its missing files})``. Requested precisions
    must all be complete (``DataFormatError`` listing the missing files); by default the
    complete ones run and the rest are reported as skipped."""
    if not model.is_dir():
        raise DataFormatError(model, "an acoustic-model directory", "no such directory")
    wanted = list(config.precisions) if config.precisions is not None else list(PRECISIONS)
    missing = {p: _missing_files(model, p, config.modes) for p in wanted}
    incomplete = {p: m for p, m in missing.items() if m}
    if config.precisions is not None and incomplete:
        found = "; ".join(f"{p}: missing {m}" for p, m in incomplete.items())
        raise DataFormatError(
            model, f"the model files of precisions {wanted} for modes {list(config.modes)}", found
        )
    runnable = [p for p in wanted if not incomplete.get(p)]
    if not runnable:
        found = "; ".join(f"{p}: missing {m}" for p, m in incomplete.items())
        raise DataFormatError(
            model, f"the files of at least one precision for modes {list(config.modes)}", found
        )
    return runnable, incomplete


def model_sizes(model: Path) -> dict[str, Any]:
    """File sizes (MB) per precision: each role, what streaming and offline load, all."""
    out: dict[str, Any] = {}
    for precision in PRECISION_SUFFIX:
        files = {r: (model / model_file(r, precision)) for r in ROLES}
        sizes = {r: p.stat().st_size / _MB for r, p in files.items() if p.is_file()}
        if not sizes:
            continue
        entry: dict[str, Any] = {
            "files_mb": {model_file(r, precision): round(s, 3) for r, s in sizes.items()}
        }
        for mode in MODES:
            roles = roles_for_mode(mode)
            if all(r in sizes for r in roles):
                entry[f"{mode}_mb"] = round(sum(sizes[r] for r in roles), 3)
        out[precision] = entry
    shared = [model / TOKENS_FILE, model / TOKENIZER_FILE]
    out["shared_mb"] = round(sum(p.stat().st_size for p in shared if p.is_file()) / _MB, 3)
    return out


def lm_sizes(lm: Path) -> dict[str, Any]:
    """The LM file the recognizers load from ``lm`` and the sizes of the LM files there (MB)."""
    kind, used = resolve_lm(lm)
    files = [lm / name for name, _ in LM_DIR_CANDIDATES] if lm.is_dir() else [lm]
    return {
        "path": str(lm),
        "kind": kind,
        "used": used.name,
        "used_mb": round(used.stat().st_size / _MB, 3),
        "files_mb": {p.name: round(p.stat().st_size / _MB, 3) for p in files if p.is_file()},
    }


# -- running ------------------------------------------------------------------------------------
def run_spec(spec: RunSpec, timeout: float = DEFAULT_RUN_TIMEOUT) -> dict[str, Any]:
    """Measure ``spec`` in a fresh Python process (same interpreter and environment)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "userlibri.bench.perf_worker"],
            input=spec.to_json(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UserLibriError(
            f"bench perf: {label(spec)}: expected to finish in {timeout:.0f} s, it did not"
        ) from None
    try:
        result = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        result = {}
    if proc.returncode != 0 or "error" in result or not result:
        why = result.get("error") or f"exit code {proc.returncode}"
        tail = proc.stderr.strip()[-1500:]
        raise UserLibriError(f"bench perf: {label(spec)} failed: {why}" + (f"\n{tail}" if tail else ""))
    return result


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages (None where the OS has none): was the machine busy?"""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def label(spec: RunSpec) -> str:
    """``int8/1t/streaming/transducer/lm`` style name of a configuration."""
    return f"{spec.precision}/{spec.threads}t/{spec.mode}/{spec.decoder}/{'lm' if spec.lm else 'no-lm'}"


def make_specs(
    model: Path, audio: Sequence[Path], config: PerfConfig, precisions: Sequence[str]
) -> list[RunSpec]:
    """Every configuration, in a fixed order: precision, threads, mode, decoder, LM."""
    lms: list[str | None] = (
        [None] if config.lm is None else ([None] if config.no_lm else []) + [str(config.lm)]
    )
    return [
        RunSpec(
            model=str(model),
            precision=p,
            threads=t,
            decoder=d,
            mode=m,
            lm=lm,
            audio=tuple(str(a) for a in audio),
            beam=config.beam,
            lm_weight=config.lm_weight,
            chunk_ms=config.chunk_ms,
            warmup=config.warmup,
            passes=config.passes,
        ).validate()
        for p in precisions
        for t in config.threads
        for m in config.modes
        for d in config.decoders
        for lm in lms
    ]


def run_perf(
    model: str | Path,
    audio: Sequence[str | Path],
    config: PerfConfig | None = None,
    progress: bool = True,
    runner: Callable[[RunSpec, float], dict[str, Any]] = run_spec,
) -> dict[str, Any]:
    """Measure every configuration of ``config`` on ``audio`` with the model at ``model``; the
    results (see the module docstring), targets included."""
    config = (config or PerfConfig()).validate()
    model = Path(model)
    precisions, skipped = resolve_precisions(model, config)
    paths = check_audio(audio)
    lm_info = lm_sizes(config.lm) if config.lm is not None else None
    specs = make_specs(model, paths, config, precisions)
    from tqdm import tqdm

    runs = []
    load_before = _loadavg()
    t0 = time.perf_counter()
    bar = tqdm(specs, desc="bench perf", unit="config", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(label(spec))
        result = runner(spec, config.timeout)
        log.info("%s: rtf %s, peak rss %s MB", label(spec), result.get("rtf"), result.get("peak_rss_mb"))
        runs.append(
            {
                "precision": spec.precision,
                "threads": spec.threads,
                "mode": spec.mode,
                "decoder": spec.decoder,
                "lm": spec.lm is not None,
                **result,
            }
        )
    results: dict[str, Any] = {
        "model": str(model),
        "model_sizes": model_sizes(model),
        "lm": lm_info,
        "audio_files": len(paths),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "skipped_precisions": {p: m for p, m in skipped.items()},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "runs": runs,
    }
    results["targets"] = check_targets(results)
    return results


def bench_perf(
    model: str | Path | None,
    audio: Sequence[str | Path] = (),
    manifest: str | Path | None = None,
    n: int | None = DEFAULT_UTTERANCES,
    config: PerfConfig | None = None,
    out: str | Path | None = DEFAULT_OUT,
    markdown: str | Path | None = None,
    progress: bool = True,
    notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``userlibri bench perf`` runs: the audio of ``manifest`` (its first ``n`` utterances)
    or ``audio`` (first ``n``), the shipped model when ``model`` is None; results written to
    ``out`` (JSON) and ``markdown`` (the tables) atomically, and returned. ``notes`` are added
    to the results as they are (e.g. which user's audio and LM)."""
    from userlibri.fsio import write_json_atomic, write_text_atomic

    if n is not None and n < 1:
        raise ConfigError(f"n: expected >= 1 utterances (or all), found {n}")
    if (manifest is None) == (not audio):
        raise UserLibriError("bench perf: expected audio files or a manifest (exactly one of them)")
    if model is None:
        from userlibri.models import model_dir

        model = model_dir()
    paths = (
        audio_from_manifest(manifest, n) if manifest is not None else list(audio)[:n] if n else list(audio)
    )
    results = run_perf(model, paths, config, progress)
    if manifest is not None:
        results["manifest"] = str(manifest)
    results.update(notes or {})
    if out is not None:
        write_json_atomic(out, results)
    if markdown is not None:
        write_text_atomic(markdown, format_markdown(results))
    return results


# -- targets and report -------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One of issue 5's targets, checked on the run that matches ``where``."""

    name: str
    description: str
    #: None: one chunk of the model (``model_chunk_ms``) in seconds.
    threshold: float | None
    unit: str
    digits: int = 1


#: The configuration the targets are about: one thread, int8, streaming transducer, per-user LM.
TARGET_RUN = {"precision": "int8", "threads": 1, "mode": "streaming", "decoder": "transducer", "lm": True}
TARGETS = (
    Target("rtf", "RTF", 0.05, "", 3),
    Target("search_share", "beam search + LM share of decode time", 0.30, "", 2),
    Target("peak_rss", "peak RSS", 200.0, "MB"),
    Target(
        "first_partial_wait",
        "first partial within one chunk: audio fed after its token was encoded (p95)",
        None,
        "s",
        2,
    ),
    Target(
        "first_partial_step", "first partial + 50 ms of compute: the call that shows it (p95)", 50.0, "ms"
    ),
)


def _target_value(name: str, run: dict[str, Any]) -> float | None:
    first = run.get("first_partial") or {}
    if name == "rtf":
        return run.get("rtf")
    if name == "search_share":
        return (run.get("shares") or {}).get("search")
    if name == "peak_rss":
        return run.get("peak_rss_mb")
    if name == "first_partial_step":
        return (first.get("step_ms") or {}).get("p95")
    if name == "first_partial_wait":
        return (first.get("wait_s") or {}).get("p95")
    raise ConfigError(f"target: unknown name {name!r}")


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/MISS of each target on the :data:`TARGET_RUN` configuration (``measured`` False and
    MISS when that configuration was not run)."""
    run = next((r for r in results["runs"] if all(r.get(k) == v for k, v in TARGET_RUN.items())), None)
    out = []
    for t in TARGETS:
        threshold = t.threshold
        if threshold is None:
            threshold = (run or {}).get("model_chunk_ms", 0.0) / 1000.0
        value = _target_value(t.name, run) if run is not None else None
        out.append(
            {
                "name": t.name,
                "description": t.description,
                "threshold": threshold,
                "unit": t.unit,
                "digits": t.digits,
                "value": value,
                "measured": value is not None,
                "pass": value is not None and value <= threshold,
            }
        )
        if t.name == "rtf" and run is not None:
            out[-1]["value_cpu"] = run.get("rtf_cpu")
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


#: Columns of the runs table.
_COLUMNS = (
    "precision",
    "threads",
    "mode",
    "decoder",
    "LM",
    "RTF (CPU)",
    "features / encoder / search %",
    "chunk p50 / p95 ms",
    "first partial: compute / last call ms, audio s",
    "RSS loaded / peak MB",
    "load model / LM s",
)


def _row(r: dict[str, Any]) -> list[str]:
    shares = r.get("shares") or {}
    chunk = r.get("chunk_latency_ms") or {}
    first = r.get("first_partial") or {}
    pct = " / ".join(
        _fmt(100 * shares[k], 0) if shares.get(k) is not None else "-"
        for k in ("features", "encoder", "search")
    )
    compute, step, audio = ((first.get(k) or {}).get("p50") for k in ("compute_ms", "step_ms", "audio_s"))
    return [
        r["precision"],
        str(r["threads"]),
        r["mode"],
        r["decoder"],
        "yes" if r["lm"] else "no",
        f"{_fmt(r.get('rtf'), 3)} ({_fmt(r.get('rtf_cpu'), 3)})",
        pct,
        f"{_fmt(chunk.get('p50'))} / {_fmt(chunk.get('p95'))}",
        f"{_fmt(compute)} / {_fmt(step)}, {_fmt(audio, 2)}",
        f"{_fmt(r.get('rss_loaded_mb'), 0)} / {_fmt(r.get('peak_rss_mb'), 0)}",
        f"{_fmt(r.get('model_load_seconds'), 2)} / {_fmt(r.get('lm_load_seconds'), 2)}",
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def format_markdown(results: dict[str, Any]) -> str:
    """The runs, sizes and targets as markdown tables (for the README)."""
    lines = _table(_COLUMNS, [_row(r) for r in results["runs"]])
    sizes = results["model_sizes"]
    parts = [
        f"{p}: streaming {_fmt(s.get('streaming_mb'), 2)} MB, offline {_fmt(s.get('offline_mb'), 2)} MB"
        for p, s in sizes.items()
        if isinstance(s, dict)
    ]
    lines += [
        "",
        f"Model files ({results['model']}): {'; '.join(parts)}; tokenizer {sizes['shared_mb']:.2f} MB.",
    ]
    lm = results.get("lm")
    if lm:
        files = ", ".join(f"{k} {v:.1f} MB" for k, v in lm["files_mb"].items())
        lines.append(f"LM ({lm['path']}): loads {lm['used']} ({lm['used_mb']:.1f} MB); files: {files}.")
    rows = []
    for t in results["targets"]:
        unit = f" {t['unit']}" if t["unit"] else ""
        if not t["measured"]:
            rows.append([t["description"], "not measured", "-", "not run"])
            continue
        cpu = f" (CPU {_fmt(t['value_cpu'], t['digits'])})" if t.get("value_cpu") is not None else ""
        rows.append(
            [
                t["description"],
                f"{_fmt(t['value'], t['digits'])}{unit}{cpu}",
                f"<= {_fmt(t['threshold'], t['digits'])}{unit}",
                "PASS" if t["pass"] else "MISS",
            ]
        )
    machine = results.get("machine") or {}
    load = machine.get("loadavg_before"), machine.get("loadavg_after")
    if all(load):
        lines.append(
            f"{machine.get('cpu_count')} CPUs, 1-minute load average {load[0][0]:.1f} before and "
            f"{load[1][0]:.1f} after (times are wall clock: a busy machine inflates them; RTF (CPU) is "
            "CPU seconds of all threads per audio second)."
        )
    lines += ["", "Targets (issue 5; one thread, int8, streaming transducer, per-user LM):", ""]
    lines += _table(("target", "value", "limit", "result"), rows)
    return "\n".join(lines) + "\n"
