"""Validation: the spec's JSON Schema, the OpenAPI documents, then cross-references."""

from __future__ import annotations

from pathlib import Path

from generator.pipeline.diagnostics import Diagnostic, sort_diagnostics
from generator.pipeline.load import GROUP_DIRS, LoadedSpec, load_spec, to_plain
from generator.pipeline.validate.behaviours import check_behaviours
from generator.pipeline.validate.openapi import DocumentChecks, check_document, check_openapi
from generator.pipeline.validate.resources import check_resources
from generator.pipeline.validate.schema import check_schema
from generator.pipeline.validate.xref import build_index, check_xrefs


def check_references(spec: LoadedSpec) -> list[Diagnostic]:
    """Cross-references; then, once the wiring holds, what the behaviour library and the
    resource model need (so one slip does not cascade)."""
    diags = check_xrefs(spec)
    if not diags:
        diags = check_behaviours(spec) + check_resources(spec, build_index(spec))
    return diags


def validate(spec: LoadedSpec, *, documents: bool = True) -> list[Diagnostic]:
    """Every problem in the spec, in file order.

    Cross-references are checked only once every file has the right shape, so
    one structural slip does not turn into a cascade of follow-on messages.
    With `documents=False` the API documents themselves are left to the caller
    (see `check_documents` and `start_document_checks`).
    """
    diags = check_schema(spec) + check_openapi(spec, documents=documents)
    if not diags:
        diags = check_references(spec)
    return sort_diagnostics(diags)


def check_documents(spec: LoadedSpec) -> list[Diagnostic]:
    """openapi-spec-validator's verdict on every API document that loaded."""
    return [d for f in spec.of_kind("openapi") for d in check_document(f, to_plain(f.data))]


def start_document_checks(root: Path) -> DocumentChecks:
    apis = sorted((root / "apis").glob("*.yaml")) if (root / "apis").is_dir() else []
    api_dir = next(d for d, kind in GROUP_DIRS.items() if kind == "openapi")
    return DocumentChecks(root, [f"{api_dir}/{p.name}" for p in apis])


def load_and_validate(root: Path) -> tuple[LoadedSpec, list[Diagnostic]]:
    """Load the spec at `root` and validate it.

    Files that fail to parse are reported, the others still get their schema
    checks; cross-references wait until every file is well-formed.
    """
    checks = start_document_checks(root)
    spec, load_diags = load_spec(root)
    diags = load_diags + check_schema(spec) + check_openapi(spec, documents=False)
    doc_diags = checks.result()
    if not diags and not doc_diags:
        diags = check_references(spec)
    return spec, sort_diagnostics(diags + doc_diags)
