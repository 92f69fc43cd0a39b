"""Rows a resource always has: its `rows:`, created the first time one is missing; and its
`seed:`, rows computed from the spec and the configuration, written at start-up."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from specstack_runtime.errors import ApiError
from specstack_runtime.expr import compile_expr
from specstack_runtime.resources.compiled import Compiled
from specstack_runtime.resources.context import Doc, ResourceCall
from specstack_runtime.resources.hashing import bcrypt_hash, bcrypt_matches
from specstack_runtime.resources.ids import stable_id
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store

#: The project a seed's `catalog` is for: its URLs are keystone's templates.
TEMPLATE_PROJECT = "%(project_id)s"


async def seed(store: Store, res: Compiled) -> None:
    """Create the resource's rows that are missing (at a start-up or a first read)."""
    for row in res.res.rows:
        if await store.get(res.res.table, str(row["id"])) is not None:
            continue
        with suppress(ApiError):  # created meanwhile by another process
            await store.create(res.res.table, res.complete(dict(row)))


async def ensure(rc: ResourceCall) -> None:
    await seed(rc.store, rc.res)


async def seed_api(rt: ServiceRuntime, store: Store, api: str) -> None:
    """Every resource of `api`, in the spec's order: its `rows:` and its `seed:`."""
    given: dict[str, list[Doc]] = {}
    for res in rt.info.resources.resources.values():
        if res.res.api == api:
            await seed(store, res)
            given[res.name] = [dict(r) for r in res.res.rows] + await sync(rt, store, res, given)


def variables(rt: ServiceRuntime, res: Compiled, given: dict[str, list[Doc]]) -> dict[str, Any]:
    """What a `seed` expression sees: the stack's catalog (URLs of any project), its
    components, the configuration's plain settings, the resource's `data` and the rows
    seeded before it (`seeds`, by resource)."""
    settings = rt.config.model_dump()
    return {
        "catalog": rt.info.catalog(rt.config, TEMPLATE_PROJECT),
        "components": rt.info.components,
        "config": {k: v for k, v in settings.items() if isinstance(v, str | int | float | bool)},
        "data": res.res.data,
        "seeds": given,
    }


async def sync(
    rt: ServiceRuntime, store: Store, res: Compiled, given: dict[str, list[Doc]]
) -> list[Doc]:
    """Write the rows the resource's `seed` gives: a missing one is created, the fields a
    seeded one names are set again where they differ (a hashed one where it no longer
    matches), and with `exact` the table's other rows go. Safe from several instances at
    once (the ids are the seed's). The rows, as the seed gave them."""
    spec = res.res.seed
    if spec is None:
        return []
    rows: list[Doc] = list(compile_expr(spec.rows).evaluate(**variables(rt, res, given)))
    style = res.res.id_style
    for row in rows:
        if "id" not in row and style.startswith("fields:"):
            row["id"] = stable_id(res.name, (row.get(f) for f in style[7:].split(",")))
    have = {d["id"]: d for d in await store.list(res.res.table)}
    await asyncio.gather(*(_write(rt, store, res, row, have.get(row["id"])) for row in rows))
    if spec.exact:
        for gone in have.keys() - {row["id"] for row in rows}:
            await store.delete(res.res.table, gone)
    return rows


async def _write(
    rt: ServiceRuntime, store: Store, res: Compiled, row: Doc, old: Doc | None
) -> None:
    new = dict(row)
    for f in res.res.fields:
        if f.hash and f.name in new:
            secret, target = str(new.pop(f.name)), f.store_as or f"{f.name}_hash"
            if old is None or not await bcrypt_matches(secret, old.get(target)):
                new[target] = await bcrypt_hash(rt.config.bcrypt_rounds, secret)
    if old is None:
        with suppress(ApiError):  # another instance wrote it meanwhile
            await store.create(res.res.table, res.complete(new))
    elif any(old.get(k) != v for k, v in new.items()):
        await store.update(res.res.table, row["id"], new)
