"""Decode many audio files (or a manifest) with the offline or streaming recognizer and write one
JSON line per utterance: what ``userlibri decode`` runs.

Each line: ``id``, ``audio``, ``text``, ``ref`` (the manifest transcript, or null), ``tokens``,
``pieces``, ``timestamps`` (s), ``scores`` (total/am/lm/context, natural log), ``audio_seconds``,
``decode_seconds``, ``rtf``, ``timings`` (features/encoder/search). Streaming lines also carry
``first_partial_seconds``: compute time until the first non-empty partial result. The file is
written atomically; the summary (totals, RTF, WER when references exist) is returned.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from userlibri.data.audio import read_audio
from userlibri.errors import ConfigError
from userlibri.fsio import atomic_path
from userlibri.recognizer import OfflineRecognizer, RecognitionResult, RecognizerConfig

log = logging.getLogger(__name__)

DEFAULT_CHUNK_MS = 160


@dataclass(frozen=True)
class DecodeItem:
    """One utterance to decode."""

    id: str
    audio: Path
    ref: str | None = None


def items_from_paths(paths: Sequence[str | Path]) -> list[DecodeItem]:
    """Items for audio files; the id is the file name without its suffix."""
    return [DecodeItem(Path(p).stem, Path(p)) for p in paths]


def items_from_manifest(path: str | Path) -> list[DecodeItem]:
    """Items of a jsonl manifest (``userlibri.data.manifest``), with their transcripts."""
    from userlibri.data.manifest import read_manifest

    return [DecodeItem(u.id, Path(u.audio), u.text) for u in read_manifest(path)]


def _stream_decode(rec: Any, samples: Any, rate: int, lm: Any, chunk: int) -> tuple[RecognitionResult, float]:
    """Feed ``samples`` to a new stream ``chunk`` samples at a time; (final result, compute
    seconds until the first non-empty partial result, or -1)."""
    stream = rec.create_stream(lm=lm)
    first = -1.0
    spent = 0.0
    for start in range(0, len(samples), chunk):
        t0 = time.perf_counter()
        stream.accept_waveform(samples[start : start + chunk], rate)
        rec.decode_streams([stream])
        got = first < 0 and bool(rec.get_result(stream).tokens)
        spent += time.perf_counter() - t0
        if got:
            first = spent
    stream.input_finished()
    rec.decode_streams([stream])
    return rec.get_result(stream), first


def transcribe(
    model_dir: str | Path,
    items: Sequence[DecodeItem],
    out: str | Path,
    config: RecognizerConfig | None = None,
    lm: str | Path | None = None,
    lm_kind: str | None = None,
    streaming: bool = False,
    chunk_ms: int = DEFAULT_CHUNK_MS,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode ``items`` and write ``out`` (jsonl, atomically); return the summary."""
    if not items:
        raise ConfigError("decode: expected at least one audio file or manifest entry, found none")
    if chunk_ms <= 0:
        raise ConfigError(f"chunk_ms: expected > 0, found {chunk_ms}")
    config = (config or RecognizerConfig()).validate()
    t_load = time.perf_counter()
    if streaming:
        from userlibri.stream import OnlineRecognizer

        rec: Any = OnlineRecognizer(model_dir, config)
        if lm is not None:
            rec.lms.get(lm, lm_kind)  # load (and time) it once, before the first utterance
    else:
        rec = OfflineRecognizer(model_dir, lm=lm, lm_kind=lm_kind, config=config)
    load_seconds = time.perf_counter() - t_load
    lm_load = None
    if lm is not None:
        lm_load = rec.lm_info.load_seconds if not streaming else rec.lms.get(lm, lm_kind)[0].load_seconds
    rows: list[dict[str, Any]] = []
    for item in tqdm(items, desc="decode", unit="utt", disable=not progress):
        samples, rate = read_audio(item.audio, expected_rate=None)
        row: dict[str, Any] = {"id": item.id, "audio": str(item.audio)}
        if streaming:
            result, first = _stream_decode(rec, samples, rate, lm, max(1, rate * chunk_ms // 1000))
            row["first_partial_seconds"] = round(first, 6)
        else:
            result = rec.recognize(samples, rate, str(item.audio))
        d = result.to_dict()
        d.pop("final")
        row.update(text=d.pop("text"), ref=item.ref, **d)
        rows.append(row)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    audio_s = sum(r["audio_seconds"] for r in rows)
    decode_s = sum(r["decode_seconds"] for r in rows)
    summary: dict[str, Any] = {
        "utterances": len(rows),
        "audio_seconds": round(audio_s, 3),
        "decode_seconds": round(decode_s, 4),
        "rtf": round(decode_s / audio_s, 5) if audio_s else 0.0,
        "model_load_seconds": round(load_seconds, 4),
        "lm_load_seconds": None if lm_load is None else round(lm_load, 4),
        "streaming": streaming,
        "decoder": config.decoder,
        "out": str(out),
    }
    refs = [r for r in rows if r["ref"]]
    if refs:
        import jiwer

        summary["wer"] = round(jiwer.wer([r["ref"] for r in refs], [r["text"] for r in refs]), 5)
        summary["wer_utterances"] = len(refs)
    return summary
