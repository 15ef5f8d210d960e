"""LibriSpeech metadata and layout I/O on hand-made fixtures in the real formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from userlibri.data import librispeech as ls
from userlibri.data.manifest import Utterance, read_manifest, write_manifest
from userlibri.errors import DataFormatError, UserLibriError

DATA = Path(__file__).parent / "data" / "librispeech"


def test_read_speakers_real_format_with_pipes_in_name() -> None:
    spk = ls.read_speakers(DATA / "SPEAKERS.TXT")
    assert list(spk) == ["14", "60", "121", "3005"]
    assert spk["14"] == ls.SpeakerInfo("14", "F", "train-clean-360", 25.03, "Ada Example")
    assert spk["60"].name == "|XYZ|Bram"
    assert spk["3005"].subset == "test-other"
    assert spk["121"].minutes == pytest.approx(8.10)


def test_read_chapters_real_format() -> None:
    ch = ls.read_chapters(DATA / "CHAPTERS.TXT")
    assert len(ch) == 5
    c = ch["123852"]
    assert (c.speaker_id, c.subset, c.book_id, c.project_id) == ("121", "test-clean", "1041", "4021")
    assert c.chapter_title == "Sonnets 051-075"
    assert c.project_title == "Sonnets"
    assert c.minutes == pytest.approx(4.05)
    # Pipes inside either title are kept with the right column.
    assert ch["2002"].chapter_title == "Volume I | Chapter 3"
    assert ch["2002"].project_title == "Emma (Version 2)"
    assert ch["163389"].chapter_title == "Chapter 16"
    assert ch["163389"].project_title == "Adventures of a Boy | Unabridged"


def test_read_books_pipes_in_title() -> None:
    books = ls.read_books(DATA / "BOOKS.TXT")
    assert sorted(books) == ["1041", "1342", "158", "76"]
    assert books["1041"] == ls.BookInfo("1041", "Sonnets | Songs", "An Old Poet")
    assert books["1342"].author == "Jane Austen"


@pytest.mark.parametrize(
    ("fname", "reader", "line", "needle"),
    [
        ("SPEAKERS_bad_sex.TXT", ls.read_speakers, 3, "SEX"),
        ("SPEAKERS_short.TXT", ls.read_speakers, 4, "5 '|'-separated fields"),
        ("CHAPTERS_bad_minutes.TXT", ls.read_chapters, 3, "MINUTES"),
        ("CHAPTERS_short.TXT", ls.read_chapters, 2, "8 '|'-separated fields"),
    ],
)
def test_malformed_metadata_names_file_and_line(fname, reader, line, needle) -> None:
    with pytest.raises(DataFormatError) as ei:
        reader(DATA / fname)
    assert ei.value.line == line
    assert fname in str(ei.value) and f":{line}:" in str(ei.value)
    assert needle in str(ei.value)


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    p = tmp_path / "SPEAKERS.TXT"
    p.write_text("14 | F | a | 1.0 | A\n14 | M | b | 2.0 | B\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"SPEAKERS.TXT:2: .*unique"):
        ls.read_speakers(p)


def test_missing_file_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserLibriError, match="no such CHAPTERS.TXT"):
        ls.read_chapters(tmp_path / "CHAPTERS.TXT")


def test_latin1_metadata_is_read_with_warning(tmp_path: Path, caplog) -> None:
    p = tmp_path / "BOOKS.TXT"
    p.write_bytes(";ID |TITLE |AUTHOR\n7 | Caf\xe9 Tales | Someone\n".encode("latin-1"))
    books = ls.read_books(p)
    assert books["7"].title == "Café Tales"
    assert "not UTF-8" in caplog.text


def test_metadata_write_read_round_trip(tmp_path: Path) -> None:
    for name, read, write in [
        ("SPEAKERS.TXT", ls.read_speakers, ls.write_speakers),
        ("CHAPTERS.TXT", ls.read_chapters, ls.write_chapters),
        ("BOOKS.TXT", ls.read_books, ls.write_books),
    ]:
        orig = read(DATA / name)
        write(tmp_path / name, orig)
        back = read(tmp_path / name)
        assert back == orig, name
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert text.startswith(";")
        # Headers match the real files' column headers.
        hdr = [ln for ln in text.splitlines() if ln.startswith(";ID")][0]
        assert hdr.split("|")[0].strip() == ";ID"


def test_written_speakers_match_real_column_layout(tmp_path: Path) -> None:
    ls.write_speakers(tmp_path / "S.TXT", [ls.SpeakerInfo("14", "F", "train-clean-360", 25.03, "Ada")])
    last = (tmp_path / "S.TXT").read_text(encoding="utf-8").splitlines()[-1]
    assert last == "14   | F | train-clean-360  | 25.03 | Ada"


def test_writers_reject_bad_values(tmp_path: Path) -> None:
    with pytest.raises(UserLibriError, match="sex"):
        ls.write_speakers(tmp_path / "S.TXT", [ls.SpeakerInfo("1", "Q", "x", 1.0, "A")])
    with pytest.raises(UserLibriError, match="single line"):
        ls.write_books(tmp_path / "B.TXT", [ls.BookInfo("1", "a\nb", "A")])
    with pytest.raises(UserLibriError, match="utterance id"):
        ls.write_transcripts(tmp_path / "t.trans.txt", {"nope": "A B"})


def test_transcripts_round_trip_and_iter_split(tmp_path: Path) -> None:
    tr = ls.read_transcripts(DATA / "test-clean/121/123852/121-123852.trans.txt")
    assert tr["121-123852-0001"] == "SHE SAID IT'S NEARLY NINE O'CLOCK"
    out = ls.transcript_path(tmp_path, "test-clean", "121", "123852")
    ls.write_transcripts(out, tr)
    assert ls.read_transcripts(out) == tr
    utts = list(ls.iter_split(tmp_path, "test-clean"))
    assert [u.utt_id for u in utts] == ["121-123852-0000", "121-123852-0001"]
    assert utts[0].audio_path == ls.audio_path(tmp_path, "test-clean", "121-123852-0000")
    assert utts[0].audio_path.name == "121-123852-0000.flac"
    assert (utts[0].speaker_id, utts[0].chapter_id) == ("121", "123852")


def test_bad_transcript_line(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"bad.trans.txt:2: expected '<utt_id> <TRANSCRIPT>'"):
        ls.read_transcripts(DATA / "bad.trans.txt")


def test_iter_split_rejects_foreign_utterance_ids(tmp_path: Path) -> None:
    ls.write_transcripts(ls.transcript_path(tmp_path, "s", "1", "2"), {"1-3-0000": "HELLO"})
    with pytest.raises(DataFormatError, match="starting with 1-2-"):
        list(ls.iter_split(tmp_path, "s"))
    with pytest.raises(UserLibriError, match="no such split"):
        list(ls.iter_split(tmp_path, "nope"))


def test_book_text_paths(tmp_path: Path) -> None:
    p = ls.book_text_path(tmp_path, "1342")
    assert p == tmp_path / "books" / "utf-8" / "1342" / "1342.txt.utf-8"
    assert ls.find_book_text(tmp_path, "1342") is None
    ascii_p = tmp_path / "books" / "ascii" / "1342" / "1342.txt"
    ascii_p.parent.mkdir(parents=True)
    ascii_p.write_text("plain", encoding="ascii")
    assert ls.find_book_text(tmp_path, "1342") == ascii_p
    p.parent.mkdir(parents=True)
    p.write_text("\ufeffutf", encoding="utf-8")
    assert ls.find_book_text(tmp_path, "1342") == p
    assert ls.read_book_text(p) == "utf"
    p.write_bytes(b"caf\xe9")
    with pytest.raises(DataFormatError, match="UTF-8"):
        ls.read_book_text(p)


def test_manifest_round_trip_relative(tmp_path: Path) -> None:
    audio = tmp_path / "audio_data" / "x.flac"
    utts = [
        Utterance("1-2-0000", "speaker-1-book-9", "test-clean", "1", "9", "2", str(audio), 1.5, "HI THERE"),
        Utterance("1-2-0001", "speaker-1-book-9", "test-clean", "1", "9", "2", str(audio), 2.0, "ÉTÉ"),
    ]
    m = tmp_path / "manifests" / "test-clean.jsonl"
    assert write_manifest(m, utts, relative=True) == 2
    assert '"../audio_data/x.flac"' in m.read_text(encoding="utf-8")
    assert read_manifest(m) == utts
    with pytest.raises(UserLibriError, match="duplicate"):
        write_manifest(m, utts[:1] * 2)


def test_manifest_bad_lines(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"m.jsonl:1: .*missing"):
        read_manifest(m)
    m.write_text("\n[1]\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"m.jsonl:2: expected a JSON object"):
        read_manifest(m)
