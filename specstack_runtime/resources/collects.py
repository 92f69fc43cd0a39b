"""Fields that list the rows referring to a row (a network's `subnets`, or with `rows` the rows
themselves: a security group's rules), kept by the engine."""

from __future__ import annotations

from specstack_runtime.resources.context import Doc, ResourceCall

#: Compare-and-set attempts on a row whose list others change at the same time.
ATTEMPTS = 8


async def _change(rc: ResourceCall, doc: Doc, *, add: bool) -> None:
    for other, f in rc.catalog.collectors(rc.res.name):
        assert f.collect is not None
        owner_id = doc.get(f.collect.field)
        if owner_id is None:
            continue
        target = rc.of(other.name)
        table = other.res.table
        for _ in range(ATTEMPTS):
            row = await target.store.get(table, str(owner_id))
            if row is None:
                break
            ids = list(row.get(f.name) or [])
            held = [i["id"] if isinstance(i, dict) else i for i in ids]
            if add == (doc["id"] in held):
                break
            item = rc.res.complete(doc) if f.collect.rows else doc["id"]
            ids = (
                [*ids, item]
                if add
                else [i for i, h in zip(ids, held, strict=True) if h != doc["id"]]
            )
            if await target.store.update(
                table, row["id"], {f.name: ids}, expect={f.name: row.get(f.name)}, current=row
            ):
                break


async def added(rc: ResourceCall, doc: Doc) -> None:
    await _change(rc, doc, add=True)


async def removed(rc: ResourceCall, doc: Doc) -> None:
    await _change(rc, doc, add=False)
