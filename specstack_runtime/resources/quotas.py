"""Quotas: what a project's rows of a resource use, and the limit a create must stay within.

A create counts the owner's rows (or sums the quota's `count` expression over
them) and refuses when the new row would exceed the limit. Counting and
inserting run under one lock per quota and project in this process, and the
count is taken again after the insert, so concurrent creates anywhere cannot
overrun it: the later row goes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from specstack_runtime import ir
from specstack_runtime.expr import compile_expr
from specstack_runtime.resources.context import Doc, ResourceCall

_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}


def limit_of(rc: ResourceCall, quota: ir.Quota) -> int:
    """The default limit: the configured one (SPECSTACK_QUOTAS) or the spec's default."""
    return int(rc.configured_quotas.get(quota.name, quota.default))


async def project_limit(rc: ResourceCall, quota: ir.Quota, owner: str) -> int:
    """The owner's limit: its own (the quota's `limits` resource's row of the project,
    nova's os-quota-sets), else the default."""
    if quota.limits:
        key = (quota.limits, owner)
        row = rc.limit_rows.get(key)
        if row is None:
            sets = rc.of(quota.limits)
            row = rc.limit_rows[key] = await sets.store.get(sets.res.res.table, owner) or {}
        if row.get(quota.name) is not None:
            return int(row[quota.name])
    return limit_of(rc, quota)


def _amount(quota: ir.Quota, rc: ResourceCall, doc: Doc) -> int:
    if not quota.count:
        return 1
    return int(compile_expr(quota.count).evaluate(**rc.variables(doc=doc)))


async def usage(rc: ResourceCall, quota: ir.Quota, owner: str) -> int:
    """What the owner's live rows use (soft-deleted ones, by the resource's `live`, do not)."""
    where: dict[str, Any] = {rc.res.owner_field or "project_id": owner}
    live, live_where = rc.res.live, rc.res.live_where
    if live_where is not None:  # the live rows are a store filter: counted by the database
        where.update(live_where)
        if not quota.count:
            return await rc.store.count(rc.res.res.table, where)
    rows = await rc.store.list(rc.res.res.table, where)
    if live is not None and live_where is None:
        rows = [r for r in rows if live.evaluate(**rc.variables(doc=r))]
    return sum(_amount(quota, rc, r) for r in rows)


def of_resource(rc: ResourceCall) -> list[ir.Quota]:
    """Every quota the spec counts on this resource's rows."""
    return [q for q in rc.catalog.quotas.values() if q.resource == rc.res.name]


def lock(quota: ir.Quota, owner: str) -> asyncio.Lock:
    key = (quota.name, owner)
    found = _LOCKS.get(key)
    if found is None:
        found = _LOCKS[key] = asyncio.Lock()
    return found


def quota_of(rc: ResourceCall) -> ir.Quota | None:
    name = rc.res.res.quota
    return rc.catalog.quotas.get(name) if name else None


async def room(rc: ResourceCall, quota: ir.Quota, doc: Doc) -> int | None:
    """How many more rows like `doc` the owner's limit lets in (None: no limit)."""
    owner = str(doc.get(rc.res.owner_field or "project_id") or "")
    limit = await project_limit(rc, quota, owner)
    if limit < 0:
        return None
    wanted = _amount(quota, rc, doc)
    left = limit - await usage(rc, quota, owner)
    return left // wanted if wanted > 0 else None


async def check(
    rc: ResourceCall, quota: ir.Quota, doc: Doc, *, inserted: bool, times: int = 1
) -> None:
    """Refuse `doc` (`times` rows like it) if the owner's usage with it exceeds the limit."""
    owner = str(doc.get(rc.res.owner_field or "project_id") or "")
    limit = await project_limit(rc, quota, owner)
    if limit < 0:
        return
    used = await usage(rc, quota, owner)
    wanted = _amount(quota, rc, doc) * times
    total = used if inserted else used + wanted
    if total > limit:
        if inserted:
            await rc.store.delete(rc.res.res.table, doc["id"])
            used -= wanted
        raise rc.res.fail(
            "over_quota", quota.over, quota=quota.name, requested=wanted, used=used, limit=limit
        )


async def check_change(rc: ResourceCall, quota: ir.Quota, old: Doc, new: Doc) -> None:
    """Refuse a change of a counted row (cinder's os-extend) that would exceed the limit."""
    owner = str(old.get(rc.res.owner_field or "project_id") or "")
    limit = await project_limit(rc, quota, owner)
    if limit < 0:
        return
    more = _amount(quota, rc, new) - _amount(quota, rc, old)
    if more <= 0:
        return
    used = await usage(rc, quota, owner)
    if used + more > limit:
        raise rc.res.fail(
            "over_quota", quota.over, quota=quota.name, requested=more, used=used, limit=limit
        )
