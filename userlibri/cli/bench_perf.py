"""``userlibri bench perf``: RTF, per-chunk latency, first partial, RSS, sizes and load times of the
recognizer per precision, thread count, mode, decoder and LM (:mod:`userlibri.bench.perf`), each
configuration in a fresh process. Attach to the ``bench`` group."""

from __future__ import annotations

from pathlib import Path

import click

from userlibri.bench.perf import DEFAULT_OUT, DEFAULT_RUN_TIMEOUT, DEFAULT_UTTERANCES
from userlibri.decode.hyp import DEFAULT_BEAM, DEFAULT_LM_WEIGHT


def _names(value: str, what: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in value.split(",") if x.strip())
    if not names:
        raise click.BadParameter(f"expected a comma-separated list, found {value!r}", param_hint=what)
    return names


def _ints(value: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _names(value, what))
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, found {value!r}", param_hint=what
        ) from None


@click.command("perf")
@click.option(
    "--model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Exported acoustic-model directory; default: the shipped model.",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="jsonl manifest whose first --n utterances are decoded (or give AUDIO files).",
)
@click.option(
    "--n", "n", type=int, default=DEFAULT_UTTERANCES, show_default=True, help="Utterances (0: all)."
)
@click.option(
    "--lm",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Per-user LM directory (mix.bin/ngram.bin) or LM file; each configuration runs with and without it.",
)
@click.option("--lm-only", is_flag=True, help="With --lm: skip the runs without it.")
@click.option(
    "--precisions",
    default=None,
    help="Comma-separated float,int8,ort,ort-int8; default: every precision the model directory holds.",
)
@click.option("--threads", default="1,2", show_default=True, help="onnxruntime intra-op thread counts.")
@click.option("--decoders", default="ctc,transducer", show_default=True)
@click.option(
    "--modes", default="streaming,offline", show_default=True, help="streaming, offline (non-streaming)."
)
@click.option("--beam", type=int, default=DEFAULT_BEAM, show_default=True)
@click.option("--lm-weight", type=float, default=DEFAULT_LM_WEIGHT, show_default=True)
@click.option(
    "--chunk-ms", type=float, default=None, help="Streaming audio per call; default: the model's chunk."
)
@click.option("--no-warmup", is_flag=True, help="Do not decode 1 s of noise (untimed) before measuring.")
@click.option(
    "--passes",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Decodes of the audio per configuration; RTF and shares from the fastest.",
)
@click.option(
    "--timeout", type=float, default=DEFAULT_RUN_TIMEOUT, show_default=True, help="Seconds per configuration."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True
)
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the markdown tables here.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("audio", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def perf(
    model: Path | None,
    manifest: Path | None,
    n: int,
    lm: Path | None,
    lm_only: bool,
    precisions: str | None,
    threads: str,
    decoders: str,
    modes: str,
    beam: int,
    lm_weight: float,
    chunk_ms: float | None,
    no_warmup: bool,
    passes: int,
    timeout: float,
    out: Path,
    markdown: Path | None,
    quiet: bool,
    audio: tuple[Path, ...],
) -> None:
    """On-device cost per configuration, each in a fresh process; targets of issue 5 as PASS/MISS."""
    from userlibri.bench.perf import PerfConfig, bench_perf, format_markdown

    if lm_only and lm is None:
        raise click.UsageError("--lm-only needs --lm")
    if n < 0:
        raise click.BadParameter(f"expected >= 0 (0: all), found {n}", param_hint="--n")
    config = PerfConfig(
        precisions=_names(precisions, "--precisions") if precisions else None,
        threads=_ints(threads, "--threads"),
        decoders=_names(decoders, "--decoders"),
        modes=_names(modes, "--modes"),
        lm=lm,
        no_lm=not lm_only,
        beam=beam,
        lm_weight=lm_weight,
        chunk_ms=chunk_ms,
        warmup=not no_warmup,
        passes=passes,
        timeout=timeout,
    )
    results = bench_perf(model, audio, manifest, n or None, config, out, markdown, progress=not quiet)
    click.echo(format_markdown(results))
    click.echo(f"wrote {out}" + (f" and {markdown}" if markdown else ""))


COMMANDS = [perf]
