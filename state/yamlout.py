"""A small, fast, deterministic YAML writer for plain data (the state projection).

PyYAML's representer walks every node in Python and took ~2.4 s for a 5,000-segment
state, while the sequencer rewrites ``tuner_state.yaml`` every second. The state is
plain data (str-keyed dicts, lists, str, int, float, bool, None), so block YAML
can be written directly: mappings and sequences in block style, a string plain
only when it cannot be read back as anything but that string, otherwise as a
JSON string (a valid YAML double-quoted scalar). ``yaml.safe_load(dump(x)) == x``
is a property test. The bytes do not depend on how PyYAML was built.

Imports the standard library only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

# Plain (unquoted) only for strings that YAML 1.1 resolvers read back as the same string.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
# Compared lowercase: YAML 1.1 booleans and nulls, which read back as something other than a string.
_RESERVED = frozenset(["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"])


# Characters YAML does not accept raw, or would read as a line break, inside a quoted scalar
# (json.dumps already escapes the C0 controls, quotes and backslashes).
_UNPRINTABLE = re.compile("[\x7f-\x9f\ud800-\udfff\ufeff\ufffe\uffff\u2028\u2029]")


def _string(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _RESERVED:
        return text
    return _UNPRINTABLE.sub(lambda c: f"\\u{ord(c.group()):04x}", json.dumps(text, ensure_ascii=False))


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value).lower()
    if "." not in text and "e" in text:  # 1e-05 reads back as a string in YAML 1.1
        text = text.replace("e", ".0e", 1)
    return text


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _lines(value: Any, indent: str, out: list[str]) -> None:
    """Append the block lines of a non-empty mapping or sequence at ``indent``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            head = f"{indent}{_string(str(key))}:"
            if isinstance(item, (Mapping, list, tuple)) and item:
                out.append(head)
                _lines(item, indent + "  ", out)
            else:
                out.append(f"{head} {_inline(item)}")
        return
    for item in value:
        if isinstance(item, (Mapping, list, tuple)) and item:
            out.append(f"{indent}-")
            _lines(item, indent + "  ", out)
        else:
            out.append(f"{indent}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"  # only reached when empty
    if isinstance(value, (list, tuple)):
        return "[]"
    return scalar(value)


def dump(doc: Mapping[str, Any]) -> str:
    """Block YAML for a plain-data mapping, one trailing newline."""
    if not doc:
        return "{}\n"
    out: list[str] = []
    _lines(doc, "", out)
    return "\n".join(out) + "\n"
