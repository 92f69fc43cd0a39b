"""Rows a resource always has (its `rows:`): created the first time one is missing."""

from __future__ import annotations

from contextlib import suppress

from specstack_runtime.errors import ApiError
from specstack_runtime.resources.compiled import Compiled
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.store import Store


async def seed(store: Store, res: Compiled) -> None:
    """Create the resource's rows that are missing (at a start-up or a first read)."""
    for row in res.res.rows:
        if await store.get(res.res.table, str(row["id"])) is not None:
            continue
        with suppress(ApiError):  # created meanwhile by another process
            await store.create(res.res.table, res.complete(dict(row)))


async def ensure(rc: ResourceCall) -> None:
    await seed(rc.store, rc.res)
