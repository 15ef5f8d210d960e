"""The tiny UserLibri layout and the ``bench wer`` CLI call shared by the bench-wer tests: noise audio
on which the committed tiny random model (tests/data/am_tiny) emits tokens, transcripts of its
words, and ``lm users``-shaped LM directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from click.testing import CliRunner

DATA = Path(__file__).parent / "data"


MODEL = DATA / "am_tiny"


ARPA = DATA / "recognizer" / "words.arpa"


WORDS = ("ABBA", "CAB", "BAD", "DEAF", "FADE", "BEAD", "FACE", "CAFE", "DAB", "GAG", "EGG")


#: split -> [(speaker, book)]; two utterances each.
TINY_USERS = {
    "dev": [("11", "7")],
    "test-clean": [("21", "5"), ("22", "6")],
    "test-other": [("31", "5"), ("32", "6")],
}


def make_layout(tmp: Path, utts_per_user: int = 2) -> tuple[Path, Path]:
    """(dataset root, n-gram LM dir) of a tiny UserLibri layout: noise audio (the random model emits
    tokens on it), transcripts of the tiny model's words, and `lm users`-shaped LM directories."""
    from userlibri.data import librispeech as ls

    rng = np.random.default_rng(0)
    root = tmp / "UserLibri"
    for split, users in TINY_USERS.items():
        for spk, book in users:
            udir = root / "audio_data" / split / f"speaker-{spk}-book-{book}"
            trans = {}
            for i in range(utts_per_user):
                uid = f"{spk}-100-{i:04d}"
                trans[uid] = " ".join(rng.choice(WORDS, size=3))
                audio = (rng.standard_normal(int(16000 * (0.6 + 0.3 * i))) * 0.1).astype(np.float32)
                udir.mkdir(parents=True, exist_ok=True)
                sf.write(udir / f"{uid}.flac", audio, 16000)
            ls.write_transcripts(udir / f"{spk}-100.trans.txt", trans)
    lm = tmp / "lm"
    (lm / "background").mkdir(parents=True)
    shutil.copy(ARPA, lm / "background" / "ngram.arpa")
    for book in ("5", "6", "7"):
        (lm / book).mkdir()
        shutil.copy(ARPA, lm / book / "ngram.arpa")
        shutil.copy(ARPA, lm / book / "mix.arpa")
    return root, lm


def bench_cli(tmp_path: Path, root: Path, lm: Path, *extra: str) -> tuple[dict, str]:
    from userlibri.cli.bench_wer import wer

    out = tmp_path / "bench"
    args = ["--dataset", str(root), "--model", str(MODEL), "--out", str(out), "--lm-dir", str(lm)]
    args += ["--kinds", "ngram", "--lm-weights", "0.2,0.8", "--length-bonuses", "0,1", "--beam", "4"]
    args += ["--resamples", "500", "--quiet", *extra]
    res = CliRunner().invoke(wer, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "results.json").read_text()), res.output
