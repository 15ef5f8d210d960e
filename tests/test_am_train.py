"""Acoustic-model training: config loading, the 4-utterance overfit test, exact resume,
checkpoint averaging, batching and the CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from am_export_helpers import TEXTS, one_thread, tiny_am_config  # noqa: F401 (fixture)
from click.testing import CliRunner

from userlibri.asr.config import AMConfig, ExperimentConfig, TrainConfig, config_from_dict, load_config
from userlibri.asr.data import FeatureSet, Item, load_utterances, make_batches, spec_augment
from userlibri.asr.model import AcousticModel, count_parameters, ctc_greedy
from userlibri.asr.ship import logged_seconds, read_log
from userlibri.asr.train import (
    AVG_FILE,
    LOG_FILE,
    TrainResult,
    augment_strength,
    average_checkpoints,
    learning_rate,
    load_model,
    train,
)
from userlibri.data.audio import read_audio
from userlibri.data.librispeech import write_transcripts
from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.features import FeatureStats, compute_fbank
from userlibri.text.tokenizer import TokenizerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _tiny_am(**kw) -> AMConfig:
    return tiny_am_config(
        **{
            "d_model": 64,
            "ff_dim": 128,
            "conv_kernel": 7,
            "subsampling_channels": 16,
            "decoder_dim": 32,
            "joiner_dim": 32,
            **kw,
        }
    )


def _char_data(corpus: Path) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[str]]:
    utts = load_utterances(corpus, "train")
    feats = [compute_fbank(*read_audio(u.audio)) for u in utts]
    stats = FeatureStats.from_features(feats)
    x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(stats.apply(f)) for f in feats], batch_first=True)
    lens = torch.tensor([len(f) for f in feats])
    vocab = ["<blk>"] + sorted(set("".join(TEXTS)))
    return x, lens, [[vocab.index(c) for c in u.text] for u in utts], vocab


def _overfit(corpus: Path, steps: int) -> tuple[list[float], list[str], list[str]]:
    x, lens, targets, vocab = _char_data(corpus)
    torch.manual_seed(0)
    model = AcousticModel(_tiny_am(vocab_size=len(vocab)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 3e-3 * min(1.0, (step + 1) / 20)
        out = model.losses(x, lens, targets)
        opt.zero_grad()
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(float(out["total"].detach()))
    model.eval()
    enc, enc_lens = model.encoder(x, lens)
    hyps = ["".join(vocab[t] for t in h) for h in ctc_greedy(model.ctc_head(enc), enc_lens)]
    return losses, hyps, [u.text for u in load_utterances(corpus, "train")]


def test_overfit_fast_loss_halves(corpus: Path) -> None:
    losses, _, _ = _overfit(corpus, 20)
    assert losses[-1] < 0.5 * losses[0]


def test_overfit_four_utterances(corpus: Path) -> None:
    """The NOTES.md sanity check: a tiny model must learn 4 utterances exactly (CTC greedy)."""
    losses, hyps, refs = _overfit(corpus, 150)
    assert hyps == refs
    assert losses[-1] < 0.1 * losses[0]


def _exp_config(**train_kw) -> ExperimentConfig:
    tc = TrainConfig(
        epochs=3,
        max_batch_frames=400,
        warmup_steps=2,
        augment_start=1,
        augment_ramp=2,
        checkpoint_minutes=60,
        keep_checkpoints=3,
        average_last=2,
        dev_max_utts=2,
        tokenizer_book_sentences=0,
        log_every=1,
        **train_kw,
    )
    model = _tiny_am(d_model=32, ff_dim=64, decoder_dim=16, joiner_dim=16, max_chunk=4, max_left_chunks=2)
    return ExperimentConfig(
        model=model, train=tc, tokenizer=TokenizerConfig(vocab_size=24, model_type="bpe")
    ).validate()


def test_resume_is_exact(corpus: Path, tmp_path: Path) -> None:
    cfg = _exp_config()
    feats = tmp_path / "feats"
    full = train(cfg, corpus, tmp_path / "full", max_steps=5, features_dir=feats, progress=False)
    assert full.step == 5 and not full.finished and full.stop_reason == "max_steps"
    part = train(cfg, corpus, tmp_path / "part", max_steps=3, features_dir=feats, progress=False)
    assert part.step == 3
    with pytest.raises(UserLibriError, match="--resume"):
        train(cfg, corpus, tmp_path / "part", max_steps=5, features_dir=feats, progress=False)
    # As if the run had been killed after logging step 4 but before its next checkpoint.
    with open(tmp_path / "part" / LOG_FILE, "a") as f:
        f.write(json.dumps({"event": "train", "step": 4, "total": 1.0}) + "\n")
    resumed = train(
        cfg, corpus, tmp_path / "part", resume=True, max_steps=5, features_dir=feats, progress=False
    )
    assert resumed.step == 5
    a = torch.load(sorted((tmp_path / "full" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    b = torch.load(sorted((tmp_path / "part" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # The run continues to the end: dev WER logged per epoch, averaged model written.
    done = train(cfg, corpus, tmp_path / "part", resume=True, features_dir=feats, progress=False)
    assert done.finished and done.epoch == 3
    records = read_log(tmp_path / "part")
    dev = [r for r in records if r["event"] == "dev"]
    assert [r["epoch"] for r in dev] == [1, 2, 3]
    steps = [r["step"] for r in records if r["event"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    # Wall time adds up across the three processes through the checkpoints (train_seconds), so a
    # process killed before its stop record still counts up to its last checkpoint.
    stops = [r for r in records if r["event"] == "stop"]
    per_process = sum(r["seconds"] for r in stops)
    assert len(stops) == 3 and per_process - 2.0 <= stops[-1]["total_seconds"] <= per_process + 0.1
    assert logged_seconds(records) == stops[-1]["total_seconds"]
    assert {"wer_full_ctc", "wer_full_transducer", "wer_stream_ctc", "wer_stream_transducer"} <= set(dev[0])
    assert any(r["event"] == "train" and r["total"] > 0 for r in records)
    model, meta = load_model(tmp_path / "part" / AVG_FILE)
    assert meta["am_config"].vocab_size == 24 and meta["feature_stats"] is not None
    assert count_parameters(model) > 0
    assert len(list((tmp_path / "part" / "checkpoints").glob("*.pt"))) <= 3
    cached = FeatureSet(feats / "train")
    assert len(cached) == 4 and cached[0].dtype == np.float32 and cached[0].shape[1] == 80

    # A finished schedule is extended with more epochs and a longer schedule.
    def resume(config: ExperimentConfig, **kw) -> TrainResult:
        return train(config, corpus, tmp_path / "part", resume=True, features_dir=feats, progress=False, **kw)

    with pytest.raises(UserLibriError, match="schedule_steps"):
        resume(cfg, schedule_steps=2)
    longer = replace(cfg, train=replace(cfg.train, epochs=4))
    more = resume(longer, schedule_steps=done.step + 10)
    assert more.finished and more.epoch == 4 and more.step > done.step
    last = torch.load(sorted((tmp_path / "part" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    assert last["total_steps"] == done.step + 10
    # A rerun of a run that reached --max-steps stops at once, even with its (now past) schedule.
    again = resume(longer, schedule_steps=more.step, max_steps=more.step)
    assert again.step == more.step


def test_sigterm_stops_cleanly(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM mid-run: the step finishes, a checkpoint and model-avg.pt are written, the handler
    is restored, and a resume goes on from there."""
    import userlibri.asr.train as train_mod

    cfg = _exp_config()
    calls = []
    real = train_mod.augment_strength

    def strength_then_signal(step: int, tc: TrainConfig) -> float:
        calls.append(step)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(step, tc)

    monkeypatch.setattr(train_mod, "augment_strength", strength_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    res = train(cfg, corpus, tmp_path / "run", max_steps=50, features_dir=tmp_path / "f", progress=False)
    assert res.stop_reason == "signal SIGTERM" and res.step == 2 and not res.finished
    assert signal.getsignal(signal.SIGTERM) is before
    assert (tmp_path / "run" / AVG_FILE).is_file()
    assert sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1].name == "ckpt-00000002.pt"
    more = train(
        cfg, corpus, tmp_path / "run", resume=True, max_steps=3, features_dir=tmp_path / "f", progress=False
    )
    assert more.step == 3 and more.stop_reason == "max_steps"


def test_one_trainer_per_directory(corpus: Path, tmp_path: Path) -> None:
    from userlibri.fsio import exclusive_dir

    with exclusive_dir(tmp_path / "run", "test"), pytest.raises(UserLibriError, match="pid"):
        train(_exp_config(), corpus, tmp_path / "run", max_steps=1, progress=False)


def test_average_checkpoints(tmp_path: Path) -> None:
    paths = []
    for i, scale in enumerate((1.0, 2.0, 6.0)):
        sd = {
            "w": torch.full((2, 3), scale),
            "n": torch.tensor(i),
            "h": torch.tensor([scale], dtype=torch.float16),
        }
        torch.save({"model": sd}, tmp_path / f"c{i}.pt")
        paths.append(tmp_path / f"c{i}.pt")
    avg = average_checkpoints(paths)
    assert torch.equal(avg["w"], torch.full((2, 3), 3.0))
    assert avg["n"].item() == 2
    assert avg["h"].dtype == torch.float16 and avg["h"].item() == 3.0
    torch.save({"model": {"w": torch.zeros(2, 3)}}, tmp_path / "bad.pt")
    with pytest.raises(DataFormatError):
        average_checkpoints([paths[0], tmp_path / "bad.pt"])
    with pytest.raises(UserLibriError):
        average_checkpoints([])


def test_schedules() -> None:
    tc = TrainConfig(lr=1e-3, warmup_steps=10, final_lr_ratio=0.1, augment_start=5, augment_ramp=10)
    assert learning_rate(0, tc, 110) == pytest.approx(1e-4)
    assert learning_rate(9, tc, 110) == pytest.approx(1e-3)
    assert learning_rate(60, tc, 110) == pytest.approx(0.55e-3)
    assert learning_rate(110, tc, 110) == pytest.approx(1e-4)
    assert learning_rate(500, tc, 110) == pytest.approx(1e-4)
    assert [augment_strength(s, tc) for s in (0, 4, 5, 10, 15, 100)] == [0, 0, 0, 0.5, 1, 1]


def test_make_batches() -> None:
    items = [Item(0, i, n, (1,)) for i, n in enumerate([100, 300, 200, 50, 400, 120, 90, 310])]
    a = make_batches(items, 600, 2, seed=1, epoch=1, sort_first_epoch=True)
    assert a == make_batches(items, 600, 2, seed=1, epoch=1, sort_first_epoch=True)
    assert sorted(i for b in a for i in b) == list(range(8))
    assert all(max(items[i].frames for i in b) * len(b) <= 600 for b in a)
    first = make_batches(items, 600, 2, seed=1, epoch=0, sort_first_epoch=True)
    longest = [max(items[i].frames for i in b) for b in first]
    assert longest == sorted(longest)
    others = {str(make_batches(items, 600, 2, seed=1, epoch=e, sort_first_epoch=True)) for e in range(1, 8)}
    assert len(others) > 1


def test_spec_augment() -> None:
    x = torch.ones(2, 100, 80)
    lens = torch.tensor([100, 60])
    assert spec_augment(x, lens, 0.0, torch.Generator().manual_seed(0), 2, 27, 4, 0.05) is x
    y = spec_augment(x, lens, 1.0, torch.Generator().manual_seed(0), 2, 27, 4, 0.05)
    assert y.shape == x.shape and (y == 0).any() and (y == 1).any()
    assert torch.equal(y, spec_augment(x, lens, 1.0, torch.Generator().manual_seed(0), 2, 27, 4, 0.05))


def test_config_files_and_sizes() -> None:
    for path, limit in (
        ("recipes/mini/conf/am.yaml", 8e6),
        ("recipes/userlibri/conf/am-librispeech.yaml", 15e6),
    ):
        cfg = load_config(ROOT / path)
        model = AcousticModel(replace(cfg.model, vocab_size=cfg.tokenizer.vocab_size))
        assert count_parameters(model) <= limit, path
        assert cfg.model.num_layers >= 8
        assert cfg.model.decode_chunk * 4 * cfg.features.frame_shift_ms <= 320
    # The phases of train_am.sh resume one run: they may change train fields only.
    phases = [
        load_config(ROOT / f"recipes/mini/conf/{n}.yaml") for n in ("am", "am-sp", "am-noise", "am-kokoro")
    ]
    assert all(p.model == phases[0].model and p.tokenizer == phases[0].tokenizer for p in phases)
    assert phases[-1].train.add_train_repeat > 1


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict({"model": {"d_model": 64, "layers": 3}})
    with pytest.raises(ConfigError, match="unknown sections"):
        config_from_dict({"modle": {}})
    with pytest.raises(ConfigError, match="expected an integer"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match="feat_dim"):
        config_from_dict({"features": {"num_mel_bins": 40}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(DataFormatError, match="YAML"):
        load_config(bad)
    assert config_from_dict({"train": {"lr": 1, "speed_factors": [0.9, 1.1]}}).train.speed_factors == (
        0.9,
        1.1,
    )


def test_load_utterances_errors(tmp_path: Path) -> None:
    with pytest.raises(UserLibriError, match="manifest"):
        load_utterances(tmp_path, "train")


def test_cli_train(corpus: Path, tmp_path: Path) -> None:
    from userlibri.cli.asr import command

    cfg = tmp_path / "am.yaml"
    cfg.write_text(
        "model: {d_model: 32, num_heads: 4, ff_dim: 64, num_layers: 2, conv_kernel: 5,"
        " subsampling_channels: 8, decoder_dim: 16, joiner_dim: 16}\n"
        "train: {max_batch_frames: 400, dev_max_utts: 2, tokenizer_book_sentences: 0, warmup_steps: 2}\n"
        "tokenizer: {vocab_size: 24, model_type: bpe}\n"
    )
    result = CliRunner().invoke(
        command,
        [
            "train",
            "--config",
            str(cfg),
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "exp"),
            "--max-steps",
            "2",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "stopped (max_steps) at step 2" in result.output
    assert (tmp_path / "exp" / AVG_FILE).is_file() and (
        tmp_path / "exp" / "tokenizer" / "tokens.txt"
    ).is_file()


def test_seeded_chunk_sampling_is_reproducible() -> None:
    from userlibri.asr.model import sample_chunk

    cfg = _tiny_am()
    assert [sample_chunk(cfg, random.Random(3)) for _ in range(5)] == [
        sample_chunk(cfg, random.Random(3)) for _ in range(5)
    ]


def test_feature_cache_speed_and_reuse(corpus: Path, tmp_path: Path) -> None:
    from userlibri.asr.data import build_feature_cache
    from userlibri.features import FeatureConfig

    utts = load_utterances(corpus, "train")
    plain = build_feature_cache(utts, tmp_path / "sp1", FeatureConfig(), 1.0, progress=False)
    stamp = (tmp_path / "sp1" / "feats.npy").stat().st_mtime_ns
    again = build_feature_cache(utts, tmp_path / "sp1", FeatureConfig(), 1.0, progress=False)
    assert (tmp_path / "sp1" / "feats.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(again[2], plain[2]) and again.ids == [u.id for u in utts]
    fast = build_feature_cache(utts, tmp_path / "sp11", FeatureConfig(), 1.1, progress=False)
    ratio = fast.lengths / plain.lengths
    assert np.all(np.abs(ratio - 1 / 1.1) < 0.02)
    stale = build_feature_cache(utts[:2], tmp_path / "sp1", FeatureConfig(), 1.0, progress=False)
    assert len(stale) == 2


def test_noise_augment_is_seeded_and_keeps_its_snr() -> None:
    from userlibri.asr.data import Augment

    t = np.arange(16000) / 16000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    aug = Augment(copy=1, seed=0, snr_db=(10.0, 10.0), slope=(1.0, 1.0), reverb_prob=0.0)
    a = aug.apply(clean, 16000, "1-2-0003")
    assert np.array_equal(a, aug.apply(clean, 16000, "1-2-0003"))
    assert not np.array_equal(a, aug.apply(clean, 16000, "1-2-0004"))
    assert not np.array_equal(a, replace(aug, copy=2).apply(clean, 16000, "1-2-0003"))
    noise = a.astype(np.float64) - clean  # no clipping here: peak stays under 0.98
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))
    assert abs(snr - 10.0) < 0.01
    # A pink slope puts more noise power under 1 kHz than a white one.
    spec = np.abs(np.fft.rfft(noise)) ** 2
    assert spec[1:1000].sum() > 5 * spec[1000:2000].sum()
    # Speed 1.15 shortens; reverberation (sox) keeps it finite and non-silent.
    fast = Augment(copy=1, seed=0, speeds=(1.15,), reverb_prob=1.0).apply(clean, 16000, "u")
    assert abs(len(fast) / len(clean) - 1 / 1.15) < 0.3 and np.all(np.isfinite(fast)) and np.any(fast)
    assert np.max(np.abs(fast)) <= 0.98 + 1e-6


def test_feature_cache_augment_copies(corpus: Path, tmp_path: Path) -> None:
    from userlibri.asr.data import Augment, build_feature_cache
    from userlibri.features import FeatureConfig

    utts = load_utterances(corpus, "train")
    aug = Augment(copy=1, seed=0, reverb_prob=0.5)
    first = build_feature_cache(utts, tmp_path / "aug1", FeatureConfig(), progress=False, augment=aug)
    stamp = (tmp_path / "aug1" / "feats.npy").stat().st_mtime_ns
    again = build_feature_cache(utts, tmp_path / "aug1", FeatureConfig(), progress=False, augment=aug)
    assert (tmp_path / "aug1" / "feats.npy").stat().st_mtime_ns == stamp
    assert again.augment == aug.to_dict() and np.array_equal(again[1], first[1])
    plain = build_feature_cache(utts, tmp_path / "plain", FeatureConfig(), progress=False)
    assert plain.augment is None and not np.array_equal(plain[1], first[1])
    # Another augmentation config makes the cache stale: recomputed, deterministically.
    other = build_feature_cache(
        utts, tmp_path / "aug1", FeatureConfig(), progress=False, augment=replace(aug, snr_db=(30.0, 30.0))
    )
    assert other.augment["snr_db"] == [30.0, 30.0]
    assert (tmp_path / "aug1" / "feats.npy").stat().st_mtime_ns != stamp


def test_noise_config_errors() -> None:
    cfg = config_from_dict({"train": {"noise_copies": 2, "noise_snr_db": [5, 20], "reverb_prob": 0.3}})
    assert cfg.train.noise_copies == 2 and cfg.train.noise_snr_db == (5.0, 20.0)
    for bad, match in (
        ({"noise_copies": -1}, "noise_copies"),
        ({"noise_snr_db": [20, 5]}, "noise_snr_db"),
        ({"noise_snr_db": [5]}, "noise_snr_db"),
        ({"noise_slope": [0, 4]}, "noise_slope"),
        ({"reverb_prob": 1.5}, "reverb_prob"),
    ):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({"train": bad})


def test_resume_may_change_loss_weights_only(corpus: Path, tmp_path: Path) -> None:
    """A CTC-only first phase (transducer_weight 0) resumed with both heads; any other model
    change is refused with the fields named."""
    cfg = _exp_config()
    feats = tmp_path / "feats"
    ctc_only = replace(cfg, model=replace(cfg.model, ctc_weight=1.0, transducer_weight=0.0))
    first = train(ctc_only, corpus, tmp_path / "exp", max_steps=2, features_dir=feats, progress=False)
    assert first.step == 2
    records = read_log(tmp_path / "exp")
    assert all(r["transducer"] == 0.0 for r in records if r["event"] == "train")
    wider = replace(cfg, model=replace(cfg.model, d_model=48))
    with pytest.raises(UserLibriError, match=r"d_model: 32 \(checkpoint\) vs 48 \(now\)"):
        train(wider, corpus, tmp_path / "exp", resume=True, max_steps=3, features_dir=feats, progress=False)
    joint = train(cfg, corpus, tmp_path / "exp", resume=True, max_steps=4, features_dir=feats, progress=False)
    assert joint.step == 4
    records = read_log(tmp_path / "exp")
    assert [r["transducer"] > 0 for r in records if r["event"] == "train"] == [False, False, True, True]


def test_ctc_only_steps(corpus: Path, tmp_path: Path) -> None:
    """``ctc_only_steps``: the first steps train the CTC head alone (no transducer loss)."""
    cfg = _exp_config(ctc_only_steps=2)
    train(cfg, corpus, tmp_path / "exp", max_steps=4, features_dir=tmp_path / "feats", progress=False)
    records = read_log(tmp_path / "exp")
    train_records = [r for r in records if r["event"] == "train"]
    assert [r["transducer"] > 0 for r in train_records] == [False, False, True, True]
    assert all(r["ctc"] > 0 for r in train_records)
    with pytest.raises(ConfigError, match="ctc_only_steps"):
        TrainConfig(ctc_only_steps=-1).validate()


def _renamed_copy(corpus: Path, dest: Path, speaker: str) -> Path:
    """``corpus`` with its speaker 1 renamed (new utterance ids, same audio and texts)."""
    for split in ("train", "dev"):
        src = corpus / split / "1" / "2"
        out = dest / split / speaker / "2"
        out.mkdir(parents=True)
        trans = {}
        for flac in sorted(src.glob("*.flac")):
            utt = f"{speaker}-{flac.stem.partition('-')[2]}"
            shutil.copy(flac, out / f"{utt}.flac")
            trans[utt] = next(t for u, t in _read_trans(src) if u == flac.stem)
        write_transcripts(out / f"{speaker}-2.trans.txt", trans)
    return dest


def _read_trans(chdir: Path) -> list[tuple[str, str]]:
    lines = (chdir / "1-2.trans.txt").read_text().splitlines()
    return [(line.split(" ", 1)[0], line.split(" ", 1)[1]) for line in lines]


def test_add_train_corpora(corpus: Path, tmp_path: Path) -> None:
    """--add-train: another corpus joins training, repeated add_train_repeat times per epoch, with
    its own feature caches; ids it shares with the main corpus are an error naming them."""
    extra = _renamed_copy(corpus, tmp_path / "LibriSpeech-extra", "7")
    cfg = _exp_config(add_train_repeat=3, speed_factors=(1.1,))
    feats = tmp_path / "feats"
    res = train(
        cfg, corpus, tmp_path / "exp", max_steps=1, features_dir=feats, progress=False, add_train=[extra]
    )
    assert res.step == 1
    info = json.loads((tmp_path / "exp" / "data.json").read_text())
    assert [c["utterances"] for c in info["corpora"]] == [4, 4]
    assert [c["repeat"] for c in info["corpora"]] == [1, 3]
    # 2 copies (speeds 1.0, 1.1) of 4 main utterances + 3 x 2 copies of 4 added ones.
    assert info["copies_per_corpus"] == 2 and info["items_per_epoch"] == 8 + 24
    assert (feats / "add-LibriSpeech-extra" / "train-sp1.1" / "index.json").is_file()
    with pytest.raises(UserLibriError, match=r"4 shared with the main corpus \(e\.g\. 1-2-0000"):
        train(
            cfg,
            corpus,
            tmp_path / "clash",
            max_steps=1,
            features_dir=feats,
            progress=False,
            add_train=[corpus],
        )
    from userlibri.cli.asr import command

    result = CliRunner().invoke(
        command,
        [
            "train",
            "--config",
            str(ROOT / "recipes/mini/conf/am.yaml"),
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "x"),
            "--add-train",
            str(tmp_path / "nowhere"),
        ],
    )
    assert result.exit_code != 0 and "nowhere" in result.output
