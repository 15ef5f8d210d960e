"""Ship a trained acoustic model: copy one precision of an exported model directory, measure its
greedy WER on the test splits (streaming and non-streaming, CTC and transducer, per voice) and
write a model card beside it. What ``userlibri asr ship`` runs; torch-free.

The shipped directory holds the ``int8`` ONNX files (and their ``.ort`` twins when present),
``tokens.txt``, ``tokenizer.model``, ``model.json``, ``eval.json`` and ``MODEL_CARD.md``. It is
written to a temporary directory and renamed into place, so a failed evaluation leaves the old
model untouched.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from userlibri.asr.onnx_model import PRECISION_SUFFIX, ROLES, SUMMARY_FILE, TOKENIZER_FILE, TOKENS_FILE
from userlibri.errors import DataFormatError, UserLibriError
from userlibri.fsio import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
CARD_FILE = "MODEL_CARD.md"
#: (decoder, streaming) pairs measured for the card, in table order.
MODES = (("ctc", False), ("transducer", False), ("ctc", True), ("transducer", True))


def mode_name(decoder: str, streaming: bool) -> str:
    return f"{'streaming' if streaming else 'non-streaming'} {decoder}"


def copy_precision(model: Path, dest: Path, precisions: Sequence[str]) -> list[str]:
    """Copy the files of ``precisions`` (plus tokens, tokenizer, summary) from ``model`` to ``dest``."""
    names = [TOKENS_FILE, TOKENIZER_FILE, SUMMARY_FILE]
    for p in precisions:
        names += [role + PRECISION_SUFFIX[p] for role in ROLES]
    missing = [n for n in names if not (model / n).is_file()]
    if missing:
        raise UserLibriError(
            f"{model}: expected an exported model directory (userlibri asr export) with "
            f"{', '.join(names)}; missing {', '.join(missing)}"
        )
    for n in names:
        shutil.copy2(model / n, dest / n)
    return names


def _voices(data: Path) -> dict[str, str]:
    """speaker id -> voice name from the synthesizer's ``synth.json`` (empty for real data)."""
    path = data / "synth.json"
    if not path.is_file():
        return {}
    try:
        readers = json.loads(path.read_text(encoding="utf-8"))["readers"]
        return {str(r["speaker_id"]): str(r["voice"]) for r in readers}
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(path, "the synth.json written by userlibri synth", repr(exc)) from exc


def _wer(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    import jiwer

    refs = [r["ref"] for r in rows if r["ref"]]
    hyps = [r["text"] for r in rows if r["ref"]]
    if not refs:
        return {"wer": None, "utterances": 0, "words": 0}
    out = jiwer.process_words(refs, hyps)
    words = sum(len(r.split()) for r in refs)
    return {"wer": round(100.0 * out.wer, 2), "utterances": len(refs), "words": words}


def evaluate_greedy(
    model: Path,
    data: Path,
    splits: Sequence[str],
    precision: str = "int8",
    threads: int = 1,
    work: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Greedy (beam 1, no LM) WER of ``model`` per split, mode and voice, with decode RTF."""
    from userlibri.data.librispeech import iter_split
    from userlibri.decode.hyp import DecoderConfig
    from userlibri.recognizer import RecognizerConfig
    from userlibri.transcribe import DecodeItem, transcribe

    voices = _voices(data)
    result: dict[str, Any] = {"precision": precision, "threads": threads, "splits": {}}
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for split in splits:
            items = [DecodeItem(u.utt_id, u.audio_path, u.text) for u in iter_split(data, split)]
            if not items:
                raise UserLibriError(f"{data}/{split}: no utterances to evaluate")
            per_split: dict[str, Any] = {}
            for decoder, streaming in MODES:
                cfg = RecognizerConfig(
                    decoder=decoder, decoding=DecoderConfig(beam=1), precision=precision, num_threads=threads
                )
                hyp = Path(tmp) / f"{split}-{decoder}-{int(streaming)}.jsonl"
                summary = transcribe(model, items, hyp, cfg, streaming=streaming, progress=progress)
                rows = [json.loads(line) for line in hyp.read_text(encoding="utf-8").splitlines()]
                by_voice: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for r in rows:
                    by_voice[voices.get(r["id"].split("-")[0], "unknown")].append(r)
                entry = _wer(rows)
                entry["rtf"] = summary["rtf"]
                entry["voices"] = {v: _wer(rs) for v, rs in sorted(by_voice.items())} if voices else {}
                per_split[mode_name(decoder, streaming)] = entry
                log.info("%s %s: WER %s%%", split, mode_name(decoder, streaming), entry["wer"])
            result["splits"][split] = per_split
    return result


def _training_summary(exp: Path) -> dict[str, Any]:
    """Steps, epochs, wall time and the last dev WER from ``train_log.jsonl``; config from ``config.json``."""
    out: dict[str, Any] = {}
    cfg = exp / "config.json"
    if cfg.is_file():
        out["config"] = json.loads(cfg.read_text(encoding="utf-8"))
    if not (exp / LOG_FILE).is_file():
        return out
    records = read_log(exp)
    for rec in records:
        if rec.get("event") == "stop":
            out["steps"] = rec.get("step")
            out["epochs"] = rec.get("epoch")
            out["stop_reason"] = rec.get("reason")
            out["averaged"] = rec.get("averaged")
        elif rec.get("event") == "dev":
            out["last_dev"] = {k: v for k, v in rec.items() if k.startswith("wer_") or k == "step"}
        elif rec.get("event") == "train":
            out["last_train"] = {k: rec[k] for k in ("step", "ctc", "transducer", "lr") if k in rec}
    out["train_seconds"] = logged_seconds(records)
    return out


#: The training log of an experiment, one JSON object a line (written by ``asr.train``; defined
#: here, like ``DATA_FILE``: ship must not import torch).
LOG_FILE = "train_log.jsonl"


def read_log(exp: Path) -> list[dict[str, Any]]:
    """The records of ``exp``'s training log (none when it has no log)."""
    path = exp / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def logged_seconds(records: list[dict[str, Any]]) -> float:
    """Wall time of a run from its log's ``stop`` records: the newest ``total_seconds`` (every
    process of the run up to there, carried through its checkpoints; a process killed before it
    stopped counts up to its last checkpoint) plus the ``seconds`` of any later stops; logs from
    before ``total_seconds`` existed add up each stop's ``seconds`` (killed processes missing)."""
    seconds = 0.0
    for rec in records:
        if rec.get("event") == "stop":
            if "total_seconds" in rec:
                seconds = float(rec["total_seconds"])
            else:
                seconds += float(rec.get("seconds", 0.0))
    return round(seconds, 1)


#: Written by ``asr.train`` into each experiment (defined here: ship must not import torch).
DATA_FILE = "data.json"


def _data_summary(data: Path, exp: Path | None = None) -> dict[str, Any]:
    """The corpus's synth.json splits, plus the corpora ``asr train --add-train`` added to the last
    run of ``exp`` (from its data.json): their train split and how often it repeats per epoch."""
    path = data / "synth.json"
    if not path.is_file():
        return {}
    synth = json.loads(path.read_text(encoding="utf-8"))
    out = {"splits": synth.get("splits", {}), "perturbation": synth.get("config", {}).get("perturbation")}
    used = (
        json.loads((exp / DATA_FILE).read_text(encoding="utf-8"))
        if exp and (exp / DATA_FILE).is_file()
        else {}
    )
    added = []
    for corpus in used.get("corpora", [])[1:]:
        extra = Path(corpus["data"]) / "synth.json"
        split = json.loads(extra.read_text(encoding="utf-8")).get("splits", {}) if extra.is_file() else {}
        train = split.get(used.get("train_split", "train"), {"utterances": corpus["utterances"]})
        added.append({"name": Path(corpus["data"]).name, "repeat": corpus["repeat"], **train})
    if added:
        out["added"] = added
    if used.get("init_from"):
        init = with_base(dict(used["init_from"]))
        out["init_from"] = {**init, "model_dir": _shown_path(str(init.get("model_dir", "")))}
    return out


def with_base(init: dict[str, Any]) -> dict[str, Any]:
    """``init`` (model_dir, model_version) plus what trained that model, from its ``eval.json``.
    ``asr train --init-from`` records it when it starts; ``ship`` fills it in for older runs unless
    the directory now holds another model (shipping over the model a run started from replaces it)."""
    root = Path(init.get("model_dir", ""))
    path = root / EVAL_FILE
    if "base" in init or not path.is_file():
        return init
    try:
        base = json.loads(path.read_text(encoding="utf-8"))
        version = json.loads((root / SUMMARY_FILE).read_text(encoding="utf-8")).get("model_version")
    except (OSError, ValueError) as exc:
        raise DataFormatError(path, "the eval.json and model.json of userlibri asr ship", repr(exc)) from exc
    if version != init.get("model_version"):
        log.warning(
            "%s now holds %s, not %s: its training is not recorded", root, version, init.get("model_version")
        )
        return init
    train = base.get("training", {})
    init["base"] = {
        "name": base.get("name"),
        "steps": train.get("steps"),
        "train_seconds": train.get("train_seconds"),
        "hardware": base.get("hardware"),
        # Its own start, when it was a fine-tune too: wall time and steps add up along the chain.
        "init_from": base.get("data", {}).get("init_from"),
    }
    return init


def _lineage(init: dict[str, Any]) -> tuple[int, float]:
    """(steps, seconds) of every run before this one, following ``init_from`` back to scratch."""
    steps, seconds = 0, 0.0
    base = init.get("base")
    while base:
        steps += int(base.get("steps") or 0)
        seconds += float(base.get("train_seconds") or 0.0)
        base = (base.get("init_from") or {}).get("base")
    return steps, seconds


def _shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (cards are committed)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _init_lines(init: dict[str, Any] | None, train: dict[str, Any]) -> list[str]:
    """The card's lines on what a fine-tune started from, and the training of the whole chain."""
    if not init:
        return []
    lines = [
        f"- Initialised from {init.get('model_version')} (`asr train --init-from "
        f"{init.get('model_dir')}`); the steps and wall time below are this run's"
    ]
    base = init.get("base")
    if base:
        steps, seconds = _lineage(init)
        lines.append(
            f"- That model ({base.get('name')}): {int(base.get('steps') or 0):,} steps, "
            f"{(base.get('train_seconds') or 0) / 60:.1f} min ({base.get('hardware', 'see its card')}); "
            f"all runs from scratch to this model: {steps + int(train.get('steps') or 0):,} steps, "
            f"{(seconds + float(train.get('train_seconds') or 0)) / 60:.1f} min"
        )
    return lines


def render_card(meta: dict[str, Any]) -> str:
    """The MODEL_CARD.md text for the ``meta`` that ``ship_model`` collects."""
    model, train, data, ev = meta["model"], meta["training"], meta["data"], meta["eval"]
    lines = [
        f"# userlibri acoustic model: {meta['name']}",
        "",
        (
            "A Conformer (CTC + stateless transducer) trained by `recipes/mini/train_am.sh`, then "
            "fine-tuned by `recipes/mini/continue_am.sh`, on speech synthesized by `userlibri synth`; "
            "regenerated by those recipes. Greedy decoding, no LM."
            if data.get("init_from")
            else "A Conformer (CTC + stateless transducer) trained by `recipes/mini/train_am.sh` on speech "
            "synthesized by `userlibri synth`; regenerated by that recipe. Greedy decoding, no LM."
        ),
        "",
        "## Model",
        f"- Parameters: {model['parameters']['total']:,} (encoder {model['parameters']['encoder']:,})",
        f"- Files shipped ({', '.join(meta['precisions'])}): {meta['size_bytes'] / 1e6:.2f} MB",
        f"- Vocabulary: {model['vocab_size']} sentencepiece pieces (blank {model['blank_id']}); streaming "
        f"chunk {model['streaming']['chunk_ms']:g} ms with {model['streaming']['left_chunks']} chunks of "
        "left context",
    ]
    cfg = model.get("am_config", {})
    if cfg:
        lines.append(
            f"- Encoder: {cfg.get('num_layers')} layers, d_model {cfg.get('d_model')}, "
            f"{cfg.get('num_heads')} heads, ff {cfg.get('ff_dim')}, conv kernel {cfg.get('conv_kernel')}"
        )
    lines += ["", "## Training data"]
    for split, s in sorted(data.get("splits", {}).items()):
        lines.append(
            f"- {split}: {s.get('hours', 0):.2f} h, {s.get('utterances')} utterances, {s.get('readers')} "
            f"readers, {s.get('books')} books, voices {', '.join(s.get('voices', []))}"
        )
    for s in data.get("added", []):
        lines.append(
            f"- added ({s['name']}, `asr train --add-train`, x{s['repeat']} per epoch): "
            f"{s.get('hours', 0):.2f} h, {s.get('utterances')} utterances, {s.get('readers')} readers, "
            f"voices {', '.join(s.get('voices', []))}"
        )
    lines += [
        "",
        "Test voices and books are never seen in training (test-clean: held-out flite and festival "
        "HTS voices; test-other: a neural piper voice and flite with noise and reverberation).",
        "",
        "## Training",
        *_init_lines(data.get("init_from"), train),
        f"- Steps: {train.get('steps')}, epochs completed: {train.get('epochs')}, wall time "
        f"{train.get('train_seconds', 0) / 60:.1f} min ({meta.get('hardware', 'see note')})",
        f"- Stop: {train.get('stop_reason')}; averaged checkpoints: {', '.join(train.get('averaged') or [])}",
    ]
    tc = (train.get("config") or {}).get("train", {})
    speeds = tc.get("speed_factors") or []
    if speeds:
        lines.append(
            "- Speed perturbation while training (soxr resampling, on top of the synthesis-time "
            f"perturbation): factors 1.0, {', '.join(f'{f:g}' for f in speeds)} (in the last run's config)"
        )
    if tc.get("noise_copies"):
        snr = "-".join(f"{v:g}" for v in tc.get("noise_snr_db", []))
        slope = "-".join(f"{v:g}" for v in tc.get("noise_slope", []))
        lines.append(
            f"- Noise augmentation: {tc['noise_copies']} more copy(ies) of the training split, each "
            f"utterance reverberated (sox) with probability {tc.get('reverb_prob')} and mixed with noise "
            f"of spectral slope {slope} at {snr} dB SNR"
        )
    if train.get("last_dev"):
        lines.append(f"- Last dev WER (training log, torch greedy): {train['last_dev']}")
    lines += [
        "",
        f"## Greedy WER (%), {ev['precision']} ONNX, {ev['threads']} thread",
        "",
        "| split | " + " | ".join(mode_name(d, s) for d, s in MODES) + " |",
        "|---|" + "---:|" * len(MODES),
    ]
    for split, modes in ev["splits"].items():
        cells = [f"{modes[mode_name(d, s)]['wer']}" for d, s in MODES]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    voices = sorted({v for modes in ev["splits"].values() for m in modes.values() for v in m["voices"]})
    if voices:
        lines += ["", "Per voice (non-streaming CTC / streaming transducer):", ""]
        lines += ["| split | voice | non-streaming ctc | streaming transducer |", "|---|---|---:|---:|"]
        for split, modes in ev["splits"].items():
            for v in voices:
                a = modes["non-streaming ctc"]["voices"].get(v)
                b = modes["streaming transducer"]["voices"].get(v)
                if a and b:
                    lines.append(f"| {split} | {v} | {a['wer']} | {b['wer']} |")
    if meta.get("note"):
        lines += ["", "## Notes", "", meta["note"]]
    return "\n".join(lines) + "\n"


def ship_model(
    exp: str | Path,
    model: str | Path,
    data: str | Path,
    out: str | Path,
    splits: Sequence[str] = ("test-clean", "test-other"),
    precisions: Sequence[str] = ("int8", "ort-int8"),
    threads: int = 1,
    name: str | None = None,
    note: str = "",
    hardware: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Copy ``precisions`` of ``model`` to ``out`` with eval.json and MODEL_CARD.md (atomically)."""
    exp, model, data, out = Path(exp), Path(model), Path(data), Path(out)
    if not precisions:
        raise UserLibriError("ship: expected at least one precision")
    with atomic_path(out) as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True)
        names = copy_precision(model, tmp, precisions)
        ev = evaluate_greedy(tmp, data, splits, precisions[0], threads, progress=progress)
        summary = json.loads((tmp / SUMMARY_FILE).read_text(encoding="utf-8"))
        meta = {
            "name": name or out.name,
            "model": summary,
            "precisions": list(precisions),
            "size_bytes": sum((tmp / n).stat().st_size for n in names if n.endswith((".onnx", ".ort"))),
            "training": _training_summary(exp),
            "data": _data_summary(data, exp),
            "eval": ev,
            "hardware": hardware,
            "note": note,
        }
        write_json_atomic(tmp / EVAL_FILE, meta)
        write_text_atomic(tmp / CARD_FILE, render_card(meta))
    return meta
