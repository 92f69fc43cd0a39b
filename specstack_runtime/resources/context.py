"""What one request to the resource engine works with: the call, the resource, the store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from specstack_runtime import ir
from specstack_runtime.context import AuthContext, Call
from specstack_runtime.errors import Unauthorized
from specstack_runtime.expr import auth_vars, compile_expr
from specstack_runtime.microversions import parse
from specstack_runtime.policy import Enforcer
from specstack_runtime.resources.compiled import Catalog, Compiled
from specstack_runtime.resources.ids import stable_id
from specstack_runtime.store import Store

Doc = dict[str, Any]


@dataclass
class ResourceCall:
    """One operation the engine serves, on one resource."""

    call: Call
    res: Compiled
    catalog: Catalog
    policy: Enforcer
    _vars: dict[str, Any] = field(default_factory=dict)
    #: the rows the request's references name (field -> row), as the write's checks found
    #: them: `refs` in `refuse` rules (cinder: a clone's source volume); a `many`
    #: relation's rows are a list
    refs: dict[str, Any] = field(default_factory=dict)
    revealed: dict[str, Any] = field(default_factory=dict)  # shown_once values of a create
    #: the owners' own quota limits this call read ((limits resource, owner) -> row): a
    #: create checks each of its quotas twice, the row is read once
    limit_rows: dict[tuple[str, str], Doc] = field(default_factory=dict)
    _acting: list[str | None] = field(default_factory=list)  # acting_owner(), once found
    #: the rows of the resource's `joins` read for this call: name -> `by` value -> row
    joined: dict[str, dict[str, Doc]] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.call.rt.require_store()

    @property
    def auth(self) -> AuthContext:
        if self.call.auth is None:
            raise Unauthorized("The request you have made requires authentication.")
        return self.call.auth

    @property
    def optional_auth(self) -> AuthContext | None:
        return self.call.auth

    @property
    def configured_quotas(self) -> dict[str, int]:
        """The stack's quota limits (SPECSTACK_QUOTAS), overriding the spec's defaults."""
        return dict(getattr(self.call.rt.config, "quotas", {}) or {})

    def of(self, name: str) -> ResourceCall:
        """The same call, working on another resource (deleting related rows, joins)."""
        return ResourceCall(self.call, self.catalog.resource(name), self.catalog, self.policy)

    def allows(self, rule: str | None, target: Mapping[str, Any] | None = None) -> bool:
        if not rule:
            return False
        auth = self.optional_auth
        if auth is None:
            return False
        return self.policy.allows(rule, auth, target or {})

    def denied(self, guarded: tuple[tuple[str, str], ...], doc: Mapping[str, Any]) -> set[str]:
        """The names of `guarded` (name, rule) whose rule does not allow the caller on `doc`
        (the row made a policy target once, not once per rule)."""
        auth = self.optional_auth
        if not guarded or auth is None:
            return {name for name, _ in guarded}
        fields = self.res.fields
        guarded = tuple(  # a field's `open_since` reached: every caller sees it
            (name, rule)
            for name, rule in guarded
            if not (
                (f := fields.get(name)) is not None and f.open_since and self.reached(f.open_since)
            )
        )
        target = self.policy.target_of(auth, doc, tuple(rule for _, rule in guarded if rule))
        return {
            name
            for name, rule in guarded
            if not rule or not self.policy.allows_on(rule, auth, target)
        }

    # -- what the request names --------------------------------------------------------------

    @property
    def path(self) -> str:
        """The operation's path template."""
        op = self.catalog.operations.get((self.res.res.api, self.call.trigger))
        return op.path if op is not None else self.call.path

    @property
    def id_param(self) -> str | None:
        """The path parameter naming the row: the resource's `id: path:NAME`, else the
        operation path's last parameter (none when ids are computed from the path)."""
        style = self.res.res.id_style
        if style.startswith("path:"):
            return style[5:]
        if style.startswith(("expr:", "fields:")) or self.call.args.get("action") in (
            "list",
            "create",
        ):
            return None  # a collection's path names parents, not a row
        item = self.call.args.get("item")  # add_item / remove_item: not the row's id
        names = [n for n in _path_params(self.path) if n != item]
        return names[-1] if names else None

    def reached(self, since: str | None) -> bool:
        """Whether the request's microversion is `since` or later (no version negotiated,
        or no `since`: yes)."""
        version = self.call.microversion
        return not (since and version is not None and version < parse(since))

    def acts_for_at(self) -> bool:
        """Whether the request's microversion has the resource's `acts_for`."""
        acts = self.res.res.acts_for
        if acts is None or self.res.owner_field is None:
            return False
        return self.reached(acts.since)

    def acting_owner(self, given: Any = None) -> str | None:
        """The owner the call acts for when it is not the caller's (the resource's
        `acts_for`: its query parameter, or `given`, a create body's owner field); 403
        when its rule, with that owner as the target, does not allow the caller."""
        if given is None and self._acting:
            return self._acting[0]
        acts = self.res.res.acts_for
        wanted = given if given is not None else (acts and self.call.q(acts.param))
        found: str | None = None
        if acts is not None and wanted is not None and self.acts_for_at():
            owner = str(self.res.owner_field)
            if not self.allows(acts.rule, {owner: str(wanted)}):
                action = str(self.call.args.get("action") or "")
                raise self.res.fail(
                    "acts_for_forbidden",
                    action=action,
                    policy_action={"list": "index"}.get(action, action),
                    owner=wanted,
                )
            found = str(wanted)
        if given is None:
            self._acting.append(found)
        return found

    def owner_id(self) -> str | None:
        """The owner the call is for: the one it acts for, else the caller's."""
        acting = self.acting_owner()
        if acting is not None:
            return acting
        auth = self.optional_auth
        if auth is None:
            return None
        return auth.project_id if self.res.owner_field == "project_id" else auth.user_id

    def row_id(self) -> str:
        style = self.res.res.id_style
        if style.startswith("fields:"):
            names = style[7:].split(",")
            values: dict[str, Any] = {**self.call.path_params, **self.parents()}
            if self.res.owner_field and self.optional_auth is not None:
                values[self.res.owner_field] = self.owner_id()
            return stable_id(self.res.name, (values.get(n, "") for n in names))
        if style.startswith("expr:"):
            return str(compile_expr(style[5:]).evaluate(**self.variables()))
        name = self.id_param
        value = self.call.path_params.get(name or "", "") if name else ""
        return str(value)

    def parents(self) -> dict[str, str]:
        """Path parameters (besides the id and the owner) that name fields of the resource:
        a nested collection's rows belong to the parent the path names."""
        out: dict[str, str] = {}
        skip = {self.res.owner_field, self.id_param, self.call.args.get("item")}
        mapped = self.res.res.path_fields
        for name in _path_params(self.path):
            field = mapped.get(name, name)
            if name in skip or field not in self.res.fields:
                continue
            value = self.call.path_params.get(name)
            if value is not None:
                out[field] = str(value)
        return out

    def success(self, *preferred: int) -> int:
        """The operation's declared 2xx status: the first of `preferred` it declares, else its first."""
        op = self.catalog.operations.get((self.res.res.api, self.call.trigger))
        declared = op.success if op is not None else ()
        version = self.call.microversion
        if op is not None and version is not None and any(r.since for r in op.responses):
            declared = answered_at(op, version)
        for status in preferred:
            if status in declared:
                return status
        return declared[0] if declared else preferred[0]

    @property
    def base(self) -> str:
        """Where the caller reached this API: links in answers are built from it."""
        host = self.call.header("host")
        if host:
            return f"{self.call.header('x-forwarded-proto') or 'http'}://{host}"
        rt = self.call.rt
        return rt.info.endpoint(self.res.res.api, rt.config)

    def template(self, name: str, **more: Any) -> Any:
        """The resource's template `name` (spec `templates:`) over this call's variables
        (`refs` among them)."""
        return self.res.template(name, **self.variables(**{"refs": self.refs, **more}))

    def variables(self, **more: Any) -> dict[str, Any]:
        """The variables an expression of this call sees."""
        if not self._vars:
            configured = self.configured_quotas  # a copy: read once, not once per quota
            self._vars = {
                "auth": dict(auth_vars(self.optional_auth)),
                "path": dict(self.call.path_params),
                "params": {k: v[0] for k, v in self.call.query.items() if v},
                "base": self.base,
                "config": {"region": self.call.rt.config.region},
                # where each listening component is reached (nova's console URLs: the dashboard)
                "urls": self.call.rt.info.urls(self.call.rt.config),
                "vars": self.call.vars,
                # the request's headers, by lower-cased name (refusals of what they say)
                "headers": {str(k).lower(): str(v) for k, v in self.call.headers.items()},
                "data": self.res.res.data,
                "now": self.call.rt.clock.time(),  # epoch seconds: what heartbeats are compared with
                "microversion": f"{mv[0]}.{mv[1]}" if (mv := self.call.microversion) else "",
                # the project's limit of each quota of the spec (configured or default)
                "quotas": {
                    name: int(configured.get(name, q.default))
                    for name, q in self.catalog.quotas.items()
                },
            }
            if self.res.uses_rules:  # what the rules the expressions read say of this caller
                read = self.res.rules_read
                names = self.catalog.policy if read is None else read & self.catalog.policy.keys()
                self._vars["rules"] = {name: self.allows(f"rule:{name}") for name in names}
        return {**self._vars, **more}


@lru_cache(maxsize=1024)
def _path_params(path: str) -> tuple[str, ...]:
    """The parameters an operation's path template names, in order (found once a path)."""
    return tuple(_params_in(path))


def _params_in(path: str) -> list[str]:
    out: list[str] = []
    for part in path.split("{")[1:]:
        name = part.split("}", 1)[0]
        if name:
            out.append(name)
    return out


def answered_at(op: ir.Operation, version: tuple[int, int]) -> tuple[int, ...]:
    """The 2xx statuses `op` answers at `version`: those of the newest `since` it reached."""
    reached: list[tuple[tuple[int, int], int]] = []
    for r in op.responses:
        if r.status.isdigit() and r.status < "300":
            since = parse(r.since) if r.since else (0, 0)
            if since <= version:
                reached.append((since, int(r.status)))
    newest = max((since for since, _ in reached), default=(0, 0))
    return tuple(status for since, status in reached if since == newest)
