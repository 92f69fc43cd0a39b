"""Validation: the spec's JSON Schema, the OpenAPI documents, then cross-references."""

from __future__ import annotations

from pathlib import Path

from generator.pipeline.diagnostics import Diagnostic, sort_diagnostics
from generator.pipeline.load import LoadedSpec, load_spec
from generator.pipeline.validate.behaviours import check_behaviours
from generator.pipeline.validate.celshapes import check_cel_shapes
from generator.pipeline.validate.openapi import check_openapi
from generator.pipeline.validate.resources import check_resources
from generator.pipeline.validate.schema import check_schema
from generator.pipeline.validate.steps import check_step_bindings
from generator.pipeline.validate.xref import build_index, check_xrefs


def check_references(spec: LoadedSpec) -> list[Diagnostic]:
    """Cross-references; then, once the wiring holds, what the behaviour library and the
    resource model need (so one slip does not cascade)."""
    diags = check_xrefs(spec)
    if not diags:
        diags = check_behaviours(spec) + check_resources(spec, build_index(spec))
        diags += check_step_bindings(spec) + check_cel_shapes(spec)
    return diags


def validate(spec: LoadedSpec) -> list[Diagnostic]:
    """Every problem in the spec, in file order.

    Cross-references are checked only once every file has the right shape, so
    one structural slip does not turn into a cascade of follow-on messages.
    """
    diags = check_schema(spec) + check_openapi(spec)
    if not diags:
        diags = check_references(spec)
    return sort_diagnostics(diags)


def load_and_validate(root: Path) -> tuple[LoadedSpec, list[Diagnostic]]:
    """Load the spec at `root` and validate it.

    Files that fail to parse are reported, the others still get their schema
    checks; cross-references wait until every file is well-formed.
    """
    spec, load_diags = load_spec(root)
    diags = load_diags + check_schema(spec) + check_openapi(spec)
    if not diags:
        diags = check_references(spec)
    return spec, sort_diagnostics(diags)
