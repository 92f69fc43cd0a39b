"""CEL's operators and standard functions over plain Python values, for `celpython`.

Each does what the CEL runtime does where both give a value, and raises (`Unlike`,
or any error Python raises on the way) wherever the runtime would give an error or
where the two might differ (a float turned to text, a range check, a type CEL does
not mix): `celpython` then evaluates the expression with the CEL runtime itself, so
a raise here never changes an answer, it only costs the fast path. Values: None,
bool, int, float, str, bytes, list, dict (CEL's null, bool, int, double, string,
bytes, list, map) and `Type` (what `type(x)` gives).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, NoReturn

from specstack_runtime import patterns

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_DIGITS = re.compile(r"[+-]?[0-9]+\Z")  # int(string) read here; anything else: the runtime
_WHITE = " \t\n\v\f\r"


class Unlike(Exception):
    """This fast path does not answer: the CEL runtime does (its value or its error)."""


def unlike(what: str = "") -> NoReturn:
    raise Unlike(what)


class Type:
    """A CEL type as a value (`type(x) == map`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


TYPES = {
    name: Type(name)
    for name in ("null_type", "bool", "int", "uint", "double", "string", "bytes", "list", "map")
}
_TYPE_OF = {
    type(None): TYPES["null_type"],
    bool: TYPES["bool"],
    int: TYPES["int"],
    float: TYPES["double"],
    str: TYPES["string"],
    bytes: TYPES["bytes"],
    list: TYPES["list"],
    dict: TYPES["map"],
}


def read(value: Any) -> Any:
    """A value read from the variables: an integer CEL's int does not hold is the
    runtime's (a uint to 2**64, beyond that its error)."""
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        unlike("integer range")
    return value


def type_of(value: Any) -> Type:
    found = _TYPE_OF.get(type(value))
    if found is None:
        unlike("type")
    return found


def truth(value: Any) -> bool:
    """A bool operand (of &&, ||, !, ?:): anything else is the runtime's error."""
    if value is True or value is False:
        return value
    unlike("not a bool")


def _int(value: Any) -> bool:
    return type(value) is int


def _number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def eq(a: Any, b: Any) -> bool:
    """CEL's heterogeneous equality: numbers by value across int and double; a bool, null,
    string or bytes only equal to its own kind; lists and maps member by member."""
    ta, tb = type(a), type(b)
    if ta is tb and (ta is str or ta is bool or a is None or ta is bytes):
        return bool(a == b)
    if _number(a) and _number(b):
        return bool(read(a) == read(b))
    if ta is list and tb is list:
        for item in (*a, *b):  # (a list is converted whole: an int out of range fails it)
            read(item)
        return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b, strict=True))
    if ta is dict and tb is dict:
        if len(a) != len(b):
            return False
        for key, value in a.items():
            if type(key) is not str or key not in b:  # numeric keys compared across kinds
                return False if type(key) is str else unlike("map key")
            if not eq(value, b[key]):
                return False
        return True
    if ta is Type and tb is Type:
        return a is b
    if ta in _TYPE_OF and tb in _TYPE_OF:
        return False  # two kinds that never equal
    unlike("equality")


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def index(container: Any, key: Any) -> Any:
    kind = type(container)
    if kind is dict:
        if type(key) is str:
            return read(container[key])  # KeyError: the runtime's "no such key"
        unlike("map key")
    if kind is list and type(key) is int and 0 <= key < len(container):
        return read(container[key])
    unlike("index")


def contains(item: Any, container: Any) -> bool:
    """`item in container`."""
    kind = type(container)
    if kind is dict:
        if type(item) is str:
            return item in container
        unlike("map key")
    if kind is list:
        return any(eq(item, x) for x in container)
    unlike("in")


def select(operand: Any, field: str) -> Any:
    if type(operand) is dict:
        return read(operand[field])
    unlike("select")


def has(operand: Any, field: str) -> bool:
    if type(operand) is dict:
        return field in operand
    unlike("has")


def _checked(value: int) -> int:
    if _INT_MIN <= value <= _INT_MAX:
        return value
    unlike("overflow")


def add(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is not type(b):
        unlike("+")
    if ta is int:
        return _checked(a + b)
    if ta is str or ta is list or ta is float or ta is bytes:
        return a + b
    unlike("+")


def _same_kind(a: Any, b: Any, op: Callable[[Any, Any], Any], name: str) -> Any:
    """`a op b` for two ints (in range) or two doubles, as CEL's `-` and `*`."""
    kind = type(a)
    if kind is type(b) and (kind is int or kind is float):
        value = op(a, b)
        return _checked(value) if kind is int else value
    unlike(name)


def sub(a: Any, b: Any) -> Any:
    return _same_kind(a, b, operator.sub, "-")


def mul(a: Any, b: Any) -> Any:
    return _same_kind(a, b, operator.mul, "*")


def mod(a: Any, b: Any) -> int:
    if _int(a) and _int(b) and b != 0:
        quotient = abs(a) // abs(b)
        return _checked(a - b * (quotient if (a < 0) == (b < 0) else -quotient))
    unlike("%")


def div(a: Any, b: Any) -> Any:
    if _int(a) and _int(b) and b != 0:
        quotient = abs(a) // abs(b)
        return _checked(quotient if (a < 0) == (b < 0) else -quotient)
    if type(a) is float and type(b) is float and b != 0:
        return a / b
    unlike("/")


def _ordered(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta is tb and (ta is str or ta is bytes or ta is bool):
        return True
    if _number(a) and _number(b):
        read(a), read(b)
        return True
    unlike("comparison")


def lt(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a < b


def le(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a <= b


def gt(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a > b


def ge(a: Any, b: Any) -> bool:
    return _ordered(a, b) and a >= b


def neg(a: Any) -> Any:
    if type(a) is int:
        return _checked(-a)
    if type(a) is float:
        return -a
    unlike("-")


def size(value: Any) -> int:
    if type(value) in (str, list, dict, bytes):
        return len(value)
    unlike("size")


def to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str and _DIGITS.match(value):
        return _checked(int(value))
    if kind is float and value == value and -9.2e18 < value < 9.2e18:
        return int(value)
    unlike("int")


def to_string(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is bytes:
        return value.decode("utf-8")  # type: ignore[no-any-return]
    unlike("string")  # a double's text is the runtime's to write


def to_double(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    unlike("double")


def to_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8")
    unlike("bytes")


def iterate(value: Any) -> Any:
    """What a comprehension runs over: a list's items, a map's keys."""
    if type(value) is list:
        for item in value:
            read(item)
        return value
    if type(value) is dict:
        return list(value)
    unlike("range")


def _text(*values: Any) -> None:
    for value in values:
        if type(value) is not str:
            unlike("not a string")


def split(text: Any, sep: Any, limit: Any = -1) -> list[str]:
    _text(text, sep)
    if not sep or type(limit) is not int:
        unlike("split")
    if limit == 0:
        return []
    return text.split(sep) if limit < 0 else text.split(sep, limit - 1)  # type: ignore[no-any-return]


def substring(text: Any, start: Any, end: Any = None) -> str:
    _text(text)
    stop = len(text) if end is None else end
    if type(start) is int and type(stop) is int and 0 <= start <= stop <= len(text):
        return text[start:stop]  # type: ignore[no-any-return]
    unlike("substring")


def replace(text: Any, old: Any, new: Any) -> str:
    _text(text, old, new)
    if not old:
        unlike("replace")
    return text.replace(old, new)  # type: ignore[no-any-return]


def trim(text: Any) -> str:
    _text(text)
    if not text.isascii():
        unlike("trim")  # Unicode's white space and Python's differ
    return text.strip(_WHITE)  # type: ignore[no-any-return]


_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def lower_ascii(text: Any) -> str:
    _text(text)
    return text.translate(_LOWER)  # type: ignore[no-any-return]


_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def upper_ascii(text: Any) -> str:
    _text(text)
    return text.translate(_UPPER)  # type: ignore[no-any-return]


def has_text(text: Any, part: Any) -> bool:
    _text(text, part)
    return part in text


def starts_with(text: Any, part: Any) -> bool:
    _text(text, part)
    return text.startswith(part)  # type: ignore[no-any-return]


def ends_with(text: Any, part: Any) -> bool:
    _text(text, part)
    return text.endswith(part)  # type: ignore[no-any-return]


def matches(text: Any, pattern: Any) -> bool:
    _text(text, pattern)
    return patterns.search(pattern, text)


def plain(value: Any) -> Any:
    """The value given back: lists and maps copied (the runtime's answer is always a new
    object; a caller may change it), anything not plain the runtime's to give."""
    kind = type(value)
    if kind is dict:
        return {k: plain(v) for k, v in value.items()}
    if kind is list:
        return [plain(v) for v in value]
    if kind in _TYPE_OF:
        return read(value)
    unlike("result")
