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
