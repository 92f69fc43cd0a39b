"""Check the OpenAPI documents (spec/apis/*.yaml) with openapi-spec-validator."""

from __future__ import annotations

from typing import Any

from generator.diagnostics import Diagnostic
from generator.load import LoadedSpec, SpecFile, to_plain
from generator.validate.paths import dotted
from generator.validate.refs import check_refs

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def check_openapi(spec: LoadedSpec) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for f in spec.files:
        data = to_plain(f.data)
        if f.kind in ("messages", "hypervisors"):
            diags.extend(check_refs(f, data))
        elif f.kind == "openapi":
            diags.extend(check_document(f, data))
    return diags


def check_document(f: SpecFile, doc: dict[str, Any]) -> list[Diagnostic]:
    version = doc.get("openapi")
    if not (isinstance(version, str) and version.startswith("3.1.")):
        return [f.at(["openapi"], f"openapi: expected an OpenAPI 3.1 document, got {version!r}")]
    # The validator cannot report anything useful past an unresolvable pointer.
    diags = check_refs(f, doc)
    if diags:
        return diags
    diags.extend(_duplicate_operation_ids(f, doc))
    from openapi_spec_validator import OpenAPIV31SpecValidator

    for err in OpenAPIV31SpecValidator(doc).iter_errors():
        path = list(getattr(err, "absolute_path", []) or [])
        message = getattr(err, "message", str(err)).splitlines()[0]
        diags.append(f.at(path, f"{dotted(path)}: {message}"))
    return diags


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
                    diags.append(
                        f.at(where, f"operationId '{oid}' is already used by {seen[oid]}")
                    )
                else:
                    seen[oid] = f"{method.upper()} {path}"
    return diags
