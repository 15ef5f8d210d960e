"""Checkpoint and model-file I/O of ``asr train``: numbered checkpoints (keep the newest N),
averaging, and the self-describing model file that ``load_model`` and the exporter read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from userlibri.asr.config import AMConfig
from userlibri.asr.model import AcousticModel
from userlibri.errors import DataFormatError, UserLibriError
from userlibri.features import FeatureConfig, FeatureStats
from userlibri.fsio import atomic_path
from userlibri.text.tokenizer import Tokenizer

CKPT_DIR = "checkpoints"


def checkpoint_paths(out: Path) -> list[Path]:
    return sorted((out / CKPT_DIR).glob("ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    path = out / CKPT_DIR / f"ckpt-{state['step']:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoint_paths(out)[:-keep]:
        old.unlink()
    return path


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the ``model`` state dicts in ``paths`` (float tensors, accumulated in
    float64); integer buffers are taken from the last checkpoint."""
    if not paths:
        raise UserLibriError("average_checkpoints: expected at least one checkpoint, found none")
    avg: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for path in paths:
        sd = torch.load(path, map_location="cpu", weights_only=False)["model"]
        if avg and set(sd) != set(avg):
            raise DataFormatError(path, f"the same parameters as {paths[0]}", f"{len(sd)} differing keys")
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k] = avg[k] + v.double() if k in avg else v.double().clone()
            else:
                avg[k] = v
        last = sd
    n = len(paths)
    return {k: (v / n).to(last[k].dtype) if last[k].is_floating_point() else v for k, v in avg.items()}


def save_model(
    path: Path,
    model_state: dict[str, torch.Tensor],
    am: AMConfig,
    features: FeatureConfig,
    stats: FeatureStats,
    tokenizer: Tokenizer,
    extra: dict[str, Any],
) -> None:
    """Write a self-describing model file (what ``load_model`` and the exporter read)."""
    payload = {
        "am_config": am.to_dict(),
        "model": model_state,
        "feature_config": features.to_dict(),
        "feature_stats": stats.to_dict(),
        "tokenizer_model_id": tokenizer.model_id,
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[AcousticModel, dict[str, Any]]:
    """Load ``model-avg.pt`` (or a checkpoint) -> (model in eval mode, metadata dict with keys
    ``am_config`` (AMConfig), ``feature_config`` (FeatureConfig), ``feature_stats`` (FeatureStats
    or None), ``tokenizer_model_id``, ``step``)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
        am = AMConfig(**payload["am_config"])
    except (OSError, KeyError, TypeError, RuntimeError) as e:
        raise DataFormatError(
            path, "an acoustic-model file written by 'userlibri asr train'", repr(e)
        ) from None
    model = AcousticModel(am).to(device)
    model.load_state_dict(payload["model"])
    model.eval()
    stats = payload.get("feature_stats")
    meta = {
        "am_config": am,
        "feature_config": FeatureConfig.from_dict(payload.get("feature_config", {})),
        "feature_stats": FeatureStats.from_dict(stats, str(path)) if stats else None,
        "tokenizer_model_id": payload.get("tokenizer_model_id", ""),
        "step": payload.get("step", 0),
    }
    return model, meta
