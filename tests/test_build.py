"""``userlibri build`` on a tiny LibriSpeech-layout corpus made in the test (sine flac files) plus
the committed fixture book (tests/data/librispeech/books/utf-8/9001)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from userlibri.cli import cli
from userlibri.data import librispeech as ls
from userlibri.data.align import AlignConfig, BookIndex, in_spans, merge_spans
from userlibri.data.books import Book, BookCorpus
from userlibri.data.report import format_report, leakage, lines_sharing_ngrams, stream_ngrams
from userlibri.data.userlibri import BuildConfig, book_chapters, book_sentences, build, process_books
from userlibri.errors import AudioError, ConfigError, DataFormatError, UserLibriError

DATA = Path(__file__).parent / "data" / "librispeech"
BOOK = DATA / "books" / "utf-8" / "9001" / "9001.txt.utf-8"

# Chapter III of the fixture book, read with LibriSpeech-style segmentation (utterances cross
# sentence boundaries) and small differences: MISTER/MR spelled out, a number, one misheard word.
CH3 = [
    "A WEEK LATER THE SUPPLY BOAT BROUGHT A LETTER SEALED WITH GREEN WAX IT WAS ADDRESSED TO MISTER",
    "JONAS PENROSE IN A SLANTING CAREFUL HAND HER FATHER READ IT TWICE AT THE TABLE",
    "AND THEN FOLDED IT INTO HIS WAISTCOAT POCKET WE ARE TO HAVE A VISITOR HE SAID AT LAST",
    "A GENTLEMAN FROM THE BOARD OF TRADE WHO WISHES TO INSPECT THE LIGHT MARTHA ASKED WHETHER",
    "THE GENTLEMAN WOULD STAY THE NIGHT HE SAID THE GENTLEMAN WOULD STAY FOR THREE NIGHTS AT THE LEAST",
    "AND THAT SHE MUST AIR THE SPARE ROOM AND SCRUB THE GLASS",
]
# Only the first part of chapter I (partial reading).
CH1 = [
    "MARTHA PENROSE HAD LIVED ON THE GREY ROCK FOR ELEVEN YEARS",
    "AND SHE KNEW EVERY CRACK IN ITS GRANITE WALLS HER FATHER TRIMMED THE GREAT LAMP EACH EVENING",
]


def _flac(path: Path, seconds: float = 0.25, rate: int = 16000, channels: int = 1, seed: int = 0) -> None:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, rate, format="FLAC")


def _chapter(root: Path, split: str, spk: str, ch: str, texts: list[str]) -> None:
    trans = {f"{spk}-{ch}-{i:04d}": t for i, t in enumerate(texts)}
    ls.write_transcripts(ls.transcript_path(root, split, spk, ch), trans)
    for i, utt in enumerate(trans):
        _flac(ls.audio_path(root, split, utt), seed=i)


def make_corpus(tmp: Path, with_books: bool = True) -> Path:
    root = tmp / "LibriSpeech"
    ls.write_speakers(
        root / ls.SPEAKERS_FILE,
        [
            ls.SpeakerInfo("121", "F", "test-clean", 1.0, "Reader One"),
            ls.SpeakerInfo("3005", "M", "test-other", 1.0, "Reader Two"),
            ls.SpeakerInfo("14", "F", "train-clean-100", 1.0, "Reader Three"),
        ],
    )
    ls.write_chapters(
        root / ls.CHAPTERS_FILE,
        [
            ls.ChapterInfo("5001", "121", 0.1, "test-clean", "77", "9001", "Section 3", "Lighthouse"),
            ls.ChapterInfo("5002", "3005", 0.1, "test-other", "77", "9001", "Section 1", "Lighthouse"),
            ls.ChapterInfo("5003", "121", 0.1, "test-clean", "78", "9002", "Part 1", "No Text Here"),
            ls.ChapterInfo("5004", "14", 0.1, "train-clean-100", "77", "9001", "Section 5", "Lighthouse"),
        ],
    )
    ls.write_books(
        root / ls.BOOKS_FILE, [ls.BookInfo("9001", "The Lighthouse Keeper's Daughter", "A. Fixture")]
    )
    _chapter(root, "test-clean", "121", "5001", CH3)
    _chapter(root, "test-other", "3005", "5002", CH1)
    _chapter(root, "test-clean", "121", "5003", ["SOME WORDS FROM A BOOK WE DO NOT HAVE"])
    if with_books:
        dst = ls.book_text_path(root, "9001")
        dst.parent.mkdir(parents=True)
        shutil.copy(BOOK, dst)
    return root


def _cfg(root: Path, out: Path, **kw) -> BuildConfig:
    return BuildConfig(librispeech=root, out=out, num_workers=kw.pop("num_workers", 1), **kw)


# ---------------------------------------------------------------- alignment and leakage units


def _fixture_sentences() -> tuple[list[str], list[int]]:
    return book_sentences(book_chapters(BOOK.read_text(encoding="utf-8"), "9001", BOOK))


def test_align_finds_read_chapter_and_widens_to_its_boundaries() -> None:
    sents, owner = _fixture_sentences()
    idx = BookIndex(sents, owner)
    m = idx.locate("5001", CH3)
    assert m.located and m.widened_to == "chapters"
    ch3 = [i for i, c in enumerate(owner) if c == 2]
    assert (m.cut_start, m.cut_end) == (ch3[0], ch3[-1] + 1)
    assert m.start >= ch3[0] and m.end <= ch3[-1] + 1
    assert 0.6 < m.coverage < 1.0  # the misheard word and the MR/MISTER spelling cost a few n-grams
    # Partial reading of chapter I still removes the whole chapter.
    m1 = idx.locate("5002", CH1)
    ch1 = [i for i, c in enumerate(owner) if c == 0]
    assert m1.located and (m1.cut_start, m1.cut_end) == (ch1[0], ch1[-1] + 1)


def test_align_without_chapters_uses_margin_and_misses_foreign_text() -> None:
    sents, _ = _fixture_sentences()
    idx = BookIndex(sents, None, AlignConfig(margin=1))
    m = idx.locate("5001", CH3)
    assert m.located and m.widened_to == "margin"
    assert m.cut_start == m.start - 1 and m.cut_end == m.end + 1
    miss = idx.locate("x", ["THIS SENTENCE IS NOT IN THE BOOK AT ALL SORRY", "NOR IS THIS ONE OF COURSE"])
    assert not miss.located and miss.cut_start == -1 and "hits" in miss.reason


def test_align_config_validation() -> None:
    with pytest.raises(ConfigError):
        AlignConfig(ngram=1).validate()
    with pytest.raises(ConfigError):
        AlignConfig(min_coverage=2).validate()


def test_spans_helpers() -> None:
    spans = merge_spans([(5, 8), (0, 2), (7, 10), (3, 3)])
    assert spans == [(0, 2), (5, 10)]
    assert [i for i in range(12) if in_spans(i, spans)] == [0, 1, 5, 6, 7, 8, 9]


def test_leakage_counts_ngrams_across_sentence_boundaries() -> None:
    lm = ["A B C D", "E F G H I", "Z"]
    grams = stream_ngrams(lm, 8)
    # "B C D E F G H I" spans the first two LM sentences; the second text shares 7 words only;
    # 8-grams must not span two test texts.
    lk = leakage(["B C D E F G H I", "B C D E F G H Q", "SHORT ONE", "D E F G", "H I Z A"], grams)
    assert (lk.found, lk.total) == (1, 2)
    assert lk.share == 0.5
    assert leakage([], grams).share == 0.0
    # Unknown words never match; shorter orders work too.
    assert (leakage(["NEW A B", "A B C"], stream_ngrams(lm, 2))).found == 3


def test_lines_sharing_ngrams_within_lines_only() -> None:
    lines = ["A B C D E", "F G H", "I J K L"]
    assert lines_sharing_ngrams(lines, ["X B C D Y", "K L"], 3) == {0}
    assert lines_sharing_ngrams(lines, ["E F G"], 3) == set()  # would span two lines
    assert lines_sharing_ngrams(lines, ["J K L", "F G H"], 3) == {1, 2}
    assert lines_sharing_ngrams([], ["A B C"], 3) == set()


# ---------------------------------------------------------------- end to end on the fixture corpus


def test_build_layout_chapter_removal_and_report(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    out = tmp_path / "UserLibri"
    report = build(_cfg(root, out))

    # Users, skips.
    assert report["splits"]["test-clean"]["users"] == 1
    assert report["splits"]["test-other"]["users"] == 1
    assert report["skipped"]["books_without_text"] == 1
    assert report["skipped"]["users_without_lm_text"] == 1
    assert sorted(p.name for p in (out / "audio_data" / "test-clean").iterdir()) == ["speaker-121-book-9001"]

    # Release layout.
    udir = out / "audio_data" / "test-clean" / "speaker-121-book-9001"
    assert sorted(p.name for p in udir.iterdir()) == [f"121-5001-{i:04d}.flac" for i in range(6)] + [
        "121-5001.trans.txt"
    ]
    assert ls.read_transcripts(udir / "121-5001.trans.txt")["121-5001-0005"] == CH3[5]
    src = ls.audio_path(root, "test-clean", "121-5001-0000")
    assert os.stat(udir / "121-5001-0000.flac").st_ino == os.stat(src).st_ino  # hard link
    meta = (out / "audio_data" / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert meta[0] == "Split\tUser ID\tNum Audio Examples\tAverage Words Per Example"
    assert meta[1].startswith("test-clean\tspeaker-121-book-9001\t6\t")
    lm_meta = (out / "lm_data" / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert lm_meta[0] == "Book ID\tNum Text Examples\tAverage Words Per Example"

    # Chapter removal: chapters I and III gone, II, IV and V kept.
    lm = (out / "lm_data" / "9001_lm_train.txt").read_text(encoding="utf-8").splitlines()
    sents, owner = _fixture_sentences()
    by_ch = {c: [s for s, o in zip(sents, owner, strict=True) if o == c] for c in set(owner)}
    assert lm == by_ch[1] + by_ch[3] + by_ch[4]
    assert lm_meta[1] == f"9001\t{len(lm)}\t{sum(len(s.split()) for s in lm) / len(lm):.2f}"

    al = report["alignment"]
    assert (al["chapters"], al["located"], al["not_located"]) == (2, 2, 0)
    assert report["leakage"]["max"] == 0.0
    assert report["leakage"]["mean_before_filter"] == 0.0  # chapter removal alone is enough here
    assert report["books"][0]["removed_by_chapters"] == len(by_ch[0]) + len(by_ch[2])

    # Manifests and report on disk.
    lines = (out / "manifests" / "test-other.jsonl").read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    assert rec["user"] == "speaker-3005-book-9001" and rec["chapter"] == "5002" and rec["book"] == "9001"
    assert rec["audio"].startswith("../audio_data/test-other/") and rec["duration"] == pytest.approx(0.25)
    assert json.loads((out / "build_report.json").read_text())["leakage"]["worst_user"]["share"] == 0.0
    text = format_report(report)
    assert "test-clean" in text and "books_without_text=1" in text


def test_build_is_deterministic_and_rerunnable(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    out = tmp_path / "out"
    build(_cfg(root, out, num_workers=2))
    first = {
        p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".json"
    }
    build(_cfg(root, out))
    second = {
        p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".json"
    }
    assert first == second


def test_ngram_filter_catches_unlocated_text(tmp_path: Path) -> None:
    """A chapter whose transcripts are too short to locate still cannot leak: the 8-gram filter
    drops the matching sentence, and the report says how much the filter removed."""
    sents, _ = _fixture_sentences()
    target = next(s for s in sents if s.startswith("THE GLASS OF THE LANTERN"))
    job_kw = dict(align=AlignConfig(min_hits=50))  # make every chapter unlocatable
    from userlibri.data.userlibri import BookJob

    job = BookJob("9001", str(BOOK), {"c": [target]}, {"u": [target]}, **job_kw)
    res = process_books([job])["9001"]
    assert not res.matches[0].located
    assert res.removed_by_chapters == 0 and res.removed_by_filter == 1
    assert target not in res.sentences
    assert res.leakage["u"][0] == 0 and res.leakage_before_filter["u"][0] > 0
    off = process_books(
        [BookJob("9001", str(BOOK), {"c": [target]}, {"u": [target]}, ngram_filter=False, **job_kw)]
    )
    assert target in off["9001"].sentences and off["9001"].leakage["u"][0] > 0


def test_cli_build(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    out = tmp_path / "cli_out"
    res = CliRunner().invoke(
        cli,
        [
            "build",
            "--librispeech",
            str(tmp_path),
            "--out",
            str(out),
            "--splits",
            "test-other",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "test-other" in res.output and "leakage" in res.output
    assert (out / "audio_data" / "test-other" / "speaker-3005-book-9001").is_dir()
    assert not (out / "audio_data" / "test-clean").exists()
    # Chapter III (read in test-clean) is still removed even though only test-other was built.
    lm = (out / "lm_data" / "9001_lm_train.txt").read_text(encoding="utf-8")
    assert "SUPPLY BOAT" not in lm and "MARTHA PENROSE HAD LIVED" not in lm


def test_books_dir_option(tmp_path: Path) -> None:
    root = make_corpus(tmp_path, with_books=False)
    books = tmp_path / "mybooks"
    books.mkdir()
    shutil.copy(BOOK, books / "9001.txt")
    report = build(_cfg(root, tmp_path / "o", books_dir=books))
    assert report["alignment"]["located"] == 2
    # A book cache (``corpora fetch`` output, "## " chapter headings) works as --books-dir too.
    cache = BookCorpus.create(tmp_path / "cache")
    chapters = book_chapters(BOOK.read_text(encoding="utf-8"), "9001")
    cache.add(Book("9001", "The Lighthouse Keeper's Daughter", "A. Fixture", tuple(chapters)))
    report = build(_cfg(root, tmp_path / "o2", books_dir=cache.root))
    assert report["alignment"]["located"] == 2 and report["books"][0]["book_chapters"] == 5
    lm = (tmp_path / "o2" / "lm_data" / "9001_lm_train.txt").read_text(encoding="utf-8")
    assert lm == (tmp_path / "o" / "lm_data" / "9001_lm_train.txt").read_text(encoding="utf-8")


# ---------------------------------------------------------------- bad input


def test_missing_audio_is_an_error(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    ls.audio_path(root, "test-clean", "121-5001-0003").unlink()
    with pytest.raises(AudioError, match=r"1 transcript lines point at missing audio.*121-5001-0003.flac"):
        build(_cfg(root, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"rate": 8000}, "sample rate 16000 Hz, found 8000"),
        ({"channels": 2}, "1 channel"),
        ({}, "3005-5002-0001.flac: expected a readable flac file"),
    ],
)
def test_wrong_audio_format_is_an_error(tmp_path: Path, kw, needle) -> None:
    root = make_corpus(tmp_path)
    if kw:
        _flac(ls.audio_path(root, "test-other", "3005-5002-0001"), **kw)
    else:
        ls.audio_path(root, "test-other", "3005-5002-0001").write_bytes(b"not a flac file at all")
    with pytest.raises(AudioError, match=needle):
        build(_cfg(root, tmp_path / "o"))


def test_malformed_chapters_line(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    p = root / ls.CHAPTERS_FILE
    p.write_text(p.read_text(encoding="utf-8") + "5009 | 121 | 0.1 | test-clean\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as ei:
        build(_cfg(root, tmp_path / "o"))
    assert ei.value.line == len(p.read_text(encoding="utf-8").splitlines())


def test_reader_mismatch(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    _chapter(root, "test-clean", "3005", "5001", ["A WEEK LATER"])  # chapter 5001 belongs to 121
    with pytest.raises(DataFormatError, match="READER 121"):
        build(_cfg(root, tmp_path / "o"))


def test_non_utf8_book_is_an_error(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    ls.book_text_path(root, "9001").write_bytes(BOOK.read_bytes().replace(b"Martha", b"M\xe4rtha"))
    with pytest.raises(
        DataFormatError, match=r"9001.txt.utf-8: expected UTF-8 text, found invalid byte 0xe4"
    ):
        build(_cfg(root, tmp_path / "o"))


def test_empty_book_skips_its_users(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    ls.book_text_path(root, "9001").write_text(
        "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\n",
        encoding="utf-8",
    )
    with pytest.raises(UserLibriError, match="no user has both test audio and book text"):
        build(_cfg(root, tmp_path / "o"))


def test_chapter_not_in_metadata_is_skipped(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    _chapter(root, "test-other", "3005", "7777", ["AN ORPHAN CHAPTER"])
    report = build(_cfg(root, tmp_path / "o"))
    assert report["skipped"]["chapters_without_metadata"] == 1
    assert report["skipped"]["utterances_without_chapter_metadata"] == 1


def test_unlocatable_chapter_is_reported(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    tpath = ls.transcript_path(root, "test-other", "3005", "5002")
    ls.write_transcripts(
        tpath,
        {"3005-5002-0000": "WORDS THAT NEVER APPEAR IN THE FIXTURE BOOK", "3005-5002-0001": "NOR THESE"},
    )
    report = build(_cfg(root, tmp_path / "o"))
    assert report["alignment"]["not_located"] == 1
    assert "not located: 1" in format_report(report)


def test_failed_build_leaves_previous_output(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    out = tmp_path / "o"
    build(_cfg(root, out))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    ls.audio_path(root, "test-clean", "121-5001-0000").unlink()
    with pytest.raises(AudioError):
        build(_cfg(root, out))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_config_validation(tmp_path: Path) -> None:
    root = make_corpus(tmp_path)
    with pytest.raises(ConfigError, match="replace the input"):
        build(_cfg(root, tmp_path))
    with pytest.raises(ConfigError, match="num_workers"):
        build(_cfg(root, tmp_path / "o", num_workers=0))
    with pytest.raises(UserLibriError, match="no CHAPTERS.TXT"):
        build(_cfg(tmp_path / "LibriSpeech" / "test-clean", tmp_path / "o"))
