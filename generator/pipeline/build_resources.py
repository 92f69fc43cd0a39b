"""The resource model's part of the IR: spec/resources/*.yaml read against the API documents.

A resource's fields are its schema's properties (type, maxLength, enum, default,
readOnly from the OpenAPI document) with what the resource file adds; which
operations the generic engine serves comes from each resource's `operations`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from generator.pipeline.load import LoadedSpec, SpecFile, to_plain
from specstack_runtime import ir

#: The engine behaviour serving each kind of bound operation.
ENGINE_BEHAVIOUR = "resource.serve"
QUERY_BEHAVIOUR = "resource.query"

_DEFAULT_ERRORS: dict[str, str] = {
    "not_found": "{title} {id} could not be found.",
    "conflict": "A {resource} with {field} {value} already exists.",
    "forbidden": "Policy does not allow this {resource} to be changed.",
    "bad_request": "Invalid input: {detail}",
    "immutable": "The {field} of a {resource} cannot be changed.",
    "ref_missing": "Invalid {field}: {ref} {value} could not be found.",
    "required": "The {field} of a {resource} is required.",
    "read_only": "The {field} of a {resource} is set by the server.",
    "unknown_field": "Unrecognized attribute(s) '{field}'",
}


@dataclass(frozen=True)
class Binding:
    """An operation the engine serves: `resource` and `action`, or the query it answers."""

    resource: str | None
    action: str
    query: str | None = None
    view: str | None = None
    name: str | None = None  # the state-machine action an operation's path names
    field: str | None = None  # add_item / remove_item: the list field
    item: str | None = None  # add_item / remove_item: the path parameter giving the item
    view_until: str | None = None  # the last microversion answering with `view`
    arg: str | None = None  # action: the body's object that is the action's argument

    @property
    def behaviour(self) -> str:
        return QUERY_BEHAVIOUR if self.query else ENGINE_BEHAVIOUR

    @property
    def args(self) -> dict[str, Any]:
        if self.query:
            return {"query": self.query}
        args: dict[str, Any] = {"resource": self.resource, "action": self.action}
        if self.view:
            args["view"] = self.view
        for key in ("name", "field", "item", "view_until", "arg"):
            if getattr(self, key):
                args[key] = getattr(self, key)
        return args


def resource_files(spec: LoadedSpec) -> Iterator[tuple[SpecFile, dict[str, Any]]]:
    for f in spec.of_kind("resources"):
        yield f, to_plain(f.data)


def bindings(spec: LoadedSpec) -> dict[tuple[str, str], Binding]:
    """(api, operationId) -> what serves it, for every operation a resource file binds."""
    out: dict[tuple[str, str], Binding] = {}
    for _, data in resource_files(spec):
        api = data["api"]
        for name, res in data["resources"].items():
            for op, action in operations(res).items():
                given = (res.get("operations") or {}).get(op)
                more = given if isinstance(given, dict) else {}
                out[(api, op)] = Binding(
                    name,
                    action[0],
                    view=action[1],
                    name=more.get("name"),
                    field=more.get("field"),
                    item=more.get("item"),
                    view_until=more.get("view_until"),
                    arg=more.get("arg"),
                )
        for qname, q in (data.get("queries") or {}).items():
            out[(api, q["operation"])] = Binding(q["from"], "query", qname)
    return out


def operations(res: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """A resource's bound operations: operationId -> (action, view)."""
    out: dict[str, tuple[str, str | None]] = {}
    for op, spec in (res.get("operations") or {}).items():
        if isinstance(spec, dict):
            out[str(op)] = (str(spec["action"]), spec.get("view"))
        else:
            out[str(op)] = (str(spec), None)
    return out


def schema_of(doc: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    schemas = (doc.get("components") or {}).get("schemas") or {}
    found = schemas.get(name)
    return found if isinstance(found, dict) else None


def properties(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A schema's properties, through `$ref` and `allOf` (the shapes the spec uses)."""
    if "$ref" in schema:
        target = schema_of(doc, str(schema["$ref"]).rsplit("/", 1)[-1])
        return properties(doc, target) if target else {}
    out: dict[str, dict[str, Any]] = {}
    for part in schema.get("allOf", []):
        if isinstance(part, dict):
            out.update(properties(doc, part))
    for key, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict):
            out[str(key)] = _deref(doc, prop)
    return out


def _deref(doc: Mapping[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        target = schema_of(doc, str(prop["$ref"]).rsplit("/", 1)[-1])
        if target is not None:
            return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _accepted_types(prop: Mapping[str, Any], request: Mapping[str, Any]) -> tuple[str, ...]:
    """What a write may give: the answer's types, and null where the request's schema
    allows it (cinder's CLI sends `metadata: null`); () for any."""
    types = _types(prop or request)
    if types and prop and request and "null" in _types(request) and "null" not in types:
        types = (*types, "null")
    return types


def _types(prop: Mapping[str, Any]) -> tuple[str, ...]:
    t = prop.get("type")
    if isinstance(t, str):
        return (t,)
    if isinstance(t, list):
        return tuple(str(x) for x in t)
    for key in ("anyOf", "oneOf"):
        if isinstance(prop.get(key), list):
            found: list[str] = []
            for alt in prop[key]:
                for x in _types(alt if isinstance(alt, dict) else {}):
                    if x not in found:
                        found.append(x)
            return tuple(found)
    return ()


def _request_schema(
    doc: Mapping[str, Any], operation: str | None, envelope: str | None
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The properties and required names of an operation's JSON request (inside `envelope`)."""
    if not operation:
        return {}, set()
    for item in (doc.get("paths") or {}).values():
        for op in item.values():
            if not isinstance(op, dict) or op.get("operationId") != operation:
                continue
            body = op.get("requestBody") or {}
            while "$ref" in body:
                body = (
                    (doc.get("components") or {})
                    .get("requestBodies", {})
                    .get(str(body["$ref"]).rsplit("/", 1)[-1], {})
                )
            content = (body.get("content") or {}).get("application/json") or {}
            schema = _deref(doc, content.get("schema") or {})
            if envelope:
                schema = properties(doc, schema).get(envelope) or {}
            schema = _deref(doc, schema)
            return properties(doc, schema), set(schema.get("required") or ())
    return {}, set()


def _extra_schema(
    doc: Mapping[str, Any], operation: str | None, envelope: str | None
) -> dict[str, Any] | None:
    """What the create request's schema says of attributes it does not name
    (`additionalProperties`), refs inlined; None when it says nothing."""
    if not operation:
        return None
    for item in (doc.get("paths") or {}).values():
        for op in item.values():
            if not isinstance(op, dict) or op.get("operationId") != operation:
                continue
            content = ((op.get("requestBody") or {}).get("content") or {}).get("application/json")
            schema = _deref(doc, (content or {}).get("schema") or {})
            if envelope:
                schema = _deref(doc, properties(doc, schema).get(envelope) or {})
            extra = schema.get("additionalProperties")
            return dict(inline(doc, extra)) if isinstance(extra, dict) else None
    return None


def inline(doc: Mapping[str, Any], node: Any, seen: tuple[str, ...] = ()) -> Any:
    """`node` with its local `$ref`s replaced by what they name (a cycle stays a `$ref`)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and ref not in seen:
            target: Any = doc
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            rest = {k: v for k, v in node.items() if k != "$ref"}
            merged = {**target, **rest} if isinstance(target, dict) else rest
            return inline(doc, merged, (*seen, ref))
        return {k: inline(doc, v, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [inline(doc, v, seen) for v in node]
    return node


def _field(
    name: str,
    prop: Mapping[str, Any],
    extra: Mapping[str, Any],
    request: Mapping[str, Any] | None = None,
    *,
    always: bool = False,
    required: bool = False,
) -> ir.ResourceField:
    request = request or {}
    default = extra.get("default", prop.get("default", request.get("default")))
    has_default = "default" in extra or "default" in prop or "default" in request
    default_expr = None
    if isinstance(default, dict) and set(default) == {"expr"}:
        default_expr, default = str(default["expr"]), None
    ref = extra.get("ref")
    write: Literal["always", "create", "never"] = extra.get("write") or (
        "never" if prop.get("readOnly") else "always"
    )
    return ir.ResourceField(
        name=name,
        types=_accepted_types(prop, request),
        max_length=extra.get("max_length", prop.get("maxLength", request.get("maxLength"))),
        enum=(
            tuple(prop["enum"])
            if isinstance(prop.get("enum"), list)
            else tuple(request["enum"])
            if isinstance(request.get("enum"), list)
            else None
        ),
        has_default=has_default and default_expr is None,
        default=default,
        default_expr=default_expr,
        required=bool(extra.get("required", required)),
        always=always,
        write=write,
        unique=tuple(extra["unique"]) if "unique" in extra else None,
        ref=_ref(ref),
        computed=extra.get("computed"),
        hidden=bool(extra.get("hidden", False) or prop.get("writeOnly", False)),
        visible=extra.get("visible"),
        open_since=extra.get("open_since"),
        since=extra.get("since"),
        until=extra.get("until"),
        hash=extra.get("hash"),
        store_as=extra.get("store_as"),
        shown_once=bool(extra.get("shown_once", False)),
        merge=bool(extra.get("merge", False)),
        alias=extra.get("alias"),
        in_schema=bool(prop),
        render=extra.get("render"),
        normalize=extra.get("normalize"),
        optional=bool(extra.get("optional", False)),
        conflict=extra.get("conflict"),
        json_schema=dict(request) if request else None,
        set_by=extra.get("set_by"),
        stored=extra.get("stored"),
        collect=ir.Collect(**extra["collect"]) if extra.get("collect") else None,
        invalid=extra.get("invalid"),
        minimum=extra.get("minimum", request.get("minimum")),
        maximum=extra.get("maximum", request.get("maximum")),
        coerce=extra.get("coerce"),
        pattern=extra.get("pattern", request.get("pattern")),
    )


def _ref(ref: Any) -> ir.FieldRef | None:
    if isinstance(ref, str):
        return ir.FieldRef(resource=ref)
    if not isinstance(ref, dict):
        return None
    modify = ref.get("modify")
    return ir.FieldRef(
        **{k: v for k, v in ref.items() if k != "modify"},
        modify=ir.ErrorText(**modify) if isinstance(modify, dict) else None,
    )


def _errors(raw: Mapping[str, Any] | None) -> dict[str, ir.ErrorText]:
    out: dict[str, ir.ErrorText] = {}
    for key, value in (raw or {}).items():
        out[key] = ir.ErrorText(message=value) if isinstance(value, str) else ir.ErrorText(**value)
    return out


def _resource(
    f: SpecFile, api: str, component: str, doc: Mapping[str, Any], name: str, r: dict[str, Any]
) -> ir.Resource:
    schema = schema_of(doc, r["schema"]) or {}
    props = properties(doc, schema)
    always = set(schema.get("required") or ())
    envelope = r.get("envelope") or {}
    one = envelope.get("one", name) if "one" in envelope or not envelope else None
    bound = operations(r)
    creator = next((op for op, (action, _) in bound.items() if action == "create"), None)
    updater = next((op for op, (action, _) in bound.items() if action == "update"), None)
    request, needed = _request_schema(doc, creator, one)
    changes, _ = _request_schema(doc, updater, one)
    request = {k: inline(doc, v) for k, v in {**changes, **request}.items()}
    extras: dict[str, Any] = r.get("fields") or {}
    fields = [
        _field(
            k,
            p,
            extras.get(k, {}),
            request.get(k),
            always=k in always,
            required=k in needed,
        )
        for k, p in props.items()
    ]
    fields += [_field(k, {}, e, request.get(k)) for k, e in extras.items() if k not in props]
    listing = r.get("list") or {}
    filters = []
    for param, spec in (listing.get("filters") or {}).items():
        if isinstance(spec, str):
            spec = {"op": spec}
        filters.append(
            ir.ResourceFilter(
                param=param,
                field=spec.get("field", param),
                op=spec.get("op", "eq"),
                visible=spec.get("visible"),
                requires=spec.get("requires"),
                open_since=spec.get("open_since"),
                since=spec.get("since"),
                values_since=spec.get("values_since"),
                invalid=spec.get("invalid"),
                default=spec.get("default"),
                values=tuple(spec["values"]) if "values" in spec else None,
                keys={
                    key: (key, how) if isinstance(how, str) else (how["field"], how.get("op", "eq"))
                    for key, how in (spec.get("keys") or {}).items()
                },
            )
        )
    deletes = [
        ir.DeleteRule(action=action, **rule)
        for action in ("refuse", "cascade", "clear")
        for rule in (r.get("delete") or {}).get(action, [])
    ]
    states = None
    if r.get("states"):
        st = r["states"]
        actions = []
        for aname, a in (st.get("actions") or {}).items():
            actions.append(
                ir.ResourceAction(
                    name=aname,
                    title=a.get("title"),
                    accept=tuple(ir.ActionCheck(**c) for c in a.get("accept", ())),
                    require=tuple(ir.ActionCheck(**c) for c in a.get("require", ())),
                    relations=tuple(a.get("relations", ())),
                    named_only=bool(a.get("named_only", False)),
                    ask=tuple(ir.ActionAsk(name=n, **k) for n, k in (a.get("ask") or {}).items()),
                    answer=a.get("answer", {}),
                    headers=a.get("headers", {}),
                    view=bool(a.get("view", False)),
                    view_adds=a.get("view_adds", {}),
                    from_states=tuple(a.get("from", ())),
                    to=a.get("to"),
                    has_to="to" in a,
                    set=a.get("set", {}),
                    send=a.get("send"),
                    host=a.get("host"),
                    payload=a.get("payload", {}),
                    hook=a.get("hook"),
                    when=a.get("when"),
                    since=a.get("since"),
                    status=a.get("status", 202),
                    conflict=ir.ErrorText(**a["conflict"]) if a.get("conflict") else None,
                    policy=a.get("policy"),
                    quotas=tuple(a.get("quotas", ())),
                    effects=tuple(ir.Effect(**e) for e in a.get("effects", ())),
                )
            )
        states = ir.StateMachine(
            field=st["field"],
            actions=tuple(actions),
            recover=tuple(
                ir.RecoveryRule(**{"title": f"{name} {i + 1}", **rule})
                for i, rule in enumerate(st.get("recover") or ())
            ),
            conflict=st.get(
                "conflict", "Cannot '{action}' {resource} {id} while it is in {field} {state}."
            ),
        )
    title = r.get("title") or name.replace("_", " ").capitalize()
    return ir.Resource(
        name=name,
        title=title,
        api=api,
        component=component,
        table=r["table"],
        schema_name=r["schema"],
        envelope_one=one,
        envelope_many=envelope.get("many", f"{name}s"),
        envelope_item=envelope.get("item"),
        path_fields=dict(r.get("path") or {}),
        id_style=r.get("id", "uuid"),
        owner=r.get("owner", "project"),
        extra=bool(r.get("extra", False)),
        shared=r.get("shared"),
        parent=r.get("parent"),
        see_all=r.get("see_all"),
        acts_for=ir.ActsFor(**r["acts_for"]) if r.get("acts_for") else None,
        joins={k: ir.Join(**v) for k, v in (r.get("joins") or {}).items()},
        modify=r.get("modify"),
        operations={op: action for op, (action, _) in bound.items()},
        views={k: tuple(v) for k, v in (r.get("views") or {}).items()},
        operation_views={op: view for op, (_, view) in bound.items() if view},
        fields=tuple(fields),
        deletes=tuple(deletes),
        filters=tuple(filters),
        sort_keys=(
            {k: v if isinstance(v, str) else v["field"] for k, v in listing["sort"].items()}
            if isinstance(listing.get("sort"), dict)
            else {k: k for k in listing.get("sort", ())}
        ),
        sort_since={
            k: v["since"]
            for k, v in (listing["sort"].items() if isinstance(listing.get("sort"), dict) else ())
            if isinstance(v, dict)
        },
        default_sort=tuple(listing.get("default_sort", ())),
        list_where=listing.get("where"),
        list_select=listing.get("select"),
        list_all=listing.get("all"),
        list_all_rule=listing.get("all_rule"),
        list_count=ir.ListCount(**listing["count"]) if listing.get("count") else None,
        marker=listing.get("marker"),
        list_since=dict(listing.get("since") or {}),
        list_strict_since=listing.get("strict_since"),
        states=states,
        hooks=dict(r.get("hooks") or {}),
        handoff=(
            ir.Handoff(**r["delete"]["handoff"]) if (r.get("delete") or {}).get("handoff") else None
        ),
        effects={
            point: tuple(ir.Effect(**e) for e in effects)
            for point, effects in (r.get("effects") or {}).items()
        },
        errors=_errors(r.get("errors")),
        quota=r.get("quota"),
        revision=r.get("revision"),
        data=dict(r.get("data") or {}),
        live=r.get("live"),
        guards=tuple(
            ir.Guard(**{**g, "on": tuple(g["on"] if isinstance(g["on"], list) else [g["on"]])})
            for g in r.get("refuse") or ()
        ),
        location=r.get("location"),
        templates=dict(r.get("templates") or {}),
        relations=tuple(
            ir.Relation(name=k, **rel) for k, rel in (r.get("relations") or {}).items()
        ),
        extra_schema=_extra_schema(doc, creator, one) if r.get("extra") else None,
        rows=tuple(dict(row) for row in r.get("rows") or ()),
        seed=ir.Seed(**r["seed"]) if r.get("seed") else None,
        find_by=tuple((r.get("lookup") or {}).get("by") or ()),
        find_names=dict((r.get("lookup") or {}).get("names") or {}),
        require=tuple(ir.QueryRequire(**q) for q in r.get("require") or ()),
        records=tuple(
            ir.Record(
                on=tuple(rec["on"]),
                key=tuple(rec["key"]),
                when=rec.get("when"),
                each=rec.get("each"),
                set=dict(rec["set"]),
                append=(rec["append"]["field"], dict(rec["append"]["item"]))
                if rec.get("append")
                else None,
            )
            for rec in r.get("record") or ()
        ),
        source=ir.Source(file=f.rel, line=f.locate(["resources", name]).line),
    )


def build_resources(
    spec: LoadedSpec, components: tuple[ir.Component, ...]
) -> tuple[tuple[ir.Resource, ...], tuple[ir.Quota, ...], tuple[ir.Query, ...]]:
    docs = {f.stem: to_plain(f.data) for f in spec.of_kind("openapi")}
    served = {c.api: c.name for c in components if c.api}
    resources: list[ir.Resource] = []
    quotas: list[ir.Quota] = []
    queries: list[ir.Query] = []
    for f, data in resource_files(spec):
        api = data["api"]
        doc = docs[api]
        for name, r in data["resources"].items():
            resources.append(_resource(f, api, served[api], doc, name, r))
        for qname, q in (data.get("quotas") or {}).items():
            quotas.append(
                ir.Quota(
                    name=qname,
                    api=api,
                    resource=q["resource"],
                    default=q["default"],
                    count=q.get("count"),
                    limits=q.get("limits"),
                    over=ir.ErrorText(**q["over"]) if q.get("over") else None,
                )
            )
        for qname, q in (data.get("queries") or {}).items():
            queries.append(
                ir.Query(
                    name=qname,
                    api=api,
                    operation=q["operation"],
                    source=q["from"],
                    params=tuple(
                        ir.QueryParam(
                            name=p,
                            parse=spec_.get("parse", "string"),
                            required=bool(spec_.get("required", False)),
                            default=spec_.get("default"),
                        )
                        for p, spec_ in (q.get("params") or {}).items()
                    ),
                    joins=tuple(
                        ir.QueryJoin(
                            name=j,
                            resource=js["resource"],
                            on=js["on"],
                            key=js.get("key"),
                            sum=js.get("sum"),
                            value=js.get("value"),
                        )
                        for j, js in (q.get("join") or {}).items()
                    ),
                    require=tuple(ir.QueryRequire(**r) for r in q.get("require", ())),
                    tables=dict(q.get("tables") or {}),
                    filters=bool(q.get("filters", True)),
                    where=q.get("where"),
                    answer=q["answer"],
                    status=q.get("status", 200),
                    ask=ir.QueryAsk(**q["ask"]) if q.get("ask") else None,
                    empty=ir.ErrorText(**q["empty"]) if q.get("empty") else None,
                    refuse=tuple(
                        ir.QueryRefusal(
                            when=r["when"],
                            error=ir.ErrorText(
                                message=r["message"], status=r["status"], kind=r.get("kind")
                            ),
                        )
                        for r in q.get("refuse") or ()
                    ),
                    target=q.get("target"),
                )
            )
    return tuple(resources), tuple(quotas), tuple(queries)


def conventions(spec: LoadedSpec) -> dict[str, ir.Conventions]:
    out: dict[str, ir.Conventions] = {}
    for _, data in resource_files(spec):
        raw = dict(data.get("conventions") or {})
        if "over_quota" in raw:
            raw["over_quota"] = ir.ErrorText(**raw["over_quota"])
        raw["errors"] = _errors(raw.get("errors"))
        out[data["api"]] = ir.Conventions(**raw)
    return out


def default_errors() -> dict[str, str]:
    return dict(_DEFAULT_ERRORS)


def policy_rules(spec: LoadedSpec) -> tuple[ir.PolicyRule, ...]:
    f = spec.one("policy")
    if f is None:
        return ()
    rules = to_plain(f.data)["policy"]["rules"]
    return tuple(ir.PolicyRule(name=k, rule=v) for k, v in rules.items())
