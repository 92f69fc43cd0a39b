"""The API documents' JSON Schemas as the dashboard reads them."""

from __future__ import annotations

from typing import Any


def deref(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """`schema`, its `$ref` to the document's components followed (a few levels at most)."""
    seen = 0
    while "$ref" in schema and seen < 10:
        schema = schemas.get(schema["$ref"].rsplit("/", 1)[-1], {})
        seen += 1
    return schema
