"""Training data for the acoustic model: utterance lists, a feature cache, length-bucketed batches
and SpecAugment.

Feature cache: one directory per (split, speed factor), ``<cache>/<split>[-sp<f>]/`` holding
``feats.npy`` (all frames of all utterances concatenated, float16, memory-mapped when read) and
``index.json`` (feature config, utterance ids, texts, frame offsets and lengths). A cache is
recomputed when its utterance list or feature config differs. The whole cache is one directory,
so it can be carried to another machine instead of the audio.

Speed perturbation (optional, ``TrainConfig.speed_factors``): the waveform is resampled as if it
had been recorded at ``rate * factor`` (soxr), which changes tempo and pitch like sox's ``speed``;
each factor is one more cached copy of the training split. The synthesized corpora already vary
speed, tempo and pitch per reader at synthesis time, so the mini recipe leaves it off.

Noise augmentation (optional, ``TrainConfig.noise_copies``): each copy is one more cached copy
(``<split>-aug<k>/``) in which every utterance gets a speed, sox reverberation and additive
colored noise drawn from a per-utterance seed (:class:`Augment`): deterministic, so a cache can be
rebuilt bit for bit, and the same utterance sounds different in each copy.

Training corpora: :func:`cached_copies` (every cached copy of one corpus), :func:`added_corpora`
(``asr train --add-train``: more corpora, each with its own cache root) and :func:`training_items`
(the examples CTC can align).
"""

from __future__ import annotations

import json
import logging
import random
import re
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from userlibri.asr.config import ExperimentConfig
from userlibri.asr.model import output_frames
from userlibri.data.audio import read_audio, resample_audio
from userlibri.data.librispeech import iter_split
from userlibri.data.manifest import read_manifest
from userlibri.data.perturb import add_noise, colored_noise, sox_raw
from userlibri.errors import DataFormatError, UserLibriError
from userlibri.features import FeatureConfig, FeatureStats, compute_fbank
from userlibri.fsio import atomic_path, write_json_atomic
from userlibri.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

FEATS_FILE = "feats.npy"
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class SourceUtt:
    """An utterance before featurisation."""

    id: str
    audio: str
    text: str


def load_utterances(data: str | Path, split: str) -> list[SourceUtt]:
    """Utterances of ``split`` from a LibriSpeech-layout root (``<data>/<split>/<spk>/<ch>/``) or
    a manifest (``<data>/<split>.jsonl`` or ``<data>/manifests/<split>.jsonl``), sorted by id."""
    data = Path(data)
    if (data / split).is_dir():
        utts = [SourceUtt(u.utt_id, str(u.audio_path), u.text) for u in iter_split(data, split)]
    else:
        for cand in (data / f"{split}.jsonl", data / "manifests" / f"{split}.jsonl"):
            if cand.is_file():
                utts = [SourceUtt(u.id, u.audio, u.text) for u in read_manifest(cand)]
                break
        else:
            raise UserLibriError(
                f"{data}: expected a LibriSpeech-layout root with a '{split}/' directory or a manifest "
                f"{split}.jsonl (or manifests/{split}.jsonl), found neither"
            )
    if not utts:
        raise UserLibriError(f"{data}: split {split!r} has no utterances")
    return sorted(utts, key=lambda u: u.id)


@dataclass(frozen=True)
class Augment:
    """Noise augmentation of one cached copy (see ``TrainConfig.noise_copies``)."""

    copy: int
    seed: int
    speeds: tuple[float, ...] = (1.0,)
    snr_db: tuple[float, float] = (0.0, 25.0)
    slope: tuple[float, float] = (0.0, 2.0)
    reverb_prob: float = 0.5

    def to_dict(self) -> dict[str, object]:
        return {
            "copy": self.copy,
            "seed": self.seed,
            "speeds": list(self.speeds),
            "snr_db": list(self.snr_db),
            "slope": list(self.slope),
            "reverb_prob": self.reverb_prob,
        }

    def apply(self, samples: np.ndarray, rate: int, utt_id: str) -> np.ndarray:
        """``samples`` at a speed, maybe reverberated, plus noise; all drawn from (seed, copy, id)."""
        rng = np.random.default_rng([self.seed, self.copy, zlib.crc32(utt_id.encode())])
        # Every draw happens in the same order whatever branch is taken.
        speed = self.speeds[int(rng.integers(len(self.speeds)))]
        reverb = rng.random() < self.reverb_prob
        reverberance, room = rng.uniform(10.0, 90.0), rng.uniform(20.0, 100.0)
        snr, slope = rng.uniform(*self.snr_db), rng.uniform(*self.slope)
        x = np.asarray(samples, dtype=np.float32)
        if speed != 1.0:
            x = resample_audio(x, round(rate * speed), rate)
        if reverb:
            x = sox_raw(x, rate, ["reverb", f"{reverberance:.1f}", "50", f"{room:.1f}"], utt_id)
        x = add_noise(x.astype(np.float64), colored_noise(x.size, slope, rng), snr)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > 0.98:
            x *= 0.98 / peak
        return x.astype(np.float32)


def featurize(
    path: str, config: FeatureConfig, factor: float = 1.0, augment: Augment | None = None, utt_id: str = ""
) -> np.ndarray:
    """(T, F) float32 fbank of an audio file, resampled to the config's rate and speed-perturbed
    by ``factor`` or, with ``augment``, augmented as utterance ``utt_id``."""
    samples, rate = read_audio(path, config.sample_rate, resample=True)
    if augment is not None:
        samples = augment.apply(samples, rate, utt_id)
    elif factor != 1.0:
        samples = resample_audio(samples, round(rate * factor), rate)
    return compute_fbank(samples, rate, config)


def _featurize(args: tuple[str, float, FeatureConfig, Augment | None, str]) -> np.ndarray:
    path, factor, config, augment, utt_id = args
    return featurize(path, config, factor, augment, utt_id).astype(np.float16)


class FeatureSet:
    """A cached split: ids, texts and (T, F) float16 features by index (memory-mapped)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        try:
            index = json.loads((self.dir / INDEX_FILE).read_text(encoding="utf-8"))
            self.ids: list[str] = index["ids"]
            self.texts: list[str] = index["texts"]
            self.offsets = np.asarray(index["offsets"], dtype=np.int64)
            self.lengths = np.asarray(index["lengths"], dtype=np.int64)
            self.feature_config = FeatureConfig.from_dict(index["feature_config"])
            self.speed = float(index["speed"])
            self.augment: dict[str, object] | None = index.get("augment")
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise DataFormatError(self.dir / INDEX_FILE, "a feature-cache index", repr(e)) from None
        self.feats = np.load(self.dir / FEATS_FILE, mmap_mode="r")
        if self.feats.ndim != 2 or self.feats.shape[0] != int(self.lengths.sum()):
            raise DataFormatError(
                self.dir / FEATS_FILE, f"({int(self.lengths.sum())}, F) frames", str(self.feats.shape)
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        o = int(self.offsets[i])
        return np.asarray(self.feats[o : o + int(self.lengths[i])], dtype=np.float32)

    def stats(self) -> FeatureStats:
        """Global mean/std over all frames."""
        return FeatureStats.from_features(
            np.asarray(self.feats[s : s + 200_000], dtype=np.float32)
            for s in range(0, len(self.feats), 200_000)
        )


def build_feature_cache(
    utts: Sequence[SourceUtt],
    directory: str | Path,
    config: FeatureConfig,
    speed: float = 1.0,
    jobs: int = 1,
    progress: bool = True,
    augment: Augment | None = None,
) -> FeatureSet:
    """Featurise ``utts`` (speed-perturbed by ``speed``, or augmented by ``augment``) into
    ``directory`` unless an identical cache is there; return it."""
    aug = augment.to_dict() if augment is not None else None
    directory = Path(directory)
    ids = [u.id for u in utts]
    if (directory / INDEX_FILE).is_file() and (directory / FEATS_FILE).is_file():
        try:
            cached = FeatureSet(directory)
            same = cached.ids == ids and cached.feature_config == config and cached.speed == speed
            if same and cached.augment == aug:
                log.info("feature cache %s: %d utterances, reused", directory, len(cached))
                return cached
        except DataFormatError as e:
            log.warning("feature cache %s unreadable (%s); recomputing", directory, e)
        log.info("feature cache %s is stale; recomputing", directory)
    tasks = [(u.audio, speed, config, augment, u.id) for u in utts]
    bar = tqdm(total=len(tasks), desc=f"fbank {directory.name}", unit="utt", disable=not progress)
    arrays: list[np.ndarray] = []
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for a in pool.map(_featurize, tasks, chunksize=16):
                arrays.append(a)
                bar.update()
    else:
        for t in tasks:
            arrays.append(_featurize(t))
            bar.update()
    bar.close()
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    feats = np.concatenate(arrays) if arrays else np.zeros((0, config.num_mel_bins), np.float16)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / FEATS_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, feats)
    write_json_atomic(
        directory / INDEX_FILE,
        {
            "feature_config": config.to_dict(),
            "speed": speed,
            "augment": aug,
            "ids": ids,
            "texts": [u.text for u in utts],
            "offsets": offsets.tolist(),
            "lengths": lengths.tolist(),
        },
    )
    log.info("feature cache %s: %d utterances, %d frames", directory, len(utts), int(lengths.sum()))
    return FeatureSet(directory)


@dataclass(frozen=True)
class Item:
    """One training example: which set, which utterance, its frame count and token ids."""

    set_index: int
    utt_index: int
    frames: int
    tokens: tuple[int, ...]


def make_batches(
    items: Sequence[Item], max_frames: int, num_buckets: int, seed: int, epoch: int, sort_first_epoch: bool
) -> list[list[int]]:
    """Indices into ``items`` grouped into batches of at most ``max_frames`` padded frames.

    Items are sorted by length and cut into ``num_buckets`` buckets; each bucket is shuffled
    (``Random(seed, epoch)``), packed greedily, and the batches are shuffled. In the first epoch
    with ``sort_first_epoch`` the batches go shortest first (a curriculum that helps CTC leave the
    blank plateau). Deterministic for a given (seed, epoch).
    """
    rng = random.Random(f"{seed}-{epoch}")
    order = sorted(range(len(items)), key=lambda i: (items[i].frames, i))
    size = max(1, -(-len(order) // max(1, num_buckets)))
    batches: list[list[int]] = []
    for start in range(0, len(order), size):
        bucket = order[start : start + size]
        if not (sort_first_epoch and epoch == 0):
            rng.shuffle(bucket)
        batch: list[int] = []
        longest = 0
        for i in bucket:
            n = items[i].frames
            if batch and max(longest, n) * (len(batch) + 1) > max_frames:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, n)
        if batch:
            batches.append(batch)
    if sort_first_epoch and epoch == 0:
        batches.sort(key=lambda b: max(items[i].frames for i in b))
    else:
        rng.shuffle(batches)
    return batches


def collate(feats: Sequence[np.ndarray], stats: FeatureStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise and pad (T, F) arrays -> feats (B, T_max, F) float32, lengths (B,) int64."""
    lens = torch.tensor([len(f) for f in feats], dtype=torch.long)
    out = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : len(f)] = torch.from_numpy(stats.apply(f))
    return out, lens


def spec_augment(
    feats: torch.Tensor,
    lens: torch.Tensor,
    strength: float,
    generator: torch.Generator,
    freq_masks: int,
    freq_width: int,
    time_masks: int,
    time_ratio: float,
) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) without time warping, on normalised features (masks set
    to 0 = the mean). Mask widths scale with ``strength`` in [0, 1] so it can be ramped in."""
    if strength <= 0:
        return feats
    out = feats.clone()
    b, _, f = feats.shape
    for i in range(b):
        n = int(lens[i])
        for _ in range(freq_masks):
            w = int(torch.randint(0, max(1, int(freq_width * strength)) + 1, (1,), generator=generator))
            s = int(torch.randint(0, max(1, f - w + 1), (1,), generator=generator))
            out[i, :, s : s + w] = 0.0
        max_t = int(n * time_ratio * strength)
        for _ in range(time_masks):
            w = int(torch.randint(0, max_t + 1, (1,), generator=generator))
            s = int(torch.randint(0, max(1, n - w + 1), (1,), generator=generator))
            out[i, s : s + w] = 0.0
    return out


# ----------------------------------------------------------------------------- training corpora


def cached_copies(
    utts: Sequence[SourceUtt],
    root: Path,
    split: str,
    config: ExperimentConfig,
    speeds: Sequence[float],
    jobs: int,
    progress: bool,
) -> list[FeatureSet]:
    """The cached copies of one training corpus: one per speed, then the noise copies."""
    tc = config.train
    return [
        build_feature_cache(
            utts, root / (split if s == 1.0 else f"{split}-sp{s:g}"), config.features, s, jobs, progress
        )
        for s in speeds
    ] + [
        build_feature_cache(
            utts,
            root / f"{split}-aug{k}",
            config.features,
            1.0,
            jobs,
            progress,
            Augment(k, tc.seed, tuple(speeds), tc.noise_snr_db, tc.noise_slope, tc.reverb_prob),
        )
        for k in range(1, tc.noise_copies + 1)
    ]


def added_corpora(
    roots: Sequence[str | Path], split: str, main: Sequence[SourceUtt], feat_root: Path
) -> list[tuple[list[SourceUtt], Path]]:
    """(utterances, cache root) of each ``--add-train`` corpus; clashing ids or names are errors."""
    seen = {u.id: "the main corpus" for u in main}
    out: list[tuple[list[SourceUtt], Path]] = []
    names: set[str] = set()
    for root in roots:
        root = Path(root)
        name = "add-" + re.sub(r"[^A-Za-z0-9._-]+", "_", root.resolve().name)
        if name in names:
            raise UserLibriError(
                f"--add-train {root}: another added corpus has the directory name {root.name!r}"
            )
        names.add(name)
        utts = load_utterances(root, split)
        clash = sorted(u.id for u in utts if u.id in seen)
        if clash:
            raise UserLibriError(
                f"--add-train {root}: expected utterance ids unused by the other corpora, found "
                f"{len(clash)} shared with {seen[clash[0]]} (e.g. {', '.join(clash[:3])})"
            )
        seen.update({u.id: str(root) for u in utts})
        out.append((utts, feat_root / name))
    return out


def training_items(
    sets: Sequence[FeatureSet], tokenizer: Tokenizer, max_frames: int
) -> tuple[list[Item], int]:
    """Training examples; utterances too long, too short or with more tokens than encoder frames
    (CTC cannot align them) are dropped. Returns (items, dropped)."""
    items, dropped = [], 0
    for s, fs in enumerate(sets):
        for i, (text, n) in enumerate(zip(fs.texts, fs.lengths.tolist(), strict=True)):
            toks = tuple(tokenizer.encode(text))
            if n > max_frames or not toks or output_frames(n) < len(toks):
                dropped += 1
                continue
            items.append(Item(s, i, n, toks))
    return items, dropped
