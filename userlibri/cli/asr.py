"""``userlibri asr``: acoustic-model commands (``train``; the exporter adds ``export``)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("asr")
def command() -> None:
    """Acoustic model: train (and export) the Conformer CTC/transducer model."""


@command.command("train")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Experiment YAML (sections model/train/tokenizer/features).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="LibriSpeech-layout root (<data>/<split>/...) or a directory of <split>.jsonl manifests.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Experiment directory (checkpoints, logs, model-avg.pt).",
)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop cleanly (checkpoint + model-avg.pt) after this many minutes; overrides the config.",
)
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps in total.")
@click.option(
    "--schedule-steps",
    type=int,
    default=None,
    help="Length of the learning-rate schedule in steps (default: the config's epochs, or the "
    "checkpoint's on --resume); set it with --resume to extend a finished schedule (raise epochs too).",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="CPU threads for torch (0 = torch's default; 1 is fastest on a busy machine); overrides the config.",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Use this sentencepiece model (file or directory) instead of training one.",
)
@click.option(
    "--features-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Feature cache directory (default <out>/features); share it between experiments.",
)
@click.option("--train-split", default="train", show_default=True)
@click.option(
    "--add-train",
    "add_train",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Another corpus (LibriSpeech root or manifest directory) whose --train-split joins the "
    "training data, train.add_train_repeat times per epoch (repeatable).",
)
@click.option(
    "--init-from",
    "init_from",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Start from an exported model directory's weights, tokenizer and CMVN (e.g. the shipped "
    "userlibri/models/mini; int8 weights are dequantized); the config must have its architecture.",
)
@click.option("--dev-split", default="dev", show_default=True, help="Empty to skip the dev WER.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train_command(
    config_path: Path,
    data: Path,
    out: Path,
    resume: bool,
    device: str,
    max_minutes: float | None,
    max_steps: int | None,
    schedule_steps: int | None,
    threads: int | None,
    tokenizer: Path | None,
    features_dir: Path | None,
    train_split: str,
    add_train: tuple[Path, ...],
    init_from: Path | None,
    dev_split: str,
    no_progress: bool,
) -> None:
    """Train (or resume) the acoustic model; writes <out>/model-avg.pt and train_log.jsonl."""
    from userlibri.asr.config import load_config
    from userlibri.asr.train import train

    result = train(
        load_config(config_path),
        data,
        out,
        resume=resume,
        device=device,
        max_minutes=max_minutes,
        max_steps=max_steps,
        threads=threads,
        tokenizer=tokenizer,
        features_dir=features_dir,
        train_split=train_split,
        dev_split=dev_split or None,
        progress=not no_progress,
        schedule_steps=schedule_steps,
        add_train=add_train,
        init_from=init_from,
    )
    status = "finished" if result.finished else f"stopped ({result.stop_reason})"
    click.echo(
        f"{status} at step {result.step}, epoch {result.epoch}, {result.num_parameters / 1e6:.2f}M "
        f"parameters, {result.seconds / 60:.1f} min; model: {result.model_path}"
    )
