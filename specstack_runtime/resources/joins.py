"""Rows of other resources a resource's answers read (`joins:`): read once per call, before
the rows are rendered, and handed to its computed fields as `join.NAME`."""

from __future__ import annotations

from collections.abc import Iterable

from specstack_runtime.resources.context import Doc, ResourceCall
from specstack_runtime.resources.views import join_key, past_view, render


async def load(rc: ResourceCall, docs: Iterable[Doc]) -> None:
    """Read the joined rows `docs` name (each distinct value once) into `rc.joined`."""
    joins = rc.res.res.joins
    if not joins or not _read(rc):
        return
    docs = list(docs)
    for name, join in joins.items():
        found = rc.joined.setdefault(name, {})
        other = rc.of(join.resource)
        # a joined row shows none of its own joins (a resource joined with itself: cinder's
        # backup and the incremental one made from it)
        other.joined.update({n: {} for n in other.res.res.joins})
        for key in {k for d in docs if (k := join_key(rc, join.on, d)) is not None} - found.keys():
            rows = await other.store.list(other.res.res.table, {other.res.key(join.by): key})
            if rows:
                found[key] = render(other, rows[0])


def _read(rc: ResourceCall) -> bool:
    """Whether a field of the operation's view reads `join`."""
    view = None if past_view(rc) else rc.call.args.get("view")
    picks = rc.res.res.views.get(str(view)) if view else None
    names = {e.partition("=")[2] or e.partition("=")[0] for e in picks} if picks else None
    absent = rc.res.absent_at(rc.call.microversion)
    return any(
        "join" in e.uses and n not in absent and (names is None or n in names)
        for n, e in rc.res.computed
    )
