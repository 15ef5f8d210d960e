"""The decoding side of ``userlibri bench wer``: one user's utterances under many LM conditions.

The acoustic model's output does not depend on the LM, so each user's audio goes through the
encoder once per mode and every LM condition, weight and length bonus re-runs only the beam search
on it:

* non-streaming: ``OfflineRecognizer``'s encoder output (CTC log-probs, or encoder frames for the
  transducer) is searched whole, exactly as ``OfflineRecognizer.recognize`` does;
* streaming: an ``OnlineRecognizer`` stream is fed the audio in ``chunk_ms`` pieces with a
  recorder in place of its beam search, which keeps the encoder chunks in order; a search is then
  advanced over the same chunks and finalised, exactly as the stream would have done.

Both are checked against the recognizers decoding with the LM themselves (tests). Each job writes
one jsonl file (``id``, ``text``, ``scores``, ``audio_seconds``, ``encoder_seconds``,
``search_seconds``) atomically, so a rerun skips what exists.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.bench.wer_conditions import LMSpec
from userlibri.data.audio import read_audio
from userlibri.decode.hyp import DecoderConfig
from userlibri.errors import ConfigError, UserLibriError
from userlibri.features import compute_fbank
from userlibri.fsio import write_text_atomic
from userlibri.recognizer import (
    OfflineRecognizer,
    RecognitionResult,
    RecognizerConfig,
    make_result,
    make_search,
    prepare_samples,
)

log = logging.getLogger(__name__)

DEFAULT_CHUNK_MS = 160
#: Per-user LMs kept loaded in a worker besides those every user shares.
DEFAULT_KEEP_LMS = 4


@dataclass(frozen=True)
class DecodeSettings:
    """What stays fixed for a whole benchmark run."""

    model_dir: Path
    decoder: str = "ctc"
    beam: int = 10
    precision: str = "float"
    threads: int = 1
    chunk_ms: int = DEFAULT_CHUNK_MS

    def validate(self) -> DecodeSettings:
        if self.chunk_ms <= 0:
            raise ConfigError(f"chunk_ms: expected > 0, found {self.chunk_ms}")
        self.recognizer_config(0.0, 0.0).validate()
        return self

    def recognizer_config(self, lm_weight: float, length_bonus: float) -> RecognizerConfig:
        return RecognizerConfig(
            decoder=self.decoder,
            decoding=DecoderConfig(beam=self.beam, lm_weight=lm_weight, length_bonus=length_bonus),
            precision=self.precision,
            num_threads=self.threads,
        )

    def model_fingerprint(self) -> list[Any]:
        """Names and content hashes of the model directory's files (a cache key of every decode).

        Contents, not modification times: a fresh clone or copy of the same model keeps its
        cached decodes. The model card and ``eval.json`` (documentation and measurements; the
        recognizer never reads them) are left out, so editing them keeps the cache too."""
        from userlibri.asr.ship import CARD_FILE, EVAL_FILE
        from userlibri.text.tokenizer import file_sha256

        d = Path(self.model_dir)
        skip = {CARD_FILE, EVAL_FILE}
        return [
            [p.name, file_sha256(p)[:16]]
            for p in sorted(d.iterdir())
            if p.is_file() and p.name not in skip and not p.name.startswith(".")
        ]


@dataclass(frozen=True)
class DecodeJob:
    """One user's utterances decoded in one condition with one weight and bonus, into ``out``."""

    condition: str
    mode: str
    lm: LMSpec | None
    lm_weight: float
    length_bonus: float
    out: Path


@dataclass(frozen=True)
class UserTask:
    """All jobs of one user: ``utts`` are ``(utt_id, audio path)`` pairs."""

    split: str
    user: str
    utts: tuple[tuple[str, str], ...]
    jobs: tuple[DecodeJob, ...]


@dataclass
class TaskResult:
    split: str
    user: str
    done: list[str] = field(default_factory=list)
    #: condition -> why it could not be decoded (an LM that failed to load).
    failed: dict[str, str] = field(default_factory=dict)
    encoder_seconds: float = 0.0
    search_seconds: float = 0.0
    audio_seconds: float = 0.0


@dataclass(frozen=True)
class AmOutput:
    """One utterance's acoustic-model output for the search: whole frames (non-streaming) or the
    encoder chunks in order (streaming)."""

    frames: np.ndarray | None
    chunks: tuple[np.ndarray, ...]
    audio_seconds: float
    encoder_seconds: float


class _ChunkRecorder:
    """Stands in for a stream's beam search and keeps the frames it is given, chunk by chunk."""

    def init_state(self) -> list[np.ndarray]:
        return []

    def advance(self, state: list[np.ndarray], frames: np.ndarray) -> list[np.ndarray]:
        state.append(np.array(frames, copy=True))
        return state


class _LMPool:
    """Loads LMs once: shared ones (background LMs) stay loaded, per-user ones are evicted least
    recently used beyond ``keep``."""

    def __init__(
        self, tokenizer: Any, pieces: Sequence[str], model_dir: Path, keep: int = DEFAULT_KEEP_LMS
    ) -> None:
        self.tokenizer = tokenizer
        self.pieces = list(pieces)
        self.model_dir = model_dir
        self.keep = keep
        self._loaded: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._shared: set[tuple[str, str]] = set()

    def _load(self, kind: str, path: str, shared: bool) -> Any:
        from userlibri.lm.loader import load_lm_for_model

        key = (kind, path)
        if shared:
            self._shared.add(key)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        t0 = time.perf_counter()
        lm = load_lm_for_model(kind, path, self.tokenizer, self.pieces, self.model_dir)
        log.debug("loaded %s %s in %.2f s", kind, path, time.perf_counter() - t0)
        self._loaded[key] = lm
        own = [k for k in self._loaded if k not in self._shared]
        for k in own[: max(0, len(own) - self.keep)]:
            del self._loaded[k]
        return lm

    def get(self, spec: LMSpec) -> Any:
        """The LM of ``spec``: one loaded LM or their linear interpolation."""
        from userlibri.lm.interpolate import InterpolatedLM
        from userlibri.lm.neural_word import NeuralWordScorer

        shared = spec.shared if len(spec.shared) == len(spec.parts) else (False,) * len(spec.parts)
        lms = [self._load(k, p, s) for (k, p), s in zip(spec.parts, shared, strict=True)]
        if len(lms) == 1:
            return lms[0]
        if all(isinstance(lm, NeuralWordScorer) for lm in lms):
            # neural LMs over their own tokenizer: mixed per LM piece, inside the word scorer
            return NeuralWordScorer.mixture(lms, spec.weights)
        return InterpolatedLM(list(zip(lms, spec.weights, strict=True)), mode="linear")


def _clear_caches(lm: Any) -> None:
    for part in getattr(lm, "lms", (lm,)):
        clear = getattr(part, "clear_cache", None)
        if callable(clear):
            clear()


class Engine:
    """Per process: the recognizers (built on first use) and the LM pool."""

    def __init__(self, settings: DecodeSettings) -> None:
        self.settings = settings.validate()
        self._offline: OfflineRecognizer | None = None
        self._online: Any = None
        self._pool: _LMPool | None = None

    def recognizer(self, mode: str) -> Any:
        base = self.settings.recognizer_config(0.0, 0.0)
        if mode == "offline":
            if self._offline is None:
                self._offline = OfflineRecognizer(self.settings.model_dir, config=base)
            return self._offline
        if mode != "streaming":
            raise ConfigError(f"mode: expected offline or streaming, found {mode!r}")
        if self._online is None:
            from userlibri.stream import OnlineRecognizer

            self._online = OnlineRecognizer(self.settings.model_dir, base)
        return self._online

    @property
    def pool(self) -> _LMPool:
        if self._pool is None:
            rec = self.recognizer("offline")
            self._pool = _LMPool(rec.tokenizer, rec.pieces, Path(self.settings.model_dir))
        return self._pool

    # -- acoustic model ---------------------------------------------------------------------------
    def am_output(self, mode: str, samples: np.ndarray, rate: int, what: str) -> AmOutput:
        """The encoder output of one utterance in ``mode``."""
        rec = self.recognizer(mode)
        if mode == "offline":
            t0 = time.perf_counter()
            arr = prepare_samples(samples, rate, rec.sample_rate, what)
            feats = compute_fbank(arr, rec.sample_rate, rec.am.meta.features)
            out = rec.am.run(feats)
            frames = out.ctc_log_probs if self.settings.decoder == "ctc" else out.encoder_out
            return AmOutput(frames, (), arr.size / rec.sample_rate, time.perf_counter() - t0)
        t0 = time.perf_counter()
        stream = rec.create_stream()
        recorder = _ChunkRecorder()
        stream.search, stream.search_state = recorder, recorder.init_state()
        step = max(1, rate * self.settings.chunk_ms // 1000)
        for start in range(0, len(samples), step):
            stream.accept_waveform(samples[start : start + step], rate)
            rec.decode_streams([stream])
        stream.input_finished()
        rec.decode_streams([stream])
        return AmOutput(None, tuple(stream.search_state), stream.audio_seconds, time.perf_counter() - t0)

    # -- search -----------------------------------------------------------------------------------
    def search(self, mode: str, am: AmOutput, searcher: Any) -> tuple[RecognitionResult, float]:
        """The final result of ``searcher`` over ``am`` and the search seconds."""
        rec = self.recognizer(mode)
        t0 = time.perf_counter()
        if am.frames is not None:
            hyps = searcher.decode(am.frames)
        else:
            state = searcher.init_state()
            for chunk in am.chunks:
                state = searcher.advance(state, chunk)
            hyps = searcher.finalize(state)
        spent = time.perf_counter() - t0
        timings = {"encoder": am.encoder_seconds, "search": spent}
        result = make_result(
            hyps[0] if hyps else None, rec.tokenizer, rec.frame_seconds, am.audio_seconds, timings
        )
        return result, spent

    def make_searcher(self, job: DecodeJob) -> Any:
        """The beam search of ``job`` (``UserLibriError`` when its LM cannot be loaded)."""
        rec = self.recognizer(job.mode)
        lm = self.pool.get(job.lm) if job.lm is not None else None
        config = self.settings.recognizer_config(job.lm_weight, job.length_bonus)
        return make_search(rec.am, config, lm, rec.pieces), lm

    def run_task(self, task: UserTask) -> TaskResult:
        """Decode every job of ``task`` (encoder once per mode), writing each job's file."""
        res = TaskResult(task.split, task.user)
        pending = [j for j in task.jobs if not j.out.is_file()]
        if not pending:
            return res
        audio = [(uid, *read_audio(path, expected_rate=None)) for uid, path in task.utts]
        outputs: dict[str, list[AmOutput]] = {}
        for mode in sorted({j.mode for j in pending}):
            outputs[mode] = [self.am_output(mode, s, r, f"{uid}") for uid, s, r in audio]
            res.encoder_seconds += sum(o.encoder_seconds for o in outputs[mode])
            res.audio_seconds += sum(o.audio_seconds for o in outputs[mode])
        # Jobs sharing an LM run one after another, so each LM is loaded once.
        for job in sorted(pending, key=lambda j: (repr(j.lm), j.mode, j.lm_weight, j.length_bonus)):
            if job.condition in res.failed:
                continue
            try:
                searcher, lm = self.make_searcher(job)
            except UserLibriError as e:
                res.failed[job.condition] = str(e)
                log.warning("%s: %s: cannot load its LM: %s", task.user, job.condition, e)
                continue
            rows = []
            for (uid, _, _), am in zip(audio, outputs[job.mode], strict=True):
                result, spent = self.search(job.mode, am, searcher)
                if lm is not None:
                    _clear_caches(lm)
                res.search_seconds += spent
                rows.append(_row(uid, result, am, spent))
            write_text_atomic(job.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            res.done.append(str(job.out))
        return res


def _row(uid: str, result: RecognitionResult, am: AmOutput, spent: float) -> dict[str, Any]:
    return {
        "id": uid,
        "text": result.text,
        "scores": {"total": result.score, "am": result.am_score, "lm": result.lm_score},
        "audio_seconds": round(am.audio_seconds, 4),
        "encoder_seconds": round(am.encoder_seconds, 6),
        "search_seconds": round(spent, 6),
    }


# -- process pool entry points (module level: picklable) ------------------------------------------
_ENGINE: Engine | None = None
#: Engines of this process (jobs 1), reused across the rounds of a run.
_LOCAL: dict[DecodeSettings, Engine] = {}


def clear_engines() -> None:
    """Drop this process's engines (their models and LMs); the next run builds new ones."""
    _LOCAL.clear()


def init_worker(settings: DecodeSettings, log_level: int) -> None:
    """Pool initializer: one engine per worker process."""
    global _ENGINE
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _ENGINE = Engine(settings)


def run_in_worker(task: UserTask) -> TaskResult:
    if _ENGINE is None:  # pragma: no cover - the initializer always runs first
        raise UserLibriError("bench wer worker: no engine (init_worker was not called)")
    return _ENGINE.run_task(task)


def run_tasks(
    settings: DecodeSettings,
    tasks: Sequence[UserTask],
    jobs: int = 1,
    progress: bool = True,
    desc: str = "decode",
) -> list[TaskResult]:
    """Run ``tasks`` in this process (``jobs`` 1) or in ``jobs`` worker processes, in task order."""
    from tqdm import tqdm

    if jobs < 1:
        raise ConfigError(f"jobs: expected >= 1, found {jobs}")
    todo = [t for t in tasks if any(not j.out.is_file() for j in t.jobs)]
    results: dict[int, TaskResult] = {}
    bar = tqdm(total=len(todo), desc=desc, unit="user", disable=not progress or not todo)
    try:
        if jobs == 1 or len(todo) <= 1:
            engine = _LOCAL.get(settings)
            if engine is None:
                engine = _LOCAL[settings] = Engine(settings)
            for i, t in enumerate(todo):
                results[i] = engine.run_task(t)
                bar.update()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: the parent may hold onnxruntime thread pools, which do not survive fork.
            ctx = mp.get_context("spawn")
            level = logging.getLogger().getEffectiveLevel()
            with ProcessPoolExecutor(
                min(jobs, len(todo)), mp_context=ctx, initializer=init_worker, initargs=(settings, level)
            ) as ex:
                futures = {ex.submit(run_in_worker, t): i for i, t in enumerate(todo)}
                for f in as_completed(futures):
                    results[futures[f]] = f.result()
                    bar.update()
    finally:
        bar.close()
    return [results[i] for i in range(len(todo))]
