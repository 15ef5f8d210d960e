"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from am_export_helpers import TEXTS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-utterance LibriSpeech-layout corpus (train = dev) synthesized with flite."""
    from userlibri.data.audio import read_audio, write_flac
    from userlibri.data.librispeech import write_transcripts
    from userlibri.data.tts import load_engine

    try:
        engine = load_engine("flite:kal16")
    except Exception as e:  # noqa: BLE001 - flite is a Debian package the setup installs
        pytest.skip(f"flite unavailable: {e}")
    root = tmp_path_factory.mktemp("corpus")
    for split in ("train", "dev"):
        chdir = root / split / "1" / "2"
        chdir.mkdir(parents=True)
        trans = {}
        for i, text in enumerate(TEXTS):
            utt = f"1-2-{i:04d}"
            wav = root / f"{split}{i}.wav"
            engine.synthesize(text.lower(), wav)
            samples, rate = read_audio(wav, 16000, resample=True)
            write_flac(chdir / f"{utt}.flac", samples, rate)
            trans[utt] = text
        write_transcripts(chdir / "1-2.trans.txt", trans)
    return root
