"""Target `openapi`: each API as one self-contained JSON document, plus an index."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from generator.pipeline.load import to_plain
from generator.pipeline.render.base import OutputFile, RenderContext, md_header

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


class OpenApiTarget:
    name = "openapi"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        out: list[OutputFile] = []
        docs = {f.stem: f for f in ctx.spec.of_kind("openapi")}
        for api in ir.apis:
            f = docs[api.name]
            doc: dict[str, Any] = to_plain(f.data)
            doc["info"] = {**doc["info"], "x-generated-from": ctx.source(f.rel)}
            text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
            out.append(OutputFile(f"openapi/{api.name}.json", text))
        index = ctx.templates.get_template("openapi/index.md.j2").render(
            ir=ir, header=md_header(f"{ctx.spec_label}/apis/*.yaml")
        )
        out.append(OutputFile("openapi/README.md", index))
        return out
