"""Client data for federated LM training: one text file (one sentence a line) per client.

``split_corpus_clients`` makes pseudo-users from the book cache: every book no test user reads is
cut into runs of consecutive chapters (a State of the Union address is a chapter) of about
``sentences_per_client`` sentences, so each client holds one author's text about one stretch of
a book. Some clients are held out whole (``heldout.txt``): their text measures how well a
background LM serves users it never saw.

Output of ``split_corpus_clients``::

    clients/<book>-<nnn>.txt   one training client each
    heldout.txt                the held-out clients' sentences
    all_train.txt              every training client's sentences (for a central baseline)
    clients.json               book, chapters and sentence count of every client, held out or not
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from userlibri.constants import DEFAULT_SEED
from userlibri.errors import ConfigError, DataFormatError, UserLibriError
from userlibri.fsio import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

CLIENTS_DIR = "clients"
HELDOUT_FILE = "heldout.txt"
ALL_TRAIN_FILE = "all_train.txt"
CLIENTS_INFO = "clients.json"
DEFAULT_SENTENCES_PER_CLIENT = 300


def list_clients(data_dir: str | Path) -> list[Path]:
    """The client files of ``data_dir`` (``*.txt``, sorted by name); raises if there are none."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataFormatError(data_dir, "a directory of client text files (*.txt)", "no such directory")
    files = sorted(p for p in data_dir.glob("*.txt") if p.is_file())
    if not files:
        raise DataFormatError(data_dir, "client text files (*.txt, one sentence a line)", "none")
    return files


def read_client(path: str | Path) -> list[str]:
    """A client's non-empty stripped lines (possibly none)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, "a UTF-8 text file, one sentence a line", str(e)) from e
    return [s.strip() for s in text.splitlines() if s.strip()]


def data_fingerprint(files: Sequence[str | Path]) -> dict[str, Any]:
    """Number of clients and a sha256 over their names and contents (in order)."""
    h = hashlib.sha256()
    for f in files:
        p = Path(f)
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return {"clients": len(files), "sha256": h.hexdigest()}


def _groups(sents: list[str], owner: list[int], target: int) -> list[tuple[list[int], list[str]]]:
    """Runs of consecutive chapters of about ``target`` sentences; a chapter longer than twice
    the target is cut into pieces of ``target``; a short last run joins the one before it."""
    by_ch: dict[int, list[str]] = {}
    for s, ch in zip(sents, owner, strict=True):
        by_ch.setdefault(ch, []).append(s)
    out: list[tuple[list[int], list[str]]] = []
    chs: list[int] = []
    cur: list[str] = []
    for ch in sorted(by_ch):
        lines = by_ch[ch]
        if len(lines) > 2 * target:
            if cur:
                out.append((chs, cur))
                chs, cur = [], []
            for i in range(0, len(lines), target):
                out.append(([ch], lines[i : i + target]))
            if 2 * len(out[-1][1]) < target and len(out) > 1 and out[-2][0] == [ch]:
                tail = out.pop()
                out[-1] = ([ch], out[-1][1] + tail[1])
            continue
        chs.append(ch)
        cur = cur + lines
        if len(cur) >= target:
            out.append((chs, cur))
            chs, cur = [], []
    if cur:
        if out and 2 * len(cur) < target:
            out[-1] = (out[-1][0] + chs, out[-1][1] + cur)
        else:
            out.append((chs, cur))
    return out


def split_corpus_clients(
    corpus_dir: str | Path,
    out_dir: str | Path,
    exclude: Sequence[str] = (),
    sentences_per_client: int = DEFAULT_SENTENCES_PER_CLIENT,
    max_clients: int | None = None,
    heldout_clients: int = 0,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Cut the cache's books (minus ``exclude``) into pseudo-user clients; write ``out_dir``
    atomically (layout in the module docstring). ``max_clients`` keeps a seeded random subset of
    training clients; ``heldout_clients`` more are drawn first and held out. Returns the summary
    written to ``clients.json``."""
    from userlibri.data.books import BookCorpus
    from userlibri.data.userlibri import book_sentences

    if sentences_per_client < 1:
        raise ConfigError(f"sentences_per_client: expected >= 1, found {sentences_per_client}")
    if heldout_clients < 0 or (max_clients is not None and max_clients < 1):
        raise ConfigError(
            f"expected heldout_clients >= 0 and max_clients >= 1, found {heldout_clients}, {max_clients}"
        )
    corpus = BookCorpus.open(corpus_dir)
    ids = [b for b in corpus.book_ids() if b not in set(exclude)]
    if not ids:
        raise UserLibriError(f"{corpus_dir}: no books left after excluding {sorted(exclude)}")
    units: list[dict[str, Any]] = []
    for book_id in ids:
        sents, owner = book_sentences(corpus.load(book_id).chapters)
        for n, (chs, lines) in enumerate(_groups(sents, owner, sentences_per_client)):
            units.append({"id": f"{book_id}-{n:03d}", "book": book_id, "chapters": chs, "lines": lines})
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    held = sorted(order[:heldout_clients])
    train = order[heldout_clients:]
    if max_clients is not None:
        train = train[:max_clients]
    train = sorted(train)
    if not train:
        raise UserLibriError(
            f"{corpus_dir}: {len(units)} clients in all, none left for training after holding out "
            f"{heldout_clients}"
        )
    summary: dict[str, Any] = {
        "corpus": str(corpus_dir),
        "excluded_books": sorted(exclude),
        "sentences_per_client": sentences_per_client,
        "seed": seed,
        "clients": [],
        "heldout": [],
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        (tmp / CLIENTS_DIR).mkdir(parents=True)
        all_lines: list[str] = []
        for i in train:
            u = units[i]
            (tmp / CLIENTS_DIR / f"{u['id']}.txt").write_text("\n".join(u["lines"]) + "\n", encoding="utf-8")
            all_lines.extend(u["lines"])
            summary["clients"].append(
                {k: u[k] for k in ("id", "book", "chapters")} | {"sentences": len(u["lines"])}
            )
        held_lines = [s for i in held for s in units[i]["lines"]]
        for i in held:
            u = units[i]
            summary["heldout"].append(
                {k: u[k] for k in ("id", "book", "chapters")} | {"sentences": len(u["lines"])}
            )
        (tmp / ALL_TRAIN_FILE).write_text("\n".join(all_lines) + "\n", encoding="utf-8")
        if held_lines:
            (tmp / HELDOUT_FILE).write_text("\n".join(held_lines) + "\n", encoding="utf-8")
        summary["train_sentences"] = len(all_lines)
        summary["heldout_sentences"] = len(held_lines)
        write_json_atomic(tmp / CLIENTS_INFO, summary)
    log.info(
        "%d training clients (%d sentences), %d held out (%d sentences) from %d books -> %s",
        len(train),
        len(all_lines),
        len(held),
        len(held_lines),
        len(ids),
        out_dir,
    )
    return summary
