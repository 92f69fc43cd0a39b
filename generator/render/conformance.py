"""Target `conformance`: the pytest suite that checks a running stack against the spec."""

from __future__ import annotations

from generator.ir import IR
from generator.render.base import OutputFile, RenderContext, py_header


class ConformanceTarget:
    name = "conformance"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        t = ctx.templates
        out = [
            OutputFile(
                "conformance/conftest.py",
                t.get_template("conformance/conftest.py.j2").render(
                    ir=ir, header=py_header(ctx.source("sequences/*.yaml"))
                ),
            ),
            OutputFile("conformance/__init__.py", py_header(ctx.source("sequences/*.yaml"))),
        ]
        for seq in ir.sequences:
            text = t.get_template("conformance/sequence.py.j2").render(
                seq=seq, header=py_header(ctx.source(f"sequences/{seq.name}.yaml"))
            )
            out.append(OutputFile(f"conformance/test_{seq.module}.py", text))
        # Which sequences exercise which operations (the http steps of their handlers).
        used: dict[tuple[str, str], set[str]] = {}
        for h in ir.handlers:
            for st in h.steps:
                if st.api and st.name and st.transport == "client":
                    for o in h.occurrences:
                        used.setdefault((st.api, st.name), set()).add(o.sequence)
        for seq in ir.sequences:
            for step in seq.steps:
                for it in (step.main, *step.then):
                    if it.via == "http" and it.operation and it.behaviour != "auth.validate":
                        served = ir.component(it.target_component).api
                        if served:
                            used.setdefault((served, it.operation), set()).add(seq.name)
        modules = {s.name: s.module for s in ir.sequences}
        for api in ir.apis:
            exercised = [op for op in api.operations if (api.name, op.operation_id) in used]
            direct = [
                op
                for op in api.operations
                if op.method == "GET"
                and (api.name, op.operation_id) not in used
                and all(
                    p.name in ("project_id", "account")
                    for p in op.parameters
                    if p.location == "path"
                )
                and not any(p.required for p in op.parameters if p.location != "path")
            ]
            op_sequences = {
                op.operation_id: sorted(modules[s] for s in used[(api.name, op.operation_id)])
                for op in exercised
            }
            text = t.get_template("conformance/api.py.j2").render(
                api=api,
                exercised=exercised,
                direct=direct,
                op_sequences=op_sequences,
                header=py_header(ctx.source(f"apis/{api.name}.yaml")),
            )
            out.append(OutputFile(f"conformance/test_api_{api.module}.py", text))
        return out
