"""Turn a validated spec into the IR."""

from __future__ import annotations

import hashlib
from typing import Any

from generator.pipeline.build_resources import (
    Binding,
    bindings,
    build_resources,
    conventions,
    policy_rules,
)
from generator.pipeline.load import LoadedSpec, SpecFile, to_plain
from generator.pipeline.naming import pascal, slug, snake
from generator.pipeline.validate.openapi import HTTP_METHODS, operations_of
from specstack_runtime import ir

DEFAULT_RESOURCES = ir.NodeCapacity(vcpus=8, memory_mb=16384, local_gb=200)


def build_ir(spec: LoadedSpec) -> ir.IR:
    """Build the IR of a spec that has passed validation."""
    comps_file = _one(spec, "components")
    components = _components(comps_file)
    binds = bindings(spec)
    conv = conventions(spec)
    resources, quotas, queries = build_resources(spec, components)
    return ir.IR(
        format=ir.IR_FORMAT,
        stack=_stack(_one(spec, "stack")),
        components=components,
        apis=tuple(_api(f, components, binds, conv.get(f.stem)) for f in spec.of_kind("openapi")),
        messages=_messages(_one(spec, "messages"), components),
        message_types=to_plain(_one(spec, "messages").data).get("types") or {},
        topology=_topology(_one(spec, "topology"), components),
        hypervisors=_hypervisors(_one(spec, "hypervisors")),
        sequences=tuple(_sequence(f) for f in spec.of_kind("sequence")),
        handlers=_handlers(spec, components, binds),
        resources=resources,
        quotas=quotas,
        queries=queries,
        policy=policy_rules(spec),
        osprofiler=_trace_points(spec),
        sources=tuple(
            ir.SpecSource(file=f.rel, sha256=hashlib.sha256(f.raw).hexdigest())
            for f in sorted(spec.files, key=lambda f: f.rel)
        ),
    )


def _trace_points(spec: LoadedSpec) -> dict[str, ir.TracePoint]:
    f = spec.one("traces")
    if f is None:
        return {}
    points = to_plain(f.data)["traces"]["osprofiler"]
    return {via: ir.TracePoint(**p) for via, p in sorted(points.items())}


def _one(spec: LoadedSpec, kind: str) -> SpecFile:
    f = spec.one(kind)
    if f is None:  # validation guarantees it; this guards direct callers
        raise ValueError(f"spec has no {kind} file")
    return f


def _src(f: SpecFile, path: list[str | int]) -> ir.Source:
    return ir.Source(file=f.rel, line=f.locate(path).line)


def _stack(f: SpecFile) -> ir.Stack:
    s = to_plain(f.data)["stack"]
    return ir.Stack(
        name=s["name"],
        title=s["title"],
        version=s["version"],
        region=s["region"],
        description=s.get("description", ""),
    )


def _startup(item: Any, comps: dict[str, Any]) -> ir.StartupStep:
    if isinstance(item, str):
        return ir.StartupStep(behaviour=item)
    target = comps[item["to"]]
    return ir.StartupStep(
        title=item.get("title"),
        target=item["to"],
        api=None if "message" in item else target.get("api"),
        operation=item.get("operation"),
        bindings=item.get("with", {}),
        save_as=item.get("as"),
        message=item.get("message"),
        batch=item.get("batch"),
        every=item.get("every"),
    )


def _components(f: SpecFile) -> tuple[ir.Component, ...]:
    out = []
    comps = to_plain(f.data)["components"]
    for name, c in comps.items():
        cat = c.get("catalog")
        out.append(
            ir.Component(
                name=name,
                kind=c["kind"],
                project=c["project"],
                title=c["title"],
                nodes=tuple(c.get("nodes", [])),
                port=c.get("port"),
                api=c.get("api"),
                catalog=ir.Catalog(type=cat["type"], name=cat["name"], path=cat.get("path", ""))
                if cat
                else None,
                database=c.get("database"),
                consumes=tuple(
                    ir.MessageHandler(
                        message=m,
                        behaviour=h["behaviour"],
                        on_error=h.get("on_error"),
                        on_failure=tuple(h.get("on_failure", [])),
                        args=h.get("args", {}),
                    )
                    for m, h in c.get("consumes", {}).items()
                ),
                tables=tuple(
                    ir.Table(
                        name=t,
                        indexes=tuple(spec.get("indexes", [])),
                        compound=tuple(tuple(c) for c in spec.get("compound", [])),
                    )
                    for t, spec in c.get("tables", {}).items()
                ),
                startup=tuple(
                    _startup(item, comps) for item in c.get("behaviours", {}).get("startup", [])
                ),
                module=snake(name),
                class_name=pascal(name),
                source=_src(f, ["components", name]),
            )
        )
    return tuple(out)


def _ref_name(schema: Any) -> str | None:
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    return None


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a `#/components/...` reference (parameters, responses, request bodies)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in str(node["$ref"])[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _content(doc: dict[str, Any], body: dict[str, Any] | None) -> tuple[str | None, str | None]:
    if not body:
        return None, None
    content = _resolve(doc, body).get("content") or {}
    if not content:
        return None, None
    ctype = sorted(content)[0]
    if "application/json" in content:
        ctype = "application/json"
    return ctype, _ref_name(content[ctype].get("schema"))


def _api(
    f: SpecFile,
    components: tuple[ir.Component, ...],
    binds: dict[tuple[str, str], Binding],
    conv: ir.Conventions | None,
) -> ir.Api:
    doc = to_plain(f.data)
    served_by = next(c.name for c in components if c.api == f.stem)
    global_security = doc.get("security", [])
    ops = []
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params = [_resolve(doc, p) for p in [*shared, *op.get("parameters", [])]]
            req_ctype, req_model = _content(doc, op.get("requestBody"))
            responses = []
            for status, resp in sorted(op.get("responses", {}).items()):
                r = _resolve(doc, resp)
                ctype, model = _content(doc, r)
                responses.append(
                    ir.Response(
                        status=str(status),
                        description=r.get("description", ""),
                        content_type=ctype,
                        model=model,
                        since=r.get("x-specstack-since"),
                    )
                )
            oid = op["operationId"]
            bound = binds.get((f.stem, oid))
            ops.append(
                ir.Operation(
                    operation_id=oid,
                    method=method.upper(),
                    path=path,
                    summary=op.get("summary", ""),
                    tags=tuple(op.get("tags", [])),
                    function_name=snake(oid),
                    parameters=tuple(
                        ir.Parameter(
                            name=p["name"],
                            location=p["in"],
                            required=bool(p.get("required", p["in"] == "path")),
                            match_path=bool(p.get("x-specstack-match-path", False)),
                            python_name=snake(p["name"]),
                            json_schema=p.get("schema", {}),
                            policy_target=p.get("x-specstack-policy-target"),
                        )
                        for p in params
                    ),
                    request_content_type=req_ctype,
                    request_model=req_model,
                    responses=tuple(responses),
                    requires_token=bool(op.get("security", global_security)),
                    behaviour=op.get("x-specstack-behaviour"),
                    behaviour_args=op.get("x-specstack-args", {}),
                    on_error=op.get("x-specstack-on-error"),
                    policy=op.get("x-specstack-policy"),
                    since=op.get("x-specstack-since"),
                    until=op.get("x-specstack-until"),
                    resource=bound.resource if bound else None,
                    action=bound.action if bound else None,
                    success=tuple(
                        int(r.status) for r in responses if r.status.isdigit() and r.status < "300"
                    ),
                    source=_src(f, ["paths", path, method]),
                )
            )
    return ir.Api(
        name=f.stem,
        title=doc["info"]["title"],
        version=str(doc["info"]["version"]),
        component=served_by,
        module=snake(f.stem),
        client_class=f"{pascal(f.stem)}Client",
        error_format=str(doc["info"].get("x-specstack-error-format", "plain")),
        microversion=_microversion(doc["info"]),
        request_id_headers=tuple(
            str(h) for h in doc["info"].get("x-specstack-request-id-headers", ())
        ),
        conventions=conv or ir.Conventions(),
        operations=tuple(ops),
        models=tuple(sorted((doc.get("components") or {}).get("schemas", {}))),
        source=_src(f, []),
    )


def _microversion(info: dict[str, Any]) -> ir.Microversion | None:
    mv = info.get("x-specstack-microversion")
    if not isinstance(mv, dict):
        return None
    return ir.Microversion(
        service=str(mv["service"]),
        minimum=str(mv["min"]),
        maximum=str(mv["max"]),
        headers=tuple(str(h) for h in mv.get("headers", ("OpenStack-API-Version",))),
    )


def _messages(f: SpecFile, components: tuple[ir.Component, ...]) -> tuple[ir.Message, ...]:
    out = []
    for name, m in to_plain(f.data)["messages"].items():
        consumers = tuple(c.name for c in components if any(h.message == name for h in c.consumes))
        project = next(c.project for c in components if c.name == consumers[0])
        out.append(
            ir.Message(
                name=name,
                function_name=snake(name),
                title=m["title"],
                topic=m["topic"],
                method=m["method"],
                pattern=m["pattern"],
                per_host=bool(m.get("per_host", False)),
                project=project,
                consumers=consumers,
                payload_model=f"{pascal(name)}Payload",
                reply_model=f"{pascal(name)}Reply" if "reply" in m else None,
                payload_schema=m["payload"],
                reply_schema=m.get("reply"),
                source=_src(f, ["messages", name]),
            )
        )
    return tuple(out)


def _topology(f: SpecFile, components: tuple[ir.Component, ...]) -> tuple[ir.TopologyNode, ...]:
    out = []
    for name, n in to_plain(f.data)["topology"]["nodes"].items():
        res = n.get("resources")
        count = n.get("count", 1)
        out.append(
            ir.TopologyNode(
                name=name,
                role=n["role"],
                title=n["title"],
                count=count,
                min=n.get("min", 1),
                max=n.get("max", count),
                driver=n.get("driver"),
                availability_zone=n.get("availability_zone"),
                resources=ir.NodeCapacity(**res)
                if res
                else (DEFAULT_RESOURCES if n["role"] == "compute" else None),
                components=tuple(c.name for c in components if name in c.nodes),
            )
        )
    return tuple(out)


_PRIMITIVES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def python_type(use: Any) -> str:
    """The Python annotation for a driver parameter or result."""
    if use is None:
        return "None"
    if isinstance(use, str):
        return use
    t = use.get("type")
    if t == "array":
        return f"list[{python_type(use.get('items', {'type': 'object'}))}]"
    if t == "object":
        return "dict[str, Any]"
    return _PRIMITIVES.get(str(t), "Any")


def _model_of(use: Any) -> str | None:
    if isinstance(use, str):
        return use
    if isinstance(use, dict) and use.get("type") == "array":
        return _model_of(use.get("items"))
    return None


def _hypervisors(f: SpecFile) -> ir.Hypervisors:
    data = to_plain(f.data)
    h = data["hypervisors"]
    return ir.Hypervisors(
        interface=h["interface"]["name"],
        methods=tuple(
            ir.DriverMethod(
                name=name,
                summary=m["summary"],
                params=tuple(
                    ir.DriverParam(name=p, python_type=python_type(t), model=_model_of(t))
                    for p, t in m["params"].items()
                ),
                returns=python_type(m["returns"]),
            )
            for name, m in h["interface"]["methods"].items()
        ),
        drivers=tuple(
            ir.Driver(
                name=name,
                title=d["title"],
                summary=d.get("summary", ""),
                virt_types=tuple(d["virt_types"]),
                requires=tuple(d.get("requires", [])),
                module=snake(name),
                class_name=f"{pascal(name)}Driver",
                implementation=f"specstack_runtime.virt.{snake(name)}:{pascal(name)}Hypervisor",
            )
            for name, d in h["drivers"].items()
        ),
        types=tuple(sorted(data.get("types") or {})),
    )


def _interaction(it: dict[str, Any], *, main: bool = False) -> ir.Interaction:
    return ir.Interaction(
        title=None if main else it.get("title"),
        source_component=it["from"],
        target_component=it["to"],
        via=it["via"],
        operation=it.get("operation"),
        message=it.get("message"),
        call=it.get("call"),
        tables=tuple(it.get("tables", [])),
        summary=it.get("summary", ""),
        behaviour=it.get("behaviour"),
        bindings=it.get("with", {}),
        save_as=it.get("as"),
    )


def _sequence(f: SpecFile) -> ir.Sequence:
    from generator.pipeline.segments import step_labels

    s = to_plain(f.data)["sequence"]
    steps = []
    for i, (st, label) in enumerate(zip(s["steps"], step_labels(s["steps"]), strict=True)):
        n = int(label.rstrip("abcdefghijklmnopqrstuvwxyz"))
        suffix = label[len(str(n)) :]
        steps.append(
            ir.Step(
                number=n,
                label=label,
                title=st["title"],
                slug=slug(st["title"]),
                test_id=f"step{n:02d}{suffix}-{slug(st['title'])}",
                main=_interaction(st, main=True),
                then=tuple(_interaction(t) for t in st.get("then", [])),
                source=_src(f, ["sequence", "steps", i]),
            )
        )
    return ir.Sequence(
        name=s["name"],
        title=s["title"],
        origin=s.get("source", ""),
        final=s.get("final", ""),
        module=snake(s["name"]),
        steps=tuple(steps),
        errors=tuple(
            ir.ErrorPath(
                name=e["name"],
                step=e["step"],
                provoke=e["provoke"],
                summary=e["summary"],
                expect=e["expect"],
                function_name=f"test_{snake(s['name'])}_{snake(e['name'])}",
            )
            for e in s.get("errors", [])
        ),
        source=_src(f, ["sequence"]),
    )


def _handlers(
    spec: LoadedSpec,
    components: tuple[ir.Component, ...],
    binds: dict[tuple[str, str], Binding],
) -> tuple[ir.Handler, ...]:
    """One handler per (component, trigger): from the sequences' segments, else a default."""
    from generator.pipeline import segments as sg

    by_name = {c.name: c for c in components}
    apis = {f.stem: to_plain(f.data) for f in spec.of_kind("openapi")}
    ops: dict[str, dict[str, Any]] = {}
    for api_name, doc in apis.items():
        for _, _, op in operations_of(doc):
            ops[f"{api_name}:{op['operationId']}"] = op
    found: dict[tuple[str, str, str], list[sg.Segment]] = {}
    titles: dict[tuple[str, str], str] = {}
    for f in spec.of_kind("sequence"):
        seq = to_plain(f.data)["sequence"]
        for st, label in zip(seq["steps"], sg.step_labels(seq["steps"]), strict=True):
            titles[(seq["name"], label)] = st["title"]
        for seg in sg.segments(seq["name"], seq["steps"]):
            found.setdefault((seg.component, seg.kind, seg.trigger), []).append(seg)

    out: list[ir.Handler] = []
    for c in components:
        triggers: list[tuple[str, str]] = []
        if c.api:
            doc = apis[c.api]
            triggers += [("operation", op["operationId"]) for _, _, op in operations_of(doc)]
        triggers += [("message", h.message) for h in c.consumes]
        triggers += [(k, t) for (comp, k, t) in found if comp == c.name and k == "user"]
        for kind, trigger in triggers:
            segs = found.get((c.name, kind, trigger), [])
            canonical = next((s for s in segs if s.items), segs[0] if segs else None)
            args: dict[str, Any] = {}
            on_failure: tuple[ir.HandlerStep, ...] = ()
            if kind == "operation":
                op = ops[f"{c.api}:{trigger}"]
                behaviour, on_error = (
                    op.get("x-specstack-behaviour"),
                    op.get("x-specstack-on-error"),
                )
                args = op.get("x-specstack-args", {})
                bound = binds.get((c.api or "", trigger))
                if bound is not None:  # the engine's arguments, beside what the operation states
                    behaviour, args = bound.behaviour, {**args, **bound.args}
            elif kind == "message":
                h = next(h for h in c.consumes if h.message == trigger)
                behaviour, on_error, args = h.behaviour, h.on_error, dict(h.args)
                on_failure = tuple(
                    _handler_step(i, st["title"], {"from": c.name, **st}, by_name[st["to"]])
                    for i, st in enumerate(h.on_failure)
                )
            else:
                behaviour, on_error = None, None
            steps = _handler_steps(canonical, c, by_name, titles) if canonical else ()
            sql_at = next((s.index for s in steps if s.runs_trigger), None)
            auth = [s.index for s in steps if s.behaviour == "auth.validate"]
            lead = 0
            while lead < len(steps) and steps[lead].behaviour == "auth.validate":
                lead += 1
            out.append(
                ir.Handler(
                    component=c.name,
                    kind=kind,  # type: ignore[arg-type]
                    trigger=trigger,
                    function_name=snake(trigger),
                    behaviour=behaviour,
                    on_error=on_error,
                    args=args,
                    steps=steps,
                    on_failure=on_failure,
                    trigger_at=sql_at if sql_at is not None else lead,
                    trigger_in_step=sql_at is not None,
                    auth_in_steps=bool(auth),
                    occurrences=tuple(
                        ir.Occurrence(
                            sequence=s.sequence,
                            trigger_label=s.trigger_label,
                            labels=tuple(i.label for i in s.items),
                            from_client=by_name[s.source].kind == "client",
                        )
                        for s in segs
                        # (a trigger no segment gives steps: each place it occurs)
                        if s.items or not any(x.items for x in segs)
                    ),
                )
            )
    return tuple(out)


def _handler_step(
    index: int, title: str, it: dict[str, Any], target: ir.Component, *, runs: bool = False
) -> ir.HandlerStep:
    """One interaction of a handler: a sequence's, or a consumer's `on_failure` (whose
    performer is the component itself), with the transport generated code binds it to."""
    via = it["via"]
    api = target.api if via == "http" else None
    transport = (
        "authenticate"
        if it.get("behaviour") == "auth.validate"
        else "client"
        if via == "http"
        else "message"
        if via.startswith("amqp")
        else "driver"
        if via == "native"
        else "noop"
    )
    return ir.HandlerStep(
        index=index,
        title=title,
        source=it["from"],
        target=target.name,
        via=via,
        name=it.get("operation") or it.get("message") or it.get("call"),
        behaviour=it.get("behaviour"),
        runs_trigger=runs,
        bindings=it.get("with", {}),
        save_as=it.get("as"),
        api=api,
        transport=transport,  # type: ignore[arg-type]
        client_module=snake(api) if api else None,
        client_class=f"{pascal(api)}Client" if api else None,
        client_method=snake(it["operation"]) if api else None,
        message_function=snake(it["message"]) if it.get("message") else None,
    )


def _handler_steps(
    seg: Any,
    comp: ir.Component,
    by_name: dict[str, ir.Component],
    titles: dict[tuple[str, str], str],
) -> tuple[ir.HandlerStep, ...]:
    steps: list[ir.HandlerStep] = []
    ran_trigger = False
    for i, item in enumerate(seg.items):
        it = item.it
        target = by_name[it["to"]]
        runs = (
            it["via"] == "sql"
            and not it.get("behaviour")
            and not ran_trigger
            and target.name == comp.database
            and seg.kind != "user"
        )
        ran_trigger = ran_trigger or runs
        title = (None if "." not in item.label else it.get("title")) or titles[
            (seg.sequence, item.label.split(".")[0])
        ]
        steps.append(_handler_step(i, title, it, target, runs=runs))
    return tuple(steps)
