"""Tests for userlibri.text.normalize (LibriSpeech-style transcript normalisation)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from userlibri.text.normalize import (
    cardinal_words,
    normalize_transcript,
    normalize_words,
    ordinal_words,
    roman_to_int,
    year_words,
)

LIBRISPEECH_RE = re.compile(r"^(?:[A-Z']+(?: [A-Z']+)*)?$")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # plain text, case, punctuation, whitespace
        ("Hello, world!", "HELLO WORLD"),
        ("  several   spaces\tand\nnewlines  ", "SEVERAL SPACES AND NEWLINES"),
        ("What? No; yes: (maybe) [so] {it} <is>.", "WHAT NO YES MAYBE SO IT IS"),
        ("U.S.A.", "U S A"),
        ("", ""),
        ("   ", ""),
        ("!!! ... --- ***", ""),
        ("''", ""),
        # apostrophes
        ("Don't you know O'Brien's house?", "DON'T YOU KNOW O'BRIEN'S HOUSE"),
        ("It's five o'clock.", "IT'S FIVE O'CLOCK"),
        ("James' hat and the horses' tails", "JAMES' HAT AND THE HORSES' TAILS"),
        ("'Go home,' she said.", "GO HOME SHE SAID"),
        ("'Yes,' said James'", "YES SAID JAMES'"),
        ("He said 'yes' quietly", "HE SAID YES QUIETLY"),
        ("'Tis true, 'twas brillig; give 'em", "'TIS TRUE 'TWAS BRILLIG GIVE 'EM"),
        ("rock 'n' roll", "ROCK N ROLL"),
        ("don''t", "DON'T"),
        # unicode quotes, dashes, ellipses
        ("\u2018Tis well\u2014\u2019twas \u201cnice\u201d\u2026 ok", "'TIS WELL 'TWAS NICE OK"),
        ("Don\u2019t \u2018go\u2019, he said \u2013 twice", "DON'T GO HE SAID TWICE"),
        ("the horses\u2019 tails", "THE HORSES' TAILS"),
        ("wait\u2026what", "WAIT WHAT"),
        ("\u00abbonjour\u00bb", "BONJOUR"),
        # hyphens
        ("a well-known, twenty-one-year-old man", "A WELL KNOWN TWENTY ONE YEAR OLD MAN"),
        ("so--then", "SO THEN"),
        # accents and other scripts
        ("Caf\u00e9 na\u00efve fa\u00e7ade \u00c6sop r\u00f4le", "CAFE NAIVE FACADE AESOP ROLE"),
        ("Stra\u00dfe \u0153uvre", "STRASSE OEUVRE"),
        # cardinals (British "AND")
        ("1,234 men", "ONE THOUSAND TWO HUNDRED AND THIRTY FOUR MEN"),
        ("He had 21 sheep and 100 cows", "HE HAD TWENTY ONE SHEEP AND ONE HUNDRED COWS"),
        ("101", "ONE HUNDRED AND ONE"),
        ("0", "ZERO"),
        ("1,000,000", "ONE MILLION"),
        ("1005 nights", "ONE THOUSAND AND FIVE NIGHTS"),
        ("007", "ZERO ZERO SEVEN"),
        ("A1 and B12", "A ONE AND B TWELVE"),
        ("the 1500 men", "THE ONE THOUSAND FIVE HUNDRED MEN"),
        # years
        ("in 1811", "IN EIGHTEEN ELEVEN"),
        ("1900", "NINETEEN HUNDRED"),
        ("2005", "TWO THOUSAND AND FIVE"),
        ("2000", "TWO THOUSAND"),
        ("2015", "TWENTY FIFTEEN"),
        ("1805", "EIGHTEEN O FIVE"),
        ("In 1066, and 1500.", "IN TEN SIXTY SIX AND FIFTEEN HUNDRED"),
        ("1811-1812", "EIGHTEEN ELEVEN EIGHTEEN TWELVE"),
        ("the 1820s", "THE EIGHTEEN TWENTIES"),
        ("the 1900s", "THE NINETEEN HUNDREDS"),
        ("the '90s and 60's", "THE NINETIES AND SIXTIES"),
        # ordinals
        ("1st", "FIRST"),
        ("22nd", "TWENTY SECOND"),
        ("the 3rd and 4th", "THE THIRD AND FOURTH"),
        ("the 101st", "THE ONE HUNDRED AND FIRST"),
        ("the 2d and 3d Regiments", "THE SECOND AND THIRD REGIMENTS"),
        ("21ST", "TWENTY FIRST"),
        ("Louis XIVth", "LOUIS FOURTEENTH"),
        ("the Xth legion", "THE TENTH LEGION"),
        # decimals, percentages, fractions
        ("3.5", "THREE POINT FIVE"),
        ("3.14", "THREE POINT ONE FOUR"),
        (".5", "POINT FIVE"),
        ("5%", "FIVE PER CENT"),
        ("12.5 %", "TWELVE POINT FIVE PER CENT"),
        ("1/2", "ONE HALF"),
        ("3/4", "THREE QUARTERS"),
        ("2/3", "TWO THIRDS"),
        ("\u00bd a mile", "ONE HALF A MILE"),
        ("10\u00b0", "TEN DEGREES"),
        # currency
        ("\u00a35", "FIVE POUNDS"),
        ("\u00a31", "ONE POUND"),
        ("$3.50", "THREE DOLLARS AND FIFTY CENTS"),
        ("$1", "ONE DOLLAR"),
        ("$0.50", "FIFTY CENTS"),
        ("\u00a31.01", "ONE POUND AND ONE PENNY"),
        ("$1.5 million", "ONE POINT FIVE MILLION DOLLARS"),
        ("$1,000", "ONE THOUSAND DOLLARS"),
        ("\u20ac20", "TWENTY EUROS"),
        ("5s. 6d.", "FIVE SHILLINGS SIX PENCE"),
        ("1d.", "ONE PENNY"),
        ("\u00a35 10s.", "FIVE POUNDS TEN SHILLINGS"),
        ("10s 6d", "TEN SHILLINGS SIX PENCE"),
        ("550,000 lbs. of biscuit", "FIVE HUNDRED AND FIFTY THOUSAND POUNDS OF BISCUIT"),
        ("6 ft. high and 3 in. wide", "SIX FEET HIGH AND THREE INCHES WIDE"),
        ("born in 1811. In spring", "BORN IN EIGHTEEN ELEVEN IN SPRING"),
        # times
        ("10:30", "TEN THIRTY"),
        ("at 10:05 a.m.", "AT TEN O FIVE A M"),
        ("10:00", "TEN O'CLOCK"),
        # abbreviations
        ("Mr. Smith and Mrs. Jones", "MISTER SMITH AND MISSUS JONES"),
        ("Mr Smith", "MISTER SMITH"),
        ("Dr. Watson", "DOCTOR WATSON"),
        ("St. Paul's", "SAINT PAUL'S"),
        ("Peter St. John", "PETER SAINT JOHN"),
        ("He lived in Baker St. then", "HE LIVED IN BAKER STREET THEN"),
        ("Capt. Ahab, Col. Brandon, Gen. Grant", "CAPTAIN AHAB COLONEL BRANDON GENERAL GRANT"),
        ("Lieut. Hornblower", "LIEUTENANT HORNBLOWER"),
        ("John Smith, Esq.", "JOHN SMITH ESQUIRE"),
        ("No. 5", "NUMBER FIVE"),
        ("no. 12", "NUMBER TWELVE"),
        ("No, I won't", "NO I WON'T"),
        ("Nos. 3 and 4", "NUMBERS THREE AND FOUR"),
        ("pens, ink, &c.", "PENS INK ET CETERA"),
        ("etc.", "ET CETERA"),
        ("Smith & Sons", "SMITH AND SONS"),
        ("Prof. Moriarty and Rev. Collins", "PROFESSOR MORIARTY AND REVEREND COLLINS"),
        ("the col. of figures", "THE COL OF FIGURES"),
        # roman numerals only in clear contexts
        ("CHAPTER XIV.", "CHAPTER FOURTEEN"),
        ("Chapter xiv", "CHAPTER FOURTEEN"),
        ("CHAPTER I", "CHAPTER ONE"),
        ("Chapter IV. The Storm", "CHAPTER FOUR THE STORM"),
        ("BOOK II", "BOOK TWO"),
        ("Book I", "BOOK ONE"),
        ("the book I read", "THE BOOK I READ"),
        ("Act I, Scene II.", "ACT ONE SCENE TWO"),
        ("George III", "GEORGE THE THIRD"),
        ("Henry VIII and Louis XIV", "HENRY THE EIGHTH AND LOUIS THE FOURTEENTH"),
        ("Henry V", "HENRY THE FIFTH"),
        ("Charles I was", "CHARLES I WAS"),
        ("I did it, I.", "I DID IT I"),
        ("XIV.", "FOURTEEN"),
        ("I.", "I"),
        ("I", "I"),
        ("Mix it", "MIX IT"),
        ("as we saw in Chapter XIV, and in chapter I", "AS WE SAW IN CHAPTER FOURTEEN AND IN CHAPTER ONE"),
        ("Chap. XIV", "CHAPTER FOURTEEN"),
        ("Vol. II", "VOLUME TWO"),
        ("LETTER IV", "LETTER FOUR"),
        ("he wrote the letter V", "HE WROTE THE LETTER V"),
        ("the letter I", "THE LETTER I"),
        ("the part I played", "THE PART I PLAYED"),
        ("PART II. THE RETURN", "PART TWO THE RETURN"),
        ("Stave III", "STAVE THREE"),
        ("VI", "SIX"),
    ],
)
def test_normalize_transcript(raw: str, expected: str) -> None:
    assert normalize_transcript(raw) == expected


def test_normalize_words() -> None:
    assert normalize_words("Mr. Smith paid $3.") == ["MISTER", "SMITH", "PAID", "THREE", "DOLLARS"]
    assert normalize_words("...") == []


@pytest.mark.parametrize(
    ("n", "cardinal", "ordinal"),
    [
        (1, "ONE", "FIRST"),
        (12, "TWELVE", "TWELFTH"),
        (40, "FORTY", "FORTIETH"),
        (115, "ONE HUNDRED AND FIFTEEN", "ONE HUNDRED AND FIFTEENTH"),
        (1234, "ONE THOUSAND TWO HUNDRED AND THIRTY FOUR", "ONE THOUSAND TWO HUNDRED AND THIRTY FOURTH"),
    ],
)
def test_cardinal_and_ordinal_words(n: int, cardinal: str, ordinal: str) -> None:
    assert cardinal_words(n) == cardinal
    assert ordinal_words(n) == ordinal


@pytest.mark.parametrize(
    ("year", "words"),
    [
        (1066, "TEN SIXTY SIX"),
        (1200, "TWELVE HUNDRED"),
        (1804, "EIGHTEEN O FOUR"),
        (1999, "NINETEEN NINETY NINE"),
        (2000, "TWO THOUSAND"),
        (2009, "TWO THOUSAND AND NINE"),
        (2024, "TWENTY TWENTY FOUR"),
    ],
)
def test_year_words(year: int, words: str) -> None:
    assert year_words(year) == words


@pytest.mark.parametrize(
    ("roman", "value"),
    [
        ("I", 1),
        ("IV", 4),
        ("IX", 9),
        ("XIV", 14),
        ("XL", 40),
        ("MCMXCIX", 1999),
        ("MMMCMXCIX", 3999),
        ("IIII", None),
        ("VX", None),
        ("IC", None),
        ("", None),
        ("ABC", None),
        ("iv", None),
    ],
)
def test_roman_to_int(roman: str, value: int | None) -> None:
    assert roman_to_int(roman) == value


_text = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=32, max_codepoint=126),
        st.sampled_from(
            "\u2019\u2018\u201c\u201d\u2014\u2013\u2026\u00e9\u00e6\u00bd\u00a3\u20ac\u00b0\n\t\u00df"
        ),
        st.characters(),
    ),
    max_size=60,
)
_wordy = st.lists(
    st.sampled_from(
        [
            "Mr.",
            "St.",
            "st",
            "No.",
            "5",
            "1811",
            "XIV",
            "I",
            "Chapter",
            "George",
            "III",
            "'tis",
            "James'",
            "'",
            "-",
            "&c.",
            "$3.50",
            "1st",
            "2d",
            "the",
            "book",
            "Act",
            "Scene",
            "'90s",
            "3.5",
            "%",
            "co-op",
            "don't",
            "\u2019",
            "Baker",
            "etc",
            "&",
            "10:30",
            "1/2",
            "V",
            "CHAPTER",
            ".",
            ",",
            "MR",
            "DR",
        ]
    ),
    max_size=12,
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_text, _wordy))
def test_normalize_properties(raw: str) -> None:
    out = normalize_transcript(raw)
    assert LIBRISPEECH_RE.match(out), out
    assert "  " not in out
    assert out == out.strip()
    assert normalize_transcript(out) == out
