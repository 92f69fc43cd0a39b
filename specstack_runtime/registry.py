"""Behaviours by name. The spec says which behaviour runs where; this module only finds it.

Each behaviour declares, where it is registered, what the spec must provide for it:
`needs` (the catalog types of the APIs it calls, e.g. "object-store") and, for a
step behaviour, the communication types it carries out (`via`). Its kind follows
from its signature (see `kind_of`). `python -m specstack_runtime.registry --write`
records all of it in `behaviours/catalog.json`, which `specstack validate` reads
(so validation needs no import of the library) and tests keep in step with the code.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Where the spec may use each kind of behaviour.
KINDS = {
    "operation": "an HTTP operation (x-specstack-behaviour)",
    "message": "a queue message's handler (consumes.behaviour)",
    "step": "a step of a sequence (behaviour:)",
    "startup": "a component's start-up (behaviours.startup)",
    "error": "what runs when handling fails (on_error, x-specstack-on-error)",
    "hook": "a resource's hook or action (spec/resources)",
    "function": "the runtime's own use (not named by the spec)",
}


@dataclass(frozen=True)
class Declared:
    """What the spec needs to know about one behaviour."""

    name: str
    kind: str
    needs: tuple[str, ...]  # catalog types of the APIs it calls
    via: tuple[str, ...]  # steps: the communication types it carries out; () for any
    module: str
    summary: str


_BEHAVIOURS: dict[str, Callable[..., Any]] = {}
_DECLARED: dict[str, Declared] = {}
_loaded = False

#: Modules whose import registers the library's behaviours.
LIBRARY_MODULES = (
    "specstack_runtime.flowsteps",
    "specstack_runtime.resources.serve",
    "specstack_runtime.resources.records",
    "specstack_runtime.behaviours.identity",
    "specstack_runtime.behaviours.identity_bootstrap",
    "specstack_runtime.behaviours.nova_api",
    "specstack_runtime.behaviours.nova_delete",
    "specstack_runtime.behaviours.nova_interfaces",
    "specstack_runtime.behaviours.nova_keypairs",
    "specstack_runtime.behaviours.nova_build",
    "specstack_runtime.behaviours.nova_host",
    "specstack_runtime.behaviours.nova_snapshot",
    "specstack_runtime.behaviours.nova_rebuild",
    "specstack_runtime.behaviours.nova_resize",
    "specstack_runtime.behaviours.conductor",
    "specstack_runtime.behaviours.scheduler",
    "specstack_runtime.behaviours.nova_events",
    "specstack_runtime.behaviours.image",
    "specstack_runtime.behaviours.objects",
    "specstack_runtime.behaviours.network",
    "specstack_runtime.behaviours.netrouters",
    "specstack_runtime.behaviours.volume",
    "specstack_runtime.behaviours.volume_attach",
    "specstack_runtime.behaviours.volume_backend",
    "specstack_runtime.behaviours.volume_backup",
    "specstack_runtime.resources.documents",
)


class UnknownBehaviour(LookupError):
    pass


def kind_of(fn: Callable[..., Any]) -> str:
    """The kind a behaviour's signature gives it: its first parameter's type (Interaction: a
    step; ServiceRuntime: start-up; ResourceEvent: a hook; Call: an operation when it returns
    a Reply, an error behaviour when it also takes the error, else a message handler)."""
    params = list(inspect.signature(fn).parameters.values())
    first = str(params[0].annotation) if params else ""
    returns = str(inspect.signature(fn).return_annotation)
    if first == "Interaction":
        return "step"
    if first == "ResourceEvent":
        return "hook"
    if first == "ServiceRuntime":
        return "startup" if len(params) == 1 else "function"
    if first == "Call":
        if len(params) == 2 and params[1].name == "error":
            return "error"
        if len(params) == 1:
            return "operation" if returns == "Reply" else "message"
    return "function"


def behaviour(
    name: str, *, needs: tuple[str, ...] = (), via: tuple[str, ...] = ()
) -> Callable[[F], F]:
    """Register a function under `name` (e.g. "compute.create_server"), with what it needs."""

    def register(fn: F) -> F:
        if name in _BEHAVIOURS and _BEHAVIOURS[name] is not fn:
            raise ValueError(f"behaviour {name!r} is registered twice")
        _BEHAVIOURS[name] = fn
        doc = (fn.__doc__ or "").strip().splitlines()
        _DECLARED[name] = Declared(
            name=name,
            kind=kind_of(fn),
            needs=tuple(needs),
            via=tuple(via),
            module=fn.__module__,
            summary=doc[0] if doc else "",
        )
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


def declarations() -> list[Declared]:
    """Every behaviour of the library with what it declares, by name."""
    if not _loaded:
        load_library()
    return [_DECLARED[n] for n in sorted(_DECLARED)]


CATALOG = "behaviours/catalog.json"


def catalog_text() -> str:
    """The catalog file's content for the library as it is."""
    items = [asdict(d) for d in declarations()]
    return json.dumps({"behaviours": items}, indent=1, sort_keys=True) + "\n"


def read_catalog() -> dict[str, dict[str, Any]]:
    """The recorded catalog (what `specstack validate` knows), by behaviour name."""
    text = resources.files("specstack_runtime").joinpath(CATALOG).read_text("utf-8")
    return {b["name"]: b for b in json.loads(text)["behaviours"]}


DOC_BEGIN = "<!-- behaviour table: python -m specstack_runtime.registry --write -->"
DOC_END = "<!-- end of behaviour table -->"


def doc_table() -> str:
    """The library as docs/behaviours.md lists it."""
    rows = [
        "| behaviour | kind | needs | via | what it does |",
        "|---|---|---|---|---|",
    ]
    for d in declarations():
        rows.append(
            f"| `{d.name}` | {d.kind} | {', '.join(d.needs) or '-'} | "
            f"{', '.join(d.via) or '-'} | {d.summary.replace('|', '/')} |"
        )
    return "\n".join([DOC_BEGIN, *rows, DOC_END])


def with_doc_table(doc: str) -> str:
    head, _, rest = doc.partition(DOC_BEGIN)
    _, _, tail = rest.partition(DOC_END)
    return head + doc_table() + tail


def main(argv: list[str]) -> int:
    path = Path(__file__).parent / CATALOG
    docs = Path(__file__).resolve().parent.parent / "docs" / "behaviours.md"
    text = catalog_text()
    if argv == ["--write"]:
        path.write_text(text, "utf-8")
        if docs.is_file():
            docs.write_text(with_doc_table(docs.read_text("utf-8")), "utf-8")
        print(f"{path}: {len(declarations())} behaviours (and the table of {docs})")
        return 0
    if argv == ["--check"]:
        same = path.is_file() and path.read_text("utf-8") == text
        print(f"{path}: {'up to date' if same else 'differs from the code: run --write'}")
        return 0 if same else 1
    print("usage: python -m specstack_runtime.registry --write | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # As a script this file is __main__; the behaviours register with the imported module.
    from specstack_runtime import registry as _imported

    raise SystemExit(_imported.main(sys.argv[1:]))
