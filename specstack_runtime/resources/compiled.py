"""The resource model of the IR, made ready to serve: expressions compiled, lookups indexed.

Built once per stack (the first request of a process pays for it, or start-up does
through `catalog(info)`), so that serving a request does no parsing.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jsonschema_rs

from specstack_runtime import ir
from specstack_runtime.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
)
from specstack_runtime.expr import Expr, compile_expr
from specstack_runtime.exprreads import Paths, merged_reads
from specstack_runtime.microversions import parse
from specstack_runtime.store import Not

Doc = dict[str, Any]

#: What each kind of failure answers unless the spec says otherwise.
DEFAULT_ERRORS: dict[str, tuple[int, str]] = {
    "not_found": (404, "{title} {id} could not be found."),
    "conflict": (409, "A {resource} with {field} {value} already exists."),
    "forbidden": (403, "Policy doesn't allow this operation on {resource} {id}."),
    "invalid": (400, "Invalid input for {field}: {reason}."),
    "bad_request": (400, "Invalid input: {reason}."),
    "immutable": (400, "The {field} of a {resource} cannot be changed."),
    "ref_missing": (400, "Invalid {field}: {ref} {value} could not be found."),
    "required": (400, "The {field} of a {resource} is required."),
    "read_only": (400, "Cannot set read-only attribute {field}."),
    "field_forbidden": (403, "Policy doesn't allow {field} of a {resource} to be set."),
    "changed": (409, "{title} {id} was changed meanwhile; try again."),
    "filter_forbidden": (403, "Policy doesn't allow the filter {field}."),
    "unknown_field": (400, "Unrecognized attribute(s) '{field}'"),
    "body": (400, "The request body must be an object with a '{envelope}' object."),
    "owner": (403, "Only an administrator may create a {resource} for another project."),
    "acts_for_forbidden": (403, "Policy doesn't allow {action} of another's {resource}."),
    "in_use": (409, "{title} {id} is in use."),
    "state": (409, "Cannot '{action}' {resource} {id} while it is in {field} {state}."),
    "action": (400, "Unknown action {action}."),
    "action_forbidden": (403, "Policy doesn't allow {rule} to be performed."),
    "bad_limit": (400, "Invalid limit {value}: it must be a non-negative integer."),
    "bad_marker": (404, "Marker {value} could not be found."),
    "bad_offset": (400, "Invalid offset {value}: it must be a non-negative integer."),
    "bad_sort": (400, "Invalid sort key {value}."),
    "bad_filter": (400, "Invalid value {value} for the filter {field}: {reason}."),
    "item_missing": (404, "{value} is not in the {field} of {resource} {id}."),
    "patch_conflict": (409, "The patch does not apply: {reason}."),
    "not_removable": (400, "The {field} of a {resource} cannot be removed."),
    "over_quota": (
        403,
        "Quota exceeded for {quota}: requested {requested}, used {used} of {limit}.",
    ),
}

_CLASSES: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


_INEQUALITY = re.compile(r"\s*doc\.([A-Za-z_]\w*)\s*!=\s*'([^'\\]*)'\s*")
_COPY = re.compile(r"\s*doc\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\s*")  # a field's value as it is
_RULES = re.compile(r"\brules\b")
_RULE_READ = re.compile(
    r"""\brules\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*\])"""
)


def rule_names(texts: list[str]) -> frozenset[str] | None:
    """The policy rules `texts` read as `rules.NAME` or `rules['NAME']`; None when one
    reads `rules` any other way (then every rule is worked out)."""
    names: set[str] = set()
    for text in texts:
        reads = [next(g for g in m.groups() if g is not None) for m in _RULE_READ.finditer(text)]
        if len(reads) != len(_RULES.findall(text)):
            return None
        names.update(reads)
    return frozenset(names)


class _Keep(dict[str, Any]):
    """format_map values: a name the message does not get stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_FORMATTER = string.Formatter()


def fill(template: str, values: Mapping[str, Any]) -> str:
    try:
        return _FORMATTER.vformat(template, (), _Keep(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template


def error(status: int, message: str, kind: str | None = None) -> ApiError:
    cls = _CLASSES.get(status)
    if cls is not None:
        return cls(message, kind=kind)
    return ApiError(message, status=status, kind=kind)


@dataclass
class Compiled:
    """One resource, ready to serve."""

    res: ir.Resource
    conventions: ir.Conventions
    indexes: frozenset[str]
    fields: dict[str, ir.ResourceField] = field(default_factory=dict)
    computed: list[tuple[str, Expr]] = field(default_factory=list)
    renders: list[tuple[str, Expr]] = field(default_factory=list)
    default_exprs: list[tuple[str, Expr]] = field(default_factory=list)
    normalizers: list[tuple[str, Expr]] = field(default_factory=list)
    filters: dict[str, ir.ResourceFilter] = field(default_factory=dict)
    validators: dict[str, Any] = field(default_factory=dict)
    shared: Expr | None = None
    list_where: Expr | None = None
    list_select: Expr | None = None

    def __post_init__(self) -> None:
        self.fields = {f.name: f for f in self.res.fields}
        self.validators = {
            f.name: jsonschema_rs.validator_for(f.json_schema, validate_formats=True)
            for f in self.res.fields
            if f.json_schema
        }
        self.computed = [(f.name, compile_expr(f.computed)) for f in self.res.fields if f.computed]
        self.renders = [(f.name, compile_expr(f.render)) for f in self.res.fields if f.render]
        self.default_exprs = [
            (f.name, compile_expr(f.default_expr)) for f in self.res.fields if f.default_expr
        ]
        self.normalizers = [
            (f.name, compile_expr(f.normalize)) for f in self.res.fields if f.normalize
        ]
        self.filters = {f.param: f for f in self.res.filters}
        self.shared = compile_expr(self.res.shared) if self.res.shared else None
        self.list_where = compile_expr(self.res.list_where) if self.res.list_where else None
        self.list_select = compile_expr(self.res.list_select) if self.res.list_select else None

    @property
    def name(self) -> str:
        return self.res.name

    @cached_property
    def extra_validator(self) -> Any:
        """What an extra attribute's value must match (None: anything)."""
        schema = self.res.extra_schema
        return jsonschema_rs.validator_for(schema) if schema else None

    @cached_property
    def aliases(self) -> dict[str, str]:
        """Request attribute -> the field it stands for (cinder's display_name for name)."""
        return {f.name: f.alias for f in self.res.fields if f.alias}

    @cached_property
    def stored(self) -> tuple[str, ...]:
        """Fields kept in the row (computed ones are not)."""
        return tuple(f.name for f in self.res.fields if not f.computed)

    @cached_property
    def hidden(self) -> frozenset[str]:
        out = {f.name for f in self.res.fields if f.hidden}
        out |= {f.store_as for f in self.res.fields if f.store_as}
        return frozenset(out)

    def key(self, name: str) -> str:
        """The row's key of field `name` (its `stored` name, if it has one)."""
        f = self.fields.get(name)
        return f.stored if f is not None and f.stored else name

    @cached_property
    def stored_as(self) -> dict[str, str]:
        """Row key -> field name, for the fields stored under another name."""
        return {f.stored: f.name for f in self.res.fields if f.stored}

    @cached_property
    def live(self) -> Expr | None:
        return compile_expr(self.res.live) if self.res.live else None

    @cached_property
    def live_where(self) -> dict[str, Any] | None:
        """`live` as a store filter when it is one field's inequality (`doc.F != 'V'`, as
        soft deletes are), so counting live rows is one SQL count; None otherwise."""
        found = _INEQUALITY.fullmatch(self.res.live or "")
        return {found.group(1): Not(found.group(2))} if found else None

    @cached_property
    def defaults(self) -> dict[str, Any]:
        """Literal defaults: what a row stored before a field existed reads as."""
        return {
            self.key(f.name): f.default for f in self.res.fields if f.has_default and not f.computed
        }

    def complete(self, doc: Doc) -> Doc:
        missing = [k for k in self.defaults if k not in doc]
        if not missing:
            return doc
        return {**{k: self.defaults[k] for k in missing}, **doc}

    @cached_property
    def off_schema(self) -> frozenset[str]:
        """Computed fields the answer's schema lacks: shown only when a view names them."""
        return frozenset(f.name for f in self.res.fields if f.computed and not f.in_schema)

    @cached_property
    def render_uses(self) -> frozenset[str]:
        """The variables its computed and render expressions read (see `Expr.uses`)."""
        return frozenset().union(*(e.uses for _, e in (*self.computed, *self.renders)))

    @cached_property
    def render_reads(self) -> dict[str, Paths | None]:
        """The variables, and of each the fields, those expressions read (`Expr.reads`)."""
        return merged_reads(e.reads for _, e in (*self.computed, *self.renders))

    @cached_property
    def copies(self) -> dict[str, str]:
        """Computed and render expressions that are a row's field as it is (`doc.F`), by
        their text: the row's key they read (`views.render` answers with its value)."""
        exprs = [e for _, e in (*self.computed, *self.renders)]
        return {e.text: found.group(1) for e in exprs if (found := _COPY.fullmatch(e.text))}

    @cached_property
    def cel_render_reads(self) -> dict[str, Paths | None]:
        """What the computed and render expressions other than `copies` read."""
        exprs = [e for _, e in (*self.computed, *self.renders)]
        return merged_reads(e.reads for e in exprs if e.text not in self.copies)

    @cached_property
    def uses_rules(self) -> bool:
        """Whether its answers, visibility or list condition read `rules` (policy decisions,
        worked out once per call only for such resources)."""
        exprs = [e for _, e in (*self.computed, *self.renders)]
        exprs += [e for e in (self.shared, self.list_where, self.list_select) if e is not None]
        return any("rules" in e.uses for e in exprs)

    @cached_property
    def rules_read(self) -> frozenset[str] | None:
        """The policy rules those expressions name (None: all), found once: a call decides
        only these, not every rule of the spec."""
        exprs = [e for _, e in (*self.computed, *self.renders)]
        exprs += [e for e in (self.shared, self.list_where, self.list_select) if e is not None]
        return rule_names([e.text for e in exprs if "rules" in e.uses])

    @cached_property
    def answer_keys(self) -> dict[str, str | None]:
        """Row key -> the answer's key for it (None: not shown, "": no field), filled as
        rows are rendered (views.answer_key): each worked out once, not once per row. Keys
        of extra attributes (their callers' names, unbounded) are not kept."""
        return {}

    @cached_property
    def always(self) -> tuple[str, ...]:
        """Stored fields an answer always has (null when the row lacks them)."""
        return tuple(
            f.name for f in self.res.fields if f.always and not f.computed and not f.hidden
        )

    @cached_property
    def optional(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.res.fields if f.optional)

    @cached_property
    def guarded(self) -> tuple[tuple[str, str], ...]:
        """(field, rule): fields shown only to callers the rule allows."""
        return tuple((f.name, f.visible) for f in self.res.fields if f.visible)

    @cached_property
    def versioned(self) -> tuple[tuple[str, tuple[int, int], tuple[int, int]], ...]:
        """(field, first, last microversion): fields some of an API's versions do not have."""
        top = (1 << 30, 0)
        return tuple(
            (f.name, parse(f.since) if f.since else (0, 0), parse(f.until) if f.until else top)
            for f in self.res.fields
            if f.since or f.until
        )

    def absent_at(self, version: tuple[int, int] | None) -> set[str]:
        """The fields microversion `version` does not have (none without a version)."""
        if version is None:
            return set()
        return {name for name, first, last in self.versioned if not first <= version <= last}

    def not_at(self, name: str, version: tuple[int, int] | None) -> bool:
        """Whether field `name` is not part of the request's microversion."""
        if version is None:
            return False
        return any(
            field == name and not first <= version <= last for field, first, last in self.versioned
        )

    @cached_property
    def unique_sets(self) -> tuple[tuple[str, ...], ...]:
        return tuple((f.name, *f.unique) for f in self.res.fields if f.unique is not None)

    @cached_property
    def owner_field(self) -> str | None:
        return {"project": "project_id", "user": "user_id"}.get(self.res.owner)

    def template(self, name: str, **variables: Any) -> Any:
        """The value of the spec's template `name` (`templates:`) with these variables and
        the resource's `data`: a behaviour's answer or row, described in the spec. A pure
        one's value is kept by what it reads (`exprcache`: a flavor's info is rendered
        several times a boot, from the same row)."""
        return compile_expr(self.res.templates[name]).evaluate(
            **{"data": self.res.data, **variables}
        )

    def fail(self, kind: str, text: ir.ErrorText | None = None, /, **values: Any) -> ApiError:
        """The error of `kind`, in this resource's words (or its API's, or the default);
        `text` (a quota's own over-quota error) wins over both."""
        status, template = DEFAULT_ERRORS.get(kind, (400, "{reason}"))
        err_kind: str | None = None
        spec = self.res.errors.get(kind) or self.conventions.errors.get(kind)
        field = self.fields.get(str(values.get("field")))
        if kind == "conflict" and field is not None and field.conflict:
            spec = ir.ErrorText(message=field.conflict)
        if kind == "invalid" and field is not None and field.invalid:
            spec = ir.ErrorText(message=field.invalid)
        if kind == "over_quota":
            spec = self.conventions.over_quota
        if text is not None:
            spec = text
        if spec is not None:
            template = spec.message
            status = spec.status or status
            err_kind = spec.kind
        context = {"resource": self.res.name.replace("_", " "), "title": self.res.title, **values}
        return error(status, fill(template, context), err_kind)


@dataclass
class Catalog:
    """Every resource, quota and query of the stack, by name."""

    resources: dict[str, Compiled]
    quotas: dict[str, ir.Quota]
    queries: dict[str, ir.Query]
    policy: dict[str, str]
    operations: dict[tuple[str, str], ir.Operation]

    def resource(self, name: str) -> Compiled:
        try:
            return self.resources[name]
        except KeyError:
            raise KeyError(f"no resource {name!r} in the spec") from None

    def collectors(self, name: str) -> list[tuple[Compiled, ir.ResourceField]]:
        """(resource, field) pairs whose field lists the ids of rows of `name`."""
        return list(self._collectors.get(name, ()))

    def referring(self, name: str) -> list[tuple[Compiled, ir.ResourceField]]:
        """(resource, field) pairs whose field refers to rows of `name`."""
        return list(self._referring.get(name, ()))

    # found once per catalog (every create and delete asks), by the resource named
    @cached_property
    def _collectors(self) -> dict[str, list[tuple[Compiled, ir.ResourceField]]]:
        return self._fields_by(lambda f: f.collect.resource if f.collect is not None else None)

    @cached_property
    def _referring(self) -> dict[str, list[tuple[Compiled, ir.ResourceField]]]:
        return self._fields_by(lambda f: f.ref.resource if f.ref is not None else None)

    def _fields_by(
        self, named: Callable[[ir.ResourceField], str | None]
    ) -> dict[str, list[tuple[Compiled, ir.ResourceField]]]:
        """Every resource's fields by the resource `named` finds in each (None: none)."""
        out: dict[str, list[tuple[Compiled, ir.ResourceField]]] = {}
        for c in self.resources.values():
            for f in c.res.fields:
                if (resource := named(f)) is not None:
                    out.setdefault(resource, []).append((c, f))
        return out


def build_catalog(model: ir.IR) -> Catalog:
    """The stack's compiled resource model (StackInfo.resources keeps one per stack)."""
    apis = {a.name: a for a in model.apis}
    tables = {c.name: c for c in model.components}
    out: dict[str, Compiled] = {}
    for res in model.resources:
        api = apis[res.api]
        comp = tables[api.component]
        db = tables.get(comp.database or "")
        table = next((t for t in (db.tables if db else ()) if t.name == res.table), None)
        out[res.name] = Compiled(
            res=res,
            conventions=api.conventions,
            indexes=frozenset(table.indexes if table else ()) | {"id"},
        )
    return Catalog(
        resources=out,
        quotas={q.name: q for q in model.quotas},
        queries={q.name: q for q in model.queries},
        policy={p.name: p.rule for p in model.policy},
        operations={(a.name, o.operation_id): o for a in model.apis for o in a.operations},
    )
