"""Sentence splitting of raw book prose.

:func:`split_sentences` takes a paragraph, a chapter or a whole book (plain text as Project Gutenberg ships
it: paragraphs separated by blank lines, hard-wrapped lines inside them) and returns its sentences, raw and
unnormalised, in order.

Why our own splitter and not pysbd or syntok: the LM-text build splits ~10M words, and the target is over
1M words a minute on one core. Measured on 20k words of Austen (``benchmarks/text_throughput.py``,
CPU time, one core): pysbd 0.3.4 ~28k words/s, syntok 1.4.4 ~135k words/s, this module ~1.8M words/s.
Quality is no reason to pay that either: pysbd keeps whole multi-sentence quotations as one "sentence"
(fine for its purpose, poor for one-sentence-a-line LM text) and, like syntok, merges heading lines into
the following prose. A compiled regex that finds candidate boundaries plus a few context rules handles the
patterns that matter in 19th-century prose.

Rules:
- Blank lines are hard boundaries; newlines inside a paragraph are spaces.
- A line at the start of a paragraph that is a heading (``CHAPTER XIV.``, ``Chapter 3: The Storm``,
  ``BOOK I``, or a short line without lower-case letters such as ``XIV.`` or ``THE STORM``) is its own
  sentence.
- A boundary is ``.``, ``!``, ``?`` or an ellipsis, with any closing quotes or brackets kept on the sentence,
  followed by whitespace and a character that may start a sentence (not a lower-case letter, so
  ``"Go!" he said.`` stays one sentence, LibriSpeech-style).
- No boundary after a title or other known abbreviation (``Mr.``, ``St.``, ``Capt.``, ``e.g.``, ``No. 5``),
  after a single-letter initial (``J. R. R. Tolkien``; the pronoun ``I.`` does end a sentence) or after a
  dotted abbreviation (``U.S.``, ``A.D.``).
- Fragments without a letter or digit (``* * *`` separators) are dropped.
"""

from __future__ import annotations

import re

__all__ = ["split_sentences"]

# Abbreviations after which a period never ends a sentence (compared lower-cased, without the period).
_NO_SPLIT_ABBREVS = frozenset(
    {
        "mr",
        "mrs",
        "messrs",
        "dr",
        "st",
        "capt",
        "col",
        "gen",
        "lieut",
        "lt",
        "maj",
        "sgt",
        "sergt",
        "prof",
        "rev",
        "hon",
        "gov",
        "adm",
        "mme",
        "mlle",
        "mt",
        "ft",
        "vs",
        "cf",
        "viz",
        "vol",
        "vols",
        "ch",
        "chap",
        "pp",
        "fig",
        "jan",
        "feb",
        "mar",
        "apr",
        "aug",
        "sept",
        "oct",
        "nov",
        "dec",
        "esq",
        "jr",
        "sr",
        "bros",
        "co",
        "corp",
        "inc",
        "ltd",
        "dept",
        "univ",
        "approx",
        "ca",
        "vide",
        "ibid",
        "op",
        "cit",
    }
)
# Abbreviations that do not end a sentence only before a number ("No. 5", "p. 12").
_NUMBER_ABBREVS = frozenset({"no", "nos", "p", "art", "sec", "fig"})

_PARAGRAPH_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SPACE_RE = re.compile(r"\s+")
# terminator, closing quotes/brackets, then whitespace; group 2 is the next non-space character.
_CANDIDATE_RE = re.compile(r"(\.{2,}|\u2026|[.!?]+)[\"'\u201d\u2019)\]]*(?=\s+(\S))")
_DOTTED_ABBREV_RE = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")
_OPENERS = "\"'\u201c\u2018([_*"
_NUMBER_WORDS = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|first|second|third|last|the\s+first|the\s+last"
)
_HEADING_RE = re.compile(
    r"^(?:chapter|chap\.|book|part|volume|vol\.|canto|stave|act|scene|letter|section|appendix|preface|"
    r"introduction|prologue|epilogue|contents)\b(\s+(?:[ivxlcdm]+|\d+|" + _NUMBER_WORDS + r")\b)?[^a-z]{0,3}",
    re.IGNORECASE,
)
_HAS_LOWER_RE = re.compile(r"[a-z]")
_HAS_ALNUM_RE = re.compile(r"[^\W_]")
_MAX_HEADING_CHARS = 80


def _is_heading(line: str, next_line: str | None) -> bool:
    if len(line) > _MAX_HEADING_CHARS or not _HAS_ALNUM_RE.search(line):
        return False
    m = _HEADING_RE.match(line)
    if m is not None:
        rest = line[m.end() :]
        # "CHAPTER XIV.", "Chapter 3. The Storm", "Preface"; not "Part of the day", "Book I read"
        if not rest or (m.group(1) is not None and not rest[0].islower()):
            return True
    if _HAS_LOWER_RE.search(line):
        return False
    # a short line with no lower case ("THE STORM", "XIV."); not the first line of an all-caps sentence that
    # wraps onto a lower-case continuation
    return len(line.split()) <= 12 and (next_line is None or not next_line[:1].islower())


def _prev_word(text: str, end: int) -> str:
    start = text.rfind(" ", 0, end) + 1
    return text[start:end].lstrip(_OPENERS)


def _is_boundary(text: str, m: re.Match[str]) -> bool:
    nxt = m.group(2)
    if nxt.islower() or nxt in ",;:)]-":
        return False
    term = m.group(1)
    if term != ".":
        return True  # ! ? and ellipses before a capital, a digit or an opening quote
    word = _prev_word(text, m.start(1))
    low = word.lower()
    if low in _NO_SPLIT_ABBREVS:
        return False
    if low in _NUMBER_ABBREVS and nxt.isdigit():
        return False
    if len(word) == 1:
        return word == "I" or not word.isalpha()  # "J." is an initial; "I." ends a sentence
    return not _DOTTED_ABBREV_RE.match(word)


def _split_prose(text: str, out: list[str]) -> None:
    start = 0
    for m in _CANDIDATE_RE.finditer(text):
        if _is_boundary(text, m):
            sentence = text[start : m.end()].strip()
            if sentence and _HAS_ALNUM_RE.search(sentence):
                out.append(sentence)
            start = m.end()
    sentence = text[start:].strip()
    if sentence and _HAS_ALNUM_RE.search(sentence):
        out.append(sentence)


def split_sentences(text: str) -> list[str]:
    """Split raw prose (a paragraph, chapter or book) into stripped, non-empty sentences, in order."""
    out: list[str] = []
    for para in _PARAGRAPH_RE.split(text):
        lines = [line.strip() for line in para.split("\n")]
        lines = [line for line in lines if line]
        i = 0
        while i < len(lines) and _is_heading(lines[i], lines[i + 1] if i + 1 < len(lines) else None):
            out.append(lines[i])
            i += 1
        if i < len(lines):
            _split_prose(_SPACE_RE.sub(" ", " ".join(lines[i:])), out)
    return out
