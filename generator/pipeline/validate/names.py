"""How a problem with an unknown name is told: the closest known name, and the known ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: Up to this many known names are listed after an unknown one.
LIST_AT_MOST = 10


def suggest(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def hint(name: str, known: Iterable[str], what: str) -> str:
    """`suggest`, then the known names when there are few: `(nodes: a, b)`."""
    names = sorted(set(known))
    listed = f" ({what}: {', '.join(names)})" if 0 < len(names) <= LIST_AT_MOST else ""
    if not names:
        listed = f" (no {what} are declared)"
    return f"{suggest(name, names)}{listed}"
