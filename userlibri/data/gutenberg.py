"""Project Gutenberg texts: strip the licence boilerplate and front matter, split into chapters.

``strip_gutenberg`` keeps only the body of an eBook: the text between the ``*** START OF ...`` and
``*** END OF ...`` markers (and their older variants), without title pages, "Produced by" credits
or a table of contents before the first chapter. ``split_chapters`` finds chapter headings
(``CHAPTER I``, ``Chapter 1``, ``CHAPTER XIV.``, ``CHAPTER 1. Loomings.``, ``BOOK ONE``, bare
Roman numerals ...) and returns ``Chapter`` objects whose paragraphs are cleaned with
``clean_paragraph``. Both work on any plain text, e.g. LibriSpeech's original Gutenberg books.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

from userlibri.data.books import Chapter

log = logging.getLogger(__name__)

# Lines that end the Gutenberg header (the text starts on the next line).
_START_MARKERS = re.compile(
    r"^\s*(?:"
    r"\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG"
    r"|\*{3}\s*START OF THE COPYRIGHTED PROJECT GUTENBERG"
    r"|\*END\*?\s*THE SMALL PRINT"
    r"|\*{3}\s*START\*{0,2}THE SMALL PRINT"
    r")",
    re.IGNORECASE,
)
# Lines that start the Gutenberg footer (the text ends before them).
_END_MARKERS = re.compile(
    r"^\s*(?:"
    r"\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG"
    r"|\*{3}\s*END OF THE COPYRIGHTED PROJECT GUTENBERG"
    r"|END OF (?:THE |THIS )?PROJECT GUTENBERG"
    r"|END OF PROJECT GUTENBERG'?S"
    r"|END OF THE PROJECT GUTENBERG"
    r"|\*{0,3}\s*END OF THE PROJECT GUTENBERG"
    r"|THE END OF THE PROJECT GUTENBERG"
    r")",
    re.IGNORECASE,
)
# Paragraphs of credits and transcriber notes found around the body.
_CREDIT = re.compile(
    r"^\s*(?:\[?\s*)?(?:produced by|prepared by|this e-?text was|this e-?book was|e-?text prepared|"
    r"transcribed (?:from|by)|scanned (?:by|and)|html version|proofread|"
    r"updated editions will replace|the project gutenberg e-?book)",
    re.IGNORECASE,
)

_ROMAN = r"(?=[MDCLXVI])M{0,4}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_NUMWORD = (
    r"(?:ONE|TWO|THREE|FOUR|FIVE|SIX|SEVEN|EIGHT|NINE|TEN|ELEVEN|TWELVE|THIRTEEN|FOURTEEN|FIFTEEN|"
    r"SIXTEEN|SEVENTEEN|EIGHTEEN|NINETEEN|TWENTY|THIRTY|FORTY|FIFTY|SIXTY|SEVENTY|EIGHTY|NINETY|"
    r"HUNDRED|FIRST|SECOND|THIRD|FOURTH|FIFTH|SIXTH|SEVENTH|EIGHTH|NINTH|TENTH|ELEVENTH|TWELFTH|"
    r"LAST|FINAL)"
)
_NUMBER = rf"(?:{_ROMAN}|\d{{1,4}}|(?:THE\s+)?{_NUMWORD}(?:[-\s]{_NUMWORD})?)"
_CHAPTER_KW = r"(?:CHAPTER|CHAP\.|CHAPT\.|STAVE|LETTER)"
_PART_KW = r"(?:VOLUME|VOL\.|BOOK|PART)"
# "<keyword> <number>" then optionally a separator and a title: "CHAPTER 1. Loomings."
_KEYWORD_HEADING = re.compile(
    rf"^(?P<kw>{_CHAPTER_KW}|{_PART_KW})\s+(?P<num>{_NUMBER})(?![\w'])(?P<rest>.*)$", re.IGNORECASE
)
_BARE_NUMBER = re.compile(rf"^(?:{_ROMAN}|\d{{1,3}})\.?$")
_NAMED_HEADING = re.compile(
    r"^(?:PREFACE|INTRODUCTION|PROLOGUE|EPILOGUE|CONCLUSION|FOREWORD|AFTERWORD|ETYMOLOGY|EXTRACTS)"
    r"(?:\s*[.:]\s*.*)?$",
    re.IGNORECASE,
)
# Headings whose section is never text: a contents list, a list of illustrations.
_SKIP_HEADING = re.compile(
    r"^(?:(?:TABLE OF )?CONTENTS|LIST OF ILLUSTRATIONS|ILLUSTRATIONS)\.?:?$", re.IGNORECASE
)
# Headings that start editorial back matter: everything from them on is dropped.
_BACK_MATTER = re.compile(
    r"^(?:A NOTE ON THE TEXT|TRANSCRIBER'?S NOTES?|FOOTNOTES|ENDNOTES|NOTES ON THE TEXT)\.?:?$",
    re.IGNORECASE,
)
# End-of-book or end-of-volume lines, dropped wherever they stand alone.
_END_LINE = re.compile(
    r"^(?:THE END|FINIS|END OF (?:THE )?(?:VOLUME|VOL\.|BOOK|PART)\b.*|THE END OF (?:THE )?"
    r"(?:VOLUME|BOOK|PART|FIRST|SECOND|THIRD)\b.*)$",
    re.IGNORECASE,
)
_SMALL_WORDS = frozenset("a an and as at but by for from in into nor of on or the to with".split())
_ILLUSTRATION = re.compile(r"\[(?:Illustration|Footnote|Sidenote)[^\]]*\]", re.IGNORECASE | re.DOTALL)
_EMPHASIS = re.compile(r"(?<![\w_])_([^_\n]+?)_(?![\w_])")
_RULE = re.compile(r"_{2,}")  # blanks and table rules: "the sum of ____ for each"
_MIN_CHAPTER_WORDS = 10


def normalize_text(text: str) -> str:
    """NFC, ``\\n`` line ends, no BOM, tabs and odd spaces as spaces, trailing spaces removed."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.lstrip("\ufeff").replace("\t", " ")
    text = re.sub(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000]", " ", text)
    text = re.sub(r"[\u200b\u200c\u200d\u2060\ufeff\u00ad]", "", text)
    return "\n".join(line.rstrip() for line in text.split("\n"))


def clean_paragraph(text: str) -> str:
    """One paragraph as a single line: emphasis underscores, ``____`` rules and illustration tags removed,
    whitespace collapsed, NFC. Returns "" when no letter or digit remains (e.g. ``* * *``)."""
    text = _ILLUSTRATION.sub(" ", unicodedata.normalize("NFC", text))
    text = _EMPHASIS.sub(r"\1", text)
    text = _RULE.sub(" ", text)
    text = " ".join(text.split())
    return text if any(ch.isalnum() for ch in text) else ""


def is_skipped_heading(line: str) -> bool:
    """True for headings of sections that are not text: ``CONTENTS``, ``LIST OF ILLUSTRATIONS``."""
    return bool(_SKIP_HEADING.match(line.strip()))


def paragraphs(text: str) -> list[list[str]]:
    """Blocks of non-blank lines (each a list of stripped lines), split at blank lines."""
    out: list[list[str]] = []
    cur: list[str] = []
    for line in _ILLUSTRATION.sub("", normalize_text(text)).split("\n"):
        if line.strip():
            cur.append(line.strip())
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def strip_gutenberg(text: str) -> str:
    """The body of a Gutenberg eBook: licence header/footer, credits and front matter removed.

    Front matter (title page, credits, contents, preface) before the first chapter is dropped
    when the text has chapter headings; otherwise only credit paragraphs and a contents list are.
    Paragraph structure (blank lines) is kept; line ends are normalised to ``\\n``.
    """
    lines = normalize_text(text).split("\n")
    first_end = next((i for i, line in enumerate(lines) if _END_MARKERS.match(line)), len(lines))
    # Old headers hold several markers ("***START**THE SMALL PRINT" ... "*END*THE SMALL PRINT"):
    # the body starts after the last one before the footer.
    starts = [i for i, line in enumerate(lines[:first_end]) if _START_MARKERS.match(line)]
    start = starts[-1] + 1 if starts else 0
    end = first_end
    if start == 0 and end == len(lines):
        log.debug("no Project Gutenberg markers found; keeping the whole text")
    blocks = [b for b in paragraphs("\n".join(lines[start:end])) if not _CREDIT.match(b[0])]
    first = _first_chapter_block(blocks)
    if first is not None:
        blocks = blocks[first:]
    else:
        blocks = _drop_contents(blocks)
    return "\n\n".join("\n".join(b) for b in blocks) + ("\n" if blocks else "")


@dataclass(frozen=True)
class _Heading:
    kind: str  # "chapter", "part", "named", "skip", "back"
    title: str
    subtitle_lines: int = 0  # lines of the block after the heading line used as its subtitle


def _looks_like_title(line: str) -> bool:
    """A short line in capitals or title case, not a sentence of dialogue or narration."""
    words = line.split()
    if not words or len(words) > 10 or len(line) > 80:
        return False
    if line[0] in "\"'\u201c\u2018([" or line[-1] in ",;:!?\"'\u201d\u2019":
        return False
    letters = [w for w in words if any(c.isalpha() for c in w)]
    if not letters:
        return False
    if line.upper() == line:
        return True
    caps = [w for w in letters if w.lower() not in _SMALL_WORDS or w is letters[0]]
    return sum(1 for w in caps if w.lstrip("\"'(").strip()[:1].isupper()) >= 0.8 * len(caps)


def _classify_line(line: str) -> _Heading | None:
    """Heading kind and title of one line, or None for ordinary text."""
    s = line.strip()
    if not s or len(s) > 100:
        return None
    if _SKIP_HEADING.match(s):
        return _Heading("skip", s)
    if _BACK_MATTER.match(s):
        return _Heading("back", s)
    m = _KEYWORD_HEADING.match(s)
    if m:
        rest = m.group("rest").strip()
        if rest and not (rest[0] in ".:-\u2014\u2013" or _looks_like_title(rest)):
            return None
        if len(rest.split()) > 14:
            return None
        kind = "part" if re.match(_PART_KW, m.group("kw"), re.IGNORECASE) else "chapter"
        return _Heading(kind, s)
    if _BARE_NUMBER.match(s):
        return _Heading("chapter", s)
    if _NAMED_HEADING.match(s) and (s.split(".")[0].isupper() or s.split(".")[0].istitle()):
        return _Heading("named", s)
    return None


def _classify_block(block: list[str]) -> _Heading | None:
    """A block is a heading when its first line is one and the rest (at most one line) is a title."""
    h = _classify_line(block[0])
    if h is None or len(block) > 2:
        return None
    if len(block) == 2:
        if h.kind in ("skip", "back") or not _looks_like_title(block[1]):
            return None
        sep = " " if h.title.endswith((".", ":")) else ". "
        return _Heading(h.kind, f"{h.title}{sep}{block[1]}", subtitle_lines=1)
    return h


def _block_words(block: list[str]) -> int:
    return sum(len(line.split()) for line in block)


def _first_chapter_block(blocks: list[list[str]]) -> int | None:
    """Index of the block where the body starts: the first chapter heading with real text after
    it (so contents entries are skipped), moved back over part headings right before it."""
    heads = [_classify_block(b) for b in blocks]
    for i, h in enumerate(heads):
        if h is None or h.kind != "chapter":
            continue
        words = 0
        for j in range(i + 1, len(blocks)):
            if heads[j] is not None:
                break
            if not _is_contents_block(blocks[j]):
                words += _block_words(blocks[j])
        if words >= _MIN_CHAPTER_WORDS:
            start = i
            while start > 0 and heads[start - 1] is not None and heads[start - 1].kind == "part":
                start -= 1
            return start
    return None


def _is_contents_block(block: list[str]) -> bool:
    """Several lines that are each a heading, e.g. a contents list printed as one block."""
    return len(block) >= 3 and sum(_classify_line(line) is not None for line in block) >= 0.6 * len(block)


def _drop_contents(blocks: list[list[str]]) -> list[list[str]]:
    """Remove a ``CONTENTS`` heading and the short list lines that follow it."""
    out: list[list[str]] = []
    skipping = False
    for b in blocks:
        h = _classify_block(b)
        if h is not None and h.kind == "skip":
            skipping = True
            continue
        if skipping and all(len(line.split()) <= 12 for line in b):
            continue
        skipping = False
        out.append(b)
    return out


def split_chapters(text: str, default_title: str = "Text") -> list[Chapter]:
    """Split a book body into chapters at its headings.

    Text before the first heading (front matter) is dropped. Part headings (VOLUME/BOOK/PART)
    prefix the titles of the chapters inside them ("VOLUME I, CHAPTER I"); a part with text of
    its own before its first chapter becomes a chapter itself. Contents lists, end lines
    ("THE END", "FINIS") and editorial back matter ("A NOTE ON THE TEXT") are dropped; sections
    without text are skipped. A text with no heading at all is one chapter named ``default_title``.
    """
    blocks, heads = _merge_subtitles(paragraphs(text))
    if not any(h is not None and h.kind in ("chapter", "part", "named") for h in heads):
        paras = _clean_blocks(blocks)
        return [Chapter(default_title, tuple(paras))] if paras else []
    chapters: list[Chapter] = []
    part = ""
    title: str | None = None
    body: list[list[str]] = []
    skipping = False

    def flush() -> None:
        if title is not None and not skipping:
            paras = _clean_blocks(body)
            if paras:
                chapters.append(Chapter(title, tuple(paras)))
        body.clear()

    for block, h in zip(blocks, heads, strict=True):
        if h is None:
            if title is None and not skipping:
                log.debug("dropping front matter paragraph %r", block[0][:60])
            body.append(block)
            continue
        flush()
        heading = clean_paragraph(h.title)
        if h.kind == "back" and chapters:
            title = None
            body.clear()
            break
        skipping = h.kind in ("skip", "back")
        if h.kind == "part":
            part = heading
            title = heading
        elif h.kind == "chapter":
            title = f"{part}, {heading}" if part else heading
        else:
            title = heading
    flush()
    return chapters


def _merge_subtitles(
    blocks: list[list[str]],
) -> tuple[list[list[str]], list[_Heading | None]]:
    """Join a chapter heading with a title printed as its own paragraph ("CHAPTER I" / "THE RETURN")."""
    heads = [_classify_block(b) for b in blocks]
    out_b: list[list[str]] = []
    out_h: list[_Heading | None] = []
    i = 0
    while i < len(blocks):
        h = heads[i]
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        if (
            h is not None
            and h.kind in ("chapter", "part")
            and h.subtitle_lines == 0
            and nxt is not None
            and len(nxt) == 1
            and heads[i + 1] is None
            and _looks_like_title(nxt[0])
            and (nxt[0].isupper() or not nxt[0].endswith("."))
        ):
            sep = " " if h.title.endswith((".", ":")) else ". "
            out_b.append(blocks[i] + nxt)
            out_h.append(_Heading(h.kind, f"{h.title}{sep}{nxt[0]}", subtitle_lines=1))
            i += 2
            continue
        out_b.append(blocks[i])
        out_h.append(h)
        i += 1
    return out_b, out_h


def _clean_blocks(blocks: list[list[str]]) -> list[str]:
    out = []
    for b in blocks:
        if _is_contents_block(b) or (len(b) == 1 and _END_LINE.match(b[0].strip(" .*"))):
            continue
        p = clean_paragraph(" ".join(b))
        if p:
            out.append(p)
    return out
