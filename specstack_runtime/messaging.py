"""Send a spec-declared message: look it up in the IR, check its payload, route it."""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from specstack_runtime.bus import CheckedBy, RemoteError
from specstack_runtime.context import Call
from specstack_runtime.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator


class InvalidMessage(ValueError):
    """A payload or reply that does not match the message's schema in the spec."""


@lru_cache(maxsize=512)
def _schema(info_id: int, name: str, part: str, info: StackInfo) -> dict[str, Any] | None:
    msg = info.messages[name]
    schema = msg["payload_schema"] if part == "payload" else msg["reply_schema"]
    if schema is None:
        return None
    # `#/types/...` pointers resolve against this document's root.
    return {**schema, "types": info.ir.get("message_types", {})}


@lru_cache(maxsize=512)
def _fast(info_id: int, name: str, part: str, info: StackInfo) -> Any:
    """The schema compiled by jsonschema-rs (formats not checked, as jsonschema does not
    without a format checker): whether a message is valid, a hundred times faster."""
    schema = _schema(info_id, name, part, info)
    return (
        None
        if schema is None
        else jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
    )


@lru_cache(maxsize=512)
def _wording(info_id: int, name: str, part: str, info: StackInfo) -> Draft202012Validator:
    """The same schema as jsonschema checks it, for the words of an error: imported only
    when a message is invalid (its modules are some 10 MB a process keeps)."""
    from jsonschema import Draft202012Validator

    schema = _schema(info_id, name, part, info)
    assert schema is not None
    return Draft202012Validator(schema)


def check(info: StackInfo, name: str, part: str, data: Any) -> None:
    """Raise InvalidMessage if `data` is not a valid `part` ("payload"/"reply") of `name`."""
    fast = _fast(id(info), name, part, info)
    if fast is None:
        return
    try:
        # jsonschema-rs takes a tuple for an array, jsonschema does not: it decides then
        if fast.is_valid(data) and not _has_tuple(data):
            return
    except (ValueError, TypeError):
        pass  # a value JSON has no type for: jsonschema decides
    # invalid: the first error as jsonschema words it
    error = next(iter(_wording(id(info), name, part, info).iter_errors(data)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InvalidMessage(f"{name} {part} at {where}: {error.message}")


def _has_tuple(data: Any) -> bool:
    todo = [data]
    while todo:
        node = todo.pop()
        if isinstance(node, tuple):
            return True
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return False


def shaped(info: StackInfo, type_name: str, value: Any) -> Any:
    """`value` as the spec's message type `type_name` (spec/messages.yaml `types`) carries
    it: an object only the properties the type declares, without nulls; a list each item so."""
    types: dict[str, Any] = info.ir.get("message_types", {})

    def shape(schema: dict[str, Any], node: Any) -> Any:
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/types/"):
            return shape(types[ref.rsplit("/", 1)[-1]], node)
        if isinstance(node, dict) and "properties" in schema:
            props: dict[str, Any] = schema["properties"]
            return {k: shape(props[k], v) for k, v in node.items() if k in props and v is not None}
        if isinstance(node, list) and isinstance(schema.get("items"), dict):
            return [shape(schema["items"], item) for item in node]
        return node

    return shape({"$ref": f"#/types/{type_name}"}, value)


async def send(
    source: Call | ServiceRuntime,
    message: str,
    payload: dict[str, Any],
    *,
    host: str | None = None,
    hosts: Collection[str] | None = None,
    context: dict[str, str] | None = None,
    timeout: float | None = None,
    checked: bool = False,
    checked_by: CheckedBy | None = None,
) -> dict[str, Any] | None:
    """Cast, call or fan out `message` as the spec declares it; calls return the reply.

    A fanout's `hosts` (or its `host`) are the hosts it concerns: the in-process bus
    delivers it to their subscribers only (see `Bus.fanout`).

    `checked` says the caller has already validated payload and reply (generated
    senders do, against the spec's models), so they are not checked twice; `checked_by`
    names those models, which an in-process bus hands to the consumer (see CheckedBy).
    """
    rt = source.rt if isinstance(source, Call) else source
    if context is None and isinstance(source, Call):
        context = source.flow_context()
    msg = rt.info.messages[message]
    if not checked:
        check(rt.info, message, "payload", payload)
    if msg["per_host"] and not host:
        raise ValueError(f"message {message} goes to one host's topic: give host=")
    topic, method = msg["topic"], msg["method"]
    await rt.settle()
    if msg["pattern"] == "fanout":
        if hosts is None and host:
            hosts = [host]
        await rt.bus.fanout(topic, method, payload, hosts=hosts, context=context)
        return None
    if msg["pattern"] == "cast":
        await rt.bus.cast(topic, method, payload, host=host, context=context, checked_by=checked_by)
        return None
    reply = await rt.bus.call(
        topic,
        method,
        payload,
        host=host,
        context=context,
        timeout=timeout or rt.config.call_timeout_s,
        checked_by=checked_by,
    )
    if not checked:
        check(rt.info, message, "reply", reply)
    return reply


def api_error(exc: BaseException, who: str = "The remote service") -> ApiError:
    """What a called consumer raised (its exception's type and text), or its silence, as an
    error for the API's caller: a known kind keeps its status (any `*NotFound` is 404)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RemoteError):
        for cls in (BadRequest, Forbidden, NotFound, Conflict):
            if exc.exc_type.endswith(cls.__name__):
                return cls(exc.message)
        return ApiError(f"{who} failed: {exc.exc_type}: {exc.message}")
    return ApiError(f"{who} could not be reached: {exc}", status=503)
