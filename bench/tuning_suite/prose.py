"""Real English sentences from a package everyone has: the standard library's docstrings.

    sentences = docstring_sentences(300, seed=0)

The ``voice`` task needs sentences that are not our templates and a text domain other than
the demo's, from PyPI packages alone (no download at run time). The standard library's
documentation is real prose written by many people: technical English with long words and
varied rhythm. Kept: sentences of 5 to 14 words that start with a capital, end with a full
stop, and hold only letters, spaces and , ; : ' - (no code, no CamelCase identifiers).
Which sentences exist depends on the Python version (3.11 here); the task records the
corpus it built, so a result names the text it was measured on.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re

from smart_tuner.trainer.text import UnknownSymbolError, normalize, text_to_ids

MODULES = [
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fractions",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "imaplib",
    "inspect",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mailbox",
    "mimetypes",
    "multiprocessing",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "platform",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tkinter",
    "tokenize",
    "traceback",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "wave",
    "xml.dom",
    "zipfile",
    "zlib",
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ALLOWED = re.compile(r"^[A-Z][A-Za-z ,;:'\-]+\.$")


def _docstrings() -> list[str]:
    out = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # e.g. tkinter without Tk: the rest still make enough sentences
            continue
        out.append(inspect.getdoc(module) or "")
        for _, member in sorted(vars(module).items()):
            if inspect.isclass(member) or inspect.isfunction(member):
                out.append(inspect.getdoc(member) or "")
    return out


def _usable(sentence: str) -> bool:
    words = sentence.split()
    if not _ALLOWED.match(sentence) or not 5 <= len(words) <= 14:
        return False
    if any(any(c.isupper() for c in word[1:]) for word in words):  # an identifier (ValueError), not a word
        return False
    try:
        text_to_ids(normalize(sentence))
    except UnknownSymbolError:
        return False
    return True


def docstring_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct usable sentences, in an order drawn from ``seed``; ValueError if there are fewer."""
    found = set()
    for doc in _docstrings():
        for paragraph in doc.split("\n\n"):
            for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                if _usable(sentence):
                    found.add(sentence)
    pool = sorted(found)
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} usable docstring sentences on this Python, {n} asked for")
    random.Random(seed).shuffle(pool)
    return pool[:n]
