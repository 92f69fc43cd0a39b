"""Validation: the spec's JSON Schema, the OpenAPI documents, then cross-references."""

from __future__ import annotations

from pathlib import Path

from generator.diagnostics import Diagnostic, sort_diagnostics
from generator.load import LoadedSpec, load_spec
from generator.validate.openapi import check_openapi
from generator.validate.schema import check_schema
from generator.validate.xref import check_xrefs


def validate(spec: LoadedSpec) -> list[Diagnostic]:
    """Every problem in the spec, in file order.

    Cross-references are checked only once every file has the right shape, so
    one structural slip does not turn into a cascade of follow-on messages.
    """
    diags = check_schema(spec) + check_openapi(spec)
    if not diags:
        diags = check_xrefs(spec)
    return sort_diagnostics(diags)


def load_and_validate(root: Path) -> tuple[LoadedSpec, list[Diagnostic]]:
    """Load the spec at `root` and validate it; files that fail to parse stop the checks there."""
    spec, diags = load_spec(root)
    if diags:
        return spec, sort_diagnostics(diags)
    return spec, validate(spec)
