"""Name-ordered listings: entries named by unique strings, paged by name rather than by row.

An operation declares one with `listing:` in its `x-specstack-args` (docs/behaviours.md):
the query parameters `prefix`, `marker`, `end_marker`, `delimiter` (names past it
rolled up into one `{"subdir": ...}` entry), `path` (the entries directly in a
pseudo-directory), `reverse` and `limit` (at most `max_limit`) choose a window of the
sorted names; `format` (or the Accept header) chooses the envelope: text (one name a
line, 204 when empty), JSON (an array of entries, their keys as `fields` maps them) or
XML (`root` element named by the path parameter of that name, one `item` element each).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import BadRequest
from specstack_runtime.resources.headerfields import field_value

_TRUE = ("true", "1", "yes", "on", "t", "y")
_FORMATS = ("json", "xml", "plain")


@dataclass(frozen=True, slots=True)
class NameQuery:
    """The window of a name-ordered listing."""

    prefix: str = ""
    marker: str = ""
    end_marker: str = ""
    delimiter: str | None = None
    limit: int | None = None  # None: every name
    reverse: bool = False
    subdirs: bool = True  # False: rolled-up names are left out (a `path` listing)

    @classmethod
    def of(cls, call: Call) -> NameQuery:
        """The window the request's query parameters ask for (at most the spec's `max_limit`)."""
        max_limit = int(call.args["listing"]["max_limit"])
        raw = call.q("limit")
        try:
            limit = max_limit if raw is None else int(raw)
        except ValueError:
            raise BadRequest(f"Invalid limit {raw!r}: expected an integer.") from None
        if limit < 0:
            raise BadRequest("Invalid limit: must not be negative.")
        prefix, delimiter = call.q("prefix") or "", call.q("delimiter") or None
        path = call.q("path")
        if path is not None:  # the names directly under a pseudo-directory
            prefix, delimiter = (path.rstrip("/") + "/" if path else ""), "/"
        return cls(
            prefix=prefix,
            marker=call.q("marker") or "",
            end_marker=call.q("end_marker") or "",
            delimiter=delimiter,
            limit=min(limit, max_limit),
            reverse=(call.q("reverse") or "").strip().lower() in _TRUE,
            subdirs=path is None,
        )

    def _outside(self, name: str) -> bool:
        if self.marker and (name >= self.marker if self.reverse else name <= self.marker):
            return True
        end = self.end_marker
        return bool(end) and (name <= end if self.reverse else name >= end)

    def window(self, names: Iterable[str]) -> list[tuple[str, bool]]:
        """(name, is_subdir) of the `names` (sorted ascending, unique) the window shows, in
        its order. Names are filtered before they are rolled up, as swift's backends do."""
        ordered = sorted(names, reverse=self.reverse)
        out: list[tuple[str, bool]] = []
        for name in ordered:
            if self.limit is not None and len(out) >= self.limit:
                break
            if not name.startswith(self.prefix) or self._outside(name):
                continue
            cut = name.find(self.delimiter, len(self.prefix)) if self.delimiter else -1
            if cut < 0:
                out.append((name, False))
                continue
            # Names sharing a prefix are adjacent, so a repeat is always the last entry.
            subdir = name[: cut + len(self.delimiter or "")]
            repeat = bool(out) and out[-1] == (subdir, True)
            passed = bool(self.marker) and (
                subdir >= self.marker if self.reverse else subdir <= self.marker
            )
            if self.subdirs and not repeat and not passed:
                out.append((subdir, True))
        return out


def listing_format(call: Call) -> str:
    """json, xml or plain: the `format` parameter, else what the Accept header prefers."""
    fmt = call.q("format")
    if fmt is not None:
        if fmt.lower() not in _FORMATS:
            raise BadRequest(f"Invalid format {fmt.lower()!r}: expected json, xml or plain.")
        return fmt.lower()
    accept = (call.header("Accept") or "").lower()
    if "application/json" in accept:
        return "json"
    return "xml" if "application/xml" in accept or "text/xml" in accept else "plain"


def serve_listing(
    call: Call,
    rows: Sequence[Any],
    headers: dict[str, str],
    query: NameQuery | None = None,
) -> Reply:
    """The listing the operation's `listing:` declares of `rows` (sorted by their `name`,
    `{"subdir": ...}` entries among them): windowed by `query` when one is given, else
    as the caller (a store that pages by itself) has windowed them."""
    spec: Mapping[str, Any] = call.args["listing"]
    fmt = listing_format(call)
    if query is not None:
        by_name = {str(field_value(r, "name")): r for r in rows}
        rows = [{"subdir": n} if sub else by_name[n] for n, sub in query.window(by_name)]
    subdirs = [_subdir(r) for r in rows]
    names = [
        s if s is not None else str(field_value(r, "name"))
        for r, s in zip(rows, subdirs, strict=True)
    ]
    items = [
        {"subdir": s} if s is not None else _item(spec, r)
        for r, s in zip(rows, subdirs, strict=True)
    ]
    if fmt == "json":
        return Reply(200, items, headers, content_type="application/json; charset=utf-8")
    if fmt == "xml":
        root = str(spec["root"])
        owner = xml_escape(call.path_params.get(root, ""), {'"': "&quot;"})
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} name="{owner}">']
        for item in items:
            if "subdir" in item:
                text = item["subdir"]
                quoted = xml_escape(text, {'"': "&quot;"})
                parts.append(f'<subdir name="{quoted}"><name>{xml_escape(text)}</name></subdir>')
                continue
            inner = "".join(f"<{k}>{xml_escape(str(v))}</{k}>" for k, v in item.items())
            parts.append(f"<{spec['item']}>{inner}</{spec['item']}>")
        parts.append(f"</{root}>")
        body = "".join(parts).encode("utf-8")
        return Reply(200, body, headers, content_type="application/xml; charset=utf-8")
    if not names:
        return Reply(204, None, headers)
    text = "".join(f"{n}\n" for n in names).encode("utf-8")
    return Reply(200, text, headers, content_type="text/plain; charset=utf-8")


def _subdir(row: Any) -> str | None:
    """The rolled-up name of a `{"subdir": ...}` entry (a mapping or an object), or None."""
    found = row.get("subdir") if isinstance(row, Mapping) else getattr(row, "subdir", None)
    return None if found is None else str(found)


def _item(spec: Mapping[str, Any], row: Any) -> dict[str, Any]:
    out = {}
    for key, source in spec["fields"].items():
        if isinstance(source, str):
            source = {"field": source}
        out[key] = field_value(row, source["field"], source.get("format"))
    return out
