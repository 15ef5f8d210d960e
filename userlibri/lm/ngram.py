"""N-gram LMs with KenLM's estimator: ``lmplz`` (modified Kneser-Ney) -> ARPA -> ``build_binary``.

Word-level LMs are trained on normalised sentences as they are; token-level LMs on the same
sentences encoded into sentencepiece pieces (one piece a "word"). Each model is written as
``<name>.arpa``, ``<name>.bin`` (KenLM probing binary) and ``<name>.json`` (config, counts,
tokenizer id), each atomically. Also here: a strict ARPA reader that names the line of any error.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from userlibri.errors import ConfigError, DataFormatError, ExternalToolError, UserLibriError
from userlibri.fsio import atomic_path, write_json_atomic
from userlibri.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_NGRAM_ORDER = 4
# A fixed size, not a share of RAM: reserving 10% of 24 GB took longer than estimating a 100k-word
# per-user 4-gram (1-3 s vs < 1 s). Larger corpora spill to disk (-T) and still work.
DEFAULT_LMPLZ_MEMORY = "200M"
#: lmplz's message when Kneser-Ney discounts cannot be estimated (too little or too regular text).
_DISCOUNT_ERROR = re.compile(r"discount", re.IGNORECASE)
_MEMORY_RE = re.compile(r"^\d+(\.\d+)?[%bKMGTPEZY]?$")
SPECIAL_WORDS = ("<s>", "</s>", "<unk>")


@dataclass(frozen=True)
class NgramConfig:
    """How to estimate an n-gram LM with lmplz."""

    order: int = DEFAULT_NGRAM_ORDER
    unit: Literal["word", "token"] = "word"
    #: lmplz ``--prune`` thresholds, one per order from unigrams up (unigrams must be 0);
    #: n-grams seen this many times or fewer are dropped. Empty: no pruning.
    prune: tuple[int, ...] = ()
    #: lmplz ``-S``: sorting memory, a percentage of RAM ("10%") or a size ("200M").
    memory: str = DEFAULT_LMPLZ_MEMORY
    #: ``None``: retry with ``--discount_fallback`` only if lmplz cannot estimate the discounts.
    discount_fallback: bool | None = None
    #: KenLM binary data structure.
    binary_type: Literal["probing", "trie"] = "probing"

    def validate(self) -> None:
        """Raise ``ConfigError`` for values lmplz would reject."""
        if not 1 <= self.order <= 10:
            raise ConfigError(f"order: expected 1..10, found {self.order}")
        if self.unit not in ("word", "token"):
            raise ConfigError(f"unit: expected 'word' or 'token', found {self.unit!r}")
        if self.prune:
            if len(self.prune) > self.order:
                raise ConfigError(
                    f"prune: expected at most {self.order} thresholds (one per order), found {self.prune}"
                )
            if self.prune[0] != 0:
                raise ConfigError(f"prune: unigrams cannot be pruned, expected 0 first, found {self.prune}")
            if any(b < a for a, b in zip(self.prune, self.prune[1:], strict=False)) or min(self.prune) < 0:
                raise ConfigError(
                    f"prune: expected non-negative, non-decreasing thresholds, found {self.prune}"
                )
        if not _MEMORY_RE.match(self.memory):
            raise ConfigError(
                f"memory: expected a percentage like '10%' or a size like '200M', found {self.memory!r}"
            )
        if self.binary_type not in ("probing", "trie"):
            raise ConfigError(f"binary_type: expected 'probing' or 'trie', found {self.binary_type!r}")


@dataclass(frozen=True)
class NgramModel:
    """Paths of a trained n-gram LM and what went into it."""

    arpa: Path
    binary: Path
    meta: Path
    config: NgramConfig
    counts: tuple[int, ...]
    sentences: int
    words: int
    discount_fallback: bool
    tokenizer_id: str | None = None
    seconds: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class ArpaInfo:
    """What an ARPA file declares and holds."""

    path: Path
    counts: tuple[int, ...]

    @property
    def order(self) -> int:
        return len(self.counts)


# ---------------------------------------------------------------------------------------------
# External tools


def find_tool(name: str) -> Path:
    """Locate a KenLM tool: the venv's bin dir (next to ``sys.executable``), then ``PATH``."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ExternalToolError(
        f"{name} not found: expected it in {candidate.parent} or on PATH; "
        "run `make setup` (tools/setup.sh builds lmplz and build_binary into .venv/bin)"
    )


def _run(cmd: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
    log.debug("running: %s", " ".join(map(str, cmd)))
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Training


def _iter_lines(source: str | Path | Sequence[str | Path] | Iterable[str]) -> Iterator[str]:
    """Non-empty stripped sentences from a path, a list of paths, or an iterable of sentences."""
    if isinstance(source, (str, Path)):
        source = [Path(source)]
    if isinstance(source, Sequence) and source and all(isinstance(s, Path) for s in source):
        for path in source:
            if not Path(path).is_file():
                raise DataFormatError(path, "a text file (one sentence a line)", "no such file")
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield line.strip()
        return
    for line in source:
        if not isinstance(line, str):
            raise UserLibriError(
                f"n-gram training input: expected str sentences, found {type(line).__name__}"
            )
        if line.strip():
            yield line.strip()


def _write_corpus(
    source: str | Path | Sequence[str | Path] | Iterable[str],
    path: Path,
    unit: str,
    tokenizer: Tokenizer | None,
) -> tuple[int, int]:
    """Write the training text lmplz reads; return (sentences, units)."""
    sentences = units = unk = 0
    with open(path, "w", encoding="utf-8") as f:
        for line in _iter_lines(source):
            if unit == "token" and tokenizer is not None:
                ids = tokenizer.encode(line)
                unk += sum(1 for i in ids if i == tokenizer.unk_id)
                words = [tokenizer.id_to_piece(i) for i in ids if i != tokenizer.unk_id]
            else:
                words = line.split()
            if not words:
                continue
            f.write(" ".join(words))
            f.write("\n")
            sentences += 1
            units += len(words)
    if unk:
        log.warning("%d pieces map to <unk> in the tokenizer and were left out of the token LM text", unk)
    return sentences, units


def train_ngram(
    source: str | Path | Sequence[str | Path] | Iterable[str],
    out_dir: str | Path,
    config: NgramConfig = NgramConfig(),
    tokenizer: Tokenizer | str | Path | None = None,
    name: str | None = None,
) -> NgramModel:
    """Estimate an n-gram LM with lmplz and write ``<name>.arpa/.bin/.json`` into ``out_dir``.

    ``source`` is a text file (or a list of ``Path``), one normalised sentence a line, or an
    iterable of sentences. ``unit="token"`` needs ``tokenizer`` (a :class:`Tokenizer` or the path
    of its model); the model then holds pieces.
    ``name`` defaults to ``"<unit>-<order>gram"``.
    """
    config.validate()
    if isinstance(tokenizer, (str, Path)):
        tokenizer = Tokenizer.load(tokenizer)
    if config.unit == "token" and tokenizer is None:
        raise ConfigError("unit='token' needs a tokenizer (the sentencepiece model of the ASR model)")
    start = time.perf_counter()
    lmplz, build_binary = find_tool("lmplz"), find_tool("build_binary")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"{config.unit}-{config.order}gram"
    with tempfile.TemporaryDirectory(prefix=".ngram.", dir=out_dir) as tmp_str:
        tmp = Path(tmp_str)
        corpus = tmp / "corpus.txt"
        sentences, words = _write_corpus(source, corpus, config.unit, tokenizer)
        if sentences == 0:
            raise UserLibriError(
                f"n-gram training: expected at least one non-empty sentence, found 0 sentences in {source!r}"
            )
        arpa_tmp = tmp / "lm.arpa"
        cmd: list[str | Path] = [lmplz, "-o", str(config.order), "-S", config.memory, "-T", tmp / "lmplz"]
        cmd += ["--text", corpus, "--arpa", arpa_tmp, "--skip_symbols"]
        if config.prune:
            cmd += ["--prune", *map(str, config.prune)]
        fallback = bool(config.discount_fallback)
        proc = _run(cmd + (["--discount_fallback"] if fallback else []))
        if proc.returncode != 0 and config.discount_fallback is None and _DISCOUNT_ERROR.search(proc.stderr):
            log.warning(
                "lmplz could not estimate Kneser-Ney discounts from %d sentences (%d %ss); "
                "retrying with --discount_fallback",
                sentences,
                words,
                config.unit,
            )
            fallback = True
            proc = _run(cmd + ["--discount_fallback"])
        if proc.returncode != 0:
            hint = ""
            if _DISCOUNT_ERROR.search(proc.stderr) and not fallback:
                hint = " (the text is too small for Kneser-Ney discounts; allow discount_fallback)"
            raise ExternalToolError(
                f"lmplz failed (exit {proc.returncode}) on {sentences} sentences, {words} {config.unit}s"
                f"{hint}:\n{_tail(proc.stderr)}"
            )
        info = read_arpa_counts(arpa_tmp)
        bin_tmp = tmp / "lm.bin"
        proc = _run(
            [build_binary, "-S", config.memory, "-T", tmp / "bb", config.binary_type, arpa_tmp, bin_tmp]
        )
        if proc.returncode != 0:
            raise ExternalToolError(f"build_binary failed (exit {proc.returncode}):\n{_tail(proc.stderr)}")
        paths = {ext: out_dir / f"{name}.{ext}" for ext in ("arpa", "bin", "json")}
        with atomic_path(paths["arpa"]) as dst:
            os.replace(arpa_tmp, dst)
        with atomic_path(paths["bin"]) as dst:
            os.replace(bin_tmp, dst)
    model = NgramModel(
        arpa=paths["arpa"],
        binary=paths["bin"],
        meta=paths["json"],
        config=config,
        counts=info.counts,
        sentences=sentences,
        words=words,
        discount_fallback=fallback,
        tokenizer_id=tokenizer.model_id if tokenizer is not None and config.unit == "token" else None,
        seconds=time.perf_counter() - start,
    )
    write_json_atomic(paths["json"], ngram_meta(model))
    log.info(
        "%s %d-gram LM from %d sentences (%d %ss): counts %s -> %s (%.2f s)",
        config.unit,
        config.order,
        sentences,
        words,
        config.unit,
        list(info.counts),
        paths["arpa"],
        model.seconds,
    )
    return model


def ngram_meta(model: NgramModel) -> dict[str, object]:
    """The ``<name>.json`` sidecar: config, counts and the tokenizer a token LM belongs to."""
    return {
        "kind": f"kenlm-{model.config.unit}",
        "config": {**asdict(model.config), "prune": list(model.config.prune)},
        "counts": list(model.counts),
        "sentences": model.sentences,
        "words": model.words,
        "discount_fallback": model.discount_fallback,
        "tokenizer_id": model.tokenizer_id,
        "arpa": model.arpa.name,
        "binary": model.binary.name,
    }


# ---------------------------------------------------------------------------------------------
# ARPA reading


def _parse_float(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, f"a numeric {what}", repr(text), line=lineno) from None
    if math.isnan(value) or value > 0.0:
        raise DataFormatError(path, f"a {what} <= 0 (log10)", repr(text), line=lineno)
    return value


def _parse_header(lines: Iterator[tuple[int, str]], path: Path) -> tuple[int, ...]:
    """Read up to and including the ``\\data\\`` counts; return the declared counts."""
    for lineno, line in lines:
        if not line.strip():
            continue
        if line.strip() != "\\data\\":
            # KenLM refuses anything before \data\, so we do too.
            raise DataFormatError(
                path, "'\\data\\' as the first non-empty line", repr(line.strip()), line=lineno
            )
        break
    else:
        raise DataFormatError(path, "an ARPA file with a \\data\\ section", "an empty file")
    counts: list[int] = []
    for lineno, line in lines:
        line = line.strip()
        if not line:
            if counts:
                return tuple(counts)
            continue
        m = re.fullmatch(r"ngram\s+(\d+)\s*=\s*(\S+)", line)
        if not m:
            raise DataFormatError(path, "an 'ngram N=count' line", repr(line), line=lineno)
        n, count = int(m.group(1)), m.group(2)
        if n != len(counts) + 1:
            raise DataFormatError(path, f"'ngram {len(counts) + 1}=...'", repr(line), line=lineno)
        if not count.isdigit():
            raise DataFormatError(path, "a non-negative integer n-gram count", repr(count), line=lineno)
        counts.append(int(count))
    raise DataFormatError(path, "n-gram sections after the \\data\\ counts", "end of file")


def iter_arpa(
    path: str | Path, max_order: int | None = None
) -> Iterator[tuple[tuple[str, ...], float, float]]:
    """Yield ``(words, log10 prob, log10 backoff)`` for every n-gram, validating as it goes.

    Raises ``DataFormatError`` naming the line for a malformed entry, a section whose entry count
    differs from the header, or a missing ``\\end\\``. With ``max_order`` it stops after that
    order's section (reading only the unigrams of a large ARPA is then cheap).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "an ARPA file", "no such file")
    with open(path, encoding="utf-8") as f:
        lines = enumerate(f, start=1)
        counts = _parse_header(lines, path)
        order, seen, lineno = 0, 0, 0

        def close_section(at: int) -> None:
            if order and seen != counts[order - 1]:
                raise DataFormatError(
                    path,
                    f"{counts[order - 1]} {order}-grams (as the \\data\\ header declares)",
                    f"{seen} before line {at}",
                    line=at,
                )

        for lineno, raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line.startswith("\\"):
                close_section(lineno)
                if line == "\\end\\":
                    if order != len(counts):
                        raise DataFormatError(
                            path,
                            f"\\{len(counts)}-grams: before \\end\\",
                            f"only {order} orders",
                            line=lineno,
                        )
                    return
                m = re.fullmatch(r"\\(\d+)-grams:", line)
                if not m or int(m.group(1)) != order + 1:
                    raise DataFormatError(path, f"'\\{order + 1}-grams:'", repr(line), line=lineno)
                if max_order is not None and order >= max_order:
                    return
                order, seen = order + 1, 0
                continue
            if order == 0:
                raise DataFormatError(path, "a '\\1-grams:' section header", repr(line), line=lineno)
            fields = line.split()
            has_backoff = len(fields) == order + 2 and order < len(counts)
            if len(fields) != order + 1 and not has_backoff:
                raise DataFormatError(
                    path,
                    f"log10 prob, {order} word(s){' and an optional backoff' if order < len(counts) else ''}",
                    f"{len(fields)} fields: {line!r}",
                    line=lineno,
                )
            prob = _parse_float(fields[0], path, lineno, "log10 probability")
            backoff = 0.0
            if has_backoff:
                try:
                    backoff = float(fields[-1])
                except ValueError:
                    raise DataFormatError(
                        path, "a numeric log10 backoff", repr(fields[-1]), line=lineno
                    ) from None
            seen += 1
            if seen > counts[order - 1]:
                raise DataFormatError(
                    path,
                    f"{counts[order - 1]} {order}-grams (as the \\data\\ header declares)",
                    "more",
                    line=lineno,
                )
            yield tuple(fields[1 : order + 1]), prob, backoff
        if max_order is not None and order >= max_order:
            close_section(lineno + 1)
            return
        raise DataFormatError(path, "'\\end\\' at the end of the ARPA file", "end of file", line=lineno)


def read_arpa_counts(path: str | Path) -> ArpaInfo:
    """The declared n-gram counts of an ARPA file (header only; cheap)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        return ArpaInfo(path, _parse_header(enumerate(f, start=1), path))


def validate_arpa(path: str | Path) -> ArpaInfo:
    """Read a whole ARPA file; ``DataFormatError`` with the line number if anything is off."""
    path = Path(path)
    for _ in iter_arpa(path):
        pass
    return read_arpa_counts(path)


def read_arpa_unigrams(path: str | Path) -> dict[str, float]:
    """``word -> log10 prob`` from an ARPA file's unigram section (validated)."""
    return {words[0]: prob for words, prob, _ in iter_arpa(path, max_order=1)}
