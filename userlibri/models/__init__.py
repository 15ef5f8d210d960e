"""Acoustic models shipped inside the package (written by ``userlibri asr ship``; see each
directory's MODEL_CARD.md). Torch-free."""

from __future__ import annotations

from pathlib import Path

from userlibri.errors import UserLibriError

#: The model `userlibri decode` and the benchmarks use when no --model is given.
DEFAULT_MODEL = "mini"

MODELS_DIR = Path(__file__).resolve().parent


def shipped_models() -> list[str]:
    """Names of the shipped model directories (those holding a model.json), sorted."""
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "model.json").is_file())


def model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Directory of the shipped model ``name``; a clear error when it is not shipped."""
    path = MODELS_DIR / name
    if not (path / "model.json").is_file():
        found = ", ".join(shipped_models()) or "none"
        raise UserLibriError(
            f"{path}: expected a shipped acoustic model '{name}' (model.json and ONNX files); shipped "
            f"models found: {found}. Train and ship one with recipes/mini/train_am.sh, or pass --model."
        )
    return path
