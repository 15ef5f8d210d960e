"""Torch weights back from an exported model directory, so a shipped model can be trained further
(``asr train --init-from DIR``).

The shipped models are int8 ONNX only, and a session's ``work/`` (checkpoints included) does not
outlive it: without this, every further training phase would start from scratch. The weights are
read from the full-context encoder, decoder and joiner files (float when present, else int8,
dequantized: ``(q - zero_point) * scale``, at most half a quantization step from the trained
value). Names: the dynamo exporter keeps ``model.<parameter>`` for every initializer except the
MatMul weights of ``nn.Linear`` layers, which it stores transposed under generated names
(``val_123``); each is named after the bias its product is added to (MatMul[Integer] -> Cast/Mul ->
Add ``model.<module>.bias``), and transposed back. Why our own code: onnx2torch and the like build
a new torch graph from the ONNX one, not the state dict of our ``AcousticModel``.
"""

from __future__ import annotations

import ast
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from userlibri.asr import model_format as mf
from userlibri.asr.config import ARCH_FIELDS, AMConfig, ExperimentConfig
from userlibri.asr.model import AcousticModel
from userlibri.errors import ConfigError, DataFormatError
from userlibri.features import FeatureConfig, FeatureStats
from userlibri.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

PREFIX = "model."
#: Node metadata: the dynamo exporter's module scopes, and ours (kept through quantization).
TORCH_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
SCOPE_KEY = "userlibri.module"
#: Ops between a Linear layer's MatMul and the Add of its bias (dequantization of an int8 product).
_PASS_THROUGH = ("Cast", "Mul")
_QUANT_SUFFIXES = ("_quantized", "_scale", "_zero_point")


@dataclass(frozen=True)
class ImportedModel:
    """A model directory's weights as a torch model, with what its inputs must look like."""

    model: AcousticModel
    features: FeatureConfig
    stats: FeatureStats
    model_dir: Path
    model_version: str
    #: sha256 of the tokenizer the model was trained with (model.json's tokenizer_id).
    tokenizer_id: str
    #: ONNX file each weight came from, per role.
    files: dict[str, str]


def _summary(model_dir: Path) -> dict[str, Any]:
    path = model_dir / mf.SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataFormatError(
            path, "the summary of an exported model directory (asr export)", "no file"
        ) from None
    except json.JSONDecodeError as e:
        raise DataFormatError(path, "JSON", f"invalid JSON ({e})") from None
    missing = [k for k in ("am_config", "cmvn", "features") if not summary.get(k)]
    if missing:
        raise DataFormatError(path, f"the keys {', '.join(missing)}", f"only {', '.join(sorted(summary))}")
    return summary


def _role_file(model_dir: Path, role: str) -> Path:
    for precision in ("float", "int8"):
        path = model_dir / mf.model_file(role, precision)
        if path.is_file():
            return path
    raise DataFormatError(
        model_dir, f"{mf.model_file(role, 'float')} or {mf.model_file(role, 'int8')}", "neither"
    )


def module_scope(node: Any) -> str | None:
    """The innermost ``model.``-module an ONNX node was traced in: our own ``userlibri.module``
    metadata (int8 files, see ``add_module_scopes``) or the dynamo exporter's name scopes."""
    props = {p.key: p.value for p in node.metadata_props}
    if SCOPE_KEY in props:
        return props[SCOPE_KEY]
    scopes = props.get(TORCH_SCOPES_KEY)
    if not scopes:
        return None
    try:
        names = ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return None
    inner = [n for n in names if isinstance(n, str) and n.startswith(PREFIX)]
    return inner[-1] if inner else None


def module_scopes(model: Any) -> dict[str, str | None]:
    """``{node name: module scope}`` of a loaded ONNX model (see ``module_scope``)."""
    return {n.name: module_scope(n) for n in model.graph.node}


def add_module_scopes(model: Any, scopes: dict[str, str | None]) -> None:
    """Give each node of ``model`` (a quantized copy of the model ``scopes`` came from) that reads a
    weight the module scope of its namesake: the quantizer drops node metadata, and without scopes
    weights the exporter deduplicated (equal values, e.g. untrained LayerNorms) cannot be told
    apart."""
    weights = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        scope = scopes.get(node.name)
        if scope and any(i in weights for i in node.input):
            node.metadata_props.add(key=SCOPE_KEY, value=scope)


def onnx_weights(path: Path, known: set[str]) -> dict[str, np.ndarray]:
    """``{state-dict key: array}`` of the ``AcousticModel`` parameters stored in one ONNX file;
    ``known``: the model's state-dict keys (a scope-derived name must be one of them)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def dequantized(name: str) -> np.ndarray:
        if not name.endswith("_quantized"):
            return arrays[name].astype(np.float32)
        base = name[: -len("_quantized")]
        q = arrays[name].astype(np.float32)
        zero = arrays[base + "_zero_point"].astype(np.float32)
        return (q - zero) * arrays[base + "_scale"].astype(np.float32)

    def key_of(name: str, node: Any) -> str:
        """State-dict key of initializer ``name`` as ``node`` reads it: its own name unless the
        node's module scope says it stands for another module's parameter (deduplicated)."""
        own = name[len(PREFIX) :]
        scope = module_scope(node)
        if scope:
            scoped = f"{scope[len(PREFIX) :]}.{own.rsplit('.', 1)[-1]}"
            if scoped in known:
                return scoped
        return own

    def bias_add(node: Any) -> Any | None:
        for _ in range(len(_PASS_THROUGH) + 1):
            nxt = consumers.get(node.output[0], [])
            if len(nxt) != 1:
                return None
            node = nxt[0]
            if node.op_type == "Add":
                return node
            if node.op_type not in _PASS_THROUGH:
                return None
        return None

    out: dict[str, np.ndarray] = {}

    def put(key: str, arr: np.ndarray, what: str) -> None:
        if key in out and not np.array_equal(out[key], arr):
            raise DataFormatError(path, "one value per parameter", f"two for {key} ({what})")
        out[key] = arr

    linear: set[str] = set()
    for node in graph.node:
        if node.op_type not in ("MatMul", "MatMulInteger") or len(node.input) < 2:
            continue
        weight = node.input[1]
        if weight not in arrays:
            continue  # a product of two activations (attention)
        add = bias_add(node)
        bias = [i for i in add.input if i in arrays and i.startswith(PREFIX)] if add is not None else []
        if len(bias) != 1 or not bias[0].endswith(".bias"):
            raise DataFormatError(
                path,
                "every weight MatMul followed by the Add of a named bias (an nn.Linear)",
                f"{node.name or node.op_type} (weight {weight}) without one",
            )
        key = key_of(bias[0], add)[: -len(".bias")] + ".weight"
        put(key, np.ascontiguousarray(dequantized(weight).T), node.name)
        linear.add(weight)
    for node in graph.node:
        for name in node.input:
            if (
                name in linear
                or name not in arrays
                or not name.startswith(PREFIX)
                or name.endswith(_QUANT_SUFFIXES)
            ):
                continue
            arr = arrays[name]
            put(key_of(name, node), arr.astype(np.float32) if arr.dtype.kind == "f" else arr, node.name)
    return out


def import_model_dir(model_dir: str | Path) -> ImportedModel:
    """The ``AcousticModel`` of an exported model directory (see the module docstring).

    Raises ``DataFormatError`` when a parameter is missing, has the wrong shape or the files hold
    weights the model does not have."""
    model_dir = Path(model_dir)
    summary = _summary(model_dir)
    try:
        am = AMConfig(**summary["am_config"]).validate()
        features = FeatureConfig.from_dict(summary["features"])
        stats = FeatureStats.from_dict(summary["cmvn"])
    except (TypeError, ValueError, KeyError) as e:
        raise DataFormatError(model_dir / mf.SUMMARY_FILE, "a readable model summary", str(e)) from None
    model = AcousticModel(am)
    expected = model.state_dict()
    found: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    files: dict[str, str] = {}
    for role in (mf.ENCODER, mf.DECODER, mf.JOINER):
        path = _role_file(model_dir, role)
        files[role] = path.name
        for key, arr in onnx_weights(path, set(expected)).items():
            if key in found and not np.array_equal(found[key], arr):
                raise DataFormatError(path, f"{key} as in {source[key]}", "another value")
            found.setdefault(key, arr)
            source.setdefault(key, path.name)
    missing = sorted(set(expected) - set(found))
    # Non-persistent buffers (rotary frequencies) are constants of the graph, not weights.
    derived = {name for name, _ in model.named_buffers()}
    extra = sorted(set(found) - set(expected) - derived)
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k].shape) != found[k].shape)
    if missing or extra or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:5])}" + (f" (+{len(missing) - 5})" if len(missing) > 5 else "")
                if missing
                else "",
                f"unknown {', '.join(extra[:5])}" if extra else "",
                ", ".join(
                    f"{k}: {tuple(found[k].shape)} (ONNX) vs {tuple(expected[k].shape)} (model)"
                    for k in wrong[:5]
                ),
            )
            if part
        )
        raise DataFormatError(model_dir, "the weights of the model its model.json describes", detail)
    model.load_state_dict({k: torch.from_numpy(np.array(found[k])).to(expected[k].dtype) for k in expected})
    version = str(summary.get("model_version", ""))
    log.info("imported %d tensors from %s (%s)", len(expected), model_dir, ", ".join(files.values()))
    return ImportedModel(
        model, features, stats, model_dir, version, str(summary.get("tokenizer_id", "")), files
    )


def import_for_training(init_from: str | Path, config: ExperimentConfig) -> ImportedModel:
    """``import_model_dir``, refusing a model whose feature config is not ``config.features``."""
    init = import_model_dir(init_from)
    config.features.check_compatible(init.features, what=f"--init-from model {init_from}")
    return init


def check_init(init: ImportedModel, am: AMConfig, tok: Tokenizer) -> None:
    """Raise ``ConfigError`` unless the run's architecture and tokenizer are the imported model's."""
    theirs = init.model.config
    diff = [
        f"{k}: {getattr(theirs, k)!r} (model) vs {getattr(am, k)!r} (config)"
        for k in ARCH_FIELDS
        if getattr(theirs, k) != getattr(am, k)
    ]
    if diff:
        raise ConfigError(
            f"--init-from {init.model_dir}: expected the config's model architecture, found {'; '.join(diff)}"
        )
    if init.tokenizer_id and tok.model_id != init.tokenizer_id:
        raise ConfigError(
            f"--init-from {init.model_dir}: expected the model's tokenizer ({init.tokenizer_id[:12]}), found "
            f"{tok.path} ({tok.model_id[:12]})"
        )
