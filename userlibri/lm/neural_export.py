"""Export the LSTM LM as an ONNX *step* model (float and int8), self-described by metadata.

Graph (batched over N hypotheses):
    inputs   tokens (N,) int64, h (layers, N, hidden) float32, c (layers, N, hidden) float32
    outputs  logprobs (N, vocab) float32 (natural log), h_out, c_out (same shapes as h, c)
Metadata: kind ``lstm-lm``, vocab_size, tokenizer_id (sha256 of the sentencepiece .model),
sos_id/eos_id, hidden_dim, num_layers, embed_dim, precision, privacy (the report as JSON).
The zero state followed by the ``<sos/eos>`` token is the start of a sentence.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from userlibri.errors import ExternalToolError, UserLibriError
from userlibri.fsio import atomic_path
from userlibri.lm.neural import LstmLM
from userlibri.privacy.accounting import PrivacyReport

log = logging.getLogger(__name__)

KIND = "lstm-lm"
FLOAT_FILE = "lm.onnx"
INT8_FILE = "lm.int8.onnx"
INPUT_NAMES = ("tokens", "h", "c")
OUTPUT_NAMES = ("logprobs", "h_out", "c_out")
OPSET = 18


class StepModel(nn.Module):
    """One LM step for N hypotheses: ``(tokens (N,), h, c) -> (logprobs (N, V), h, c)``."""

    def __init__(self, lm: LstmLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(
        self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.lm.embed(tokens).unsqueeze(1)
        y, (h_out, c_out) = self.lm.lstm(x, (h, c))
        logits = self.lm.out(self.lm.proj(y[:, 0]))
        return torch.log_softmax(logits, dim=-1), h_out, c_out


def metadata(lm: LstmLM, report: PrivacyReport | None, precision: str) -> dict[str, str]:
    """The ONNX metadata_props written with the model."""
    cfg = lm.config
    return {
        "kind": KIND,
        "version": "1",
        "vocab_size": str(cfg.vocab_size),
        "tokenizer_id": cfg.tokenizer_id,
        "sos_id": str(cfg.sos_eos_id),
        "eos_id": str(cfg.sos_eos_id),
        "embed_dim": str(cfg.embed_dim),
        "hidden_dim": str(cfg.hidden_dim),
        "num_layers": str(cfg.num_layers),
        "precision": precision,
        "privacy": report.to_json() if report is not None else "",
    }


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in sorted(meta.items()):
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


def export_float(lm: LstmLM, path: str | Path, report: PrivacyReport | None = None) -> Path:
    """Export the float step model to ``path`` (one file, no external data), atomically."""
    path = Path(path)
    lm = lm.eval()
    step = StepModel(lm).eval()
    n = 3  # an example batch > 1, so the exporter keeps N symbolic
    tokens = torch.zeros(n, dtype=torch.long)
    h, c = lm.zero_state(n)
    batch = torch.export.Dim("N", min=1)
    shapes = {"tokens": {0: batch}, "h": {1: batch}, "c": {1: batch}}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                step,
                (tokens, h, c),
                str(tmp),
                dynamo=True,
                external_data=False,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=shapes,
                opset_version=OPSET,
                verbose=False,
            )
        except Exception as e:  # the exporter raises many types; name what failed
            raise ExternalToolError(
                f"torch.onnx.export of the LSTM LM step model to {path} failed: {e}"
            ) from e
        _set_metadata(tmp, metadata(lm, report, "float32"))
    log.info("exported %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return path


def quantize_int8(float_path: str | Path, path: str | Path) -> Path:
    """Dynamic int8 quantization (``quant_pre_process`` first, else LSTM weights stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path, path = Path(float_path), Path(path)
    if not float_path.is_file():
        raise UserLibriError(f"int8 quantization: expected a float ONNX model at {float_path}, found none")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(float_path)).metadata_props}
    meta["precision"] = "int8"
    with atomic_path(path) as tmp:
        tmp.mkdir()
        prep = tmp / "prep.onnx"
        out = tmp / "int8.onnx"
        quant_pre_process(str(float_path), str(prep), skip_symbolic_shape=False)
        quantize_dynamic(str(prep), str(out), weight_type=QuantType.QInt8)
        _set_metadata(out, meta)
        final = tmp.with_name(tmp.name + ".file")
        out.rename(final)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        final.rename(tmp)
    log.info("quantized %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return path


def export_lm(
    lm: LstmLM, out_dir: str | Path, report: PrivacyReport | None = None, int8: bool = True
) -> dict[str, Path]:
    """Write ``lm.onnx`` (and ``lm.int8.onnx``) into ``out_dir``; returns {'float': .., 'int8': ..}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"float": export_float(lm, out_dir / FLOAT_FILE, report)}
    if int8:
        paths["int8"] = quantize_int8(paths["float"], out_dir / INT8_FILE)
    return paths


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an exported model (for tests and tools; the runtime uses onnxruntime)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if meta.get("privacy"):
        json.loads(meta["privacy"])
    return meta
