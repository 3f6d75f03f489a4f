"""Character symbols and English text normalisation for the Tacotron2 text encoder.

``normalize`` follows NVIDIA tacotron2's ``english_cleaners`` (ASCII, lower case,
numbers and abbreviations spelled out, whitespace collapsed); ``text_to_ids`` maps
normalised text to symbol ids, id 0 being padding. ``SYMBOLS_ID`` fingerprints the
symbol set so a checkpoint made with another one is refused.

Imports the standard library only.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

PAD = "_"
PUNCTUATION = "!'(),.:;? -"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"

SYMBOLS: tuple[str, ...] = (PAD, *PUNCTUATION, *_LETTERS)
# NUL cannot be a symbol, so joining with it keeps distinct sets distinct.
SYMBOLS_ID: str = hashlib.sha256("\0".join(SYMBOLS).encode()).hexdigest()[:12]

_SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}


class UnknownSymbolError(ValueError):
    """A character of the text is not in SYMBOLS; ``char`` and ``position`` say which."""

    def __init__(self, char: str, position: int, text: str) -> None:
        super().__init__(f"unknown symbol {char!r} at position {position} in {text!r}")
        self.char = char
        self.position = position


# --- numbers -------------------------------------------------------------------------

_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_MAX_CARDINAL = 999_999


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens] + (f"-{_ONES[ones]}" if ones else ""))
    elif rest or not hundreds:
        words.append(_ONES[rest])
    return " ".join(words)


def number_to_words(n: int) -> str:
    """``421`` -> ``four hundred twenty-one``; beyond 999999 the digits are read one by one."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n > _MAX_CARDINAL:
        return " ".join(_ONES[int(d)] for d in str(n))
    thousands, rest = divmod(n, 1000)
    if not thousands:
        return _below_thousand(rest)
    head = f"{_below_thousand(thousands)} thousand"
    return f"{head} {_below_thousand(rest)}" if rest else head


def ordinal_to_words(n: int) -> str:
    """``21`` -> ``twenty-first``: only the last word of the cardinal changes."""
    cardinal = number_to_words(n)
    head, sep, last = cardinal.rpartition(" ")
    stem, hyphen, unit = last.rpartition("-")
    if unit in _ORDINAL_WORDS:
        unit = _ORDINAL_WORDS[unit]
    elif unit.endswith("y"):
        unit = unit[:-1] + "ieth"
    else:
        unit += "th"
    return head + sep + stem + hyphen + unit


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


_COMMA_NUMBER_RE = re.compile(r"\b(\d{1,3}(?:,\d{3})+)\b")
_DOLLARS_RE = re.compile(r"\$(\d+)(?:\.(\d\d))?\b")
_PERCENT_RE = re.compile(r"(\d)\s*%")
_DECIMAL_RE = re.compile(r"\b(\d+)\.(\d+)\b")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_NUMBER_RE = re.compile(r"\b\d+\b")


def _dollars(m: re.Match[str]) -> str:
    dollars, cents = int(m.group(1)), int(m.group(2) or 0)
    parts = []
    if dollars or not cents:
        parts.append(f"{number_to_words(dollars)} dollar{'' if dollars == 1 else 's'}")
    if cents:
        parts.append(f"{number_to_words(cents)} cent{'' if cents == 1 else 's'}")
    return ", ".join(parts)


def _expand_numbers(text: str) -> str:
    # Order matters, as in NVIDIA's normalize_numbers: thousands separators first, then
    # the forms a bare integer would otherwise swallow (money, decimals, ordinals).
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _DOLLARS_RE.sub(_dollars, text)
    text = _PERCENT_RE.sub(r"\1 percent", text)
    text = _DECIMAL_RE.sub(lambda m: f"{number_to_words(int(m.group(1)))} point {_digits(m.group(2))}", text)
    text = _ORDINAL_RE.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    return _NUMBER_RE.sub(lambda m: number_to_words(int(m.group(0))), text)


# --- abbreviations, characters, whitespace -----------------------------------------------

# NVIDIA's list; like theirs, an abbreviation needs its full stop ("st." but not "st").
_ABBREVIATIONS = [
    (re.compile(rf"\b{abbr}\.", re.IGNORECASE), expansion)
    for abbr, expansion in [
        ("mrs", "misess"),
        ("mr", "mister"),
        ("dr", "doctor"),
        ("st", "saint"),
        ("co", "company"),
        ("jr", "junior"),
        ("maj", "major"),
        ("gen", "general"),
        ("drs", "doctors"),
        ("rev", "reverend"),
        ("lt", "lieutenant"),
        ("hon", "honorable"),
        ("sgt", "sergeant"),
        ("capt", "captain"),
        ("esq", "esquire"),
        ("ltd", "limited"),
        ("col", "colonel"),
        ("ft", "fort"),
        ("vs", "versus"),
        ("etc", "et cetera"),
    ]
]

# Characters NFKD leaves alone but the symbol set spells differently.
_CHAR_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "`": "'",
        "\u00b4": "'",
        '"': "'",
        "\u201c": "'",
        "\u201d": "'",
        "\u201e": "'",
        "\u00ab": "'",
        "\u00bb": "'",
        "\u2013": "-",
        "\u2014": " - ",
        "\u2212": "-",
        "\u00a0": " ",
        "[": "(",
        "]": ")",
        "&": " and ",
    }
)
_WHITESPACE_RE = re.compile(r"\s+")


def to_ascii(text: str) -> str:
    """Decompose accented letters and drop the accents (``café`` -> ``cafe``).

    Characters without an ASCII form are kept, so that ``text_to_ids`` names them
    rather than the text silently losing words.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_CHAR_MAP))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_CHAR_MAP)


def normalize(text: str) -> str:
    """Raw English text -> the lower-case ASCII the model reads; idempotent."""
    text = to_ascii(text).lower()
    text = _expand_numbers(text)
    for pattern, expansion in _ABBREVIATIONS:
        text = pattern.sub(expansion, text)
    return _WHITESPACE_RE.sub(" ", text).strip()


def text_to_ids(text: str) -> list[int]:
    """Normalised text -> symbol ids; raises UnknownSymbolError at the first unknown character."""
    ids = []
    for position, char in enumerate(text):
        symbol_id = _SYMBOL_TO_ID.get(char)
        if symbol_id is None:
            raise UnknownSymbolError(char, position, text)
        ids.append(symbol_id)
    return ids


def ids_to_text(ids: list[int]) -> str:
    """Symbol ids -> text, padding included as ``_``; raises ValueError for an id out of range."""
    out = []
    for position, symbol_id in enumerate(ids):
        if not 0 <= symbol_id < len(SYMBOLS):
            raise ValueError(f"symbol id {symbol_id} at position {position} is outside 0..{len(SYMBOLS) - 1}")
        out.append(SYMBOLS[symbol_id])
    return "".join(out)
