"""What an API says about itself from its own document: the JSON Schemas clients fetch
(glance's `GET /v2/schemas/image`), taken from the spec's OpenAPI components, and the
documents the spec states outright (cinder's version documents)."""

from __future__ import annotations

from typing import Any

from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import NotFound
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
    operation's args say (`schema`: its name; `name`, `links`: what the answer adds;
    `leave_out`: its keys the answer leaves out)."""
    comp = call.rt.info.components.get(call.rt.component) or {}
    doc = call.rt.info.api_document(str(comp["api"]))
    schemas: dict[str, Any] = (doc.get("components") or {}).get("schemas") or {}
    name = str(call.args["schema"])
    if name not in schemas:
        raise NotFound(f"No schema {name} in the {comp['api']} document.")
    body = _inline(schemas[name], schemas)
    for key in ("description", *call.args.get("leave_out", ())):
        body.pop(key, None)
    framing = {k: call.args[k] for k in ("name", "links") if k in call.args}
    return Reply(200, {**framing, **body})


def _with_base(node: Any, base: str) -> Any:
    if isinstance(node, str):
        return node.replace("{base}", base)
    if isinstance(node, dict):
        return {k: _with_base(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_base(v, base) for v in node]
    return node


@behaviour("documents.constant")
async def constant(call: Call) -> Reply:
    """The document the operation's args state (`body`, answered with `status` and
    `headers`), `{base}` in its strings being the URL the caller reached the API at."""
    host = call.header("host")
    if host:
        base = f"{call.header('x-forwarded-proto') or 'http'}://{host}"
    else:
        comp = call.rt.info.components.get(call.rt.component) or {}
        base = call.rt.info.endpoint(str(comp["api"]), call.rt.config)
    headers = _with_base(dict(call.args.get("headers") or {}), base)
    return Reply(
        int(call.args.get("status", 200)), _with_base(call.args.get("body"), base), headers=headers
    )
