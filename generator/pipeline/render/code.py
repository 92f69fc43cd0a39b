"""Targets for the running stack's code: clients, messaging, services, drivers.

Each renders one template folder; the IR gives every name, the templates place them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from generator.pipeline.render.base import OutputFile, RenderContext, py_header

if TYPE_CHECKING:
    from specstack_runtime.ir import IR


class ClientsTarget:
    name = "clients"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        out = []
        for api in ir.apis:
            text = ctx.templates.get_template("clients/client.py.j2").render(
                api=api, header=py_header(ctx.source(f"apis/{api.name}.yaml"))
            )
            out.append(OutputFile(f"clients/{api.module}.py", text))
        init = ctx.templates.get_template("clients/__init__.py.j2").render(
            ir=ir, header=py_header(ctx.source("apis/*.yaml"))
        )
        out.append(OutputFile("clients/__init__.py", init))
        return out


class MessagingTarget:
    name = "messaging"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        text = ctx.templates.get_template("messaging/messaging.py.j2").render(
            ir=ir, header=py_header(ctx.source("messages.yaml"))
        )
        return [OutputFile("messaging.py", text)]


class ServicesTarget:
    name = "services"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        out = []
        coded = []
        for c in ir.components:
            handlers = [h for h in ir.handlers if h.component == c.name]
            if not handlers:
                continue
            coded.append(c)
            api = ir.api(c.api) if c.api else None
            names = {h.message for h in c.consumes}
            consumers = [m for m in ir.messages if m.name in names]
            sources = ["components.yaml", "sequences/*.yaml"]
            if api:
                sources.append(f"apis/{api.name}.yaml")
            text = ctx.templates.get_template("services/service.py.j2").render(
                c=c,
                api=api,
                consumers=consumers,
                handlers=handlers,
                header=py_header(*(ctx.source(s) for s in sources)),
            )
            out.append(OutputFile(f"services/{c.module}.py", text))
        init = ctx.templates.get_template("services/__init__.py.j2").render(
            coded=coded, header=py_header(ctx.source("components.yaml"))
        )
        out.append(OutputFile("services/__init__.py", init))
        return out


class DriversTarget:
    name = "drivers"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        h = ir.hypervisors
        header = py_header(ctx.source("hypervisors.yaml"))
        out = [
            OutputFile(
                "drivers/base.py",
                ctx.templates.get_template("drivers/base.py.j2").render(h=h, header=header),
            ),
            OutputFile(
                "drivers/__init__.py",
                ctx.templates.get_template("drivers/__init__.py.j2").render(h=h, header=header),
            ),
        ]
        for d in h.drivers:
            text = ctx.templates.get_template("drivers/adapter.py.j2").render(
                h=h, d=d, header=header
            )
            out.append(OutputFile(f"drivers/{d.module}.py", text))
        return out
