"""The acoustic model's tokenizer: the experiment's own (``out/tokenizer``), a given one copied in,
or one trained on the training transcripts plus sentences of the books read in the training split
(so that the word pieces cover the vocabulary of those books, not only what the speakers said)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from userlibri.asr.config import ExperimentConfig
from userlibri.asr.data import SourceUtt
from userlibri.fsio import atomic_path
from userlibri.text.tokenizer import MODEL_FILE, Tokenizer, train_tokenizer

log = logging.getLogger("userlibri.asr.train")

TOKENIZER_DIR = "tokenizer"


def _book_sentences(data: Path, split: str, limit: int) -> list[str]:
    """Normalised sentences of the books read in ``split`` (LibriSpeech layout), at most ``limit``."""
    from userlibri.data.librispeech import find_book_text, read_book_text, read_chapters
    from userlibri.text.normalize import normalize_transcript
    from userlibri.text.sentences import split_sentences

    chapters_file = data / "CHAPTERS.TXT"
    if limit <= 0 or not chapters_file.is_file():
        return []
    books = sorted({c.book_id for c in read_chapters(chapters_file).values() if c.subset == split})
    out: list[str] = []
    for book in books:
        path = find_book_text(data, book)
        if path is None:
            continue
        for sent in split_sentences(read_book_text(path)):
            norm = normalize_transcript(sent)
            if norm:
                out.append(norm)
                if len(out) >= limit:
                    return out
    return out


def prepare_tokenizer(
    out: Path,
    config: ExperimentConfig,
    train_utts: Sequence[SourceUtt],
    data: Path,
    split: str,
    tokenizer: Path | None,
) -> Tokenizer:
    """The experiment's tokenizer: ``out/tokenizer`` if present, else a copy of ``tokenizer``, else
    one trained on the training transcripts plus sentences of the training books."""
    tok_dir = out / TOKENIZER_DIR
    if (tok_dir / MODEL_FILE).is_file():
        return Tokenizer.load(tok_dir)
    if tokenizer is not None:
        src = Tokenizer.load(tokenizer)
        with atomic_path(tok_dir) as tmp:
            tmp.mkdir(parents=True)
            shutil.copy2(src.path, tmp / MODEL_FILE)
            Tokenizer(tmp / MODEL_FILE).write_tokens_txt(tmp / "tokens.txt")
        return Tokenizer.load(tok_dir)
    text = [u.text for u in train_utts] + _book_sentences(data, split, config.train.tokenizer_book_sentences)
    log.info("training a tokenizer on %d sentences", len(text))
    return train_tokenizer(text, tok_dir, config.tokenizer)
