"""The plain values of pure expressions, kept by the JSON of what they read.

A client polling a server while it boots has the same row rendered again and again;
every request checks the row it names is live (`doc.vm_state != 'deleted'`): the same
program over the same values. An expression without `now()`, `uuid4()` or
`random_secret()` gives the same value for the same variables, so its value is kept by
the variables it is handed (a `Bound`'s data: only what it reads) and given back as a
fresh copy, without converting anything to CEL. Only values are kept, never errors: an
expression that fails runs (and fails) each time, as it did.

A key is the variables' JSON, and only when that JSON tells them apart from every other
value the runtime would convert differently: none for bytes, times, tuples, subclasses,
NaN, a lone surrogate or an integer beyond 64 bits (`key_of`). A value is kept only when
its JSON gives it back equal (`Results.put`).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

#: how many values are kept (the oldest dropped first)
ENTRIES = 1024
#: variables or values whose JSON is longer are not kept (a table's rows: rarely the same
#: twice); at most some 16 MB in all
KEY_BYTES = VALUE_BYTES = 8192
#: an expression tried this many times whose values were found again less than one time
#: in `RARE` (each call reads a new request id) is no longer kept: a key costs a little
TRIES = 16
RARE = 8

_KEY_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def key_of(data: dict[str, Any]) -> bytes | None:
    """`data`'s JSON, when it is exact: read back, it is `data` again (a tuple, a UUID or
    NaN would be read back as something else); None when it is not, or too long."""
    try:
        key = orjson.dumps(data, option=_KEY_OPTIONS)
    except TypeError:  # bytes, a time, a lone surrogate, an int beyond 64 bits, ...
        return None
    if len(key) > KEY_BYTES or orjson.loads(key) != data:
        return None
    return key


class Results:
    """Values by (expression text, key of its variables), as their JSON."""

    def __init__(self, entries: int = ENTRIES) -> None:
        self.entries = entries
        self._kept: dict[tuple[str, bytes], bytes] = {}
        self._lock = threading.Lock()

    def get(self, text: str, key: bytes) -> tuple[bool, Any]:
        """(True, a copy of the value) when one is kept, else (False, None)."""
        kept = self._kept.get((text, key))
        return (False, None) if kept is None else (True, orjson.loads(kept))

    def put(self, text: str, key: bytes, value: Any) -> None:
        """Keep `value` when its JSON gives it back equal (not a time, bytes or NaN)."""
        try:
            kept = orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except TypeError:  # bytes, a time, a duration, a type, a map with other keys
            return
        if len(kept) > VALUE_BYTES:
            return
        # what else CEL gives has an exact JSON but a NaN or infinity (written null)
        if b"null" in kept and orjson.loads(kept) != value:
            return
        with self._lock:  # the stores' threads evaluate too (record rules)
            self._kept[(text, _exact(key))] = _exact(kept)
            if len(self._kept) > self.entries:
                del self._kept[next(iter(self._kept))]

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def __len__(self) -> int:
        return len(self._kept)


def _exact(data: bytes) -> bytes:
    """A copy of `data` its own size: orjson's bytes keep the buffer they were written in
    (4 KiB, however short the JSON), and a thousand keys and values are kept."""
    return memoryview(data).tobytes()


#: the values every expression of this process keeps
RESULTS = Results()
