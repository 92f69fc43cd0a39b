"""Target `package`: makes `generated/` an importable Python package."""

from __future__ import annotations

from typing import TYPE_CHECKING

from generator.pipeline.render.base import OutputFile, RenderContext, py_header

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


class PackageTarget:
    name = "package"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        text = ctx.templates.get_template("package/__init__.py.j2").render(
            ir=ir, header=py_header(f"{ctx.spec_label}/")
        )
        return [OutputFile("__init__.py", text)]
