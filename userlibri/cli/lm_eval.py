"""``userlibri lm users | interpolate | eval | audit``: per-user n-grams, interpolation,
held-out perplexity and the memorisation audit.

The commands are collected in ``COMMANDS``, to be attached to the ``lm`` group by ``cli/lm.py``.
"""

from __future__ import annotations

from pathlib import Path

import click

from userlibri.lm.evaluate import DEFAULT_HELDOUT_EVERY, MIN_TRAIN_SENTENCES
from userlibri.lm.ngram import DEFAULT_NGRAM_ORDER
from userlibri.privacy.audit import AUDIT_KINDS, DEFAULT_CANDIDATES

_INPUT = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_OUT = click.Path(file_okay=False, path_type=Path)


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"expected integers like '1,4,16', found {value!r}") from None


def _seed(ctx: click.Context) -> int:
    from userlibri.constants import DEFAULT_SEED

    return int((ctx.obj or {}).get("seed", DEFAULT_SEED))


@click.command("users")
@click.option(
    "--dataset", type=_DIR, required=True, help="UserLibri release (or the dir holding UserLibri/)."
)
@click.option("--out", type=_OUT, required=True, help="Output directory (one sub-directory per book).")
@click.option(
    "--corpus",
    type=_DIR,
    default=None,
    help="Book cache for the background LM [default: ~/.cache/userlibri/corpora].",
)
@click.option(
    "--background",
    type=_INPUT,
    default=None,
    help="An existing background word ARPA (its .bin beside it is used when present).",
)
@click.option("--books", default="", help="Only these book ids (comma-separated); default: all test users'.")
@click.option("--order", type=int, default=DEFAULT_NGRAM_ORDER, show_default=True, help="N-gram order.")
@click.option(
    "--heldout-every",
    type=int,
    default=DEFAULT_HELDOUT_EVERY,
    show_default=True,
    help="Hold out every N-th sentence of each book's LM text.",
)
@click.option(
    "--background-prune",
    default="0 0 1 1",
    show_default=True,
    callback=lambda _c, _p, v: _ints(v),
    help="lmplz --prune for the background LM (empty: none).",
)
def users_cmd(
    dataset: Path,
    out: Path,
    corpus: Path | None,
    background: Path | None,
    books: str,
    order: int,
    heldout_every: int,
    background_prune: tuple[int, ...],
) -> None:
    """Background + per-book word n-grams and their tuned interpolation for a UserLibri release."""
    from userlibri.lm.users import DEFAULT_CORPUS_DIR, UserLMConfig, build_user_lms

    config = UserLMConfig(
        order=order,
        heldout_every=heldout_every,
        min_train_sentences=MIN_TRAIN_SENTENCES,
        background_prune=background_prune,
    )
    summary = build_user_lms(
        dataset,
        out,
        corpus_dir=corpus or DEFAULT_CORPUS_DIR,
        background_arpa=background,
        books=[b for b in books.replace(",", " ").split()] or None,
        config=config,
    )
    for row in summary["books"]:
        click.echo(
            f"book {row['book_id']}: user weight {row['weight_user']:.3f}, held-out ppl background "
            f"{row['ppl_background']:.1f} personal {row['ppl_personal']:.1f} interpolated "
            f"{row['ppl_interpolated']:.1f} ({row['train_words']} words, 4-gram {row['seconds_ngram']:.2f} s)"
        )
    click.echo(f"{out}/summary.json")


@click.command("interpolate")
@click.option("--lm", "lms", type=_INPUT, multiple=True, required=True, help="Word ARPA files (2 or more).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Mixed ARPA.")
@click.option(
    "--weight",
    "weights",
    type=float,
    multiple=True,
    help="Weight of each --lm in order (sum 1); for two LMs one value (the first LM's) is enough.",
)
@click.option("--tune-on", type=_INPUT, default=None, help="Held-out sentences to tune the weights on (EM).")
@click.option("--no-binary", is_flag=True, help="Do not build the KenLM binary.")
def interpolate_cmd(
    lms: tuple[Path, ...], out: Path, weights: tuple[float, ...], tune_on: Path | None, no_binary: bool
) -> None:
    """Mix ARPA n-grams into one ARPA (+ KenLM binary) with given or tuned weights."""
    from userlibri.lm.arpa_mix import interpolate
    from userlibri.lm.evaluate import read_sentences_file

    if weights and tune_on:
        raise click.UsageError("give --weight or --tune-on, not both")
    if not weights and not tune_on:
        raise click.UsageError("give --weight (one per LM) or --tune-on HELDOUT.txt")
    w: list[float] | None = list(weights) or None
    if w is not None and len(lms) == 2 and len(w) == 1:
        w = [w[0], 1.0 - w[0]]
    info = interpolate(
        list(lms),
        out,
        weights=w,
        heldout=read_sentences_file(tune_on) if tune_on else None,
        binary=not no_binary,
    )
    msg = f"{out}: weights {[round(x, 4) for x in info['weights']]}, counts {info['counts']}"  # type: ignore[union-attr]
    if "heldout" in info:
        h = info["heldout"]
        msg += ", held-out ppl " + ", ".join(f"{k}={v['perplexity']:.1f}" for k, v in h.items())  # type: ignore[union-attr]
    click.echo(msg)


def _parse_neural(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=DIR (DIR may contain {{book}}), found {v!r}")
        out[name] = path
    return out


@click.command("eval")
@click.option("--users-dir", type=_DIR, required=True, help="Output of 'lm users'.")
@click.option(
    "--neural",
    multiple=True,
    help="NAME=DIR of a neural LM (lm.onnx); DIR may contain {book}, e.g. dp8=work/nlm/{book}/eps8.",
)
@click.option(
    "--tokenizer", type=click.Path(exists=True, path_type=Path), default=None, help="For neural LMs."
)
@click.option("--books", default="", help="Only these book ids (comma-separated).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results here [default: <users-dir>/eval.json].")  # fmt: skip
def eval_cmd(
    users_dir: Path, neural: tuple[str, ...], tokenizer: Path | None, books: str, json_out: Path | None
) -> None:
    """Per-user (per-book) word-level held-out perplexity: background, personal, interpolated, neural."""
    from userlibri.fsio import write_json_atomic
    from userlibri.lm.users import evaluate_user_lms, format_table

    result = evaluate_user_lms(
        users_dir, _parse_neural(neural), tokenizer, [b for b in books.replace(",", " ").split()] or None
    )
    write_json_atomic(json_out or users_dir / "eval.json", result)
    click.echo(format_table(result))


@click.command("audit")
@click.option("--text", type=_INPUT, required=True, help="The user's text, one sentence a line.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="audit.json path."
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(list(AUDIT_KINDS)),
    multiple=True,
    default=("ngram",),
    show_default=True,
    help="LMs to audit (repeat the option).",
)
@click.option(
    "--repetitions",
    default="1,4,16",
    show_default=True,
    callback=lambda _c, _p, v: _ints(v),
    help="How often each canary is inserted.",
)
@click.option("--canaries-per-repetition", type=int, default=2, show_default=True)
@click.option("--candidates", type=int, default=DEFAULT_CANDIDATES, show_default=True)
@click.option("--background-neural", type=click.Path(exists=True, path_type=Path), default=None,
              help="Background neural LM dir (lm.pt) for the neural kinds.")  # fmt: skip
@click.option("--tokenizer", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--epochs", type=float, default=2.0, show_default=True, help="Fine-tuning passes (neural).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--epsilon", type=float, default=8.0, show_default=True, help="DP target epsilon (neural-dp).")
@click.option("--noise-multiplier", type=float, default=None, help="DP noise instead of --epsilon.")
@click.pass_context
def audit_cmd(
    ctx: click.Context,
    text: Path,
    out: Path,
    kinds: tuple[str, ...],
    repetitions: tuple[int, ...],
    canaries_per_repetition: int,
    candidates: int,
    background_neural: Path | None,
    tokenizer: Path | None,
    epochs: float,
    lr: float,
    batch_size: int,
    epsilon: float,
    noise_multiplier: float | None,
) -> None:
    """Secret-sharer audit: insert canaries, train the LMs, report exposure per repetition count."""
    from userlibri.lm.evaluate import read_sentences_file
    from userlibri.privacy.audit import AuditConfig, run_audit

    config = AuditConfig(
        repetitions=repetitions,
        canaries_per_repetition=canaries_per_repetition,
        candidates=candidates,
        seed=_seed(ctx),
    )
    neural = None
    if any(k != "ngram" for k in kinds):
        neural = _neural_setup(
            background_neural, tokenizer, epochs, lr, batch_size, epsilon, noise_multiplier, ctx
        )
    report = run_audit(read_sentences_file(text), kinds, config, neural, out)
    for kind, res in report["results"].items():
        row = ", ".join(f"x{r}: {v['mean_exposure']:.2f}" for r, v in res["by_repetition"].items())
        click.echo(f"{kind}: mean exposure (bits, max {report['max_exposure']:.2f}) {row}")
    click.echo(str(out))


def _neural_setup(background, tokenizer, epochs, lr, batch_size, epsilon, noise_multiplier, ctx):  # noqa: ANN001, ANN202, PLR0913
    if background is None or tokenizer is None:
        raise click.UsageError("neural audit kinds need --background-neural and --tokenizer")
    from userlibri.lm import neural
    from userlibri.privacy.audit import NeuralAuditSetup
    from userlibri.text.tokenizer import Tokenizer

    ckpt = background / "lm.pt" if Path(background).is_dir() else background
    model, _ = neural.load_checkpoint(ckpt)
    train = neural.TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=_seed(ctx))
    dp = neural.PrivacyConfig(
        mechanism="dp-sgd",
        target_epsilon=None if noise_multiplier is not None else epsilon,
        noise_multiplier=noise_multiplier,
    )
    return NeuralAuditSetup(model, Tokenizer.load(tokenizer), train, dp)


COMMANDS = [users_cmd, interpolate_cmd, eval_cmd, audit_cmd]
