"""``userlibri bench wer`` (decode every user in every condition, tune on dev users, report per-user
WER with bootstrap CIs and paired tests) and ``userlibri bench wer-score`` (the same statistics for
hypothesis files you already have, e.g. from ``userlibri decode``). Attach to the ``bench`` group."""

from __future__ import annotations

from pathlib import Path

import click

from userlibri.bench.wer import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from userlibri.decode.hyp import DEFAULT_BEAM

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _floats(value: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, found {value!r}", param_hint=what
        ) from None


def _names(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def _seed(ctx: click.Context, seed: int | None) -> int:
    if seed is not None:
        return seed
    return int((ctx.obj or {}).get("seed", 0))


@click.command("wer")
@click.option(
    "--dataset", type=_DIR, required=True, help="UserLibri layout (userlibri build), with dev users."
)
@click.option(
    "--model", type=_DIR, default=None, help="Exported acoustic-model directory; default: the shipped model."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output directory."
)
@click.option(
    "--lm-dir", type=_DIR, default=None, help="n-gram LMs as `lm users` writes them (<book>/ngram,mix)."
)
@click.option(
    "--neural-dir", type=_DIR, default=None, help="Neural LMs as recipes/mini/neural.sh writes them."
)
@click.option("--neural-precision", type=click.Choice(["int8", "float"]), default="int8", show_default=True)
@click.option(
    "--ngram-lookahead",
    type=click.Choice(["bigram", "unigram"]),
    default="bigram",
    show_default=True,
    help="Partial-word look-ahead of the n-grams: the best word score given the previous word, or "
    "the best unigram (the default before bigram; for ablations).",
)
@click.option(
    "--modes", default="offline,streaming", show_default=True, help="offline (non-streaming), streaming."
)
@click.option("--kinds", default="ngram,neural", show_default=True, help="LM kinds.")
@click.option(
    "--lms",
    default="background,personal,interpolated,dp",
    show_default=True,
    help="LM conditions (no LM always runs).",
)
@click.option("--epsilons", default="1,8", show_default=True, help="Epsilons of the DP LMs (dp-eps<E>).")
@click.option(
    "--splits", default=None, help="Reported splits (default: the test splits, minus --tune-split)."
)
@click.option(
    "--tune-split",
    default="auto",
    show_default=True,
    help="Users the LM weight and bonus are tuned on: auto (each test split on its own dev split, "
    "test-clean on dev-clean and test-other on dev-other, where the dataset has them, else on dev), "
    "one split for all, or SPLIT=TUNE_SPLIT pairs, e.g. test-clean=dev-clean,test-other=dev-other.",
)
@click.option("--lm-weights", default="0.1,0.2,0.3,0.5,0.8", show_default=True, help="LM weight grid.")
@click.option(
    "--length-bonuses", default="0,0.5,1,2", show_default=True, help="Length bonus grid (at the best weight)."
)
@click.option(
    "--default-bonus", type=float, default=0.0, show_default=True, help="Bonus while first tuning the weight."
)
@click.option(
    "--tune-rounds",
    default="2",
    show_default=True,
    help="Rounds of weight-then-bonus search on the tune split (1: weight at --default-bonus, then bonus; "
    "0: every weight x bonus pair of the grids), for every condition or per LM kind: ngram=0,neural=2 "
    "(the full grid for the n-grams, cheap to decode; kinds not named: 2).",
)
@click.option("--beam", type=int, default=DEFAULT_BEAM, show_default=True)
@click.option("--decoder", type=click.Choice(["ctc", "transducer"]), default="ctc", show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["float", "int8", "ort", "ort-int8"]),
    default=None,
    help="Model files to run; default: float when the model has them, else int8 (a shipped model).",
)
@click.option(
    "--chunk-ms", type=int, default=160, show_default=True, help="Streaming: audio per accept_waveform."
)
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime threads per process.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Worker processes (users in parallel).")
@click.option(
    "--resamples", type=int, default=DEFAULT_RESAMPLES, show_default=True, help="Bootstrap resamples."
)
@click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True)
@click.option("--seed", type=int, default=None, help="Bootstrap seed (default: the global --seed).")
@click.option(
    "--max-users", type=int, default=0, show_default=True, help="Users per split (0: all); quick looks only."
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def wer(
    ctx: click.Context,
    dataset: Path,
    model: Path | None,
    out: Path,
    lm_dir: Path | None,
    neural_dir: Path | None,
    neural_precision: str,
    ngram_lookahead: str,
    modes: str,
    kinds: str,
    lms: str,
    epsilons: str,
    splits: str | None,
    tune_split: str,
    lm_weights: str,
    length_bonuses: str,
    default_bonus: float,
    tune_rounds: str,
    beam: int,
    decoder: str,
    precision: str | None,
    chunk_ms: int,
    threads: int,
    jobs: int,
    resamples: int,
    confidence: float,
    seed: int | None,
    max_users: int,
    no_plots: bool,
    quiet: bool,
) -> None:
    """Per-user WER of every user in every condition, weights tuned on dev users."""
    from userlibri.bench.wer_conditions import LMLayout, condition_matrix
    from userlibri.bench.wer_decode import DecodeSettings
    from userlibri.bench.wer_report import markdown
    from userlibri.bench.wer_run import BenchConfig, run_bench

    if model is None:
        from userlibri.models import model_dir

        model = model_dir()
    if precision is None:
        from userlibri.asr.onnx_model import default_precision

        precision = default_precision(model)
    conditions = condition_matrix(_names(modes), _names(kinds), _names(lms), _floats(epsilons, "--epsilons"))
    cfg = BenchConfig(
        dataset=dataset,
        out=out,
        decode=DecodeSettings(model, decoder, beam, precision, threads, chunk_ms),
        conditions=tuple(conditions),
        layout=LMLayout(lm_dir, neural_dir, neural_precision, ngram_lookahead),
        splits=_names(splits) if splits else None,
        tune_split=tune_split,
        lm_weights=_floats(lm_weights, "--lm-weights"),
        length_bonuses=_floats(length_bonuses, "--length-bonuses"),
        default_bonus=default_bonus,
        tune_rounds=int(tune_rounds) if tune_rounds.strip().isdigit() else tune_rounds,
        resamples=resamples,
        seed=_seed(ctx, seed),
        confidence=confidence,
        jobs=jobs,
        max_users=max_users,
        progress=not quiet,
        plots=not no_plots,
    )
    results = run_bench(cfg)
    click.echo(markdown(results))
    click.echo(
        f"wrote {out}/results.json, results.csv, per_user.csv, results.md" + ("" if no_plots else ", *.png")
    )


@click.command("wer-score")
@click.option("--refs", type=_FILE, required=True, help="jsonl manifest with the references (and users).")
@click.option(
    "--hyp",
    "hyps",
    multiple=True,
    required=True,
    help="NAME=FILE hypotheses (jsonl with id/text, or '<utt_id> <text>' lines); the first is the baseline.",
)
@click.option("--resamples", type=int, default=DEFAULT_RESAMPLES, show_default=True)
@click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True)
@click.option("--seed", type=int, default=None, help="Bootstrap seed (default: the global --seed).")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results here.",
)
@click.pass_context
def wer_score(
    ctx: click.Context,
    refs: Path,
    hyps: tuple[str, ...],
    resamples: int,
    confidence: float,
    seed: int | None,
    json_out: Path | None,
) -> None:
    """Average per-user WER [CI], pooled WER and paired tests vs the first --hyp."""
    from userlibri.bench.wer import format_scores, references_from_manifest, score_named_files
    from userlibri.fsio import write_json_atomic

    named = []
    for h in hyps:
        name, sep, path = h.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=FILE, found {h!r}", param_hint="--hyp")
        if not Path(path).is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint="--hyp")
        named.append((name, Path(path)))
    result = score_named_files(
        references_from_manifest(refs), refs, named, resamples, _seed(ctx, seed), confidence
    )
    click.echo(format_scores(result))
    if json_out is not None:
        write_json_atomic(json_out, result)
        click.echo(f"wrote {json_out}")


COMMANDS = [wer, wer_score]
