"""``userlibri decode`` on the committed tiny model: audio files and a manifest, offline and
streaming, jsonl fields, WER summary, usage errors, bad audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from userlibri.cli.decode import command
from userlibri.data.manifest import Utterance, write_manifest
from userlibri.decode import DecoderConfig
from userlibri.errors import AudioError
from userlibri.recognizer import OfflineRecognizer, RecognizerConfig

DATA = Path(__file__).parent / "data"
MODEL = DATA / "am_tiny"
ARPA = DATA / "recognizer" / "words.arpa"


def _wavs(tmp_path: Path, n: int = 3) -> list[Path]:
    paths = []
    for i in range(n):
        audio = (np.random.RandomState(i).randn(int(16000 * (0.5 + 0.4 * i))) * 0.1).astype(np.float32)
        p = tmp_path / f"utt{i}.flac"
        sf.write(p, audio, 16000)
        paths.append(p)
    return paths


def _run(args: list[str]) -> list[dict]:
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    out = Path(args[args.index("--out") + 1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["utterances"] == len(rows)
    return rows


def test_decode_files_offline_matches_the_library(tmp_path: Path) -> None:
    wavs = _wavs(tmp_path)
    rows = _run(
        ["--model", str(MODEL), "--beam", "4", "--quiet", "--out", str(tmp_path / "h.jsonl"), *map(str, wavs)]
    )
    assert [r["id"] for r in rows] == ["utt0", "utt1", "utt2"]
    rec = OfflineRecognizer(MODEL, config=RecognizerConfig(decoding=DecoderConfig(beam=4)))
    for row, wav in zip(rows, wavs, strict=True):
        assert row["text"] == rec.recognize_file(wav).text and row["ref"] is None
        assert set(row) >= {"tokens", "timestamps", "scores", "audio_seconds", "decode_seconds", "rtf"}
        assert row["rtf"] == pytest.approx(row["decode_seconds"] / row["audio_seconds"], rel=1e-2, abs=1e-5)


def test_decode_manifest_streaming_with_lm_gives_wer(tmp_path: Path) -> None:
    wavs = _wavs(tmp_path, 2)
    utts = [Utterance(w.stem, "u1", "test-clean", "1", "2", "3", str(w), 1.0, "BAD EGG") for w in wavs]
    write_manifest(tmp_path / "m.jsonl", utts)
    out = tmp_path / "s.jsonl"
    args = ["--model", str(MODEL), "--lm", str(ARPA), "--streaming", "--chunk-ms", "37", "--quiet"]
    rows = _run([*args, "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out)])
    assert all(r["ref"] == "BAD EGG" and r["scores"]["lm"] <= 0 for r in rows)
    assert all("first_partial_seconds" in r for r in rows)
    result = CliRunner().invoke(command, [*args, "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out)])
    assert '"wer"' in result.output and '"lm_load_seconds"' in result.output


def test_usage_errors_and_bad_audio(tmp_path: Path) -> None:
    wav = _wavs(tmp_path, 1)[0]
    out = tmp_path / "h.jsonl"
    neither = CliRunner().invoke(command, ["--model", str(MODEL), "--out", str(out)])
    assert neither.exit_code == 2 and "exactly one" in neither.output
    (tmp_path / "m.jsonl").write_text("")
    both = CliRunner().invoke(
        command, ["--model", str(MODEL), "--out", str(out), "--manifest", str(tmp_path / "m.jsonl"), str(wav)]
    )
    assert both.exit_code == 2
    (tmp_path / "bad.flac").write_bytes(b"fLaC" + b"\0" * 10)
    bad = CliRunner().invoke(
        command, ["--model", str(MODEL), "--quiet", "--out", str(out), str(wav), str(tmp_path / "bad.flac")]
    )
    assert isinstance(bad.exception, AudioError) and "bad.flac" in str(bad.exception)
    assert not out.exists()  # nothing half-written
