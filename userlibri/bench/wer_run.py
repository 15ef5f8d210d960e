"""``userlibri bench wer``: decode every user of each split in every condition and report per-user
WER statistics (:mod:`userlibri.bench.wer`).

Steps:

1. Resolve each condition's LM files per user (:mod:`~userlibri.bench.wer_conditions`); a
   condition missing files for some user of a split is skipped there, with the reason.
2. Tune on dev users (:mod:`~userlibri.bench.wer_tune`: by default each test split on its own
   dev split where the dataset has one, test-clean on dev-clean and test-other on dev-other, else
   on ``dev``, built by ``userlibri build`` when the corpus has a dev split): first the LM weight
   over ``lm_weights`` at ``default_bonus``, then the length bonus over ``length_bonuses`` at the
   chosen weight, then (``tune_rounds``, default 2) the weight again at that bonus and the bonus
   at the new weight, for each condition separately (no LM: the bonus only); ``tune_rounds`` 0
   (for every condition, or per LM kind: ``ngram=0,neural=2``) decodes the full grid instead. The
   criterion is the average per-user WER; ties go to the earlier grid point. Test users never
   take part. If a tune split is a test split (no dev users), that split is not reported, and the
   results say so.
3. Decode every user of the reported splits in every condition at its tuned weight and bonus.
4. Score (average per-user WER with a bootstrap CI, pooled WER, paired bootstrap for every pair of
   conditions on one shared resample of users per split) and write ``results.json``,
   ``results.csv``, ``per_user.csv``, ``results.md`` and PNG plots under ``out``.

Hypotheses are cached per user and job under ``out/cache`` (the file name carries a hash of the
model files, LM files, the user's utterances and audio files and the decoding settings), so a rerun
resumes and a changed model, LM or dataset is decoded afresh. The merged hypotheses of each
reported condition are ``out/hyps/<condition>/<split>.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from userlibri.bench import wer as W
from userlibri.bench.wer_conditions import (
    DEFAULT_MIX_SENTENCES,
    KIND_LABELS,
    KINDS,
    Condition,
    LMLayout,
    LMSpec,
    MissingLM,
    file_stamp,
    fingerprint,
    neural_mix_weight,
    spec_for,
)
from userlibri.bench.wer_decode import (
    DecodeJob,
    DecodeSettings,
    TaskResult,
    UserTask,
    clear_engines,
    run_tasks,
)
from userlibri.bench.wer_tune import (
    AUTO,
    DEFAULT_TUNE_ROUNDS,
    choose_splits,
    coordinate_search,
    parse_tune_rounds,
    parse_tune_spec,
    rounds_text,
    tuned_splits,
)
from userlibri.errors import ConfigError, UserLibriError
from userlibri.fsio import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_LM_WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.8)
DEFAULT_LENGTH_BONUSES = (0.0, 0.5, 1.0, 2.0)
DEFAULT_TUNE_SPLIT = AUTO
#: results.json's format (2: ``tuning`` per tune split, ``tune_splits`` per reported split).
RESULTS_VERSION = 2
#: Part of every decode's cache key: bump it only when cached hypotheses must not be reused
#: (2: the n-grams' bigram look-ahead, same LM kind name as the unigram decodes before it).
CACHE_VERSION = 2


@dataclass(frozen=True)
class BenchConfig:
    """Everything ``bench wer`` needs."""

    dataset: Path
    out: Path
    decode: DecodeSettings
    conditions: tuple[Condition, ...]
    layout: LMLayout = field(default_factory=LMLayout)
    #: Reported splits; None: the test splits the dataset has, minus any tune split.
    splits: tuple[str, ...] | None = None
    #: ``auto``, a split name, or ``SPLIT=TUNE_SPLIT,...`` (:mod:`~userlibri.bench.wer_tune`).
    tune_split: str = DEFAULT_TUNE_SPLIT
    lm_weights: tuple[float, ...] = DEFAULT_LM_WEIGHTS
    length_bonuses: tuple[float, ...] = DEFAULT_LENGTH_BONUSES
    #: Length bonus while the LM weight is first tuned.
    default_bonus: float = 0.0
    #: Rounds of the coordinate search (weight, then bonus) on the tune split, 0 for the full grid:
    #: one number, or ``KIND=N,...`` per LM kind (:func:`~userlibri.bench.wer_tune.parse_tune_rounds`).
    tune_rounds: int | str = DEFAULT_TUNE_ROUNDS
    resamples: int = W.DEFAULT_RESAMPLES
    seed: int = 0
    confidence: float = W.DEFAULT_CONFIDENCE
    jobs: int = 1
    #: Users per split (0: all): for quick looks, never for reported numbers.
    max_users: int = 0
    mix_sentences: int = DEFAULT_MIX_SENTENCES
    progress: bool = True
    plots: bool = True

    def validate(self) -> BenchConfig:
        self.decode.validate()
        self.layout.validate()
        if not self.conditions:
            raise ConfigError("bench wer: expected at least one condition, found none")
        if len({c.name for c in self.conditions}) != len(self.conditions):
            raise ConfigError("bench wer: conditions must be distinct")
        for name, grid in (("lm_weights", self.lm_weights), ("length_bonuses", self.length_bonuses)):
            if not grid or not all(math.isfinite(x) for x in grid) or len(set(grid)) != len(grid):
                raise ConfigError(f"{name}: expected distinct finite numbers, found {grid}")
        if any(w < 0 for w in self.lm_weights):
            raise ConfigError(f"lm_weights: expected >= 0, found {self.lm_weights}")
        parse_tune_spec(self.tune_split)
        if self.splits is not None and self.tune_split in self.splits:
            raise ConfigError(
                f"splits {self.splits}: the tune split {self.tune_split!r} cannot be reported "
                "(weights tuned on its users would flatter it)"
            )
        parse_tune_rounds(self.tune_rounds, KINDS)
        if self.resamples < 1 or self.jobs < 1 or self.max_users < 0 or self.mix_sentences < 1:
            raise ConfigError("resamples, jobs and mix_sentences must be >= 1 and max_users >= 0")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence: expected a number in (0, 1), found {self.confidence}")
        return self


@dataclass
class _SplitData:
    users: list[Any]  # data.dataset.User
    utts: dict[str, list[Any]]  # user id -> Utterances
    refs: list[W.Reference]
    source: str
    #: user id -> fingerprint of the user's utterance ids and audio files (part of the cache key:
    #: a rebuilt dataset with other utterances or audio is decoded afresh, not refused)
    utt_keys: dict[str, str] = field(default_factory=dict)

    def utt_key(self, user: str) -> str:
        key = self.utt_keys.get(user)
        if key is None:
            key = fingerprint([[x.id, *file_stamp(x.audio)] for x in self.utts[user]])
            self.utt_keys[user] = key
        return key


@dataclass
class _State:
    """What a run accumulates: skipped conditions and per-(condition, split, user) LM specs."""

    cfg: BenchConfig
    model_fp: list[Any]
    data: dict[str, _SplitData]
    #: (condition name, split) -> user -> LMSpec (None for no LM)
    specs: dict[tuple[str, str], dict[str, LMSpec | None]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    dead: set[str] = field(default_factory=set)  # conditions skipped everywhere
    mix: dict[str, Any] = field(default_factory=dict)
    #: reported split -> the split its weights are tuned on
    tune_for: dict[str, str] = field(default_factory=dict)

    def skip(self, cond: Condition, reason: str, split: str | None = None) -> None:
        log.warning("skipping %s%s: %s", cond.name, f" on {split}" if split else "", reason)
        self.skipped.append({"condition": cond.name, "split": split, "reason": reason})
        if split is None:
            self.dead.add(cond.name)


# ---------------------------------------------------------------- data and LM resolution


def _load_split(ds: Any, split: str, max_users: int) -> _SplitData:
    users = ds.users(split)
    if max_users:
        users = users[:max_users]
    if not users:
        raise UserLibriError(f"{ds.audio_dir / split}: expected users, found none")
    utts = {u.user_id: ds.utterances(u) for u in users}
    refs = W.references_from_utterances([x for u in users for x in utts[u.user_id]])
    return _SplitData(users, utts, refs, f"{ds.root} ({split})")


def _resolve(st: _State, cond: Condition, splits: Sequence[str]) -> None:
    """Each user's LM spec of ``cond`` in each split; skips (one message per cause) where absent.

    Missing for some user of a tune split: skipped on the splits tuned there (it cannot be tuned);
    missing for some user of a reported split: skipped on that split (the paired tests need every
    user).
    """
    missing: dict[str, list[str]] = {}
    total = 0
    for split in splits:
        data = st.data[split]
        total += len(data.users)
        specs: dict[str, LMSpec | None] = {}
        for u in data.users:
            try:
                files = st.cfg.layout.resolve(cond, u.book)
                mix = _mix_weight(st, cond, u.book, files) if len(files) == 2 else None
                specs[u.user_id] = spec_for(cond, files, mix, st.cfg.layout.ngram_kind)
            except MissingLM as e:
                missing.setdefault(split, []).append(f"{u.user_id}: {e}")
        if split not in missing:
            st.specs[(cond.name, split)] = specs
    if not missing:
        return
    reasons = [r for rs in missing.values() for r in rs]
    # Distinct causes (without the user), in order of first appearance; at most two shown.
    causes = list(dict.fromkeys(r.split(": ", 1)[1] for r in reasons))
    example = "; ".join(causes[:2]) + (f"; and {len(causes) - 2} more" if len(causes) > 2 else "")
    if len(reasons) == total:
        st.skip(cond, f"no LM for any user ({example})")
        return
    untunable = {s for s, t in st.tune_for.items() if t in missing}
    if untunable == set(st.tune_for):
        tunes = ", ".join(t for t in tuned_splits(st.tune_for) if t in missing)
        n = sum(len(missing[t]) for t in tuned_splits(st.tune_for) if t in missing)
        st.skip(cond, f"no LM for {n} {tunes} user(s), so it cannot be tuned ({example})")
        return
    for split in st.tune_for:
        t = st.tune_for[split]
        if t in missing:
            st.skip(
                cond,
                f"no LM for {len(missing[t])} {t} user(s), so it cannot be tuned ({missing[t][0]})",
                split,
            )
            st.specs.pop((cond.name, split), None)
        elif split in missing:
            rs = missing[split]
            st.skip(cond, f"no LM for {len(rs)} of {len(st.data[split].users)} users ({rs[0]})", split)


def _mix_weight(st: _State, cond: Condition, book: str, files: tuple[Path, ...]) -> float:
    """The neural mixture weight of ``book`` (cached in ``out/neural_mix.json``); ``MissingLM``
    when it cannot be fitted."""
    try:
        heldout = st.cfg.layout.heldout(book)
    except MissingLM as e:
        raise MissingLM(f"{e} (needed to fit the neural mixture weight)") from None
    key = fingerprint([[*file_stamp(f)] for f in (*files, heldout)] + [st.cfg.mix_sentences, st.model_fp])
    cached = st.mix.get(book)
    if cached and cached.get("key") == key:
        return float(cached["weight"])
    from userlibri.asr.onnx_model import TOKENIZER_FILE
    from userlibri.lm.evaluate import read_sentences_file
    from userlibri.text.tokenizer import Tokenizer

    sents = read_sentences_file(heldout)[: st.cfg.mix_sentences]
    tok = Tokenizer(Path(st.cfg.decode.model_dir) / TOKENIZER_FILE)
    try:
        w = neural_mix_weight(files[0], files[1], sents, tok)
    except UserLibriError as e:
        raise MissingLM(f"cannot load the neural LMs: {e}") from None
    st.mix[book] = {"key": key, "weight": w, "heldout": str(heldout), "sentences": len(sents)}
    write_json_atomic(st.cfg.out / "neural_mix.json", st.mix)
    log.info(
        "book %s: neural mixture weight of the personal LM %.3f (EM on %d held-out sentences)",
        book,
        w,
        len(sents),
    )
    return w


# ---------------------------------------------------------------- decoding rounds


def _job(st: _State, cond: Condition, split: str, user: str, weight: float, bonus: float) -> DecodeJob:
    spec = st.specs[(cond.name, split)][user]
    d = st.cfg.decode
    key = {
        "v": CACHE_VERSION,
        "model": st.model_fp,
        "decoder": d.decoder,
        "beam": d.beam,
        "precision": d.precision,
        "chunk_ms": d.chunk_ms if cond.mode == "streaming" else None,
        "mode": cond.mode,
        "utts": st.data[split].utt_key(user),
        "lm": spec.fingerprint() if spec else None,
        "w": weight if spec else 0.0,
        "b": bonus,
    }
    name = f"{cond.slug}.w{key['w']:g}.b{bonus:g}.{fingerprint(key)}.jsonl"
    return DecodeJob(cond.name, cond.mode, spec, key["w"], bonus, st.cfg.out / "cache" / split / user / name)


def _run(
    st: _State, split: str, points: dict[str, list[tuple[float, float]]], desc: str
) -> dict[tuple[str, float, float], list[Path]]:
    """Decode every user of ``split`` at the (weight, bonus) ``points`` of each condition; returns
    the per-user files of each (condition, weight, bonus) whose condition did not fail."""
    conds = {c.name: c for c in st.cfg.conditions}
    data = st.data[split]
    tasks = []
    files: dict[tuple[str, float, float], list[Path]] = {}
    for u in data.users:
        jobs = []
        for name, pts in points.items():
            for w, b in pts:
                job = _job(st, conds[name], split, u.user_id, w, b)
                jobs.append(job)
                files.setdefault((name, w, b), []).append(job.out)
        utts = tuple((x.id, x.audio) for x in data.utts[u.user_id])
        tasks.append(UserTask(split, u.user_id, utts, tuple(jobs)))
    results: list[TaskResult] = run_tasks(st.cfg.decode, tasks, st.cfg.jobs, st.cfg.progress, desc)
    for r in results:
        for name, reason in sorted(r.failed.items()):
            if name not in st.dead:
                st.skip(conds[name], f"{r.user}: {reason}")
    return {k: v for k, v in files.items() if k[0] not in st.dead}


def _read_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    rows = []
    for p in paths:
        rows.extend(json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip())
    return rows


def _score(
    st: _State, split: str, paths: Sequence[Path], merged: Path | None = None
) -> tuple[list[W.UserScore], dict[str, Any]]:
    """Per-user scores of the per-user files ``paths`` (merged into ``merged`` when given) and
    timing totals."""
    rows = _read_rows(paths)
    data = st.data[split]
    if merged is not None:
        write_text_atomic(
            merged,
            "".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows),
        )
        scores = W.score_file(data.refs, merged, data.source)
    else:
        hyps = {}
        for r in rows:
            if r["id"] in hyps:
                raise UserLibriError(f"{paths}: utterance {r['id']} decoded twice")
            hyps[r["id"]] = r["text"]
        scores = W.score_users(
            data.refs, hyps, f"{len(paths)} cached files under {st.cfg.out / 'cache' / split}", data.source
        )
    audio = sum(r["audio_seconds"] for r in rows)
    timing = {
        "audio_seconds": round(audio, 3),
        "search_seconds": round(sum(r["search_seconds"] for r in rows), 4),
        "encoder_seconds": round(sum(r["encoder_seconds"] for r in rows), 4),
    }
    timing["search_rtf"] = round(timing["search_seconds"] / audio, 5) if audio else None
    timing["encoder_rtf"] = round(timing["encoder_seconds"] / audio, 5) if audio else None
    return scores, timing


def _mean_wer(scores: Sequence[W.UserScore]) -> tuple[float, float]:
    """(average per-user WER, pooled WER) without bootstrap (inf when undefined)."""
    s = W.summarize(scores, resamples=1, seed=0)
    return (
        s.avg_user_wer if s.avg_user_wer is not None else math.inf,
        s.pooled_wer if s.pooled_wer is not None else math.inf,
    )


def _tune(st: _State, split: str) -> dict[str, Any]:
    """The coordinate search (:func:`~userlibri.bench.wer_tune.coordinate_search`) on the users of
    ``split``, for the conditions reported on some split tuned there."""
    cfg = st.cfg
    reported = [s for s, t in st.tune_for.items() if t == split]
    live = [
        c
        for c in cfg.conditions
        if c.name not in st.dead
        and (c.name, split) in st.specs
        and any((c.name, s) in st.specs for s in reported)
    ]

    def evaluate(
        points: dict[str, list[tuple[float, float]]], desc: str
    ) -> dict[tuple[str, float, float], Any]:
        files = _run(st, split, points, desc)
        return {k: _mean_wer(_score(st, split, paths)[0]) for k, paths in files.items()}

    by_kind = parse_tune_rounds(cfg.tune_rounds, KINDS)
    rounds = {c.name: by_kind.get(c.kind or "", by_kind[""]) for c in live}
    # The no-LM conditions tune the bonus alone, the same with any rounds: the LM kinds say it.
    kinds = {c.kind: rounds[c.name] for c in live if c.kind}
    values = set(kinds.values()) or {by_kind[""]}
    if len(values) == 1:
        method = rounds_text(values.pop())
    else:
        method = "; ".join(f"{KIND_LABELS[k]} LMs: {rounds_text(kinds[k])}" for k in KINDS if k in kinds)
    return coordinate_search(
        split,
        [u.user_id for u in st.data[split].users],
        [(c.name, c.has_lm) for c in live],
        evaluate,
        lambda name: name in st.dead,
        cfg.lm_weights,
        cfg.length_bonuses,
        cfg.default_bonus,
        rounds,
        method,
    )


# ---------------------------------------------------------------- the run


def _report_split(st: _State, split: str, chosen: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Decode ``split`` in every tuned condition and score it (summaries, all pairs, per user)."""
    cfg, data = st.cfg, st.data
    names = [c.name for c in cfg.conditions if c.name in chosen and (c.name, split) in st.specs]
    pts = {n: [(chosen[n]["lm_weight"], chosen[n]["length_bonus"])] for n in names}
    files = _run(st, split, pts, f"decode ({split})")
    scores: dict[str, list[W.UserScore]] = {}
    summaries: dict[str, Any] = {}
    # One resample of the users with reference words, shared by every condition and pair.
    scored_users = {r.user for r in data[split].refs if W.words(r.text)}
    idx = W.bootstrap_indices(len(scored_users), cfg.resamples, cfg.seed)
    for n in names:
        if n in st.dead:
            continue
        w, b = pts[n][0]
        merged = cfg.out / "hyps" / n.replace("/", ".") / f"{split}.jsonl"
        sc, timing = _score(st, split, files[(n, w, b)], merged)
        summ = W.summarize(sc, cfg.resamples, cfg.seed, cfg.confidence, indices=idx)
        scores[n] = sc
        summaries[n] = {
            **summ.to_dict(),
            "lm_weight": w,
            "length_bonus": b,
            "hyps": str(merged),
            **timing,
        }
    from userlibri.bench.wer_report import comparisons_for_split

    comps = comparisons_for_split(scores, idx, cfg.seed, cfg.confidence)
    return {
        "users": [u.user_id for u in data[split].users],
        "summaries": summaries,
        "comparisons": comps,
        "per_user": {n: [s.to_dict() for s in sc] for n, sc in scores.items()},
    }


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Tune, decode, score and write every output; returns the results (also ``results.json``)."""
    from userlibri.bench.wer_report import (
        per_user_table,
        results_table,
        targets,
        write_csv,
        write_markdown,
    )
    from userlibri.data.dataset import Dataset

    cfg = cfg.validate()
    cfg.out.mkdir(parents=True, exist_ok=True)
    ds = Dataset(cfg.dataset)
    splits, tune_for, notes = choose_splits(cfg.dataset, cfg.tune_split, cfg.splits, ds.splits())
    if cfg.max_users:
        notes.append(f"Only the first {cfg.max_users} users of each split (--max-users): a quick look.")
    tunes = tuned_splits(tune_for)
    data = {s: _load_split(ds, s, cfg.max_users) for s in [*tunes, *splits]}
    st = _State(cfg, cfg.decode.model_fingerprint(), data, tune_for=tune_for)
    mix_path = cfg.out / "neural_mix.json"
    if mix_path.is_file():
        st.mix = json.loads(mix_path.read_text(encoding="utf-8"))
    for cond in cfg.conditions:
        _resolve(st, cond, [*tunes, *splits])
    out_splits: dict[str, Any] = {}
    try:
        tuning = {t: _tune(st, t) for t in tunes}
        for split in splits:
            out_splits[split] = _report_split(st, split, tuning[tune_for[split]]["chosen"])
    finally:
        clear_engines()
    conds = [c for c in cfg.conditions if any(c.name in s["summaries"] for s in out_splits.values())]
    results: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "config": _config_dict(cfg),
        "notes": notes,
        "conditions": [
            {
                "name": c.name,
                "mode": c.mode,
                "kind": c.kind,
                "lm": c.lm,
                "epsilon": c.epsilon,
                "label": c.label,
            }
            for c in conds
        ],
        "tune_splits": tune_for,
        "tuning": tuning,
        "neural_mix": st.mix,
        "skipped": st.skipped,
        "splits": out_splits,
    }
    results["targets"] = targets(results)
    write_json_atomic(cfg.out / "results.json", results)
    write_csv(cfg.out / "results.csv", results_table(results))
    write_csv(cfg.out / "per_user.csv", per_user_table(results))
    write_markdown(cfg.out / "results.md", results)
    if cfg.plots:
        from userlibri.bench.wer_plots import write_plots

        results["plots"] = [str(p) for p in write_plots(results, cfg.out)]
        write_json_atomic(cfg.out / "results.json", results)
    return results


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    d = cfg.decode
    return {
        "dataset": str(cfg.dataset),
        "model": str(d.model_dir),
        "decoder": d.decoder,
        "beam": d.beam,
        "precision": d.precision,
        "threads": d.threads,
        "chunk_ms": d.chunk_ms,
        "ngram_dir": str(cfg.layout.ngram_dir) if cfg.layout.ngram_dir else None,
        "neural_dir": str(cfg.layout.neural_dir) if cfg.layout.neural_dir else None,
        "neural_precision": cfg.layout.neural_precision,
        "ngram_lookahead": cfg.layout.ngram_lookahead,
        "tune_split": cfg.tune_split,
        "lm_weights": list(cfg.lm_weights),
        "length_bonuses": list(cfg.length_bonuses),
        "default_bonus": cfg.default_bonus,
        "tune_rounds": cfg.tune_rounds,
        "resamples": cfg.resamples,
        "seed": cfg.seed,
        "confidence": cfg.confidence,
        "jobs": cfg.jobs,
        "max_users": cfg.max_users,
        "mix_sentences": cfg.mix_sentences,
        "conditions": [c.name for c in cfg.conditions],
    }
