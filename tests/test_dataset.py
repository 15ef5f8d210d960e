"""The ``Dataset`` loader: reads what ``build`` writes, and an official-style release without
manifests (transcript files + audio only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_build import CH1, CH3, _flac, make_corpus

from userlibri.data import librispeech as ls
from userlibri.data.dataset import Dataset, User, parse_user_id
from userlibri.data.userlibri import BuildConfig, build
from userlibri.errors import DataFormatError, UserLibriError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ds")
    root = make_corpus(tmp)
    out = tmp / "release" / "UserLibri"
    build(BuildConfig(librispeech=root, out=out, num_workers=1))
    return out


def test_round_trip_build_then_load(built: Path) -> None:
    ds = Dataset(built.parent)  # the directory holding UserLibri/ works too
    assert ds.root == built
    assert ds.splits() == ["test-clean", "test-other"]
    users = ds.users("test-clean")
    assert users == [User("speaker-121-book-9001", "test-clean", "121", "9001", 6)]
    utts = ds.utterances(users[0])
    assert [u.text for u in utts] == CH3
    assert all(Path(u.audio).is_file() for u in utts)
    assert utts[0].duration == pytest.approx(0.25) and utts[0].chapter == "5001"
    assert ds.utterances("speaker-3005-book-9001")[1].text == CH1[1]
    assert ds.lm_books() == ["9001"]
    lm = ds.lm_text("9001")
    assert lm == (built / "lm_data" / "9001_lm_train.txt").read_text(encoding="utf-8").splitlines()
    assert list(ds.iter_lm_text("9001")) == lm
    meta = ds.lm_metadata()
    assert meta == [
        {
            "Book ID": "9001",
            "Num Text Examples": str(len(lm)),
            "Average Words Per Example": meta[0]["Average Words Per Example"],
        }
    ]
    assert {r["User ID"] for r in ds.audio_metadata()} == {"speaker-121-book-9001", "speaker-3005-book-9001"}


def test_official_layout_without_manifests(built: Path, tmp_path: Path) -> None:
    """An official download has no manifests/ and no build report: same users and utterances."""
    official = tmp_path / "UserLibri"
    shutil.copytree(built, official)
    shutil.rmtree(official / "manifests")
    (official / "build_report.json").unlink()
    a, b = Dataset(built), Dataset(tmp_path)
    for split in a.splits():
        assert a.users(split) == b.users(split)
        for user in a.users(split):
            ua, ub = a.utterances(user), b.utterances(user)
            assert [(u.id, u.text, u.chapter, u.book, u.speaker) for u in ua] == [
                (u.id, u.text, u.chapter, u.book, u.speaker) for u in ub
            ]
            assert [u.duration for u in ua] == pytest.approx([u.duration for u in ub], abs=1e-3)
            assert [Path(u.audio).name for u in ub] == [Path(u.audio).name for u in ua]


def test_hand_made_official_style_release(tmp_path: Path) -> None:
    """A release written by hand in the official layout (as TFDS's dummy data is) loads unchanged."""
    udir = tmp_path / "UserLibri" / "audio_data" / "test-other" / "speaker-12-book-34"
    ls.write_transcripts(udir / "12-560.trans.txt", {"12-560-0000": "HELLO THERE", "12-560-0001": "GOOD DAY"})
    _flac(udir / "12-560-0000.flac", seconds=0.5)
    _flac(udir / "12-560-0001.flac", seconds=0.75)
    lm = tmp_path / "UserLibri" / "lm_data"
    lm.mkdir(parents=True)
    (lm / "34_lm_train.txt").write_text("FIRST SENTENCE\n\nSECOND ONE\n", encoding="utf-8")
    (lm / "metadata.tsv").write_text(
        "Book ID\tNum Text Examples\tAverage Words Per Example\n34\t2\t2.0\n", encoding="utf-8"
    )
    ds = Dataset(tmp_path)
    assert ds.splits() == ["test-other"]
    [user] = ds.users("test-other")
    assert (user.speaker, user.book, user.num_utterances) == ("12", "34", 2)
    assert [round(u.duration, 2) for u in ds.utterances(user)] == [0.5, 0.75]
    assert ds.lm_text("34") == ["FIRST SENTENCE", "SECOND ONE"]
    assert ds.lm_metadata()[0]["Num Text Examples"] == "2"
    assert ds.audio_metadata() == []


def test_bad_releases(tmp_path: Path) -> None:
    with pytest.raises(UserLibriError, match="not a UserLibri release"):
        Dataset(tmp_path)
    (tmp_path / "audio_data" / "test-clean" / "bob").mkdir(parents=True)
    ds = Dataset(tmp_path)
    with pytest.raises(DataFormatError, match="speaker-<S>-book-<B>"):
        ds.users("test-clean")
    with pytest.raises(UserLibriError, match="no such split"):
        ds.users("test-other")
    with pytest.raises(UserLibriError, match="no LM text"):
        ds.lm_text("1")
    (tmp_path / "lm_data").mkdir()
    (tmp_path / "lm_data" / "metadata.tsv").write_text("Book\tCount\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="columns Book ID"):
        ds.lm_metadata()
    with pytest.raises(UserLibriError, match="speaker-<S>-book-<B>"):
        parse_user_id("speaker-1")


def test_manifest_disagreeing_with_directories_falls_back(built: Path, tmp_path: Path, caplog) -> None:
    copy = tmp_path / "c"
    shutil.copytree(built, copy)
    shutil.rmtree(copy / "audio_data" / "test-other" / "speaker-3005-book-9001")
    ds = Dataset(copy)
    assert ds.users("test-other") == []
    assert "reading transcripts instead" in caplog.text
