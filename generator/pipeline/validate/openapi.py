"""Check the OpenAPI documents (spec/apis/*.yaml) with openapi-spec-validator."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.forkpool import Worker
from generator.pipeline.load import LoadedSpec, SpecFile, parse_file, to_plain
from generator.pipeline.validate.paths import dotted
from generator.pipeline.validate.refs import canonical_path, check_refs
from specstack_runtime import policy

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def check_openapi(spec: LoadedSpec, *, documents: bool = True) -> list[Diagnostic]:
    """Local `$ref`s and the structural rules of every schema-bearing file.

    With `documents`, each API document also goes through openapi-spec-validator
    here; without, the caller runs that part (see `DocumentChecks`).
    """
    diags: list[Diagnostic] = []
    for f in spec.files:
        data = to_plain(f.data)
        if f.kind in ("messages", "hypervisors"):
            diags.extend(check_refs(f, data))
        elif f.kind == "openapi":
            diags.extend(check_structure(f, data))
            if documents:
                diags.extend(check_document(f, data))
    return diags


@cache
def _validator_class() -> type[Any]:
    """openapi-spec-validator's 3.1 validator, its two JSON Schema checks answered fast.

    Most of its time goes to two JSON Schema validations in pure Python: the
    whole document against the OAS 3.1 schema, and every Schema Object against
    the OAS 3.1 dialect. jsonschema-rs gives the same verdict in a fraction of
    the time; only when it finds a problem does jsonschema run, so the error
    reported (message and path) is the one openapi-spec-validator always gave.
    """
    import jsonschema_rs
    from jsonschema import Draft202012Validator
    from openapi_schema_validator import OAS31_BASE_DIALECT_ID
    from openapi_spec_validator import OpenAPIV31SpecValidator
    from openapi_spec_validator.schemas import schema_v31
    from openapi_spec_validator.validation.keywords import OpenAPIV31SchemaValidator

    dialect = _rs_dialect_validator(jsonschema_rs, OAS31_BASE_DIALECT_ID)

    class FastSchemaValidator(OpenAPIV31SchemaValidator):  # type: ignore[misc,unused-ignore]
        def _get_schema_checker(self, schema: Any, schema_value: Any) -> Callable[[Any], None]:
            check: Callable[[Any], None] = super()._get_schema_checker(schema, schema_value)
            if self._get_schema_dialect_id(schema, schema_value) != OAS31_BASE_DIALECT_ID:
                return check

            def fast_check(value: Any) -> None:
                if not dialect.is_valid(value):
                    check(value)

            return fast_check

        def _validate_schema_meta(self, schema: Any, schema_value: Any) -> Any:
            # The error's path starts at the Schema Object; make it the document's.
            err = super()._validate_schema_meta(schema, schema_value)
            if err is not None and getattr(err, "parent", None) is None:
                err.path.extendleft(reversed(schema.parts))
            return err

    document = _FastVerdict(
        jsonschema_rs.validator_for(dict(schema_v31)),
        Draft202012Validator(_static_meta(schema_v31)),
    )

    class FastOpenAPIV31SpecValidator(OpenAPIV31SpecValidator):  # type: ignore[misc,unused-ignore]
        schema_validator = document
        keyword_validators = {  # noqa: RUF012 (as the base class declares it)
            **OpenAPIV31SpecValidator.keyword_validators,
            "schema": FastSchemaValidator,
        }

    return FastOpenAPIV31SpecValidator


class _FastVerdict:
    """A JSON Schema validator whose verdict comes from jsonschema-rs, its errors from jsonschema."""

    def __init__(self, fast: Any, explain: Any) -> None:
        self._fast, self._explain = fast, explain

    def iter_errors(self, instance: Any) -> Iterator[Any]:
        if self._fast.is_valid(instance):
            return iter(())
        return iter(self._explain.iter_errors(instance))


def _rs_dialect_validator(jsonschema_rs: Any, dialect_id: str) -> Any:
    """jsonschema-rs's validator for the OAS 3.1 Schema Object dialect (formats checked)."""
    from openapi_schema_validator._specifications import REGISTRY

    oas = [uri for uri in REGISTRY if uri.startswith("https://spec.openapis.org/oas/3.1/")]
    resources = jsonschema_rs.Registry([(uri, REGISTRY.contents(uri)) for uri in oas])
    return jsonschema_rs.validator_for(
        REGISTRY.contents(dialect_id), registry=resources, validate_formats=True
    )


def _static_meta(schema: Any) -> Any:
    """The OAS 3.1 schema with its `$dynamicRef`s to the Schema Object dialect made static.

    The schema reaches the dialect through `$dynamicRef: "#meta"`, which jsonschema
    resolves by crawling the registry on every use. Documents that declare no
    `jsonSchemaDialect` always use the default dialect, so pointing those
    references at it directly validates the same thing, about five times faster.
    """
    if isinstance(schema, Mapping):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "$dynamicRef" and value == "#meta":
                out["$ref"] = "#/$defs/schema"
            elif key != "$dynamicAnchor":
                out[key] = _static_meta(value)
        return out
    if isinstance(schema, list | tuple):
        return [_static_meta(v) for v in schema]
    return schema


def _check_files(root: Path, rels: list[str]) -> list[Diagnostic]:
    """Parse and check API documents (runs in a worker process)."""
    diags: list[Diagnostic] = []
    for rel in rels:
        f, _ = parse_file(root, rel, "openapi")
        if f is not None:
            diags.extend(check_document(f, to_plain(f.data)))
    return diags


class DocumentChecks:
    """The API documents' checks, started in a forked worker so they overlap other work.

    Checking the six API documents is the slowest part of validation; on a machine
    with two cores it runs beside loading, cross-referencing and rendering.
    """

    def __init__(self, root: Path, rels: list[str]) -> None:
        self._worker = Worker() if len(rels) > 1 else Worker.inline()
        self._result = self._worker.submit(_check_files, root, rels)

    def result(self) -> list[Diagnostic]:
        try:
            return self._result()
        finally:
            self._worker.close()


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
    return diags


def _policies(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """Each operation's `x-specstack-policy` is a rule in oslo.policy's language."""
    diags: list[Diagnostic] = []
    for path, item in (doc.get("paths") or {}).items():
        for method in HTTP_METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if not isinstance(op, dict):
                continue
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
            if not isinstance(mv.get("version", info.get("version")), str):
                diags.append(f.at([*where, "version"], "version: expected a string like '2.1'"))
    ids = info.get("x-specstack-request-id-headers")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(h, str) for h in ids)):
        diags.append(
            f.at(
                ["info", "x-specstack-request-id-headers"],
                "x-specstack-request-id-headers: expected a list of header names",
            )
        )
    return diags


def check_document(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    """openapi-spec-validator's verdict on a structurally sound document."""
    if check_structure(f, doc):
        return []  # reported by check_structure; the validator cannot get past it
    from jsonschema.exceptions import ValidationError

    diags: list[Diagnostic] = []
    for err in _errors(_validator_class()(doc)):
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
        path = canonical_path(doc, path)
        diags.append(f.at(path, f"{dotted(path)}: {message}"))
    return diags


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
    for path, item in (doc.get("paths") or {}).items():
        for method in HTTP_METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if not isinstance(op, dict):
                continue
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
    for path, item in (doc.get("paths") or {}).items():
        for method in HTTP_METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if isinstance(op, dict) and isinstance(op.get("operationId"), str):
                oid = op["operationId"]
                where = ["paths", path, method, "operationId"]
                if oid in seen:
                    diags.append(f.at(where, f"operationId '{oid}' is already used by {seen[oid]}"))
                else:
                    seen[oid] = f"{method.upper()} {path}"
    return diags
