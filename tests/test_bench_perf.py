"""bench perf on the committed tiny model (tests/data/am_tiny): one fresh process per configuration,
the JSON fields and their consistency, the markdown tables, targets, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from userlibri.bench.perf import (
    TARGET_RUN,
    PerfConfig,
    audio_from_manifest,
    check_targets,
    format_markdown,
    resolve_precisions,
    run_perf,
    user_with_lm,
)
from userlibri.bench.perf_worker import RunSpec, _percentiles
from userlibri.cli.bench_perf import perf
from userlibri.data.manifest import Utterance, write_manifest
from userlibri.errors import ConfigError, DataFormatError, UserLibriError

DATA = Path(__file__).parent / "data"
MODEL = DATA / "am_tiny"
ARPA = DATA / "recognizer" / "words.arpa"


def _wav(path: Path, seconds: float, seed: int) -> Path:
    noise = np.random.RandomState(seed).randn(int(16000 * seconds)).astype(np.float32) * 0.1
    sf.write(path, noise, 16000)
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("perf_audio")
    return [_wav(base / f"u{i}.wav", 2.0 + i, i) for i in range(2)]


def _manifest(path: Path, audio: list[Path], book: str = "b1") -> Path:
    utts = [
        Utterance(p.stem, f"user-{i % 2}", "test-clean", "s", book, "c", str(p), 2.0, "ABBA CAB")
        for i, p in enumerate(audio)
    ]
    write_manifest(path, utts)
    return path


def test_streaming_and_offline_runs_report_consistent_numbers(audio: list[Path]) -> None:
    config = PerfConfig(
        precisions=("float",),
        threads=(1,),
        decoders=("transducer",),
        modes=("streaming", "offline"),
        lm=ARPA,
        no_lm=False,
        beam=4,
        passes=2,
    )
    res = run_perf(MODEL, audio, config, progress=False)
    assert [(r["mode"], r["lm"]) for r in res["runs"]] == [("streaming", True), ("offline", True)]
    for r in res["runs"]:
        assert r["utterances"] == 2 and r["audio_seconds"] == pytest.approx(5.0, abs=0.01)
        assert r["rtf"] > 0 and r["rtf_cpu"] > 0
        assert sum(r["shares"].values()) == pytest.approx(1.0, abs=1e-3)
        assert all(r["shares"][k] > 0 for k in ("features", "encoder", "search"))
        assert 0 < r["rss_start_mb"] <= r["peak_rss_loaded_mb"] <= r["peak_rss_mb"]
        assert 0 < r["rss_loaded_mb"] <= r["peak_rss_mb"]
        assert r["model_load_seconds"] > 0 and r["lm_load_seconds"] > 0
        assert r["torch_loaded"] is False
        # Timings are the fastest pass's; every pass is listed.
        assert r["passes"] == 2 and len(r["pass_seconds"]) == 2
        assert r["decode_seconds"] == pytest.approx(min(r["pass_seconds"]), abs=1e-3)
    stream = res["runs"][0]
    assert stream["model_chunk_ms"] == stream["chunk_ms"] == 160.0  # the tiny model's chunk
    lat = stream["chunk_latency_ms"]
    assert lat["n"] >= 25 and 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    first = stream["first_partial"]
    assert first["decodes"] == 4  # 2 utterances x 2 passes: the random model emits tokens on this noise
    assert 0 < first["step_ms"]["p50"] <= first["compute_ms"]["p50"] + 1e-6
    assert 0 < first["audio_s"]["max"] <= 3.0 and first["wait_s"]["max"] <= 0.16
    assert "chunk_latency_ms" not in res["runs"][1]
    assert res["model_sizes"]["float"]["streaming_mb"] > 0 and "int8" not in res["model_sizes"]
    assert res["lm"]["used"] == "words.arpa" and res["lm"]["kind"] == "kenlm-word"
    assert res["skipped_precisions"] == {}
    # No int8 run here: every target is reported as not measured, never as a pass.
    assert [t["measured"] for t in res["targets"]] == [False] * len(res["targets"])
    md = format_markdown(res)
    assert "| float | 1 | streaming | transducer | yes |" in md and "not run" in md


def test_cli_writes_json_and_markdown(tmp_path: Path, audio: list[Path]) -> None:
    manifest = _manifest(tmp_path / "m.jsonl", audio)
    out, md = tmp_path / "res" / "perf.json", tmp_path / "perf.md"
    args = ["--model", str(MODEL), "--manifest", str(manifest), "--n", "1", "--threads", "1"]
    args += ["--decoders", "ctc", "--modes", "offline", "--out", str(out), "--markdown", str(md), "--quiet"]
    result = CliRunner().invoke(perf, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [(r["precision"], r["decoder"], r["mode"], r["lm"]) for r in data["runs"]] == [
        ("float", "ctc", "offline", False)
    ]
    assert data["audio_files"] == 1 and data["manifest"] == str(manifest)
    # Precisions the directory lacks are skipped by default, with the files they miss.
    assert "encoder.int8.onnx" in data["skipped_precisions"]["int8"]
    assert "| float | 1 | offline | ctc | no |" in md.read_text() and "wrote" in result.output
    assert data["runs"][0]["passes"] == 3  # the default
    bad = CliRunner().invoke(perf, [*args[:-1], "--passes", "0"])
    assert bad.exit_code == 2 and "--passes" in bad.output


def test_targets_pass_and_miss_on_the_target_configuration() -> None:
    run = dict(TARGET_RUN, rtf=0.04, shares={"search": 0.45}, peak_rss_mb=150.0, model_chunk_ms=320.0)
    run["first_partial"] = {"step_ms": {"p95": 60.0}, "wait_s": {"p95": 0.0}}
    other = dict(run, threads=2, rtf=0.01)
    targets = {t["name"]: t for t in check_targets({"runs": [other, run]})}
    assert targets["rtf"]["pass"] and targets["rtf"]["value"] == 0.04
    assert not targets["search_share"]["pass"]
    assert targets["peak_rss"]["pass"]
    assert targets["first_partial_wait"]["threshold"] == pytest.approx(0.32)
    assert targets["first_partial_wait"]["pass"] and not targets["first_partial_step"]["pass"]


def test_percentiles_are_ordered_and_empty_is_none() -> None:
    p = _percentiles([0.003, 0.001, 0.010, 0.002, 0.004])
    assert p["n"] == 5 and p["p50"] == pytest.approx(3.0) and p["p50"] <= p["p95"] <= p["max"] == 10.0
    assert _percentiles([]) == {"p50": None, "p95": None, "max": None, "n": 0}


def test_missing_model_file_is_named(tmp_path: Path, audio: list[Path]) -> None:
    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    (model / "joiner.onnx").unlink()
    with pytest.raises(DataFormatError, match=r"joiner\.onnx"):
        run_perf(model, audio, PerfConfig(precisions=("float",)), progress=False)
    with pytest.raises(DataFormatError, match=r"at least one precision.*joiner\.onnx"):
        run_perf(model, audio, PerfConfig(), progress=False)
    with pytest.raises(DataFormatError, match=r"int8: missing \['decoder\.int8\.onnx'"):
        resolve_precisions(MODEL, PerfConfig(precisions=("float", "int8")))
    with pytest.raises(DataFormatError, match="no such directory"):
        resolve_precisions(tmp_path / "nope", PerfConfig())


def test_empty_manifest_and_missing_audio_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty.jsonl.*no utterances"):
        audio_from_manifest(empty)
    with pytest.raises(DataFormatError, match="no utterances"):
        user_with_lm(empty, tmp_path)
    result = CliRunner().invoke(perf, ["--model", str(MODEL), "--manifest", str(empty), "--quiet"])
    assert result.exit_code != 0 and "no utterances" in str(result.exception)
    with pytest.raises(UserLibriError, match="gone.wav"):
        run_perf(MODEL, [tmp_path / "gone.wav"], PerfConfig(precisions=("float",)), progress=False)
    with pytest.raises(UserLibriError, match="expected at least one audio file"):
        run_perf(MODEL, [], PerfConfig(precisions=("float",)), progress=False)


def test_user_with_lm_picks_the_first_user_whose_book_has_an_lm(tmp_path: Path, audio: list[Path]) -> None:
    manifest = _manifest(tmp_path / "m.jsonl", audio, book="42")
    (tmp_path / "lm" / "42").mkdir(parents=True)
    paths, lm_dir, user = user_with_lm(manifest, tmp_path / "lm", n=5)
    assert user == "user-0" and lm_dir == tmp_path / "lm" / "42" and paths == [audio[0]]
    with pytest.raises(DataFormatError, match=r"books \['42'\]"):
        user_with_lm(manifest, tmp_path / "other")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"threads": (0,)}, "threads"),
        ({"decoders": ("rnn",)}, "decoders"),
        ({"modes": ()}, "modes"),
        ({"precisions": ("fp16",)}, "precisions"),
        ({"chunk_ms": 0.0}, "chunk_ms"),
        ({"passes": 0}, "passes"),
    ],
)
def test_bad_config_values_are_named(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PerfConfig(**kw).validate()


def test_worker_failure_is_reported_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(UserLibriError, match=r"float/1t/offline/ctc/no-lm failed: AudioError: .*bad\.wav"):
        run_perf(
            MODEL,
            [bad],
            PerfConfig(precisions=("float",), threads=(1,), decoders=("ctc",), modes=("offline",)),
            progress=False,
        )


def test_run_spec_round_trips_and_rejects_unknown_keys() -> None:
    spec = RunSpec(str(MODEL), "float", 1, "ctc", "streaming", None, ("a.wav",), 4, 0.5)
    assert RunSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError, match="unknown keys"):
        RunSpec.from_json(json.dumps({**json.loads(spec.to_json()), "extra": 1}))
    with pytest.raises(ConfigError, match="passes"):
        RunSpec.from_json(json.dumps({**json.loads(spec.to_json()), "passes": 0}))
