"""Train the acoustic model: tokenizer, cached features, CMVN, dynamic-chunk CTC + transducer
training with warm-up/cosine LR, ramped SpecAugment and dropout, checkpoints (every N minutes and
every epoch, atomic, newest K kept), exact ``resume``, checkpoint averaging and a per-epoch dev
greedy WER log.

Experiment directory (``out``)::

    config.json            the resolved ExperimentConfig
    tokenizer/             tokenizer.model, tokens.txt, ... (trained here unless one is given)
    feature_stats.json     global CMVN statistics of the training features
    checkpoints/ckpt-<step>.pt
    data.json              the training corpora, their utterance counts and repeats, items per epoch
    train_log.jsonl        {"event": "train" | "dev" | "stop", ...} one JSON object a line
    model-avg.pt           average of the newest ``average_last`` checkpoints (see ``load_model``)

Resume is exact: the model, optimizer, step, epoch, position in the epoch's (deterministic) batch
order and every RNG state are restored, so a resumed run reaches the same parameters as an
uninterrupted one on the same device.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from userlibri.asr.am_tokenizer import TOKENIZER_DIR, prepare_tokenizer  # noqa: F401 (re-exported)
from userlibri.asr.checkpoint import (  # noqa: F401 (re-exported: the public API of asr.train)
    CKPT_DIR,
    average_checkpoints,
    checkpoint_paths,
    load_model,
    save_checkpoint,
    save_model,
)
from userlibri.asr.config import ExperimentConfig, TrainConfig
from userlibri.asr.data import (
    FeatureSet,
    Item,
    added_corpora,
    build_feature_cache,
    cached_copies,
    collate,
    load_utterances,
    make_batches,
    spec_augment,
    training_items,
)
from userlibri.asr.from_onnx import ImportedModel, check_init, import_for_training
from userlibri.asr.model import (
    AcousticModel,
    count_parameters,
    ctc_greedy,
    sample_chunk,
    transducer_greedy,
)
from userlibri.asr.run_control import (  # noqa: F401 (LOG_FILE re-exported)
    LOG_FILE,
    StopSignals,
    append_log,
    read_log,
    resolve_device,
    rng_state,
    set_rng_state,
    truncate_log,
)
from userlibri.asr.ship import DATA_FILE, logged_seconds, with_base  # ship must not import torch
from userlibri.errors import UserLibriError
from userlibri.features import FeatureStats
from userlibri.fsio import exclusive_dir, write_json_atomic
from userlibri.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

STATS_FILE = "feature_stats.json"
AVG_FILE = "model-avg.pt"


@dataclass(frozen=True)
class TrainResult:
    """What a ``train`` call did."""

    out_dir: Path
    step: int
    epoch: int
    finished: bool
    stop_reason: str
    model_path: Path | None
    num_parameters: int
    seconds: float


# ----------------------------------------------------------------------------- schedule


def learning_rate(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to ``cfg.lr`` then cosine decay to ``final_lr_ratio * lr`` at ``total_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.final_lr_ratio * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * frac))


def augment_strength(step: int, cfg: TrainConfig) -> float:
    """0 before ``augment_start``, then a linear ramp to 1 over ``augment_ramp`` steps."""
    if step < cfg.augment_start:
        return 0.0
    if cfg.augment_ramp == 0:
        return 1.0
    return min(1.0, (step - cfg.augment_start) / cfg.augment_ramp)


def _set_dropout(model: torch.nn.Module, p: float) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: AcousticModel,
    sets: Sequence[FeatureSet],
    items: Sequence[Item],
    stats: FeatureStats,
    tokenizer: Tokenizer,
    device: torch.device,
    max_frames: int,
    modes: dict[str, tuple[int, int]],
) -> dict[str, float]:
    """Greedy WER (%) of CTC and transducer per mode (name -> (chunk_size, left_chunks))."""
    import jiwer

    model.eval()
    refs = [tokenizer.decode(it.tokens) for it in items]
    hyps: dict[str, list[str]] = {f"{m}_{h}": [""] * len(items) for m in modes for h in ("ctc", "transducer")}
    order = sorted(range(len(items)), key=lambda i: items[i].frames)
    batches, cur = [], []
    for i in order:
        if cur and items[i].frames * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    # The one-symbol-per-frame model is decoded as it was trained (and as the ONNX searches do).
    max_symbols = 1 if model.config.transducer_topology == "modified" else 3
    for batch in batches:
        feats, lens = collate([sets[items[i].set_index][items[i].utt_index] for i in batch], stats)
        feats, lens = feats.to(device), lens.to(device)
        for name, (chunk, left) in modes.items():
            enc, enc_lens = model.encoder(feats, lens, chunk, left)
            for key, out in (
                ("ctc", ctc_greedy(model.ctc_head(enc), enc_lens, model.config.blank_id)),
                ("transducer", transducer_greedy(model, enc, enc_lens, max_symbols)),
            ):
                for i, toks in zip(batch, out, strict=True):
                    hyps[f"{name}_{key}"][i] = tokenizer.decode(toks)
    model.train()
    result = {}
    for key, h in hyps.items():
        result[f"wer_{key}"] = round(100.0 * jiwer.wer(refs, h), 2) if refs else float("nan")
    return result


# ----------------------------------------------------------------------------- training


def _locked_out(fn: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Run ``fn(config, data, out, ...)`` holding ``out``'s lock: two trainers on one directory
    would interleave their checkpoints and logs."""

    @functools.wraps(fn)
    def run(
        config: ExperimentConfig, data: str | Path, out: str | Path, *args: Any, **kw: Any
    ) -> TrainResult:
        with exclusive_dir(out, "`userlibri asr train`"):
            return fn(config, data, out, *args, **kw)

    return run


#: Model-config fields that only shape the training losses: a resumed run may change them (e.g. a
#: CTC-only first phase, ``transducer_weight: 0``, then both heads), everything else must match.
LOSS_FIELDS = ("ctc_weight", "transducer_weight", "transducer_topology")


def _check_resumable(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    diffs = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    fixed = [k for k in diffs if k not in LOSS_FIELDS]
    if fixed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} (checkpoint) vs {now.get(k)!r} (now)" for k in fixed)
        raise UserLibriError(f"{path}: resume needs this run's model config; it differs in {detail}")
    for k in diffs:
        log.info("resume: %s changed from %r to %r", k, saved.get(k), now.get(k))


def _init_record(init: ImportedModel | None, out: Path) -> dict[str, str] | None:
    """What a run started from; a resumed run keeps what its first start recorded."""
    if init is not None:
        return with_base({"model_dir": str(init.model_dir), "model_version": init.model_version})
    previous = out / DATA_FILE
    if previous.is_file():
        return json.loads(previous.read_text(encoding="utf-8")).get("init_from")
    return None


@_locked_out
def train(
    config: ExperimentConfig,
    data: str | Path,
    out: str | Path,
    resume: bool = False,
    device: str = "auto",
    max_minutes: float | None = None,
    max_steps: int | None = None,
    threads: int | None = None,
    tokenizer: str | Path | None = None,
    features_dir: str | Path | None = None,
    train_split: str = "train",
    dev_split: str | None = "dev",
    progress: bool = True,
    schedule_steps: int | None = None,
    add_train: Sequence[str | Path] = (),
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train (or with ``resume`` continue) an acoustic model in ``out``; see the module docstring.

    ``max_minutes``/``max_steps``/``threads`` override the config for this call; stopping on them
    writes a checkpoint and ``model-avg.pt`` so a later ``resume`` continues exactly.
    ``schedule_steps`` sets the length of the learning-rate schedule, also on ``resume`` (where it
    otherwise comes from the checkpoint): how a finished or too-short schedule is extended.
    ``add_train``: more corpora (LibriSpeech roots or manifest directories) whose ``train_split``
    joins the training data, each cached under ``<features>/add-<directory name>/`` and repeated
    ``train.add_train_repeat`` times per epoch; their utterance ids must not clash with the main
    corpus's. ``init_from``: an exported model directory (e.g. the shipped ``userlibri/models/mini``)
    whose weights (``asr.from_onnx``), tokenizer and CMVN statistics a new run starts from (optimizer,
    schedule and step start afresh); its architecture must be ``config.model``'s and its features
    ``config.features``. A resumed run takes all of that from its checkpoint.
    """
    t_start = time.monotonic()
    config.validate()
    tc = config.train
    if max_minutes is not None:
        tc = replace(tc, max_minutes=max_minutes)
    if max_steps is not None:
        tc = replace(tc, max_steps=max_steps)
    if threads is not None:
        tc = replace(tc, threads=threads)
    data, out = Path(data), Path(out)
    existing = checkpoint_paths(out) if out.is_dir() else []
    if existing and not resume:
        raise UserLibriError(f"{out}: holds checkpoints; pass --resume to continue or choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed % 2**32)

    # Data: tokenizer, features, CMVN, items.
    train_utts = load_utterances(data, train_split)
    init = (
        import_for_training(init_from, config)
        if init_from is not None and not (resume and existing)
        else None
    )
    if init is not None and tokenizer is None:
        tokenizer = init.model_dir
    tok = prepare_tokenizer(
        out, config, train_utts, data, train_split, Path(tokenizer) if tokenizer else None
    )
    am = replace(config.model, vocab_size=tok.vocab_size, blank_id=tok.blank_id).validate()
    if init is not None:
        check_init(init, am, tok)
    config = replace(config, model=am, train=tc)
    write_json_atomic(out / "config.json", config.to_dict())
    feat_root = Path(features_dir) if features_dir else out / "features"
    jobs = max(1, tc.num_workers)
    speeds = [1.0] + [f for f in tc.speed_factors if f != 1.0]
    sources = [(train_utts, feat_root)] + added_corpora(add_train, train_split, train_utts, feat_root)
    train_sets = [
        fs
        for utts, root in sources
        for fs in cached_copies(utts, root, train_split, config, speeds, jobs, progress)
    ]
    copies = len(train_sets) // len(sources)
    if (out / STATS_FILE).is_file():
        stats = FeatureStats.load(out / STATS_FILE)
    elif init is not None:  # the statistics the imported model was trained with
        stats = init.stats
        stats.save(out / STATS_FILE)
    else:
        stats = train_sets[0].stats()
        stats.save(out / STATS_FILE)
    max_in = int(tc.max_utt_seconds * 1000 / config.features.frame_shift_ms)
    items, dropped = training_items(train_sets, tok, max_in)
    # Sets of the added corpora come after the main corpus's `copies` sets.
    items += [it for it in items if it.set_index >= copies] * (tc.add_train_repeat - 1)
    if not items:
        raise UserLibriError(f"{data}/{train_split}: no usable training utterances ({dropped} dropped)")
    if dropped:
        log.warning("dropped %d training utterances (too long, empty or more tokens than frames)", dropped)
    write_json_atomic(
        out / DATA_FILE,
        {
            "train_split": train_split,
            "corpora": [
                {"data": str(data), "utterances": len(train_utts), "repeat": 1},
                *(
                    {"data": str(root), "utterances": len(utts), "repeat": tc.add_train_repeat}
                    for root, (utts, _) in zip(add_train, sources[1:], strict=True)
                ),
            ],
            "init_from": _init_record(init, out),
            "copies_per_corpus": copies,
            "items_per_epoch": len(items),
            "dropped": dropped,
        },
    )
    dev_sets: list[FeatureSet] = []
    dev_items: list[Item] = []
    if dev_split and tc.dev_max_utts:
        dev_utts = load_utterances(data, dev_split)[: tc.dev_max_utts]
        dev_sets = [
            build_feature_cache(dev_utts, feat_root / dev_split, config.features, 1.0, jobs, progress)
        ]
        dev_items, _ = training_items(dev_sets, tok, 10**9)

    # Model, optimizer, state.
    model = AcousticModel(am)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    model = model.to(dev)
    nparams = count_parameters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    chunk_rng = random.Random(tc.seed)
    aug_gen = torch.Generator().manual_seed(tc.seed)
    batches_per_epoch = len(
        make_batches(items, tc.max_batch_frames, tc.num_buckets, tc.seed, 0, tc.sortagrad)
    )
    total_steps = tc.decay_steps or tc.epochs * batches_per_epoch
    step = epoch = batch_in_epoch = 0
    seconds_before = 0.0  # wall time of the earlier processes of this run, up to its checkpoint
    if resume and existing:
        ck = torch.load(existing[-1], map_location=dev, weights_only=False)
        _check_resumable(existing[-1], ck["am_config"], am.to_dict())
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, epoch, batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        total_steps = ck["total_steps"]
        set_rng_state(ck["rng"], chunk_rng, aug_gen)
        truncate_log(out, step)
        if "train_seconds" in ck:
            seconds_before = float(ck["train_seconds"])
        else:  # a checkpoint from before train_seconds: the stops logged up to it
            seconds_before = logged_seconds(read_log(out))
        log.info("resumed from %s (step %d, epoch %d, batch %d)", existing[-1], step, epoch, batch_in_epoch)
    if schedule_steps is not None:
        done = bool(tc.max_steps) and step >= tc.max_steps  # a rerun of a finished run: stops at once
        if schedule_steps <= step and not done:
            raise UserLibriError(
                f"schedule_steps: expected more than the {step} steps already taken, found {schedule_steps}"
            )
        total_steps = schedule_steps
    log.info(
        "model: %d parameters; %d training utterances, %d batches/epoch, device %s",
        nparams,
        len(items),
        batches_per_epoch,
        dev,
    )
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" and tc.amp else nullcontext()

    def checkpoint() -> Path:
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "total_steps": total_steps,
            "am_config": am.to_dict(),
            "train_config": config.to_dict(),
            "rng": rng_state(chunk_rng, aug_gen),
            "feature_stats": stats.to_dict(),
            "feature_config": config.features.to_dict(),
            "tokenizer_model_id": tok.model_id,
            "train_seconds": round(seconds_before + time.monotonic() - t_start, 1),
        }
        return save_checkpoint(out, state, tc.keep_checkpoints)

    model.train()
    last_ckpt = time.monotonic()
    stop_reason = ""
    signals = StopSignals()
    try:
        window: dict[str, float] = {"ctc": 0.0, "transducer": 0.0, "total": 0.0, "n": 0, "frames": 0}
        window_start = time.monotonic()
        while epoch < tc.epochs and not stop_reason:
            batches = make_batches(items, tc.max_batch_frames, tc.num_buckets, tc.seed, epoch, tc.sortagrad)
            bar = tqdm(
                total=len(batches),
                initial=batch_in_epoch,
                desc=f"epoch {epoch}",
                unit="batch",
                disable=not progress,
                leave=False,
            )
            while batch_in_epoch < len(batches):
                if tc.max_steps and step >= tc.max_steps:
                    stop_reason = "max_steps"
                elif tc.max_minutes and time.monotonic() - t_start >= tc.max_minutes * 60:
                    stop_reason = "max_minutes"
                elif signals.received:
                    stop_reason = f"signal {signals.received}"
                if stop_reason:
                    break
                batch = [items[i] for i in batches[batch_in_epoch]]
                feats, lens = collate([train_sets[it.set_index][it.utt_index] for it in batch], stats)
                strength = augment_strength(step, tc)
                feats = spec_augment(
                    feats,
                    lens,
                    strength,
                    aug_gen,
                    tc.freq_masks,
                    tc.freq_mask_width,
                    tc.time_masks,
                    tc.time_mask_ratio,
                )
                _set_dropout(model, am.dropout * strength)
                chunk, left = sample_chunk(am, chunk_rng)
                lr = learning_rate(step, tc, total_steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                with amp:
                    losses = model.losses(
                        feats.to(dev),
                        lens.to(dev),
                        [it.tokens for it in batch],
                        chunk_size=chunk,
                        left_chunks=left,
                        weights=(1.0, 0.0) if step < tc.ctc_only_steps else None,
                    )
                opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip))
                if math.isfinite(grad_norm):
                    opt.step()
                else:
                    log.warning("step %d: non-finite gradient norm, update skipped", step)
                step += 1
                batch_in_epoch += 1
                bar.update()
                for k in ("ctc", "transducer", "total"):
                    window[k] += float(losses[k].detach())
                window["n"] += 1
                window["frames"] += int(lens.sum())
                if step % tc.log_every == 0:
                    secs = time.monotonic() - window_start
                    rec = {
                        "event": "train",
                        "step": step,
                        "epoch": epoch,
                        "lr": lr,
                        "augment": round(strength, 3),
                        "steps_per_s": round(window["n"] / secs, 3),
                        "audio_s_per_s": round(
                            window["frames"] * config.features.frame_shift_ms / 1000 / secs, 2
                        ),
                        **{k: round(window[k] / window["n"], 4) for k in ("ctc", "transducer", "total")},
                    }
                    append_log(out, rec)
                    bar.set_postfix(loss=f"{rec['total']:.3f}", lr=f"{lr:.2e}")
                    window = {"ctc": 0.0, "transducer": 0.0, "total": 0.0, "n": 0, "frames": 0}
                    window_start = time.monotonic()
                if time.monotonic() - last_ckpt >= tc.checkpoint_minutes * 60:
                    checkpoint()
                    last_ckpt = time.monotonic()
            bar.close()
            if stop_reason:
                break
            epoch += 1
            batch_in_epoch = 0
            record: dict[str, Any] = {
                "event": "dev",
                "epoch": epoch,
                "step": step,
                "elapsed_s": round(time.monotonic() - t_start, 1),
            }
            if dev_items:
                modes = {"full": (-1, -1), "stream": (am.decode_chunk, am.decode_left_chunks)}
                record.update(
                    evaluate(model, dev_sets, dev_items, stats, tok, dev, tc.max_batch_frames, modes)
                )
            append_log(out, record)
            log.info("epoch %d done: %s", epoch, record)
            checkpoint()
            last_ckpt = time.monotonic()
    finally:
        signals.restore()
    finished = not stop_reason
    if not stop_reason:
        stop_reason = "epochs"
    newest = checkpoint_paths(out)
    if not newest or int(newest[-1].stem.split("-")[1]) != step:
        checkpoint()
    paths = checkpoint_paths(out)[-tc.average_last :]
    save_model(
        out / AVG_FILE,
        average_checkpoints(paths),
        am,
        config.features,
        stats,
        tok,
        {"step": step, "averaged": [p.name for p in paths]},
    )
    seconds = time.monotonic() - t_start
    append_log(
        out,
        {
            "event": "stop",
            "reason": stop_reason,
            "step": step,
            "epoch": epoch,
            "seconds": round(seconds, 1),
            "total_seconds": round(seconds_before + seconds, 1),
            "averaged": [p.name for p in paths],
        },
    )
    return TrainResult(out, step, epoch, finished, stop_reason, out / AVG_FILE, nparams, seconds)
