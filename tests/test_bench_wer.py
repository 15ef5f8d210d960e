"""``userlibri bench wer``: per-user WER statistics against hand-computed values and bootstrap
properties, hypothesis-file errors, empty references, the conditions' LM layout, decoding replay
equal to the recognizers, dev users in the build, and a small end-to-end run on the committed tiny
random model (tests/data/am_tiny) over a tiny UserLibri layout."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bench_wer_helpers import ARPA, DATA, MODEL, bench_cli, make_layout
from click.testing import CliRunner

from userlibri.bench import wer as W
from userlibri.bench.wer_conditions import Condition, LMLayout, MissingLM, condition_matrix, spec_for
from userlibri.errors import ConfigError, DataFormatError, UserLibriError


def _refs(spec: dict[str, list[tuple[str, str]]]) -> list[W.Reference]:
    return [W.Reference(uid, user, text) for user, rows in spec.items() for uid, text in rows]


# ---------------------------------------------------------------- statistics by hand

REFS = _refs(
    {
        "u1": [("a1", "A B C"), ("a2", "D E")],
        "u2": [("b1", "A B")],
        "u3": [("c1", "X Y Z W")],
    }
)
HYPS = {"a1": "a x c", "a2": "D E F", "b1": "", "c1": "X Y Z W"}


def test_per_user_wer_by_hand() -> None:
    scores = {s.user: s for s in W.score_users(REFS, HYPS)}
    u1, u2, u3 = scores["u1"], scores["u2"], scores["u3"]
    # u1: one substitution (case is ignored) and one insertion over 5 words.
    assert (u1.substitutions, u1.deletions, u1.insertions, u1.ref_words) == (1, 0, 1, 5)
    assert u1.wer == pytest.approx(0.4)
    assert (u2.deletions, u2.wer) == (2, 1.0)
    assert u3.wer == 0.0 and u3.errors == 0
    s = W.summarize(list(scores.values()), resamples=2000, seed=1)
    assert s.avg_user_wer == pytest.approx((0.4 + 1.0 + 0.0) / 3)
    assert s.pooled_wer == pytest.approx(4 / 11)
    assert (s.users, s.scored_users, s.utterances, s.ref_words, s.errors) == (3, 3, 4, 11, 4)


def test_bootstrap_ci_contains_the_mean_and_is_seeded() -> None:
    rng = np.random.default_rng(5)
    scores = [W.UserScore(f"u{i}", 3, 100, int(rng.integers(0, 30)), 0, 0) for i in range(40)]
    a = W.summarize(scores, resamples=3000, seed=7)
    assert a.ci[0] < a.avg_user_wer < a.ci[1]
    assert W.summarize(scores, resamples=3000, seed=7) == a
    assert W.summarize(scores, resamples=3000, seed=8).ci != a.ci
    # The CI width is about 2 * 1.96 standard errors of the mean.
    wers = np.array([s.wer for s in scores])
    se = wers.std() / np.sqrt(len(wers))
    assert a.ci[1] - a.ci[0] == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_of_two_users_has_known_quantiles() -> None:
    # Means of 2 draws from {0, 1}: 0 (p 1/4), 0.5 (1/2), 1 (1/4): the 2.5% and 97.5% quantiles.
    scores = [W.UserScore("a", 1, 10, 0, 0, 0), W.UserScore("b", 1, 10, 10, 0, 0)]
    s = W.summarize(scores, resamples=4000, seed=0)
    assert s.avg_user_wer == 0.5 and s.ci == (0.0, 1.0)
    same = [W.UserScore(u, 1, 10, 3, 0, 0) for u in "abc"]
    assert W.summarize(same, resamples=100).ci == pytest.approx((0.3, 0.3))


def test_paired_test_of_identical_conditions_gives_zero() -> None:
    scores = W.score_users(REFS, HYPS)
    c = W.compare(scores, scores, ("x", "x"), resamples=1000, seed=3)
    assert c.delta == 0.0 and c.delta_ci == (0.0, 0.0) and c.relative == 0.0
    assert c.p_value == 1.0 and (c.improved, c.worse, c.unchanged) == (0, 0, 3)


def test_paired_test_by_hand() -> None:
    base = [W.UserScore(f"u{i}", 1, 10, 4, 0, 0) for i in range(6)]
    better = [W.UserScore(f"u{i}", 1, 10, 3, 0, 0) for i in range(6)]
    c = W.compare(base, better, resamples=999, seed=0)
    # Every user drops 10 points: every resample says so; p = 2 * 1 / (B + 1).
    assert c.delta == pytest.approx(-0.1) and c.delta_ci == pytest.approx((-0.1, -0.1))
    assert c.relative == pytest.approx(-0.25) and c.relative_ci == pytest.approx((-0.25, -0.25))
    assert c.p_value == pytest.approx(2 / 1000)
    assert (c.improved, c.worse, c.unchanged) == (6, 0, 0)
    mixed = [W.UserScore("u0", 1, 10, 6, 0, 0), *better[1:]]
    m = W.compare(base, mixed, resamples=999, seed=0)
    assert (m.improved, m.worse, m.unchanged) == (5, 1, 0)
    assert m.delta == pytest.approx((-5 * 0.1 + 0.2) / 6)
    assert m.delta_ci[0] <= m.delta <= m.delta_ci[1]
    deltas = W.user_deltas(base, mixed)
    assert deltas[0] == ("u0", 0.4, 0.6, pytest.approx(0.2))


def test_paired_test_needs_the_same_users() -> None:
    base = [W.UserScore("a", 1, 10, 1, 0, 0), W.UserScore("b", 1, 10, 1, 0, 0)]
    with pytest.raises(UserLibriError, match="only in the baseline.*b"):
        W.compare(base, base[:1])
    with pytest.raises(UserLibriError, match="different reference"):
        W.compare(base, [W.UserScore("a", 1, 11, 1, 0, 0), base[1]])


def test_shared_indices_make_summary_and_comparison_agree() -> None:
    rng = np.random.default_rng(0)
    a = [W.UserScore(f"u{i}", 1, 50, int(rng.integers(5, 20)), 0, 0) for i in range(12)]
    b = [W.UserScore(s.user, 1, 50, max(0, s.substitutions - int(rng.integers(0, 6))), 0, 0) for s in a]
    idx = W.bootstrap_indices(12, 500, seed=4)
    c = W.compare(a, b, resamples=500, seed=4, indices=idx)
    sa, sb = W.summarize(a, indices=idx), W.summarize(b, indices=idx)
    assert c.baseline_wer == pytest.approx(sa.avg_user_wer) and c.candidate_wer == pytest.approx(
        sb.avg_user_wer
    )
    assert c.delta_ci[1] < 0 and c.p_value < 0.01
    with pytest.raises(ConfigError, match="bootstrap indices"):
        W.summarize(a, indices=W.bootstrap_indices(5, 10))


# ---------------------------------------------------------------- empty references


def test_empty_references_are_counted_never_divided_by_zero() -> None:
    refs = _refs({"u1": [("a1", "A B"), ("a2", "")], "u2": [("b1", ""), ("b2", "  ")]})
    hyps = {"a1": "A B", "a2": "C D", "b1": "", "b2": "E"}
    scores = {s.user: s for s in W.score_users(refs, hyps)}
    assert (scores["u1"].insertions, scores["u1"].empty_refs, scores["u1"].wer) == (2, 1, 1.0)
    assert scores["u2"].wer is None and scores["u2"].empty_refs == 2 and scores["u2"].insertions == 1
    s = W.summarize(list(scores.values()), resamples=100)
    assert s.users_without_words == ("u2",) and s.scored_users == 1
    assert s.avg_user_wer == 1.0 and s.pooled_wer == pytest.approx(3 / 2) and s.empty_refs == 3
    none = W.summarize([scores["u2"]], resamples=100)
    assert none.avg_user_wer is None and none.ci is None and none.pooled_wer is None
    assert json.loads(json.dumps(none.to_dict()))["users_without_words"] == ["u2"]


# ---------------------------------------------------------------- hypothesis files


def test_hypothesis_files_in_both_formats(tmp_path: Path) -> None:
    j = tmp_path / "h.jsonl"
    j.write_text('{"id": "a1", "text": "A B", "rtf": 0.1}\n\n{"id": "a2", "text": null}\n')
    assert W.read_hypotheses(j) == {"a1": "A B", "a2": ""}
    t = tmp_path / "h.txt"
    t.write_text("a1 A  B\na2\n")
    assert W.read_hypotheses(t) == {"a1": "A  B", "a2": ""}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"id": "a1"}\n', '"id" and "text"'),
        ('{"id": "a1", "text": "A"}\nnot json\n', "bad.jsonl:2: expected one JSON"),
        ("a1 A\na1 B\n", "'a1' again"),
        ('{"id": "a1", "text": 3}\n', "string"),
    ],
)
def test_bad_hypothesis_files_name_the_file(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(DataFormatError, match=match) as e:
        W.read_hypotheses(p)
    assert "bad.jsonl" in str(e.value)


def test_hypotheses_that_do_not_match_the_manifest(tmp_path: Path) -> None:
    p = tmp_path / "hyp.txt"
    p.write_text("a1 A\nzz1 B\nzz2 C\nb1 X\nc1 X\n")
    with pytest.raises(W.HypothesisMismatchError) as e:
        W.score_file(REFS, p, "refs.jsonl")
    msg = str(e.value)
    assert str(p) in msg and "refs.jsonl" in msg
    assert "missing 1 id(s) of the references: a2" in msg and "2 id(s) not in the references: zz1, zz2" in msg
    assert e.value.missing == ["a2"] and e.value.extra == ["zz1", "zz2"]
    many = {f"x{i:03d}": "" for i in range(30)}
    with pytest.raises(W.HypothesisMismatchError, match=r"and 10 more"):
        W.check_hypotheses([], many, p, "r")


def test_score_named_files_and_cli(tmp_path: Path) -> None:
    from userlibri.cli.bench_wer import wer_score
    from userlibri.data.manifest import Utterance, write_manifest

    utts = [Utterance(r.id, r.user, "test-clean", "1", "2", "3", "x.flac", 1.0, r.text) for r in REFS]
    write_manifest(tmp_path / "m.jsonl", utts)
    (tmp_path / "base.txt").write_text("a1 A B C\na2 D\nb1 A\nc1 X Y Z\n")
    (tmp_path / "new.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in HYPS.items())
    )
    res = W.score_named_files(
        REFS, "m", [("base", tmp_path / "base.txt"), ("new", tmp_path / "new.jsonl")], 500
    )
    assert res["summaries"]["base"]["avg_user_wer"] == pytest.approx((1 / 5 + 1 / 2 + 1 / 4) / 3)
    assert res["comparisons"][0]["candidate"] == "new"
    args = ["--refs", str(tmp_path / "m.jsonl"), "--hyp", f"base={tmp_path / 'base.txt'}"]
    args += [
        "--hyp",
        f"new={tmp_path / 'new.jsonl'}",
        "--resamples",
        "500",
        "--json",
        str(tmp_path / "s.json"),
    ]
    out = CliRunner().invoke(wer_score, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "new vs base" in out.output and json.loads((tmp_path / "s.json").read_text())["summaries"]
    (tmp_path / "short.txt").write_text("a1 A\n")
    bad = CliRunner().invoke(
        wer_score, ["--refs", str(tmp_path / "m.jsonl"), "--hyp", f"x={tmp_path / 'short.txt'}"]
    )
    assert isinstance(bad.exception, W.HypothesisMismatchError) and "short.txt" in str(bad.exception)


# ---------------------------------------------------------------- dev users in the build

CH4 = [
    "THE VISITOR ARRIVED ON A CALM MORNING IN A HIRED BOAT ROWED BY TWO FISHERMEN FROM PORTHCURNO",
    "HE WORE A TALL HAT THAT THE WIND TRIED VERY HARD TO STEAL",
]


@pytest.mark.parametrize("dev", [None, ()])
def test_build_adds_dev_users_when_the_corpus_has_a_dev_split(tmp_path: Path, dev: tuple | None) -> None:
    from test_build import _chapter, make_corpus

    from userlibri.data import librispeech as ls
    from userlibri.data.dataset import Dataset
    from userlibri.data.userlibri import BuildConfig, build

    root = make_corpus(tmp_path)
    chapters = list(ls.read_chapters(root / ls.CHAPTERS_FILE).values())
    chapters.append(ls.ChapterInfo("5005", "14", 0.1, "dev", "77", "9001", "Section 4", "Lighthouse"))
    ls.write_chapters(root / ls.CHAPTERS_FILE, chapters)
    _chapter(root, "dev", "14", "5005", CH4)
    out = tmp_path / "out"
    report = build(BuildConfig(librispeech=root, out=out, num_workers=1, dev_splits=dev))
    ds = Dataset(out)
    lm = " ".join(ds.lm_text("9001"))
    if dev is None:
        assert ds.splits() == ["test-clean", "test-other", "dev"]
        assert [u.user_id for u in ds.users("dev")] == ["speaker-14-book-9001"]
        assert (out / "manifests" / "dev.jsonl").is_file()
        assert any(r["Split"] == "dev" for r in ds.audio_metadata())
        assert report["splits"]["dev"]["users"] == 1 and list(report["config"]["dev_splits"]) == ["dev"]
        assert "HIRED BOAT ROWED" not in lm  # what dev users read is not LM text either
    else:
        assert ds.splits() == ["test-clean", "test-other"]
        assert "HIRED BOAT ROWED" in lm
    assert report["splits"]["test-clean"]["users"] == 1


# ---------------------------------------------------------------- conditions and LM layout


def test_condition_matrix_and_names() -> None:
    conds = condition_matrix()
    assert len(conds) == 2 * (1 + 2 * 5)
    names = [c.name for c in conds]
    assert names[:3] == ["offline/none", "offline/ngram/background", "offline/ngram/personal"]
    assert "streaming/neural/dp-eps8" in names and "offline/ngram/dp-eps1" in names
    c = Condition("streaming", "dp-eps8", "neural", 8.0)
    assert c.slug == "streaming.neural.dp-eps8" and "epsilon 8" in c.label
    with pytest.raises(ConfigError, match="mode"):
        condition_matrix(modes=("batch",))
    with pytest.raises(ConfigError, match="epsilon"):
        condition_matrix(epsilons=(0.0,))


def test_layout_resolves_what_the_lm_commands_write(tmp_path: Path) -> None:
    lm, nlm = tmp_path / "lm", tmp_path / "nlm"
    for d in (lm / "background", lm / "5", nlm / "background", nlm / "5" / "inf", nlm / "5" / "eps8"):
        d.mkdir(parents=True)
    for f in (
        lm / "background" / "ngram.bin",
        lm / "5" / "ngram.arpa",
        lm / "5" / "mix.bin",
        lm / "5" / "mix.arpa",
    ):
        f.write_text("x")
    for d in (nlm / "background", nlm / "5" / "inf", nlm / "5" / "eps8"):
        (d / "lm.onnx").write_text("x")
    (nlm / "5" / "inf" / "lm.int8.onnx").write_text("x")
    lay = LMLayout(lm, nlm).validate()
    assert lay.resolve(Condition("offline", "background", "ngram"), "5") == (lm / "background" / "ngram.bin",)
    assert lay.resolve(Condition("offline", "personal", "ngram"), "5") == (lm / "5" / "ngram.arpa",)
    assert lay.resolve(Condition("offline", "interpolated", "ngram"), "5") == (lm / "5" / "mix.bin",)
    assert lay.resolve(Condition("offline", "personal", "neural"), "5") == (
        nlm / "5" / "inf" / "lm.int8.onnx",
    )
    pair = lay.resolve(Condition("offline", "interpolated", "neural"), "5")
    assert pair == (nlm / "5" / "inf" / "lm.int8.onnx", nlm / "background" / "lm.onnx")
    spec = spec_for(Condition("offline", "interpolated", "neural"), pair, 0.7)
    assert spec.weights == (0.7, pytest.approx(0.3)) and spec.shared == (False, True)
    assert lay.resolve(Condition("offline", "dp-eps8", "neural", 8.0), "5") == (
        nlm / "5" / "eps8" / "lm.onnx",
    )
    with pytest.raises(MissingLM, match="eps1"):
        lay.resolve(Condition("offline", "dp-eps1", "neural", 1.0), "5")
    with pytest.raises(MissingLM, match="no DP n-gram"):
        lay.resolve(Condition("offline", "dp-eps8", "ngram", 8.0), "5")
    with pytest.raises(MissingLM, match="book 6"):
        lay.resolve(Condition("offline", "personal", "ngram"), "6")
    with pytest.raises(MissingLM, match="--neural-dir"):
        LMLayout(lm).resolve(Condition("offline", "background", "neural"), "5")
    assert (
        LMLayout(lm, nlm, "float").resolve(Condition("offline", "personal", "neural"), "5")[0].name
        == "lm.onnx"
    )
    with pytest.raises(ConfigError, match="expected a directory"):
        LMLayout(tmp_path / "nope").validate()
    # The n-grams load with the bigram look-ahead unless asked otherwise.
    ngram = Condition("offline", "personal", "ngram")
    assert (
        lay.ngram_kind == "kenlm-word"
        and spec_for(ngram, (lm / "5" / "ngram.arpa",)).parts[0][0] == "kenlm-word"
    )
    uni = LMLayout(lm, ngram_lookahead="unigram").validate()
    spec = spec_for(ngram, (lm / "5" / "ngram.arpa",), None, uni.ngram_kind)
    assert spec.parts[0][0] == "kenlm-word-unigram"
    assert spec_for(Condition("offline", "personal", "neural"), pair[:1], None, uni.ngram_kind).parts[0][
        0
    ] == ("neural-onnx")
    with pytest.raises(ConfigError, match="look-ahead"):
        LMLayout(lm, ngram_lookahead="trigram").validate()


# ---------------------------------------------------------------- decoding replay = recognizers


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.RandomState(seed).randn(int(16000 * seconds)) * 0.1).astype(np.float32)


@pytest.mark.parametrize("decoder", ["ctc", "transducer"])
@pytest.mark.parametrize("mode", ["offline", "streaming"])
def test_replayed_search_equals_the_recognizer_with_the_lm(tmp_path: Path, mode: str, decoder: str) -> None:
    from userlibri.bench.wer_conditions import LMSpec
    from userlibri.bench.wer_decode import DecodeJob, DecodeSettings, Engine
    from userlibri.decode import DecoderConfig
    from userlibri.recognizer import OfflineRecognizer, RecognizerConfig
    from userlibri.stream import OnlineRecognizer

    engine = Engine(DecodeSettings(MODEL, decoder=decoder, beam=4, chunk_ms=37))
    config = RecognizerConfig(
        decoder=decoder, decoding=DecoderConfig(beam=4, lm_weight=0.7, length_bonus=0.5)
    )
    job = DecodeJob("c", mode, LMSpec((("kenlm-word", str(ARPA)),)), 0.7, 0.5, tmp_path / "o.jsonl")
    searcher, _ = engine.make_searcher(job)
    plain, _ = engine.make_searcher(DecodeJob("c", mode, None, 0.0, 0.0, tmp_path / "p.jsonl"))
    online = OnlineRecognizer(MODEL, config)
    offline = OfflineRecognizer(MODEL, lm=ARPA, config=config)
    differs = 0
    for seed, seconds in enumerate((1.3, 0.8, 2.1)):
        audio = _noise(seconds, seed)
        am = engine.am_output(mode, audio, 16000, "x")
        got, _ = engine.search(mode, am, searcher)
        if mode == "offline":
            ref = offline.recognize(audio, 16000)
        else:
            stream = online.create_stream(lm=ARPA)
            for start in range(0, audio.size, 592):
                stream.accept_waveform(audio[start : start + 592], 16000)
                online.decode_streams([stream])
            stream.input_finished()
            online.decode_streams([stream])
            ref = online.get_result(stream)
        assert got.tokens == ref.tokens and got.timestamps == ref.timestamps
        assert got.score == pytest.approx(ref.score, abs=1e-4)
        assert got.lm_score == pytest.approx(ref.lm_score, abs=1e-4)
        differs += engine.search(mode, am, plain)[0].tokens != got.tokens
    assert differs, "the LM changes some result, so the replay is not trivially LM-free"


# ---------------------------------------------------------------- end to end on the tiny model


def test_cli_end_to_end_tunes_on_dev_only_and_resumes(tmp_path: Path) -> None:
    root, lm = make_layout(tmp_path)
    results, output = bench_cli(tmp_path, root, lm)
    out = tmp_path / "bench"
    splits = results["splits"]
    assert list(splits) == ["test-clean", "test-other"] and list(results["tuning"]) == ["dev"]
    assert results["tune_splits"] == {"test-clean": "dev", "test-other": "dev"}
    names = [
        "offline/none",
        "offline/ngram/background",
        "offline/ngram/personal",
        "offline/ngram/interpolated",
    ]
    names += [n.replace("offline", "streaming") for n in names]
    assert [c["name"] for c in results["conditions"]] == names
    skipped = {s["condition"]: s["reason"] for s in results["skipped"]}
    assert set(skipped) == {f"{m}/ngram/dp-eps{e}" for m in ("offline", "streaming") for e in (1, 8)}
    assert "no DP n-gram" in skipped["offline/ngram/dp-eps1"]
    for name, choice in results["tuning"]["dev"]["chosen"].items():
        assert choice["lm_weight"] in ((0.0,) if name.endswith("/none") else (0.2, 0.8))
        assert choice["length_bonus"] in (0.0, 1.0)
    # Never tuned on test users: their cache holds exactly one file per condition (the tuned one).
    for split in ("test-clean", "test-other"):
        for user_dir in (out / "cache" / split).iterdir():
            assert len(list(user_dir.iterdir())) == len(names)
    assert len(list((out / "cache" / "dev" / "speaker-11-book-7").iterdir())) == 6 * 3 + 2 * 2
    for split, sd in splits.items():
        assert len(sd["users"]) == 2 and set(sd["summaries"]) == set(names)
        assert len(sd["comparisons"]) == len(names) * (len(names) - 1) // 2
        for s in sd["summaries"].values():
            lo, hi = s["ci"]
            assert lo <= s["avg_user_wer"] <= hi and s["utterances"] == 4 and s["resamples"] == 500
            # The merged hypotheses match the references (scored again from the file).
            refs = [W.Reference(u["id"], u["user"], u["text"]) for u in _dataset_refs(root, split)]
            again = W.summarize(W.score_file(refs, s["hyps"], "refs"), resamples=500)
            assert again.avg_user_wer == pytest.approx(s["avg_user_wer"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * len(names) and {r["condition"] for r in rows} == set(names)
    per_user = list(csv.DictReader((out / "per_user.csv").open()))
    assert len(per_user) == 2 * len(names) * 2
    md = (out / "results.md").read_text()
    assert "| test-clean (2 users) |" in md and "test-clean, test-other on the dev users" in md
    assert "Tuning for test-clean, test-other: dev users (1)" in md and "Skipped:" in md
    assert md.count("LM weight / bonus") == 1  # one tune split: one column
    assert md in output
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["scatter_offline.png", "scatter_streaming.png", "wer_vs_lm_weight.png"]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    # A rerun decodes nothing (every hypothesis is cached) and reports the same numbers.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.jsonl")}
    again_results, _ = bench_cli(tmp_path, root, lm)
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.jsonl")} == stamps
    assert again_results["splits"] == results["splits"]
    # A rebuilt dataset (a dev user with one utterance fewer) is decoded afresh, not refused.
    user_dir = root / "audio_data" / "dev" / "speaker-11-book-7"
    trans = user_dir / "11-100.trans.txt"
    trans.write_text(trans.read_text().splitlines(keepends=True)[0])
    (user_dir / "11-100-0001.flac").unlink()
    bench_cli(tmp_path, root, lm)
    fresh = {p for p in (out / "cache" / "dev").rglob("*.jsonl") if p not in stamps}
    assert fresh, "the dev users were decoded again"


def test_ngram_lookahead_option_decodes_apart(tmp_path: Path) -> None:
    root, lm = make_layout(tmp_path)
    args = ("--modes", "offline", "--lms", "personal", "--no-plots")
    bigram, _ = bench_cli(tmp_path, root, lm, *args)
    files = {p.name for p in (tmp_path / "bench" / "cache").rglob("*.jsonl")}
    unigram, _ = bench_cli(tmp_path, root, lm, *args, "--ngram-lookahead", "unigram")
    both = {p.name for p in (tmp_path / "bench" / "cache").rglob("*.jsonl")}
    assert (
        bigram["config"]["ngram_lookahead"] == "bigram" and unigram["config"]["ngram_lookahead"] == "unigram"
    )
    # The no-LM decodes are shared; every n-gram decode is its own (the LM kind is in the cache key).
    ngram = {n for n in files if n.startswith("offline.ngram.personal.")}
    assert ngram and files - ngram and all(n.startswith("offline.none.") for n in files - ngram)
    assert len(both - files) == len(ngram)
    assert all(n.startswith("offline.ngram.personal.") for n in both - files)


def _dataset_refs(root: Path, split: str) -> list[dict]:
    from userlibri.data.dataset import Dataset

    ds = Dataset(root)
    return [{"id": u.id, "user": u.user, "text": u.text} for us in ds.users(split) for u in ds.utterances(us)]


def test_an_lm_that_fails_to_load_skips_its_condition(tmp_path: Path) -> None:
    root, lm = make_layout(tmp_path)
    for book in ("5", "6", "7"):
        shutil.copy(DATA / "recognizer" / "lower.arpa", lm / book / "ngram.arpa")  # model cannot spell it
    results, _ = bench_cli(tmp_path, root, lm, "--modes", "offline", "--lms", "background,personal")
    skipped = {s["condition"]: s["reason"] for s in results["skipped"]}
    assert "vocabulary mismatch" in skipped["offline/ngram/personal"]
    assert set(results["splits"]["test-clean"]["summaries"]) == {"offline/none", "offline/ngram/background"}


def test_worker_processes_give_the_same_hypotheses(tmp_path: Path) -> None:
    from userlibri.bench.wer_conditions import LMLayout, condition_matrix
    from userlibri.bench.wer_decode import DecodeSettings
    from userlibri.bench.wer_run import BenchConfig, run_bench

    root, lm = make_layout(tmp_path)
    conds = tuple(condition_matrix(("streaming",), ("ngram",), ("personal",)))
    texts = []
    for jobs in (1, 2):
        cfg = BenchConfig(
            root, tmp_path / f"j{jobs}", DecodeSettings(MODEL, beam=4), conds, LMLayout(lm),
            lm_weights=(0.5,), length_bonuses=(0.0,), resamples=100, jobs=jobs, progress=False, plots=False,
        )  # fmt: skip
        res = run_bench(cfg)
        texts.append(
            [Path(s["hyps"]).read_text() for sd in res["splits"].values() for s in sd["summaries"].values()]
        )
    assert texts[0] == texts[1]


@pytest.mark.slow
def test_neural_conditions_end_to_end(tmp_path: Path) -> None:
    """Neural LMs (a tiny random LSTM for the tiny model's tokenizer, exported to ONNX) in the
    layout neural.sh writes: every neural condition runs, the interpolated one with an EM weight."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from userlibri.lm import neural as N
    from userlibri.lm.neural_export import export_lm
    from userlibri.privacy import accounting
    from userlibri.text.tokenizer import Tokenizer

    root, lm = make_layout(tmp_path)
    for book in ("5", "6", "7"):
        (lm / book / "heldout.txt").write_text("BAD EGG\nCAFE FACE BAD\nDEAF FADE\n")
    tok = Tokenizer(MODEL / "tokenizer.model")
    nlm = tmp_path / "nlm"
    for i, rel in enumerate(["background", *(f"{b}/{d}" for b in "567" for d in ("inf", "eps1", "eps8"))]):
        torch.manual_seed(i)
        model = N.LstmLM(N.default_config(tok, embed_dim=8, hidden_dim=16, num_layers=1, dropout=0.0)).eval()
        export_lm(model, nlm / rel, accounting.no_privacy_report(10, steps=1), int8=False)
    results, output = bench_cli(
        tmp_path, root, lm, "--neural-dir", str(nlm), "--neural-precision", "float", "--kinds",
        "ngram,neural", "--modes", "offline", "--lms", "background,personal,interpolated,dp",
        "--epsilons", "1,8", "--tune-rounds", "ngram=0,neural=1",
    )  # fmt: skip
    names = set(results["splits"]["test-clean"]["summaries"])
    neural = {f"offline/neural/{x}" for x in ("background", "personal", "interpolated", "dp-eps1", "dp-eps8")}
    ngram = {f"offline/ngram/{x}" for x in ("background", "personal", "interpolated")}
    assert names == {"offline/none"} | neural | ngram
    # --tune-rounds per kind: the n-grams decode the whole 2 x 2 grid on dev, the neural LMs one
    # round of the coordinate search (2 weights at bonus 0, then the other bonus at the best).
    tun = results["tuning"]["dev"]
    assert all(len(tun["grid"][n]) == 4 for n in ngram)
    assert all(len(tun["grid"][n]) == 3 for n in neural)
    assert tun["method"] == (
        "n-gram LMs: full grid of weight x bonus; "
        "neural LMs: coordinate search, at most 1 round(s) of weight then bonus"
    )
    assert results["config"]["tune_rounds"] == "ngram=0,neural=1"
    assert set(results["neural_mix"]) == {"5", "6", "7"}
    assert all(0.0 <= m["weight"] <= 1.0 for m in results["neural_mix"].values())
    assert (tmp_path / "bench" / "wer_vs_epsilon.png").is_file()
    assert any(t["condition"] == "offline/neural/dp-eps8" for t in results["targets"])


def test_bench_wer_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import userlibri.bench.wer, userlibri.bench.wer_run, userlibri.bench.wer_decode\n"
        "import userlibri.bench.wer_report, userlibri.bench.wer_plots, userlibri.cli.bench_wer\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_precision_defaults_to_the_files_the_model_has(tmp_path: Path) -> None:
    from userlibri.cli.bench_wer import wer

    int8 = tmp_path / "int8_model"
    int8.mkdir()
    for f in MODEL.iterdir():  # an int8-only directory, as `asr ship` writes (float weights renamed)
        shutil.copy(f, int8 / (f.name.replace(".onnx", ".int8.onnx") if f.suffix == ".onnx" else f.name))
    root, lm = make_layout(tmp_path)
    args = ["--dataset", str(root), "--model", str(int8), "--out", str(tmp_path / "b"), "--lm-dir", str(lm)]
    args += ["--modes", "offline", "--kinds", "ngram", "--lms", "background", "--lm-weights", "0.5"]
    args += ["--length-bonuses", "0", "--resamples", "100", "--beam", "2", "--no-plots", "--quiet"]
    res = CliRunner().invoke(wer, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "results.json").read_text())["config"]["precision"] == "int8"


def test_model_fingerprint_follows_the_files_the_recognizer_reads(tmp_path: Path) -> None:
    import os

    from userlibri.bench.wer_decode import DecodeSettings

    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    key = DecodeSettings(model).model_fingerprint()
    # The same contents copied elsewhere (a fresh clone), newer mtimes, a new card or eval.json:
    # the cached decodes stay valid.
    assert DecodeSettings(MODEL).model_fingerprint() == key
    for p in model.iterdir():
        os.utime(p, ns=(1, 1))
    (model / "MODEL_CARD.md").write_text("# edited card\n")
    (model / "eval.json").write_text("{}\n")
    assert DecodeSettings(model).model_fingerprint() == key
    # Another model file's contents: a new key.
    tokens = model / "tokens.txt"
    tokens.write_text(tokens.read_text() + "\n")
    assert DecodeSettings(model).model_fingerprint() != key
