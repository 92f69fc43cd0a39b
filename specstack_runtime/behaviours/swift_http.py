"""The conditional and range headers of object reads (swift's, and glance's ranges).
Errors are raised as ApiErrors, which the app renders in the API's error format."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime

from specstack_runtime.errors import RangeNotSatisfiable

RANGE_REFUSED = "The Range requested is not available."


def etags(raw: str) -> set[str]:
    return {t.strip().strip('"').removeprefix("W/").strip('"') for t in raw.split(",") if t.strip()}


def http_time(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def byte_range(
    spec: str | None,
    size: int,
    refuse: Callable[[str], Exception] = lambda _: RangeNotSatisfiable(RANGE_REFUSED),
) -> tuple[int, int] | None:
    """(first, last) of a single "bytes=" range; None when there is none to honour (the
    whole body); `refuse(message)` raised for a range the body cannot satisfy (a swift
    object's 416 page, glance's error body)."""
    if not spec or not spec.strip().lower().startswith("bytes="):
        return None
    ranges = spec.strip()[6:].split(",")
    if len(ranges) != 1:
        return None  # several ranges: the whole object
    first_s, sep, last_s = ranges[0].strip().partition("-")
    if not sep:
        return None
    try:
        if first_s == "":
            suffix = int(last_s)
            if suffix <= 0 or size == 0:
                raise refuse(f"The range {spec!r} cannot be satisfied.")
            return max(size - suffix, 0), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first > last or first >= size:
        raise refuse(f"The range {spec!r} cannot be satisfied for {size} bytes.")
    return first, min(last, size - 1)
