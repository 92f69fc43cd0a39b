"""Assertions the generated suite makes: observed trace against declared sequence and schemas."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from specstack_conformance.harness import FlowRecord
from specstack_runtime.stackinfo import StackInfo


class ConformanceError(AssertionError):
    pass


def _fail(record: FlowRecord, label: str, message: str) -> ConformanceError:
    seen = ", ".join(f"{e['step']}:{e['status']}" for e in record.events)
    return ConformanceError(
        f"{record.sequence} step {label}: {message}\n  flow {record.flow_id}; observed: {seen}"
    )


def _events(record: FlowRecord, label: str) -> list[dict[str, Any]]:
    return [e for e in record.events if e["step"] == label]


def step(record: FlowRecord, declared: dict[str, Any], info: StackInfo) -> None:
    """The step happened, in order, between the declared parties, over the declared
    communication type, with payloads valid against the declared schemas."""
    label = str(declared.get("label") or declared["number"])
    items = [(label, declared)] + [
        (f"{label}.{i + 1}", sub) for i, sub in enumerate(declared.get("then", []))
    ]
    for lbl, it in items:
        if lbl in record.untraced:
            continue  # the trace cannot show it (an OSProfiler trace has no user step)
        events = _events(record, lbl)
        if not events:
            raise _fail(record, lbl, "did not happen (no trace event)")
        e = events[0]
        if e["status"] == "skipped" and lbl != label:
            continue  # a follow-on interaction its `when` or `each` left out (nothing sent)
        if e["status"] != "ok":
            raise _fail(record, lbl, f"status {e['status']}: {e['detail'].get('error', '')}")
        want = (it["source_component"], it["target_component"], it["via"])
        got = (e["source"], e["target"], e["via"])
        if got != want:
            raise _fail(record, lbl, f"went {got}, the spec declares {want}")
        name = it.get("operation") or it.get("message") or it.get("call")
        if name and e.get("name") != name:
            raise _fail(record, lbl, f"used {e.get('name')!r}, the spec declares {name!r}")
        _payloads(record, lbl, e, it, info)
    if label not in record.untraced:
        _in_order(record, label, declared.get("previous"))
    else:
        pytest.skip(f"step {label} is in no trace of {record.source or record.flow_id}")


def _in_order(record: FlowRecord, label: str, previous: str | None) -> None:
    """Each main step starts after the main step declared before it started."""
    if previous is None:
        return
    this = _events(record, label)[0]
    before = _events(record, previous)
    if before and before[0]["started_at"] > this["started_at"]:
        raise _fail(record, label, f"started before step {previous}")


def _payloads(
    record: FlowRecord, label: str, event: dict[str, Any], it: dict[str, Any], info: StackInfo
) -> None:
    detail = event.get("detail", {})
    via = it["via"]
    if via.startswith("amqp") and it.get("message"):
        msg = info.messages[it["message"]]
        _check(
            record,
            label,
            "payload",
            _message_validator(info, msg["name"], "payload"),
            detail.get("sent"),
        )
        if msg["reply_schema"] is not None and "received" in detail:
            _check(
                record,
                label,
                "reply",
                _message_validator(info, msg["name"], "reply"),
                detail["received"],
            )
    elif via == "http" and it.get("operation"):
        api = info.components[it["target_component"]]["api"]
        status = detail.get("http_status")
        if isinstance(detail.get("sent"), dict):
            v = request_validator(api, it["operation"])
            if v is not None:
                _check(record, label, "request body", v, detail["sent"])
        if status is not None and "received" in detail:
            v = response_validator(api, it["operation"], int(status))
            if v is not None:
                _check(record, label, f"{status} response", v, detail["received"])


def _check(record: FlowRecord, label: str, what: str, v: Any, data: Any) -> None:
    if v is None or data is None:
        return
    err = next(iter(v.iter_errors(data)), None)
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise _fail(record, label, f"{what} does not match the spec at {where}: {err.message}")


@cache
def _message_validator(info: StackInfo, message: str, part: str) -> Draft202012Validator | None:
    msg = info.messages[message]
    schema = msg["payload_schema"] if part == "payload" else msg["reply_schema"]
    if schema is None:
        return None
    return Draft202012Validator({**schema, "types": info.ir.get("message_types", {})})


@cache
def _document(api: str) -> dict[str, Any]:
    import generated

    path = Path(generated.__file__).parent / "openapi" / f"{api}.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _operation(api: str, operation_id: str) -> dict[str, Any]:
    for item in _document(api)["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return op
    raise KeyError(f"{api} has no operation {operation_id}")


def _schema_validator(api: str, schema: dict[str, Any]) -> Draft202012Validator:
    uri = f"urn:specstack:{api}"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(_document(api), default_specification=DRAFT202012)
    )
    rewritten = json.loads(json.dumps(schema).replace('"#/components/', f'"{uri}#/components/'))
    return Draft202012Validator(rewritten, registry=registry)


def _resolve(api: str, node: dict[str, Any]) -> dict[str, Any]:
    doc = _document(api)
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


@cache
def request_validator(api: str, operation_id: str) -> Draft202012Validator | None:
    body = _operation(api, operation_id).get("requestBody")
    if not body:
        return None
    content = _resolve(api, body).get("content", {})
    media = content.get("application/json")
    return _schema_validator(api, media["schema"]) if media and "schema" in media else None


@cache
def response_validator(api: str, operation_id: str, status: int) -> Draft202012Validator | None:
    responses = _operation(api, operation_id).get("responses", {})
    resp = (
        responses.get(str(status))
        or responses.get(f"{str(status)[0]}XX")
        or responses.get("default")
    )
    if resp is None:
        return _Undeclared(status)  # type: ignore[return-value,unused-ignore]
    content = _resolve(api, resp).get("content", {})
    media = content.get("application/json")
    return _schema_validator(api, media["schema"]) if media and "schema" in media else None


class _Undeclared:
    """A status the operation does not declare: always a conformance failure."""

    def __init__(self, status: int) -> None:
        self.status = status

    def iter_errors(self, data: Any) -> Any:
        from jsonschema.exceptions import ValidationError

        yield ValidationError(f"status {self.status} is not a declared response")


def responses_conform(record: FlowRecord, api: str, operation_id: str) -> int:
    """Every recorded answer of `operation_id` matches its declared response schema."""
    checked = 0
    for e in record.events:
        if e.get("name") != operation_id or e["via"] != "http":
            continue
        detail = e.get("detail", {})
        if "http_status" not in detail:
            continue
        v = response_validator(api, operation_id, int(detail["http_status"]))
        if v is not None and "received" in detail:
            _check(record, e["step"], f"{detail['http_status']} response", v, detail["received"])
        checked += 1
    return checked


def left_out(records: tuple[FlowRecord, ...], operation_id: str) -> bool:
    """The flows reached `operation_id`'s interactions but their `when` or `each` left every
    one out (booting from a volume made from an image is not the flows' boot)."""
    seen = [e for r in records for e in r.events if e.get("name") == operation_id]
    return bool(seen) and all(e["status"] == "skipped" for e in seen)


def response_conforms(api: str, operation_id: str, status: int, body: Any) -> None:
    v = response_validator(api, operation_id, status)
    if v is None:
        return
    err = next(iter(v.iter_errors(body)), None)
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConformanceError(
            f"{api} {operation_id} answered {status} with a body that does not match the spec "
            f"at {where}: {err.message}"
        )
