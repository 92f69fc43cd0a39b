"""Swift's HTTP forms, apart from what the object-store behaviours do: timestamps and
dates, listings (plain, JSON, XML; markers, prefixes, delimiters) and the conditional and
range headers of object reads. Errors are raised as ApiErrors, which the app renders as
swift's HTML pages (the API's `x-specstack-error-format`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from specstack_runtime.behaviours.objectstore import LISTING_LIMIT
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import BadRequest, RangeNotSatisfiable

RANGE_REFUSED = "The Range requested is not available."


def naive_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def x_timestamp(ts: float) -> str:
    return f"{ts:016.5f}"


def http_date(ts: float) -> str:
    return formatdate(math.ceil(ts), usegmt=True)


def title_case(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def listing_format(call: Call) -> str:
    fmt = call.q("format")
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in ("json", "xml", "plain"):
            raise BadRequest(f"Invalid format {fmt!r}: expected json, xml or plain.")
        return fmt
    accept = (call.header("Accept") or "").lower()
    if "application/json" in accept:
        return "json"
    if "application/xml" in accept or "text/xml" in accept:
        return "xml"
    return "plain"


def truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("true", "1", "yes", "on", "t", "y")


class Listing:
    def __init__(self, call: Call) -> None:
        raw = call.q("limit")
        try:
            self.limit = LISTING_LIMIT if raw is None else int(raw)
        except ValueError:
            raise BadRequest(f"Invalid limit {raw!r}: expected an integer.") from None
        if self.limit < 0:
            raise BadRequest("Invalid limit: must not be negative.")
        self.limit = min(self.limit, LISTING_LIMIT)  # the most one listing gives
        self.marker = call.q("marker") or ""
        self.end_marker = call.q("end_marker") or ""
        self.prefix = call.q("prefix") or ""
        self.delimiter = call.q("delimiter") or None
        self.reverse = truthy(call.q("reverse"))
        self.format = listing_format(call)

    def window(self, names: Sequence[str]) -> list[int]:
        """Indexes of `names` (sorted ascending) that this listing shows, in its order."""
        order = list(range(len(names)))
        if self.reverse:
            order.reverse()
        out = []
        for i in order:
            n = names[i]
            if self.marker and (n >= self.marker if self.reverse else n <= self.marker):
                continue
            if self.end_marker and (n <= self.end_marker if self.reverse else n >= self.end_marker):
                continue
            out.append(i)
            if len(out) >= self.limit:
                break
        return out


def rollup(names: list[str], prefix: str, delimiter: str | None) -> list[tuple[str, bool]]:
    """(name, is_subdir) with names past the delimiter folded, sorted and unique."""
    out: dict[str, bool] = {}
    for n in names:
        if delimiter:
            cut = n.find(delimiter, len(prefix))
            if cut >= 0:
                out.setdefault(n[: cut + len(delimiter)], True)
                continue
        out[n] = False
    return sorted(out.items())


def listing_reply(
    fmt: str,
    names: list[str],
    json_items: list[dict[str, Any]],
    xml_root: str,
    headers: dict[str, str],
) -> Reply:
    if fmt == "json":
        return Reply(200, json_items, headers, content_type="application/json; charset=utf-8")
    if fmt == "xml":
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{xml_root}>']
        kind = "container" if xml_root.startswith("account") else "object"
        for item in json_items:
            if "subdir" in item:
                parts.append(
                    f'<subdir name="{xml_escape(item["subdir"], {chr(34): "&quot;"})}">'
                    f"<name>{xml_escape(item['subdir'])}</name></subdir>"
                )
                continue
            fields = "".join(f"<{k}>{xml_escape(str(v))}</{k}>" for k, v in item.items())
            parts.append(f"<{kind}>{fields}</{kind}>")
        parts.append(f"</{xml_root.split(' ')[0]}>")
        return Reply(
            200,
            "".join(parts).encode("utf-8"),
            headers,
            content_type="application/xml; charset=utf-8",
        )
    if not names:
        return Reply(204, None, headers)
    text = "".join(f"{n}\n" for n in names)
    return Reply(200, text.encode("utf-8"), headers, content_type="text/plain; charset=utf-8")


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
