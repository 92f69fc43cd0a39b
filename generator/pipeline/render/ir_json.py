"""Target `ir`: the IR itself, as `generated/ir.json`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from generator.pipeline.render.base import OutputFile, RenderContext, json_text

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


class IrTarget:
    name = "ir"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        body = ir.model_dump(mode="json", by_alias=True, exclude={"generated"})
        doc = {"$generated": {"by": "specstack", "from": f"{ctx.spec_label}/"}, **body}
        return [OutputFile("ir.json", json_text(doc))]
