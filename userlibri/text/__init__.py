"""userlibri.text: LibriSpeech-style normalisation and sentence splitting of book text."""

from userlibri.text.normalize import normalize_transcript, normalize_words
from userlibri.text.sentences import split_sentences

__all__ = ["normalize_transcript", "normalize_words", "split_sentences"]
