"""Names derived from spec names, computed once while building the IR."""

from __future__ import annotations

import keyword
import re

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+\d*|[A-Z]+\d*|\d+")


def words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name.replace("-", " ").replace(".", " "))]


def snake(name: str) -> str:
    out = "_".join(words(name)) or "x"
    if out[0].isdigit():
        out = f"n{out}"
    return f"{out}_" if keyword.iskeyword(out) else out


def pascal(name: str) -> str:
    return "".join(w.capitalize() for w in words(name)) or "X"


def const(name: str) -> str:
    return snake(name).upper()


def slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))
