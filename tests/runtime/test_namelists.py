"""The engine's name-ordered listings and headers mapped to fields (x-specstack-args)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import pytest

from specstack_runtime.context import Call
from specstack_runtime.errors import BadRequest
from specstack_runtime.resources.headerfields import (
    check_values,
    request_metadata,
    response_headers,
)
from specstack_runtime.resources.namelists import NameQuery, serve_listing

NAMES = ["a/1", "a/2", "b", "c/x/1", "c/y", "d"]
LISTING = {
    "max_limit": 3,
    "root": "box",
    "item": "thing",
    "fields": {"name": "name", "size": "size", "when": {"field": "at", "format": "utc-naive"}},
}


@dataclass
class Row:
    name: str
    size: int
    at: float
    meta: dict[str, str]


def call(args: dict[str, Any], query: dict[str, str] | None = None, **headers: str) -> Call:
    return Call(
        rt=cast(Any, None),
        trigger="t",
        kind="operation",
        request_id="r",
        global_request_id="g",
        args=args,
        query={k: [v] for k, v in (query or {}).items()},
        headers={k.replace("_", "-"): v for k, v in headers.items()},
        path_params={"box": 'my "box"'},
    )


def test_window_filters_names_then_rolls_them_up() -> None:
    assert NameQuery(delimiter="/").window(NAMES) == [
        ("a/", True),
        ("b", False),
        ("c/", True),
        ("d", False),
    ]
    # a subdir at or before the marker is not repeated on the next page
    assert NameQuery(delimiter="/", marker="a/1").window(NAMES) == [
        ("b", False),
        ("c/", True),
        ("d", False),
    ]
    assert NameQuery(delimiter="/", reverse=True, limit=2).window(NAMES) == [
        ("d", False),
        ("c/", True),
    ]
    assert NameQuery(reverse=True, marker="c/y", end_marker="a/1").window(NAMES) == [
        ("c/x/1", False),
        ("b", False),
        ("a/2", False),
    ]
    assert NameQuery(prefix="c/", delimiter="/").window(NAMES) == [("c/x/", True), ("c/y", False)]


def test_query_of_a_request() -> None:
    q = NameQuery.of(call({"listing": LISTING}, {"path": "c", "limit": "50", "reverse": "yes"}))
    assert (q.prefix, q.delimiter, q.subdirs, q.limit, q.reverse) == ("c/", "/", False, 3, True)
    assert q.window(NAMES) == [("c/y", False)]  # only what is directly in c/
    for bad in ("-1", "ten"):
        with pytest.raises(BadRequest, match="Invalid limit"):
            NameQuery.of(call({"listing": LISTING}, {"limit": bad}))


def test_envelopes() -> None:
    rows = [Row("a", 1, 0.0, {}), Row("b", 2, 1.5, {})]
    c = call({"listing": LISTING}, {"format": "json"})
    got = serve_listing(c, rows, {"X-Count": "2"}, NameQuery(marker="a"))
    assert got.status == 200 and got.headers == {"X-Count": "2"}
    assert json.loads(json.dumps(got.body)) == [
        {"name": "b", "size": 2, "when": "1970-01-01T00:00:01.500000"}
    ]
    text = serve_listing(call({"listing": LISTING}, Accept="text/plain"), rows, {})
    assert (text.status, text.body) == (200, b"a\nb\n")
    empty = serve_listing(call({"listing": LISTING}), [], {})
    assert (empty.status, empty.body) == (204, None)
    xml = serve_listing(
        call({"listing": LISTING}, Accept="application/xml"), [{"subdir": "s/"}], {}
    )
    assert xml.body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<box name="my &quot;box&quot;">'
        b'<subdir name="s/"><name>s/</name></subdir></box>'
    )
    with pytest.raises(BadRequest, match="Invalid format"):
        serve_listing(call({"listing": LISTING}, {"format": "yaml"}), rows, {})


def test_response_headers_fields_aggregates_and_entries() -> None:
    rows = [Row("a", 3, 20.0, {}), Row("b", 4, 10.0, {})]
    headers = {
        "X-Count": {"count": True},
        "X-Sum": {"sum": "size"},
        "X-First": {"min": "at", "format": "unix-fraction", "default": "now"},
    }
    assert response_headers(call({"headers": headers}), rows=rows) == {
        "X-Count": "2",
        "X-Sum": "7",
        "X-First": "0000000010.00000",
    }
    before = time.time()
    none = response_headers(call({"headers": headers}), rows=[])
    assert none["X-Count"] == "0" and float(none["X-First"]) >= before
    one = {
        "X-Size": {"field": "size"},
        "Last-Modified": {"field": "at", "format": "http-date"},
        "Kind": {"value": "thing"},
        "*": {"entries": "meta"},
    }
    row = Row("a", 3, 1.2, {"x-thing-meta-color": "red"})
    assert response_headers(call({"headers": one}), row) == {
        "X-Size": "3",
        "Last-Modified": "Thu, 01 Jan 1970 00:00:02 GMT",
        "Kind": "thing",
        "X-Thing-Meta-Color": "red",
    }


def test_request_metadata_and_values() -> None:
    meta = {"headers": ["X-Thing-Meta-*", "X-Thing-Read"], "remove": "X-Remove-"}
    c = call(
        {"metadata": meta, "values": {"X-Policy": ["gold"]}},
        X_Thing_Meta_Color="red",
        X_Remove_Thing_Read="x",
        X_Remove_Other="x",
        X_Unrelated="1",
        X_Policy="tin",
    )
    assert request_metadata(c) == ({"x-thing-meta-color": "red"}, {"x-thing-read"})
    with pytest.raises(BadRequest, match='Invalid X-Policy "tin"'):
        check_values(c)
