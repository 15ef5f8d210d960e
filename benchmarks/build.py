"""Benchmark ``userlibri build``.

1. Text pipeline alone at UserLibri scale: ~80 distinct Gutenberg-style books of ~100k words made
   from the cached book corpus (chapters of two source books, shuffled per synthetic book), 107
   users reading 1-2 chapters each (partially, LibriSpeech-style ~20-word utterances), timed for
   10, 30 and 107 users with ``--workers`` processes (the < 60 s target is for 107 users, 2 cores).
2. Full ``build`` (scan, audio checks, hard links, text, writing) on a LibriSpeech-layout corpus:
   ``--corpus ROOT`` if given, else one generated here from the same books and users with tiny
   sine flac files (``--no-full`` skips it).

Writes benchmarks/results/build.json and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from userlibri.constants import DEFAULT_CACHE_DIR
from userlibri.data import librispeech as ls
from userlibri.data.books import BookCorpus
from userlibri.data.userlibri import BookJob, BuildConfig, book_sentences, build, process_books, user_id
from userlibri.fsio import write_json_atomic, write_text_atomic

HERE = Path(__file__).resolve().parent
SPLITS = ("test-clean", "test-other")


def gutenberg_text(title: str, chapters: list[tuple[str, list[str]]]) -> str:
    """A plain-text eBook with Gutenberg header/footer and CHAPTER headings."""
    up = title.upper()
    out = [
        f"The Project Gutenberg EBook of {title}",
        "",
        f"Title: {title}",
        "",
        "Author: Various",
        "",
        f"*** START OF THIS PROJECT GUTENBERG EBOOK {up} ***",
        "",
        "Produced by a benchmark",
        "",
        "",
    ]
    for i, (_, paras) in enumerate(chapters, start=1):
        out += ["", "", f"CHAPTER {i}.", "", ""]
        for p in paras:
            out += [p, ""]
    out += ["", "", "THE END", "", f"*** END OF THIS PROJECT GUTENBERG EBOOK {up} ***", ""]
    return "\n".join(out)


def make_books(corpus: BookCorpus, n_books: int, words: int, seed: int) -> list[tuple[str, str, list]]:
    """``n_books`` distinct synthetic books of >= ``words`` words: (book_id, text, chapters)."""
    sources = [corpus.load(b) for b in corpus.book_ids()]
    sources = [b for b in sources if b.kind == "book" and len(b.chapters) >= 5] or sources
    out = []
    for i in range(n_books):
        a, b = sources[i % len(sources)], sources[(i * 3 + 1) % len(sources)]
        pool = [(c.title, list(c.paragraphs)) for c in a.chapters]
        if b is not a:
            pool += [(c.title, list(c.paragraphs)) for c in b.chapters]
        random.Random(seed * 1000 + i).shuffle(pool)
        chosen, total = [], 0
        for ch in pool:
            if total >= words:
                break
            n = sum(len(p.split()) for p in ch[1])
            if n < 200:
                continue
            chosen.append(ch)
            total += n
        book_id = str(20000 + i)
        out.append((book_id, gutenberg_text(f"Benchmark Book {book_id}", chosen), chosen))
    return out


def make_users(books: list[tuple[str, str, list]], n_users: int, seed: int) -> list[dict]:
    """Users (speaker, book, split) with transcripts of 1-2 partially read chapters."""
    from userlibri.data.books import Chapter

    rng = random.Random(seed)
    users = []
    used_chapters: dict[str, set[int]] = {}
    for u in range(n_users):
        book_id, _, chapters = books[u % len(books)] if u < len(books) else books[rng.randrange(len(books))]
        speaker = str(100 + u)
        split = SPLITS[u % 2]
        taken = used_chapters.setdefault(book_id, set())
        free = [i for i in range(len(chapters)) if i not in taken]
        picks = rng.sample(free, k=min(len(free), rng.choice((1, 2))))
        chs = []
        for k, ci in enumerate(sorted(picks)):
            taken.add(ci)
            sents, _ = book_sentences([Chapter(chapters[ci][0], tuple(chapters[ci][1]))])
            words = " ".join(sents).split()
            lo = rng.randrange(0, max(1, len(words) // 4))
            hi = min(len(words), lo + rng.randrange(600, 1400))  # a partial reading, ~52 utterances/user
            utts, pos = [], lo
            while pos < hi:
                step = rng.randrange(10, 35)
                # ASR-ish noise: ~4% of words substituted, ~2% dropped.
                seg = [
                    w if rng.random() > 0.04 else rng.choice(("UH", "THE", "A", "AND"))
                    for w in words[pos : pos + step]
                ]
                text = " ".join(w for w in seg if rng.random() > 0.02)
                if text:
                    utts.append(text)
                pos += step
            chs.append((str(300000 + u * 10 + k), utts))
        users.append({"speaker": speaker, "book": book_id, "split": split, "chapters": chs})
    return users


def text_jobs(books: dict[str, Path], users: list[dict]) -> list[BookJob]:
    by_book: dict[str, BookJob] = {}
    for u in users:
        b = u["book"]
        job = by_book.setdefault(b, BookJob(b, str(books[b]), {}, {}))
        for cid, utts in u["chapters"]:
            job.test_chapters[cid] = utts
        job.users[f"{u['split']}/{user_id(u['speaker'], b)}"] = [t for _, utts in u["chapters"] for t in utts]
    return [by_book[b] for b in sorted(by_book)]


def write_corpus(root: Path, book_files: dict[str, Path], users: list[dict]) -> int:
    """A LibriSpeech-layout corpus for ``users`` with 0.2 s sine flac files; returns #utterances."""
    ls.write_speakers(
        root / ls.SPEAKERS_FILE,
        [
            ls.SpeakerInfo(u["speaker"], "MF"[i % 2], u["split"], 1.0, f"Reader {u['speaker']}")
            for i, u in enumerate(users)
        ],
    )
    chapters = []
    n = 0
    tone = (0.1 * np.sin(2 * np.pi * 200 * np.arange(3200) / 16000)).astype(np.float32)
    for u in users:
        for cid, utts in u["chapters"]:
            chapters.append(ls.ChapterInfo(cid, u["speaker"], 1.0, u["split"], "1", u["book"], "Ch", "Bench"))
            trans = {f"{u['speaker']}-{cid}-{i:04d}": t for i, t in enumerate(utts)}
            ls.write_transcripts(ls.transcript_path(root, u["split"], u["speaker"], cid), trans)
            for utt in trans:
                sf.write(str(ls.audio_path(root, u["split"], utt)), tone, 16000, format="FLAC")
                n += 1
    ls.write_chapters(root / ls.CHAPTERS_FILE, chapters)
    for b, path in book_files.items():
        dst = ls.book_text_path(root, b)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, dst)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--books", type=Path, default=DEFAULT_CACHE_DIR / "corpora", help="cached book corpus")
    ap.add_argument("--corpus", type=Path, default=None, help="time build on this LibriSpeech-layout root")
    ap.add_argument("--n-books", type=int, default=80)
    ap.add_argument("--book-words", type=int, default=100_000)
    ap.add_argument("--users", default="10,30,107")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-full", action="store_true", help="skip the full build on a generated corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "build.json")
    args = ap.parse_args()
    if not (args.books / "manifest.json").is_file() and args.corpus is None:
        print(
            f"no book corpus at {args.books}; run 'userlibri corpora fetch' or pass --books", file=sys.stderr
        )
        return 2
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "workers": args.workers,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="userlibri-buildbench-") as tmpd:
        tmp = Path(tmpd)
        if (args.books / "manifest.json").is_file():
            t0 = time.perf_counter()
            books = make_books(BookCorpus.open(args.books), args.n_books, args.book_words, args.seed)
            book_files = {}
            for b, text, _ in books:
                book_files[b] = tmp / "books" / f"{b}.txt"
                write_text_atomic(book_files[b], text)
            counts = [int(x) for x in args.users.split(",")]
            users = make_users(books, max(counts), args.seed)
            print(
                f"generated {len(books)} books ({sum(len(t.split()) for _, t, _ in books) / len(books):.0f} "
                f"words each on average) and {len(users)} users in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            scaling = []
            for n in counts:
                jobs = text_jobs(book_files, users[:n])
                words = sum(len(book_files[j.book_id].read_text(encoding="utf-8").split()) for j in jobs)
                t0 = time.perf_counter()
                res = process_books(jobs, args.workers)
                secs = time.perf_counter() - t0
                matches = [m for r in res.values() for m in r.matches]
                leaks = [f / t for r in res.values() for f, t in r.leakage.values() if t]
                row = {
                    "users": n,
                    "books": len(jobs),
                    "book_words": words,
                    "seconds": round(secs, 2),
                    "words_per_s": round(words / secs),
                    "chapters": len(matches),
                    "located": sum(m.located for m in matches),
                    "coverage_min": round(min((m.coverage for m in matches if m.located), default=0.0), 3),
                    "leakage_max": round(max(leaks, default=0.0), 5),
                    "lm_sentences_mean": round(sum(len(r.sentences) for r in res.values()) / len(res), 1),
                    "book_seconds_max": round(max(r.seconds for r in res.values()), 2),
                }
                scaling.append(row)
                print(
                    f"text pipeline: {n:>4} users, {len(jobs):>3} books, {words / 1e6:.2f}M words: "
                    f"{secs:6.1f} s ({row['words_per_s']:,} words/s), "
                    f"located {row['located']}/{row['chapters']}, "
                    f"leakage max {row['leakage_max']}",
                    flush=True,
                )
            result["text_pipeline"] = scaling
            if not args.no_full and args.corpus is None:
                root = tmp / "LibriSpeech"
                t0 = time.perf_counter()
                n_utts = write_corpus(root, book_files, users)
                print(
                    f"generated a LibriSpeech-layout corpus: {n_utts} utterances in "
                    f"{time.perf_counter() - t0:.1f} s",
                    flush=True,
                )
                args.corpus = root
        if args.corpus is not None:
            t0 = time.perf_counter()
            rep = build(BuildConfig(librispeech=args.corpus, out=tmp / "out", num_workers=args.workers))
            secs = time.perf_counter() - t0
            result["full_build"] = {
                "corpus": "generated" if str(args.corpus).startswith(str(tmp)) else str(args.corpus),
                "seconds": round(secs, 2),
                "timing": rep["timing"],
                "users": {s: v["users"] for s, v in rep["splits"].items()},
                "utterances": sum(v["utterances"] for v in rep["splits"].values()),
                "alignment": rep["alignment"],
                "leakage_max": rep["leakage"]["max"],
                "leakage_mean_before_filter": rep["leakage"]["mean_before_filter"],
            }
            print(f"full build: {secs:.1f} s {rep['timing']}", flush=True)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
