"""What an operation's `x-specstack-args` states for the engine's helpers (`listing`,
`headers`, `metadata`, `values`; docs/behaviours.md) has their shape, so a slip in the
spec is reported here rather than failing requests."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import SpecFile
from specstack_runtime.resources.headerfields import FORMATS

_FORMAT = {"enum": sorted(FORMATS)}
_FIELD = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {"field": {"type": "string"}, "format": _FORMAT},
            "required": ["field"],
            "additionalProperties": False,
        },
    ]
}


def _header(required: str, value: dict[str, Any], **more: Any) -> dict[str, Any]:
    props = {required: value, "format": _FORMAT, **more}
    return {
        "type": "object",
        "properties": props,
        "required": [required],
        "additionalProperties": False,
    }


_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "listing": {
            "type": "object",
            "properties": {
                "max_limit": {"type": "integer", "minimum": 1},
                "root": {"type": "string"},
                "item": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": _FIELD, "minProperties": 1},
            },
            "required": ["max_limit", "root", "item", "fields"],
            "additionalProperties": False,
        },
        "headers": {
            "type": "object",
            "additionalProperties": {
                "oneOf": [
                    {"type": "string"},  # a constant
                    _header("field", {"type": "string"}),
                    _header("value", {"type": ["string", "integer"]}),
                    _header("count", {"const": True}),
                    _header("sum", {"type": "string"}),
                    _header("min", {"type": "string"}, default={"const": "now"}),
                    _header("entries", {"type": "string"}),
                ]
            },
        },
        "metadata": {
            "type": "object",
            "properties": {
                "headers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "remove": {"type": "string", "pattern": "-$"},
                "field": {"type": "string"},
            },
            "required": ["headers"],
            "additionalProperties": False,
        },
        "values": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}
_VALIDATOR = Draft202012Validator(_SCHEMA)


def check_engine_args(
    f: SpecFile, doc: dict[str, Any], methods: tuple[str, ...]
) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for path, item in (doc.get("paths") or {}).items():
        for method in methods:
            op = item.get(method) if isinstance(item, dict) else None
            args = op.get("x-specstack-args") if isinstance(op, dict) else None
            if not isinstance(args, dict):
                continue
            for error in _VALIDATOR.iter_errors(args):
                where = ["paths", path, method, "x-specstack-args", *error.absolute_path]
                shown = ".".join(str(p) for p in error.absolute_path)
                diags.append(
                    f.at(
                        where, f"{method.upper()} {path}: x-specstack-args.{shown}: {error.message}"
                    )
                )
    return diags
