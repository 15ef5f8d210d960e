"""``userlibri lm neural-train | neural-personalize | privacy-report | sampled-ngram``: the neural LM,
its privacy, and the DP n-gram sampled from it.

The commands are collected in ``COMMANDS`` and attached to the ``lm`` group by ``cli/lm.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from userlibri.lm.neural_config import (
    DEFAULT_CLIP,
    DEFAULT_EMBED_DIM,
    DEFAULT_HIDDEN_DIM,
    DEFAULT_MAX_TOKENS,
    DEFAULT_NUM_LAYERS,
    PrivacyConfig,
    TrainConfig,
)
from userlibri.lm.ngram import DEFAULT_NGRAM_ORDER
from userlibri.lm.sampled_ngram import DEFAULT_MIX_WEIGHT, DEFAULT_SAMPLED_SENTENCES, build_sampled_ngram
from userlibri.privacy import accounting

_INPUT = click.Path(exists=True, dir_okay=False, path_type=Path)
_OUT = click.Path(file_okay=False, path_type=Path)


def _seed(ctx: click.Context) -> int:
    return int((ctx.obj or {}).get("seed", TrainConfig.seed))


def _train_options(epochs: float, lr: float, batch_size: int):  # noqa: ANN202 - decorator
    def wrap(f):  # noqa: ANN001, ANN202
        for opt in reversed(
            [
                click.option(
                    "--epochs", type=float, default=epochs, show_default=True, help="Passes over the text."
                ),
                click.option("--lr", type=float, default=lr, show_default=True, help="Adam learning rate."),
                click.option(
                    "--batch-size",
                    type=int,
                    default=batch_size,
                    show_default=True,
                    help="(Expected, under DP-SGD) batch size in sentences.",
                ),
                click.option(
                    "--max-tokens",
                    type=int,
                    default=DEFAULT_MAX_TOKENS,
                    show_default=True,
                    help="Longer sentences are truncated.",
                ),
                click.option(
                    "--threads", type=int, default=0, show_default=True, help="Torch threads (0: default)."
                ),
                click.option(
                    "--dev",
                    type=_INPUT,
                    multiple=True,
                    help="Held-out sentences: report word-level perplexity.",
                ),
                click.option(
                    "--int8/--no-int8", default=True, show_default=True, help="Also write lm.int8.onnx."
                ),
            ]
        ):
            f = opt(f)
        return f

    return wrap


@click.command("neural-train")
@click.option(
    "--input", "inputs", type=_INPUT, multiple=True, required=True, help="Text, one sentence a line."
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Sentencepiece model (or its directory).",
)
@click.option("--out", type=_OUT, required=True, help="Output LM directory (written atomically).")
@click.option("--embed-dim", type=int, default=DEFAULT_EMBED_DIM, show_default=True)
@click.option("--hidden-dim", type=int, default=DEFAULT_HIDDEN_DIM, show_default=True)
@click.option("--layers", type=int, default=DEFAULT_NUM_LAYERS, show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True)
@click.option("--tie-weights/--no-tie-weights", default=False, show_default=True)
@_train_options(epochs=3.0, lr=2e-3, batch_size=64)
@click.pass_context
def neural_train(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    tokenizer: Path,
    out: Path,
    embed_dim: int,
    hidden_dim: int,
    layers: int,
    dropout: float,
    tie_weights: bool,
    epochs: float,
    lr: float,
    batch_size: int,
    max_tokens: int,
    threads: int,
    dev: tuple[Path, ...],
    int8: bool,
) -> None:
    """Train a background LSTM LM; writes lm.pt, lm.onnx, lm.int8.onnx, privacy.json, train.json."""
    from userlibri.lm.neural_pipeline import train_background_dir

    tc = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, max_tokens=max_tokens, threads=threads, seed=_seed(ctx)
    )
    overrides = {
        "embed_dim": embed_dim,
        "hidden_dim": hidden_dim,
        "num_layers": layers,
        "dropout": dropout,
        "tie_weights": tie_weights,
    }
    info = train_background_dir(inputs, tokenizer, out, overrides, tc, dev, int8)
    ppl = f", dev perplexity {info['dev_perplexity']:.2f}" if "dev_perplexity" in info else ""
    click.echo(
        f"{out}: {info['parameters']} parameters, {info['sentences']} sentences, "
        f"{info['train_seconds']:.1f} s{ppl}"
    )


@click.command("neural-personalize")
@click.option(
    "--background",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Background LM directory (or its lm.pt).",
)
@click.option(
    "--input",
    "inputs",
    type=_INPUT,
    multiple=True,
    required=True,
    help="The user's text, one sentence a line.",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Sentencepiece model (or its directory).",
)
@click.option("--out", type=_OUT, required=True, help="Output LM directory (written atomically).")
@click.option("--privacy", type=click.Choice(["none", "dp-sgd"]), default="none", show_default=True)
@click.option("--target-epsilon", type=float, default=None, help="DP-SGD: calibrate noise to this epsilon.")
@click.option("--noise-multiplier", type=float, default=None, help="DP-SGD: use this noise multiplier.")
@click.option("--delta", type=float, default=None, help="DP-SGD delta [default: power of 10 <= 1/(10 n)].")
@click.option("--clip", type=float, default=DEFAULT_CLIP, show_default=True, help="DP-SGD per-example clip.")
@click.option(
    "--accountant",
    type=click.Choice(list(accounting.REPORT_ACCOUNTANTS)),
    default=accounting.DEFAULT_ACCOUNTANT,
    show_default=True,
    help="Accountant that calibrates.",
)
@_train_options(epochs=2.0, lr=1e-3, batch_size=64)
@click.pass_context
def neural_personalize(
    ctx: click.Context,
    background: Path,
    inputs: tuple[Path, ...],
    tokenizer: Path,
    out: Path,
    privacy: str,
    target_epsilon: float | None,
    noise_multiplier: float | None,
    delta: float | None,
    clip: float,
    accountant: str,
    epochs: float,
    lr: float,
    batch_size: int,
    max_tokens: int,
    threads: int,
    dev: tuple[Path, ...],
    int8: bool,
) -> None:
    """Fine-tune a background LM on one user's text, optionally with DP-SGD; writes the LM
    directory with ONNX float/int8 models and privacy.json."""
    from userlibri.lm.neural_pipeline import personalize_dir

    tc = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, max_tokens=max_tokens, threads=threads, seed=_seed(ctx)
    )
    pc = PrivacyConfig(
        mechanism=privacy,
        target_epsilon=target_epsilon,  # type: ignore[arg-type]
        noise_multiplier=noise_multiplier,
        delta=delta,
        clip=clip,
        accountant=accountant,
    )
    info = personalize_dir(background, inputs, tokenizer, out, tc, pc, dev, int8)
    eps = "no DP" if info["epsilon"] is None else f"epsilon {info['epsilon']:.3g}"
    ppl = ""
    if "dev_perplexity" in info:
        ppl = f", dev perplexity {info['dev_perplexity_background']:.2f} -> {info['dev_perplexity']:.2f}"
    click.echo(f"{out}: {info['sentences']} sentences, {info['train_seconds']:.1f} s, {eps}{ppl}")


@click.command("privacy-report")
@click.option("--noise-multiplier", type=float, required=True, help="Gaussian noise multiplier sigma.")
@click.option("--sample-rate", type=float, default=None, help="Poisson sampling rate q.")
@click.option(
    "--batch-size", type=int, default=None, help="Expected batch size (with --dataset-size gives q)."
)
@click.option("--dataset-size", type=int, default=None, help="Number of sentences n (checks delta < 1/n).")
@click.option("--steps", type=int, default=None, help="Optimizer steps.")
@click.option("--epochs", type=float, default=None, help="Epochs (steps = epochs / q).")
@click.option("--delta", type=float, default=1e-5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def privacy_report(
    noise_multiplier: float,
    sample_rate: float | None,
    batch_size: int | None,
    dataset_size: int | None,
    steps: int | None,
    epochs: float | None,
    delta: float,
    as_json: bool,
) -> None:
    """Epsilon at delta of DP-SGD with these parameters, from every accountant."""
    if sample_rate is None:
        if batch_size is None or dataset_size is None:
            raise click.UsageError("give --sample-rate, or --batch-size and --dataset-size")
        sample_rate = min(1.0, batch_size / dataset_size)
    if (steps is None) == (epochs is None):
        raise click.UsageError("give exactly one of --steps and --epochs")
    if steps is None:
        steps = max(1, round(epochs / sample_rate))  # type: ignore[operator]
    table = accounting.privacy_table(noise_multiplier, sample_rate, steps, delta, dataset_size)
    if as_json:
        click.echo(json.dumps(table, indent=2, sort_keys=True))
        return
    click.echo(f"sigma={noise_multiplier:g} q={sample_rate:.4g} steps={steps} delta={delta:g}")
    click.echo(f"{'accountant':<10} {'epsilon':>10}")
    for name, eps in table["epsilon"].items():
        click.echo(f"{name:<10} {eps:>10.4f}")
    for pair, gap in table["cross_check"].items():
        click.echo(f"gap {pair}: {100 * gap:.2f}%")


@click.command("sampled-ngram")
@click.option(
    "--neural",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Neural LM directory (lm.onnx or lm.int8.onnx, privacy.json), e.g. a DP-SGD fine-tune.",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Sentencepiece model (or its directory) the neural LM was trained with.",
)
@click.option("--out", type=_OUT, required=True, help="Output n-gram directory (written atomically).")
@click.option(
    "--sentences", type=int, default=DEFAULT_SAMPLED_SENTENCES, show_default=True, help="Sentences to sample."
)
@click.option("--order", type=int, default=DEFAULT_NGRAM_ORDER, show_default=True, help="N-gram order.")
@click.option(
    "--background",
    type=_INPUT,
    default=None,
    help="Public background n-gram ARPA: also write mix.arpa/mix.bin.",
)
@click.option(
    "--mix-weight",
    type=float,
    default=DEFAULT_MIX_WEIGHT,
    show_default=True,
    help="Weight of the sampled n-gram in the mixture (fixed: tuning it on user text would spend privacy).",
)
@click.option(
    "--max-tokens",
    type=int,
    default=DEFAULT_MAX_TOKENS,
    show_default=True,
    help="Samples running longer are cut here.",
)
@click.option(
    "--keep-truncated/--drop-truncated",
    default=True,
    show_default=True,
    help="Keep samples cut at --max-tokens (less their last word) or drop them.",
)
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature.")
@click.option(
    "--precision",
    type=click.Choice(["float", "int8"]),
    default="float",
    show_default=True,
    help="Which ONNX file samples.",
)
@click.option("--seed", type=int, default=None, help="Sampling seed [default: the global --seed].")
@click.pass_context
def sampled_ngram(
    ctx: click.Context,
    neural: Path,
    tokenizer: Path,
    out: Path,
    sentences: int,
    order: int,
    background: Path | None,
    mix_weight: float,
    max_tokens: int,
    keep_truncated: bool,
    temperature: float,
    precision: str,
    seed: int | None,
) -> None:
    """A DP word n-gram by post-processing a DP neural LM: sample sentences from it and estimate an
    n-gram on them (optionally mixed with a public background n-gram); writes ngram.*, mix.*,
    samples.txt, privacy.json (the neural LM's epsilon) and sampled.json."""
    info = build_sampled_ngram(
        neural,
        tokenizer,
        out,
        sentences=sentences,
        order=order,
        seed=_seed(ctx) if seed is None else seed,
        background=background,
        mix_weight=mix_weight,
        max_tokens=max_tokens,
        temperature=temperature,
        keep_truncated=keep_truncated,
        precision=precision,
    )
    s = info["sampled"]
    click.echo(
        f"{out}: {s['kept']} of {s['requested']} sampled sentences kept "
        f"({info['sentences_per_second']:.0f}/s), n-gram counts {info['counts']['sampled']}, "
        f"{info['seconds']['total']:.1f} s"
    )


COMMANDS = [neural_train, neural_personalize, privacy_report, sampled_ngram]
