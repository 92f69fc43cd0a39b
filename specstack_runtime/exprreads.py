"""What a CEL expression reads of its variables, found from its text once.

The CEL runtime converts each variable it is handed in full, at tens of microseconds a
kilobyte, whether an expression reads it or not; an expression mostly reads a few
fields of a row or a message (`doc.vm_state`, `request.payload.instance.uuid`). A
`Bound` hands the runtime only what its expressions read (`pruned`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Of a value, the fields read and of each what is read of it (None: the whole value).
Paths = dict[str, "Paths | None"]
#: For each variable an expression may read, what it reads of it (see `reads_in`).
Reads = Mapping[str, Paths | None]

# after a name: `.field`, or `.name(` (a macro or method over the whole value)
_SELECT = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(\s*\()?")
_IDENT_END = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_)]}'\"")


def reads_in(text: str, uses: frozenset[str]) -> dict[str, Paths | None]:
    """Of each variable in `uses`, what `text` reads (a superset): the paths of fields
    it selects (`request.payload.instance.uuid`), each ending at a value read whole;
    None when it may read the variable as a whole.

    A chain of `.field` selections reads the value it ends at; what follows that value
    (`[...]`, `.map(...)`, an operator, the end of an argument) may use any of it, so it
    is read whole. A name used any other way (`name[...]`, `'k' in name`, `size(name)`, in a
    string) may read any of it. A name after a dot is a field's, not the variable's.
    """
    found: dict[str, Paths | None] = {name: {} for name in uses}
    for m in _NAME.finditer(text):
        name = m.group()
        if name not in found:
            continue
        at = m.start() - 1
        while at >= 0 and text[at].isspace():
            at -= 1
        if at >= 0 and text[at] == ".":
            at -= 1
            while at >= 0 and text[at].isspace():
                at -= 1
            if at >= 0 and text[at] in _IDENT_END:
                continue  # `x.name`: a field of x (a leading dot, `.name`, is the variable)
        path: list[str] = []
        end = m.end()
        while (select := _SELECT.match(text, end)) is not None and select.group(2) is None:
            path.append(select.group(1))
            end = select.end()
        read: Paths | None = None  # the value the chain ends at, whole
        for field in reversed(path):
            read = {field: read}
        found[name] = _merged(found[name], read)
    return found


def _merged(first: Paths | None, second: Paths | None) -> Paths | None:
    if first is None or second is None:
        return None
    out = dict(first)
    for key, sub in second.items():
        out[key] = _merged(first[key], sub) if key in first else sub
    return out


def merged_reads(reads: Iterable[Reads]) -> dict[str, Paths | None]:
    """What several expressions read together (for one `Bound` they share)."""
    out: dict[str, Paths | None] = {}
    for one in reads:
        for name, paths in one.items():
            out[name] = _merged(out[name], paths) if name in out else paths
    return out


def pruned(value: Any, paths: Paths) -> Any:
    """Of `value`, only what `paths` reads (a value not a map is kept as it is: reading
    a field of it fails as it would)."""
    if type(value) is not dict:
        return value
    out = {}
    for key, sub in paths.items():
        if key in value:
            got = value[key]
            out[key] = got if sub is None else pruned(got, sub)
    return out
