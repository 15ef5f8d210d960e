"""``userlibri decode``: recognise audio files or a manifest with an exported model (and a
per-user LM), writing one JSON line of hypothesis, timings and scores per utterance."""

from __future__ import annotations

import json
from pathlib import Path

import click

from userlibri.decode.hyp import DEFAULT_BEAM, DEFAULT_LENGTH_BONUS, DEFAULT_LM_WEIGHT

_IN = click.Path(exists=True, path_type=Path)


@click.command("decode")
@click.option(
    "--model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Exported acoustic-model directory (userlibri asr export); default: the shipped model.",
)
@click.option(
    "--lm",
    type=_IN,
    default=None,
    help="LM file or per-user LM directory (mix.bin/ngram.bin/lm.onnx); none: no LM.",
)
@click.option(
    "--lm-kind",
    default=None,
    help="LM kind (kenlm-word, kenlm-word-unigram, kenlm-token, neural-onnx, hotwords); default: from the "
    "file name (a KenLM binary or ARPA: kenlm-word, the word n-gram with the bigram look-ahead).",
)
@click.option("--lm-weight", type=float, default=DEFAULT_LM_WEIGHT, show_default=True)
@click.option(
    "--length-bonus",
    type=float,
    default=DEFAULT_LENGTH_BONUS,
    show_default=True,
    help="Added per emitted token.",
)
@click.option("--beam", type=int, default=DEFAULT_BEAM, show_default=True)
@click.option("--decoder", type=click.Choice(["ctc", "transducer"]), default="ctc", show_default=True)
@click.option(
    "--streaming/--offline",
    default=False,
    show_default=True,
    help="Chunked streaming encoder (OnlineRecognizer) or full-context encoder.",
)
@click.option(
    "--chunk-ms",
    type=int,
    default=160,
    show_default=True,
    help="Streaming: audio fed per accept_waveform call.",
)
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option(
    "--precision",
    type=click.Choice(["float", "int8", "ort", "ort-int8"]),
    default=None,
    help="[default: float when the model directory holds it, else int8 (the shipped models are int8)]",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="jsonl manifest to decode (its transcripts give a WER).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output jsonl of hypotheses.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.argument("audio", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def command(
    model: Path | None,
    lm: Path | None,
    lm_kind: str | None,
    lm_weight: float,
    length_bonus: float,
    beam: int,
    decoder: str,
    streaming: bool,
    chunk_ms: int,
    threads: int,
    precision: str | None,
    manifest: Path | None,
    out: Path,
    quiet: bool,
    audio: tuple[Path, ...],
) -> None:
    """Decode AUDIO files (or --manifest) to jsonl hypotheses with timings and scores."""
    from userlibri.decode.hyp import DecoderConfig
    from userlibri.recognizer import RecognizerConfig
    from userlibri.transcribe import items_from_manifest, items_from_paths, transcribe

    if model is None:
        from userlibri.models import model_dir

        model = model_dir()
    if precision is None:
        from userlibri.asr.onnx_model import default_precision

        precision = default_precision(model)
    if bool(audio) == bool(manifest):
        raise click.UsageError("give either AUDIO files or --manifest (exactly one of them)")
    items = items_from_manifest(manifest) if manifest else items_from_paths(audio)
    config = RecognizerConfig(
        decoder=decoder,
        decoding=DecoderConfig(beam=beam, lm_weight=lm_weight, length_bonus=length_bonus),
        precision=precision,
        num_threads=threads,
    )
    summary = transcribe(
        model,
        items,
        out,
        config,
        lm=lm,
        lm_kind=lm_kind,
        streaming=streaming,
        chunk_ms=chunk_ms,
        progress=not quiet,
    )
    click.echo(json.dumps(summary, indent=1))
