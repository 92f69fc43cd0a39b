"""Rows a resource always has (its `rows:`): created the first time one is missing."""

from __future__ import annotations

from contextlib import suppress

from specstack_runtime.errors import ApiError
from specstack_runtime.resources.context import ResourceCall


async def ensure(rc: ResourceCall) -> None:
    table = rc.res.res.table
    for row in rc.res.res.rows:
        if await rc.store.get(table, str(row["id"])) is not None:
            continue
        with suppress(ApiError):  # created meanwhile by another process
            await rc.store.create(table, rc.res.complete(dict(row)))
