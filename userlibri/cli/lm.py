"""``userlibri lm ...``: tokenizer, n-gram and neural LMs, privacy, audits."""

from __future__ import annotations

from pathlib import Path

import click

from userlibri.lm.ngram import DEFAULT_LMPLZ_MEMORY, DEFAULT_NGRAM_ORDER, NgramConfig, train_ngram
from userlibri.text.tokenizer import (
    DEFAULT_CHARACTER_COVERAGE,
    DEFAULT_MODEL_TYPE,
    DEFAULT_VOCAB_SIZE,
    TokenizerConfig,
    train_tokenizer,
)

_INPUT = click.Path(exists=True, dir_okay=False, path_type=Path)


def _parse_prune(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"expected integers like '0 0 1', found {value!r}") from None


@click.group("lm")
def command() -> None:
    """Language models: tokenizer, n-gram, neural, privacy, audit, eval."""


@command.command("tokenizer")
@click.option(
    "--input", "inputs", type=_INPUT, multiple=True, required=True, help="Text file(s), one sentence a line."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output directory."
)
@click.option(
    "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, show_default=True, help="Number of pieces."
)
@click.option(
    "--model-type",
    type=click.Choice(["unigram", "bpe"]),
    default=DEFAULT_MODEL_TYPE,
    show_default=True,
    help="Sentencepiece model type.",
)
@click.option(
    "--character-coverage",
    type=float,
    default=DEFAULT_CHARACTER_COVERAGE,
    show_default=True,
    help="Share of characters covered by the model.",
)
@click.pass_context
def tokenizer_cmd(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    out: Path,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
) -> None:
    """Train a sentencepiece tokenizer; writes tokenizer.model, tokens.txt, tokenizer.json."""
    config = TokenizerConfig(
        vocab_size=vocab_size,
        model_type=model_type,  # type: ignore[arg-type]
        character_coverage=character_coverage,
        seed=(ctx.obj or {}).get("seed", TokenizerConfig.seed),
    )
    tok = train_tokenizer(list(inputs), out, config)
    click.echo(f"{out}: {tok.vocab_size} pieces, model id {tok.model_id}")


@command.command("ngram")
@click.option(
    "--input", "inputs", type=_INPUT, multiple=True, required=True, help="Text file(s), one sentence a line."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output directory."
)
@click.option("--order", type=int, default=DEFAULT_NGRAM_ORDER, show_default=True, help="N-gram order.")
@click.option(
    "--unit", type=click.Choice(["word", "token"]), default="word", show_default=True, help="LM unit."
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Sentencepiece model (or its directory); required for --unit token.",
)
@click.option(
    "--prune",
    default="",
    show_default=True,
    callback=lambda _c, _p, v: _parse_prune(v),
    help="lmplz pruning thresholds per order from unigrams (which must be 0), e.g. '0 0 1'; empty: none.",
)
@click.option("--memory", default=DEFAULT_LMPLZ_MEMORY, show_default=True, help="lmplz -S: '10%' or '200M'.")
@click.option(
    "--discount-fallback",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    show_default=True,
    help="lmplz --discount_fallback: auto retries with it when the text is too small.",
)
@click.option("--name", default=None, help="Output file stem [default: <unit>-<order>gram].")
def ngram_cmd(
    inputs: tuple[Path, ...],
    out: Path,
    order: int,
    unit: str,
    tokenizer: Path | None,
    prune: tuple[int, ...],
    memory: str,
    discount_fallback: str,
    name: str | None,
) -> None:
    """Train an n-gram LM with lmplz; writes <name>.arpa, <name>.bin and <name>.json."""
    config = NgramConfig(
        order=order,
        unit=unit,  # type: ignore[arg-type]
        prune=tuple(prune),
        memory=memory,
        discount_fallback={"auto": None, "yes": True, "no": False}[discount_fallback],
    )
    model = train_ngram(list(inputs), out, config, tokenizer=tokenizer, name=name)
    click.echo(
        f"{model.arpa} and {model.binary.name}: {unit} {order}-gram, counts {list(model.counts)}, "
        f"{model.sentences} sentences, {model.words} {unit}s, {model.seconds:.2f} s"
        + (" (discount fallback)" if model.discount_fallback else "")
    )


def _attach_neural() -> None:
    from userlibri.cli import lm_eval, lm_federated, lm_neural

    for c in lm_neural.COMMANDS + lm_eval.COMMANDS + lm_federated.COMMANDS:
        command.add_command(c)


_attach_neural()
