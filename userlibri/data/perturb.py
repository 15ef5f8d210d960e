"""Synthetic readers: a base TTS voice plus a deterministic perturbation, applied with sox
(speed, pitch, tempo, reverberation, gain, resampling to mono) and numpy (additive white, pink or
brown noise at an SNR, from a per-utterance seed)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from userlibri.errors import ExternalToolError


@dataclass(frozen=True)
class Reader:
    """A synthetic speaker: a base voice plus a deterministic perturbation."""

    speaker_id: str
    split: str
    voice: str
    book_id: str
    sex: str
    speed: float = 1.0
    pitch_cents: float = 0.0
    tempo: float = 1.0
    gain_db: float = 0.0
    snr_db: float | None = None
    noise_color: str = ""
    reverberance: float | None = None
    room_scale: float = 100.0

    @property
    def name(self) -> str:
        parts = [
            self.voice,
            f"speed {self.speed:.3f}",
            f"pitch {self.pitch_cents:+.0f}c",
            f"tempo {self.tempo:.3f}",
        ]
        if self.snr_db is not None:
            parts.append(f"{self.noise_color} noise {self.snr_db:.1f} dB")
        if self.reverberance is not None:
            parts.append(f"reverb {self.reverberance:.0f}%")
        return ", ".join(parts)

    def sox_effects(self, sample_rate: int) -> list[str]:
        fx: list[str] = []
        if self.speed != 1.0:
            fx += ["speed", f"{self.speed:.4f}"]
        if self.pitch_cents != 0.0:
            fx += ["pitch", f"{self.pitch_cents:.1f}"]
        if self.tempo != 1.0:
            fx += ["tempo", "-s", f"{self.tempo:.4f}"]
        if self.reverberance is not None:
            fx += ["reverb", f"{self.reverberance:.1f}", "50", f"{self.room_scale:.1f}"]
        fx += ["channels", "1", "rate", "-v", str(sample_rate)]
        if self.gain_db != 0.0:
            fx += ["gain", f"{self.gain_db:.2f}"]
        return fx


def _noise(color: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if color == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f) if color == "pink" else f
    return np.fft.irfft(spec, n)


def render(raw_wav: Path, reader: Reader, sample_rate: int, utt_seed: int) -> np.ndarray:
    """Perturb ``raw_wav`` as ``reader`` speaks: sox effects, then noise at the reader's SNR."""
    cmd = ["sox", "-D", "-V1", str(raw_wav), "-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-"]
    r = subprocess.run(cmd + reader.sox_effects(sample_rate), capture_output=True, check=False, timeout=120)
    if r.returncode:
        raise ExternalToolError(f"sox on {raw_wav}: exit status {r.returncode}: {r.stderr.decode()[-300:]}")
    x = np.frombuffer(r.stdout, dtype="<f4").astype(np.float64)
    if x.size == 0 or not np.any(x):
        raise ExternalToolError(f"sox on {raw_wav}: empty audio")
    if reader.snr_db is not None:
        rng = np.random.default_rng(utt_seed)
        noise = _noise(reader.noise_color, x.size, rng)
        p_sig = np.mean(x**2)
        noise *= np.sqrt(p_sig / (np.mean(noise**2) * 10 ** (reader.snr_db / 10)))
        x = x + noise
    peak = np.max(np.abs(x))
    if peak > 0.98:
        x *= 0.98 / peak
    return x.astype(np.float32)
