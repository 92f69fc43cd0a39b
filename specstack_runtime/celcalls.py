"""The values of the Python functions expressions call, and the references the CEL
runtime keeps of them and of their arguments.

cel-expr-python 0.1.3 never gives back its reference to the value a function (`merge(a,
b)`, `uuid4()`, ...) returns, nor to the tuple of arguments it built for the call: each
stayed in memory for good. A stack grew by some 25 KB a boot, 7.5 MB every 300 boots,
without end. Each function is wrapped (`owned`): within an evaluation (`begin` ... `end`)
its values are noted, and when the evaluation ends each gets the kept reference back
(`Py_DecRef`, once). The arguments cannot: the kept tuple still points at them, and the
collector walks it. But they are the runtime's own copies, made for this one call, so
once the function has its value, a map or list argument is emptied: what stays is its
empty shell. Both faults are probed once (`probe`) on objects nothing else refers to: a
runtime without them (or that hands a function the caller's own objects) is left alone.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

import orjson

_decref = ctypes.pythonapi.Py_DecRef
_decref.argtypes = [ctypes.py_object]
_decref.restype = None

# cel-expr-python (0.1.3) hands each null it converts to Python (a null result, or one in
# a list or map) without its reference to None. Before CPython 3.12 None is not immortal:
# its count dropped by one per null until the interpreter aborted ("none_dealloc"), which
# under load killed the stack mid-request. Each None in a result gets its reference back;
# one too many (if the runtime is fixed) is harmless, as None is never freed.
_NULLS_UNOWNED = sys.version_info < (3, 12)
_NONE = ctypes.py_object(None)
_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None


def owned_nulls(value: Any) -> None:
    """Give each None in a value the runtime converted its reference (see above)."""
    if _NULLS_UNOWNED:
        for _ in range(_nulls(value)):
            _incref(_NONE)


def _nulls(value: Any) -> int:
    """How many None a converted CEL value holds (map keys are never null); a loop, not
    recursion: every result of every expression passes here."""
    if value is None:
        return 1
    if not isinstance(value, dict | list):
        return 0
    try:
        # every None is a `null` of its JSON, written in C; a string holding "null" counts
        # too, and one reference too many is harmless (see above)
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).count(b"null")
    except TypeError:
        pass  # a value JSON has no form for (bytes): walked
    count = 0
    todo: list[Any] = [value]
    while todo:
        node = todo.pop()
        for item in node.values() if isinstance(node, dict) else node:
            if item is None:
                count += 1
            elif isinstance(item, dict | list):
                todo.append(item)
    return count


_noted = threading.local()  # .values: this thread's evaluation's values, or None
_keeps: bool | None = None  # what `probe` found


def owned(impl: Callable[..., Any]) -> Callable[..., Any]:
    """`impl`, its values noted for `end` while an evaluation is under way."""

    @functools.wraps(impl)
    def call(*args: Any) -> Any:
        value = impl(*args)
        values = getattr(_noted, "values", None)
        if values is not None:
            if value is not None:
                values.append(value)
            for arg in args:  # the runtime's copies, kept by it for good: emptied
                if arg is not value and isinstance(arg, dict | list):
                    owned_nulls(arg)  # its nulls, released by the clearing (or later)
                    arg.clear()
        return value

    return call


def begin() -> list[Any] | None:
    """Start noting the values of this thread's evaluation; what `end` needs back."""
    outer: list[Any] | None = getattr(_noted, "values", None)
    _noted.values = [] if _keeps else None
    return outer


def end(outer: list[Any] | None) -> None:
    """The evaluation is over: each value noted gets the runtime's reference back."""
    values: list[Any] | None = getattr(_noted, "values", None)
    _noted.values = outer
    for value in values or ():
        _decref(value)


def probe_result() -> bool | None:
    """What `probe` found: None before the first environment."""
    return _keeps


def probe(make_env: Callable[[Callable[..., Any]], Any]) -> bool:
    """Whether the runtime keeps one reference to a function's value and to the copies of
    its arguments after the evaluation is over. `make_env(fn)`: an environment where
    `probe(doc)` calls `fn` with a map."""
    global _keeps
    seen: list[Any] = []
    doc = {"given": [1]}

    def fn(arg: Any) -> Any:
        value = {"probe": [1]}  # a new object: only `seen` and the runtime refer to it
        seen.extend((arg, value))
        return value

    env = make_env(fn)
    activation = env.Activation(data={"doc": doc})
    env.compile("probe(doc)").eval(activation=activation).plain_value()
    del env, activation
    # besides `seen` and getrefcount's own argument: the runtime's reference
    extra = [sys.getrefcount(seen[n]) - 2 for n in range(len(seen))]
    _keeps = extra == [1, 1] and seen[0] is not doc and seen[0] == doc
    return _keeps
