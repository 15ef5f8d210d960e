"""Sentencepiece training, determinism, round trip and tokens.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.text.tokenizer import (
    BLANK_PIECE,
    SOS_EOS_PIECE,
    UNK_PIECE,
    Tokenizer,
    TokenizerConfig,
    file_sha256,
    train_tokenizer,
)

CORPUS = Path(__file__).parent / "data" / "lm" / "corpus.txt"
SMALL = TokenizerConfig(vocab_size=80)


def _sentences() -> list[str]:
    return CORPUS.read_text(encoding="utf-8").splitlines()


def test_training_is_deterministic_and_id_is_file_hash(tmp_path: Path) -> None:
    a = train_tokenizer(CORPUS, tmp_path / "a", SMALL)
    b = train_tokenizer(CORPUS, tmp_path / "b", SMALL)
    # From an iterator of sentences rather than a file: same model, same id.
    c = train_tokenizer(iter(_sentences()), tmp_path / "c", SMALL)
    assert a.model_id == b.model_id == c.model_id
    assert a.model_id == file_sha256(tmp_path / "a" / "tokenizer.model")
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == (
        tmp_path / "c" / "tokenizer.model"
    ).read_bytes()
    d = train_tokenizer(CORPUS, tmp_path / "d", TokenizerConfig(vocab_size=90))
    assert d.model_id != a.model_id


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_round_trip_and_special_ids(tmp_path: Path, model_type: str) -> None:
    tok = train_tokenizer(CORPUS, tmp_path, TokenizerConfig(vocab_size=80, model_type=model_type))
    assert tok.vocab_size == 80
    assert tok.pieces[:3] == (BLANK_PIECE, SOS_EOS_PIECE, UNK_PIECE)
    assert (tok.blank_id, tok.unk_id) == (0, 2)
    for sentence in _sentences()[:20]:
        ids = tok.encode(sentence)
        assert ids and all(3 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == sentence
        assert "".join(tok.encode_pieces(sentence)).replace("\u2581", " ").strip() == sentence
    # Blank and sos/eos decode to nothing; characters never seen map to <unk>.
    ids = tok.encode("THE MILLER")
    assert tok.decode([0, *ids, 1]) == "THE MILLER"
    assert tok.unk_id in tok.encode("THE ZEBRA")
    # A bare word-boundary piece before a word-initial one (a model may emit it) gives one space.
    bare = tok.piece_to_id("\u2581")
    assert tok.decode([*ids, bare, bare, *tok.encode("THE")]) == "THE MILLER THE"
    # A loaded copy is the same model.
    loaded = Tokenizer.load(tmp_path)
    assert loaded.model_id == tok.model_id and loaded.pieces == tok.pieces


def test_output_files(tmp_path: Path) -> None:
    tok = train_tokenizer(CORPUS, tmp_path, SMALL)
    lines = (tmp_path / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == tok.vocab_size
    for i, line in enumerate(lines):
        piece, idx = line.rsplit(" ", 1)
        assert (piece, int(idx)) == (tok.pieces[i], i)
    assert lines[0] == "<blk> 0"
    meta = (tmp_path / "tokenizer.json").read_text(encoding="utf-8")
    assert tok.model_id in meta and '"sentences": 60' in meta
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer.vocab",
        "tokens.txt",
    ]


def test_bad_config_and_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_type"):
        train_tokenizer(CORPUS, tmp_path, TokenizerConfig(model_type="word"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="character_coverage"):
        TokenizerConfig(character_coverage=0.0).validate()
    with pytest.raises(UserLibriError, match="0 sentences"):
        train_tokenizer(["", "  "], tmp_path / "empty", SMALL)
    with pytest.raises(DataFormatError, match="no such file"):
        train_tokenizer([tmp_path / "missing.txt"], tmp_path / "x", SMALL)
    # A vocabulary larger than the text supports: sentencepiece's complaint, with the counts.
    with pytest.raises(UserLibriError, match="2 sentences"):
        train_tokenizer(["AB", "BA"], tmp_path / "big", TokenizerConfig(vocab_size=500))
    with pytest.raises(DataFormatError, match="no such file"):
        Tokenizer(tmp_path / "nope.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataFormatError, match="sentencepiece"):
        Tokenizer(bad)
