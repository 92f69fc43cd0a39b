"""Bounds on what a request may carry, checked before any behaviour or database sees it.

- The body is read with a limit: a declared `Content-Length` over it is refused before
  a byte of the body is read, and a chunked body is refused as soon as it passes it.
  JSON operations get `max_body_bytes`; operations whose request body is a data stream
  (`application/octet-stream`: image data, objects) get `max_data_body_bytes`.
- No string of the request (path parameters, query values, JSON keys and values) may
  contain NUL: no backend stores it (PostgreSQL refuses it outright), so it is a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request

from specstack_runtime.errors import BadRequest, PayloadTooLarge

NUL = "\x00"
DATA_CONTENT_TYPE = "application/octet-stream"


def body_limit(request_content_type: str | None, *, json_limit: int, data_limit: int) -> int:
    """The most bytes an operation's request body may have (by the body the spec declares)."""
    return data_limit if request_content_type == DATA_CONTENT_TYPE else json_limit


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request is too large: the body of this operation may have at most {limit} bytes."
    )


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, None without one; a malformed one is a 400."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 19:
        raise BadRequest(f"Invalid Content-Length {raw[:32]!r}.")
    return int(text)


def check_declared_length(request: Request, limit: int) -> None:
    """413 when the request announces a body longer than `limit` (nothing read yet)."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise _too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most `limit` bytes: 413 as soon as it is longer."""
    check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("The client closed the connection before sending its body.") from None
    return b"".join(chunks)


def nul_path(value: Any, where: str = "") -> str | None:
    """Where in a JSON value a string (a key or a value) contains NUL, or None."""
    if isinstance(value, str):
        return (where or "body") if NUL in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            here = f"{where}/{key}" if where else str(key)
            if isinstance(key, str) and NUL in key:
                return here
            found = nul_path(item, here)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = nul_path(item, f"{where}/{i}" if where else str(i))
            if found is not None:
                return found
    return None


def check_body_strings(body: Any) -> None:
    where = nul_path(body)
    if where is not None:
        raise BadRequest(
            f"Invalid input for field/attribute {where.replace(NUL, '')}: "
            "it contains a NUL character."
        )


def check_parameters(path_params: Mapping[str, str], query: Mapping[str, list[str]]) -> None:
    """400 for a NUL in a path parameter or in a query parameter's name or value."""
    for name, value in path_params.items():
        if NUL in value:
            raise BadRequest(
                f"Invalid value for path parameter {name}: it contains a NUL character."
            )
    for name, values in query.items():
        if NUL in name or any(NUL in v for v in values):
            raise BadRequest(
                f"Invalid value for query parameter {name.replace(NUL, '')}: "
                "it contains a NUL character."
            )
