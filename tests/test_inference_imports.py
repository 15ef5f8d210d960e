"""The inference path must not import torch (it runs on devices without it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

#: Modules of the inference path (DESIGN.md); those not written yet are skipped.
INFERENCE_MODULES = (
    "userlibri.features",
    "userlibri.lm.base",
    "userlibri.lm.ngram",
    "userlibri.lm.kenlm_scorer",
    "userlibri.lm.onnx_lm",
    "userlibri.lm.context",
    "userlibri.lm.loader",
    "userlibri.text.tokenizer",
    "userlibri.decode",
    "userlibri.recognizer",
    "userlibri.stream",
    "userlibri.asr.onnx_model",
)


def _torch_modules_after_importing(modules: list[str]) -> list[str]:
    """Import ``modules`` in a fresh interpreter; return the torch modules it then holds."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_inference_modules_do_not_import_torch() -> None:
    modules = [name for name in INFERENCE_MODULES if importlib.util.find_spec(name) is not None]
    assert "userlibri.features" in modules
    found = _torch_modules_after_importing(modules)
    assert found == [], f"inference modules {modules} imported {found[:5]}"


def test_the_check_sees_torch() -> None:
    pytest.importorskip("torch")
    assert "torch" in _torch_modules_after_importing(["userlibri.features", "torch"])
