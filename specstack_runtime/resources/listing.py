"""Lists: the spec's filters, sort keys and the API's pagination style.

Equality filters on indexed columns go to SQL; the others (RE2 regular
expressions, prefixes, list membership, time ranges) are applied to the rows
the database returned. Then the rows the caller may not see are dropped,
sorted, and a page is cut by `marker` and `limit` as the API pages.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import re2

from specstack_runtime import ir
from specstack_runtime.resources import access, joins, seeds
from specstack_runtime.resources.compiled import error
from specstack_runtime.resources.context import Doc, ResourceCall
from specstack_runtime.resources.views import only, render, requested_fields
from specstack_runtime.store import BATCH_ROWS
from specstack_runtime.storequery import Not, matches_value

Predicate = Callable[[Doc], bool]
PAGING = frozenset({"limit", "marker", "sort_key", "sort_dir", "sort", "page_reverse", "offset"})
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
#: The most a regular-expression filter may be (RE2 runs in linear time; this bounds memory).
MAX_PATTERN = 1024


def query_bool(
    rc: ResourceCall, param: str, raw: str | None = None, *, empty: bool | None = None
) -> bool | None:
    """A true/false query parameter (`raw`, else the request's; None if absent; `empty`:
    what a given but empty one means), or the resource's bad_filter error."""
    raw = rc.call.q(param) if raw is None else raw
    if raw is None:
        return None
    low = raw.strip().lower()
    if low in _TRUE or (low == "" and empty is True):
        return True
    if low in _FALSE or (low == "" and empty is False):
        return False
    raise rc.res.fail("bad_filter", field=param, value=raw, reason="expected true or false")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _getter(rc: ResourceCall, field: str) -> Callable[[Doc], Any]:
    """How a filter reads its field from a row: the stored value, or the computed one."""
    spec = rc.res.fields.get(field)
    if spec is not None and spec.computed:
        expr = next(e for n, e in rc.res.computed if n == field)
        return lambda d: expr.evaluate(**rc.variables(doc=rc.res.complete(d)))
    key = rc.res.key(field)
    return lambda d: d.get(key)


def _predicate(rc: ResourceCall, f: ir.ResourceFilter, values: list[str]) -> Predicate | None:
    op = f.op
    get = _getter(rc, f.field)
    if op == "ignore":
        return None
    if op in ("eq", "ieq"):
        fold = str.upper if op == "ieq" else str
        wanted = {fold(v) for v in values}

        def equal(d: Doc) -> bool:
            have = get(d)
            if have is None:
                return bool(wanted & {"None", "null", "NONE", "NULL"})
            items = have if isinstance(have, list) else [have]
            return any(fold(_text(x)) in wanted for x in items)

        return equal
    if op == "in":
        wanted = {v for raw in values for v in raw.split(",") if v}
        return lambda d: _text(get(d)) in wanted
    if op == "eq_or_in":  # glance's "VALUE" or "in:A,B,\"C,D\""
        one_of = {v for raw in values for v in _in_list(rc, f, raw)}
        return lambda d: _text(get(d)) in one_of
    if op == "compare":  # "gt:2024-01-01T00:00:00Z": gt, gte, eq, neq, lt, lte (eq by default)
        return _compare(rc, f, values[-1], get)
    if op == "subset":  # cinder's metadata={"k": "v"}: the object field holds each pair
        wanted_o = _json_object(rc, f, values[-1])
        return lambda d: _holds(get(d), wanted_o)
    if op == "bool":
        if values[-1].strip().lower() == "none":  # nova's is_public=None: no filter
            return None
        flag = query_bool(rc, f.param, values[-1])
        return lambda d: bool(get(d)) == flag
    if op == "prefix":
        return lambda d: any(_text(get(d)).startswith(v) for v in values)
    if op == "like":  # cinder's name~=VALUE: the value is in the field's, case folded
        parts = [v.casefold() for v in values]
        return lambda d: get(d) is not None and all(p in _text(get(d)).casefold() for p in parts)
    if op in ("all", "any", "not_all", "not_any"):
        # not_all: rows lacking one of the values at least; not_any: rows with none of them
        wanted_l = [v for raw in values for v in raw.split(",") if v]
        test = all if op in ("all", "not_all") else any
        negate = op.startswith("not_")

        def members(d: Doc) -> bool:
            have = get(d)
            have_set = {_text(x) for x in have} if isinstance(have, list) else {_text(have)}
            return test(w in have_set for w in wanted_l) != negate

        return members
    if op == "items":  # neutron's fixed_ips=ip_address=10.0.0.2: an item matching every key
        return _items(rc, f, values, get)
    if op == "regex":
        pattern = values[-1]
        if len(pattern) > MAX_PATTERN:
            raise rc.res.fail(
                "bad_filter", field=f.param, value=pattern[:32], reason="the pattern is too long"
            )
        try:
            compiled = re2.compile(pattern)
        except re2.error as exc:
            raise rc.res.fail(
                "bad_filter", field=f.param, value=pattern[:32], reason=str(exc)
            ) from None

        def matches(d: Doc) -> bool:
            have = get(d)
            items = have if isinstance(have, list) else [have]
            return any(compiled.search(_text(x)) is not None for x in items)

        return matches
    if op in ("gte", "lte") and _number(values[-1]) is not None:
        bound = _number(values[-1]) or 0
        if op == "gte":
            return lambda d: isinstance(get(d), int | float) and get(d) >= bound
        return lambda d: isinstance(get(d), int | float) and get(d) <= bound
    if op in ("gte", "lte") and values[-1] in ("", None):
        return None
    stamp = _time(rc, f, values[-1])
    if op in ("gte", "changes_since"):
        return lambda d: _text(get(d)) >= stamp
    return lambda d: _text(get(d)) <= stamp


def _json_object(rc: ResourceCall, f: ir.ResourceFilter, raw: str) -> dict[str, str]:
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise rc.res.fail(
            "bad_filter", field=f.param, value=raw[:64], reason="expected a JSON object"
        )
    return {str(k): _text(v) for k, v in parsed.items()}


def _holds(have: Any, wanted: dict[str, str]) -> bool:
    return isinstance(have, dict) and all(
        k in have and _text(have[k]) == v for k, v in wanted.items()
    )


_ITEM_TESTS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda have, want: have == want,
    "contains": lambda have, want: want in have,
    "prefix": lambda have, want: have.startswith(want),
}


def _items(
    rc: ResourceCall, f: ir.ResourceFilter, values: list[str], get: Callable[[Doc], Any]
) -> Predicate:
    """`KEY=VALUE` values against the items (objects) of a list field: a row matches when
    one item matches every key given (any of a key's values)."""
    wanted: dict[str, list[str]] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or key not in f.keys:
            expected = ", ".join(f"{k}=" for k in f.keys)
            raise rc.res.fail("bad_filter", field=f.param, value=raw, reason=f"expected {expected}")
        wanted.setdefault(key, []).append(value)
    tests = [(f.keys[k][0], _ITEM_TESTS[f.keys[k][1]], options) for k, options in wanted.items()]

    def item_matches(item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        return all(
            any(test(_text(item.get(field)), o) for o in options) for field, test, options in tests
        )

    def matches(d: Doc) -> bool:
        have = get(d)
        return isinstance(have, list) and any(item_matches(i) for i in have)

    return matches


def _in_list(rc: ResourceCall, f: ir.ResourceFilter, raw: str) -> list[str]:
    if not raw.startswith("in:"):
        return [raw]
    try:
        return next(csv.reader([raw[3:]], skipinitialspace=True), [])
    except csv.Error:
        raise rc.res.fail(
            "bad_filter", field=f.param, value=raw, reason="a bad 'in:' list"
        ) from None


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _compare(
    rc: ResourceCall, f: ir.ResourceFilter, raw: str, get: Callable[[Doc], Any]
) -> Predicate:
    op, sep, value = raw.partition(":")
    if not sep or op not in _COMPARE:
        if op in _COMPARE or not raw[:1].isdigit():
            raise rc.res.fail(
                "bad_filter", field=f.param, value=raw, reason="expected OPERATOR:VALUE"
            )
        op, value = "eq", raw
    test = _COMPARE[op]
    number = _number(value)
    if number is not None:
        return lambda d: isinstance(get(d), int | float) and test(get(d), number)  # type: ignore[arg-type]
    stamp = _time(rc, f, value)
    return lambda d: get(d) is not None and test(_text(get(d)), stamp)


def _number(raw: str) -> float | None:
    try:
        return float(raw) if len(raw) <= 24 else None
    except ValueError:
        return None


def _time(rc: ResourceCall, f: ir.ResourceFilter, raw: str) -> str:
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        if raw.lstrip("-").isdigit():
            return raw
        raise rc.res.fail(
            "bad_filter", field=f.param, value=raw, reason="expected an ISO 8601 time"
        ) from None
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def filters(rc: ResourceCall) -> tuple[dict[str, Any], list[Predicate]]:
    """(equality conditions for SQL, predicates on the rows) from the query string."""
    res = rc.res
    sql: dict[str, Any] = dict(rc.parents())
    preds: list[Predicate] = []
    given = {f.param: [f.default] for f in res.filters.values() if f.default is not None}
    for param, values in {**given, **rc.call.query}.items():
        f = res.filters.get(param)
        if f is None or not values or not rc.reached(f.since):
            continue
        if any("\x00" in v for v in values):
            raise res.fail("bad_filter", field=param, value="", reason="it contains a NUL")
        if f.values is not None and rc.reached(f.values_since):
            fold = str.upper if f.op == "ieq" else str
            wrong = next((v for v in values if fold(v) not in f.values), None)
            if wrong is not None and f.invalid:
                raise error(400, f.invalid.format(field=param, value=wrong), "BadRequest")
            if wrong is not None:
                raise res.fail(
                    "bad_filter", field=param, value=wrong, reason="expected " + ", ".join(f.values)
                )
        pushed = f.op == "eq" and res.key(f.field) in res.indexes and len(values) == 1
        pred = None if pushed else _predicate(rc, f, values)  # checks the value for everyone
        if f.requires and not rc.allows(f.requires):
            raise res.fail("filter_forbidden", field=param, rule=f.requires.removeprefix("rule:"))
        if (
            f.visible
            and not rc.allows(f.visible)
            and not (f.open_since and rc.reached(f.open_since))
        ):
            continue  # ... but applies only for callers the rule allows
        if pushed and values[0] not in ("None", "null"):
            sql[res.key(f.field)] = values[0]
        elif pred is not None:
            preds.append(pred)
        elif pushed:
            preds.append(_predicate(rc, f, values) or (lambda d: True))
    return sql, preds


def _count_param(rc: ResourceCall, name: str) -> int | None:
    """A non-negative count from the query (`limit`, `offset`), None when absent; a bad
    one is the resource's `bad_<name>` error."""
    raw = rc.call.q(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or len(raw) > 12:
        raise rc.res.fail(f"bad_{name}", value=raw)
    return value


def _limit(rc: ResourceCall) -> int | None:
    limit = _count_param(rc, "limit")
    if limit is None:
        return rc.res.conventions.default_limit
    return min(limit, rc.res.conventions.max_limit) if limit else None


def _sort_order(rc: ResourceCall) -> list[tuple[str, bool]]:
    keys = list(rc.call.query.get("sort_key", []))
    dirs = list(rc.call.query.get("sort_dir", []))
    if (keys or dirs) and rc.call.query.get("sort"):
        raise rc.res.fail("bad_sort", value="sort", field="sort with sort_key or sort_dir")
    for part in ",".join(rc.call.query.get("sort", [])).split(","):
        if part:
            key, _, direction = part.partition(":")
            keys.append(key)
            dirs.append(direction or rc.res.conventions.sort_dir)
    named = rc.res.res.sort_keys or {k: k for k in (*rc.res.fields, "created_at", "updated_at")}
    for key in keys:
        if key not in named or not rc.reached(rc.res.res.sort_since.get(key)):
            raise rc.res.fail("bad_sort", value=key, field="sort_key")
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise rc.res.fail("bad_sort", value=direction, field="sort_dir")
    if not keys:
        for spec in rc.res.res.default_sort:
            key, _, direction = spec.partition(":")
            keys.append(key)
            dirs.append(direction or "asc")
    dirs += [dirs[-1] if dirs else rc.res.conventions.sort_dir] * (len(keys) - len(dirs))
    return [(rc.res.key(named.get(k, k)), d == "desc") for k, d in zip(keys, dirs, strict=False)]


def _sorted(rows: list[Doc], order: list[tuple[str, bool]]) -> list[Doc]:
    out = list(rows)
    for key, reverse in reversed(order):
        out.sort(key=_sort_key(key), reverse=reverse)
    return out


def _sort_key(key: str) -> Callable[[Doc], tuple[bool, str]]:
    """Missing values last; numbers in numeric order (zero-padded), the rest as text."""

    def get(d: Doc) -> tuple[bool, str]:
        value = d.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return (False, f"{value:020d}")
        return (value is None, _text(value))

    return get


async def visible_rows(rc: ResourceCall) -> list[Doc]:
    """Every row the caller may list, filtered and sorted (before paging)."""
    res = rc.res
    if res.res.rows:
        await seeds.ensure(rc)
    sql, preds = filters(rc)
    selected(rc, sql, preds)
    every = access.sees_all(rc)
    if res.res.list_all:
        rule = res.res.list_all_rule
        every = (rc.allows(rule) if rule else every) and _asks_for_all(rc, res.res.list_all)
    owner = res.owner_field
    if not every and res.shared is None and owner and owner not in sql and (mine := rc.owner_id()):
        sql[owner] = mine  # it sees its own rows only: the database picks them
    rows = await rc.store.list(res.res.table, sql)
    others = [] if every else [d for d in rows if not access.owns(rc, d)]
    parents = await _parents(rc, others)
    out: list[Doc] = []
    for d in rows:
        if not (every or access.owns(rc, d)):
            parent = parents.get(str(d.get(res.key(res.res.parent)))) if res.res.parent else None
            if not access.shared(rc, d, parent):
                continue
        if preds and not all(p(d) for p in preds):
            continue
        if res.list_where is not None and not res.list_where.evaluate(
            **rc.variables(doc=res.complete(d))
        ):
            continue
        out.append(d)
    return _sorted(out, _sort_order(rc))


_SELECT_OPS = ("eq", "not", "in")


def selected(rc: ResourceCall, sql: dict[str, Any], preds: list[Predicate]) -> None:
    """The spec's `list.select` for this request (once, not once a row): each field's
    condition into the store's filter, so that the database returns only those rows (a
    project's live servers, not every server it deleted); a field a query parameter
    already filters gets the condition as a predicate beside it."""
    select = rc.res.list_select
    if select is None:
        return
    found = select.evaluate(**rc.variables())
    if not isinstance(found, dict):
        raise RuntimeError(f"list.select of {rc.res.name} gave {found!r}, not a map")
    for field, test in found.items():
        if not (isinstance(test, dict) and len(test) == 1 and next(iter(test)) in _SELECT_OPS):
            raise RuntimeError(
                f"list.select of {rc.res.name}: {field}: {test!r} is not one of "
                "{'eq': V}, {'not': V}, {'in': [V, ...]}"
            )
        ((op, value),) = test.items()
        wanted = Not(value) if op == "not" else list(value) if op == "in" else value
        key = rc.res.key(str(field))
        if key in sql:
            preds.append(_holds_value(key, wanted))
        else:
            sql[key] = wanted


def _holds_value(key: str, wanted: Any) -> Predicate:
    return lambda d: matches_value(d.get(key), wanted)


async def _parents(rc: ResourceCall, rows: list[Doc]) -> dict[str, Doc]:
    """The parent rows `rows` name, by id, in one read (none when the caller owns them all)."""
    name = rc.res.res.parent
    if not name:
        return {}
    ids = sorted({str(d[rc.res.key(name)]) for d in rows if d.get(rc.res.key(name)) is not None})
    if not ids:
        return {}
    ref = rc.res.fields[name].ref
    assert ref is not None
    other = rc.of(ref.resource)
    out: dict[str, Doc] = {}
    for at in range(0, len(ids), BATCH_ROWS):
        found = await other.store.list(other.res.res.table, {"id": ids[at : at + BATCH_ROWS]})
        out.update((r["id"], other.res.complete(r)) for r in found)
    return out


def _asks_for_all(rc: ResourceCall, param: str) -> bool:
    """nova's all_tenants: given (empty, or a true value) lists every owner's rows."""
    return bool(query_bool(rc, param, empty=True))


def _offset(rc: ResourceCall) -> int:
    return _count_param(rc, "offset") or 0


def _paged(rc: ResourceCall) -> bool:
    """Whether the request's microversion pages the list: `list.since` of `limit` reached
    (before it, every row: nova's key pairs before 2.35, not its default limit)."""
    return rc.reached(rc.res.res.list_since.get("limit"))


def _marker_of(rc: ResourceCall, row: Doc) -> Any:
    """What a marker names a row by: its id, or the resource's `marker` field."""
    field = rc.res.res.marker
    return row["id"] if field is None else _text(row.get(rc.res.key(field)))


def _page(rc: ResourceCall, rows: list[Doc]) -> tuple[list[Doc], bool]:
    if not _paged(rc):
        return rows, False
    marker = rc.call.q("marker")
    reverse = (rc.call.q("page_reverse") or "").lower() in _TRUE
    if marker is not None:
        ids = [_marker_of(rc, r) for r in rows]
        if marker not in ids:
            raise rc.res.fail("bad_marker", value=marker)
        at = ids.index(marker)
        rows = rows[:at] if reverse else rows[at + 1 :]
    if rc.res.conventions.offset:
        rows = rows[_offset(rc) :]
    limit = _limit(rc)
    more = limit is not None and len(rows) > limit
    if limit is not None:
        rows = rows[-limit:] if reverse else rows[:limit]
    return rows, more


def _next_href(rc: ResourceCall, marker: str) -> str:
    skip = ("marker", "offset") if rc.res.conventions.offset else ("marker",)
    query = [(k, v) for k, vs in rc.call.query.items() if k not in skip for v in vs]
    query.append(("marker", marker))
    return f"{rc.base}{rc.call.path}?{urlencode(query)}"


def versioned_query(rc: ResourceCall) -> None:
    """The request's query as its microversion has it: parameters a later version brings
    (`list.since`) dropped, and from `list.strict_since` any the list does not know refused."""
    res = rc.res.res
    if rc.call.microversion is None or not (res.list_since or res.list_strict_since):
        return
    query = rc.call.query
    too_new = {p for p, v in res.list_since.items() if not rc.reached(v) and p in query}
    if too_new:
        rc.call.query = query = {k: v for k, v in query.items() if k not in too_new}
    if res.list_strict_since and rc.reached(res.list_strict_since):
        known = PAGING | rc.res.filters.keys() | res.list_since.keys() | {res.list_all}
        for param in sorted(query.keys() - known):
            raise rc.res.fail(
                "bad_query",
                field=param,
                value=(query[param] or [""])[0][:64],
                reason=f"Additional properties are not allowed ('{param}' was unexpected)",
            )


async def answer(rc: ResourceCall) -> Any:
    """The list operation's body, in the API's pagination style."""
    res = rc.res
    versioned_query(rc)
    counted = _counted(rc)
    every = await visible_rows(rc)
    rows, more = _page(rc, every)
    await joins.load(rc, rows)
    wanted = requested_fields(rc)
    items: list[Any] = [only(render(rc, d), wanted) for d in rows]
    if res.res.envelope_item:
        items = [{res.res.envelope_item: item} for item in items]
    many = res.res.envelope_many
    style = res.conventions.pagination
    body: dict[str, Any] = {many: items}
    last = _marker_of(rc, rows[-1]) if rows else None
    if style == "keystone":
        body["links"] = {"self": f"{rc.base}{rc.call.path}", "previous": None, "next": None}
        if more:
            body["truncated"] = True
    elif style in ("nova", "cinder", "neutron"):
        limit = _limit(rc) if _paged(rc) else None
        full_page = style != "neutron" and limit is not None and len(rows) == limit
        if (more or full_page) and last is not None:
            reverse = (rc.call.q("page_reverse") or "").lower() in _TRUE
            edge = _marker_of(rc, rows[0]) if reverse else last
            rel = "previous" if reverse else "next"
            body[f"{many}_links"] = [{"rel": rel, "href": _next_href(rc, str(edge))}]
    elif style == "glance":
        body["first"] = rc.call.path
        body["schema"] = f"/v2/schemas/{many}"
        if more and last is not None:
            kept = [(k, v) for k, vs in rc.call.query.items() if k != "marker" for v in vs]
            if "limit" not in rc.call.query:
                kept.append(("limit", str(_limit(rc))))
            body["next"] = f"{rc.call.path}?{urlencode([*kept, ('marker', last)])}"
    if counted:
        body["count"] = len(every)
    return body


def _counted(rc: ResourceCall) -> bool:
    """Whether the request asks for the count of every matching row (`list.count`)."""
    count = rc.res.res.list_count
    if count is None or not rc.reached(count.since):
        return False
    return bool(query_bool(rc, count.param))
