"""The API documents' checks give openapi-spec-validator's own verdicts and messages,
each at the place in the document it is about; sound documents are remembered."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator.schemas import schema_v31
from openapi_spec_validator.schemas.backend.jsonschema import create_validator

from generator.pipeline.load import parse_file, to_plain
from generator.pipeline.validate import openapi
from generator.pipeline.validate.openapi import _errors, check_document, check_structure

from .conftest import SPEC

API_FILES = sorted(p.name for p in (SPEC / "apis").glob("*.yaml"))


def _doc(name: str) -> dict[str, Any]:
    f, diags = parse_file(SPEC, f"apis/{name}", "openapi")
    assert f is not None and not diags
    doc: dict[str, Any] = to_plain(f.data)
    return doc


def _messages(validator: type[Any], doc: dict[str, Any]) -> list[str]:
    return [getattr(e, "message", str(e)).splitlines()[0] for e in validator(doc).iter_errors()]


def _checked(doc: dict[str, Any]) -> list[str]:
    """What `check_document` says, without the dotted path it starts with."""
    f, _ = parse_file(SPEC, "apis/image.yaml", "openapi")
    assert f is not None
    return [d.message.split(": ", 1)[1] for d in check_document(f, doc)]


@pytest.mark.parametrize("name", API_FILES)
def test_the_specs_documents_pass(name: str) -> None:
    f, _ = parse_file(SPEC, f"apis/{name}", "openapi")
    assert f is not None
    assert check_document(f, _doc(name)) == []
    assert _messages(PlainValidator, _doc(name)) == []


def test_a_sound_document_is_checked_once_a_bad_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = openapi._validator_problems

    def counting(f: Any, doc: dict[str, Any]) -> Any:
        calls.append(1)
        return real(f, doc)

    monkeypatch.setattr(openapi, "_validator_problems", counting)
    doc = _doc("image.yaml")
    assert _checked(doc) == [] and _checked(copy.deepcopy(doc)) == []
    assert len(calls) == 1
    doc["info"].pop("title")
    assert _checked(doc) == _checked(doc) == [_messages(OpenAPIV31SpecValidator, doc)[0]]
    assert len(calls) == 3


# Schema Objects the OAS 3.1 dialect rejects, each put into a component schema.
BAD_SCHEMAS: dict[str, Any] = {
    "unknown type": {"type": "datetime"},
    "type not a string": {"type": 3},
    "pattern not a regex": {"type": "string", "pattern": "[a-z"},
    "required not a list": {"type": "object", "required": "name"},
    "properties not a map": {"type": "object", "properties": ["name"]},
    "minimum not a number": {"type": "integer", "minimum": "0"},
    "nested bad type": {"type": "object", "properties": {"a": {"items": {"type": "lst"}}}},
    "discriminator not an object": {"type": "object", "discriminator": "kind"},
    "enum not a list": {"enum": {"a": 1}},
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEMAS))
def test_a_bad_schema_object_gets_the_plain_validators_message(case: str) -> None:
    doc = copy.deepcopy(_doc("image.yaml"))
    doc["components"]["schemas"]["Broken"] = BAD_SCHEMAS[case]
    ours = _checked(doc)
    assert ours, f"{case}: not reported"
    assert ours == _messages(OpenAPIV31SpecValidator, doc)


# Documents the OAS 3.1 document schema rejects.
BAD_DOCUMENTS: dict[str, Any] = {
    "info without title": lambda d: d["info"].pop("title"),
    "response without description": lambda d: next(
        r
        for item in d["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
        for r in (op.get("responses") or {}).values()
    ).pop("description"),
    "unknown top-level key": lambda d: d.update({"servers2": []}),
    "path item not a map": lambda d: d["paths"].update({"/v2/x": []}),
    "responses not a map": lambda d: d["paths"].update(
        {"/v2/x": {"get": {"operationId": "x", "responses": []}}}
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_a_bad_document_gets_the_plain_validators_messages(case: str) -> None:
    doc = copy.deepcopy(_doc("image.yaml"))
    BAD_DOCUMENTS[case](doc)
    ours = _checked(doc)
    assert ours, f"{case}: not reported"
    assert ours == _messages(OpenAPIV31SpecValidator, doc)


class PlainValidator(OpenAPIV31SpecValidator):
    """openapi-spec-validator with jsonschema alone (by default it picks jsonschema-rs)."""

    schema_validator = create_validator(dict(schema_v31))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"openapi": "3.1.0", "info": {}, "paths": ["/v2/images"]}, "paths: expected a mapping"),
        (["openapi", "3.1.0"], "expected an OpenAPI 3.1 document (a mapping), got a list"),
    ],
)
def test_shapes_the_validator_cannot_walk_are_reported_not_raised(doc: Any, message: str) -> None:
    f, _ = parse_file(SPEC, "apis/image.yaml", "openapi")
    assert f is not None
    diags = check_structure(f, doc)
    assert [d.message for d in diags if message in d.message], diags
    assert check_document(f, doc) == []  # left to check_structure


def test_a_validator_that_stops_with_an_exception_yields_it_last() -> None:
    class Stops:
        def iter_errors(self) -> Any:
            yield "first"
            raise AssertionError("walked into a list")

    out = list(_errors(Stops()))
    assert out[0] == "first" and isinstance(out[1], AssertionError) and len(out) == 2


def test_the_engine_args_of_an_operation_are_checked_where_they_are() -> None:
    f, _ = parse_file(SPEC, "apis/object-store.yaml", "openapi")
    assert f is not None
    doc = _doc("object-store.yaml")
    assert check_structure(f, doc) == []
    args = doc["paths"]["/v1/{account}"]["get"]["x-specstack-args"]
    args["headers"]["X-Timestamp"]["format"] = "unix"
    del args["listing"]["max_limit"]
    found = [(d.message, d.location.line) for d in check_structure(f, doc)]
    assert sorted(m.split(": ", 1)[1] for m, _ in found) == [
        "x-specstack-args.headers.X-Timestamp: {'min': 'created_at', 'format': 'unix', "
        "'default': 'now'} is not valid under any of the given schemas",
        "x-specstack-args.listing: 'max_limit' is a required property",
    ]
    assert all(line is not None and line > 40 for _, line in found)
