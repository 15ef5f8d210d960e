"""Atomic file and directory writes (outputs appear whole or not at all), and a per-directory
lock for long runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from userlibri.errors import UserLibriError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Works for files and directories: whatever the block creates at the temporary path replaces
    ``path``. On error the temporary path is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.rmdir()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


#: Lock file that ``exclusive_dir`` keeps in the directory (it holds the owner's PID).
LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive_dir(path: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive advisory lock (``flock``) on directory ``path`` (created if missing) while
    the block runs: a second process doing ``what`` in the same directory fails at once, naming the
    holder's PID, instead of interleaving its files with ours. The kernel drops the lock when the
    process dies, so a killed run never leaves a stale lock."""
    import fcntl  # POSIX only; imported here so that the module stays importable elsewhere

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    f = open(path / LOCK_FILE, "a+", encoding="utf-8")  # held open for the whole block
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise UserLibriError(
                f"{path}: expected no other {what} in this directory, found one running (pid {holder}); "
                "stop it or choose another directory"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield path
    finally:
        f.close()  # closing the descriptor releases the lock
