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


def colored_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of noise with power spectrum ~ 1/f**slope (0 white, 1 pink, 2 brown)."""
    white = rng.standard_normal(n)
    if slope == 0.0:
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    # sqrt and 1/f spelled out for the named colors: the synthesized corpora stay bit-identical.
    spec /= np.sqrt(f) if slope == 1.0 else f if slope == 2.0 else f ** (slope / 2.0)
    return np.fft.irfft(spec, n)


NOISE_SLOPES = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled to ``snr_db`` below the signal's mean power."""
    p_sig = np.mean(x**2)
    return x + noise * np.sqrt(p_sig / (np.mean(noise**2) * 10 ** (snr_db / 10)))


def sox_raw(samples: np.ndarray, rate: int, effects: list[str], what: str) -> np.ndarray:
    """Run sox ``effects`` on mono float samples at ``rate`` (raw float32 through pipes)."""
    fmt = ["-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-c", "1", "-r", str(rate)]
    cmd = ["sox", "-D", "-V1", *fmt, "-", *fmt, "-", *effects]
    data = np.asarray(samples, dtype="<f4").tobytes()
    r = subprocess.run(cmd, input=data, capture_output=True, check=False, timeout=120)
    if r.returncode:
        raise ExternalToolError(f"sox on {what}: exit status {r.returncode}: {r.stderr.decode()[-300:]}")
    return np.frombuffer(r.stdout, dtype="<f4").copy()


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
        x = add_noise(x, colored_noise(x.size, NOISE_SLOPES[reader.noise_color], rng), reader.snr_db)
    peak = np.max(np.abs(x))
    if peak > 0.98:
        x *= 0.98 / peak
    return x.astype(np.float32)
