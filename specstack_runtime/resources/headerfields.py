"""Headers mapped to fields, as an operation's `x-specstack-args` declares them.

`headers:` maps a response header to where its value comes from (docs/behaviours.md):
`{field: NAME}` (the row's field), `{value: TEXT}` or just TEXT (a constant), an aggregate over
rows: `{count: true}`, `{sum: NAME}`, `{min: NAME, default: now}`, each with an optional
`format` (FORMATS), or `{entries: NAME}`: every entry of a mapping field as a header of
its own name, in title case (free-form header metadata). `metadata:` says which request
headers such a field keeps: `headers` (exact names, or prefixes ending in `*`), and
`remove`, the prefix with which a request empties one (`X-Remove-` + the name without
its `X-`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

from specstack_runtime.context import Call
from specstack_runtime.errors import BadRequest


def seconds(ts: Any) -> float:
    """A time as seconds since the epoch: a number, or an ISO 8601 time (UTC without a zone,
    as the store stamps rows)."""
    if isinstance(ts, str):
        moment = datetime.fromisoformat(ts)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return float(ts)


FORMATS: dict[str, Callable[[Any], Any]] = {
    # seconds since the epoch, five decimals, zero-padded to 16 characters
    "unix-fraction": lambda ts: f"{seconds(ts):016.5f}",
    # an RFC 7231 date, the second rounded up (so a later If-Modified-Since matches)
    "http-date": lambda ts: formatdate(math.ceil(seconds(ts)), usegmt=True),
    # ISO 8601 in UTC without a zone, with microseconds
    "utc-naive": lambda ts: datetime.fromtimestamp(seconds(ts), UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%f"
    ),
}


def field_value(row: Any, name: str, fmt: str | None = None) -> Any:
    """A field of a row (a mapping or an object), in the named format."""
    value = row.get(name) if isinstance(row, Mapping) else getattr(row, name)
    return value if fmt is None else FORMATS[fmt](value)


def _aggregate(source: Mapping[str, Any], rows: Sequence[Any]) -> Any:
    if source.get("count"):
        return len(rows)
    if "sum" in source:
        return sum(field_value(r, source["sum"]) for r in rows)
    values = [field_value(r, source["min"]) for r in rows]
    if values:
        return min(values)
    return time.time() if source.get("default") == "now" else source.get("default")


def title_case(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def response_headers(call: Call, row: Any = None, rows: Sequence[Any] = ()) -> dict[str, str]:
    """The operation's declared headers of `row` (fields) and `rows` (aggregates)."""
    out: dict[str, str] = {}
    for header, source in call.args.get("headers", {}).items():
        if isinstance(source, str):
            source = {"value": source}
        if "entries" in source:
            entries = field_value(row, source["entries"])
            out.update({title_case(k): str(v) for k, v in entries.items()})
            continue
        if "value" in source:
            value = source["value"]
        elif "field" in source:
            value = field_value(row, source["field"])
        else:
            value = _aggregate(source, rows)
        if value is not None:
            out[header] = str(value if "format" not in source else FORMATS[source["format"]](value))
    return out


def _metadata_header(patterns: Sequence[str], low: str) -> bool:
    return any(
        low.startswith(p[:-1].lower()) if p.endswith("*") else low == p.lower() for p in patterns
    )


def request_metadata(call: Call) -> tuple[dict[str, str], set[str]]:
    """The metadata headers of the request (lower-cased names), and the names it removes."""
    meta: Mapping[str, Any] = call.args["metadata"]
    patterns, remove = meta["headers"], str(meta.get("remove", "")).lower()
    given: dict[str, str] = {}
    removed: set[str] = set()
    for key, value in call.headers.items():
        low = key.lower()
        if _metadata_header(patterns, low):
            given[low] = value
        elif remove and low.startswith(remove):
            named = "x-" + low[len(remove) :]
            if _metadata_header(patterns, named):
                removed.add(named)
    return given, removed


def check_values(call: Call) -> None:
    """400 for a request header outside the values `values:` allows (`Invalid NAME "V"`)."""
    for header, allowed in call.args.get("values", {}).items():
        value = call.header(header)
        if value and value not in allowed:
            raise BadRequest(f'Invalid {header} "{value}"')


def metadata_change(call: Call, old: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the request's headers make of the row's field `metadata: {field}` names (an
    engine-served write): the headers kept merged into the old value, those emptied or
    removed left out; the headers checked against `values:` first. {} without one."""
    meta = call.args.get("metadata")
    if not meta or "field" not in meta:
        return {}
    check_values(call)
    given, removed = request_metadata(call)
    merged = {**((old or {}).get(meta["field"]) or {}), **given}
    return {meta["field"]: {k: v for k, v in merged.items() if v and k not in removed}}
