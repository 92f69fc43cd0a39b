"""Target `models`: pydantic v2 models, made by datamodel-code-generator.

One module per API (its `components/schemas`), one for queue messages
(payloads, replies and their shared types) and one for the driver types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from generator.pipeline.load import to_plain
from generator.pipeline.render.base import OutputFile, RenderContext, py_header

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


class ModelGenerationError(Exception):
    pass


def generate_models(
    schema: dict[str, Any], *, openapi: bool, header: str, typed_dict: bool = False
) -> str:
    """Pydantic v2 source (or `TypedDict`s, the plain-data form) for every schema in `schema`,
    deterministic and unformatted."""
    from datamodel_code_generator import (
        DataModelType,
        InputFileType,
        LiteralType,
        PythonVersion,
        generate,
    )

    result = generate(
        json.dumps(schema, sort_keys=False),
        input_file_type=InputFileType.OpenAPI if openapi else InputFileType.JsonSchema,
        output_model_type=(
            DataModelType.TypingTypedDict if typed_dict else DataModelType.PydanticV2BaseModel
        ),
        target_python_version=PythonVersion.PY_311,
        disable_timestamp=True,
        formatters=[],
        custom_file_header=header.rstrip("\n"),
        use_standard_collections=True,
        use_union_operator=True,
        enum_field_as_literal=LiteralType.All,
        allow_population_by_field_name=True,
        use_schema_description=False,
        use_field_description=False,
        # built when first used (specstack_runtime/specmodel.py); TypedDicts have no base
        base_class="" if typed_dict else "specstack_runtime.specmodel.SpecModel",
    )
    if not isinstance(result, str):
        raise ModelGenerationError("datamodel-code-generator returned no single module")
    return result


def _check_classes(text: str, names: tuple[str, ...], origin: str) -> None:
    # a class, or (for a schema that is not an object) a type alias
    found = re.findall(r"^(?:class (\w+)\(|(\w+): TypeAlias\b)", text, flags=re.M)
    defined = {name for pair in found for name in pair if name}
    missing = [n for n in names if n not in defined]
    if missing:
        raise ModelGenerationError(f"{origin}: no model class for {', '.join(missing)}")


def _retarget_refs(node: Any) -> Any:
    """`#/types/X` (a pointer into the spec file) becomes `#/$defs/X` in the bundle."""
    if isinstance(node, dict):
        return {
            k: (
                v.replace("#/types/", "#/$defs/")
                if k == "$ref" and isinstance(v, str)
                else _retarget_refs(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_retarget_refs(v) for v in node]
    return node


def defs_bundle(title: str, defs: dict[str, Any]) -> dict[str, Any]:
    # A root that references every definition, so each becomes a class.
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": {name: {"$ref": f"#/$defs/{name}"} for name in defs},
        "$defs": _retarget_refs(defs),
    }


def model_module(
    schema: dict[str, Any], *, openapi: bool, header: str, typed_dict: bool = False
) -> str:
    """One module of models.

    Without `openapi`, `schema` is a `defs_bundle`, whose helper root class is dropped.
    """
    text = generate_models(schema, openapi=openapi, header=header, typed_dict=typed_dict)
    return text if openapi else _drop_class(text, schema["title"])


class ModelsTarget:
    """datamodel-code-generator is the slowest part of rendering: each module it makes
    is cached by the digest of its input (see `generator.pipeline.cache`), so only a
    module whose schemas changed is made again."""

    name = "models"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        out: list[OutputFile] = []
        for api in ir.apis:
            f = next(f for f in ctx.spec.of_kind("openapi") if f.stem == api.name)
            text = cached_module(
                _schemas_part(to_plain(f.data)), True, py_header(ctx.source(f.rel))
            )
            out.append(checked(f"models/{api.module}.py", text, api.models, ctx.source(f.rel)))
        msgs_file = ctx.spec.one("messages")
        assert msgs_file is not None
        defs: dict[str, Any] = dict(to_plain(msgs_file.data).get("types") or {})
        for m in ir.messages:
            defs[m.payload_model] = m.payload_schema
            if m.reply_model and m.reply_schema is not None:
                defs[m.reply_model] = m.reply_schema
        source = ctx.source(msgs_file.rel)
        text = cached_module(defs_bundle("MessagesRoot", defs), False, py_header(source))
        out.append(checked("models/messages.py", text, defs, source))
        types, source = driver_types(ctx)
        text = cached_module(defs_bundle("DriverTypesRoot", types), False, py_header(source))
        out.append(checked("models/drivers.py", text, types, source))
        init = ctx.templates.get_template("models/__init__.py.j2").render(
            ir=ir, header=py_header(f"{ctx.spec_label}/")
        )
        return [*out, OutputFile("models/__init__.py", init)]


def driver_types(ctx: RenderContext) -> tuple[dict[str, Any], str]:
    """The `types:` of spec/hypervisors.yaml, and the name of that file for headers."""
    hyp_file = ctx.spec.one("hypervisors")
    assert hyp_file is not None
    return dict(to_plain(hyp_file.data).get("types") or {}), ctx.source(hyp_file.rel)


def cached_module(
    schema: dict[str, Any], openapi: bool, header: str, *, typed_dict: bool = False
) -> str:
    """`model_module`'s text, from the cache when this input was seen before."""
    from generator.pipeline.cache import DigestCache, digest, dist_version, source_digest

    key = digest(
        source_digest(__file__),
        dist_version("datamodel-code-generator"),
        openapi,
        typed_dict,
        header,
        schema,
    )
    cache = DigestCache("models")
    text = cache.get(key)
    if text is None:
        text = model_module(schema, openapi=openapi, header=header, typed_dict=typed_dict)
        cache.put(key, text)
    return text


def _schemas_part(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its operations: models come from `components` alone
    (datamodel-code-generator's default scope), and it walks less, pickled smaller."""
    return {k: v for k, v in doc.items() if k not in ("paths", "webhooks")} | {"paths": {}}


def checked(path: str, text: str, names: Iterable[str], origin: str) -> OutputFile:
    _check_classes(text, tuple(names), origin)
    return OutputFile(path, text)


def _drop_class(text: str, name: str) -> str:
    """Remove the helper root class (it only exists to make every definition a class)."""
    pattern = re.compile(rf"^class {name}\(.*?(?=^class |\Z)", flags=re.M | re.S)
    return pattern.sub("", text).rstrip() + "\n"
