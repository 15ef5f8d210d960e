"""Our CTC beam search vs pyctcdecode 0.5 vs torchaudio's ``ctc_decoder`` (flashlight-text), fed
the SAME CTC log-probs with the SAME KenLM word model, beam width, LM weight and word bonus.

How the inputs are made equivalent (what each decoder receives):

* **Log-probs**: one ``(T, V)`` natural-log matrix per utterance, from an exported model
  (``OfflineRecognizer``'s full-context encoder) or a saved ``.npz``, or synthesised from real
  transcripts (:func:`synthetic_logprobs`: CTC-peaky, one frame per sentencepiece token, a
  confusable competitor on 25% of the tokens, 1-4 blank frames after each). The ``<sos/eos>``
  column is set to ``SUPPRESS_LOGP`` in the shared matrix, since no text LM can score it (ours
  also suppresses it by id; the peers have no such option). Nothing else is changed.
* **Labels**: the model's sentencepiece pieces by id. pyctcdecode gets them as they are except
  blank -> ``""`` and ``<sos/eos>`` -> ``"<sos_eos>"`` (kept as a never-chosen label); it detects
  the ``▁`` BPE style itself and maps ``<unk>`` to its own unk. flashlight gets the pieces as its
  token set (blank token ``<blk>``, silence token ``<sos/eos>``: a token that is never emitted,
  because word boundaries are carried by ``▁`` inside the pieces) and a **lexicon** mapping every
  word of the LM's vocabulary to its sentencepiece spelling: torchaudio's lexicon-free mode
  treats each token as an LM word, which a word n-gram cannot score, so the lexicon decoder is
  the only way to fuse the same word LM. It can therefore emit only LM-vocabulary words
  (``unk_score=-inf``); ours and pyctcdecode may emit out-of-vocabulary words with an
  unknown-word penalty.
* **LM scale**: KenLM scores are log10. Ours converts to natural log and adds ``lm_weight * lm``;
  pyctcdecode's ``alpha`` multiplies its natural-log conversion, so ``alpha = lm_weight``;
  flashlight adds ``lm_weight * log10 score``, so it gets ``lm_weight * ln 10``. The word bonus
  (pyctcdecode ``beta``, flashlight ``word_score``) is ``word_bonus``; ours has a per-token
  length bonus instead, so ``word_bonus`` must be 0 for a like-for-like run (the default).
* **Beam**: ``beam_width`` for pyctcdecode, ``beam_size`` for flashlight (``beam_size_token`` =
  all tokens, ``beam_threshold`` = 10 like the prune margins of ours and pyctcdecode).

Timing is CPU time per utterance, the median of ``repeats`` interleaved runs (each repeat runs
every decoder once, in an order rotated each repeat, so load on a shared machine and cache
effects between decoders affect all alike), with fresh decoders each repeat: caches filled
while decoding start empty (our LM-state memo, pyctcdecode's LM caches); what each builds from
the LM's vocabulary before decoding is built before timing (pyctcdecode's constructor builds a
CharTrie of the unigrams; our KenLM scorer tabulates the partial-word look-ahead of every
vocabulary prefix when it is loaded). WER via jiwer on the normalised (upper-case) transcripts.
"""

from __future__ import annotations

import logging
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.decode.ctc_beam import CtcBeamSearch, ctc_greedy
from userlibri.decode.hyp import DEFAULT_BEAM_PRUNE, DecoderConfig
from userlibri.errors import ConfigError, DataFormatError, missing_dependency
from userlibri.text.tokenizer import BLANK_PIECE, SOS_EOS_PIECE, Tokenizer

log = logging.getLogger(__name__)

PEERS = ("ours", "pyctcdecode", "flashlight")
SUPPRESS_LOGP = -1.0e4
#: Interleaved repeats: enough for a stable median on a shared, loaded machine.
DEFAULT_REPEATS = 7
LN10 = math.log(10.0)


@dataclass(frozen=True)
class PeerBenchConfig:
    """Shared settings of all decoders."""

    beam: int = 10
    lm_weight: float = 0.5
    word_bonus: float = 0.0
    repeats: int = DEFAULT_REPEATS
    peers: tuple[str, ...] = PEERS

    def validate(self) -> PeerBenchConfig:
        if self.beam < 1 or self.repeats < 1:
            raise ConfigError(f"beam and repeats: expected >= 1, found {self.beam} and {self.repeats}")
        unknown = sorted(set(self.peers) - set(PEERS))
        if unknown:
            raise ConfigError(f"peers: expected some of {PEERS}, found {unknown}")
        return self


@dataclass(frozen=True)
class LogProbSet:
    """CTC log-probs of several utterances with their references and the model's pieces."""

    ids: list[str]
    refs: list[str]
    log_probs: list[np.ndarray]
    pieces: list[str]
    source: str

    def save(self, path: str | Path) -> None:
        from userlibri.fsio import atomic_path

        arrays = {f"lp_{i}": lp.astype(np.float32) for i, lp in enumerate(self.log_probs)}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                ids=np.array(self.ids),
                refs=np.array(self.refs),
                pieces=np.array(self.pieces),
                source=np.array(self.source),
                **arrays,
            )

    @classmethod
    def load(cls, path: str | Path) -> LogProbSet:
        """Read an ``.npz`` written by :meth:`save` (keys ids, refs, pieces, lp_0..lp_{N-1})."""
        try:
            data = np.load(path, allow_pickle=False)
            ids, refs, pieces = (
                list(map(str, data["ids"])),
                list(map(str, data["refs"])),
                list(map(str, data["pieces"])),
            )
            lps = [data[f"lp_{i}"] for i in range(len(ids))]
        except (OSError, KeyError, ValueError) as e:
            raise DataFormatError(path, "an .npz with ids, refs, pieces and lp_0..lp_{N-1}", str(e)) from e
        bad = [i for i, lp in enumerate(lps) if lp.ndim != 2 or lp.shape[1] != len(pieces)]
        if bad:
            raise DataFormatError(path, f"(T, {len(pieces)}) log-prob arrays", f"other shapes at {bad[:5]}")
        return cls(ids, refs, lps, pieces, str(data["source"]) if "source" in data else str(path))


def synthetic_logprobs(refs: Sequence[tuple[str, str]], tokenizer: Tokenizer, seed: int = 0) -> LogProbSet:
    """CTC-peaky log-probs of ``(id, transcript)`` pairs (see the module docstring)."""
    rng = np.random.default_rng(seed)
    v = tokenizer.vocab_size
    lps = []
    for _, text in refs:
        ids = tokenizer.encode(text)
        gaps = rng.integers(1, 5, size=len(ids))
        frames = int(len(ids) + gaps.sum()) + 2
        logits = rng.normal(0.0, 1.0, size=(frames, v))
        t = 0
        for k, gap in zip(ids, gaps, strict=True):
            logits[t, k] += 14.0
            if rng.random() < 0.25:
                logits[t, rng.integers(3, v)] += 13.0 + rng.normal()
            logits[t + 1 : t + 1 + gap, tokenizer.blank_id] += 16.0
            t += 1 + int(gap)
        logits[t:, tokenizer.blank_id] += 16.0
        lps.append((logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32))
    return LogProbSet(
        [i for i, _ in refs], [r for _, r in refs], lps, list(tokenizer.pieces), f"synthetic(seed={seed})"
    )


def model_logprobs(
    model_dir: str | Path, refs: Sequence[tuple[str, str, Path]], threads: int = 1
) -> LogProbSet:
    """CTC log-probs of ``(id, transcript, audio)`` from an exported model's full-context encoder."""
    from userlibri.data.audio import read_audio
    from userlibri.features import compute_fbank
    from userlibri.recognizer import OfflineRecognizer, RecognizerConfig, prepare_samples

    rec = OfflineRecognizer(model_dir, config=RecognizerConfig(num_threads=threads))
    lps = []
    for _, _, audio in refs:
        samples, rate = read_audio(audio, expected_rate=None)
        arr = prepare_samples(samples, rate, rec.sample_rate, str(audio))
        lps.append(rec.am.run(compute_fbank(arr, rec.sample_rate, rec.am.meta.features)).ctc_log_probs)
    return LogProbSet([r[0] for r in refs], [r[1] for r in refs], lps, rec.pieces, f"model {model_dir}")


def _suppressed(lps: Sequence[np.ndarray], pieces: Sequence[str]) -> list[np.ndarray]:
    cols = [i for i, p in enumerate(pieces) if p == SOS_EOS_PIECE]
    out = []
    for lp in lps:
        x = np.array(lp, dtype=np.float32)
        x[:, cols] = SUPPRESS_LOGP
        out.append(x)
    return out


def _lm_words(lm_path: Path) -> list[str]:
    from userlibri.lm.kenlm_scorer import _vocabulary_source
    from userlibri.lm.ngram import SPECIAL_WORDS, read_arpa_unigrams

    return sorted(w for w in read_arpa_unigrams(_vocabulary_source(lm_path)) if w not in SPECIAL_WORDS)


def _ours(lm_path: Path, tokenizer: Tokenizer, cfg: PeerBenchConfig) -> tuple[Callable, Callable]:
    from userlibri.lm.kenlm_scorer import KenLMWordScorer

    lm = KenLMWordScorer(lm_path, tokenizer)
    config = DecoderConfig(beam=cfg.beam, lm_weight=cfg.lm_weight)
    box: list[CtcBeamSearch] = []
    sos = [tokenizer.piece_to_id(SOS_EOS_PIECE)] if SOS_EOS_PIECE in tokenizer.pieces else []

    def reset() -> None:
        box[:] = [CtcBeamSearch(config, lm=lm, suppress_ids=sos, blank_id=tokenizer.blank_id)]

    reset()
    return (lambda lp: tokenizer.decode(box[0].decode(lp)[0].tokens)), reset


def _pyctcdecode(lm_path: Path, pieces: Sequence[str], cfg: PeerBenchConfig) -> tuple[Callable, Callable]:
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError as e:
        raise missing_dependency("pyctcdecode", "pip install pyctcdecode==0.5.0") from e
    labels = ["" if p == BLANK_PIECE else "<sos_eos>" if p == SOS_EOS_PIECE else p for p in pieces]
    words = _lm_words(lm_path)
    box: list[Any] = []

    def reset() -> None:
        box[:] = [
            build_ctcdecoder(
                labels,
                kenlm_model_path=str(lm_path),
                unigrams=words,
                alpha=cfg.lm_weight,
                beta=cfg.word_bonus,
            )
        ]

    reset()
    prune = -DEFAULT_BEAM_PRUNE
    return (lambda lp: box[0].decode(lp, beam_width=cfg.beam, beam_prune_logp=prune)), reset


def _flashlight(
    lm_path: Path, tokenizer: Tokenizer, cfg: PeerBenchConfig, work: Path
) -> tuple[Callable, Callable]:
    try:
        import torch
        from torchaudio.models.decoder import ctc_decoder
    except ImportError as e:
        raise missing_dependency(
            "torchaudio ctc_decoder", "pip install flashlight-text==0.0.7 torchaudio"
        ) from e
    lexicon = work / "lexicon.txt"
    lines = []
    for w in _lm_words(lm_path):
        spelling = tokenizer.encode_pieces(w)
        if spelling and all(p in tokenizer.pieces for p in spelling):
            lines.append(f"{w}\t{' '.join(spelling)}\n")
    lexicon.write_text("".join(lines), encoding="utf-8")
    box: list[Any] = []

    def reset() -> None:
        box[:] = [
            ctc_decoder(
                lexicon=str(lexicon),
                tokens=list(tokenizer.pieces),
                lm=str(lm_path),
                beam_size=cfg.beam,
                beam_threshold=DEFAULT_BEAM_PRUNE,
                lm_weight=cfg.lm_weight * LN10,
                word_score=cfg.word_bonus,
                sil_score=0.0,
                blank_token=BLANK_PIECE,
                sil_token=SOS_EOS_PIECE,
                unk_word="<unk>",
            )
        ]

    def run(lp: np.ndarray) -> str:
        hyp = box[0](torch.from_numpy(np.ascontiguousarray(lp))[None])[0][0]
        return " ".join(w for w in hyp.words if w)

    reset()
    return run, reset


def run_peer_bench(
    data: LogProbSet, lm_path: str | Path, tokenizer: Tokenizer, config: PeerBenchConfig | None = None
) -> dict[str, Any]:
    """Decode ``data`` with each peer; WER and time per utterance (see the module docstring)."""
    import jiwer

    cfg = (config or PeerBenchConfig()).validate()
    lm_path = Path(lm_path)
    if list(tokenizer.pieces) != list(data.pieces):
        raise ConfigError(
            f"vocabulary mismatch: the log-probs ({data.source}) have {len(data.pieces)} pieces, the "
            f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} (or other pieces)"
        )
    lps = _suppressed(data.log_probs, data.pieces)
    frames = sum(lp.shape[0] for lp in lps)
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "lm": str(lm_path),
        "source": data.source,
        "utterances": len(lps),
        "frames": frames,
        "vocab": len(data.pieces),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "timing": (
            "CPU seconds of this process per utterance (time.process_time), median over repeats "
            "run interleaved (each repeat runs every decoder once); wall_ms_per_utt: median wall time"
        ),
        "decoders": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        makers: dict[str, Callable[[], tuple[Callable, Callable]]] = {
            "ours": lambda: _ours(lm_path, tokenizer, cfg),
            "pyctcdecode": lambda: _pyctcdecode(lm_path, data.pieces, cfg),
            "flashlight": lambda: _flashlight(lm_path, tokenizer, cfg, Path(tmp)),
        }
        runs: list[tuple[str, Callable, Callable | None]] = [
            ("greedy", lambda lp: tokenizer.decode(ctc_greedy(lp, tokenizer.blank_id).tokens), None)
        ]
        for name in cfg.peers:
            t0 = time.perf_counter()
            fn, reset = makers[name]()
            log.info("%s ready in %.2f s", name, time.perf_counter() - t0)
            runs.append((name, fn, reset))
        # Interleaved: each repeat runs every decoder once, so load changes on a shared machine
        # affect all of them alike; medians over the repeats are reported.
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        wall: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        outs: dict[str, list[str]] = {}
        for r in range(cfg.repeats):
            # The order rotates each repeat: no decoder always runs right after the same one
            # (their KenLM models share the file's pages and the CPU caches).
            for name, fn, reset in runs[r % len(runs) :] + runs[: r % len(runs)]:
                if reset is not None:
                    reset()
                c0, w0 = time.process_time(), time.perf_counter()
                outs[name] = [fn(lp) for lp in lps]
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
        refs = [r if r.strip() else "<empty>" for r in data.refs]
        for name, _, _ in runs:
            med = statistics.median(cpu[name])
            results["decoders"][name] = {
                "wer": round(float(jiwer.wer(refs, [o.upper() for o in outs[name]])), 5),
                "ms_per_utt": round(1000 * med / len(lps), 3),
                "ms_per_utt_min": round(1000 * min(cpu[name]) / len(lps), 3),
                "wall_ms_per_utt": round(1000 * statistics.median(wall[name]) / len(lps), 3),
                "frames_per_s": round(frames / med) if med > 0 else 0,
            }
            log.info("%s: %s", name, results["decoders"][name])
    dec = results["decoders"]
    for peer in ("pyctcdecode", "flashlight"):
        if peer in dec and "ours" in dec:
            results[f"speedup_vs_{peer}"] = round(dec[peer]["ms_per_utt"] / dec["ours"]["ms_per_utt"], 2)
    return results


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the decoders' WER and time."""
    rows = [f"{'decoder':<12} {'WER %':>7} {'ms/utt':>9} {'frames/s':>10}"]
    for name, r in results["decoders"].items():
        rows.append(f"{name:<12} {100 * r['wer']:7.2f} {r['ms_per_utt']:9.2f} {r['frames_per_s']:10d}")
    return "\n".join(rows)
