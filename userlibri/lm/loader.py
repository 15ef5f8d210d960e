"""Per-user LMs for the recognizers: find the LM file in a per-user directory, load it once, and
check that it speaks the acoustic model's vocabulary.

Directory conventions (what ``userlibri lm users`` and the neural-LM pipeline write)::

    <book_id>/mix.bin (+ mix.arpa)       word n-gram, user + background interpolated (preferred)
    <book_id>/ngram.bin (+ ngram.arpa)   word n-gram of the user's text alone
    <dir>/lm.int8.onnx or lm.onnx        neural LM (ONNX step model)

A file path is used as is; its kind follows from its name (``.onnx`` -> ``neural-onnx``, a KenLM
binary or ARPA -> ``kenlm-word``) unless given. ``load_lm`` of :mod:`userlibri.lm.base` does the
loading; this module only resolves paths, caches loaded models and times the loads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from userlibri.errors import DataFormatError, UserLibriError
from userlibri.lm.base import LanguageModel, load_lm
from userlibri.lm.kenlm_scorer import WORD_KINDS

log = logging.getLogger(__name__)

#: Files looked for in an LM directory, in order of preference, with their kind.
LM_DIR_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("mix.bin", "kenlm-word"),
    ("mix.arpa", "kenlm-word"),
    ("ngram.bin", "kenlm-word"),
    ("ngram.arpa", "kenlm-word"),
    ("lm.int8.onnx", "neural-onnx"),
    ("lm.onnx", "neural-onnx"),
)
#: Least fraction of a word LM's words the acoustic model's pieces must be able to spell.
_MIN_SPELLABLE = 0.5


def resolve_lm(path: str | Path, kind: str | None = None) -> tuple[str, Path]:
    """``(kind, file)`` of the LM at ``path`` (a file, or a per-user directory as above)."""
    path = Path(path)
    if path.is_dir():
        for name, file_kind in LM_DIR_CANDIDATES:
            if (path / name).is_file() and (kind is None or kind == file_kind):
                return file_kind, path / name
        names = [n for n, k in LM_DIR_CANDIDATES if kind is None or k == kind]
        raise DataFormatError(path, f"an LM directory holding one of {names}", "none of them")
    if not path.is_file():
        raise DataFormatError(path, "an LM file or per-user LM directory", "no such file or directory")
    if kind is not None:
        return kind, path
    if path.suffix == ".onnx":
        return "neural-onnx", path
    if path.suffix in (".bin", ".arpa", ".klm") or path.name.endswith(".arpa.gz"):
        return "kenlm-word", path
    raise UserLibriError(
        f"{path}: cannot tell the LM kind from the file name (expected .onnx, .bin or .arpa); "
        "pass the kind (--lm-kind)"
    )


def check_word_vocabulary(lm: LanguageModel, pieces: Sequence[str], model_source: str | Path) -> None:
    """``UserLibriError`` naming both if a word LM's words mostly cannot be spelled with the
    acoustic model's pieces (e.g. a lower-case LM for an upper-case model)."""
    words = getattr(lm, "vocabulary", None)  # KenLMWordScorer's sorted vocabulary
    if not words:
        return
    letters = {c for p in pieces if not p.startswith("<") for c in p.replace("\u2581", "")}
    spellable = sum(1 for w in words if set(w) <= letters)
    if spellable < _MIN_SPELLABLE * len(words):
        sample = [w for w in words if not set(w) <= letters][:3]
        raise UserLibriError(
            f"vocabulary mismatch: LM {getattr(lm, 'path', lm)} has {len(words)} words of which only "
            f"{spellable} can be spelled with the pieces of the acoustic model {model_source} "
            f"(e.g. {sample}; model letters {''.join(sorted(letters))!r}); they must share a tokenizer "
            "and text normalisation"
        )


def load_lm_for_model(
    kind: str, path: str | Path, tokenizer: object, pieces: Sequence[str], model_source: str | Path
) -> LanguageModel:
    """:func:`~userlibri.lm.base.load_lm`, plus, for the word n-gram kinds, the check that the
    acoustic model's ``pieces`` spell the LM's words (:func:`check_word_vocabulary`)."""
    lm = load_lm(kind, path, tokenizer)
    if kind in WORD_KINDS:
        check_word_vocabulary(lm, pieces, model_source)
    return lm


@dataclass(frozen=True)
class LoadedLM:
    """A loaded LM with where it came from and how long loading took."""

    lm: LanguageModel
    kind: str
    path: Path
    load_seconds: float


class LMCache:
    """Loads each ``(kind, file)`` once; every later request returns the same object."""

    def __init__(self, tokenizer: object, model_source: str | Path = "<acoustic model>") -> None:
        self.tokenizer = tokenizer
        self.model_source = model_source
        self._loaded: dict[tuple[str, Path], LoadedLM] = {}

    def get(self, path: str | Path, kind: str | None = None) -> tuple[LoadedLM, bool]:
        """``(loaded, was_cached)`` for the LM at ``path`` (see :func:`resolve_lm`)."""
        kind, file = resolve_lm(path, kind)
        key = (kind, file.resolve())
        hit = self._loaded.get(key)
        if hit is not None:
            return hit, True
        t0 = time.perf_counter()
        pieces = getattr(self.tokenizer, "pieces", self.tokenizer)
        lm = load_lm_for_model(kind, file, self.tokenizer, list(pieces), self.model_source)  # type: ignore[arg-type]
        loaded = LoadedLM(lm, kind, file, time.perf_counter() - t0)
        log.info("loaded %s LM %s in %.3f s", kind, file, loaded.load_seconds)
        self._loaded[key] = loaded
        return loaded, False

    def __len__(self) -> int:
        return len(self._loaded)
