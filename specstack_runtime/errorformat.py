"""Error bodies in each service's own format (the spec's `x-specstack-error-format`)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from specstack_runtime.errors import ApiError

# nova and cinder name the error by its kind of failure.
_NOVA_KEYS = {
    400: "badRequest",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def render(fmt: str, err: ApiError) -> tuple[bytes, str]:
    """(body, content type) of `err` as the service `fmt` would answer it."""
    status, msg = err.status, err.message
    body: Any
    if status == 401 and fmt != "keystone" and fmt != "swift":
        # keystonemiddleware answers for every service in front of it.
        body = {"error": {"code": 401, "title": "Unauthorized", "message": msg}}
    elif fmt in ("nova", "cinder"):
        # Both answer an unexpected failure (500 and any status without a name) as
        # computeFault: cinder's fault wrapper has nova's names.
        key = _NOVA_KEYS.get(status, "computeFault")
        body = {key: {"message": msg, "code": status}}
    elif fmt == "neutron":
        body = {"NeutronError": {"type": err.kind, "message": msg, "detail": ""}}
    elif fmt in ("keystone", "glance"):
        body = {"error": {"code": status, "title": err.title, "message": msg}}
    elif fmt == "swift":
        # the message may quote a name the caller gave
        html = f"<html><h1>{err.title}</h1><p>{escape(msg, quote=False)}</p></html>"
        return html.encode(), "text/html; charset=UTF-8"
    else:
        body = {"error": {"code": status, "message": msg}}
    return json.dumps(body).encode(), "application/json"
