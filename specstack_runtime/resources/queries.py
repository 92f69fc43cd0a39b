"""Computed queries: an answer derived from rows of several resources by CEL expressions.

`from` names the rows (those the caller may see, filtered by the resource's list
filters); each `join` finds, for every row, the rows of another resource whose
`on` field holds the row's id: a map by their `key` field (of their `value`
field, or the sum of `sum` per key, or the whole row), or without `key` a list
of them. `where` (with `row` and `join`) keeps the rows it holds for; `answer`
shapes the body from the rendered `rows` and `params`. `require` names rows that
must exist for the query to answer (404 otherwise). `ask` calls another API first (with
the caller's token): its JSON answer is `reply` (nova's view of neutron's ports). An
answer of null is the query's `empty` error (nova: a volume the server does not have).
An answer may read `catalog`: the stack's service catalog for the caller's project.
`refuse` rules and a policy `target` judge the parameters before anything is read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from specstack_runtime import ir
from specstack_runtime.context import Reply
from specstack_runtime.expr import ExprError, compile_expr
from specstack_runtime.http import error_message
from specstack_runtime.messaging import api_error
from specstack_runtime.resources import access, joins, listing
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall
from specstack_runtime.resources.views import render

#: The forms a `datetime` parameter takes (nova's), with or without a trailing Z.
DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S.%fZ",
)


def _params(rc: ResourceCall, query: ir.Query) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in query.params:
        raw = rc.call.q(p.name)
        if raw is None:
            if p.required:
                raise rc.res.fail("bad_filter", field=p.name, value="", reason="it is required")
            out[p.name] = p.default
            continue
        try:
            out[p.name] = _parse(p.parse, raw)
        except ValueError as exc:
            raise rc.res.fail("bad_filter", field=p.name, value=raw[:64], reason=str(exc)) from None
    return out


def _parse(kind: str, raw: str) -> Any:
    if kind == "int":
        if len(raw) > 18:
            raise ValueError("the number is too large")
        return int(raw)
    if kind == "bool":
        low = raw.lower()
        if low not in ("true", "false", "1", "0"):
            raise ValueError("expected true or false")
        return low in ("true", "1")
    if kind == "flag":  # keystone's: present is true unless it says otherwise
        return raw.strip().lower() not in ("0", "false", "no", "off")
    if kind == "list":
        return [v for v in raw.split(",") if v]
    if kind == "datetime":  # a UTC time as OpenStack writes them; RFC 3339 for CEL's timestamp()
        for fmt in DATETIME_FORMATS:
            try:
                return datetime.strptime(raw, fmt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            except ValueError:
                pass
        raise ValueError("Datetime is in invalid format")
    if kind == "pairs":
        out: dict[str, int] = {}
        for part in raw.split(","):
            key, sep, value = part.partition(":")
            if not key or not sep or not value.strip().lstrip("-").isdigit() or len(value) > 18:
                raise ValueError(f"{part!r} is not NAME:AMOUNT")
            out[key.strip()] = int(value)
        return out
    return raw


async def _join(rc: ResourceCall, join: ir.QueryJoin) -> dict[str, Any]:
    """Row id -> what the join attaches to it."""
    other = rc.of(join.resource)
    out: dict[str, Any] = {}
    for r in await other.store.list(other.res.res.table):
        owner = str(r.get(join.on))
        if join.key is None:
            out.setdefault(owner, []).append(r)
            continue
        slot = out.setdefault(owner, {})
        key = str(r.get(join.key))
        if join.sum:
            slot[key] = slot.get(key, 0) + (r.get(join.sum) or 0)
        elif join.value:
            slot[key] = r.get(join.value)
        else:
            slot[key] = r
    return out


async def required(rc: ResourceCall, needs: tuple[ir.QueryRequire, ...]) -> None:
    """404 (the other resource's) unless each row `needs` names is there for the caller."""
    for need in needs:
        other = rc.of(need.resource)
        row_id = str(compile_expr(need.id).evaluate(**rc.variables()))
        deleted = rc.reached(need.deleted) if isinstance(need.deleted, str) else need.deleted
        await access.lookup(other, row_id, deleted=deleted)


def _check(rc: ResourceCall, query: ir.Query, params: dict[str, Any]) -> None:
    """The query's refusals, then its policy target (keystone's `user.id`)."""
    names = rc.variables(params=params)
    for rule in query.refuse:
        if compile_expr(rule.when).evaluate(**names):
            raise error(rule.error.status or 400, rule.error.message, rule.error.kind)
    if query.target is not None:
        rc.call.authorize(compile_expr(query.target).evaluate(**names))


async def answer(rc: ResourceCall, query: ir.Query) -> Reply:
    await required(rc, query.require)
    params = _params(rc, query)
    _check(rc, query, params)
    joined = {j.name: await _join(rc, j) for j in query.joins}
    tables: dict[str, list[Doc]] = {}
    for var, name in query.tables.items():
        other = rc.of(name)
        tables[var] = [
            r for r in await other.store.list(other.res.res.table) if access.visible(other, r)
        ]
    answer_expr = compile_expr(query.answer)
    rows: list[Doc] = []
    if "rows" not in answer_expr.uses:  # an answer from `reply` or `tables`: no rows read
        source: list[Doc] = []
    else:
        source = await listing.visible_rows(rc) if query.filters else await _all_visible(rc)
    where = compile_expr(query.where) if query.where else None
    await joins.load(rc, source)  # the rows of other resources their fields read
    for doc in source:
        row = render(rc, doc)
        if where is not None:
            join = {
                j.name: joined[j.name].get(str(doc["id"]), {} if j.key else []) for j in query.joins
            }
            try:
                keep = bool(
                    where.evaluate(**rc.variables(row=row, join=join, params=params, tables=tables))
                )
            except ExprError:
                keep = False  # a row the expression cannot judge (a missing key) is no match
            if not keep:
                continue
        rows.append(row)
    names = rc.variables(rows=rows, params=params, tables=tables)
    if "catalog" in answer_expr.uses:  # the stack's, as a token of the caller's project has it
        rt = rc.call.rt
        names["catalog"] = rt.info.catalog(rt.config, rc.call.require_auth().project_id or "")
    reply = await _ask(rc, query.ask, names) if query.ask else None
    body = answer_expr.evaluate(**names, reply=reply)
    if body is None and query.empty is not None:
        text = fill(query.empty.message, rc.call.path_params)
        raise error(query.empty.status or 404, text, query.empty.kind)
    return Reply(query.status, body)


async def _ask(rc: ResourceCall, ask: ir.QueryAsk, names: dict[str, Any]) -> Any:
    """Another API's JSON answer, asked with the caller's token ({} when an optional one
    cannot answer; else its error is the caller's)."""
    rt = rc.call.rt
    path = compile_expr(ask.path).evaluate(**names) if ask.path else {}
    query = compile_expr(ask.query).evaluate(**names) if ask.query else None
    try:
        resp = await rt.clients.call(
            rt.info.api_of_type(ask.api), ask.operation, path, query=query, token=rc.call.token
        )
        if resp.status_code < 300:
            return resp.json()
        failure: Exception = error(resp.status_code, error_message(resp))
    except Exception as exc:
        failure = exc
    if ask.optional:
        return {}  # (a null variable is unbound in CEL)
    raise api_error(failure, f"The {ask.api} API") from failure


async def _all_visible(rc: ResourceCall) -> list[Doc]:
    return [d for d in await rc.store.list(rc.res.res.table) if access.visible(rc, d)]
