"""Named defaults (``DEFAULT_*``) shared across the package."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SEED = 0
DEFAULT_SAMPLE_RATE = 16000

#: Where fetched corpora and other downloads are cached (override with $USERLIBRI_CACHE).
DEFAULT_CACHE_DIR = Path(os.environ.get("USERLIBRI_CACHE", Path.home() / ".cache" / "userlibri"))

#: LibriSpeech/UserLibri split names. ``synth`` writes ``dev`` (and ``dev-clean``/``dev-other`` when
#: a config names them); LibriSpeech has ``dev-clean`` and ``dev-other``.
TRAIN_SPLITS = ("train",)
DEV_SPLITS = ("dev", "dev-clean", "dev-other")
TEST_SPLITS = ("test-clean", "test-other")
ALL_SPLITS = TRAIN_SPLITS + DEV_SPLITS + TEST_SPLITS

#: Word n-gram order for the leakage figure (share of test 8-grams found in LM text).
DEFAULT_LEAKAGE_NGRAM = 8
