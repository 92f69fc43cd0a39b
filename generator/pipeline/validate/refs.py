"""Local `$ref` pointers: find them and report the ones that lead nowhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import PathElem, SpecFile
from generator.pipeline.validate.paths import dotted


def iter_refs(
    node: Any, path: list[PathElem] | None = None
) -> Iterator[tuple[list[PathElem], Any]]:
    """(path of the `$ref` key's mapping, the ref value) for every `$ref` under `node`."""
    path = path or []
    if isinstance(node, dict):
        if "$ref" in node:
            yield path, node["$ref"]
        for k, v in node.items():
            yield from iter_refs(v, [*path, k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_refs(v, [*path, i])


def resolve_pointer(doc: Any, pointer: str) -> tuple[bool, Any]:
    """Follow a JSON pointer such as `#/components/schemas/Server` inside `doc`."""
    if not pointer.startswith("#"):
        return False, None
    node = doc
    for raw in pointer[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def check_refs(f: SpecFile, doc: Any) -> list[Diagnostic]:
    """Every `$ref` must be a local pointer that resolves inside the same file."""
    diags: list[Diagnostic] = []
    for path, ref in iter_refs(doc):
        where = [*path, "$ref"]
        if not isinstance(ref, str):
            diags.append(f.at(where, f"{dotted(where)}: $ref must be a string"))
        elif not ref.startswith("#/"):
            diags.append(
                f.at(where, f"{dotted(where)}: $ref '{ref}' must point inside this file ('#/...')")
            )
        elif not resolve_pointer(doc, ref)[0]:
            diags.append(f.at(where, f"{dotted(where)}: $ref '{ref}' does not resolve"))
    return diags


def canonical_path(doc: Any, path: list[PathElem]) -> list[PathElem]:
    """`path` with every `$ref` it passes through replaced by the place it points to.

    Validators that follow references report paths through them; the author
    wants the line where the referenced schema is written.
    """
    out: list[PathElem] = []
    node = doc
    for elem in path:
        seen: set[str] = set()
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            found, target = resolve_pointer(doc, ref)
            if not found or ref in seen:
                return path
            seen.add(ref)
            out = [_pointer_elem(raw) for raw in ref[2:].split("/")] if ref != "#" else []
            node = target
        in_dict = isinstance(node, dict) and elem in node
        in_list = isinstance(node, list) and isinstance(elem, int) and elem < len(node)
        if not (in_dict or in_list):
            return path  # not in the document as written: keep the validator's own path
        node = node[elem]
        out.append(elem)
    return out


def _pointer_elem(raw: str) -> PathElem:
    return raw.replace("~1", "/").replace("~0", "~")
