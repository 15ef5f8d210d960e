"""Per-user n-gram LMs over a UserLibri release: a background LM, one LM per book, and their
interpolation with a weight tuned on the user's held-out sentences.

Output (``out``)::

    background/ngram.{arpa,bin,json}   word n-gram on general text (SOTU + books no test user reads)
    background/sources.json            which books went in, sentence and word counts
    <book_id>/train.txt heldout.txt    the deterministic split of the book's LM text
    <book_id>/ngram.{arpa,bin,json}    word n-gram on train.txt only
    <book_id>/mix.{arpa,bin}           user + background, one ARPA (arpa_mix.py)
    <book_id>/mix.json                 weights, held-out perplexities, counts, timings
    <book_id>/privacy.json             mechanism "none": n-gram counts carry no DP guarantee
    summary.json                       one row per book; background LM and dataset paths relative to it

UserLibri users who read the same book share its LM text, so LMs are per book. Every directory
is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from userlibri.constants import DEFAULT_CACHE_DIR
from userlibri.data.userlibri import id_order
from userlibri.errors import ConfigError, UserLibriError
from userlibri.fsio import atomic_path, write_json_atomic, write_text_atomic
from userlibri.lm import evaluate as ev
from userlibri.lm.arpa_mix import ArpaModel, mix_arpa_files, read_arpa
from userlibri.lm.ngram import DEFAULT_LMPLZ_MEMORY, DEFAULT_NGRAM_ORDER, NgramConfig, train_ngram
from userlibri.privacy.accounting import PrivacyReport

log = logging.getLogger(__name__)

DEFAULT_CORPUS_DIR = DEFAULT_CACHE_DIR / "corpora"
#: Drop singleton 3- and 4-grams of the background LM: ~4x smaller, mixes ~4x faster.
DEFAULT_BACKGROUND_PRUNE = (0, 0, 1, 1)
BACKGROUND_DIR = "background"
NGRAM_NAME = "ngram"
MIX_NAME = "mix"
NGRAM_PRIVACY_NOTE = (
    "No differential privacy: an n-gram LM stores counts of its training text, so rare sentences "
    "(names, numbers, any secret) can be read back from it. Train a DP neural LM for a guarantee. "
    "UserLibri users who read the same book share this LM text."
)


@dataclass(frozen=True)
class UserLMConfig:
    """How per-user (per-book) n-gram LMs are built."""

    order: int = DEFAULT_NGRAM_ORDER
    heldout_every: int = ev.DEFAULT_HELDOUT_EVERY
    min_train_sentences: int = ev.MIN_TRAIN_SENTENCES
    background_prune: tuple[int, ...] = DEFAULT_BACKGROUND_PRUNE
    memory: str = DEFAULT_LMPLZ_MEMORY

    def validate(self) -> None:
        """Raise ``ConfigError`` for impossible values."""
        if self.heldout_every < 2:
            raise ConfigError(f"heldout_every: expected >= 2, found {self.heldout_every}")
        if self.min_train_sentences < 1:
            raise ConfigError(f"min_train_sentences: expected >= 1, found {self.min_train_sentences}")
        self.ngram_config().validate()
        self.ngram_config(self.background_prune[: self.order]).validate()

    def ngram_config(self, prune: tuple[int, ...] = ()) -> NgramConfig:
        return NgramConfig(order=self.order, prune=prune, memory=self.memory)


def user_books(dataset: Any) -> list[str]:
    """Books read by the release's users or with LM text (sorted); ``dataset``: a ``Dataset``."""
    books = set(dataset.lm_books())
    for split in dataset.splits():
        books.update(u.book for u in dataset.users(split))
    return sorted(books, key=id_order)


def background_sentences(
    corpus_dir: str | Path, exclude: Sequence[str], progress: bool = True
) -> tuple[list[str], dict[str, int]]:
    """Normalised sentences of every book in the corpus cache except ``exclude``, and the
    sentence count per book."""
    from userlibri.data.books import BookCorpus
    from userlibri.data.userlibri import book_sentences

    corpus = BookCorpus.open(corpus_dir)
    ids = [b for b in corpus.book_ids() if b not in set(exclude)]
    if not ids:
        raise UserLibriError(
            f"{corpus_dir}: no background text: every book ({', '.join(corpus.book_ids())}) is read by a "
            "test user; fetch more with 'userlibri corpora fetch'"
        )
    out: list[str] = []
    per_book: dict[str, int] = {}
    for book_id in tqdm(ids, desc="background text", disable=not progress, leave=False):
        sents, _ = book_sentences(corpus.load(book_id).chapters)
        per_book[book_id] = len(sents)
        out.extend(sents)
    return out, per_book


def build_background(
    out_dir: str | Path,
    corpus_dir: str | Path = DEFAULT_CORPUS_DIR,
    exclude: Sequence[str] = (),
    config: UserLMConfig = UserLMConfig(),
    progress: bool = True,
) -> Path:
    """Train the background word n-gram into ``out_dir`` (atomically); returns its ARPA path."""
    config.validate()
    out_dir = Path(out_dir)
    start = time.perf_counter()
    sents, per_book = background_sentences(corpus_dir, exclude, progress)
    with atomic_path(out_dir) as tmp:
        model = train_ngram(
            sents, tmp, config.ngram_config(config.background_prune[: config.order]), name=NGRAM_NAME
        )
        write_json_atomic(
            tmp / "sources.json",
            {
                "corpus": str(corpus_dir),
                "books": per_book,
                "excluded": sorted(exclude),
                "sentences": model.sentences,
                "words": model.words,
                "counts": list(model.counts),
                "seconds": time.perf_counter() - start,
            },
        )
    log.info("background LM: %d sentences, %d words -> %s", model.sentences, model.words, out_dir)
    return out_dir / f"{NGRAM_NAME}.arpa"


def ngram_privacy_report(sentences: int) -> dict[str, Any]:
    """``privacy.json`` of an n-gram LM: mechanism ``none``, saying there is no guarantee."""
    report = PrivacyReport(mechanism="none", dataset_size=sentences, note=NGRAM_PRIVACY_NOTE)
    report.validate()
    return {**report.to_dict(), "model": "n-gram (lmplz modified Kneser-Ney counts)"}


def build_book_lm(
    book_id: str,
    sentences: Sequence[str],
    out_dir: str | Path,
    background: ArpaModel,
    background_binary: str | Path,
    config: UserLMConfig = UserLMConfig(),
) -> dict[str, Any]:
    """One book's LM directory (see the module docstring); returns ``mix.json``'s content."""
    config.validate()
    out_dir = Path(out_dir)
    split = ev.split_heldout(
        sentences, config.heldout_every, config.min_train_sentences, what=f"LM text of book {book_id}"
    )
    start = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_text_atomic(tmp / "train.txt", "\n".join(split.train) + "\n")
        write_text_atomic(tmp / "heldout.txt", "\n".join(split.heldout) + "\n")
        t0 = time.perf_counter()
        user = train_ngram(split.train, tmp, config.ngram_config(), name=NGRAM_NAME)
        ngram_seconds = time.perf_counter() - t0
        tuned = ev.tune_mixture([user.binary, background_binary], split.heldout)
        t0 = time.perf_counter()
        mixed = mix_arpa_files(
            [],
            tuned.weights,
            tmp / f"{MIX_NAME}.arpa",
            tmp / f"{MIX_NAME}.bin",
            models=[read_arpa(user.arpa), background],
        )
        mix_seconds = time.perf_counter() - t0
        heldout = {
            "background": ev.ngram_perplexity(background_binary, split.heldout).to_dict(),
            "personal": ev.ngram_perplexity(user.binary, split.heldout).to_dict(),
            "interpolated_exact": tuned.perplexity.to_dict(),
            "interpolated": ev.ngram_perplexity(tmp / f"{MIX_NAME}.bin", split.heldout).to_dict(),
        }
        info = {
            "kind": "kenlm-word",
            "book_id": book_id,
            "models": ["ngram.arpa", str(background.path)],
            "weights": list(tuned.weights),
            "weight_user": tuned.weights[0],
            "tuned_on": f"heldout.txt (EM, {tuned.iterations} iterations); the held-out perplexities "
            "below are on the same sentences (one free parameter: a negligible optimism)",
            "heldout_every": split.every,
            "train_sentences": len(split.train),
            "heldout_sentences": len(split.heldout),
            "train_words": user.words,
            "counts": {"personal": list(user.counts), "mix": list(mixed.counts)},
            "heldout": heldout,
            "seconds": {
                "ngram": ngram_seconds,
                "mix": mix_seconds,
                "total": time.perf_counter() - start,
            },
        }
        write_json_atomic(tmp / f"{MIX_NAME}.json", info)
        write_json_atomic(tmp / "privacy.json", ngram_privacy_report(len(split.train)))
    return info


def build_user_lms(
    dataset_root: str | Path,
    out_dir: str | Path,
    corpus_dir: str | Path = DEFAULT_CORPUS_DIR,
    background_arpa: str | Path | None = None,
    books: Sequence[str] | None = None,
    config: UserLMConfig = UserLMConfig(),
    progress: bool = True,
) -> dict[str, Any]:
    """Background LM (unless given) and every test user's book LM; writes ``summary.json``."""
    from userlibri.data.dataset import Dataset

    config.validate()
    ds = Dataset(dataset_root)
    out_dir = Path(out_dir)
    all_books = user_books(ds)
    chosen = list(books) if books else all_books
    unknown = sorted(set(chosen) - set(ds.lm_books()))
    if unknown:
        raise UserLibriError(
            f"{ds.lm_dir}: no LM text for book(s) {unknown}; have {', '.join(ds.lm_books()) or 'none'}"
        )
    if background_arpa is None:
        background_arpa = build_background(out_dir / BACKGROUND_DIR, corpus_dir, all_books, config, progress)
    background_arpa = Path(background_arpa)
    bg_binary = background_arpa.with_suffix(".bin")
    if not bg_binary.is_file():
        bg_binary = background_arpa
    background = read_arpa(background_arpa)
    rows = []
    for book_id in tqdm(chosen, desc="book LMs", disable=not progress):
        info = build_book_lm(book_id, ds.lm_text(book_id), out_dir / book_id, background, bg_binary, config)
        h = info["heldout"]
        rows.append(
            {
                "book_id": book_id,
                "weight_user": info["weight_user"],
                **{f"ppl_{k}": v["perplexity"] for k, v in h.items()},
                "seconds_ngram": info["seconds"]["ngram"],
                "train_words": info["train_words"],
            }
        )
        log.info(
            "book %s: ppl background %.1f, personal %.1f, interpolated %.1f (weight %.3f)",
            book_id,
            h["background"]["perplexity"],
            h["personal"]["perplexity"],
            h["interpolated"]["perplexity"],
            info["weight_user"],
        )
    settings = {
        "background": _relative_to(background_arpa, out_dir),
        "config": {**asdict(config), "background_prune": list(config.background_prune)},
    }
    if books:
        rows = _keep_other_rows(out_dir / "summary.json", rows, settings)
    summary = {"dataset": _relative_to(ds.root, out_dir), **settings, "books": rows}
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def _relative_to(path: str | Path, base: Path) -> str:
    """``path`` relative to ``base`` (the directory of ``summary.json``), so that the work directory
    moved or copied as a whole (LMs beside their dataset) still finds its background LM and dataset."""
    return os.path.relpath(Path(path).resolve(), base.resolve())


def _summary_path(users_dir: Path, recorded: str, default: Path | None = None) -> Path:
    """A path ``summary.json`` records: relative ones are relative to ``users_dir``; an absolute one
    that no longer exists (summaries written before paths were relative, then moved) falls back to
    ``default`` when that exists."""
    path = Path(recorded)
    if not path.is_absolute():
        return users_dir / path
    if not path.exists() and default is not None and default.exists():
        log.warning("%s: %s no longer exists; using %s", users_dir / "summary.json", path, default)
        return default
    return path


def _keep_other_rows(
    path: Path, rows: list[dict[str, Any]], settings: dict[str, Any]
) -> list[dict[str, Any]]:
    """``rows`` (the books just rebuilt) plus the other books' rows of an earlier ``summary.json``
    in the same directory, when that run used the same background LM and settings and the book's
    LM is still there (so ``--books B`` after a change to book B's text keeps the others)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return rows
    if {k: old.get(k) for k in settings} != settings:
        return rows
    done = {r["book_id"] for r in rows}
    kept = [
        r
        for r in old.get("books", [])
        if r.get("book_id") not in done
        and (path.parent / str(r.get("book_id")) / f"{MIX_NAME}.json").is_file()
    ]
    return sorted(rows + kept, key=lambda r: id_order(r["book_id"]))


def _book_dirs(users_dir: Path, books: Sequence[str] | None) -> list[Path]:
    dirs = sorted(
        (p for p in users_dir.iterdir() if p.is_dir() and (p / f"{MIX_NAME}.json").is_file()),
        key=lambda p: id_order(p.name),
    )
    if books:
        have = {p.name for p in dirs}
        missing = sorted(set(books) - have)
        if missing:
            raise UserLibriError(f"{users_dir}: no book LM dir for {missing}; have {sorted(have)}")
        dirs = [p for p in dirs if p.name in set(books)]
    if not dirs:
        raise UserLibriError(
            f"{users_dir}: expected book LM dirs (<book>/mix.json), found none; run 'lm users'"
        )
    return dirs


def evaluate_user_lms(
    users_dir: str | Path,
    neural: dict[str, str] | None = None,
    tokenizer: str | Path | None = None,
    books: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Word-level held-out perplexity per book (= per group of users sharing it) of the
    background, personal and interpolated n-grams, plus any neural LM dirs.

    ``neural`` maps a name to an LM directory or a template with ``{book}`` (e.g.
    ``work/nlm/{book}/eps8``); ``tokenizer`` defaults to the one each dir's ``train.json`` names.
    """
    users_dir = Path(users_dir)
    summary_path = users_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    default_bg = users_dir / BACKGROUND_DIR / f"{NGRAM_NAME}.arpa"
    bg = default_bg
    if "background" in summary:
        bg = _summary_path(users_dir, summary["background"], default_bg)
    bg_bin = bg.with_suffix(".bin") if bg.with_suffix(".bin").is_file() else bg
    users_of: dict[str, list[str]] = {}
    if summary.get("dataset"):
        from userlibri.data.dataset import Dataset

        dataset = _summary_path(users_dir, summary["dataset"])
        try:
            ds = Dataset(dataset)
            for split in ds.splits():
                for u in ds.users(split):
                    users_of.setdefault(u.book, []).append(u.user_id)
        except UserLibriError as e:
            log.warning("cannot list users of %s: %s", dataset, e)
    rows = []
    for bdir in tqdm(_book_dirs(users_dir, books), desc="eval", disable=not progress):
        book = bdir.name
        heldout = ev.read_sentences_file(bdir / "heldout.txt")
        mix = json.loads((bdir / f"{MIX_NAME}.json").read_text(encoding="utf-8"))
        personal = bdir / f"{NGRAM_NAME}.bin"
        results = {
            "background": ev.ngram_perplexity(bg_bin, heldout),
            "personal": ev.ngram_perplexity(personal, heldout),
            "interpolated": ev.ngram_perplexity(bdir / f"{MIX_NAME}.bin", heldout),
            "interpolated_exact": ev.mixture_perplexity([personal, bg_bin], mix["weights"], heldout),
        }
        for name, template in (neural or {}).items():
            path = Path(template.format(book=book))
            if not path.exists():
                raise UserLibriError(f"neural LM {name!r} for book {book}: {path} does not exist")
            results[name] = ev.neural_perplexity(path, heldout, tokenizer)
        rows.append(
            {
                "book_id": book,
                "users": sorted(users_of.get(book, [])),
                "weight_user": mix["weights"][0],
                "heldout_sentences": len(heldout),
                "heldout_words": results["background"].words,
                "perplexity": {k: v.perplexity for k, v in results.items()},
                "oov_rate": {k: v.oovs / max(v.words, 1) for k, v in results.items()},
            }
        )
    names = list(rows[0]["perplexity"])
    mean = {k: sum(r["perplexity"][k] for r in rows) / len(rows) for k in names}
    reduction = {
        k: sum(1.0 - r["perplexity"][k] / r["perplexity"]["background"] for r in rows) / len(rows)
        for k in names
    }
    return {
        "users_dir": str(users_dir),
        "metric": "word-level perplexity on held-out sentences (words + sentence ends)",
        "books": rows,
        "mean_perplexity": mean,
        "mean_reduction_vs_background": reduction,
    }


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of :func:`evaluate_user_lms` output."""
    names = list(result["mean_perplexity"])
    lines = [
        "| book | users | held-out words | user weight | " + " | ".join(names) + " |",
        "|---|---|---:|---:|" + "---:|" * len(names),
    ]
    for r in result["books"]:
        cells = " | ".join(f"{r['perplexity'][k]:.1f}" for k in names)
        head = f"| {r['book_id']} | {len(r['users'])} | {r['heldout_words']} | {r['weight_user']:.3f}"
        lines.append(f"{head} | {cells} |")
    lines.append("| mean | | | | " + " | ".join(f"{result['mean_perplexity'][k]:.1f}" for k in names) + " |")
    lines.append(
        "| reduction vs background | | | | "
        + " | ".join(f"{100 * result['mean_reduction_vs_background'][k]:.0f}%" for k in names)
        + " |"
    )
    return "\n".join(lines)
