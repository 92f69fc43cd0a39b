"""Behaviours by name. The spec says which behaviour runs where; this module only finds it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_BEHAVIOURS: dict[str, Callable[..., Any]] = {}
_loaded = False

#: Modules whose import registers the library's behaviours.
LIBRARY_MODULES = (
    "specstack_runtime.behaviours.flowsteps",
    "specstack_runtime.resources.serve",
    "specstack_runtime.behaviours.crud",
    "specstack_runtime.behaviours.identity",
    "specstack_runtime.behaviours.compute",
    "specstack_runtime.behaviours.image",
    "specstack_runtime.behaviours.objects",
    "specstack_runtime.behaviours.network",
    "specstack_runtime.behaviours.volume",
)


class UnknownBehaviour(LookupError):
    pass


def behaviour(name: str) -> Callable[[F], F]:
    """Register a function under `name` (e.g. "compute.create_server")."""

    def register(fn: F) -> F:
        if name in _BEHAVIOURS and _BEHAVIOURS[name] is not fn:
            raise ValueError(f"behaviour {name!r} is registered twice")
        _BEHAVIOURS[name] = fn
        return fn

    return register


def load_library() -> None:
    global _loaded
    for module in LIBRARY_MODULES:
        importlib.import_module(module)
    _loaded = True


def get(name: str) -> Callable[..., Any]:
    if name not in _BEHAVIOURS and not _loaded:
        load_library()
    try:
        return _BEHAVIOURS[name]
    except KeyError:
        raise UnknownBehaviour(
            f"no behaviour named {name!r}; known: {', '.join(sorted(_BEHAVIOURS))}"
        ) from None


def names() -> list[str]:
    if not _loaded:
        load_library()
    return sorted(_BEHAVIOURS)
