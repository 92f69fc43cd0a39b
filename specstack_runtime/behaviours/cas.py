"""Compare-and-set updates: change a stored document only if nobody changed it meanwhile."""

from __future__ import annotations

from collections.abc import Callable

from specstack_runtime.store import Doc, Store

MAX_ATTEMPTS = 50


async def update_cas(
    store: Store,
    table: str,
    id_: str,
    change: Callable[[Doc], Doc | None],
    *,
    revision: str,
    conflict: Callable[[str], Exception],
) -> Doc | None:
    """Apply `change(doc)` (the changes, or None for none) with compare-and-set retries.

    The update succeeds only if the changed fields, `updated_at` and the revision
    counter `revision` still hold what was read; the counter goes up by one. None:
    the document does not exist. After MAX_ATTEMPTS lost races, `conflict(message)`
    is raised.
    """
    for _ in range(MAX_ATTEMPTS):
        doc = await store.get(table, id_)
        if doc is None:
            return None
        changes = change(doc)
        if not changes:
            return doc
        expect = {k: doc.get(k) for k in changes}
        expect["updated_at"] = doc.get("updated_at")
        expect[revision] = doc.get(revision)
        changes = {**changes, revision: int(doc.get(revision) or 0) + 1}
        new = await store.update(table, id_, changes, expect=expect)
        if new is not None:
            return new
    raise conflict(f"{table} {id_} is being changed concurrently; try again.")
