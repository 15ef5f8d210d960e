"""``userlibri asr export``: a trained acoustic model -> the ONNX model directory (float, int8, ORT).

Defines ``command`` (named ``export``); ``cli/asr.py`` attaches it to the ``asr`` group.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="model-avg.pt (or checkpoints/ckpt-N.pt) written by 'userlibri asr train'.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model directory to write (replaced atomically if it exists).",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Sentencepiece model (file or directory); default: the experiment's tokenizer/ directory.",
)
@click.option(
    "--chunk-size",
    type=int,
    default=None,
    help="Streaming chunk in encoder frames (40 ms each); default: the model config's decode_chunk.",
)
@click.option(
    "--left-chunks",
    type=int,
    default=None,
    help="Chunks of left context for streaming; default: the model config's decode_left_chunks.",
)
@click.option("--no-int8", is_flag=True, help="Skip the int8 (dynamic quantization) files.")
@click.option("--no-ort", is_flag=True, help="Skip the .ort (ONNX Runtime format) files.")
@click.option(
    "--model-version", default=None, help="Version string for the metadata (default: step + weights hash)."
)
def command(
    checkpoint: Path,
    out: Path,
    tokenizer: Path | None,
    chunk_size: int | None,
    left_chunks: int | None,
    no_int8: bool,
    no_ort: bool,
    model_version: str | None,
) -> None:
    """Export a trained acoustic model to ONNX (encoders, decoder, joiner) with metadata."""
    from userlibri.asr.export import default_tokenizer_dir, export_model

    summary = export_model(
        checkpoint,
        tokenizer or default_tokenizer_dir(checkpoint),
        out,
        chunk_size,
        left_chunks,
        int8=not no_int8,
        ort=not no_ort,
        model_version=model_version,
    )
    sizes = ", ".join(f"{k} {v:.2f} MB" for k, v in summary["size_mb"].items())
    params = summary["parameters"]["total"] / 1e6
    seconds = summary["export"]["seconds"]["total"]
    streaming = summary["streaming"]
    click.echo(
        f"wrote {out}: {params:.2f}M parameters, {sizes}; streaming chunk {streaming['chunk_ms']:.0f} ms "
        f"x {streaming['left_chunks']} left chunks; {seconds:.1f} s"
    )
