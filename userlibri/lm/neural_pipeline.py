"""End-to-end neural LM jobs behind the CLI: text files in, a self-contained LM directory out.

A background LM directory holds ``lm.pt`` (checkpoint), ``lm.onnx``, ``lm.int8.onnx``,
``privacy.json`` (mechanism ``none``) and ``train.json`` (configs, counts, timings). A personal LM
directory holds the same, with the privacy report of the fine-tuning run. Directories are written
atomically: they appear whole or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from userlibri.errors import DataFormatError
from userlibri.fsio import atomic_path, write_json_atomic
from userlibri.lm import neural
from userlibri.lm.neural_export import export_lm
from userlibri.privacy.accounting import PrivacyReport
from userlibri.text.tokenizer import MODEL_FILE, Tokenizer

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "lm.pt"
PRIVACY_FILE = "privacy.json"
TRAIN_INFO_FILE = "train.json"


def read_sentences(paths: Sequence[str | Path]) -> list[str]:
    """Non-empty stripped lines of UTF-8 text files (one sentence a line)."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataFormatError(path, "a UTF-8 text file, one sentence a line", str(e)) from e
        lines = [s.strip() for s in text.splitlines() if s.strip()]
        if not lines:
            raise DataFormatError(path, "at least one sentence", "an empty file")
        out.extend(lines)
    return out


def _write_dir(
    out_dir: Path,
    model: neural.LstmLM,
    report: PrivacyReport,
    info: dict[str, Any],
    int8: bool,
) -> dict[str, Any]:
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        neural.save_checkpoint(model, tmp / CHECKPOINT_FILE, report)
        files = export_lm(model, tmp, report, int8=int8)
        report.save(tmp / PRIVACY_FILE)
        # the tokenizer travels with the LM: a decoder with another tokenizer fuses it word by word
        shutil.copyfile(info["tokenizer"], tmp / MODEL_FILE)
        info["files"] = {k: v.name for k, v in files.items()}
        info["sizes_bytes"] = {k: v.stat().st_size for k, v in files.items()}
        write_json_atomic(tmp / TRAIN_INFO_FILE, info)
    return info


def train_background_dir(
    inputs: Sequence[str | Path],
    tokenizer_path: str | Path,
    out_dir: str | Path,
    model_overrides: dict[str, Any] | None = None,
    train_config: neural.TrainConfig | None = None,
    dev: Sequence[str | Path] = (),
    int8: bool = True,
) -> dict[str, Any]:
    """Train a background LM on ``inputs`` and write its directory; returns ``train.json``'s content."""
    train_config = train_config or neural.TrainConfig()
    tok = Tokenizer.load(tokenizer_path)
    sentences = read_sentences(inputs)
    config = neural.default_config(tok, **(model_overrides or {}))
    start = time.perf_counter()
    model = neural.train_background(sentences, tok, config, train_config)
    info: dict[str, Any] = {
        "kind": "background",
        "model_config": dataclasses.asdict(config),
        "train_config": dataclasses.asdict(train_config),
        "sentences": len(sentences),
        "parameters": neural.num_parameters(model),
        "train_seconds": time.perf_counter() - start,
        "tokenizer": str(tok.path),
    }
    if dev:
        info["dev_perplexity"] = neural.evaluate_perplexity(model, read_sentences(dev), tok)
    return _write_dir(
        Path(out_dir), model, PrivacyReport(mechanism="none", dataset_size=len(sentences)), info, int8
    )


def personalize_dir(
    background: str | Path,
    inputs: Sequence[str | Path],
    tokenizer_path: str | Path,
    out_dir: str | Path,
    train_config: neural.TrainConfig | None = None,
    privacy: neural.PrivacyConfig | None = None,
    dev: Sequence[str | Path] = (),
    int8: bool = True,
) -> dict[str, Any]:
    """Fine-tune a background LM (its directory or ``lm.pt``) on one user's text; write the
    personal LM directory (checkpoint, ONNX float/int8, ``privacy.json``). Returns ``train.json``."""
    background = Path(background)
    ckpt = background / CHECKPOINT_FILE if background.is_dir() else background
    train_config = train_config or neural.PERSONALIZE_TRAIN
    privacy = privacy or neural.PrivacyConfig()
    base, _ = neural.load_checkpoint(ckpt)
    tok = Tokenizer.load(tokenizer_path)
    sentences = read_sentences(inputs)
    start = time.perf_counter()
    model, report = neural.personalize(base, sentences, tok, train_config, privacy)
    info: dict[str, Any] = {
        "kind": "personal",
        "background": str(ckpt),
        "train_config": dataclasses.asdict(train_config),
        "privacy_config": dataclasses.asdict(privacy),
        "sentences": len(sentences),
        "train_seconds": time.perf_counter() - start,
        "epsilon": None if report.mechanism == "none" else report.epsilon_value,
        "tokenizer": str(tok.path),
    }
    if dev:
        dev_sents = read_sentences(dev)
        info["dev_perplexity_background"] = neural.evaluate_perplexity(base, dev_sents, tok)
        info["dev_perplexity"] = neural.evaluate_perplexity(model, dev_sents, tok)
    info = _write_dir(Path(out_dir), model, report, info, int8)
    log.info("personal LM -> %s: %s", out_dir, json.dumps({k: info[k] for k in ("sentences", "epsilon")}))
    return info
