"""Target `ir`: the IR itself, as `generated/ir.json`."""

from __future__ import annotations

import json

from generator.ir import IR
from generator.render.base import OutputFile, RenderContext


class IrTarget:
    name = "ir"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        body = json.loads(ir.to_json())
        doc = {"$generated": {"by": "specstack", "from": f"{ctx.spec_label}/"}, **body}
        return [OutputFile("ir.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")]
