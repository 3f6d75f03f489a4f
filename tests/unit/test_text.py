"""Symbols and English normalisation: NVIDIA-style cleaners, idempotence, id round trip."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smart_tuner.trainer.text import (
    PAD,
    SYMBOLS,
    SYMBOLS_ID,
    UnknownSymbolError,
    ids_to_text,
    normalize,
    number_to_words,
    ordinal_to_words,
    text_to_ids,
)


def test_symbol_set_layout() -> None:
    assert SYMBOLS[0] == PAD == "_"
    assert len(SYMBOLS) == len(set(SYMBOLS)) == 1 + 11 + 26
    assert set("!'(),.:;? -") <= set(SYMBOLS)
    assert SYMBOLS[-26:] == tuple("abcdefghijklmnopqrstuvwxyz")


def test_symbols_id_fingerprints_the_set() -> None:
    assert len(SYMBOLS_ID) == 12 and int(SYMBOLS_ID, 16) >= 0
    assert hashlib.sha256("\0".join(SYMBOLS).encode()).hexdigest().startswith(SYMBOLS_ID)
    other = hashlib.sha256("\0".join((*SYMBOLS, '"')).encode()).hexdigest()[:12]
    assert other != SYMBOLS_ID


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (21, "twenty-one"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (999, "nine hundred ninety-nine"),
        (1000, "one thousand"),
        (2024, "two thousand twenty-four"),
        (40_010, "forty thousand ten"),
        (999_999, "nine hundred ninety-nine thousand nine hundred ninety-nine"),
        (1_000_000, "one zero zero zero zero zero zero"),
    ],
)
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [
        *[(1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (11, "eleventh"), (12, "twelfth")],
        *[(20, "twentieth"), (21, "twenty-first"), (100, "one hundredth"), (1009, "one thousand ninth")],
    ],
)
def test_ordinal_to_words(n: int, words: str) -> None:
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mr. Smith met Dr. Jones on St. James st", "mister smith met doctor jones on saint james st"),
        ("Mrs. Brown & Co. Ltd.", "misess brown and company limited"),
        ("I have 3 cats.", "i have three cats."),
        ("It is 3.5 meters, or 3.14.", "it is three point five meters, or three point one four."),
        ("The 1st, 2nd, 3rd and 21st.", "the first, second, third and twenty-first."),
        ("1,234 people", "one thousand two hundred thirty-four people"),
        ("It cost $5.50, not $1.", "it cost five dollars, fifty cents, not one dollar."),
        ("50% off", "fifty percent off"),
        ("Café déjà vu, naïve Zoë", "cafe deja vu, naive zoe"),
        ("\u201cQuoted\u201d and \u2018single\u2019 `tick`", "'quoted' and 'single' 'tick'"),
        ("wait\u2014what?", "wait - what?"),
        ("  lots   of\t\nspace  ", "lots of space"),
        ("", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_keeps_unconvertible_characters_for_the_caller_to_report() -> None:
    assert normalize("tokyo 東京") == "tokyo 東京"


_PIECES = st.sampled_from([*"0123456789 .,$%-'stndrhMrDrİ½ﬁ\u2014\u201c\t", "1st", "Mr.", "3.5"])


@given(st.lists(_PIECES).map("".join) | st.text())
def test_normalize_is_idempotent(raw: str) -> None:
    once = normalize(raw)
    assert normalize(once) == once


def test_ids_round_trip() -> None:
    text = normalize("Hello, world! Is it 42? (yes) - ok: fine; 'quoted'.")
    ids = text_to_ids(text)
    assert 0 not in ids and all(0 < i < len(SYMBOLS) for i in ids)
    assert ids_to_text(ids) == text


def test_unknown_symbol_names_character_and_position() -> None:
    with pytest.raises(UnknownSymbolError) as info:
        text_to_ids("abc@def")
    assert isinstance(info.value, ValueError)
    assert info.value.char == "@" and info.value.position == 3
    assert "'@'" in str(info.value) and "position 3" in str(info.value)


def test_capitals_are_not_symbols_so_unnormalised_text_is_refused() -> None:
    with pytest.raises(UnknownSymbolError, match="'H' at position 0"):
        text_to_ids("Hello")


def test_ids_to_text_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"symbol id 99 at position 1"):
        ids_to_text([1, 99])
