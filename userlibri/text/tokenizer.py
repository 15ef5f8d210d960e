"""Sentencepiece tokenizer shared by the acoustic model and the token-level LMs.

Training is deterministic (one thread, fixed seed, sentences fed through an iterator so no file
path ends up inside the model), so the same text and config give a byte-identical ``.model`` file
and hence the same model id (the sha256 of that file).

Id layout, as icefall/sherpa-onnx BPE models use it: ``0 = <blk>`` (CTC/transducer blank),
``1 = <sos/eos>``, ``2 = <unk>``, then the learned pieces. No BOS/EOS ids are added on encode.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from userlibri.constants import DEFAULT_SEED
from userlibri.errors import ConfigError, DataFormatError, UserLibriError, missing_dependency
from userlibri.fsio import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 500
DEFAULT_MODEL_TYPE = "unigram"
DEFAULT_CHARACTER_COVERAGE = 1.0
BLANK_PIECE = "<blk>"
SOS_EOS_PIECE = "<sos/eos>"
UNK_PIECE = "<unk>"
#: The word-boundary marker sentencepiece puts at the start of word-initial pieces.
WORD_BOUNDARY = "\u2581"

MODEL_FILE = "tokenizer.model"
VOCAB_FILE = "tokenizer.vocab"
TOKENS_FILE = "tokens.txt"
META_FILE = "tokenizer.json"


def _spm():  # noqa: ANN202 - module type
    try:
        import sentencepiece
    except ImportError as e:  # pragma: no cover - core dependency
        raise missing_dependency("sentencepiece", "run `make setup`") from e
    return sentencepiece


@dataclass(frozen=True)
class TokenizerConfig:
    """How to train a sentencepiece model."""

    vocab_size: int = DEFAULT_VOCAB_SIZE
    model_type: Literal["unigram", "bpe"] = DEFAULT_MODEL_TYPE
    character_coverage: float = DEFAULT_CHARACTER_COVERAGE
    seed: int = DEFAULT_SEED
    #: Longest sentence (in characters) used for training; longer ones are skipped by sentencepiece.
    max_sentence_length: int = 8192

    def validate(self) -> None:
        """Raise ``ConfigError`` for values sentencepiece would reject or misuse."""
        if self.model_type not in ("unigram", "bpe"):
            raise ConfigError(f"model_type: expected 'unigram' or 'bpe', found {self.model_type!r}")
        if self.vocab_size < 4:
            raise ConfigError(f"vocab_size: expected >= 4 (3 special ids + pieces), found {self.vocab_size}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(
                f"character_coverage: expected a value in (0, 1], found {self.character_coverage}"
            )
        if self.max_sentence_length < 1:
            raise ConfigError(f"max_sentence_length: expected >= 1, found {self.max_sentence_length}")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Tokenizer:
    """A loaded sentencepiece model: encode/decode, pieces, special ids and the model id."""

    def __init__(self, model_path: str | Path) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise DataFormatError(self.path, "a sentencepiece .model file", "no such file")
        sp = _spm().SentencePieceProcessor()
        try:
            sp.load(str(self.path))
        except (OSError, RuntimeError) as e:
            raise DataFormatError(self.path, "a sentencepiece model", f"an unreadable file ({e})") from e
        self._sp = sp
        self.model_id = file_sha256(self.path)
        self.pieces: tuple[str, ...] = tuple(sp.id_to_piece(i) for i in range(sp.get_piece_size()))
        self._piece_ids = {p: i for i, p in enumerate(self.pieces)}

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load from a ``.model`` file or a directory holding ``tokenizer.model``."""
        path = Path(path)
        return cls(path / MODEL_FILE if path.is_dir() else path)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @property
    def blank_id(self) -> int:
        return self._piece_ids.get(BLANK_PIECE, 0)

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    def piece_to_id(self, piece: str) -> int:
        """Id of ``piece``; ``KeyError`` if the model has no such piece."""
        return self._piece_ids[piece]

    def id_to_piece(self, token: int) -> str:
        return self.pieces[token]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS)."""
        return self._sp.encode(text, out_type=int)

    def encode_pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, single-spaced; special ids (blank, sos/eos) decode to nothing. (A model
        may emit a bare word-boundary piece before a word-initial one: sentencepiece alone would
        give a double space.)"""
        return " ".join(self._sp.decode([int(i) for i in ids]).split())

    def write_tokens_txt(self, path: str | Path) -> None:
        """Write ``<piece> <id>`` lines, the ``tokens.txt`` sherpa-onnx reads, atomically."""
        write_text_atomic(path, "".join(f"{p} {i}\n" for i, p in enumerate(self.pieces)))

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, id={self.model_id[:12]})"


def _iter_sentences(source: str | Path | Sequence[str | Path] | Iterable[str]) -> Iterator[str]:
    """Non-empty stripped lines from a file, several files, or an iterable of sentences."""
    if isinstance(source, (str, Path)):
        source = [Path(source)]
    items = list(source) if isinstance(source, Sequence) else None
    if items is not None and items and all(isinstance(s, Path) for s in items):
        for path in items:
            if not path.is_file():
                raise DataFormatError(path, "a text file (one sentence a line)", "no such file")
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        yield line
        return
    for line in items if items is not None else source:
        if not isinstance(line, str):
            raise UserLibriError(
                f"tokenizer training input: expected sentences (str) or paths, found {type(line).__name__}"
            )
        line = line.strip()
        if line:
            yield line


def train_tokenizer(
    source: str | Path | Sequence[Path] | Iterable[str],
    out_dir: str | Path,
    config: TokenizerConfig = TokenizerConfig(),
) -> Tokenizer:
    """Train a sentencepiece model on ``source`` and write it to ``out_dir``.

    ``source`` is a text file (or a list of ``Path``), one sentence a line, or an iterable of
    sentences (a ``str`` is taken as a path). Writes ``tokenizer.model``, ``tokenizer.vocab``,
    ``tokens.txt`` and ``tokenizer.json`` (config, model id, sentence count), each atomically.
    """
    config.validate()
    spm = _spm()
    out_dir = Path(out_dir)
    counts = {"sentences": 0, "chars": 0}

    def counted() -> Iterator[str]:
        for s in _iter_sentences(source):
            counts["sentences"] += 1
            counts["chars"] += len(s)
            yield s

    model = io.BytesIO()
    spm.set_random_generator_seed(config.seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=counted(),
            model_writer=model,
            vocab_size=config.vocab_size,
            model_type=config.model_type,
            character_coverage=config.character_coverage,
            max_sentence_length=config.max_sentence_length,
            num_threads=1,
            shuffle_input_sentence=False,
            unk_id=2,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            control_symbols=[BLANK_PIECE, SOS_EOS_PIECE],
            unk_piece=UNK_PIECE,
            minloglevel=2,
        )
    except RuntimeError as e:
        if counts["sentences"] == 0:
            raise UserLibriError(
                f"tokenizer training: expected some text, found 0 sentences in {source!r}"
            ) from e
        raise UserLibriError(
            f"sentencepiece training failed on {counts['sentences']} sentences "
            f"({counts['chars']} characters) with vocab_size={config.vocab_size}: {e}"
        ) from e
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        tmp.write_bytes(model.getvalue())
    tok = Tokenizer(out_dir / MODEL_FILE)
    # Piece scores as the .vocab file spm_train writes: "<piece>\t<score>".
    sp = tok._sp
    write_text_atomic(
        out_dir / VOCAB_FILE, "".join(f"{p}\t{sp.get_score(i):g}\n" for i, p in enumerate(tok.pieces))
    )
    tok.write_tokens_txt(out_dir / TOKENS_FILE)
    write_json_atomic(
        out_dir / META_FILE,
        {"config": asdict(config), "model_id": tok.model_id, "vocab_size": tok.vocab_size, **counts},
    )
    log.info(
        "trained %s tokenizer: %d pieces from %d sentences -> %s (id %s)",
        config.model_type,
        tok.vocab_size,
        counts["sentences"],
        out_dir / MODEL_FILE,
        tok.model_id[:12],
    )
    return tok
