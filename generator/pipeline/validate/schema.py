"""Check each spec file against the spec's own JSON Schema (2020-12)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import LoadedSpec, SpecFile, to_plain
from generator.pipeline.validate.paths import dotted

if TYPE_CHECKING:  # jsonschema is imported when a file is checked, not when found sound
    from jsonschema.exceptions import ValidationError

#: The `$defs` entry each kind of file must match.
FILE_DEFS = {
    "stack": "stackFile",
    "components": "componentsFile",
    "topology": "topologyFile",
    "messages": "messagesFile",
    "hypervisors": "hypervisorsFile",
    "sequence": "sequenceFile",
    "policy": "policyFile",
    "traces": "tracesFile",
    "steps": "stepsFile",
    "resources": "resourcesFile",
}


@cache
def _schema_text() -> str:
    path = resources.files("generator.pipeline").joinpath("schema/spec.schema.json")
    return path.read_text("utf-8")


@cache
def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def _is_integer(_checker: Any, instance: Any) -> bool:
    # YAML `3.0` is a float: a step number or a port must be written as an integer.
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _strict_validator_class() -> Any:
    """Draft 2020-12, with integers that are not floats."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import extend

    return extend(
        Draft202012Validator,
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    )


@cache
def _validator(kind: str) -> Any:
    schema = dict(spec_schema())
    schema["$ref"] = f"#/$defs/{FILE_DEFS[kind]}"
    return _strict_validator_class()(schema)


def check_schema(spec: LoadedSpec) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for f in spec.files:
        if f.kind in FILE_DEFS:
            diags.extend(check_file(f))
    return diags


def check_file(f: SpecFile) -> list[Diagnostic]:
    """The file against its part of the spec's schema; a file found sound is remembered
    by the digest of its bytes (see `generator.pipeline.cache`) and not checked again."""
    from generator.pipeline.cache import DigestCache, digest, source_digest

    key = digest(source_digest(__file__), _schema_text().encode(), f.kind, f.raw)
    cache = DigestCache("spec-verdicts")
    if cache.get(key) == "sound":
        return []
    data = to_plain(f.data)
    diags = [_diagnostic(f, _leaf(e)) for e in _validator(f.kind).iter_errors(data)]
    diags.extend(_embedded_schemas(f, data))
    if not diags:
        cache.put(key, "sound")
    return diags


def _leaf(error: ValidationError) -> ValidationError:
    """For oneOf/anyOf/allOf failures, the sub-error that says most."""
    from jsonschema.exceptions import best_match

    if error.context:
        return _leaf(best_match(error.context))
    return error


def _diagnostic(f: SpecFile, e: ValidationError) -> Diagnostic:
    path = list(e.absolute_path)
    where = dotted(path)
    v = e.validator
    if "propertyNames" in e.absolute_schema_path:
        name = e.instance
        return f.at([*path, name], f"{where}: invalid name '{name}': {_name_rule(e)}", key=True)
    if v == "required":
        missing = _quoted_between(e.message)
        return f.at(path, f"{where}: missing required property {missing}", key=bool(path))
    if v in ("additionalProperties", "unevaluatedProperties"):
        extra = _unexpected(e)
        if extra is not None:
            return f.at([*path, extra], f"{where}: unknown property '{extra}'", key=True)
        return f.at(path, f"{where}: {e.message}")
    if v == "type":
        want = e.validator_value
        want_s = " or ".join(want) if isinstance(want, list) else str(want)
        return f.at(path, f"{where}: expected {want_s}, got {_json_type(e.instance)}")
    if v == "enum":
        opts = ", ".join(json.dumps(o) for o in e.validator_value)
        return f.at(path, f"{where}: {json.dumps(e.instance)} is not one of {opts}")
    if v == "const":
        return f.at(path, f"{where}: must be {json.dumps(e.validator_value)}")
    if v == "pattern":
        return f.at(path, f"{where}: {json.dumps(e.instance)} does not match {e.validator_value}")
    if v == "not" and isinstance(e.validator_value, dict) and "anyOf" in e.validator_value:
        keys = [k for alt in e.validator_value["anyOf"] for k in alt.get("required", [])]
        present = [k for k in keys if isinstance(e.instance, dict) and k in e.instance]
        return f.at(
            [*path, present[0]] if present else path,
            f"{where}: '{present[0] if present else keys[0]}' is only allowed here for kind api",
            key=bool(present),
        )
    if v == "not" and isinstance(e.validator_value, dict) and "required" in e.validator_value:
        key = e.validator_value["required"][0]
        return f.at([*path, key], f"{where}: '{key}' is not allowed here", key=True)
    return f.at(path, f"{where}: {e.message}")


def _name_rule(e: ValidationError) -> str:
    if e.validator == "pattern":
        return f"names must match {e.validator_value}"
    return str(e.message)


def _quoted_between(message: str) -> str:
    # jsonschema says "'port' is a required property"; keep the quoted name.
    return str(message.split(" is a required property")[0])


def _unexpected(e: ValidationError) -> str | None:
    if not isinstance(e.instance, dict):
        return None
    allowed = set(e.schema.get("properties", {})) if isinstance(e.schema, dict) else set()
    for key in e.instance:
        if key not in allowed and f"'{key}'" in e.message:
            return str(key)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "array"
    return "object"


def _embedded_schemas(f: SpecFile, data: dict[str, Any]) -> list[Diagnostic]:
    """Message payloads and driver types are themselves JSON Schemas: check them as such."""
    found: list[tuple[list[str | int], Any]] = []
    if f.kind == "messages":
        for name, msg in (data.get("messages") or {}).items():
            if isinstance(msg, dict):
                found += [(["messages", name, k], msg[k]) for k in ("payload", "reply") if k in msg]
    if f.kind in ("messages", "hypervisors"):
        found += [(["types", n], s) for n, s in (data.get("types") or {}).items()]
    diags: list[Diagnostic] = []
    if not found:
        return diags
    from jsonschema import Draft202012Validator

    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    for path, schema in found:
        for err in meta.iter_errors(schema):
            sub = [*path, *err.absolute_path]
            diags.append(f.at(sub, f"{dotted(sub)}: not a valid JSON Schema: {err.message}"))
    return diags
