"""Rows of other resources a resource's rules read: its `relations` (spec/resources).

A relation names the other resource and how the row is found from the row at hand
(`doc`, and the relations found before it as `refs`): by `id`, or the first row whose
fields `match` the values given. A null or empty value finds nothing; `visible` keeps
only a row the caller sees, `when` (CEL over `row`) only a row it holds for. What is
found is `refs.NAME` in the `refuse` rules and templates (nova's createServer: the
flavor, the key pair, the server group a request names); a `many` relation finds every
matching row, a list (neutron's port: its network's subnets).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from specstack_runtime.expr import Bound, compile_expr, reads_of
from specstack_runtime.grouped import values_in
from specstack_runtime.resources import access
from specstack_runtime.resources.context import Doc, ResourceCall


async def load(rc: ResourceCall, doc: Doc, only: Collection[str] | None = None) -> dict[str, Any]:
    """Each relation's row for `doc` into `rc.refs` (left out when there is none); a `many`
    relation's rows as a list (empty when there are none). `only`: those named."""
    relations = [r for r in rc.res.res.relations if only is None or r.name in only]
    # the keys that read no `refs` (most: the row's own fields) found in one evaluation
    # first; one failing, or reading what a relation before found, each in its turn
    texts = [t for r in relations for t in ([r.id] if r.id is not None else r.match.values())]
    early = tuple(dict.fromkeys([t for t in texts if "refs" not in compile_expr(t).uses]))
    got = values_in(early, Bound(reads_of(early), **rc.variables(doc=doc))) if early else None
    known = dict(zip(early, got, strict=True)) if got is not None else {}

    def value(text: str, names: dict[str, Any]) -> Any:
        return known[text] if text in known else compile_expr(text).evaluate(**names)

    for rel in relations:
        names = rc.variables(doc=doc, refs=rc.refs)
        target = rc.of(rel.resource)
        table = target.res.res.table
        rows: list[Doc] = []
        if rel.id is not None:
            key = value(rel.id, names)
            row = await target.store.get(table, key) if isinstance(key, str) and key else None
            rows = [row] if row is not None else []
        else:
            where = {f: value(text, names) for f, text in rel.match.items()}
            if all(v is not None for v in where.values()):
                rows = await target.store.list(table, where, limit=None if rel.many else 1)
        rows = [
            row
            for row in rows
            if (not rel.visible or access.visible(target, row))
            and (not rel.when or compile_expr(rel.when).evaluate(**names, row=row))
        ]
        if rel.many:
            rc.refs[rel.name] = rows
        elif rows:
            rc.refs[rel.name] = rows[0]
    return rc.refs


async def load_for(rc: ResourceCall, event: str, doc: Doc) -> None:
    """The relations the `refuse` rules of `event` (create, delete) read, for `doc` (a
    backup's incremental rule reads the volume's other backups)."""
    rules = [g.when for g in rc.res.res.guards if event in g.on]
    wanted = [r.name for r in rc.res.res.relations if any(f"refs.{r.name}" in w for w in rules)]
    if wanted:
        await load(rc, doc, only=wanted)
