"""Benchmark ``split_sentences`` and ``normalize_transcript`` throughput (words per CPU second, one core).

Text: a book-size text made by repeating a paragraph of 19th-century-style prose with dialogue,
abbreviations, numbers, years, currency and headings (``--words`` words, default 2M), and, with
``--corpus DIR`` (default: the fetched book cache, if any), the real books of a book cache (``userlibri
corpora fetch``). pysbd and syntok, if installed, are timed on 20k words of the same text (``--no-compare``
skips them).

Targets: splitting > 1M words a minute on one core; normalising ~10M words in well under 60 s on 2 cores.
Writes benchmarks/results/text_throughput.json and prints a summary.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

from userlibri.constants import DEFAULT_CACHE_DIR
from userlibri.data.books import BookCorpus
from userlibri.fsio import write_json_atomic
from userlibri.text import normalize_transcript, split_sentences

HERE = Path(__file__).resolve().parent

PARAGRAPHS = [
    "CHAPTER XIV.",
    "On the 3rd of March, 1811, Mr. and Mrs. Bennet drove to St. James's with Capt. Harville, who "
    "had lately paid \u00a35 10s. for a horse. \u201cIt is a well-known fact,\u201d said he, \u201cthat "
    "a man of 25 may spend 1,250 pounds a year\u2014nay, 2,000\u2014and think himself poor.\u201d "
    '"Go!" she cried. He went.',
    "Dr. Watson arrived at 10:30 precisely; the train was 2.5 hours late, and 12% of the passengers "
    "had already left for No. 221 Baker St. in the rain. 'Tis a pity, thought he, that George III "
    "never saw the 1820s' railways... But there was nothing to be done about it.",
    "She had read the book i.e. the first volume, twice, and found it not worth $3.50, though the "
    "publisher (Messrs. Smith & Co.) thought otherwise. J. R. R. Tolkien was not yet born. Col. Brandon "
    "smiled at the 22nd regiment's band, and Mary's heart beat faster.",
]


def generated_text(n_words: int) -> str:
    block = "\n\n".join(PARAGRAPHS)
    reps = max(1, n_words // len(block.split()))
    return "\n\n".join([block] * reps)


def corpus_text(root: Path) -> str:
    corpus = BookCorpus.open(root)
    parts = []
    for book_id in corpus.book_ids():
        book = corpus.load(book_id)
        for chapter in book.chapters:
            parts.append(chapter.title)
            parts.extend(chapter.paragraphs)
    return "\n\n".join(parts)


def measure(name: str, text: str) -> dict[str, float | int | str]:
    n_words = len(text.split())
    t0 = time.process_time()
    sentences = split_sentences(text)
    t_split = time.process_time() - t0
    t0 = time.process_time()
    normalised = [normalize_transcript(s) for s in sentences]
    t_norm = time.process_time() - t0
    row: dict[str, float | int | str] = {
        "text": name,
        "words": n_words,
        "sentences": len(sentences),
        "sentences_with_digits": sum(bool(re.search(r"\d", s)) for s in sentences),
        "normalised_words": sum(len(s.split()) for s in normalised),
        "split_s": round(t_split, 3),
        "split_words_per_s": round(n_words / t_split),
        "normalize_s": round(t_norm, 3),
        "normalize_words_per_s": round(n_words / t_norm),
        "normalize_10M_words_2_cores_s": round(1e7 / (n_words / t_norm) / 2, 1),
    }
    print(
        f"{name}: {n_words:,} words, {len(sentences):,} sentences; "
        f"split {row['split_words_per_s']:,} words/s ({n_words / t_split * 60 / 1e6:.1f}M words/min); "
        f"normalise {row['normalize_words_per_s']:,} words/s "
        f"(10M words on 2 cores: {row['normalize_10M_words_2_cores_s']} s)",
        flush=True,
    )
    return row


def compare(text: str, n_words: int) -> list[dict[str, float | int | str]]:
    """Time pysbd and syntok (if installed) against our splitter on the first ``n_words`` words."""
    paragraphs, count = [], 0
    for para in re.split(r"\n\s*\n", text):
        paragraphs.append(para)
        count += len(para.split())
        if count >= n_words:
            break
    sample = "\n\n".join(paragraphs)
    splitters = {"userlibri": split_sentences}
    try:
        import pysbd

        seg = pysbd.Segmenter(language="en", clean=False)
        splitters["pysbd"] = lambda t: [
            s for p in re.split(r"\n\s*\n", t) for s in seg.segment(" ".join(p.split()))
        ]
    except ImportError:
        print("pysbd not installed: skipped")
    try:
        from syntok import segmenter

        splitters["syntok"] = lambda t: [
            "".join(tok.spacing + tok.value for tok in sent) for para in segmenter.process(t) for sent in para
        ]
    except ImportError:
        print("syntok not installed: skipped")
    rows = []
    for name, fn in splitters.items():
        t0 = time.process_time()
        out = fn(sample)
        dt = time.process_time() - t0
        rows.append(
            {"splitter": name, "words": count, "sentences": len(out), "words_per_s": round(count / dt)}
        )
        print(f"  {name}: {count / dt:,.0f} words/s, {len(out)} sentences", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=2_000_000, help="size of the generated text")
    default_corpus = DEFAULT_CACHE_DIR / "corpora"
    ap.add_argument(
        "--corpus",
        type=Path,
        default=default_corpus if (default_corpus / "manifest.json").exists() else None,
        help="a book cache directory (userlibri corpora fetch); default: the cache, if fetched",
    )
    ap.add_argument("--no-compare", action="store_true", help="skip timing pysbd and syntok on 20k words")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "text_throughput.json")
    args = ap.parse_args()
    texts = {"generated": generated_text(args.words)}
    if args.corpus is not None:
        texts["corpus"] = corpus_text(args.corpus)
    results = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "timing": "CPU seconds of one process (time.process_time)",
        "runs": [measure(name, text) for name, text in texts.items()],
    }
    if not args.no_compare:
        results["splitter_comparison"] = compare(texts.get("corpus", texts["generated"]), 20_000)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
