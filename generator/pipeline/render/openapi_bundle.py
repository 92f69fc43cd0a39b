"""Target `openapi`: each API as one self-contained JSON document, plus an index."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generator.pipeline.load import to_plain
from generator.pipeline.render.base import OutputFile, RenderContext, json_text, md_header

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


class OpenApiTarget:
    name = "openapi"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        out: list[OutputFile] = []
        docs = {f.stem: f for f in ctx.spec.of_kind("openapi")}
        for api in ir.apis:
            f = docs[api.name]
            data: dict[str, Any] = to_plain(f.data)
            # a copy: the loaded spec is shared by every target
            doc = {**data, "info": {**data["info"], "x-generated-from": ctx.source(f.rel)}}
            out.append(OutputFile(f"openapi/{api.name}.json", json_text(doc)))
        index = ctx.templates.get_template("openapi/index.md.j2").render(
            ir=ir, header=md_header(f"{ctx.spec_label}/apis/*.yaml")
        )
        out.append(OutputFile("openapi/README.md", index))
        return out
