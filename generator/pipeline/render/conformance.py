"""Target `conformance`: the pytest suite that checks a running stack against the spec."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from generator.pipeline.render.base import OutputFile, RenderContext, py_header
from specstack_conformance.matrix import RESOURCE_PARAMS
from specstack_runtime import policy
from specstack_runtime.context import AuthContext

if TYPE_CHECKING:
    from specstack_runtime.ir import IR, Api, Operation


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
            OutputFile(
                "conformance/test_drivers.py",
                t.get_template("conformance/drivers.py.j2").render(
                    h=ir.hypervisors, header=py_header(ctx.source("hypervisors.yaml"))
                ),
            ),
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
        enforcer = policy.Enforcer({r.name: r.rule for r in ir.policy})
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
            matrix = auth_matrix(api, enforcer)
            if matrix["protected"]:
                text = t.get_template("conformance/auth.py.j2").render(
                    api=api, header=py_header(ctx.source(f"apis/{api.name}.yaml")), **matrix
                )
                out.append(OutputFile(f"conformance/test_auth_{api.module}.py", text))
        return out


#: Who the auth matrix's "insufficient role" caller is: the demo user (member, and reader).
_DEMO = AuthContext(
    token="",
    user_id="demo-user",
    user_name="demo",
    project_id="demo-project",
    project_name="demo",
    domain_id="default",
    roles=("member", "reader"),
    expires_at="",
)


def _project_params(op: Operation) -> list[str]:
    return [
        p.name
        for p in op.parameters
        if p.location == "path"
        and (p.name == "project_id" or "%(project_id)s" in (p.policy_target or ""))
    ]


def auth_matrix(api: Api, enforcer: policy.Enforcer) -> dict[str, Any]:
    """Which checks of the auth matrix each protected operation gets (from its policy)."""
    protected = [op for op in api.operations if op.requires_token]
    role_ops, path_ops, resource_ops = [], [], []
    for op in protected:
        rule = op.policy or "@"
        own = {"project_id": "demo-project", "user_id": "demo-user", "domain_id": "default"}
        if not enforcer.allows(rule, _DEMO, own):
            role_ops.append(op)
            continue
        if "project_id" in enforcer.refs(rule) and _project_params(op):
            path_ops.append(op)
        ids = [
            p.name
            for p in op.parameters
            if p.location == "path" and p.name not in _project_params(op)
        ]
        if (
            op.method == "GET"
            and len(ids) == 1
            and ids[0] in RESOURCE_PARAMS
            # the resource, or a collection of its own (a server's actions)
            and re.fullmatch(r".*\{" + ids[0] + r"\}(/[A-Za-z0-9_.-]+)?", op.path)
        ):
            resource_ops.append((op, ids[0]))
    return {
        "protected": protected,
        "role_ops": role_ops,
        "path_ops": path_ops,
        "resource_ops": resource_ops,
    }
