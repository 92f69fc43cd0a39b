"""Regular expressions the spec gives (field patterns, CEL's `matches`), compiled once.

RE2 (google-re2), as CEL's own `matches` uses: matching takes time linear in the
text whatever the pattern, so a pattern from the spec or a request cannot make a
match run away. Compiling one takes ~0.1 ms, which every check paid before; the
cache is bounded (least recently used go first), as a pattern may come from data.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the caller's error, not a line on stderr


class PatternError(ValueError):
    """A pattern RE2 cannot compile."""


@lru_cache(maxsize=512)
def compiled(pattern: str) -> Any:
    """The RE2 pattern compiled (cached by its text); PatternError if it is invalid."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        why = exc.args[0] if exc.args else exc
        text = why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)
        raise PatternError(f"invalid regular expression: {text}") from None


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` matches anywhere in `text` (CEL's `matches`, RE2's search)."""
    return compiled(pattern).search(text) is not None
