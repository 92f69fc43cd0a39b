"""The checked syntax tree of a compiled CEL expression, read from its serialized form.

cel-expr-python gives a compiled expression out only serialized: a protobuf `Any`
holding a `cel.expr.CheckedExpr` (CEL's own syntax tree, its macros expanded into
comprehensions, with the checker's references: which variable an identifier is and
which overloads a call may take). No Python package ships that message's generated
code, so this module reads the protobuf wire format for the few fields `celpython`
uses (field numbers from cel-spec's `syntax.proto` and `checked.proto`); any other
field is skipped. A malformed input raises `ValueError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) for each field: an int (varint, fixed) or bytes."""
    out: list[tuple[int, Any]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, kind = key >> 3, key & 7
        value: int | bytes
        if kind == _VARINT:
            value, at = _varint(data, at)
        elif kind == _FIXED64:
            value, at = data[at : at + 8], at + 8
        elif kind == _FIXED32:
            value, at = data[at : at + 4], at + 4
        elif kind == _BYTES:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        else:
            raise ValueError(f"wire type {kind} not read")
        if at > len(data):
            raise ValueError("truncated field")
        out.append((number, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class Node:
    """One `Expr`: `kind` is const, ident, select, call, list, map or comprehension."""

    id: int
    kind: str
    value: Any = None  # const: the Python value; ident: the name; select, call: the name
    target: Node | None = None  # select: the operand; call: the receiver (or None)
    args: list[Node] = field(default_factory=list)  # call args, list items, comprehension parts
    keys: list[Node] = field(default_factory=list)  # map: each entry's key (args: values)
    test_only: bool = False  # select: `has(a.b)`
    names: tuple[str, ...] = ()  # comprehension: iteration variable(s), accumulator


@dataclass
class Checked:
    expr: Node
    # expression id -> (name the checker resolved, overload ids it allows)
    references: dict[int, tuple[str, tuple[str, ...]]]


_CONST_KIND = {1: "null", 2: "bool", 3: "int", 4: "uint", 5: "double", 6: "string", 7: "bytes"}


def _constant(data: bytes) -> Any:
    fields = _fields(data)
    if len(fields) != 1:
        raise ValueError("a constant of no or several kinds")
    number, raw = fields[0]
    kind = _CONST_KIND.get(number)
    if kind == "null":
        return None
    if kind == "bool":
        return bool(raw)
    if kind == "int":
        return _signed(raw)
    if kind == "double":
        return struct.unpack("<d", raw)[0]
    if kind == "string":
        return raw.decode("utf-8")
    if kind == "bytes":
        return bytes(raw)
    raise ValueError(f"constant of kind {kind or number} not read")


def _expr(data: bytes) -> Node:
    ident, kind_of, body = 0, 0, b""
    for number, raw in _fields(data):
        if number == 2:
            ident = raw
        elif 3 <= number <= 9:
            kind_of, body = number, raw
    if kind_of == 3:
        return Node(ident, "const", _constant(body))
    if kind_of == 4:
        name = next((r.decode() for n, r in _fields(body) if n == 1), "")
        return Node(ident, "ident", name)
    if kind_of in (5, 6):  # Select {operand, field, test_only}, Call {target, function, args}
        node = Node(ident, "select" if kind_of == 5 else "call")
        for n, r in _fields(body):
            if n == 1:
                node.target = _expr(r)
            elif n == 2:
                node.value = r.decode()
            elif n == 3 and kind_of == 5:
                node.test_only = bool(r)
            elif n == 3:
                node.args.append(_expr(r))
        return node
    if kind_of == 7:
        parts = _fields(body)
        if any(n == 2 for n, _ in parts):
            raise ValueError("optional list elements not read")
        return Node(ident, "list", args=[_expr(r) for n, r in parts if n == 1])
    if kind_of == 8:
        return _struct(ident, body)
    if kind_of == 9:
        return _comprehension(ident, body)
    raise ValueError("an expression of no known kind")


def _struct(ident: int, body: bytes) -> Node:
    node = Node(ident, "map")
    for n, r in _fields(body):
        if n == 1 and r:
            raise ValueError("message construction not read")
        if n != 2:
            continue
        key = value = None
        for en, er in _fields(r):
            if en == 3:
                key = _expr(er)
            elif en == 4:
                value = _expr(er)
            elif en in (2, 5) and er:
                raise ValueError("message field or optional entry not read")
        if key is None or value is None:
            raise ValueError("a map entry without key or value")
        node.keys.append(key)
        node.args.append(value)
    return node


def _comprehension(ident: int, body: bytes) -> Node:
    names = {1: "", 3: "", 8: ""}
    parts: dict[int, Node] = {}
    for n, r in _fields(body):
        if n in names:
            names[n] = r.decode()
        elif n in (2, 4, 5, 6, 7):
            parts[n] = _expr(r)
    if names[8]:
        raise ValueError("two-variable comprehension not read")
    if len(parts) != 5:
        raise ValueError("a comprehension without all its parts")
    # args: range, accumulator's start, condition, step, result
    return Node(
        ident,
        "comprehension",
        args=[parts[2], parts[4], parts[5], parts[6], parts[7]],
        names=(names[1], names[3]),
    )


def _reference(data: bytes) -> tuple[str, tuple[str, ...]]:
    name, overloads = "", []
    for n, r in _fields(data):
        if n == 1:
            name = r.decode()
        elif n == 3:
            overloads.append(r.decode())
        elif n == 4:
            raise ValueError("a constant reference (enum) not read")
    return name, tuple(overloads)


def checked(serialized: bytes) -> Checked:
    """The tree of `Expression.serialize()`'s output (an `Any` of a `CheckedExpr`)."""
    payload = b""
    for n, r in _fields(serialized):
        if n == 1 and not r.decode().endswith("cel.expr.CheckedExpr"):
            raise ValueError(f"not a checked expression: {r.decode()}")
        if n == 2:
            payload = r
    expr: Node | None = None
    references: dict[int, tuple[str, tuple[str, ...]]] = {}
    for n, r in _fields(payload):
        if n == 2:  # map<int64, Reference>: entries of key (1) and value (2)
            key, value = 0, b""
            for en, er in _fields(r):
                if en == 1:
                    key = er
                elif en == 2:
                    value = er
            references[key] = _reference(value)
        elif n == 4:
            expr = _expr(r)
    if expr is None:
        raise ValueError("a checked expression without its expression")
    return Checked(expr, references)
