"""Export a trained acoustic model to the ONNX model directory that ``userlibri.asr.onnx_model`` runs.

Graphs (names and shapes in ``onnx_model``'s docstring), all exported with the dynamo exporter
(``dynamo=True``, one file each, no external data), opset 18:

* ``encoder``: full-context encoder, dynamic batch and time; outputs the joiner-projected encoder
  output, its lengths and the CTC log-probs (the CTC head is folded in: one session call per chunk).
* ``encoder-streaming``: ``Encoder.forward_chunk`` with its ``EncoderCache`` as explicit inputs and
  ``new_*`` outputs; dynamic batch, and time from ``input_frames(1)`` (a short last chunk) to
  ``input_frames(chunk_size)``; the attention window is ``chunk_size * left_chunks`` frames.
* ``decoder``: the stateless prediction network followed by the joiner's decoder projection.
* ``joiner``: ``log_softmax(out(tanh(enc + dec)))`` on already projected inputs, so a beam search
  computes each projection once per frame / per hypothesis, not once per joiner call.

The global CMVN statistics the model was trained with are folded into both encoders, so the
runtime feeds raw fbank. Every file carries ``ModelMeta.to_metadata``. Then ``quant_pre_process`` +
``quantize_dynamic`` (int8 weights of MatMul; int8 ConvInteger has no CPU kernel) writes
``*.int8.onnx`` and ``convert_onnx_models_to_ort`` the ``.ort`` files of both. The directory is
built beside ``out_dir`` and renamed onto it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from userlibri import __version__
from userlibri.asr import onnx_model as om
from userlibri.asr.config import SUBSAMPLING_FACTOR
from userlibri.asr.from_onnx import add_module_scopes, module_scopes
from userlibri.asr.model import AcousticModel, EncoderCache, count_parameters, input_frames
from userlibri.errors import ConfigError, ExternalToolError, UserLibriError
from userlibri.features import FeatureConfig, FeatureStats
from userlibri.fsio import atomic_path, write_json_atomic
from userlibri.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

OPSET = 18
CACHE_NAMES = ("att_cache", "conv_cache", "offset")
#: Ops whose weights ``quantize_dynamic`` makes int8 (icefall/sherpa-onnx quantize MatMul only).
INT8_OP_TYPES = ("MatMul",)
#: Libraries that log every optimisation pass at INFO level during an export.
_NOISY_LOGGERS = ("onnx_ir", "onnxscript", "onnxruntime", "torch.onnx", "torch.export", "torch._dynamo")


# ----------------------------------------------------------------------------- graphs


class _Cmvn(nn.Module):
    """``(x - mean) / std`` with the training statistics (identity when there are none)."""

    def __init__(self, stats: FeatureStats | None, dim: int) -> None:
        super().__init__()
        mean = torch.zeros(dim) if stats is None else torch.from_numpy(stats.mean.copy())
        inv = torch.ones(dim) if stats is None else torch.from_numpy(1.0 / stats.std)
        self.enabled = stats is not None
        self.register_buffer("mean", mean.float())
        self.register_buffer("inv_std", inv.float())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.inv_std if self.enabled else x


class OfflineEncoder(nn.Module):
    """x (N,T,F), x_lens (N,) -> encoder_out (N,T',J), encoder_out_lens (N,), ctc_log_probs (N,T',V)."""

    def __init__(self, model: AcousticModel, stats: FeatureStats | None) -> None:
        super().__init__()
        self.model = model
        self.cmvn = _Cmvn(stats, model.config.feat_dim)

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        enc, lens = self.model.encoder(self.cmvn(x), x_lens)
        return self.model.joiner.enc_proj(enc), lens, self.model.ctc_head(enc)


class StreamingEncoder(nn.Module):
    """x (N,t,F) with 7 <= t <= 4c+3, att_cache, conv_cache, offset -> encoder_out (N,t',J),
    ctc_log_probs (N,t',V), new_att_cache, new_conv_cache, new_offset (``EncoderCache`` shapes)."""

    def __init__(self, model: AcousticModel, stats: FeatureStats | None) -> None:
        super().__init__()
        self.model = model
        self.cmvn = _Cmvn(stats, model.config.feat_dim)

    def forward(
        self, x: Tensor, att_cache: Tensor, conv_cache: Tensor, offset: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        enc, cache = self.model.encoder.forward_chunk(
            self.cmvn(x), EncoderCache(att_cache, conv_cache, offset)
        )
        return (
            self.model.joiner.enc_proj(enc),
            self.model.ctc_head(enc),
            cache.att,
            cache.conv,
            cache.offset,
        )


class ProjectedDecoder(nn.Module):
    """y (N, context) int64 -> decoder_out (N, J) = dec_proj(decoder(y))."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: Tensor) -> Tensor:
        return self.model.joiner.dec_proj(self.model.decoder(y))


class ProjectedJoiner(nn.Module):
    """encoder_out (N, J), decoder_out (N, J) -> logprobs (N, V) (natural log)."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.model.joiner.out(torch.tanh(encoder_out + decoder_out)).log_softmax(dim=-1)


# ----------------------------------------------------------------------------- helpers


def cache_specs(model: AcousticModel, chunk_size: int, left_chunks: int) -> tuple[om.CacheSpec, ...]:
    """The streaming caches for one stream, with the batch axis found by comparing batch 1 and 2."""
    one = model.encoder.init_caches(1, chunk_size, left_chunks)
    two = model.encoder.init_caches(2, chunk_size, left_chunks)
    specs = []
    for name, a, b in zip(CACHE_NAMES, one, two, strict=True):
        axes = [i for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=True)) if x != y]
        if len(axes) != 1:
            raise UserLibriError(
                f"cache {name}: expected exactly one batch axis, found shapes {a.shape}/{b.shape}"
            )
        dtype = str(a.dtype).replace("torch.", "")
        specs.append(om.CacheSpec(name, tuple(a.shape), axes[0], dtype))
    return tuple(specs)


def weights_id(model: nn.Module) -> str:
    """sha256 (hex, 16 chars) of the state dict's tensors, in key order: which weights were exported."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def set_metadata(path: Path, meta: Mapping[str, str]) -> None:
    """Replace the ``metadata_props`` of an ONNX file."""
    import onnx

    model = onnx.load(str(path))
    _replace_metadata(model, meta)
    onnx.save(model, str(path))


def _replace_metadata(model: Any, meta: Mapping[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in sorted(meta.items()):
        model.metadata_props.add(key=key, value=value)


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """The dynamo exporter prints progress lines and warns a lot; keep them out of the user's way."""
    buf = io.StringIO()
    # The quantizer logs through the root logger.
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS] + [logging.getLogger()]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic_shapes: tuple[dict[int, Any], ...],
) -> None:
    with _quiet() as buf, torch.no_grad():
        try:
            torch.onnx.export(
                module.eval(),
                args,
                str(path),
                dynamo=True,
                external_data=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=dynamic_shapes,
                opset_version=OPSET,
                verbose=False,
            )
        except Exception as e:  # the exporter raises many types; name what failed
            raise ExternalToolError(f"torch.onnx.export of {path.name} failed: {e}") from e
    log.debug("export %s: %s", path.name, buf.getvalue()[-2000:])


def quantize_int8(float_path: Path, out_path: Path, work_dir: Path) -> None:
    """``quant_pre_process`` then dynamic int8 quantization of the MatMul weights; keeps the metadata
    (``precision`` becomes ``int8``) and the module scope of every node that reads a weight."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_model = onnx.load(str(float_path))
    meta = {p.key: p.value for p in float_model.metadata_props}
    meta["precision"] = "int8"
    scopes = module_scopes(float_model)
    del float_model
    prep = work_dir / (float_path.stem + ".prep.onnx")
    with _quiet():
        try:
            quant_pre_process(str(float_path), str(prep), auto_merge=True)
        except Exception as e:  # symbolic shape inference gives up on some subsampling arithmetic
            log.debug("%s: symbolic shape inference failed (%s); onnx shape inference only", float_path, e)
            _remove_debug_dump()
            quant_pre_process(str(float_path), str(prep), skip_symbolic_shape=True)
        quantize_dynamic(
            str(prep), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OP_TYPES)
        )
    prep.unlink()
    model = onnx.load(str(out_path))
    add_module_scopes(model, scopes)
    _replace_metadata(model, meta)
    onnx.save(model, str(out_path))


def _remove_debug_dump() -> None:
    """A failed symbolic shape inference saves its partial model into the working directory."""
    dump = Path("sym_shape_infer_temp.onnx")
    if dump.is_file():
        import onnx

        external = {
            t.external_data[i].value
            for t in onnx.load(str(dump), load_external_data=False).graph.initializer
            for i in range(len(t.external_data))
            if t.external_data[i].key == "location"
        }
        for name in external:
            Path(name).unlink(missing_ok=True)
        dump.unlink()


def convert_to_ort(model_dir: Path) -> None:
    """Write ``X.ort`` beside every ``X.onnx`` in ``model_dir`` (fixed optimisations, this CPU)."""
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime.tools.convert_onnx_models_to_ort",
        str(model_dir),
        "--optimization_style",
        "Fixed",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExternalToolError(
            f"{' '.join(cmd[1:3])} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    for extra in model_dir.glob("*.config"):  # operator lists for minimal builds; not part of the model
        extra.unlink()


def _load(checkpoint_or_model: str | Path | AcousticModel) -> tuple[AcousticModel, dict[str, Any]]:
    """A model and what its file says (``train.load_model``'s metadata) or defaults for a bare model."""
    if isinstance(checkpoint_or_model, AcousticModel):
        return checkpoint_or_model, {}
    from userlibri.asr.train import load_model

    return load_model(checkpoint_or_model)


def default_tokenizer_dir(checkpoint: str | Path) -> Path:
    """Where ``asr train`` put the tokenizer of a checkpoint: ``<exp>/tokenizer`` for
    ``<exp>/model-avg.pt`` and ``<exp>/checkpoints/ckpt-N.pt``."""
    path = Path(checkpoint).resolve()
    exp = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return exp / "tokenizer"


# ----------------------------------------------------------------------------- the export


def export_model(
    checkpoint_or_model: str | Path | AcousticModel,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    chunk_size: int | None = None,
    left_chunks: int | None = None,
    *,
    features: FeatureConfig | None = None,
    stats: FeatureStats | None = None,
    int8: bool = True,
    ort: bool = True,
    model_version: str | None = None,
    training_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model directory ``out_dir`` (atomically); return the ``model.json`` summary.

    ``checkpoint_or_model`` is a file from ``asr train`` (its feature config, CMVN statistics and
    step are used) or an ``AcousticModel`` (then ``features`` / ``stats`` say what it expects).
    ``chunk_size`` (encoder frames) and ``left_chunks`` default to the model config's
    ``decode_chunk`` / ``decode_left_chunks``.
    """
    t_start = time.monotonic()
    model, info = _load(checkpoint_or_model)
    model = model.eval()
    cfg = model.config
    chunk = cfg.decode_chunk if chunk_size is None else chunk_size
    left = cfg.decode_left_chunks if left_chunks is None else left_chunks
    if chunk < 1 or left < 0:
        raise ConfigError(
            f"export: expected chunk_size >= 1 and left_chunks >= 0 (streaming needs a finite left "
            f"context), found {chunk} and {left}"
        )
    features = features or info.get("feature_config") or FeatureConfig(num_mel_bins=cfg.feat_dim)
    stats = stats if stats is not None else info.get("feature_stats")
    features.validate()
    if features.num_mel_bins != cfg.feat_dim:
        raise ConfigError(
            f"export: the model expects {cfg.feat_dim} features a frame, the feature config gives "
            f"{features.num_mel_bins} mel bins"
        )
    if stats is not None and stats.dim != cfg.feat_dim:
        raise ConfigError(f"export: CMVN stats have dim {stats.dim}, the model expects {cfg.feat_dim}")
    tokenizer = Tokenizer.load(tokenizer_dir)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ConfigError(
            f"export: the model has {cfg.vocab_size} output ids but {tokenizer.path} has "
            f"{tokenizer.vocab_size} pieces"
        )
    trained_with = info.get("tokenizer_model_id")
    if trained_with and trained_with != tokenizer.model_id:
        raise ConfigError(
            f"export: the checkpoint was trained with tokenizer id {trained_with[:16]}..., but "
            f"{tokenizer.path} has id {tokenizer.model_id[:16]}..."
        )
    if tokenizer.blank_id != cfg.blank_id:
        raise ConfigError(f"export: model blank id {cfg.blank_id}, tokenizer blank id {tokenizer.blank_id}")
    wid = weights_id(model)
    version = model_version or f"step{info.get('step', 0)}-{wid}"
    meta = om.ModelMeta(
        kind=om.KIND,
        vocab_size=cfg.vocab_size,
        blank_id=cfg.blank_id,
        context_size=cfg.context_size,
        subsampling=SUBSAMPLING_FACTOR,
        chunk_size=chunk,
        left_chunks=left,
        chunk_frames=input_frames(chunk),
        chunk_shift=SUBSAMPLING_FACTOR * chunk,
        feature_dim=cfg.feat_dim,
        joiner_dim=cfg.joiner_dim,
        caches=cache_specs(model, chunk, left),
        features=features,
        cmvn="folded" if stats is not None else "none",
        tokenizer_id=tokenizer.model_id,
        model_version=version,
        userlibri_version=__version__,
        precision="float",
    )
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        work = Path(str(tmp) + ".work")
        work.mkdir()
        try:
            _write_graphs(model, stats, meta, tmp, timings)
            if int8:
                t0 = time.monotonic()
                for role in om.ROLES:
                    quantize_int8(tmp / om.model_file(role, "float"), tmp / om.model_file(role, "int8"), work)
                timings["int8"] = time.monotonic() - t0
            if ort:
                t0 = time.monotonic()
                convert_to_ort(tmp)
                timings["ort"] = time.monotonic() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)
        shutil.copyfile(tokenizer.path, tmp / om.TOKENIZER_FILE)
        tokenizer.write_tokens_txt(tmp / om.TOKENS_FILE)
        timings["total"] = time.monotonic() - t_start
        summary = _summary(model, meta, info, training_info, tmp, timings, wid, stats)
        write_json_atomic(tmp / om.SUMMARY_FILE, summary)
    log.info(
        "exported %s in %.1f s: %s",
        out_dir,
        timings["total"],
        ", ".join(f"{p} {mb:.2f} MB" for p, mb in summary["size_mb"].items()),
    )
    return summary


def _write_graphs(
    model: AcousticModel, stats: FeatureStats | None, meta: om.ModelMeta, out: Path, timings: dict[str, float]
) -> None:
    """The four float graphs with their metadata."""
    cfg = model.config
    n = torch.export.Dim("N", min=1)
    g = torch.Generator().manual_seed(0)
    t0 = time.monotonic()
    feats = torch.randn(2, 4 * 8 * 3 + 7, cfg.feat_dim, generator=g)
    lens = torch.tensor([feats.shape[1], feats.shape[1] - 20])
    t = torch.export.Dim("T", min=input_frames(1))
    path = out / om.model_file(om.ENCODER, "float")
    _export(
        OfflineEncoder(model, stats),
        (feats, lens),
        path,
        [om.X, om.X_LENS],
        [om.ENCODER_OUT, om.ENCODER_OUT_LENS, om.CTC_LOG_PROBS],
        ({0: n, 1: t}, {0: n}),
    )
    set_metadata(path, meta.to_metadata(om.ENCODER, "float"))
    timings["encoder"] = time.monotonic() - t0

    t0 = time.monotonic()
    caches = model.encoder.init_caches(2, meta.chunk_size, meta.left_chunks)
    chunk = torch.randn(2, meta.chunk_frames, cfg.feat_dim, generator=g)
    if meta.chunk_frames > input_frames(1):
        tc: Any = torch.export.Dim("T_chunk", min=input_frames(1), max=meta.chunk_frames)
        time_dim = {0: n, 1: tc}
    else:  # a chunk of one encoder frame cannot be shorter
        time_dim = {0: n}
    cache_dims = tuple({spec.batch_axis: n} for spec in meta.caches)
    path = out / om.model_file(om.STREAMING_ENCODER, "float")
    _export(
        StreamingEncoder(model, stats),
        (chunk, *caches),
        path,
        [om.X, *CACHE_NAMES],
        [om.ENCODER_OUT, om.CTC_LOG_PROBS, *(om.NEW_CACHE_PREFIX + c for c in CACHE_NAMES)],
        (time_dim, *cache_dims),
    )
    set_metadata(path, meta.to_metadata(om.STREAMING_ENCODER, "float"))
    timings["encoder-streaming"] = time.monotonic() - t0

    t0 = time.monotonic()
    y = torch.randint(0, cfg.vocab_size, (3, cfg.context_size), generator=g)
    path = out / om.model_file(om.DECODER, "float")
    _export(ProjectedDecoder(model), (y,), path, [om.Y], [om.DECODER_OUT], ({0: n},))
    set_metadata(path, meta.to_metadata(om.DECODER, "float"))
    enc = torch.randn(3, cfg.joiner_dim, generator=g)
    dec = torch.randn(3, cfg.joiner_dim, generator=g)
    path = out / om.model_file(om.JOINER, "float")
    _export(
        ProjectedJoiner(model),
        (enc, dec),
        path,
        [om.ENCODER_OUT, om.DECODER_OUT],
        [om.LOGPROBS],
        ({0: n}, {0: n}),
    )
    set_metadata(path, meta.to_metadata(om.JOINER, "float"))
    timings["decoder+joiner"] = time.monotonic() - t0


def _summary(
    model: AcousticModel,
    meta: om.ModelMeta,
    info: Mapping[str, Any],
    training_info: Mapping[str, Any] | None,
    out: Path,
    timings: Mapping[str, float],
    wid: str,
    stats: FeatureStats | None,
) -> dict[str, Any]:
    """``model.json``: what the directory holds and where it came from."""
    import onnx
    import onnxruntime

    files = sorted(p for p in out.iterdir() if p.is_file())
    sizes: dict[str, float] = {}
    for precision in om.PRECISION_SUFFIX:
        paths = [out / om.model_file(role, precision) for role in om.ROLES]
        if all(p.is_file() for p in paths):
            sizes[precision] = round(sum(p.stat().st_size for p in paths) / 1e6, 3)
    training = {
        k: v for k, v in info.items() if isinstance(v, (int, float, str)) and k != "tokenizer_model_id"
    }
    training.update(training_info or {})
    return {
        "kind": meta.kind,
        "model_version": meta.model_version,
        "weights_sha256_16": wid,
        "userlibri_version": __version__,
        "parameters": {
            "total": count_parameters(model),
            "encoder": count_parameters(model.encoder),
            "ctc_head": count_parameters(model.ctc_head),
            "decoder": count_parameters(model.decoder),
            "joiner": count_parameters(model.joiner),
        },
        "am_config": dataclasses.asdict(model.config),
        "features": meta.features.to_dict(),
        "cmvn": {"mode": meta.cmvn, **(stats.to_dict() if stats is not None else {})},
        "streaming": {
            "chunk_size": meta.chunk_size,
            "left_chunks": meta.left_chunks,
            "chunk_frames": meta.chunk_frames,
            "chunk_shift": meta.chunk_shift,
            "chunk_ms": meta.chunk_shift * meta.features.frame_shift_ms,
            "caches": [c.to_dict() for c in meta.caches],
        },
        "vocab_size": meta.vocab_size,
        "blank_id": meta.blank_id,
        "context_size": meta.context_size,
        "tokenizer_id": meta.tokenizer_id,
        "training": training,
        "files": {p.name: p.stat().st_size for p in files},
        "size_mb": sizes,
        "export": {
            "seconds": {k: round(v, 2) for k, v in timings.items()},
            "opset": OPSET,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
    }
