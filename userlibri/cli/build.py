"""``userlibri build``: LibriSpeech-layout corpus + book texts -> UserLibri release layout."""

from __future__ import annotations

from pathlib import Path

import click

from userlibri.constants import DEFAULT_LEAKAGE_NGRAM, TEST_SPLITS
from userlibri.data.userlibri import DEFAULT_BUILD_WORKERS, BuildConfig, build


@click.command("build")
@click.option(
    "--librispeech",
    "librispeech",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="LibriSpeech root (holding CHAPTERS.TXT and the split directories) or its parent.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory (replaced).")
@click.option(
    "--splits",
    default=",".join(TEST_SPLITS),
    show_default=True,
    help="Comma-separated test splits that define the users.",
)
@click.option(
    "--books-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Where book texts are (<id>.txt, a book cache, or a books/ tree); default: <librispeech>/books.",
)
@click.option("--workers", type=int, default=DEFAULT_BUILD_WORKERS, show_default=True, help="Text processes.")
@click.option("--copy-audio", is_flag=True, help="Copy flac files instead of hard-linking them.")
@click.option("--no-audio-check", is_flag=True, help="Skip the sample rate/channel check of every flac.")
@click.option(
    "--no-ngram-filter",
    is_flag=True,
    help=f"Keep LM sentences that share a {DEFAULT_LEAKAGE_NGRAM}-gram with test transcripts "
    "(chapter removal only).",
)
def command(
    librispeech: Path,
    out: Path,
    splits: str,
    books_dir: Path | None,
    workers: int,
    copy_audio: bool,
    no_audio_check: bool,
    no_ngram_filter: bool,
) -> None:
    """Build the UserLibri layout (audio_data/, lm_data/, manifests/, build_report.json)."""
    from userlibri.data.report import format_report

    cfg = BuildConfig(
        librispeech=librispeech,
        out=out,
        splits=tuple(s.strip() for s in splits.split(",") if s.strip()),
        books_dir=books_dir,
        num_workers=workers,
        link_audio=not copy_audio,
        check_audio=not no_audio_check,
        ngram_filter=not no_ngram_filter,
    )
    report = build(cfg)
    click.echo(format_report(report))
    click.echo(f"wrote {out} (report: {out / 'build_report.json'})")
