"""Per-user word error rates and their statistics: what ``userlibri bench wer`` reports. Torch-free.

The UserLibri paper's metric is the **average per-user WER**: each user's WER (word errors over
reference words, pooled over the user's utterances), averaged over users, with a 95% confidence
interval from bootstrap resamples of users (10,000 by default). Beside it we report the **pooled
WER** (all errors over all reference words) and, for two conditions decoded on the same users, a
**paired bootstrap**: every resample draws users with replacement and the same draw is used for
both conditions, giving a CI of the difference and of the relative change, and a two-sided
p-value, plus how many users improve, get worse or stay the same.

Hypothesis files (:func:`read_hypotheses`), one utterance a line, either

* jsonl: a JSON object with ``id`` and ``text`` (what ``userlibri decode`` writes; other fields are
  ignored), or
* text: ``<utt_id> <words...>`` (the LibriSpeech transcript format; an id alone is an empty
  hypothesis).

The format is told by the first non-blank line (``{`` starts jsonl). Words are compared upper-cased
and split on whitespace; jiwer aligns them. An utterance with an empty reference counts its
hypothesis words as insertions (and is counted in ``empty_refs``); a user with no reference words at
all has no WER and is left out of the average (and listed), never divided by zero.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from userlibri.errors import ConfigError, DataFormatError, UserLibriError

DEFAULT_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95
#: Per-user WER differences at most this large count as "unchanged".
UNCHANGED_TOLERANCE = 1e-12
#: Ids listed in a mismatch error before "... and N more".
_MAX_LISTED = 20


class HypothesisMismatchError(UserLibriError):
    """A hypothesis file whose utterance ids differ from the references'."""

    def __init__(
        self, path: str | Path, refs: str | Path, missing: Sequence[str], extra: Sequence[str]
    ) -> None:
        self.path, self.missing, self.extra = Path(path), list(missing), list(extra)
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} id(s) of the references: {_listed(missing)}")
        if extra:
            parts.append(f"{len(extra)} id(s) not in the references: {_listed(extra)}")
        super().__init__(
            f"{path}: expected hypotheses for exactly the utterances of {refs}, found {'; '.join(parts)}"
        )


def _listed(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_LISTED])
    return shown + (f" ... and {len(ids) - _MAX_LISTED} more" if len(ids) > _MAX_LISTED else "")


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Reference:
    """One reference utterance: its id, its user and its transcript."""

    id: str
    user: str
    text: str


def references_from_manifest(path: str | Path) -> list[Reference]:
    """References of a jsonl manifest (``userlibri.data.manifest``), in file order."""
    from userlibri.data.manifest import read_manifest

    refs = [Reference(u.id, u.user, u.text) for u in read_manifest(path, resolve_audio=False)]
    _check_unique([r.id for r in refs], path)
    return refs


def references_from_utterances(utts: Sequence[Any]) -> list[Reference]:
    """References of ``Utterance`` objects (e.g. ``Dataset.utterances``)."""
    return [Reference(u.id, u.user, u.text) for u in utts]


def _check_unique(ids: Sequence[str], path: str | Path) -> None:
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise DataFormatError(path, "unique utterance ids", f"duplicates {_listed(dup)}")


def read_hypotheses(path: str | Path) -> dict[str, str]:
    """``{utt_id: text}`` of a hypothesis file (jsonl or ``<utt_id> <text>`` lines, see above)."""
    path = Path(path)
    if not path.is_file():
        raise UserLibriError(f"{path}: no such hypothesis file")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataFormatError(path, "UTF-8 text", f"invalid byte at offset {err.start}") from err
    first = next((ln.lstrip() for ln in lines if ln.strip()), "")
    is_json = first.startswith("{")
    out: dict[str, str] = {}
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if is_json:
            utt, text = _json_line(path, line, no)
        else:
            fields = line.strip().split(maxsplit=1)
            utt, text = fields[0], (fields[1] if len(fields) > 1 else "")
        if utt in out:
            raise DataFormatError(path, "each utterance id once", f"{utt!r} again", line=no)
        out[utt] = text
    return out


def _json_line(path: Path, line: str, no: int) -> tuple[str, str]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, "one JSON object per line (jsonl)", str(e), line=no) from e
    if not isinstance(rec, dict) or "id" not in rec or "text" not in rec:
        found = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
        raise DataFormatError(path, 'an object with "id" and "text"', str(found), line=no)
    text = rec["text"]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise DataFormatError(path, '"text" as a string', type(text).__name__, line=no)
    return str(rec["id"]), text


def check_hypotheses(
    refs: Sequence[Reference], hyps: Mapping[str, str], path: str | Path, refs_source: str | Path
) -> None:
    """``HypothesisMismatchError`` (naming ``path``) unless ``hyps`` has exactly the ids of ``refs``."""
    ref_ids = {r.id for r in refs}
    missing = sorted(ref_ids - set(hyps))
    extra = sorted(set(hyps) - ref_ids)
    if missing or extra:
        raise HypothesisMismatchError(path, refs_source, missing, extra)


def words(text: str) -> list[str]:
    """The words compared: upper-cased, split on whitespace."""
    return text.upper().split()


# ---------------------------------------------------------------- per-user scores


@dataclass(frozen=True)
class UserScore:
    """Word error counts of one user's utterances (pooled over the utterances)."""

    user: str
    utterances: int
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    #: Utterances whose reference has no words (their hypothesis words count as insertions).
    empty_refs: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """Errors over reference words; None when the user has no reference words."""
        return self.errors / self.ref_words if self.ref_words else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors, "wer": self.wer}


def score_users(
    refs: Sequence[Reference],
    hyps: Mapping[str, str],
    path: str | Path = "<hypotheses>",
    refs_source: str | Path = "<references>",
) -> list[UserScore]:
    """Per-user scores of ``hyps`` against ``refs`` (ids must match exactly), sorted by user."""
    import jiwer

    check_hypotheses(refs, hyps, path, refs_source)
    by_user: dict[str, list[Reference]] = defaultdict(list)
    for r in refs:
        by_user[r.user].append(r)
    out = []
    for user in sorted(by_user):
        pairs = [(" ".join(words(r.text)), " ".join(words(hyps[r.id]))) for r in by_user[user]]
        full = [(r, h) for r, h in pairs if r]
        empty_ins = sum(len(h.split()) for r, h in pairs if not r)
        sub = dele = ins = n_words = 0
        if full:
            m = jiwer.process_words([r for r, _ in full], [h for _, h in full])
            sub, dele, ins = m.substitutions, m.deletions, m.insertions
            n_words = sum(len(r.split()) for r, _ in full)
        out.append(
            UserScore(
                user=user,
                utterances=len(pairs),
                ref_words=n_words,
                substitutions=sub,
                deletions=dele,
                insertions=ins + empty_ins,
                empty_refs=len(pairs) - len(full),
            )
        )
    return out


def score_file(refs: Sequence[Reference], path: str | Path, refs_source: str | Path) -> list[UserScore]:
    """:func:`score_users` of the hypothesis file at ``path``."""
    return score_users(refs, read_hypotheses(path), path, refs_source)


# ---------------------------------------------------------------- bootstrap statistics


def bootstrap_indices(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` user indices drawn with replacement (numpy ``default_rng(seed)``).

    Use one draw for every condition of a split: the paired tests then resample the same users.
    """
    if resamples < 1:
        raise ConfigError(f"bootstrap resamples: expected >= 1, found {resamples}")
    if n < 0:
        raise ConfigError(f"bootstrap users: expected >= 0, found {n}")
    return np.random.default_rng(seed).integers(0, max(n, 1), size=(resamples, n), dtype=np.int64)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence: expected a number in (0, 1), found {confidence}")


@dataclass(frozen=True)
class WerSummary:
    """Average per-user WER with its bootstrap CI, and the pooled WER, of one condition."""

    users: int
    #: Users with reference words (those averaged).
    scored_users: int
    utterances: int
    ref_words: int
    errors: int
    empty_refs: int
    #: Users left out of the average: no reference words.
    users_without_words: tuple[str, ...]
    avg_user_wer: float | None
    ci: tuple[float, float] | None
    pooled_wer: float | None
    resamples: int
    seed: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["users_without_words"] = list(self.users_without_words)
        d["ci"] = list(self.ci) if self.ci else None
        return d


def summarize(
    scores: Sequence[UserScore],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    indices: np.ndarray | None = None,
) -> WerSummary:
    """Average per-user WER, its percentile bootstrap CI over users, and the pooled WER.

    ``indices``: a ``bootstrap_indices`` draw over the scored users (default: drawn here from
    ``seed``) so several conditions can share it.
    """
    _check_confidence(confidence)
    scored = [s for s in scores if s.ref_words > 0]
    ref_words = sum(s.ref_words for s in scores)
    errors = sum(s.errors for s in scores)
    avg = ci = None
    if scored:
        values = np.array([s.wer for s in scored], dtype=np.float64)
        idx = bootstrap_indices(len(scored), resamples, seed) if indices is None else indices
        _check_indices(idx, len(scored))
        avg = float(values.mean())
        ci = _interval(values[idx].mean(axis=1), confidence)
        resamples = idx.shape[0]
    return WerSummary(
        users=len(scores),
        scored_users=len(scored),
        utterances=sum(s.utterances for s in scores),
        ref_words=ref_words,
        errors=errors,
        empty_refs=sum(s.empty_refs for s in scores),
        users_without_words=tuple(s.user for s in scores if s.ref_words == 0),
        avg_user_wer=avg,
        ci=ci,
        pooled_wer=errors / ref_words if ref_words else None,
        resamples=resamples,
        seed=seed,
        confidence=confidence,
    )


def _check_indices(idx: np.ndarray, n: int) -> None:
    if idx.ndim != 2 or idx.shape[1] != n or (idx.size and (idx.min() < 0 or idx.max() >= n)):
        raise ConfigError(
            f"bootstrap indices: expected shape (resamples, {n}) in [0, {n}), found {idx.shape}"
        )


@dataclass(frozen=True)
class Comparison:
    """A candidate condition against a baseline on the same users (paired bootstrap over users).

    ``delta`` = candidate - baseline average per-user WER (negative: better); ``relative`` =
    delta / baseline (None when the baseline is 0). ``p_value`` is two-sided:
    ``min(1, 2 min(#(d* >= 0) + 1, #(d* <= 0) + 1) / (B + 1))`` over the B resampled deltas
    ``d*``; identical conditions give delta 0 and p 1.
    """

    baseline: str
    candidate: str
    users: int
    baseline_wer: float
    candidate_wer: float
    delta: float
    delta_ci: tuple[float, float]
    relative: float | None
    relative_ci: tuple[float, float] | None
    p_value: float
    improved: int
    worse: int
    unchanged: int
    resamples: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta_ci"] = list(self.delta_ci)
        d["relative_ci"] = list(self.relative_ci) if self.relative_ci else None
        return d


def paired_users(
    baseline: Sequence[UserScore], candidate: Sequence[UserScore]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(users, baseline WERs, candidate WERs) of the users with reference words, in user order.

    ``UserLibriError`` unless both conditions cover the same users with the same references.
    """
    a = {s.user: s for s in baseline}
    b = {s.user: s for s in candidate}
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise UserLibriError(
            "paired comparison: expected the same users in both conditions, found "
            f"{len(only_a)} only in the baseline ({_listed(only_a)}) and {len(only_b)} only in the "
            f"candidate ({_listed(only_b)})"
        )
    differ = sorted(u for u in a if a[u].ref_words != b[u].ref_words)
    if differ:
        raise UserLibriError(
            f"paired comparison: expected the same references, found different reference word counts "
            f"for {_listed(differ)}"
        )
    users = sorted(u for u in a if a[u].ref_words > 0)
    wa = np.array([a[u].wer for u in users], dtype=np.float64)
    wb = np.array([b[u].wer for u in users], dtype=np.float64)
    return users, wa, wb


def compare(
    baseline: Sequence[UserScore],
    candidate: Sequence[UserScore],
    names: tuple[str, str] = ("baseline", "candidate"),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    indices: np.ndarray | None = None,
) -> Comparison:
    """Paired bootstrap of ``candidate`` against ``baseline`` (same resample for both)."""
    _check_confidence(confidence)
    users, wa, wb = paired_users(baseline, candidate)
    if not users:
        raise UserLibriError("paired comparison: expected users with reference words, found none")
    idx = bootstrap_indices(len(users), resamples, seed) if indices is None else indices
    _check_indices(idx, len(users))
    ma, mb = wa[idx].mean(axis=1), wb[idx].mean(axis=1)
    d = mb - ma
    b = d.shape[0]
    base, cand = float(wa.mean()), float(wb.mean())
    delta = cand - base
    p = min(1.0, 2.0 * min(int((d >= 0).sum()) + 1, int((d <= 0).sum()) + 1) / (b + 1))
    relative = relative_ci = None
    if base > 0:
        relative = delta / base
        if (ma > 0).all():
            relative_ci = _interval(d / ma, confidence)
    diff = wb - wa
    improved = int((diff < -UNCHANGED_TOLERANCE).sum())
    worse = int((diff > UNCHANGED_TOLERANCE).sum())
    return Comparison(
        baseline=names[0],
        candidate=names[1],
        users=len(users),
        baseline_wer=base,
        candidate_wer=cand,
        delta=delta,
        delta_ci=_interval(d, confidence),
        relative=relative,
        relative_ci=relative_ci,
        p_value=p,
        improved=improved,
        worse=worse,
        unchanged=len(users) - improved - worse,
        resamples=b,
        confidence=confidence,
    )


def user_deltas(
    baseline: Sequence[UserScore], candidate: Sequence[UserScore]
) -> list[tuple[str, float, float, float]]:
    """``(user, baseline WER, candidate WER, candidate - baseline)`` per user with reference words."""
    users, wa, wb = paired_users(baseline, candidate)
    return [(u, float(a), float(b), float(b - a)) for u, a, b in zip(users, wa, wb, strict=True)]


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """``12.3`` for 0.123; an en dash for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "\u2013"
    return f"{100.0 * x:.{digits}f}"


# ---------------------------------------------------------------- several files, one table


def score_named_files(
    refs: Sequence[Reference],
    refs_source: str | Path,
    named: Sequence[tuple[str, str | Path]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Score ``(name, hypothesis file)`` pairs against ``refs``; compare each with the first on one
    shared bootstrap resample of users. Returns ``{"summaries", "comparisons", "per_user"}``."""
    if not named:
        raise ConfigError("expected at least one hypothesis file, found none")
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ConfigError(f"hypothesis names must be distinct, found {names}")
    scores = {n: score_file(refs, p, refs_source) for n, p in named}
    n_scored = len({r.user for r in refs if words(r.text)})
    idx = bootstrap_indices(n_scored, resamples, seed)
    summaries = {
        n: summarize(s, resamples, seed, confidence, indices=idx).to_dict() for n, s in scores.items()
    }
    base = names[0]
    comparisons = []
    if n_scored:
        for n in names[1:]:
            comparisons.append(
                compare(scores[base], scores[n], (base, n), resamples, seed, confidence, idx).to_dict()
            )
    return {
        "references": str(refs_source),
        "files": {n: str(p) for n, p in named},
        "summaries": summaries,
        "comparisons": comparisons,
        "per_user": {n: [u.to_dict() for u in s] for n, s in scores.items()},
    }


def format_scores(result: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`score_named_files` results."""
    lines = [f"{'name':<24}{'users':>6}{'avg per-user WER % [CI]':>28}{'pooled %':>10}{'empty refs':>11}"]
    for n, s in result["summaries"].items():
        ci = f"[{fmt_pct(s['ci'][0])}, {fmt_pct(s['ci'][1])}]" if s["ci"] else ""
        lines.append(
            f"{n:<24}{s['scored_users']:>6}{fmt_pct(s['avg_user_wer']) + ' ' + ci:>28}"
            f"{fmt_pct(s['pooled_wer']):>10}{s['empty_refs']:>11}"
        )
        if s["users_without_words"]:
            lines.append(
                f"  users without reference words (not averaged): {', '.join(s['users_without_words'])}"
            )
    for c in result["comparisons"]:
        rel = "n/a" if c["relative"] is None else f"{100 * c['relative']:+.1f}%"
        lo, hi = c["delta_ci"]
        lines.append(
            f"{c['candidate']} vs {c['baseline']}: {rel} relative, difference {100 * c['delta']:+.2f} "
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}] points, p={c['p_value']:.4f}; users improved "
            f"{c['improved']}, worse {c['worse']}, unchanged {c['unchanged']}"
        )
    return "\n".join(lines)
