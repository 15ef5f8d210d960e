"""Run control for ``asr.train``: RNG state capture and restore (exact resume), the JSONL
training log, SIGTERM/SIGINT as a clean stop, and device selection."""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from userlibri.asr.ship import LOG_FILE, read_log  # noqa: F401 (read_log re-exported; torch-free)
from userlibri.errors import UserLibriError
from userlibri.fsio import write_text_atomic

log = logging.getLogger("userlibri.asr.train")


def rng_state(chunk_rng: random.Random, aug: torch.Generator) -> dict[str, Any]:
    state = {
        "python": chunk_rng.getstate(),
        "torch": torch.get_rng_state(),
        "aug": aug.get_state(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], chunk_rng: random.Random, aug: torch.Generator) -> None:
    chunk_rng.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    aug.set_state(state["aug"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def truncate_log(out: Path, step: int) -> None:
    """Drop log records past ``step`` (written after the checkpoint a resumed run restarts from)."""
    path = out / LOG_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(keep) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in keep))


def append_log(out: Path, record: dict[str, Any]) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


class StopSignals:
    """While installed, SIGTERM / SIGINT ask the training loop to stop after the current step (it
    then writes a checkpoint and ``model-avg.pt``, as for ``max_minutes``) instead of killing it
    mid-step. Outside the main thread (where handlers cannot be set) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received = ""
        self._previous: list[tuple[signal.Signals, Any]] = []
        if threading.current_thread() is threading.main_thread():
            self._previous = [(s, signal.signal(s, self._handle)) for s in self.SIGNALS]

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.received:
            self.received = signal.Signals(signum).name
            log.warning("%s: stopping after this step (checkpoint + model-avg.pt)", self.received)

    def restore(self) -> None:
        for s, h in self._previous:
            signal.signal(s, h)
        self._previous = []


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserLibriError(f"device: expected an available device, found {device!r} without CUDA")
    return torch.device(device)
