"""``userlibri synth``: a synthesized LibriSpeech-layout corpus read from a book corpus."""

from __future__ import annotations

from pathlib import Path

import click

from userlibri.constants import DEFAULT_CACHE_DIR


@click.command("synth")
@click.option(
    "--books",
    "books_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_CACHE_DIR / "corpora",
    help="Book corpus directory (from 'userlibri corpora fetch').",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Corpus directory to write.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Synth config YAML (e.g. recipes/mini/conf/synth.yaml).",
)
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Worker processes [default: all cores]."
)
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field, e.g. --set splits.test-clean.readers=6 (repeatable; VALUE is YAML).",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(
    books_dir: Path,
    out: Path,
    config_path: Path,
    jobs: int | None,
    seed: int | None,
    overrides: tuple[str, ...],
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Synthesize speech for the books in LibriSpeech layout (SPEAKERS/CHAPTERS/BOOKS.TXT, flac,
    transcripts, book texts, synth.json) and print a summary table."""
    from userlibri.data.synth import synthesize_corpus
    from userlibri.data.synth_config import load_synth_config

    if seed is not None:
        overrides = (*overrides, f"seed={seed}")
    cfg = load_synth_config(config_path, overrides)
    info = synthesize_corpus(cfg, books_dir, out, jobs=jobs, overwrite=overwrite, progress=not no_progress)
    click.echo(format_summary(info))


def format_summary(info: dict) -> str:
    """The per-split table printed after a run."""
    header = f"{'split':<11} {'readers':>7} {'books':>5} {'users':>5} {'utts':>6} {'failed':>6} {'hours':>7}"
    rows = [header, "-" * len(header)]
    for split, s in info["splits"].items():
        rows.append(
            f"{split:<11} {s['readers']:>7} {s['books']:>5} {s['users']:>5} {s['utterances']:>6} "
            f"{s['failed']:>6} {s['hours']:>7.3f}"
        )
    t = info["timings"]
    rows.append(
        f"{t['audio_hours']:.3f} h of audio in {t['synth_s']:.1f} s with {t['jobs']} jobs "
        f"({t['x_real_time']:.0f}x real time; {t['x_real_time_per_cpu']:.0f}x per CPU second); "
        f"total {t['total_s']:.1f} s"
    )
    return "\n".join(rows)
