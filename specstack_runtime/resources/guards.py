"""Operations refused while a condition holds: a resource's `refuse` rules.

A rule names the operations it guards (`create`, `update`, `delete`, a state
machine's actions, or a name a behaviour checks, such as `download`), a CEL
condition over the row (`doc`) and the requested changes (`changes`), and the
status and message of the refusal; `unless` names a policy rule whose callers
are let through (glance: only `publicize_image` callers may make an image public).
On a create or an update, `refs` holds the rows its references name (cinder: a clone's
source volume must be available or in-use). `each` checks the condition for every `item`
of a list (nova's requested networks), and `quote` gives the message computed values.
"""

from __future__ import annotations

from typing import Any

from specstack_runtime.expr import Bound, compile_expr, reads_of, unicode_only
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall


def check(rc: ResourceCall, operation: str, doc: Doc, changes: Doc | None = None) -> None:
    """Raise the first rule of `operation` whose condition holds for this caller."""
    guards = [g for g in rc.res.res.guards if operation in g.on]
    if not guards:
        return
    full = rc.res.complete(doc)
    seen: dict[str, Any] = {**full, **(changes or {})}
    names = rc.variables(  # a request's strings as CEL can hold them
        doc=unicode_only(full),
        changes=unicode_only(dict(changes if changes is not None else seen)),
        refs=rc.refs,
    )
    # Bound once for every rule (the CEL runtime converts the row, the changes and the
    # references once, not once per rule), and once per item of each `each` list
    reads = reads_of(tuple(t for g in guards for t in (g.when, g.each) if t))
    shared = Bound(reads, **names)
    per_item: dict[str, list[tuple[Any, Bound]]] = {}
    for guard in guards:
        when = compile_expr(guard.when)
        if not guard.each:
            if not when.evaluate_in(shared):
                continue
            item: Any = None
        else:
            # `each`: the rule holds for an item of the list (the first one quoted)
            bound_items = per_item.get(guard.each)
            if bound_items is None:
                items = compile_expr(guard.each).evaluate_in(shared)
                bound_items = [(i, Bound(reads, **names, item=i)) for i in items]
                per_item[guard.each] = bound_items
            item = next((i for i, b in bound_items if when.evaluate_in(b)), _NONE)
            if item is _NONE:
                continue
        if guard.unless and rc.allows(guard.unless, full):
            continue
        values = {**seen, "id": doc.get("id"), "old": full, "refs": rc.refs, "item": item}
        for name, text in guard.quote.items():
            values[name] = compile_expr(text).evaluate(**names, item=item)
        raise error(guard.status, fill(guard.message, values), guard.kind)


_NONE = object()
