"""Utterance manifests: jsonl, one utterance a line, written atomically.

Fields: ``id, user, split, speaker, book, chapter, audio, duration, text``. ``audio`` is absolute, or
relative to the manifest's directory (``read_manifest`` resolves it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from userlibri.errors import DataFormatError, UserLibriError
from userlibri.fsio import write_text_atomic


@dataclass(frozen=True)
class Utterance:
    """One utterance of a UserLibri user. ``duration`` is in seconds (0.0 when unknown)."""

    id: str
    user: str
    split: str
    speaker: str
    book: str
    chapter: str
    audio: str
    duration: float
    text: str


_FIELDS = tuple(f.name for f in fields(Utterance))


def write_manifest(path: str | Path, utts: Iterable[Utterance], relative: bool = False) -> int:
    """Write ``utts`` as jsonl to ``path`` atomically; returns the number written.

    With ``relative``, audio paths are stored relative to the manifest's directory (e.g.
    ``../audio_data/...``), so the tree can be moved or renamed as a whole.
    """
    base = Path(path).parent.resolve()
    lines = []
    seen: set[str] = set()
    for u in utts:
        if u.id in seen:
            raise UserLibriError(f"{path}: duplicate utterance id {u.id!r}")
        seen.add(u.id)
        rec = asdict(u)
        if relative and u.audio:
            rec["audio"] = os.path.relpath(Path(u.audio).resolve(), base)
        lines.append(json.dumps(rec, ensure_ascii=False, sort_keys=False))
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_manifest(path: str | Path, resolve_audio: bool = True) -> list[Utterance]:
    """Read a jsonl manifest; relative audio paths are made absolute against its directory."""
    path = Path(path)
    if not path.is_file():
        raise UserLibriError(f"{path}: no such manifest")
    out: list[Utterance] = []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, "UTF-8 jsonl", f"invalid byte at offset {err.start}") from err
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, "one JSON object per line", str(e), line=no) from e
        if not isinstance(rec, dict):
            raise DataFormatError(path, "a JSON object", type(rec).__name__, line=no)
        missing = [f for f in _FIELDS if f not in rec]
        if missing:
            expected = f"fields {', '.join(_FIELDS)}"
            raise DataFormatError(path, expected, f"missing {', '.join(missing)}", line=no)
        try:
            duration = float(rec["duration"])
        except (TypeError, ValueError):
            raise DataFormatError(path, "a numeric duration", repr(rec["duration"]), line=no) from None
        audio = str(rec["audio"])
        if resolve_audio and audio and not Path(audio).is_absolute():
            audio = os.path.normpath(path.parent / audio)
        out.append(
            Utterance(
                id=str(rec["id"]),
                user=str(rec["user"]),
                split=str(rec["split"]),
                speaker=str(rec["speaker"]),
                book=str(rec["book"]),
                chapter=str(rec["chapter"]),
                audio=audio,
                duration=duration,
                text=str(rec["text"]),
            )
        )
    return out
