"""Target `ir`: the IR itself, as `generated/ir.json`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from generator.pipeline.render.base import OutputFile, RenderContext

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


class IrTarget:
    name = "ir"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        body = json.loads(ir.to_json())
        doc = {"$generated": {"by": "specstack", "from": f"{ctx.spec_label}/"}, **body}
        return [OutputFile("ir.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")]
