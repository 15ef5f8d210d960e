"""Is a training run learning from the audio? Encoder health numbers for a checkpoint.

A CTC model on the blank plateau predicts the token prior whatever it hears. One way to get there
(seen in this project's CPU runs at a 2e-3 peak learning rate) is a collapsed encoder: the
self-attention output becomes the same vector at every frame and the layers wash out the temporal
variation of the subsampling output. These numbers show it within minutes instead of hours:

- ``time_std``: per layer, the standard deviation over time of the layer output (mean over dims),
  from the subsampling output (index 0) to the last layer; at initialisation it stays near the
  subsampling value, a collapsed encoder falls towards 0.
- ``attention_time_std``: the same for each layer's self-attention output alone.
- ``blank_prob`` / ``nonblank_frames``: mean CTC blank probability and the share of frames whose
  argmax is not blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from userlibri.asr.data import collate
from userlibri.asr.model import AcousticModel, chunk_attention_mask, output_frames
from userlibri.features import FeatureStats


def _time_std(x: torch.Tensor, lens: torch.Tensor) -> float:
    """Mean over utterances and dims of the std over valid frames of x (B, T, D)."""
    vals = [float(x[i, : int(n)].std(0).mean()) for i, n in enumerate(lens.tolist()) if n > 1]
    return round(float(np.mean(vals)), 4) if vals else 0.0


@torch.no_grad()
def encoder_health(model: AcousticModel, feats: Sequence[np.ndarray], stats: FeatureStats) -> dict[str, Any]:
    """Health numbers (module docstring) of ``model`` on raw fbank arrays ``feats`` (full context)."""
    model.eval()
    x, lens = collate(feats, stats)
    enc = model.encoder
    h = enc.subsampling(x)
    b, t, _ = h.shape
    out_lens = output_frames(lens).clamp(min=1, max=t)
    valid = torch.arange(t)[None, :] < out_lens[:, None]
    mask = chunk_attention_mask(t, -1, -1)[None] & valid[:, None, :]
    mask = (mask | torch.eye(t, dtype=torch.bool)[None])[:, None]
    positions = torch.arange(t)[None].expand(b, t)
    time_std = [_time_std(h, out_lens)]
    att_std = []
    for layer in enc.layers:
        a = h + 0.5 * layer.ff1(h)
        q, k, v = layer.att.project(layer.norm_att(a), positions)
        att_std.append(_time_std(layer.att.attend(q, k, v, mask), out_lens))
        h, _, _ = layer(h, positions, mask)
        time_std.append(_time_std(h, out_lens))
    log_probs = model.ctc_head(h)
    blank = model.config.blank_id
    probs, nonblank, frames = [], 0, 0
    for i, n in enumerate(out_lens.tolist()):
        lp = log_probs[i, :n]
        probs.append(float(lp[:, blank].exp().mean()))
        nonblank += int((lp.argmax(-1) != blank).sum())
        frames += n
    return {
        "utterances": b,
        "time_std": time_std,
        "attention_time_std": att_std,
        "blank_prob": round(float(np.mean(probs)), 4),
        "nonblank_frames": round(nonblank / max(1, frames), 4),
    }
