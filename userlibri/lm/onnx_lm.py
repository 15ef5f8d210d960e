"""The neural LM at inference time: an ONNX step model run by onnxruntime (no torch).

``OnnxNeuralLM`` implements the ``LanguageModel`` protocol. Its state is the tuple of token ids
scored since ``<sos/eos>`` (hashable, so beams with equal prefixes merge); the LSTM state and the
next-token log-probabilities of each prefix live in a bounded LRU cache and are recomputed from the
longest cached ancestor when evicted. ``next_logprobs`` / ``score_batch`` run all missing prefixes
of a beam in one batched session call per prefix length.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.errors import DataFormatError, UserLibriError, missing_dependency
from userlibri.lm.base import register_lm

log = logging.getLogger(__name__)

KIND = "lstm-lm"
DEFAULT_CACHE_SIZE = 4096
DEFAULT_THREADS = 1
_REQUIRED_META = ("kind", "vocab_size", "tokenizer_id", "sos_id", "eos_id", "hidden_dim", "num_layers")

#: The state of ``OnnxNeuralLM``: the token ids after ``<sos/eos>``.
NeuralState = tuple[int, ...]


@dataclass(frozen=True)
class NeuralLMMeta:
    """What the ONNX file says about itself."""

    vocab_size: int
    tokenizer_id: str
    sos_id: int
    eos_id: int
    hidden_dim: int
    num_layers: int
    precision: str
    privacy: dict[str, Any] | None


@dataclass
class _Entry:
    logprobs: np.ndarray  # (V,) log p(next token | prefix)
    h: np.ndarray  # (layers, hidden)
    c: np.ndarray


def _ort():  # noqa: ANN202 - module
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - core dependency
        raise missing_dependency("onnxruntime", "run `make setup`") from e
    return onnxruntime


class OnnxNeuralLM:
    """``LanguageModel`` over an exported LSTM step model (``lm.onnx`` or ``lm.int8.onnx``)."""

    def __init__(
        self,
        path: str | Path,
        tokenizer: Any | None = None,
        *,
        threads: int = DEFAULT_THREADS,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFormatError(self.path, "an ONNX neural LM (lm.onnx)", "no such file")
        if cache_size < 1:
            raise UserLibriError(f"cache_size: expected >= 1, found {cache_size}")
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise DataFormatError(self.path, "a loadable ONNX model", f"an error ({e})") from e
        self.meta = self._read_meta(self._session.get_modelmeta().custom_metadata_map)
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)
        self._cache: OrderedDict[NeuralState, _Entry] = OrderedDict()
        self._cache_size = cache_size
        zeros = np.zeros((self.meta.num_layers, self.meta.hidden_dim), np.float32)
        self._root = self._run([self.meta.sos_id], [zeros], [zeros])[0]

    def _read_meta(self, meta: dict[str, str]) -> NeuralLMMeta:
        missing = [k for k in _REQUIRED_META if k not in meta]
        if missing:
            raise DataFormatError(
                self.path, f"ONNX metadata keys {list(_REQUIRED_META)}", f"missing {missing}"
            )
        if meta["kind"] != KIND:
            raise DataFormatError(self.path, f"metadata kind {KIND!r}", repr(meta["kind"]))
        try:
            privacy = json.loads(meta["privacy"]) if meta.get("privacy") else None
            return NeuralLMMeta(
                vocab_size=int(meta["vocab_size"]),
                tokenizer_id=meta["tokenizer_id"],
                sos_id=int(meta["sos_id"]),
                eos_id=int(meta["eos_id"]),
                hidden_dim=int(meta["hidden_dim"]),
                num_layers=int(meta["num_layers"]),
                precision=meta.get("precision", "float32"),
                privacy=privacy,
            )
        except (ValueError, json.JSONDecodeError) as e:
            raise DataFormatError(self.path, "integer sizes and JSON privacy in metadata", str(e)) from e

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ``UserLibriError`` naming both sides unless ``tokenizer`` is the one trained with."""
        tok_id = getattr(tokenizer, "model_id", None)
        tok_path = getattr(tokenizer, "path", "<tokenizer>")
        if tok_id != self.meta.tokenizer_id:
            raise UserLibriError(
                f"tokenizer mismatch: {self.path} was trained with tokenizer id "
                f"{self.meta.tokenizer_id[:16]}..., but {tok_path} has id {str(tok_id)[:16]}..."
            )
        vocab = getattr(tokenizer, "vocab_size", self.meta.vocab_size)
        if vocab != self.meta.vocab_size:
            raise UserLibriError(
                f"vocabulary mismatch: {self.path} has {self.meta.vocab_size} ids, {tok_path} has {vocab}"
            )

    @property
    def vocab_size(self) -> int:
        return self.meta.vocab_size

    # -- the session ----------------------------------------------------------------------------
    def _run(self, tokens: Sequence[int], hs: Sequence[np.ndarray], cs: Sequence[np.ndarray]) -> list[_Entry]:
        """One batched step: N tokens with their parent states -> N entries."""
        feeds = {
            "tokens": np.asarray(tokens, dtype=np.int64),
            "h": np.ascontiguousarray(np.stack(hs, axis=1)),
            "c": np.ascontiguousarray(np.stack(cs, axis=1)),
        }
        lp, h, c = self._session.run(None, feeds)
        return [_Entry(lp[i], h[:, i], c[:, i]) for i in range(len(tokens))]

    def _lookup(self, state: NeuralState) -> _Entry | None:
        if not state:
            return self._root
        entry = self._cache.get(state)
        if entry is not None:
            self._cache.move_to_end(state)
        return entry

    def _ensure(self, states: Sequence[NeuralState]) -> list[_Entry]:
        """Entries for ``states``, computing missing prefixes level by level in batches."""
        fresh: dict[NeuralState, _Entry] = {}
        todo: set[NeuralState] = set()
        for s in states:
            p = s
            while p and p not in todo and self._lookup(p) is None:
                todo.add(p)
                p = p[:-1]
        for length in sorted({len(p) for p in todo}):
            level = sorted(p for p in todo if len(p) == length)
            parents = [fresh.get(p[:-1]) or self._lookup(p[:-1]) for p in level]
            entries = self._run(
                [p[-1] for p in level],
                [e.h for e in parents],
                [e.c for e in parents],  # type: ignore[union-attr]
            )
            fresh.update(zip(level, entries, strict=True))
        for p, e in fresh.items():
            self._cache[p] = e
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return [fresh.get(s) or self._lookup(s) for s in states]  # type: ignore[misc]

    # -- LanguageModel -----------------------------------------------------------------------------
    def start_state(self) -> NeuralState:
        """The state after ``<sos/eos>``."""
        return ()

    def score(self, state: NeuralState, token: int) -> tuple[float, NeuralState]:
        """``(log p(token | state), state + (token,))``."""
        self._check_token(token)
        entry = self._ensure([state])[0]
        return float(entry.logprobs[token]), (*state, int(token))

    def final_score(self, state: NeuralState) -> float:
        """``log p(<sos/eos> | state)``: the sentence ends here."""
        return float(self._ensure([state])[0].logprobs[self.meta.eos_id])

    # -- batched ---------------------------------------------------------------------------------
    def next_logprobs(self, states: Sequence[NeuralState]) -> np.ndarray:
        """(N, V) next-token log-probabilities for N states."""
        if not states:
            return np.zeros((0, self.meta.vocab_size), np.float32)
        return np.stack([e.logprobs for e in self._ensure(states)])

    def score_batch(
        self, states: Sequence[NeuralState], tokens: Sequence[int]
    ) -> tuple[np.ndarray, list[NeuralState]]:
        """Score ``tokens[i]`` after ``states[i]`` for all i: ((N,) log-probs, N new states)."""
        if len(states) != len(tokens):
            raise UserLibriError(f"score_batch: {len(states)} states but {len(tokens)} tokens")
        for t in tokens:
            self._check_token(t)
        entries = self._ensure(states)
        scores = np.array([e.logprobs[t] for e, t in zip(entries, tokens, strict=True)], np.float64)
        return scores, [(*s, int(t)) for s, t in zip(states, tokens, strict=True)]

    def sentence_logprob(self, ids: Sequence[int]) -> float:
        """Natural-log probability of a whole token sequence, end of sentence included."""
        state, total = self.start_state(), 0.0
        for t in ids:
            lp, state = self.score(state, t)
            total += lp
        return total + self.final_score(state)

    def _check_token(self, token: int) -> None:
        if not 0 <= token < self.meta.vocab_size:
            raise UserLibriError(f"token id {token} outside the LM vocabulary [0, {self.meta.vocab_size})")

    def clear_cache(self) -> None:
        """Forget all cached prefixes (e.g. between utterances, to bound memory)."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"OnnxNeuralLM({str(self.path)!r}, vocab={self.meta.vocab_size}, {self.meta.precision})"


def open_onnx_lm(path: str | Path) -> OnnxNeuralLM:
    """The neural LM at ``path``: an ONNX file, or a directory holding ``lm.onnx``."""
    path = Path(path)
    return OnnxNeuralLM(path / "lm.onnx" if path.is_dir() else path)


@register_lm("neural-onnx")
def load_onnx_lm(path: str | Path, tokenizer: Any | None = None) -> Any:
    """Registry loader: a file, or a directory holding ``lm.onnx``.

    With the tokenizer the LM was trained with (or none): the LM itself, scoring those ids. With
    another tokenizer (an acoustic model's): a word-synchronous scorer over the LM's own tokenizer
    found beside it (:mod:`userlibri.lm.neural_word`), or the mismatch error naming both."""
    lm = open_onnx_lm(path)
    if tokenizer is None or getattr(tokenizer, "model_id", None) == lm.meta.tokenizer_id:
        if tokenizer is not None:
            lm.check_tokenizer(tokenizer)
        return lm
    from userlibri.lm.neural_word import find_lm_tokenizer, word_scorer

    try:
        own = find_lm_tokenizer(lm.path, lm.meta.tokenizer_id)
    except DataFormatError as e:
        try:
            lm.check_tokenizer(tokenizer)
        except UserLibriError as mismatch:
            raise UserLibriError(
                f"{mismatch}; and no tokenizer of its own to score words with: {e}"
            ) from None
        raise
    log.debug("%s: own tokenizer %s: word-synchronous fusion", lm.path, own)
    return word_scorer(lm, tokenizer, own)
