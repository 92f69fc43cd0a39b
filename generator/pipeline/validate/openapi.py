"""Check the OpenAPI documents (spec/apis/*.yaml) with openapi-spec-validator."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import LoadedSpec, PathElem, SpecFile, to_plain
from generator.pipeline.validate.engine_args import check_engine_args
from generator.pipeline.validate.paths import dotted
from generator.pipeline.validate.refs import canonical_path, check_refs
from specstack_runtime import policy

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def operations_of(doc: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) of each operation of an OpenAPI document, in its order."""
    paths = doc.get("paths")
    for path, item in (paths if isinstance(paths, dict) else {}).items():
        for method in HTTP_METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if isinstance(op, dict):
                yield path, method, op


def check_openapi(spec: LoadedSpec, *, documents: bool = True) -> list[Diagnostic]:
    """Local `$ref`s and the structural rules of every schema-bearing file.

    With `documents`, each API document also goes through openapi-spec-validator.
    """
    diags: list[Diagnostic] = []
    for f in spec.files:
        data = to_plain(f.data)
        if f.kind in ("messages", "hypervisors"):
            diags.extend(check_refs(f, data))
        elif f.kind == "openapi":
            structure = check_structure(f, data)
            diags.extend(structure)
            if documents and not structure:
                diags.extend(_validator_verdict(f, data))
    return diags


def check_structure(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """What must hold before the document can be validated or used: version, refs, ids."""
    if not isinstance(doc, dict):
        return [f.at([], f"expected an OpenAPI 3.1 document (a mapping), got {_kind(doc)}")]
    version = doc.get("openapi")
    if not (isinstance(version, str) and version.startswith("3.1.")):
        return [f.at(["openapi"], f"openapi: expected an OpenAPI 3.1 document, got {version!r}")]
    paths = doc.get("paths")
    if paths is not None and not isinstance(paths, dict):
        return [f.at(["paths"], f"paths: expected a mapping of path templates, got {_kind(paths)}")]
    diags = check_refs(f, doc)
    diags.extend(_duplicate_operation_ids(f, doc))
    diags.extend(_operations_without_ids(f, doc))
    diags.extend(_info_extensions(f, doc))
    diags.extend(_policies(f, doc))
    diags.extend(_operation_versions(f, doc))
    diags.extend(check_engine_args(f, doc, HTTP_METHODS))
    return diags


def _operation_versions(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """Each `x-specstack-since` of an operation or a response is within its API's range."""
    info = doc.get("info")
    mv = info.get("x-specstack-microversion") if isinstance(info, dict) else None
    span = None
    if isinstance(mv, dict) and not _version_range(f, [], mv):
        low, high = (_MICROVERSION.fullmatch(str(mv[k])) for k in ("min", "max"))
        assert low is not None and high is not None
        span = ((int(low[1]), int(low[2])), (int(high[1]), int(high[2])))
    diags: list[Diagnostic] = []
    for path, method, op in operations_of(doc):
        places: list[tuple[list[str | int], Any]] = []
        if "x-specstack-since" in op:
            places.append((["paths", path, method], op["x-specstack-since"]))
        if "x-specstack-until" in op:
            diags += _since(
                f, ["paths", path, method, "x-specstack-until"], op["x-specstack-until"], span
            )
        for status, resp in (op.get("responses") or {}).items():
            if isinstance(resp, dict) and "x-specstack-since" in resp:
                place: list[str | int] = ["paths", path, method, "responses", status]
                places.append((place, resp["x-specstack-since"]))
        for place, since in places:
            diags += _since(f, [*place, "x-specstack-since"], since, span)
    return diags


def _since(
    f: SpecFile,
    where: list[str | int],
    since: Any,
    span: tuple[tuple[int, int], tuple[int, int]] | None,
) -> list[Diagnostic]:
    """One `x-specstack-since`: a version above the API's minimum, not above its maximum."""
    what = f"{str(where[2]).upper()} {where[1]}: {where[-1]}"
    got = _MICROVERSION.fullmatch(since) if isinstance(since, str) else None
    if span is None:
        return [f.at(where, f"{what}: the API declares no x-specstack-microversion")]
    if got is None:
        return [f.at(where, f"{what}: expected a version like '2.26'")]
    if not span[0] < (int(got[1]), int(got[2])) <= span[1]:
        return [f.at(where, f"{what}: {since} is not above min and within max of the API")]
    return []


def _policies(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """Each operation's `x-specstack-policy` is a rule in oslo.policy's language."""
    diags: list[Diagnostic] = []
    for path, method, op in operations_of(doc):
        where: list[str | int] = ["paths", path, method, "x-specstack-policy"]
        what = f"{method.upper()} {path}: x-specstack-policy"
        if "x-specstack-policy" in op:
            rule = op["x-specstack-policy"]
            problem = policy.check(rule) if isinstance(rule, str) else "expected a string rule"
            if problem is not None:
                diags.append(f.at(where, f"{what}: {problem}"))
        for i, param in enumerate(op.get("parameters") or ()):
            if not isinstance(param, dict) or "x-specstack-policy-target" not in param:
                continue
            template = param["x-specstack-policy-target"]
            if not (isinstance(template, str) and _TEMPLATE_REF.search(template)):
                diags.append(
                    f.at(
                        ["paths", path, method, "parameters", i, "x-specstack-policy-target"],
                        f"{method.upper()} {path}: x-specstack-policy-target must be a "
                        "template naming target attributes, like 'AUTH_%(project_id)s'",
                    )
                )
    return diags


_TEMPLATE_REF = re.compile(r"%\([A-Za-z_][A-Za-z0-9_.]*\)s")


_MICROVERSION = re.compile(r"(\d{1,4})\.(\d{1,4})")


def _info_extensions(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """`x-specstack-microversion` and `x-specstack-request-id-headers` of `info`."""
    info = doc.get("info")
    if not isinstance(info, dict):
        return []
    diags: list[Diagnostic] = []
    mv = info.get("x-specstack-microversion")
    where: list[str | int] = ["info", "x-specstack-microversion"]
    if mv is not None:
        if not isinstance(mv, dict) or not isinstance(mv.get("service"), str):
            diags.append(f.at(where, "x-specstack-microversion: needs a service name"))
        else:
            headers = mv.get("headers", [])
            if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
                diags.append(f.at([*where, "headers"], "headers: expected a list of names"))
            diags += _version_range(f, where, mv)
    ids = info.get("x-specstack-request-id-headers")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(h, str) for h in ids)):
        diags.append(
            f.at(
                ["info", "x-specstack-request-id-headers"],
                "x-specstack-request-id-headers: expected a list of header names",
            )
        )
    return diags


def _version_range(f: SpecFile, where: list[str | int], mv: dict[str, Any]) -> list[Diagnostic]:
    """`min` and `max`: MAJOR.MINOR strings, `min` not above `max`."""
    got: dict[str, tuple[int, int]] = {}
    diags: list[Diagnostic] = []
    for key in ("min", "max"):
        value = mv.get(key)
        m = _MICROVERSION.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            diags.append(
                f.at([*where, key] if key in mv else where, f"{key}: expected a version like '2.1'")
            )
        else:
            got[key] = (int(m[1]), int(m[2]))
    if len(got) == 2 and got["min"] > got["max"]:
        diags.append(f.at([*where, "min"], f"min {mv['min']} is above max {mv['max']}"))
    return diags


def check_document(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """openapi-spec-validator's verdict on a structurally sound document.

    The validator takes about a second per large document, so a document it found
    sound is remembered by its digest: an unchanged document is not checked again.
    """
    if check_structure(f, doc):
        return []  # reported by check_structure; the validator cannot get past it
    return _validator_verdict(f, doc)


def _validator_verdict(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """`check_document` past the structure: the validator, or the verdict it gave before."""
    from generator.pipeline.cache import DigestCache, digest, dist_version, source_digest

    # the file's bytes stand for the document it parses to (hashing them is cheaper)
    document = f.raw if doc is f.data else doc
    key = digest(source_digest(__file__), dist_version("openapi-spec-validator"), document)
    cache = DigestCache("openapi-verdicts")
    if cache.get(key) == "sound":
        return []
    diags = _validator_problems(f, doc)
    if not diags:
        cache.put(key, "sound")
    return diags


def _validator_problems(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    from jsonschema.exceptions import ValidationError
    from openapi_spec_validator import OpenAPIV31SpecValidator

    diags: list[Diagnostic] = []
    for err in _errors(OpenAPIV31SpecValidator(doc)):
        if isinstance(err, Exception) and not isinstance(err, ValidationError):
            # its checks past the schema assume a document the schema accepted
            if not diags:
                diags.append(f.at([], f"openapi-spec-validator failed on this document: {err!r}"))
            break
        if type(err).__name__ == "DuplicateOperationIDError":
            continue  # reported by check_structure, at the second use
        message = getattr(err, "message", str(err)).splitlines()[0]
        stray = _stray_path_parameter(doc, message)
        if stray is not None:
            diags.append(stray(f))
            continue
        path = list(getattr(err, "absolute_path", []) or []) or _path_in_message(message)
        path = canonical_path(doc, _in_document(doc, path, getattr(err, "instance", None)))
        diags.append(f.at(path, f"{dotted(path)}: {message}"))
    return diags


_MISSING = object()


def _walk(node: Any, path: list[PathElem]) -> Any:
    """The node at `path`, where a number may also name a mapping's key ("201")."""
    for elem in path:
        if isinstance(node, dict):
            node = node.get(elem, node.get(str(elem), _MISSING))
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            node = node[elem]
        else:
            return _MISSING
    return node


def _containers(node: Any, path: list[PathElem]) -> Iterator[tuple[list[PathElem], Any]]:
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, dict | list):
            yield from _containers(value, [*path, key])


def _in_document(doc: dict[str, Any], path: list[PathElem], instance: Any) -> list[PathElem]:
    """The error's path from the document's root.

    Errors about a Schema Object carry a path from that Schema Object; it is found as
    the first place in the document from which the path leads to the offending value.
    """
    if _walk(doc, path) is not _MISSING:  # a path from the root already
        return [str(e) if isinstance(_walk(doc, path[:i]), dict) else e for i, e in enumerate(path)]
    if instance is None or not path:
        return path
    for same in (lambda a, b: a is b, lambda a, b: a == b):
        for base, node in _containers(doc, []):
            value = _walk(node, path)
            if value is not _MISSING and same(value, instance):
                return [*base, *path]
    return path


def _errors(validator: Any) -> Iterator[Any]:
    """The validator's errors, then the exception it stopped with, if it did."""
    errors = validator.iter_errors()
    while True:
        try:
            yield next(errors)
        except StopIteration:
            return
        except Exception as exc:  # reported as a problem of the document
            yield exc
            return


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


_OPERATION_IN = re.compile(r"for '(\w+)' operation in '([^']+)'")


def _path_in_message(message: str) -> list[str | int]:
    """Some validator errors carry no path; their text names the operation."""
    m = _OPERATION_IN.search(message)
    return ["paths", m.group(2), m.group(1)] if m else []


_UNRESOLVED = re.compile(r"Path parameter '([^']+)' for '(\w+)' operation in '([^']+)' was not")


def _stray_path_parameter(
    doc: dict[str, Any], message: str
) -> Callable[[SpecFile], Diagnostic] | None:
    """The validator's "path parameter was not resolved", when the parameter is declared
    (`in: path`) but the path template has no such `{name}`: point at the declaration."""
    m = _UNRESOLVED.search(message)
    if m is None:
        return None
    name, method, template = m.groups()
    item = (doc.get("paths") or {}).get(template)
    if not isinstance(item, dict):
        return None
    for where in (["paths", template, method], ["paths", template]):
        owner = item.get(method) if len(where) == 3 else item
        params = owner.get("parameters") if isinstance(owner, dict) else None
        for i, param in enumerate(params if isinstance(params, list) else []):
            if isinstance(param, dict) and param.get("name") == name and param.get("in") == "path":
                at: list[str | int] = [*where, "parameters", i, "name"]
                text = (
                    f"{dotted(at)}: path parameter '{name}' is declared, but the path "
                    f"'{template}' has no {{{name}}}"
                )
                return lambda f: f.at(at, text)
    return None


def _operations_without_ids(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for path, method, op in operations_of(doc):
        where: list[str | int] = ["paths", path, method]
        if not isinstance(op.get("operationId"), str):
            diags.append(
                f.at(where, f"{method.upper()} {path}: operation has no operationId", key=True)
            )
        behaviour = op.get("x-specstack-behaviour")
        if behaviour is not None and not (
            isinstance(behaviour, str) and _BEHAVIOUR.fullmatch(behaviour)
        ):
            diags.append(
                f.at(
                    [*where, "x-specstack-behaviour"],
                    f"{method.upper()} {path}: x-specstack-behaviour must be a name like "
                    "'family.name'",
                )
            )
    return diags


_BEHAVIOUR = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def _duplicate_operation_ids(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    seen: dict[str, str] = {}
    diags: list[Diagnostic] = []
    for path, method, op in operations_of(doc):
        if isinstance(op.get("operationId"), str):
            oid = op["operationId"]
            where = ["paths", path, method, "operationId"]
            if oid in seen:
                diags.append(f.at(where, f"operationId '{oid}' is already used by {seen[oid]}"))
            else:
                seen[oid] = f"{method.upper()} {path}"
    return diags
