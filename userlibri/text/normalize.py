"""LibriSpeech-style transcript normalisation.

LibriSpeech transcripts (and its LM corpus) are upper case and contain only the letters A-Z, the apostrophe
and single spaces; numbers appear as spoken words. :func:`normalize_transcript` maps raw book prose to that
form. It works in two stages:

1. *Raw stage* (case and punctuation still present): unicode punctuation is mapped to ASCII, accented and
   other non-ASCII letters are folded with ``unidecode``, abbreviations that need their period or their
   letter case (``Capt.``, ``No. 5``, ``&c.``, ``Baker St.``) are expanded, and everything with a digit is
   spelled out (currency, times, fractions, decades, ordinals, percentages, decimals, years, cardinals).
2. *Token stage* (upper case, letters and apostrophes only): context rules that must also hold for already
   normalised text (``MR`` -> ``MISTER``, ``CHAPTER XIV`` -> ``CHAPTER FOURTEEN``, ``GEORGE III`` ->
   ``GEORGE THE THIRD``, apostrophes at word edges).

Doing every rule that can fire on upper-case words in the token stage makes the function idempotent:
``normalize_transcript(normalize_transcript(x)) == normalize_transcript(x)`` (tested with hypothesis).

Choices (LibriSpeech is read speech, so these follow what readers say and what its transcripts show):
- Cardinals use the British "AND": 1,234 -> ONE THOUSAND TWO HUNDRED AND THIRTY FOUR (num2words' English
  output, upper-cased, hyphens and commas removed; it matches, so we use the library rather than our own).
- Years (four digits, 1010-2099, no comma): 1811 -> EIGHTEEN ELEVEN, 1805 -> EIGHTEEN O FIVE,
  1900 -> NINETEEN HUNDRED, 2005 -> TWO THOUSAND AND FIVE, 2010 -> TWENTY TEN. Followed by a unit word
  (``1500 men``) such a number is read as a cardinal.
- Leading apostrophes are quote marks and are removed, except for the archaic contractions in
  :data:`LEADING_APOSTROPHE_WORDS` ('TIS, 'TWAS, 'EM ...). A trailing apostrophe is kept only as a plural
  possessive (JAMES', HORSES') and only when it does not close a quote opened earlier in the same text.
- Roman numerals are converted only in clear contexts: after a heading word (CHAPTER XIV -> CHAPTER FOURTEEN,
  CHAPTER I -> CHAPTER ONE), after a regnal name (GEORGE III -> GEORGE THE THIRD; never a bare I), with an
  ordinal suffix (XIVth -> FOURTEENTH), or as the whole text (a heading line ``XIV.``; not ``I``).
- ``St.`` is SAINT, except ``<Name> St.`` not followed by a capitalised word (``Baker St.``), which is STREET.
"""

from __future__ import annotations

import re
from functools import lru_cache

from num2words import num2words
from unidecode import unidecode

__all__ = [
    "LEADING_APOSTROPHE_WORDS",
    "cardinal_words",
    "normalize_transcript",
    "normalize_words",
    "ordinal_words",
    "roman_to_int",
    "year_words",
]

#: Words that keep a leading apostrophe (archaic contractions); any other leading apostrophe is a quote mark.
LEADING_APOSTROPHE_WORDS = frozenset({"TIS", "TWAS", "TWERE", "TWILL", "TWOULD", "EM"})

# ---------------------------------------------------------------------------------------------------------
# Character mapping

_PUNCT_MAP = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "`": "'",
        "\u00b4": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2033": '"',
        "\u2014": " - ",
        "\u2013": " - ",
        "\u2012": " - ",
        "\u2015": " - ",
        "\u2212": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u2026": " ... ",
        "\u00a0": " ",
        "\u00b0": " degrees ",
        "\u00a7": " section ",
        "\u00b6": " ",
    }
)
# Non-ASCII runs folded by unidecode; currency symbols are kept for the currency rule.
_NON_ASCII = re.compile(r"[^\x00-\x7f\u00a3\u20ac\u00a5\ud800-\udfff]+")

# ---------------------------------------------------------------------------------------------------------
# Raw-stage abbreviations (need the period or the letter case)

_ABBREV_PERIOD = {
    "capt": "CAPTAIN",
    "col": "COLONEL",
    "gen": "GENERAL",
    "lieut": "LIEUTENANT",
    "lt": "LIEUTENANT",
    "esq": "ESQUIRE",
    "prof": "PROFESSOR",
    "rev": "REVEREND",
    "hon": "HONOURABLE",
    "maj": "MAJOR",
    "sgt": "SERGEANT",
    "sergt": "SERGEANT",
    "gov": "GOVERNOR",
    "jr": "JUNIOR",
    "sr": "SENIOR",
    "mt": "MOUNT",
    "mme": "MADAME",
    "mlle": "MADEMOISELLE",
    "messrs": "MESSIEURS",
    "vol": "VOLUME",
    "ch": "CHAPTER",
    "chap": "CHAPTER",
    "vs": "VERSUS",
    "adm": "ADMIRAL",
}
# Title case or upper case only ("col." in lower case may be a column); the period is required.
# Candidates are looked up in the table by the callback: an alternation of all the words is ~5x slower.
_ABBREV_PERIOD_RE = re.compile(r"([A-Z][A-Za-z]{1,5})\.")
_NUMBER_ABBREV_RE = re.compile(r"\b(No|NO|no|Nos|NOS|nos)\.?\s*(?=\d)")
_ETC_RE = re.compile(r"&\s*[cC]\b\.?")
_AMP_RE = re.compile(r"&")
_STREET_RE = re.compile(r"S[tT]\b(?!\.?\s+[A-Z])\.?")
_NAME_BEFORE_RE = re.compile(r"(?:^|[^A-Za-z'])[A-Z][a-z]+\s+$")
_PERCENT_WORD_RE = re.compile(r"%")


def _abbrev_period(m: re.Match[str]) -> str:
    word = m.group(1)
    start = m.start()
    if (start and m.string[start - 1].isalpha()) or not (word.isupper() or word[1:].islower()):
        return m.group(0)
    rep = _ABBREV_PERIOD.get(word.lower())
    return m.group(0) if rep is None else f" {rep} "


def _street(m: re.Match[str]) -> str:
    # "Baker St." (a capitalised name before, no capitalised word after) is a street; else left for SAINT
    start = m.start()
    if _NAME_BEFORE_RE.search(m.string, max(0, start - 40), start):
        return "STREET"
    return m.group(0)


# ---------------------------------------------------------------------------------------------------------
# Numbers

_DIGIT_RE = re.compile(r"\d", re.ASCII)
_UNITS = (
    r"men|women|people|persons|soldiers|troops|horses|head|pounds|dollars|francs|guineas|crowns|shillings|"
    r"miles|feet|foot|yards|inches|acres|leagues|metres|meters|tons|lbs|times|years|days|copies|pages|"
    r"volumes|words|sheep|cattle|ships|guns|paces|steps|souls|families|houses|strong"
)
_CURRENCY_RE = re.compile(
    r"([$\u00a3\u20ac\u00a5])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:\s+(thousand|million|billion)\b)?",
    re.ASCII | re.IGNORECASE,
)
_CURRENCY_NAMES = {
    "$": ("DOLLAR", "DOLLARS", "CENT", "CENTS"),
    "\u00a3": ("POUND", "POUNDS", "PENNY", "PENCE"),
    "\u20ac": ("EURO", "EUROS", "CENT", "CENTS"),
    "\u00a5": ("YEN", "YEN", "SEN", "SEN"),
}
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})\b", re.ASCII)
_FRACTION_RE = re.compile(r"\b(\d+)/(\d+)\b", re.ASCII)
# "1820s", "1820's", "'90s", "90's"; a bare "60s" is left to the shillings rule.
_DECADE_RE = re.compile(r"(?<![\d'])(?:(1\d{3}|20\d{2})'?s|'(\d0)'?s|(\d0)'s)\b", re.ASCII)
_SHILLINGS_RE = re.compile(r"\b(\d{1,3})s\.|\b(\d{1,3})s(?=\s+\d{1,2}d\b)", re.ASCII)
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th|d)\b", re.ASCII | re.IGNORECASE)
_ROMAN_ORDINAL_RE = re.compile(r"([IVXLCDM]+)(?:th|st|nd|rd)\b", re.ASCII)
_NUMBER_RE = re.compile(
    r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(\s?%)?(?=(\s+(?:" + _UNITS + r")\b)?)", re.ASCII | re.IGNORECASE
)
_DECIMAL_ONLY_RE = re.compile(r"(?<![\w.])\.(\d+)\b", re.ASCII)
# Lower-case unit abbreviations, expanded only after a number ("550,000 lbs.").
_UNIT_ABBREVS = {
    "lbs": "POUNDS",
    "lb": "POUND",
    "oz": "OUNCES",
    "cwt": "HUNDREDWEIGHT",
    "yds": "YARDS",
    "yd": "YARDS",
    "ft": "FEET",
    "in": "INCHES",
    "hrs": "HOURS",
    "mins": "MINUTES",
}
_UNIT_RE = re.compile(r"(\d)\s*(lbs|lb|oz|cwt|yds|yd|ft|hrs|mins|in(?=\.\s*[a-z,;]))\.", re.ASCII)
_DIGIT_NAMES = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
_FRACTION_NAMES = {2: ("HALF", "HALVES"), 4: ("QUARTER", "QUARTERS")}

_ROMAN_RE = re.compile(r"^M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def _clean_words(words: str) -> str:
    return words.replace("-", " ").replace(",", "").upper()


@lru_cache(maxsize=4096)
def cardinal_words(n: int) -> str:
    """Spell a non-negative integer as LibriSpeech-style words (British "AND")."""
    if n >= 10**15:  # long digit strings (codes, serials) read digit by digit
        return " ".join(_DIGIT_NAMES[int(d)] for d in str(n))
    return _clean_words(num2words(n, lang="en"))


@lru_cache(maxsize=1024)
def ordinal_words(n: int) -> str:
    """Spell a positive integer as an ordinal (22 -> TWENTY SECOND)."""
    if n >= 10**15:
        return cardinal_words(n)
    return _clean_words(num2words(n, lang="en", to="ordinal"))


@lru_cache(maxsize=1024)
def year_words(n: int) -> str:
    """Spell a year the way it is read aloud (1811 -> EIGHTEEN ELEVEN, 2005 -> TWO THOUSAND AND FIVE)."""
    hi, lo = divmod(n, 100)
    if n < 1000 or n % 1000 == 0 or 2000 <= n < 2010:
        return cardinal_words(n)
    if lo == 0:
        return cardinal_words(hi) + " HUNDRED"
    if lo < 10:
        return cardinal_words(hi) + " O " + cardinal_words(lo)
    return cardinal_words(hi) + " " + cardinal_words(lo)


def roman_to_int(s: str) -> int | None:
    """Value of a canonical upper-case roman numeral (1-3999), or None if ``s`` is not one."""
    if not s or not _ROMAN_RE.match(s):
        return None
    total = 0
    for i, ch in enumerate(s):
        v = _ROMAN_VALUES[ch]
        total += -v if i + 1 < len(s) and _ROMAN_VALUES[s[i + 1]] > v else v
    return total


def _plural(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "IES" if last.endswith("Y") else last + "S"
    return f"{head} {last}" if head else last


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def _digits(s: str) -> str:
    return " ".join(_DIGIT_NAMES[int(d)] for d in s)


def _currency(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCY_NAMES[m.group(1)]
    whole, frac, scale = _int(m.group(2)), m.group(3), m.group(4)
    if scale:
        amount = cardinal_words(whole) + (" POINT " + _digits(frac) if frac else "")
        return f" {amount} {scale.upper()} {many} "
    if frac is not None and len(frac) != 2:  # not a sub-unit amount: "$3.5"
        return f" {cardinal_words(whole)} POINT {_digits(frac)} {many} "
    parts = []
    if whole or not frac or int(frac) == 0:
        parts.append(f"{cardinal_words(whole)} {one if whole == 1 else many}")
    if frac and int(frac):
        sub = int(frac)
        parts.append(f"{cardinal_words(sub)} {sub_one if sub == 1 else sub_many}")
    return " " + " AND ".join(parts) + " "


def _time(m: re.Match[str]) -> str:
    h, mi = int(m.group(1)), int(m.group(2))
    if h > 24 or mi > 59:
        return f" {cardinal_words(h)} {cardinal_words(mi)} "
    if mi == 0:
        return f" {cardinal_words(h)} O'CLOCK "
    if mi < 10:
        return f" {cardinal_words(h)} O {cardinal_words(mi)} "
    return f" {cardinal_words(h)} {cardinal_words(mi)} "


def _fraction(m: re.Match[str]) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    if den < 2 or den > 100 or num == 0:
        return f" {cardinal_words(num)} {cardinal_words(den)} "
    one, many = _FRACTION_NAMES.get(den, (ordinal_words(den), _plural(ordinal_words(den))))
    return f" {cardinal_words(num)} {one if num == 1 else many} "


def _decade(m: re.Match[str]) -> str:
    year, short = m.group(1), m.group(2) or m.group(3)
    if year is not None:
        n = int(year)
        if n % 10 != 0:
            return f" {year_words(n)} S "
        return " " + _plural(year_words(n)) + " "
    return " " + _plural(cardinal_words(int(short))) + " "


def _shillings(m: re.Match[str]) -> str:
    n = int(m.group(1) or m.group(2))
    return f" {cardinal_words(n)} {'SHILLING' if n == 1 else 'SHILLINGS'} "


def _ordinal(m: re.Match[str]) -> str:
    n = int(m.group(1))
    if m.group(2).lower() == "d" and (n % 10 not in (2, 3) or n % 100 in (12, 13)):
        # "2d", "3d" are old ordinals; any other "6d" is pence
        return f" {cardinal_words(n)} {'PENNY' if n == 1 else 'PENCE'} "
    return f" {ordinal_words(n)} " if n > 0 else f" {cardinal_words(n)} "


def _roman_ordinal(m: re.Match[str]) -> str:
    if m.start() and m.string[m.start() - 1].isalpha():
        return m.group(0)
    n = roman_to_int(m.group(1))
    if n is None or (len(m.group(1)) == 1 and m.group(1) not in "VX"):
        return m.group(0)
    return f" {ordinal_words(n)} "


def _number(m: re.Match[str]) -> str:
    whole_s, frac, pct, unit = m.group(1), m.group(2), m.group(3), m.group(4)
    if frac is None and pct is None and unit is None and "," not in whole_s and len(whole_s) == 4:
        n = int(whole_s)
        if 1010 <= n <= 2099:
            return f" {year_words(n)} "
    if len(whole_s) > 1 and whole_s[0] == "0" and "," not in whole_s:
        words = _digits(whole_s)
    else:
        words = cardinal_words(_int(whole_s))
    if frac is not None:
        words += " POINT " + _digits(frac)
    if pct:
        words += " PER CENT"
    return f" {words} "


def _expand_numbers(text: str) -> str:
    # the cheap substring guards skip most regex scans (this runs only on text with digits)
    if "$" in text or "\u00a3" in text or "\u20ac" in text or "\u00a5" in text:
        text = _CURRENCY_RE.sub(_currency, text)
    if ":" in text:
        text = _TIME_RE.sub(_time, text)
    if "/" in text:
        text = _FRACTION_RE.sub(_fraction, text)
    if "s" in text:
        text = _DECADE_RE.sub(_decade, text)
        text = _SHILLINGS_RE.sub(_shillings, text)
    text = _ORDINAL_RE.sub(_ordinal, text)
    if "." in text:
        text = _UNIT_RE.sub(lambda m: f"{m.group(1)} {_UNIT_ABBREVS[m.group(2)]} ", text)
        text = _DECIMAL_ONLY_RE.sub(lambda m: " POINT " + _digits(m.group(1)) + " ", text)
    return _NUMBER_RE.sub(_number, text)


# ---------------------------------------------------------------------------------------------------------
# Token stage

_TOKEN_ABBREV = {
    "MR": "MISTER",
    "MRS": "MISSUS",
    "DR": "DOCTOR",
    "ST": "SAINT",
    "ETC": "ET CETERA",
    "MESSRS": "MESSIEURS",
}
# A roman numeral after a strong heading word is a number anywhere in the text ("as in Chapter XIV we saw");
# after a weak one ("the letter V", "the book I read", "the part I played") only when the heading word opens
# the text or follows another numeral ("ACT I SCENE II"). A bare "I" is a number only after the words in
# _I_HEADING_WORDS or after a heading word that opens the text ("BOOK I").
_STRONG_HEADING_WORDS = frozenset(
    {
        "CHAPTER",
        "CHAP",
        "VOLUME",
        "VOL",
        "SECTION",
        "CANTO",
        "STAVE",
        "PSALM",
        "ARTICLE",
        "APPENDIX",
        "LECTURE",
        "SERMON",
        "EPISODE",
    }
)
_WEAK_HEADING_WORDS = frozenset({"BOOK", "PART", "ACT", "SCENE", "LETTER"})
_HEADING_WORDS = _STRONG_HEADING_WORDS | _WEAK_HEADING_WORDS
_I_HEADING_WORDS = frozenset({"CHAPTER", "CHAP", "CANTO", "STAVE", "PSALM"})
_REGNAL_NAMES = frozenset(
    {
        "GEORGE",
        "HENRY",
        "EDWARD",
        "WILLIAM",
        "JAMES",
        "CHARLES",
        "RICHARD",
        "LOUIS",
        "ELIZABETH",
        "MARY",
        "JOHN",
        "PHILIP",
        "PHILIPPE",
        "FREDERICK",
        "FREDERIC",
        "PETER",
        "CATHERINE",
        "ALEXANDER",
        "NICHOLAS",
        "PIUS",
        "LEO",
        "GREGORY",
        "BENEDICT",
        "CLEMENT",
        "INNOCENT",
        "URBAN",
        "BONIFACE",
        "PAUL",
        "ALFONSO",
        "FERDINAND",
        "FRANCIS",
        "NAPOLEON",
        "VICTOR",
        "EMMANUEL",
        "HAKON",
        "OLAF",
        "GUSTAVUS",
        "CHARLEMAGNE",
        "ROBERT",
        "DAVID",
        "STEPHEN",
        "MATILDA",
        "ANNE",
        "VICTORIA",
        "IVAN",
        "OTTO",
        "HADRIAN",
        "SIXTUS",
        "ALEXIS",
        "WILHELM",
        "RAMESES",
        "RAMSES",
        "PTOLEMY",
        "ANTIOCHUS",
        "AMENHOTEP",
        "THUTMOSE",
        "CHARLEY",
    }
)
_NOT_LETTERS_RE = re.compile(r"[^A-Z']+")
_TRIGGER_WORDS = frozenset(_TOKEN_ABBREV) | _HEADING_WORDS | _REGNAL_NAMES
_MULTI_APOS_RE = re.compile(r"''+")


def _clean_token(tok: str, quote_open: bool) -> tuple[str, bool]:
    """Apply the apostrophe rules to one upper-case token; returns (token or "", quote_open)."""
    tok = _MULTI_APOS_RE.sub("'", tok)
    body = tok.strip("'")
    if not body:  # a detached quote mark ("'Yes,' said" -> "'YES '"): it opens or closes a quote
        return "", not quote_open
    if tok[0] == "'":
        if body in LEADING_APOSTROPHE_WORDS:
            body = "'" + body
        else:
            quote_open = True
    if tok[-1] == "'":
        if quote_open:
            quote_open = False
        elif body[-1] == "S":
            body += "'"
    return body, quote_open


def _roman_in_context(tokens: list[str], i: int) -> str | None:
    """Spoken form of ``tokens[i]`` if it is a roman numeral in a clear context, else None."""
    tok = tokens[i]
    value = roman_to_int(tok)
    if value is None:
        return None
    if i == 0:
        if len(tokens) == 1 and (len(tok) > 1 or tok in "VX"):
            return cardinal_words(value)  # a heading line that is just a numeral ("XIV.")
        return None
    prev = tokens[i - 1]
    if prev in _HEADING_WORDS:
        opens = i == 1 or roman_to_int(tokens[i - 2]) is not None
        if tok == "I":
            return cardinal_words(value) if prev in _I_HEADING_WORDS or opens else None
        return cardinal_words(value) if prev in _STRONG_HEADING_WORDS or opens else None
    if prev in _REGNAL_NAMES and tok != "I":
        return "THE " + ordinal_words(value)
    return None


def _token_stage(text: str) -> str:
    """Token rules on ``[A-Z' ]`` text whose words are separated by single spaces."""
    if "'" in text and (text[0] == "'" or text[-1] == "'" or " '" in text or "' " in text or "''" in text):
        cleaned: list[str] = []
        quote_open = False
        for tok in text.split(" "):
            if "'" in tok:
                tok, quote_open = _clean_token(tok, quote_open)
                if not tok:
                    continue
            cleaned.append(tok)
        text = " ".join(cleaned)
    if not text:
        return text
    tokens = text.split(" ")
    # fast path: most sentences have no abbreviation or roman numeral in context
    if _TRIGGER_WORDS.isdisjoint(tokens) and (len(tokens) > 1 or text[0] not in "VXLCDM"):
        return text
    out: list[str] = []
    for i, tok in enumerate(tokens):
        rep = _TOKEN_ABBREV.get(tok)
        if rep is None and (i == 0 or tokens[i - 1] in _TRIGGER_WORDS) and tok[0] in "IVXLCDM":
            rep = _roman_in_context(tokens, i)
        out.append(tok if rep is None else rep)
    return " ".join(out)


# ---------------------------------------------------------------------------------------------------------
# Public API


def normalize_transcript(text: str) -> str:
    """Normalise one sentence or transcript to LibriSpeech style (``[A-Z' ]``, single spaces).

    Returns "" when nothing speakable remains. See the module docstring for the rules.
    """
    if not text:
        return ""
    if not text.isascii():
        text = text.translate(_PUNCT_MAP)
        if not text.isascii():
            text = _NON_ASCII.sub(lambda m: unidecode(m.group(0)), text)
    if "." in text:
        text = _ABBREV_PERIOD_RE.sub(_abbrev_period, text)
    if "St" in text or "ST" in text:
        text = _STREET_RE.sub(_street, text)
    if "&" in text:
        text = _ETC_RE.sub(" ET CETERA ", text)
        text = _AMP_RE.sub(" AND ", text)
    if _DIGIT_RE.search(text):
        text = _NUMBER_ABBREV_RE.sub(lambda m: " NUMBERS " if m.group(1)[-1] in "sS" else " NUMBER ", text)
        text = _expand_numbers(text)
    if "th" in text or "st" in text or "nd" in text or "rd" in text:
        text = _ROMAN_ORDINAL_RE.sub(_roman_ordinal, text)
    if "%" in text:
        text = _PERCENT_WORD_RE.sub(" PER CENT ", text)
    text = _NOT_LETTERS_RE.sub(" ", text.upper()).strip()
    return _token_stage(text) if text else ""


def normalize_words(text: str) -> list[str]:
    """:func:`normalize_transcript` split into words."""
    return normalize_transcript(text).split()
