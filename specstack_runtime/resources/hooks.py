"""Where algorithms plug into the engine: a resource's `hooks` name library behaviours.

A hook is `async def hook(event: ResourceEvent) -> None`; it may change
`event.doc` (before a write: what will be stored) or raise an ApiError. IP
allocation, segment ids, key-pair generation are hooks: the engine does the
bookkeeping, the hook the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from specstack_runtime import registry
from specstack_runtime.resources import effects, writes

if TYPE_CHECKING:
    from specstack_runtime.context import Call
    from specstack_runtime.resources.context import ResourceCall


@dataclass
class ResourceEvent:
    """A write the engine is about to make (before_*) or has made (after_*)."""

    call: Call
    resource: str
    point: str  # before_create, after_create, before_update, ...
    doc: dict[str, Any]  # the row (before_create: the new row; before_update: the changes)
    old: dict[str, Any] | None  # the row as it was (updates and deletes)
    engine: ResourceCall


async def run(
    rc: ResourceCall, point: str, doc: dict[str, Any], old: dict[str, Any] | None
) -> None:
    if point in ("before_create", "before_update") and rc.res.normalizers:
        await _normalize(rc, doc, old)
    name = rc.res.res.hooks.get(point)
    if name:
        await registry.get(name)(ResourceEvent(rc.call, rc.res.name, point, doc, old, rc))
    if point in rc.res.res.effects:  # the spec's changes to other rows, after the hook
        await effects.apply(rc, rc.res.res.effects[point], doc, old)


async def _normalize(rc: ResourceCall, doc: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Each value the write gives as its field's `normalize` stores it (after the refuse
    rules, which judge what the caller sent); a unique one is checked again as stored."""
    changed: set[str] = set()
    for name, expr in rc.res.normalizers:
        key = rc.res.key(name)
        if doc.get(key) is not None:
            value = expr.evaluate(**rc.variables(doc=doc))
            if value != doc[key]:
                doc[key] = value
                changed.add(key)
    if changed:
        await writes.check_unique(rc, {**(old or {}), **doc}, old, changed=changed)
