"""The resource model (spec/resources) and the policy rules (spec/policy.yaml) against the
rest of the spec: every name they use is declared, every expression compiles, every
operation is served by exactly one thing."""

from __future__ import annotations

from typing import Any

from generator.pipeline.build_resources import properties, schema_of
from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import LoadedSpec, PathElem, SpecFile, to_plain
from generator.pipeline.validate.names import suggest
from generator.pipeline.validate.openapi import operations_of
from generator.pipeline.validate.xref import Index
from specstack_runtime import policy
from specstack_runtime.expr import problem

Where = list[PathElem]


class _Checker:
    def __init__(self, spec: LoadedSpec, ix: Index) -> None:
        self.spec = spec
        self.ix = ix
        self.diags: list[Diagnostic] = []
        pf = spec.one("policy")
        self.rules: dict[str, str] = to_plain(pf.data)["policy"]["rules"] if pf else {}
        self.docs = {f.stem: to_plain(f.data) for f in spec.of_kind("openapi")}
        self._database: str | None = None  # of the API component of the file being checked
        self._resources: dict[str, Any] = {}  # the resources of the file being checked
        self.quotas = {
            q for rf in spec.of_kind("resources") for q in to_plain(rf.data).get("quotas") or {}
        }

    def at(self, f: SpecFile, where: Where, message: str) -> None:
        self.diags.append(f.at(where, message))

    # -- policy ------------------------------------------------------------------------------

    def rule(self, f: SpecFile, where: Where, text: Any) -> None:
        if not isinstance(text, str):
            return
        why = policy.check(text)
        if why is not None:
            self.at(f, where, f"policy rule: {why}")
            return
        for name in sorted(policy.parse(text).named()):
            if name not in self.rules:
                hint = suggest(name, sorted(self.rules))
                self.at(f, where, f"rule:{name} is not a rule of spec/policy.yaml{hint}")

    def policy_file(self) -> None:
        pf = self.spec.one("policy")
        if pf is None:
            return
        for name, why in policy.problems(self.rules).items():
            self.at(pf, ["policy", "rules", name], f"policy rule {name}: {why}")

    def operations(self) -> None:
        bound: dict[tuple[str, str], tuple[SpecFile, Where]] = {}
        for f in self.spec.of_kind("resources"):
            data = to_plain(f.data)
            api = data["api"]
            for rname, r in data["resources"].items():
                for op, spec in (r.get("operations") or {}).items():
                    where: Where = ["resources", rname, "operations", op]
                    self._bind(f, where, api, op, bound)
                    view = spec.get("view") if isinstance(spec, dict) else None
                    if view and view not in (r.get("views") or {}):
                        self.at(f, [*where, "view"], f"unknown view '{view}' of {rname}")
            for qname, q in (data.get("queries") or {}).items():
                self._bind(f, ["queries", qname, "operation"], api, q["operation"], bound)
        for api, f in self.ix.api_files.items():
            doc = self.docs[api]
            for path, method, op in operations_of(doc):
                if "operationId" not in op:
                    continue
                where = ["paths", path, method]
                if "x-specstack-policy" in op:
                    self.rule(f, [*where, "x-specstack-policy"], op["x-specstack-policy"])
                args = op.get("x-specstack-args")
                for key, value in (args if isinstance(args, dict) else {}).items():
                    # further rules a behaviour enforces (`call.enforce`) are rule texts
                    if isinstance(value, str) and value.startswith("rule:"):
                        self.rule(f, [*where, "x-specstack-args", key], value)
                has = "x-specstack-behaviour" in op
                owner = bound.get((api, op["operationId"]))
                if has and owner is not None:
                    self.at(
                        f,
                        [*where, "x-specstack-behaviour"],
                        f"{op['operationId']} is served by the resource model "
                        f"({owner[0].shown}): it names no behaviour of its own",
                    )
                elif not has and owner is None:
                    self.at(
                        f,
                        [*where, "operationId"],
                        f"{op['operationId']} has nothing to serve it: bind it to a resource "
                        f"in spec/resources/{api}.yaml or name x-specstack-behaviour",
                    )

    def _bind(
        self,
        f: SpecFile,
        where: Where,
        api: str,
        op: str,
        bound: dict[tuple[str, str], tuple[SpecFile, Where]],
    ) -> None:
        known = self.ix.operations.get(api, set())
        if op not in known:
            self.at(f, where, f"unknown operation '{op}' of API {api}{suggest(op, sorted(known))}")
            return
        if (api, op) in bound:
            self.at(
                f,
                where,
                f"{op} is already bound at {bound[(api, op)][0].locate(bound[(api, op)][1])}",
            )
            return
        bound[(api, op)] = (f, where)

    # -- resources ---------------------------------------------------------------------------

    def expr(self, f: SpecFile, where: Where, text: Any) -> None:
        if isinstance(text, str):
            found = problem(text)
            if found is not None:
                why, line, col = found
                self.at(f, where, f"CEL expression (line {line}, column {col}): {why}")

    def resources_file(self, f: SpecFile) -> None:
        data = to_plain(f.data)
        api = data["api"]
        if api not in self.ix.api_files:
            self.at(f, ["api"], f"unknown API '{api}'{suggest(api, sorted(self.ix.api_files))}")
            return
        doc = self.docs[api]
        server = next((c for c in self.ix.components.values() if c.get("api") == api), None)
        db = self.ix.components.get(str((server or {}).get("database")), {})
        self._database = (server or {}).get("database")
        self._resources = data["resources"]
        tables = set((db.get("tables") or {}).keys())
        resources: dict[str, dict[str, Any]] = data["resources"]
        fields: dict[str, set[str]] = {}
        for rname, r in resources.items():
            schema = schema_of(doc, r["schema"])
            props = set(properties(doc, schema)) if schema else set()
            fields[rname] = props | set((r.get("fields") or {}).keys())
        for rname, r in resources.items():
            base: Where = ["resources", rname]
            if r["table"] not in tables:
                self.at(
                    f,
                    [*base, "table"],
                    f"table '{r['table']}' is not a table of "
                    f"{(server or {}).get('database') or 'the API component database'}"
                    f"{suggest(r['table'], sorted(tables))}",
                )
            if schema_of(doc, r["schema"]) is None:
                known = sorted((doc.get("components") or {}).get("schemas") or {})
                self.at(
                    f,
                    [*base, "schema"],
                    f"schema '{r['schema']}' is not in spec/apis/{api}.yaml"
                    f"{suggest(r['schema'], known)}",
                )
            self._fields(f, base, r, rname, resources, fields)
            self._lists(f, base, r, fields[rname])
            self._deletes(f, base, r, resources, fields)
            self._states(f, base, r, fields[rname])
            self._handoff(f, [*base, "delete", "handoff"], (r.get("delete") or {}).get("handoff"))
            for point, effects in (r.get("effects") or {}).items():
                self._effects(f, [*base, "effects", point], effects, resources)
            for key in ("see_all", "modify"):
                self.rule(f, [*base, key], r.get(key))
            self.expr(f, [*base, "shared"], r.get("shared"))
            self._parent(f, base, r)
            self.expr(f, [*base, "live"], r.get("live"))
            self.expr(f, [*base, "location"], r.get("location"))
            for tname, text in (r.get("templates") or {}).items():
                self.expr(f, [*base, "templates", tname], text)
            for rel_name, rel in (r.get("relations") or {}).items():
                where = [*base, "relations", rel_name]
                if rel["resource"] not in resources:
                    self.at(f, [*where, "resource"], f"unknown resource '{rel['resource']}'")
                for key in ("id", "when"):
                    self.expr(f, [*where, key], rel.get(key))
                for field, text in (rel.get("match") or {}).items():
                    self.expr(f, [*where, "match", field], text)
            self.expr(f, [*base, "seed", "rows"], (r.get("seed") or {}).get("rows"))
            for name in (r.get("lookup") or {}).get("by") or ():
                if name not in fields[rname]:
                    self.at(f, [*base, "lookup", "by"], f"'{name}' is not a field of {rname}")
            self._guards(f, base, r, fields[rname])
            self._records(f, base, api, r, resources, fields[rname])
            quota = r.get("quota")
            if quota and quota not in (data.get("quotas") or {}):
                self.at(f, [*base, "quota"], f"unknown quota '{quota}'")
            id_style = str(r.get("id", "uuid"))
            if id_style.startswith("expr:"):
                self.expr(f, [*base, "id"], id_style[5:])
            if id_style.startswith("fields:"):
                for name in id_style[7:].split(","):
                    if name not in fields[rname]:
                        self.at(f, [*base, "id"], f"id: '{name}' is not a field of {rname}")
        for qname, q in (data.get("quotas") or {}).items():
            if q["resource"] not in resources:
                self.at(f, ["quotas", qname, "resource"], self._unknown(q["resource"], resources))
            if q.get("limits") and q["limits"] not in resources:
                self.at(f, ["quotas", qname, "limits"], self._unknown(q["limits"], resources))
            self.expr(f, ["quotas", qname, "count"], q.get("count"))
        for qname, q in (data.get("queries") or {}).items():
            self._query(f, qname, q, resources, fields)

    def names_once(self, files: list[SpecFile]) -> None:
        """Resources, quotas (SPECSTACK_QUOTAS names them) and queries are one namespace
        across the APIs: each name is declared once."""
        for section, one in (("resources", "resource"), ("quotas", "quota"), ("queries", "query")):
            first: dict[str, SpecFile] = {}
            for f in files:
                for name in to_plain(f.data).get(section) or {}:
                    if name in first:
                        where = first[name].locate([section, name])
                        self.at(
                            f, [section, name], f"{one} '{name}' is declared at {where} already"
                        )
                    else:
                        first[name] = f

    def _unknown(self, name: str, resources: dict[str, Any]) -> str:
        return f"unknown resource '{name}'{suggest(name, sorted(resources))}"

    def _fields(
        self,
        f: SpecFile,
        base: Where,
        r: dict[str, Any],
        rname: str,
        resources: dict[str, Any],
        fields: dict[str, set[str]],
    ) -> None:
        for fname, spec in (r.get("fields") or {}).items():
            where: Where = [*base, "fields", fname]
            for other in spec.get("unique") or ():
                if other not in fields[rname]:
                    self.at(f, [*where, "unique"], f"unique: '{other}' is not a field of {rname}")
            ref = spec.get("ref")
            target = ref if isinstance(ref, str) else (ref or {}).get("resource")
            if target and target not in resources:
                self.at(f, [*where, "ref"], self._unknown(target, resources))
            if isinstance(ref, dict):
                self.expr(f, [*where, "ref", "when"], ref.get("when"))
            self.expr(f, [*where, "computed"], spec.get("computed"))
            self.expr(f, [*where, "render"], spec.get("render"))
            self.expr(f, [*where, "normalize"], spec.get("normalize"))
            default = spec.get("default")
            if isinstance(default, dict) and set(default) == {"expr"}:
                self.expr(f, [*where, "default", "expr"], default["expr"])
            self.rule(f, [*where, "visible"], spec.get("visible"))
            alias = spec.get("alias")
            if alias is not None and (alias not in fields[rname] or alias == fname):
                self.at(f, [*where, "alias"], f"alias: '{alias}' is not another field of {rname}")

    def _lists(self, f: SpecFile, base: Where, r: dict[str, Any], names: set[str]) -> None:
        listing = r.get("list") or {}
        for param, spec in (listing.get("filters") or {}).items():
            spec = {"op": spec} if isinstance(spec, str) else spec
            field = spec.get("field", param)
            if spec.get("op") != "ignore" and field not in names and not r.get("extra"):
                self.at(
                    f,
                    [*base, "list", "filters", param],
                    f"filter '{param}': '{field}' is not a field of the resource"
                    f"{suggest(field, sorted(names))}",
                )
            if spec.get("op") == "items" and not spec.get("keys"):
                self.at(
                    f,
                    [*base, "list", "filters", param],
                    f"filter '{param}': op items needs `keys` (KEY=VALUE keys and the fields "
                    "of the items they match)",
                )
            self.rule(f, [*base, "list", "filters", param, "visible"], spec.get("visible"))
            self.rule(f, [*base, "list", "filters", param, "requires"], spec.get("requires"))
        sort = listing.get("sort") or ()
        pairs = sort.items() if isinstance(sort, dict) else [(k, k) for k in sort]
        for key, named in pairs:
            field = named.get("field") if isinstance(named, dict) else named  # {field, since}
            if field not in names | {"created_at", "updated_at"}:
                where: Where = [*base, "list", "sort"]
                self.at(
                    f,
                    [*where, key] if isinstance(sort, dict) else where,
                    f"sort key '{key}': '{field}' is not a field",
                )
        self.expr(f, [*base, "list", "where"], listing.get("where"))
        self.expr(f, [*base, "list", "select"], listing.get("select"))
        self.rule(f, [*base, "list", "all_rule"], listing.get("all_rule"))
        if listing.get("all_rule") and not listing.get("all"):
            self.at(f, [*base, "list", "all_rule"], "all_rule needs `all` (the parameter)")

    def _deletes(
        self,
        f: SpecFile,
        base: Where,
        r: dict[str, Any],
        resources: dict[str, Any],
        fields: dict[str, set[str]],
    ) -> None:
        for action, rules in (r.get("delete") or {}).items():
            if action == "handoff":  # not rules: _handoff checks it
                continue
            for i, rule in enumerate(rules):
                where: Where = [*base, "delete", action, i]
                other = rule["resource"]
                if other not in resources:
                    self.at(f, [*where, "resource"], self._unknown(other, resources))
                elif rule["field"] not in fields[other]:
                    self.at(
                        f,
                        [*where, "field"],
                        f"'{rule['field']}' is not a field of {other}"
                        f"{suggest(rule['field'], sorted(fields[other]))}",
                    )
                self.expr(f, [*where, "where"], rule.get("where"))
                key = rule.get("key")
                own = fields[str(base[-1])]
                if key and key not in own:
                    self.at(
                        f,
                        [*where, "key"],
                        f"'{key}' is not a field of {base[-1]}{suggest(key, sorted(own))}",
                    )

    def _parent(self, f: SpecFile, base: Where, r: dict[str, Any]) -> None:
        """`parent` names a field whose `ref` names the row `shared` sees as `parent`."""
        name = r.get("parent")
        if not name:
            return
        spec = (r.get("fields") or {}).get(name) or {}
        if not spec.get("ref"):
            self.at(f, [*base, "parent"], f"parent: '{name}' is not a field with a `ref`")

    def _states(self, f: SpecFile, base: Where, r: dict[str, Any], names: set[str]) -> None:
        states = r.get("states")
        if not states:
            return
        if states["field"] not in names:
            self.at(f, [*base, "states", "field"], f"'{states['field']}' is not a field")
        for aname, a in (states.get("actions") or {}).items():
            where: Where = [*base, "states", "actions", aname]
            msg = a.get("send")
            if msg and msg not in self.ix.messages:
                known = sorted(self.ix.messages)
                self.at(f, [*where, "send"], f"unknown message '{msg}'{suggest(msg, known)}")
            for key in ("host", "when"):
                self.expr(f, [*where, key], a.get(key))
            for key in ("accept", "require"):
                for i, check in enumerate(a.get(key) or ()):
                    self.expr(f, [*where, key, i, "expr"], check.get("expr"))
            for key in ("set", "payload", "answer", "headers", "view_adds"):
                self._exprs(f, [*where, key], a.get(key) or {})
            for name, ask in (a.get("ask") or {}).items():
                for key in ("path", "query", "when", "take"):
                    self.expr(f, [*where, "ask", name, key], ask.get(key))
            self.rule(f, [*where, "policy"], a.get("policy"))
            self._effects(f, [*where, "effects"], a.get("effects") or (), self._resources)
            for i, quota in enumerate(a.get("quotas") or ()):
                if quota not in self.quotas:
                    known = sorted(self.quotas)
                    self.at(
                        f, [*where, "quotas", i], f"unknown quota '{quota}'{suggest(quota, known)}"
                    )
        for i, rule in enumerate(states.get("recover") or ()):
            self._recovery(f, [*base, "states", "recover", i], rule)
            if (host := rule.get("of_host")) and host not in names:
                at: Where = [*base, "states", "recover", i, "of_host"]
                self.at(f, at, f"'{host}' is not a field{suggest(host, sorted(names))}")

    def _handoff(self, f: SpecFile, where: Where, h: dict[str, Any] | None) -> None:
        if not h:
            return
        if h["send"] not in self.ix.messages:
            known = sorted(self.ix.messages)
            self.at(
                f, [*where, "send"], f"unknown message '{h['send']}'{suggest(h['send'], known)}"
            )
        for key in ("when", "host"):
            self.expr(f, [*where, key], h.get(key))
        for key in ("set", "payload", "failed"):
            self._exprs(f, [*where, key], h.get(key) or {})

    def _effects(self, f: SpecFile, base: Where, effects: Any, resources: dict[str, Any]) -> None:
        """Changes to other rows: their resource exists, their expressions compile."""
        for i, e in enumerate(effects):
            if e["resource"] not in resources:
                self.at(f, [*base, i, "resource"], self._unknown(e["resource"], resources))
            msg = e.get("send")
            if msg and msg not in self.ix.messages:
                known = sorted(self.ix.messages)
                self.at(f, [*base, i, "send"], f"unknown message '{msg}'{suggest(msg, known)}")
            for key in ("id", "when", "host", "each"):
                self.expr(f, [*base, i, key], e.get(key))
            for key in ("set", "take", "create", "payload", "failed", "body"):
                self._exprs(f, [*base, i, key], e.get(key) or {})

    def _recovery(self, f: SpecFile, where: Where, rule: dict[str, Any]) -> None:
        """A start-up recovery rule: its component shares the resource's database."""
        by = rule["by"]
        comp = self.ix.components.get(by)
        if comp is None:
            known = sorted(self.ix.components)
            self.at(f, [*where, "by"], f"unknown component '{by}'{suggest(by, known)}")
        elif not comp.get("database") or comp.get("database") != self._database:
            self.at(
                f,
                [*where, "by"],
                f"component '{by}' cannot recover rows of this resource: its database is "
                f"{comp.get('database') or 'none'}, the resource's {self._database or 'none'}",
            )
        msg = rule.get("send")
        if msg and msg not in self.ix.messages:
            self.at(
                f,
                [*where, "send"],
                f"unknown message '{msg}'{suggest(msg, sorted(self.ix.messages))}",
            )
        for key in ("when", "host"):
            self.expr(f, [*where, key], rule.get(key))
        for key in ("set", "payload"):
            self._exprs(f, [*where, key], rule.get(key) or {})

    def _exprs(self, f: SpecFile, where: Where, values: Any) -> None:
        """The `{expr: CEL}` leaves of a literal (nested maps of literals and expressions)."""
        if isinstance(values, dict) and set(values) == {"expr"}:
            self.expr(f, [*where, "expr"], values["expr"])
        elif isinstance(values, dict):
            for key, value in values.items():
                self._exprs(f, [*where, key], value)

    def _records(
        self,
        f: SpecFile,
        base: Where,
        api: str,
        r: dict[str, Any],
        resources: dict[str, dict[str, Any]],
        names: set[str],
    ) -> None:
        for i, need in enumerate(r.get("require") or ()):
            if need["resource"] not in resources:
                self.at(
                    f, [*base, "require", i, "resource"], self._unknown(need["resource"], resources)
                )
            self.expr(f, [*base, "require", i, "id"], need["id"])
        known = self.ix.operations.get(api, set()) | set(self.ix.messages)
        for i, rule in enumerate(r.get("record") or ()):
            where: Where = [*base, "record", i]
            for j, on in enumerate(rule["on"]):
                if on not in known:
                    self.at(f, [*where, "on", j], f"'{on}' is no operation of {api} nor a message")
            self.expr(f, [*where, "when"], rule.get("when"))
            self.expr(f, [*where, "each"], rule.get("each"))
            add = rule.get("append") or {}
            if add and add["field"] not in names:
                self.at(f, [*where, "append", "field"], f"'{add['field']}' is not a field")
            for key, text in [*rule["set"].items(), *(add.get("item") or {}).items()]:
                self.expr(f, [*where, "set", key], text)
            for key in [*rule["set"], *rule["key"]]:
                if key not in names:
                    self.at(f, [*where, "set", key], f"'{key}' is not a field of the resource")

    def _guards(
        self, f: SpecFile, base: Where, r: dict[str, Any], names: set[str] | None = None
    ) -> None:
        """`refuse` rules: CEL conditions, policy rules; an action named by an operation
        (`{action: action, name: N}`) must be one of the state machine's."""
        for i, g in enumerate(r.get("refuse") or ()):
            self.expr(f, [*base, "refuse", i, "when"], g.get("when"))
            self.rule(f, [*base, "refuse", i, "unless"], g.get("unless"))
            if g.get("each"):
                self.expr(f, [*base, "refuse", i, "each"], g["each"])
            given = g.get("given")
            twice = f"has(changes.{given})"
            if given and any(twice in (g.get(k) or "") for k in ("when", "each")):
                self.at(
                    f,
                    [*base, "refuse", i, "given"],
                    f"`given: {given}` already applies the rule only when {twice}; "
                    "the condition need not test it again",
                )
            for name, text in (g.get("quote") or {}).items():
                self.expr(f, [*base, "refuse", i, "quote", name], text)
        actions = set(((r.get("states") or {}).get("actions") or {}).keys())
        for op, spec in (r.get("operations") or {}).items():
            name = spec.get("name") if isinstance(spec, dict) else None
            if name and (spec.get("action") != "action" or name not in actions):
                self.at(
                    f,
                    [*base, "operations", op, "name"],
                    f"'{name}' is not an action of the state machine of this resource"
                    f"{suggest(name, sorted(actions))}",
                )
            field = spec.get("field") if isinstance(spec, dict) else None
            if field and names is not None and field not in names:
                self.at(
                    f,
                    [*base, "operations", op, "field"],
                    f"'{field}' is not a field of the resource{suggest(field, sorted(names))}",
                )

    def _query(
        self,
        f: SpecFile,
        qname: str,
        q: dict[str, Any],
        resources: dict[str, Any],
        fields: dict[str, set[str]],
    ) -> None:
        base: Where = ["queries", qname]
        if q["from"] not in resources:
            self.at(f, [*base, "from"], self._unknown(q["from"], resources))
        for jname, j in (q.get("join") or {}).items():
            where: Where = [*base, "join", jname]
            if j["resource"] not in resources:
                self.at(f, [*where, "resource"], self._unknown(j["resource"], resources))
                continue
            for key in ("on", "key", "sum", "value"):
                name = j.get(key)
                if name and name not in fields[j["resource"]]:
                    self.at(f, [*where, key], f"'{name}' is not a field of {j['resource']}")
        for i, need in enumerate(q.get("require") or ()):
            if need["resource"] not in resources:
                self.at(
                    f, [*base, "require", i, "resource"], self._unknown(need["resource"], resources)
                )
            self.expr(f, [*base, "require", i, "id"], need["id"])
        for var, other in (q.get("tables") or {}).items():
            if other not in resources:
                self.at(f, [*base, "tables", var], self._unknown(other, resources))
        self.expr(f, [*base, "where"], q.get("where"))
        self.expr(f, [*base, "answer"], q["answer"])
        self.expr(f, [*base, "target"], q.get("target"))
        for i, rule in enumerate(q.get("refuse") or ()):
            self.expr(f, [*base, "refuse", i, "when"], rule["when"])
        for key in ("path", "query"):
            self.expr(f, [*base, "ask", key], (q.get("ask") or {}).get(key))


def check_resources(spec: LoadedSpec, ix: Index) -> list[Diagnostic]:
    c = _Checker(spec, ix)
    c.policy_file()
    c.operations()
    seen: dict[str, SpecFile] = {}
    for f in spec.of_kind("resources"):
        api = to_plain(f.data)["api"]
        if api in seen:
            c.at(f, ["api"], f"API {api} already has its resources in {seen[api].shown}")
            continue
        seen[api] = f
        c.resources_file(f)
    c.names_once([f for f in spec.of_kind("resources") if seen.get(to_plain(f.data)["api"]) is f])
    return c.diags
