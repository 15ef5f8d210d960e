"""``userlibri asr ship``: copy an exported model's int8 files into a model directory with its
greedy WER per test split (eval.json) and a model card (MODEL_CARD.md).

Defines ``command`` (named ``ship``); ``cli/__init__.py`` attaches it to the ``asr`` group.
"""

from __future__ import annotations

from pathlib import Path

import click

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("ship")
@click.option("--exp", type=_DIR, required=True, help="Training directory (config.json, train_log.jsonl).")
@click.option("--model", type=_DIR, required=True, help="Exported model directory (userlibri asr export).")
@click.option("--data", type=_DIR, required=True, help="LibriSpeech-layout root holding the test splits.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write (replaced atomically), e.g. userlibri/models/mini.",
)
@click.option(
    "--splits", default="test-clean,test-other", show_default=True, help="Comma-separated splits to evaluate."
)
@click.option(
    "--precisions",
    default="int8,ort-int8",
    show_default=True,
    help="Comma-separated precisions to copy; the first one is evaluated.",
)
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--hardware", default="", help="Where it was trained, for the card (e.g. '1 CPU core').")
@click.option(
    "--note",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Markdown file appended to the card.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(
    exp: Path,
    model: Path,
    data: Path,
    out: Path,
    splits: str,
    precisions: str,
    threads: int,
    hardware: str,
    note: Path | None,
    quiet: bool,
) -> None:
    """Ship an exported acoustic model with its greedy WER and a model card."""
    from userlibri.asr.onnx_model import PRECISION_SUFFIX
    from userlibri.asr.ship import MODES, mode_name, ship_model

    precs = [p.strip() for p in precisions.split(",") if p.strip()]
    bad = [p for p in precs if p not in PRECISION_SUFFIX]
    if bad or not precs:
        raise click.BadParameter(
            f"expected a comma-separated list of {', '.join(PRECISION_SUFFIX)}, found {precisions!r}",
            param_hint="--precisions",
        )
    meta = ship_model(
        exp,
        model,
        data,
        out,
        [s.strip() for s in splits.split(",") if s.strip()],
        precs,
        threads,
        note=note.read_text(encoding="utf-8") if note else "",
        hardware=hardware,
        progress=not quiet,
    )
    for split, modes in meta["eval"]["splits"].items():
        cells = ", ".join(f"{mode_name(d, s)} {modes[mode_name(d, s)]['wer']}%" for d, s in MODES)
        click.echo(f"{split}: greedy WER {cells}")
    click.echo(f"wrote {out} ({meta['size_bytes'] / 1e6:.2f} MB of model files, MODEL_CARD.md, eval.json)")
