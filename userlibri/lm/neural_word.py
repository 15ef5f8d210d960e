"""Word-synchronous fusion of a neural LM that has its own tokenizer.

A neural LM is cheapest to train and to run over a tokenizer of a few hundred pieces, while the
acoustic model may emit characters (the shipped mini model has 34 pieces). Rather than tying the
two together, :class:`NeuralWordScorer` implements the ``LanguageModel`` protocol over the
*acoustic model's* ids and scores whole words with the LM over *its own* pieces, as the KenLM word
scorer does with a word n-gram:

* Acoustic-model pieces are buffered to a word boundary (a piece starting with ``▁``). A completed
  word ``w`` is scored exactly: ``sum_k log p(lm_piece_k | history)`` over the LM tokenizer's
  pieces of ``w``; the LM history then grows by those pieces.
* Meanwhile the partial word ``u`` gets a context-dependent look-ahead, roughly the LM's
  probability that the next word starts with ``u``: ``u`` is tokenized with the LM tokenizer into
  ``p_0..p_k-1``; for each split point ``j``, ``p_0..p_j-1`` are scored exactly and the rest by the
  total probability of the LM pieces whose text extends that of ``p_j..p_k-1`` (a partial "D" is
  "▁"+"D" alone, but "▁DOG" extends it); the best split counts. The look-ahead is carried in
  the state and replaced by the exact score when the word completes, so a finished sentence scores
  exactly the LM's log-probability of its words plus end of sentence (sentencepiece never merges
  pieces across spaces, so word-by-word tokenization equals whole-sentence tokenization).
* Several LMs over the same LM tokenizer (a personal LM and the background) are mixed linearly
  per LM piece, inside the word scorer: mixing the word scorers' look-ahead differences would not
  be a mixture of probabilities.

States are ``(lm_history, partial_word, lookahead)``: hashable, so beams ending alike merge.
``score_batch`` computes all missing LM steps of a beam in one batched session call per level.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.lm.base import register_lm
from userlibri.lm.onnx_lm import NeuralState, OnnxNeuralLM, open_onnx_lm
from userlibri.text.tokenizer import (
    BLANK_PIECE,
    MODEL_FILE,
    SOS_EOS_PIECE,
    WORD_BOUNDARY,
    Tokenizer,
    file_sha256,
)

log = logging.getLogger(__name__)

#: Pieces that are not text, in either tokenizer.
_NON_TEXT = frozenset({BLANK_PIECE, SOS_EOS_PIECE, "<s>", "</s>", "<pad>", "<unk>"})
#: Cached LM-piece distributions (one float32 vector per LM history, 2 KB at 500 pieces) before the
#: cache is cleared.
DEFAULT_CACHE_ENTRIES = 8192
#: Memoised word and look-ahead scores before they are cleared.
_MEMO_ENTRIES = 200_000
_WEIGHT_SUM_TOLERANCE = 1e-6

#: A word-scorer state: (LM history, pending partial word, its look-ahead score).
WordState = tuple  # (tuple[int, ...], str, float)


def find_lm_tokenizer(onnx_path: str | Path, tokenizer_id: str) -> Path:
    """The sentencepiece model a neural LM was trained with, found beside it.

    Looks at ``tokenizer.model`` in the LM's directory, the ``tokenizer`` recorded in its
    ``train.json`` (absolute, relative to the directory, or relative to the working directory)
    and ``tok/tokenizer.model`` / ``tokenizer.model`` in up to three parent directories (the
    layout of ``recipes/mini/neural.sh``); the first whose id matches the LM's metadata wins.
    """
    onnx_path = Path(onnx_path)
    here = onnx_path.parent
    candidates = [here / MODEL_FILE]
    info = here / "train.json"
    if info.is_file():
        try:
            recorded = json.loads(info.read_text(encoding="utf-8")).get("tokenizer")
        except json.JSONDecodeError as e:
            raise DataFormatError(info, "JSON training info", f"invalid JSON ({e})", line=e.lineno) from e
        if isinstance(recorded, str) and recorded:
            rec = Path(recorded)
            candidates += [rec, here / rec] if not rec.is_absolute() else [rec]
    for parent in list(here.parents)[:3]:
        candidates += [parent / "tok" / MODEL_FILE, parent / MODEL_FILE]
    tried: list[str] = []
    for cand in candidates:
        path = cand / MODEL_FILE if cand.is_dir() else cand
        if str(path) in tried:
            continue
        tried.append(str(path))
        if path.is_file() and file_sha256(path) == tokenizer_id:  # the id Tokenizer computes
            return path
    raise DataFormatError(
        onnx_path,
        f"its tokenizer (sentencepiece model id {tokenizer_id[:16]}...) beside it",
        f"none with that id among {tried}",
    )


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """Store ``value`` in a bounded memo (cleared when full) and return it."""
    if len(memo) >= _MEMO_ENTRIES:
        memo.clear()
    memo[key] = value
    return value


def _logsumexp(x: np.ndarray) -> float:
    top = float(x.max())
    if top == -math.inf:
        return -math.inf
    return top + math.log(float(np.exp(x - top).sum()))


class NeuralWordScorer:
    """``LanguageModel`` over the acoustic model's ids, scoring words with neural LMs over their
    own tokenizer (see the module docstring).

    ``components``: ``(lm, weight)`` pairs, weights >= 0 summing to 1, all LMs trained with
    ``lm_tokenizer``. ``am_tokenizer``: the acoustic model's tokenizer (or its list of pieces).
    """

    def __init__(
        self,
        components: Sequence[tuple[OnnxNeuralLM, float]],
        lm_tokenizer: Tokenizer,
        am_tokenizer: Tokenizer | Sequence[str],
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        if not components:
            raise ConfigError("neural word scorer: expected at least one (lm, weight) component, found none")
        weights = [float(w) for _, w in components]
        if (
            any(not math.isfinite(w) or w < 0 for w in weights)
            or abs(sum(weights) - 1.0) > _WEIGHT_SUM_TOLERANCE
        ):
            raise ConfigError(f"neural LM mixture: expected weights >= 0 summing to 1, found {weights}")
        if cache_entries < 1:
            raise ConfigError(f"cache_entries: expected >= 1, found {cache_entries}")
        for lm, _ in components:
            lm.check_tokenizer(lm_tokenizer)
        self.components = tuple((lm, w) for (lm, _), w in zip(components, weights, strict=True) if w > 0)
        self._log_weights = np.array([math.log(w) for _, w in self.components], dtype=np.float64)
        self.lm_tokenizer = lm_tokenizer
        self.pieces: tuple[str, ...] = (
            am_tokenizer.pieces if isinstance(am_tokenizer, Tokenizer) else tuple(am_tokenizer)
        )
        self.path = self.components[0][0].path
        self._eos = self.components[0][0].meta.eos_id
        # Per acoustic-model id: (starts a word, its text) or None for non-text pieces.
        self._tokens: tuple[tuple[bool, str] | None, ...] = tuple(
            None
            if p in _NON_TEXT
            else (True, p[len(WORD_BOUNDARY) :])
            if p.startswith(WORD_BOUNDARY)
            else (False, p)
            for p in self.pieces
        )
        self._lm_pieces = lm_tokenizer.pieces
        self._lm_text_ids = np.array(
            [i for i, p in enumerate(self._lm_pieces) if p not in _NON_TEXT], dtype=np.int64
        )
        self._cache_entries = cache_entries
        self._lp: dict[NeuralState, np.ndarray] = {}
        self._words: dict[str, tuple[int, ...]] = {}
        self._splits: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
        self._word_memo: dict[tuple[NeuralState, str], tuple[float, NeuralState]] = {}
        self._la_memo: dict[tuple[NeuralState, str], float] = {}

    def __repr__(self) -> str:
        parts = ", ".join(f"{w:g}*{lm!r}" for lm, w in self.components)
        return f"NeuralWordScorer({parts}, lm tokenizer {self.lm_tokenizer.model_id[:12]})"

    @classmethod
    def mixture(cls, scorers: Sequence[NeuralWordScorer], weights: Sequence[float]) -> NeuralWordScorer:
        """The linear mixture of word scorers over one LM tokenizer (mixed per LM piece)."""
        if len(scorers) != len(weights) or not scorers:
            raise ConfigError(f"neural LM mixture: {len(scorers)} scorers but {len(weights)} weights")
        tok_ids = {s.lm_tokenizer.model_id for s in scorers}
        if len(tok_ids) > 1:
            raise UserLibriError(
                "neural LM mixture: expected LMs over one tokenizer, found "
                + ", ".join(f"{s.path} ({s.lm_tokenizer.model_id[:12]})" for s in scorers)
            )
        comps = [(lm, w * cw) for s, w in zip(scorers, weights, strict=True) for lm, cw in s.components]
        return cls(comps, scorers[0].lm_tokenizer, scorers[0].pieces, scorers[0]._cache_entries)

    # -- LM-piece distributions --------------------------------------------------------------------
    def _fill(self, histories: Sequence[NeuralState]) -> None:
        """Compute the mixed next-piece log-probabilities of the histories not cached yet."""
        need = set(histories)
        missing = sorted(h for h in need if h not in self._lp)
        if not missing:
            return
        if len(self._lp) + len(missing) > self._cache_entries:
            self._lp.clear()  # then every history of this call is computed again
            missing = sorted(need)
        # Rows are kept in float32 (the LSTM's own precision): 2 KB per history at 500 pieces.
        if len(self.components) == 1:
            rows = self.components[0][0].next_logprobs(missing)
        else:
            stacked = (
                np.stack([lm.next_logprobs(missing).astype(np.float64) for lm, _ in self.components])
                + self._log_weights[:, None, None]
            )
            top = stacked.max(axis=0)
            rows = (top + np.log(np.exp(stacked - top).sum(axis=0))).astype(np.float32)
        for h, row in zip(missing, rows, strict=True):
            self._lp[h] = row

    def _row(self, history: NeuralState) -> np.ndarray:
        """The mixed next-piece log-probabilities after ``history``, computed if not cached (the
        batch paths compute them beforehand; a memo evicted meanwhile lands here)."""
        row = self._lp.get(history)
        if row is None:
            self._fill([history])
            row = self._lp[history]
        return row

    def _word_ids(self, word: str) -> tuple[int, ...]:
        ids = self._words.get(word)
        if ids is None:
            ids = _remember(self._words, word, tuple(self.lm_tokenizer.encode(word)))
        return ids

    def _split(self, partial: str) -> tuple[tuple[int, ...], tuple[np.ndarray, ...]]:
        """A partial word's LM pieces ``p_0..p_k-1`` and, per split point ``j``, the LM ids that
        extend the text of ``p_j..p_k-1`` (empty where none does)."""
        hit = self._splits.get(partial)
        if hit is not None:
            return hit
        ids = self._word_ids(partial)
        texts = [self._lm_pieces[i] for i in ids]
        compats: list[np.ndarray] = []
        for j in range(len(ids)):
            suffix = "".join(texts[j:])
            if any(t in _NON_TEXT for t in texts[j:]):
                match = [ids[j]] if j == len(ids) - 1 else []
            else:
                match = [i for i in self._lm_text_ids.tolist() if self._lm_pieces[i].startswith(suffix)]
            compats.append(np.array(match, dtype=np.int64))
        return _remember(self._splits, partial, (ids, tuple(compats)))

    def _needs(self, history: NeuralState, partial: str, complete: bool) -> list[NeuralState]:
        """The LM histories whose distributions score ``partial`` after ``history``."""
        ids = self._word_ids(partial) if complete else self._split(partial)[0][:-1]
        need = [history]
        for t in ids:
            need.append((*need[-1], t))
        return need

    # -- scoring with the distributions in place ----------------------------------------------------
    def _word(self, history: NeuralState, word: str) -> tuple[float, NeuralState]:
        key = (history, word)
        hit = self._word_memo.get(key)
        if hit is not None:
            return hit
        total = 0.0
        for t in self._word_ids(word):
            total += float(self._row(history)[t])
            history = (*history, t)
        return _remember(self._word_memo, key, (total, history))

    def _lookahead(self, history: NeuralState, partial: str) -> float:
        if not partial:
            return 0.0
        key = (history, partial)
        hit = self._la_memo.get(key)
        if hit is not None:
            return hit
        ids, compats = self._split(partial)
        best, exact = -math.inf, 0.0
        for t, compat in zip(ids, compats, strict=True):
            row = self._row(history)
            if compat.size:
                best = max(best, exact + _logsumexp(row[compat]))
            exact += float(row[t])
            history = (*history, t)
        return _remember(self._la_memo, key, best)

    def _plan(self, state: WordState, token: int) -> tuple[NeuralState, str, str, list[NeuralState]]:
        """``(history, completed word or "", new partial, histories needed)`` for one step."""
        history, partial, _ = state
        entry = self._tokens[token] if 0 <= token < len(self._tokens) else None
        if entry is None:
            what = repr(self.pieces[token]) if 0 <= token < len(self.pieces) else "out of range"
            raise UserLibriError(
                f"{self.path}: expected a text token id in [0, {len(self.pieces)}), found {token} ({what})"
            )
        starts_word, text = entry
        need: list[NeuralState] = []
        done = ""
        if starts_word and partial:
            done = partial
            if (history, done) not in self._word_memo:
                need += self._needs(history, done, complete=True)
            after = (*history, *self._word_ids(done))
            new_partial = text
        else:
            after = history
            new_partial = text if starts_word else partial + text
        if new_partial and (after, new_partial) not in self._la_memo:
            need += self._needs(after, new_partial, complete=False)
        return history, done, new_partial, need

    def _finish(
        self, state: WordState, history: NeuralState, done: str, partial: str
    ) -> tuple[float, WordState]:
        delta = -state[2]
        if done:
            value, history = self._word(history, done)
            delta += value
        la = self._lookahead(history, partial)
        return delta + la, (history, partial, la)

    # -- LanguageModel -----------------------------------------------------------------------------
    def start_state(self) -> WordState:
        """After ``<sos/eos>``, no pending word."""
        return ((), "", 0.0)

    def score(self, state: WordState, token: int) -> tuple[float, WordState]:
        """Log-prob change of appending acoustic-model piece ``token`` (see the module docstring)."""
        history, done, partial, need = self._plan(state, token)
        if need:
            self._fill(need)
        return self._finish(state, history, done, partial)

    def score_batch(
        self, states: Sequence[WordState], tokens: Sequence[int]
    ) -> tuple[np.ndarray, list[WordState]]:
        """``score`` for N (state, token) pairs, all missing LM steps computed in one batch."""
        if len(states) != len(tokens):
            raise UserLibriError(f"score_batch: {len(states)} states but {len(tokens)} tokens")
        plans = [self._plan(s, t) for s, t in zip(states, tokens, strict=True)]
        need = [h for p in plans for h in p[3]]
        if need:
            self._fill(need)
        out = [self._finish(s, p[0], p[1], p[2]) for s, p in zip(states, plans, strict=True)]
        return np.array([o[0] for o in out], dtype=np.float64), [o[1] for o in out]

    def final_score(self, state: WordState) -> float:
        """Complete the pending word (replacing its look-ahead) and end the sentence."""
        history, partial, lookahead = state
        self._fill(self._needs(history, partial, complete=True))  # the word's steps and its end
        total = -lookahead
        if partial:
            value, history = self._word(history, partial)
            total += value
        return total + float(self._row(history)[self._eos])

    def clear_cache(self) -> None:
        """Forget cached distributions and memos (between users, to bound memory)."""
        self._lp.clear()
        self._word_memo.clear()
        self._la_memo.clear()
        for lm, _ in self.components:
            lm.clear_cache()


def word_scorer(
    lm: OnnxNeuralLM, am_tokenizer: Any, lm_tokenizer: str | Path | None = None
) -> NeuralWordScorer:
    """A word-synchronous scorer over ``lm`` with its own tokenizer (found beside it unless given)."""
    tok_path = lm_tokenizer if lm_tokenizer is not None else find_lm_tokenizer(lm.path, lm.meta.tokenizer_id)
    return NeuralWordScorer([(lm, 1.0)], Tokenizer.load(tok_path), am_tokenizer)


@register_lm("neural-word")
def load_word_scorer(
    path: str | Path, am_tokenizer: Any, lm_tokenizer: str | Path | None = None
) -> NeuralWordScorer:
    """A word-synchronous scorer over the neural LM at ``path`` (a file or a directory holding
    ``lm.onnx``), with its own tokenizer (found beside it unless given)."""
    if am_tokenizer is None:
        raise UserLibriError(f"{path}: a word-synchronous neural LM needs the acoustic model's tokenizer")
    return word_scorer(open_onnx_lm(path), am_tokenizer, lm_tokenizer)
