"""Conformer acoustic model with CTC and stateless-transducer heads, one set of weights for
full-context and chunked streaming decoding (dynamic chunk training, as in WeNet).

Shapes and units (``B`` batch, ``T`` input feature frames at 10 ms, ``T'`` encoder frames at 40 ms,
``D`` = ``d_model``, ``V`` = vocabulary, ``L`` layers, ``H`` heads, ``Dh`` = D/H, ``K`` conv kernel):

* ``Encoder.forward(feats (B,T,F), feat_lens (B,), chunk_size=-1, left_chunks=-1)
  -> (enc (B,T',D), enc_lens (B,))`` with ``T' = ((T-1)//2 - 1)//2``. ``chunk_size`` is in encoder
  frames (-1 = full context); ``left_chunks`` limits the left context to that many chunks (-1 =
  unlimited). Frame ``i`` attends to frames ``j`` with ``j//c <= i//c`` and, when limited,
  ``j//c >= i//c - left_chunks``: the whole current chunk plus the limited left context.
* ``Encoder.forward_chunk(feats_chunk (B, 4c+3, F), caches) -> (enc (B,c,D), new_caches)`` streams.
  Each call needs ``4c + 3`` feature frames (``input_frames(c)``); the next call starts ``4c``
  frames later, i.e. consecutive chunks overlap by ``SUBSAMPLING_RIGHT_CONTEXT = 3`` frames (the
  subsampling's receptive field is 7 frames with stride 4). The lookahead is therefore
  ``4c + 3`` frames (for c=8: 35 frames = 350 ms of features) on top of the fbank window. A final
  shorter chunk (>= 7 frames) is allowed. Concatenated outputs equal ``forward(..., chunk_size=c,
  left_chunks=l)`` (to float rounding) when the caches come from ``init_caches(B, c, l)``.
* ``EncoderCache`` (a NamedTuple of tensors, fixed shapes, so ONNX can carry it):
  ``att`` (L, B, H, W, 2*Dh): rotary-rotated keys and values of the last ``W = c*l`` encoder frames
  per layer; ``conv`` (L, B, D, K-1): the last K-1 inputs of each causal depthwise conv;
  ``offset`` (B,) int64: encoder frames emitted so far (slots of ``att`` before frame 0 are masked).
  Streaming needs a finite ``left_chunks`` (>= 0).
* ``CtcHead(enc (...,D)) -> log_probs (...,V)``.
* ``Decoder(y (B, context_size) int64) -> (B, Dd)``: stateless prediction network (embedding +
  depthwise conv over the last ``context_size`` tokens; blank id as left padding).
  ``Decoder.forward_sequence(targets (B,U)) -> (B, U+1, Dd)`` for training (blanks prepended).
* ``Joiner(enc (...,D), dec (...,Dd)) -> logits (...,V)`` = ``out(tanh(enc_proj(enc) + dec_proj(dec)))``.
* ``AcousticModel.losses(feats, feat_lens, targets, target_lens, chunk_size, left_chunks)
  -> {"ctc", "transducer", "total"}``; each loss is summed over the batch and divided by the number
  of target tokens (nats per token).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from userlibri.asr.config import SUBSAMPLING_FACTOR, SUBSAMPLING_RIGHT_CONTEXT, AMConfig
from userlibri.asr.rnnt_loss import rnnt_loss
from userlibri.errors import UserLibriError

__all__ = [
    "AcousticModel",
    "CtcHead",
    "Decoder",
    "Encoder",
    "EncoderCache",
    "Joiner",
    "chunk_attention_mask",
    "count_parameters",
    "ctc_greedy",
    "input_frames",
    "output_frames",
    "pad_targets",
    "sample_chunk",
    "streaming_forward",
    "transducer_greedy",
]


def output_frames(num_frames: Tensor | int) -> Tensor | int:
    """Encoder frames for ``num_frames`` input frames: ``((T-1)//2 - 1)//2`` (0 when T < 7)."""
    if isinstance(num_frames, Tensor):
        return (((num_frames - 1) // 2 - 1) // 2).clamp(min=0)
    return max(0, ((num_frames - 1) // 2 - 1) // 2)


def input_frames(chunk_size: int) -> int:
    """Feature frames ``forward_chunk`` needs for ``chunk_size`` encoder frames: ``4c + 3``."""
    return SUBSAMPLING_FACTOR * chunk_size + SUBSAMPLING_RIGHT_CONTEXT


def chunk_attention_mask(
    num_frames: int, chunk_size: int, left_chunks: int, device: torch.device | None = None
) -> Tensor:
    """(T', T') bool, True where query ``i`` may attend key ``j`` (see the module docstring)."""
    idx = torch.arange(num_frames, device=device)
    if chunk_size <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    qc, kc = (idx // chunk_size)[:, None], (idx // chunk_size)[None, :]
    mask = kc <= qc
    if left_chunks >= 0:
        mask &= kc >= qc - left_chunks
    return mask


def sample_chunk(config: AMConfig, rng: random.Random) -> tuple[int, int]:
    """Dynamic chunk training: ``(chunk_size, left_chunks)`` for one batch (-1 = full/unlimited)."""
    if not config.dynamic_chunk or rng.random() < config.full_context_prob:
        return -1, -1
    chunk = rng.randint(1, config.max_chunk)
    left = -1 if config.max_left_chunks < 0 else rng.randint(0, config.max_left_chunks)
    return chunk, left


class EncoderCache(NamedTuple):
    """Streaming state of the encoder (shapes in the module docstring)."""

    att: Tensor
    conv: Tensor
    offset: Tensor


class Conv2dSubsampling(nn.Module):
    """x4 subsampling: two 3x3 stride-2 convs (no padding), Linear to D, then LayerNorm.

    The LayerNorm matters: without it the projection's output is tiny next to everything else
    and CTC training sits on the blank plateau (shared/NOTES.md).
    """

    def __init__(self, feat_dim: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
        )
        freq = ((feat_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, F) -> (B, T', D)."""
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.norm(self.out(x.transpose(1, 2).reshape(b, t, c * f)))


def _rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (first half, second half) of the last dim; x (B,H,T,Dh), cos/sin (B,1,T,Dh/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class RotaryAttention(nn.Module):
    """Multi-head self-attention with rotary positions (keys cached already rotated)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.h, self.dh = num_heads, d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, self.dh, 2, dtype=torch.float32) / self.dh))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions (B, T) int64 -> cos, sin (B, 1, T, Dh/2)."""
        ang = positions.to(torch.float32)[:, None, :, None] * self.inv_freq
        return ang.cos(), ang.sin()

    def project(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B,T,D) -> rotated q, rotated k, v, each (B,H,T,Dh)."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        cos, sin = self._angles(positions)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        return _rotary(q, cos, sin), _rotary(k, cos, sin), v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """q (B,H,Tq,Dh), k/v (B,H,Tk,Dh), mask bool broadcastable to (B,H,Tq,Tk) -> (B,Tq,D)."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B,H,Tq,Dh)
        b, h, t, dh = out.shape
        return self.out(out.transpose(1, 2).reshape(b, t, h * dh))


class Dropout(nn.Dropout):
    """``nn.Dropout`` that costs nothing at p = 0 (dropout is ramped in from 0 during training)."""

    def forward(self, x: Tensor) -> Tensor:
        return x if self.p == 0.0 or not self.training else super().forward(x)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ff_dim),
            nn.SiLU(),
            Dropout(dropout),
            nn.Linear(ff_dim, d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Pointwise conv + GLU, CAUSAL depthwise conv, LayerNorm (not BatchNorm: per-frame, so
    streaming is exact), SiLU, pointwise conv."""

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm_in = nn.LayerNorm(d_model)
        self.pw1 = nn.Linear(d_model, 2 * d_model)
        self.dw = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pw2 = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B,T,D), cache (B,D,K-1) of previous conv inputs (zeros = start) -> (y, new cache)."""
        y = F.glu(self.pw1(self.norm_in(x)), dim=-1).transpose(1, 2)  # (B, D, T)
        if cache is None:
            cache = y.new_zeros(y.shape[0], y.shape[1], self.kernel - 1)
        y = torch.cat([cache, y], dim=2)
        new_cache = y[:, :, y.shape[2] - (self.kernel - 1) :]
        y = self.dw(y).transpose(1, 2)
        return self.pw2(F.silu(self.norm(y))), new_cache


class ConformerLayer(nn.Module):
    """Macaron FFN, rotary MHSA, causal conv module, FFN, final LayerNorm."""

    def __init__(self, config: AMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ff1 = FeedForward(d, config.ff_dim, config.dropout)
        self.norm_att = nn.LayerNorm(d)
        self.att = RotaryAttention(d, config.num_heads)
        self.conv = ConvModule(d, config.conv_kernel)
        self.ff2 = FeedForward(d, config.ff_dim, config.dropout)
        self.norm_out = nn.LayerNorm(d)
        self.drop = Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        mask: Tensor,
        att_cache: Tensor | None = None,
        conv_cache: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B,T,D); positions (B,T); mask (B,1,T,W+T) bool; att_cache (B,H,W,2Dh) or None (W=0).

        Returns (y (B,T,D), new k|v for this call's keys (B,H,W+T,2Dh), new conv cache)."""
        x = x + 0.5 * self.drop(self.ff1(x))
        q, k, v = self.att.project(self.norm_att(x), positions)
        kv = torch.cat([k, v], dim=-1)
        if att_cache is not None:
            kv = torch.cat([att_cache, kv], dim=2)
        k, v = kv.chunk(2, dim=-1)
        x = x + self.drop(self.att.attend(q, k, v, mask))
        c, new_conv = self.conv(x, conv_cache)
        x = x + self.drop(c)
        x = x + 0.5 * self.drop(self.ff2(x))
        return self.norm_out(x), kv, new_conv


class Encoder(nn.Module):
    """Subsampling + Conformer layers; full/chunk-masked forward and cached streaming."""

    def __init__(self, config: AMConfig) -> None:
        super().__init__()
        self.config = config
        self.subsampling = Conv2dSubsampling(config.feat_dim, config.subsampling_channels, config.d_model)
        self.layers = nn.ModuleList(ConformerLayer(config) for _ in range(config.num_layers))

    def forward(
        self, feats: Tensor, feat_lens: Tensor, chunk_size: int = -1, left_chunks: int = -1
    ) -> tuple[Tensor, Tensor]:
        """feats (B,T,F) float, feat_lens (B,) -> enc (B,T',D), enc_lens (B,) (module docstring)."""
        if feats.dim() != 3 or feats.shape[2] != self.config.feat_dim:
            raise UserLibriError(
                f"Encoder: expected features (B, T, {self.config.feat_dim}), found {tuple(feats.shape)}"
            )
        if feats.shape[1] < input_frames(1):
            raise UserLibriError(
                f"Encoder: expected >= {input_frames(1)} feature frames, found {feats.shape[1]}"
            )
        x = self.subsampling(feats)
        b, t, _ = x.shape
        enc_lens = output_frames(feat_lens.to(torch.long)).clamp(max=t)
        valid = torch.arange(t, device=x.device)[None, :] < enc_lens[:, None]  # (B, T')
        mask = chunk_attention_mask(t, chunk_size, left_chunks, x.device)[None] & valid[:, None, :]
        # Every query may see itself, so padded queries with no valid key do not produce NaN.
        mask = (mask | torch.eye(t, dtype=torch.bool, device=x.device)[None])[:, None]  # (B,1,T',T')
        positions = torch.arange(t, device=x.device)[None].expand(b, t)
        for layer in self.layers:
            x, _, _ = layer(x, positions, mask)
        return x, enc_lens

    def init_caches(
        self,
        batch: int,
        chunk_size: int,
        left_chunks: int,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> EncoderCache:
        """Zero caches for streaming with ``chunk_size`` encoder frames and ``left_chunks`` (>= 0)."""
        if chunk_size < 1 or left_chunks < 0:
            raise UserLibriError(
                f"init_caches: expected chunk_size >= 1 and left_chunks >= 0 for streaming, found "
                f"{chunk_size} and {left_chunks}"
            )
        c = self.config
        att = torch.zeros(
            c.num_layers,
            batch,
            c.num_heads,
            chunk_size * left_chunks,
            2 * c.head_dim,
            device=device,
            dtype=dtype,
        )
        conv = torch.zeros(c.num_layers, batch, c.d_model, c.conv_kernel - 1, device=device, dtype=dtype)
        return EncoderCache(att, conv, torch.zeros(batch, dtype=torch.long, device=device))

    def forward_chunk(self, feats_chunk: Tensor, caches: EncoderCache) -> tuple[Tensor, EncoderCache]:
        """One streaming step: feats_chunk (B, 4c+3, F) -> enc (B, c, D), updated caches.

        The attention window W (cache length) is fixed by ``init_caches``; slots holding frames
        before the start of the stream (position < 0) are masked out.
        """
        if feats_chunk.dim() != 3 or feats_chunk.shape[2] != self.config.feat_dim:
            raise UserLibriError(
                f"forward_chunk: expected features (B, T, {self.config.feat_dim}), "
                f"found {tuple(feats_chunk.shape)}"
            )
        if feats_chunk.shape[1] < input_frames(1):
            raise UserLibriError(
                f"forward_chunk: expected >= {input_frames(1)} feature frames, found {feats_chunk.shape[1]}"
            )
        att_cache, conv_cache, offset = caches
        x = self.subsampling(feats_chunk)
        b, t, _ = x.shape
        w = att_cache.shape[3]
        positions = offset[:, None] + torch.arange(t, device=x.device)[None]  # (B, t)
        slot_pos = offset[:, None] - w + torch.arange(w, device=x.device)[None]  # (B, W)
        key_valid = torch.cat([slot_pos >= 0, torch.ones(b, t, dtype=torch.bool, device=x.device)], 1)
        mask = key_valid[:, None, None, :]  # (B,1,1,W+t)
        new_att, new_conv = [], []
        for i, layer in enumerate(self.layers):
            x, kv, conv = layer(x, positions, mask, att_cache[i], conv_cache[i])
            new_att.append(kv[:, :, kv.shape[2] - w :])
            new_conv.append(conv)
        return x, EncoderCache(torch.stack(new_att), torch.stack(new_conv), offset + t)


@torch.no_grad()
def streaming_forward(encoder: Encoder, feats: Tensor, chunk_size: int, left_chunks: int) -> Tensor:
    """Run ``feats`` (B, T, F) through ``forward_chunk`` chunk by chunk (windows of ``4c+3`` frames
    advancing by ``4c``; a shorter last window of >= 7 frames) -> (B, T', D). Equals
    ``encoder(feats, lens, chunk_size, left_chunks)[0]`` for unpadded input (the reference loop
    for exported streaming encoders)."""
    caches = encoder.init_caches(feats.shape[0], chunk_size, left_chunks, feats.device, feats.dtype)
    outs, start, step = [], 0, SUBSAMPLING_FACTOR * chunk_size
    while feats.shape[1] - start >= input_frames(1):
        out, caches = encoder.forward_chunk(feats[:, start : start + input_frames(chunk_size)], caches)
        outs.append(out)
        start += step
    if not outs:
        return feats.new_zeros(feats.shape[0], 0, encoder.config.d_model)
    return torch.cat(outs, dim=1)


class CtcHead(nn.Module):
    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, enc: Tensor) -> Tensor:
        """enc (..., D) -> log-probs (..., V)."""
        return self.proj(enc).log_softmax(dim=-1)


class Decoder(nn.Module):
    """Stateless prediction network (icefall's): embedding + depthwise conv over the context, ReLU."""

    def __init__(self, vocab_size: int, decoder_dim: int, context_size: int, blank_id: int) -> None:
        super().__init__()
        self.context_size, self.blank_id = context_size, blank_id
        self.embedding = nn.Embedding(vocab_size, decoder_dim, padding_idx=blank_id)
        self.conv = (
            nn.Conv1d(decoder_dim, decoder_dim, context_size, groups=decoder_dim, bias=False)
            if context_size > 1
            else None
        )

    def _run(self, y: Tensor) -> Tensor:
        """y (B, S) -> (B, S - context_size + 1, Dd)."""
        e = self.embedding(y.clamp(min=0))
        if self.conv is not None:
            e = self.conv(e.transpose(1, 2)).transpose(1, 2)
        return F.relu(e)

    def forward(self, y: Tensor) -> Tensor:
        """y (B, context_size) int64, the last tokens (blank-padded on the left) -> (B, Dd)."""
        if y.dim() != 2 or y.shape[1] != self.context_size:
            raise UserLibriError(
                f"Decoder: expected (B, {self.context_size}) token ids, found {tuple(y.shape)}"
            )
        return self._run(y)[:, 0]

    def forward_sequence(self, targets: Tensor) -> Tensor:
        """targets (B, U) -> (B, U+1, Dd): output ``u`` has seen ``targets[:, :u]`` (blank-padded)."""
        pad = targets.new_full((targets.shape[0], self.context_size), self.blank_id)
        return self._run(torch.cat([pad, targets], dim=1))


class Joiner(nn.Module):
    def __init__(self, d_model: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(d_model, joiner_dim)
        self.dec_proj = nn.Linear(decoder_dim, joiner_dim)
        self.out = nn.Linear(joiner_dim, vocab_size)

    def forward(self, enc: Tensor, dec: Tensor) -> Tensor:
        """enc (..., D), dec (..., Dd), broadcastable -> logits (..., V)."""
        return self.out(torch.tanh(self.enc_proj(enc) + self.dec_proj(dec)))


def pad_targets(
    targets: Sequence[Sequence[int]] | Tensor, target_lens: Tensor | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Token lists, or a padded (B, U) tensor with lengths, -> (B, U) int64 (padding 0), lengths."""
    if isinstance(targets, Tensor):
        if target_lens is None:
            raise UserLibriError("pad_targets: a padded targets tensor needs target_lens")
        return targets.to(device=device, dtype=torch.long), target_lens.to(device=device, dtype=torch.long)
    lens = torch.tensor([len(t) for t in targets], dtype=torch.long)
    out = torch.zeros(len(targets), max(1, int(lens.max()) if len(targets) else 1), dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(list(t), dtype=torch.long)
    return out.to(device), lens.to(device)


class AcousticModel(nn.Module):
    """Encoder + CTC head + stateless transducer (decoder, joiner). ``config`` is an ``AMConfig``."""

    def __init__(self, config: AMConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)
        self.ctc_head = CtcHead(config.d_model, config.vocab_size)
        self.decoder = Decoder(config.vocab_size, config.decoder_dim, config.context_size, config.blank_id)
        self.joiner = Joiner(config.d_model, config.decoder_dim, config.joiner_dim, config.vocab_size)

    def forward(
        self, feats: Tensor, feat_lens: Tensor, chunk_size: int = -1, left_chunks: int = -1
    ) -> tuple[Tensor, Tensor]:
        """The encoder's forward (enc (B,T',D), enc_lens (B,))."""
        return self.encoder(feats, feat_lens, chunk_size, left_chunks)

    def losses(
        self,
        feats: Tensor,
        feat_lens: Tensor,
        targets: Sequence[Sequence[int]] | Tensor,
        target_lens: Tensor | None = None,
        chunk_size: int = -1,
        left_chunks: int = -1,
        weights: tuple[float, float] | None = None,
    ) -> dict[str, Tensor]:
        """CTC and transducer losses in nats per target token, and their weighted sum ``total``
        (``weights``: (ctc, transducer), default the config's; a zero weight skips that loss)."""
        cfg = self.config
        ctc_weight, transducer_weight = weights or (cfg.ctc_weight, cfg.transducer_weight)
        enc, enc_lens = self.encoder(feats, feat_lens, chunk_size, left_chunks)
        ys, ys_lens = pad_targets(targets, target_lens, enc.device)
        ntok = ys_lens.sum().clamp(min=1).to(torch.float32)
        out: dict[str, Tensor] = {}
        zero = enc.new_zeros((), dtype=torch.float32)
        if ctc_weight > 0:
            log_probs = self.ctc_head(enc).float()
            ctc = F.ctc_loss(
                log_probs.transpose(0, 1),
                ys,
                enc_lens,
                ys_lens,
                blank=cfg.blank_id,
                reduction="sum",
                zero_infinity=True,
            )
            out["ctc"] = ctc / ntok
        else:
            out["ctc"] = zero
        if transducer_weight > 0:
            dec = self.decoder.forward_sequence(ys)  # (B, U+1, Dd)
            logits = self.joiner(enc[:, :, None, :], dec[:, None, :, :])  # (B, T', U+1, V)
            rnnt = rnnt_loss(
                logits.float(),
                ys.to(torch.int32),
                enc_lens.clamp(min=1).to(torch.int32),
                ys_lens.to(torch.int32),
                blank=cfg.blank_id,
                reduction="none",
                topology=cfg.transducer_topology,  # type: ignore[arg-type]
            )
            # An utterance with no alignment (more tokens than frames) is left out, as CTC's
            # zero_infinity does.
            out["transducer"] = torch.where(torch.isfinite(rnnt), rnnt, 0.0).sum() / ntok
        else:
            out["transducer"] = zero
        out["total"] = ctc_weight * out["ctc"] + transducer_weight * out["transducer"]
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def ctc_greedy(log_probs: Tensor, lens: Tensor, blank_id: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, collapse repeats, drop blanks. log_probs (B,T',V)."""
    best = log_probs.argmax(dim=-1).cpu()
    hyps = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lens[b])].tolist()
        hyps.append([t for i, t in enumerate(seq) if t != blank_id and (i == 0 or t != seq[i - 1])])
    return hyps


@torch.no_grad()
def transducer_greedy(
    model: AcousticModel, enc: Tensor, lens: Tensor, max_symbols_per_frame: int = 3
) -> list[list[int]]:
    """Greedy transducer search (per frame up to ``max_symbols_per_frame`` tokens), batched."""
    cfg = model.config
    b = enc.shape[0]
    hyps: list[list[int]] = [[] for _ in range(b)]
    context = torch.full((b, cfg.context_size), cfg.blank_id, dtype=torch.long, device=enc.device)
    dec = model.decoder(context)
    for t in range(enc.shape[1]):
        active = (t < lens).to(enc.device)
        for _ in range(max_symbols_per_frame):
            tok = model.joiner(enc[:, t], dec).argmax(dim=-1)
            emit = active & (tok != cfg.blank_id)
            if not bool(emit.any()):
                break
            for i in emit.nonzero()[:, 0].tolist():
                hyps[i].append(int(tok[i]))
            new_context = torch.cat([context[:, 1:], tok[:, None]], dim=1)
            context = torch.where(emit[:, None], new_context, context)
            dec = torch.where(emit[:, None], model.decoder(context), dec)
            active = emit
    return hyps
