"""JSON for the hot paths (stored documents, request and response bodies), with orjson."""

from __future__ import annotations

from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON bytes; values JSON cannot hold are written as their str()."""
    return orjson.dumps(
        value, default=str, option=_SORTED if sort_keys else orjson.OPT_NON_STR_KEYS
    )


def loads(data: bytes | bytearray | str) -> Any:
    return orjson.loads(data)


def dumps_text(value: Any, *, indent: bool = False) -> str:
    """Sorted JSON text for files a person may read (state files), `indent` by two spaces."""
    option = _SORTED | (orjson.OPT_INDENT_2 if indent else 0)
    return orjson.dumps(value, default=str, option=option).decode("utf-8")
