"""Targets for the running stack's code: clients, messaging, services, drivers.

Each renders one template folder; the IR gives every name, the templates place them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from generator.pipeline.render.base import OutputFile, RenderContext, py_header
from generator.pipeline.render.models import cached_module, checked, defs_bundle, driver_types

if TYPE_CHECKING:
    from specstack_runtime.ir import IR, DriverParam


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


def _dict_form(annotation: str, types: tuple[str, ...]) -> str:
    """A contract annotation with each driver type as its `TypedDict` (module `td`)."""
    return re.sub(r"\b\w+\b", lambda m: f"td.{m[0]}" if m[0] in types else m[0], annotation)


def _either_form(p: DriverParam, types: tuple[str, ...]) -> str:
    """What an adapter accepts: the type's pydantic model or its plain-data form."""
    if p.model is None:
        return p.python_type
    return f"{p.python_type} | {_dict_form(p.python_type, types)}"


class DriversTarget:
    """The driver contract in two forms: `base.py`, the ABC the generated adapters
    implement (callers may pass models or plain data), and `contract.py`, the Protocol the
    hand-written hypervisors satisfy (plain data, the `TypedDict`s of `types.py`), which
    each adapter checks its implementation against for the type checker."""

    name = "drivers"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        h = ir.hypervisors
        header = py_header(ctx.source("hypervisors.yaml"))
        types, source = driver_types(ctx)
        dicts = cached_module(
            defs_bundle("DriverTypesRoot", types), False, py_header(source), typed_dict=True
        )
        signatures = {
            m.name: {
                "contract": [(p.name, _dict_form(p.python_type, h.types)) for p in m.params],
                "adapter": [(p.name, _either_form(p, h.types)) for p in m.params],
                "returns": _dict_form(m.returns, h.types),
            }
            for m in h.methods
        }
        out = [
            checked("drivers/types.py", dicts, types, source),
            OutputFile(
                "drivers/contract.py",
                ctx.templates.get_template("drivers/contract.py.j2").render(
                    h=h, sig=signatures, header=header
                ),
            ),
            OutputFile(
                "drivers/base.py",
                ctx.templates.get_template("drivers/base.py.j2").render(
                    h=h, sig=signatures, header=header
                ),
            ),
            OutputFile(
                "drivers/__init__.py",
                ctx.templates.get_template("drivers/__init__.py.j2").render(h=h, header=header),
            ),
        ]
        for d in h.drivers:
            text = ctx.templates.get_template("drivers/adapter.py.j2").render(
                h=h, d=d, sig=signatures, header=header
            )
            out.append(OutputFile(f"drivers/{d.module}.py", text))
        return out
