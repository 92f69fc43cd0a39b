"""What an API says about itself from its own document: the JSON Schemas clients fetch
(glance's `GET /v2/schemas/image`), taken from the spec's OpenAPI components; and
documents the spec writes out whole (nova's versions), with `documents.answer`."""

from __future__ import annotations

from typing import Any

from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import NotFound
from specstack_runtime.expr import compile_expr
from specstack_runtime.registry import behaviour

#: How deep `$ref`s may nest before the document is judged broken (it is a spec bug).
MAX_DEPTH = 32


def _inline(node: Any, schemas: dict[str, Any], depth: int = 0) -> Any:
    """`node` with every `#/components/schemas/X` replaced by X itself."""
    if depth > MAX_DEPTH:
        raise ValueError("schema references nest too deep (a cycle?)")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = schemas[ref.rsplit("/", 1)[-1]]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(target, schemas, depth + 1), **_inline(rest, schemas, depth)}
        return {k: _inline(v, schemas, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, schemas, depth) for v in node]
    return node


@behaviour("documents.json_schema")
async def json_schema(call: Call) -> Reply:
    """One schema of the API's document as a self-contained JSON Schema, framed as the
    operation's args say (`schema`: its name; `name`, `links`: what the answer adds)."""
    comp = call.rt.info.components.get(call.rt.component) or {}
    doc = call.rt.info.api_document(str(comp["api"]))
    schemas: dict[str, Any] = (doc.get("components") or {}).get("schemas") or {}
    name = str(call.args["schema"])
    if name not in schemas:
        raise NotFound(f"No schema {name} in the {comp['api']} document.")
    body = _inline(schemas[name], schemas)
    body.pop("description", None)
    framing = {k: call.args[k] for k in ("name", "links") if k in call.args}
    return Reply(200, {**framing, **body})


@behaviour("documents.answer")
async def answer(call: Call) -> Reply:
    """The document the operation's args write out: `body`, CEL over `base` (the URL the
    caller reached the API at, for links), answered with `status` (200 unless given)."""
    rt = call.rt
    host = call.header("host")
    if host:
        base = f"{call.header('x-forwarded-proto') or 'http'}://{host}"
    else:
        base = rt.info.endpoint(str((rt.info.components.get(rt.component) or {})["api"]), rt.config)
    body = compile_expr(str(call.args["body"])).evaluate(base=base)
    return Reply(int(call.args.get("status", 200)), body)
