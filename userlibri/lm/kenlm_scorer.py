"""KenLM scorers implementing :class:`userlibri.lm.base.LanguageModel` over sentencepiece ids.

* :class:`KenLMWordScorer`: a word-level KenLM fed sub-word pieces. Pieces are buffered until a
  word boundary (a piece starting with ``▁``); the whole word is scored then. A completed word
  that is not in the LM's vocabulary gets KenLM's ``<unk>`` score plus an explicit OOV penalty
  (``oov_penalty``, natural log, default :data:`DEFAULT_OOV_PENALTY`, pyctcdecode's
  ``unk_score_offset`` of -10 in log10): ``<unk>``'s own probability is far too high for a
  decoder, which otherwise merges words into out-of-vocabulary strings ("EMMAEAR").
  Meanwhile the partial word gets a look-ahead score, the best log-prob among vocabulary words
  that start with it, given the previous word (``lookahead="bigram"``, the default, from the
  ARPA's bigrams) or not (``"unigram"``; kind ``kenlm-word-unigram``); see
  :mod:`userlibri.lm.lookahead`. Beams in the middle of a good word are then not
  pruned in favour of beams that have just finished one. A prefix that no vocabulary word
  starts with can only become an OOV word, so it gets the OOV word's score right away
  (``<unk>`` unigram + ``oov_penalty``) and such beams fall early. The unigram look-ahead of
  every prefix of every vocabulary word is tabulated once, at load time (:func:`prefix_lookahead`):
  the decoder's hottest call is then one dict look-up (the bigram one memoises each context and
  prefix it meets). The look-ahead is carried in
  the state and subtracted when the word completes: the scores of a finished sentence sum to
  exactly KenLM's full-sentence score plus ``oov_penalty`` per out-of-vocabulary word.
* :class:`KenLMTokenScorer`: a token-level KenLM whose "words" are sentencepiece pieces.

All scores are natural logs (KenLM's log10 times ln 10). States are plain tuples or
``kenlm.State`` objects: hashable and cheap to compare, for beam merging.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from userlibri.errors import ConfigError, DataFormatError, UserLibriError, missing_dependency
from userlibri.lm.base import register_lm
from userlibri.lm.lookahead import BigramLookahead, prefix_lookahead
from userlibri.lm.ngram import SPECIAL_WORDS, iter_arpa, read_arpa_unigrams
from userlibri.text.tokenizer import BLANK_PIECE, SOS_EOS_PIECE, WORD_BOUNDARY, Tokenizer

log = logging.getLogger(__name__)

LN10 = math.log(10.0)
_KENLM_BINARY_MAGIC = b"mmap lm "
#: Pieces that are not text: the decoder must never feed them to an LM.
_NON_TEXT_PIECES = frozenset({BLANK_PIECE, SOS_EOS_PIECE, "<s>", "</s>", "<pad>"})
#: Natural-log penalty added to KenLM's ``<unk>`` score for a completed out-of-vocabulary word
#: (pyctcdecode's default ``unk_score_offset = -10`` in log10, i.e. -23.03 nats).
DEFAULT_OOV_PENALTY = -10.0 * LN10

#: Partial-word look-aheads: ``unigram`` (the best unigram score of a word with that prefix) and
#: ``bigram`` (the best score given the previous word; :class:`~userlibri.lm.lookahead.BigramLookahead`).
LOOKAHEADS = ("unigram", "bigram")
#: The bigram look-ahead decodes better (mini benchmark, CTC beam 30, weights tuned per condition
#: on the dev users: dev-clean interpolated n-gram 29.6 -> 28.0 non-streaming, 35.8 -> 33.4
#: streaming; background 30.2 -> 29.6, 36.3 -> 35.7; every dev-other n-gram condition 1-2 points
#: better). An LM of 600k bigrams: ~2 s to read its bigrams the first time (then cached on disk,
#: :mod:`userlibri.lm.lookahead`), ~8 MB of tables, plus the memoised look-aheads.
DEFAULT_LOOKAHEAD = "bigram"
#: The LM kinds of word n-grams (``load_lm``): each with its look-ahead.
WORD_KINDS = {"kenlm-word": DEFAULT_LOOKAHEAD, "kenlm-word-unigram": "unigram"}


def word_kind(lookahead: str) -> str:
    """The LM kind that loads word n-grams with ``lookahead`` (one of :data:`LOOKAHEADS`)."""
    for kind, value in WORD_KINDS.items():
        if value == lookahead:
            return kind
    raise ConfigError(f"lookahead: expected one of {', '.join(LOOKAHEADS)}, found {lookahead!r}")


#: A word-scorer state: (KenLM state after the completed words, pending partial word, the
#: look-ahead score already given to that partial word, the look-ahead's context: the last
#: completed word's index in the vocabulary, ``BigramLookahead.start`` after ``<s>``, -1 none).
WordState = tuple  # (kenlm.State, str, float, int)


def _kenlm():  # noqa: ANN202 - module type
    try:
        import kenlm
    except ImportError as e:  # pragma: no cover - core dependency
        raise missing_dependency("kenlm", "run `make setup`") from e
    return kenlm


def is_kenlm_binary(path: str | Path) -> bool:
    """Whether ``path`` is a KenLM binary (as opposed to an ARPA text file)."""
    with open(path, "rb") as f:
        return f.read(len(_KENLM_BINARY_MAGIC)) == _KENLM_BINARY_MAGIC


def load_kenlm(path: str | Path):  # noqa: ANN201 - kenlm.Model
    """Load a KenLM model; an ARPA file is validated first so errors name the bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "a KenLM binary or ARPA file", "no such file")
    if not is_kenlm_binary(path):
        for _ in iter_arpa(path):
            pass
    kenlm = _kenlm()
    try:
        return kenlm.Model(str(path), kenlm.Config())
    except (OSError, RuntimeError, ValueError) as e:
        raise DataFormatError(path, "a KenLM model KenLM can load", f"an error: {e}") from e


def _pieces_of(tokenizer: Tokenizer | Sequence[str]) -> tuple[str, ...]:
    return tokenizer.pieces if isinstance(tokenizer, Tokenizer) else tuple(tokenizer)


def _sidecar(model_path: Path) -> dict[str, object] | None:
    """The ``<name>.json`` written by :func:`userlibri.lm.ngram.train_ngram`, if present."""
    meta = model_path.with_suffix(".json")
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(meta, "JSON n-gram metadata", f"invalid JSON ({e})", line=e.lineno) from e


def _vocabulary_source(model_path: Path) -> Path:
    """The ARPA file holding the vocabulary of ``model_path`` (itself, or ``<name>.arpa`` beside it)."""
    if not is_kenlm_binary(model_path):
        return model_path
    arpa = model_path.with_suffix(".arpa")
    if not arpa.is_file():
        raise DataFormatError(
            model_path,
            f"an ARPA file beside the binary ({arpa.name}) to read the vocabulary from, or a vocabulary",
            "none",
        )
    return arpa


class KenLMWordScorer:
    """Word-level KenLM scores for sentencepiece ids, with a partial-word prefix look-ahead.

    ``tokenizer`` maps ids to pieces (a :class:`Tokenizer` or the list of pieces).
    ``vocabulary``: the LM's words; by default read from the ARPA (the model itself or the
    ``.arpa`` beside a binary); words KenLM does not know are dropped from it.
    ``oov_penalty`` (natural log, <= 0) is added to KenLM's ``<unk>`` score for every completed
    word outside the vocabulary. ``unknown_prefix_score`` (natural log) is the look-ahead for a
    partial word that no vocabulary word starts with; by default what such a word will cost as
    a unigram, ``<unk>``'s unigram score + ``oov_penalty``. ``lookahead``: one of
    :data:`LOOKAHEADS` (``bigram`` reads the bigrams of the ARPA file, or of the ``.arpa`` beside a
    binary; a lone binary, with ``vocabulary`` given, falls back to ``unigram`` with a warning).
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer: Tokenizer | Sequence[str],
        vocabulary: Sequence[str] | None = None,
        unknown_prefix_score: float | None = None,
        oov_penalty: float = DEFAULT_OOV_PENALTY,
        lookahead: str = DEFAULT_LOOKAHEAD,
    ) -> None:
        if lookahead not in LOOKAHEADS:
            raise ConfigError(f"lookahead: expected one of {', '.join(LOOKAHEADS)}, found {lookahead!r}")
        if not (math.isfinite(oov_penalty) and oov_penalty <= 0.0):
            raise ConfigError(f"oov_penalty: expected a finite natural-log value <= 0, found {oov_penalty}")
        if unknown_prefix_score is not None and not (
            math.isfinite(unknown_prefix_score) and unknown_prefix_score <= 0.0
        ):
            raise ConfigError(
                f"unknown_prefix_score: expected a finite natural-log value <= 0, "
                f"found {unknown_prefix_score}"
            )
        kenlm = _kenlm()
        self.path = Path(model_path)
        self.model = load_kenlm(self.path)
        self._State = kenlm.State
        meta = _sidecar(self.path)
        if meta is not None and meta.get("kind") not in (None, "kenlm-word"):
            raise UserLibriError(
                f"{self.path}: expected a word-level n-gram LM, found kind {meta.get('kind')!r} "
                f"in {self.path.with_suffix('.json')}"
            )
        self.pieces = _pieces_of(tokenizer)
        if vocabulary is None:
            vocabulary = list(read_arpa_unigrams(_vocabulary_source(self.path)))
        words = sorted({w for w in vocabulary if w not in SPECIAL_WORDS and w in self.model})
        null = self._State()
        self.model.NullContextWrite(null)
        out = self._State()
        self._words = tuple(words)
        self._word_set = frozenset(words)
        self._word_scores = np.array(
            [self.model.BaseScore(null, w, out) * LN10 for w in words], dtype=np.float64
        )
        self.unk_score = self.model.BaseScore(null, "<unk>", out) * LN10
        self.oov_penalty = float(oov_penalty)
        self.unknown_prefix_score = (
            self.unk_score + self.oov_penalty if unknown_prefix_score is None else float(unknown_prefix_score)
        )
        #: Look-ahead of every prefix of a vocabulary word (others: ``unknown_prefix_score``).
        self._lookahead = prefix_lookahead(words, self._word_scores.tolist())
        self._bigram: BigramLookahead | None = None
        self._index: dict[str, int] = {}
        self._start_context = BigramLookahead.NO_CONTEXT
        if lookahead == "bigram":
            try:
                arpa = _vocabulary_source(self.path)
            except DataFormatError as e:  # a lone binary (its vocabulary given): no bigrams to read
                log.warning("%s; unigram look-ahead instead", e)
                lookahead = "unigram"
            else:
                self._bigram = BigramLookahead(arpa, words, self._lookahead, self.unknown_prefix_score)
                self._index = self._bigram.index
                self._start_context = self._bigram.start
                self.score = self._score_bigram  # type: ignore[method-assign]
        self.lookahead = lookahead
        # Per id: (starts a word, text, look-ahead of ``text`` alone: the partial word after a
        # word-start piece), or None for non-text pieces.
        self._tokens: tuple[tuple[bool, str, float] | None, ...] = tuple(
            None
            if piece in _NON_TEXT_PIECES
            else (True, piece[len(WORD_BOUNDARY) :], self._initial_lookahead(piece[len(WORD_BOUNDARY) :]))
            if piece.startswith(WORD_BOUNDARY)
            else (False, piece, 0.0)
            for piece in self.pieces
        )

    def __repr__(self) -> str:
        return (
            f"KenLMWordScorer({str(self.path)!r}, order={self.model.order}, words={len(self._words)}, "
            f"lookahead={self.lookahead})"
        )

    @property
    def order(self) -> int:
        return self.model.order

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The LM's words (sorted, without ``<s>``, ``</s>``, ``<unk>``): what is not OOV."""
        return self._words

    def word_score(self, kstate, word: str):  # noqa: ANN001, ANN201 - kenlm.State
        """Natural-log score of the completed ``word`` after ``kstate`` (``oov_penalty`` added
        when it is out of vocabulary); returns ``(score, next_kenlm_state)``."""
        out = self._State()
        value = self.model.BaseScore(kstate, word, out) * LN10
        if word not in self._word_set:
            value += self.oov_penalty
        return value, out

    def prefix_score(self, prefix: str) -> float:
        """Natural-log look-ahead for a partial word: the best unigram score of a word with this
        prefix, or ``unknown_prefix_score`` when no vocabulary word starts with it."""
        return self._lookahead.get(prefix, self.unknown_prefix_score)

    def _initial_lookahead(self, text: str) -> float:
        """Look-ahead after a word-start piece: of ``text``, or 0 for a bare word boundary."""
        return self.prefix_score(text) if text else 0.0

    def start_state(self) -> WordState:
        """After ``<s>``, no pending word."""
        state = self._State()
        self.model.BeginSentenceWrite(state)
        return (state, "", 0.0, self._start_context)

    def _bad_token(self, token: int) -> UserLibriError:
        what = repr(self.pieces[token]) if 0 <= token < len(self.pieces) else "out of range"
        return UserLibriError(
            f"{self.path}: expected a text token id in [0, {len(self.pieces)}), found {token} ({what})"
        )

    def _entry(self, token: int) -> tuple[bool, str, float]:
        """``(starts a word, text, look-ahead of the text alone)`` of a text token; an error
        naming the LM for any other id."""
        try:
            entry = self._tokens[token] if token >= 0 else None
        except (IndexError, TypeError):
            entry = None
        if entry is None:
            raise self._bad_token(token)
        return entry

    def score(self, state: WordState, token: int) -> tuple[float, WordState]:
        """Log-prob of appending ``token``: a completed word's score (minus its look-ahead) when
        ``token`` starts a new word, plus the look-ahead change of the pending partial word.

        The decoder's hottest call: one tuple look-up per token, one dict look-up per partial
        word, one KenLM call per completed word, nothing else allocated but the new state."""
        kstate, partial, lookahead, context = state
        starts_word, text, new_lookahead = self._entry(token)
        if starts_word:
            if partial:  # word_score, inlined
                out = self._State()
                delta = self.model.BaseScore(kstate, partial, out) * LN10 - lookahead
                if partial not in self._word_set:
                    delta += self.oov_penalty
                return delta + new_lookahead, (out, text, new_lookahead, context)
            return new_lookahead - lookahead, (kstate, text, new_lookahead, context)
        partial += text
        new_lookahead = self._lookahead.get(partial, self.unknown_prefix_score) if partial else 0.0
        return new_lookahead - lookahead, (kstate, partial, new_lookahead, context)

    def _score_bigram(self, state: WordState, token: int) -> tuple[float, WordState]:
        """:meth:`score` with the bigram look-ahead: the partial word's look-ahead depends on the
        last completed word (the state's context)."""
        kstate, partial, lookahead, context = state
        starts_word, text, _ = self._entry(token)
        delta = -lookahead
        if starts_word:
            if partial:
                out = self._State()
                delta += self.model.BaseScore(kstate, partial, out) * LN10
                context = self._index.get(partial, BigramLookahead.NO_CONTEXT)
                if context < 0:
                    delta += self.oov_penalty
                kstate = out
            partial = text
        else:
            partial += text
        new_lookahead = self._bigram.score(context, partial) if partial else 0.0  # type: ignore[union-attr]
        return delta + new_lookahead, (kstate, partial, new_lookahead, context)

    def final_score(self, state: WordState) -> float:
        """Complete the pending word (replacing its look-ahead) and add ``</s>``."""
        kstate, partial, lookahead, _ = state
        total = -lookahead
        if partial:
            value, kstate = self.word_score(kstate, partial)
            total += value
        return total + self.model.BaseScore(kstate, "</s>", self._State()) * LN10


class KenLMTokenScorer:
    """Token-level KenLM over sentencepiece pieces (the LM's words are the tokenizer's pieces).

    Refuses an LM trained with a different tokenizer: by the tokenizer id in the LM's ``.json``
    sidecar when there is one, else by LM words that are not pieces of ``tokenizer``.
    """

    def __init__(self, model_path: str | Path, tokenizer: Tokenizer | Sequence[str]) -> None:
        kenlm = _kenlm()
        self.path = Path(model_path)
        self.model = load_kenlm(self.path)
        self._State = kenlm.State
        self.pieces = _pieces_of(tokenizer)
        self._check_vocabulary(tokenizer)
        self._words: list[str | None] = [None if p in _NON_TEXT_PIECES else p for p in self.pieces]

    def __repr__(self) -> str:
        return f"KenLMTokenScorer({str(self.path)!r}, order={self.model.order}, pieces={len(self.pieces)})"

    @property
    def order(self) -> int:
        return self.model.order

    def _check_vocabulary(self, tokenizer: Tokenizer | Sequence[str]) -> None:
        tok_name = (
            str(tokenizer.path)
            if isinstance(tokenizer, Tokenizer)
            else f"a list of {len(self.pieces)} pieces"
        )
        meta = _sidecar(self.path)
        if meta is not None:
            if meta.get("kind") not in (None, "kenlm-token"):
                raise UserLibriError(
                    f"{self.path}: expected a token-level n-gram LM, found kind {meta.get('kind')!r} "
                    f"in {self.path.with_suffix('.json')}"
                )
            lm_id = meta.get("tokenizer_id")
            if isinstance(tokenizer, Tokenizer) and lm_id and lm_id != tokenizer.model_id:
                raise UserLibriError(
                    f"tokenizer/LM vocabulary mismatch: LM {self.path} was trained with tokenizer id "
                    f"{str(lm_id)[:16]}..., but tokenizer {tok_name} has id {tokenizer.model_id[:16]}..."
                )
        source = self.path if not is_kenlm_binary(self.path) else self.path.with_suffix(".arpa")
        if not source.is_file():
            return  # a bare binary without a sidecar: nothing to check against
        known = set(self.pieces) | set(SPECIAL_WORDS)
        foreign = sorted(w for w in read_arpa_unigrams(source) if w not in known)
        if foreign:
            raise UserLibriError(
                f"tokenizer/LM vocabulary mismatch: LM {source} has {len(foreign)} word(s) that are not "
                f"pieces of tokenizer {tok_name}, e.g. {foreign[:5]}"
            )

    def start_state(self):  # noqa: ANN201 - kenlm.State
        """After ``<s>``."""
        state = self._State()
        self.model.BeginSentenceWrite(state)
        return state

    def score(self, state, token: int):  # noqa: ANN001, ANN201 - kenlm.State
        """Log-prob of piece ``token`` after ``state``; returns ``(logprob, next_state)``."""
        word = self._words[token] if 0 <= token < len(self._words) else None
        if word is None:
            what = repr(self.pieces[token]) if 0 <= token < len(self.pieces) else "out of range"
            raise UserLibriError(
                f"{self.path}: expected a text token id in [0, {len(self.pieces)}), found {token} ({what})"
            )
        out = self._State()
        return self.model.BaseScore(state, word, out) * LN10, out

    def final_score(self, state) -> float:  # noqa: ANN001
        """Log-prob of ``</s>`` after ``state``."""
        return self.model.BaseScore(state, "</s>", self._State()) * LN10


def _word_loader(kind: str):  # noqa: ANN202 - an LM loader
    lookahead = WORD_KINDS[kind]

    def load(path: str | Path, tokenizer: Tokenizer | Sequence[str] | None) -> KenLMWordScorer:
        if tokenizer is None:
            raise UserLibriError(
                f"{path}: a word-level KenLM scorer needs the tokenizer of the acoustic model"
            )
        return KenLMWordScorer(path, tokenizer, lookahead=lookahead)

    load.__doc__ = f"Loader for the ``{kind}`` kind (the {lookahead} look-ahead)."
    return load


# kenlm-word: the bigram look-ahead; kenlm-word-unigram: the default before it (loads faster on a
# file's first load, decodes worse).
for _kind in WORD_KINDS:
    register_lm(_kind)(_word_loader(_kind))


@register_lm("kenlm-token")
def load_token_scorer(path: str | Path, tokenizer: Tokenizer | Sequence[str] | None) -> KenLMTokenScorer:
    """Loader for the ``kenlm-token`` kind."""
    if tokenizer is None:
        raise UserLibriError(f"{path}: a token-level KenLM scorer needs its tokenizer")
    return KenLMTokenScorer(path, tokenizer)
