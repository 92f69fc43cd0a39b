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
    if not diags:
        diags = _type_cycles(f, doc) if f.kind in TYPE_FILES else _bare_ref_cycles(f, doc)
    return diags


#: Files whose `types` become model classes, one per type: types must not contain each other.
TYPE_FILES = ("messages", "hypervisors")
_TYPE_PREFIX = "#/types/"


def _type_cycles(f: SpecFile, doc: Any) -> list[Diagnostic]:
    """Types that refer to each other (`A` has a `B` that has an `A`), each cycle once.

    Their models would need each other to be defined first; the cycle is reported
    at the `$ref` that closes it from the first type (by name) on it.
    """
    types = doc.get("types") if isinstance(doc, dict) else None
    if not isinstance(types, dict):
        return []
    edges: dict[str, list[tuple[str, list[PathElem]]]] = {}
    for name, schema in types.items():
        for path, ref in iter_refs(schema, ["types", name]):
            if isinstance(ref, str) and ref.startswith(_TYPE_PREFIX):
                target = _pointer_elem(ref[len(_TYPE_PREFIX) :].split("/")[0])
                edges.setdefault(str(name), []).append((str(target), [*path, "$ref"]))
    diags: list[Diagnostic] = []
    reported: set[frozenset[str]] = set()
    for start in sorted(edges):
        cycle = _cycle_from(start, edges)
        if cycle is None or frozenset(n for n, _ in cycle) in reported:
            continue
        reported.add(frozenset(n for n, _ in cycle))
        names = " -> ".join([*(n for n, _ in cycle), cycle[0][0]])
        where = cycle[0][1]
        diags.append(
            f.at(
                where,
                f"{dotted(where)}: $ref cycle {names}: types that contain each other "
                "cannot become models",
            )
        )
    return diags


def _cycle_from(
    start: str, edges: dict[str, list[tuple[str, list[PathElem]]]]
) -> list[tuple[str, list[PathElem]]] | None:
    """A cycle through `start` as (type, the `$ref` it leaves by) pairs, if there is one."""
    trail: list[tuple[str, list[PathElem]]] = []
    seen: set[str] = set()

    def walk(node: str) -> bool:
        for target, where in edges.get(node, []):
            trail.append((node, where))
            if target == start:
                return True
            if target not in seen:
                seen.add(target)
                if walk(target):
                    return True
            trail.pop()
        return False

    return trail if walk(start) else None


def _bare_ref_cycles(f: SpecFile, doc: Any) -> list[Diagnostic]:
    """Schemas that are only a `$ref` to one another, round to the first: no schema at all.

    (A schema that contains itself through a property is a recursive type, and allowed.)
    """
    diags: list[Diagnostic] = []
    reported: set[frozenset[str]] = set()
    for path, ref in iter_refs(doc):
        here = "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)
        chain = [here]
        while isinstance(ref, str) and ref not in chain:
            chain.append(ref)
            found, node = resolve_pointer(doc, ref)
            ref = node.get("$ref") if found and isinstance(node, dict) else None
        if ref != here or frozenset(chain) in reported:
            continue
        reported.add(frozenset(chain))
        where = [*path, "$ref"]
        names = " -> ".join([*chain, here])
        diags.append(
            f.at(where, f"{dotted(where)}: $ref cycle {names}: these schemas are only references")
        )
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
