"""Operations refused while a condition holds: a resource's `refuse` rules.

A rule names the operations it guards (`create`, `update`, `delete`, a state
machine's actions, or a name a behaviour checks, such as `download`), a CEL
condition over the row (`doc`) and the requested changes (`changes`), and the
status and message of the refusal; `unless` names a policy rule whose callers
are let through (glance: only `publicize_image` callers may make an image public).
On a create or an update, `refs` holds the rows its references name (cinder: a clone's
source volume must be available or in-use). `each` checks the condition for every `item`
of a list (nova's requested networks), and `quote` gives the message computed values.
A rule `given` a key of `changes` applies only when the changes have it (nova's rules of
an optional attribute of a new server: none evaluated when the request does not give it).
"""

from __future__ import annotations

from typing import Any

from specstack_runtime.expr import Bound, compile_expr, reads_of, unicode_only
from specstack_runtime.exprreads import Reads
from specstack_runtime.grouped import values_in
from specstack_runtime.ir import Guard
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall


def check(rc: ResourceCall, operation: str, doc: Doc, changes: Doc | None = None) -> None:
    """Raise the first rule of `operation` whose condition holds for this caller."""
    guards = [g for g in rc.res.res.guards if operation in g.on]
    if not guards:
        return
    full = rc.res.complete(doc)
    seen: dict[str, Any] = {**full, **(changes or {})}
    # a rule `given` a key of the changes applies only when they have it (as Kubernetes
    # runs a field's rules only when the field is there): a look-up, not an evaluation
    judged = changes if changes is not None else seen
    guards = [g for g in guards if g.given is None or g.given in judged]
    if not guards:
        return
    names = rc.variables(  # a request's strings as CEL can hold them
        doc=unicode_only(full),
        changes=unicode_only(dict(changes if changes is not None else seen)),
        refs=rc.refs,
    )
    # Bound once for every rule (the CEL runtime converts the row, the changes and the
    # references once, not once per rule), and once per item of each `each` list
    reads = reads_of(tuple([t for g in guards for t in (g.when, g.each) if t]))
    shared = Bound(reads, **names)
    found = _all_at_once(guards, shared, reads, names)
    for n, guard in enumerate(guards):
        # found at once; when an expression failed, each rule in turn (an earlier one decides)
        item = found[n] if found is not None else _in_turn(guard, shared, reads, names)
        if item is _NONE:
            continue
        if guard.unless and rc.allows(guard.unless, full):
            continue
        values = {**seen, "id": doc.get("id"), "old": full, "refs": rc.refs, "item": item}
        for name, text in guard.quote.items():
            values[name] = compile_expr(text).evaluate(**names, item=item)
        raise error(guard.status, fill(guard.message, values), guard.kind)


def _all_at_once(
    guards: list[Guard], shared: Bound, reads: Reads, names: dict[str, Any]
) -> list[Any] | None:
    """Each rule's `item` that holds (None for a rule without `each`, `_NONE` when none),
    from one evaluation of every condition and list, and one per item of each list; None
    when an expression fails."""
    plain = tuple(dict.fromkeys([g.when for g in guards if not g.each]))
    lists = tuple(dict.fromkeys([g.each for g in guards if g.each]))
    first = values_in(plain + lists, shared)
    if first is None:
        return None
    held = dict(zip(plain, first, strict=False))
    # of each list, its items and what each rule over it gave for each
    per_list: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for each, items in zip(lists, first[len(plain) :], strict=True):
        whens = tuple(dict.fromkeys([g.when for g in guards if g.each == each]))
        per_list[each] = []
        for i in items:
            hits = values_in(whens, Bound(reads, **names, item=i))
            if hits is None:
                return None
            per_list[each].append((i, dict(zip(whens, hits, strict=True))))
    out: list[Any] = []
    for g in guards:
        if not g.each:
            out.append(None if held[g.when] else _NONE)
            continue
        out.append(_NONE)
        for i, gave in per_list[g.each]:
            if gave[g.when]:
                out[-1] = i
                break
    return out


def _in_turn(guard: Guard, shared: Bound, reads: Reads, names: dict[str, Any]) -> Any:
    """The rule's `item` that holds (None without `each`; `_NONE`: none), evaluated alone."""
    when = compile_expr(guard.when)
    if not guard.each:
        return None if when.evaluate_in(shared) else _NONE
    items = compile_expr(guard.each).evaluate_in(shared)
    return next((i for i in items if when.evaluate_in(Bound(reads, **names, item=i))), _NONE)


_NONE = object()
