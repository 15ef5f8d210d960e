"""End to end, through the CLI as a user runs it: book texts -> ``userlibri synth`` (a tiny corpus:
2 test books, 2 voices) -> ``userlibri build`` -> the ``Dataset`` loader, checking counts, the
release layout and zero leakage of test transcripts into the users' LM text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from userlibri.cli import cli
from userlibri.data.books import Book, BookCorpus, Chapter
from userlibri.data.dataset import Dataset

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("sox") is None,
    reason="flite/sox not installed (make setup)",
)

_SYLLABLES = [
    "ba",
    "ko",
    "ri",
    "den",
    "mal",
    "su",
    "tor",
    "vi",
    "len",
    "pa",
    "mo",
    "gar",
    "ne",
    "lis",
    "tu",
    "fen",
]


def _prose(rng: np.random.Generator, n_paragraphs: int) -> tuple[str, ...]:
    """Original pseudo-prose from a large random vocabulary, so that no two sentences share an 8-gram."""
    paras = []
    for _ in range(n_paragraphs):
        sents = []
        for _ in range(5):
            words = [
                "".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4))))
                for _ in range(int(rng.integers(8, 15)))
            ]
            sents.append(" ".join(words).capitalize() + ".")
        paras.append(" ".join(sents))
    return tuple(paras)


def _book(book_id: str, n_chapters: int, seed: int) -> Book:
    rng = np.random.default_rng(seed)
    chapters = tuple(Chapter(f"CHAPTER {i + 1}", _prose(rng, 6)) for i in range(n_chapters))
    return Book(book_id, f"Book {book_id}", "A. Writer", chapters, source="test")


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_synth_build_load(tmp_path: Path) -> None:
    books = BookCorpus.create(tmp_path / "books")
    for i, book_id in enumerate(["501", "502", "503"]):
        books.add(_book(book_id, 4, seed=i))
    config = {
        "seed": 1,
        "min_chapter_words": 40,
        "splits": {
            "train": {
                "books": ["503"],
                "voices": ["flite:kal16"],
                "readers": 1,
                "max_utterances_per_chapter": 2,
            },
            "test-clean": {
                "books": ["501", "502"],
                "voices": ["flite:slt", "flite:awb"],
                "readers": 2,
                "chapters_per_reader": 1,
                "max_utterances_per_chapter": 3,
            },
        },
    }
    conf = tmp_path / "synth.yaml"
    conf.write_text(yaml.safe_dump(config))
    ls_root, out = tmp_path / "LibriSpeech", tmp_path / "UserLibri"
    _invoke(
        [
            "synth",
            "--books",
            str(books.root),
            "--out",
            str(ls_root),
            "--config",
            str(conf),
            "--jobs",
            "2",
            "--no-progress",
        ]
    )
    output = _invoke(["build", "--librispeech", str(ls_root), "--out", str(out), "--splits", "test-clean"])
    assert "leakage" in output

    ds = Dataset(out)
    assert ds.splits() == ["test-clean"]
    users = ds.users("test-clean")
    assert len(users) == 2 and sorted(u.book for u in users) == ["501", "502"]
    for user in users:
        utts = ds.utterances(user)
        assert len(utts) == user.num_utterances == 3
        assert all(Path(u.audio).is_file() and u.duration > 1.0 and u.text for u in utts)
        lm = ds.lm_text(user.book)
        assert len(lm) > 20
        # The chapter this user read is gone from the LM text; the other chapters stay.
        lm_words = " ".join(lm)
        for u in utts:
            assert u.text not in lm_words
        assert all(line == line.upper() for line in lm)
    assert sorted(ds.lm_books()) == ["501", "502"]  # the train book is not a test user's book

    report = json.loads((out / "build_report.json").read_text())
    assert len(report["users"]) == 2
    assert all(u["leak_total"] > 0 and u["leakage_before_filter"] == 0.0 for u in report["users"])
    assert report["leakage"]["max"] == 0.0
    assert report["alignment"]["located"] == report["alignment"]["chapters"] == 2
