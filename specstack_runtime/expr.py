"""CEL expressions of the spec (computed fields, defaults, visibility, queries).

The spec's expressions are in CEL, the Common Expression Language Kubernetes uses
for CRD rules, evaluated by Google's CEL runtime (`cel-expr-python`). Each is
compiled once (at validation and at start-up) and evaluated with the variables
below (only those it names; several expressions over one row share a `Bound`, and
`grouped.values_in` evaluates them as one program listing them: a view's fields);
CEL is typed and does not mix int and double (write `double(x)`). A pure expression's
value over the same variables is kept and given back as a copy (`exprcache`).

Variables (all dynamic): `doc` (the row), `old` (the row before a change),
`auth` (user_id, project_id, domain_id, roles, is_admin), `path` (path
parameters), `params` (parsed query parameters), `base` (the URL the caller
used, no trailing slash), `config` (a few stack settings), `rows` (a query's
rows), `row` (one of them with its joins), `vars` (flow variables), `headers` (a flow
step's HTTP answer), `reply` (what an action's called message answered), in start-up recovery rules `host` (the starting
instance's host) and `bus` (`bus.durable`: unhandled messages outlive a crash), `parent` (the row a resource's `parent`
field names, in its `shared` expression), `microversion` (the request's API microversion, "" when none).
Functions besides the standard, strings and bindings (`cel.bind`) libraries:
`pairs("A:1,B:2")` gives `{"A": 1, "B": 2}`; `sum(list)` adds numbers up;
`map_of([[k, v], ...])` builds a map from pairs; `flatten(list of lists)`; `sort(list)` in order;
`closure(graph, starts)` the nodes reachable from `starts` (implied roles, a project's subtree);
`unique_by(list, keys)` the first map of each combination of the keys' values; `hexdigest("sha224", s)` a hash;
`now()` the current time as OpenStack writes it; `uuid4()` a new random UUID; `uuid5(ns, name)`
the name-based UUID of `name` in namespace `ns`, as 32 hex digits (a stable id);
`at_least(microversion, "2.3")` whether the request's microversion is that one or later (a field whose shape
a version changes); `random_secret(n)` n random bytes, URL-safe base64 (a generated secret); `ip_net(s)` an IP
network parsed (see docs/resources.md), `ip_compare(a, b)` -1, 0 or 1 as address a is
below, at or above b, `in_cidr(ip, cidr)` whether the network holds the address. `rules` maps each policy
rule of spec/policy.yaml to whether it allows the caller (`rules.admin_or_service`). `data` holds the resource's
constant tables (its `data:`); `quotas` each quota's limit for the caller's project;
`catalog` the stack's service catalog (queries: for the caller's project; seeds: `%(project_id)s`),
`components` the spec's components by name and `seeds` the rows seeded before (seeds). A computed query also sees `tables` (every row of the resources
its `tables:` names, e.g. `tables.allocations`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import cel_expr_python.cel as cel
import orjson
from cel_expr_python.ext import ext_bindings, ext_strings

from specstack_runtime import celcalls, celpython, patterns
from specstack_runtime.celcalls import owned, owned_nulls
from specstack_runtime.exprcache import RARE, RESULTS, TRIES, key_of
from specstack_runtime.exprreads import Paths, Reads, merged_reads, pruned, reads_in

VARIABLES = (
    "doc",
    "old",
    "auth",
    "path",
    "params",
    "base",
    "config",
    "rows",
    "row",
    "join",
    "tables",
    "data",
    "reply",
    "quotas",
    "vars",
    "changes",
    "now",
    "host",
    "bus",
    "parent",
    "rules",
    "refs",
    "item",
    "request",  # `record:` rules: the request or message handled, its error, its times
    "error",
    "started",
    "finished",
    "catalog",  # the stack's service catalog (queries, seeds)
    "components",  # the spec's components, by name (seeds)
    "seeds",  # the rows each resource was seeded with so far (seeds)
    "headers",
    "microversion",  # the request's API microversion ("2.19"; "" when it negotiated none)
    "urls",  # where each listening component is reached, by name (nova's console URLs)
)


class ExprError(ValueError):
    """An expression that does not compile, or fails on the data it was given."""


def _pairs(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        key = key.strip()
        if not key or not sep:
            raise ValueError(f"{part!r} is not NAME:VALUE")
        value = value.strip()
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _sum(values: list[Any]) -> Any:
    total: Any = 0
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"sum: {v!r} is not a number")
        total += v
    return total


def _map_of(items: list[Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError(f"map_of: {item!r} is not a [key, value] pair")
        out[item[0]] = item[1]
    return out


def _merge(first: dict[Any, Any], second: dict[Any, Any]) -> dict[Any, Any]:
    return {**first, **second}


def _hexdigest(algorithm: str, text: str) -> str:
    if algorithm not in ("md5", "sha1", "sha224", "sha256", "sha512"):
        raise ValueError(f"hexdigest: unknown algorithm {algorithm!r}")
    return hashlib.new(algorithm, text.encode("utf-8", "surrogatepass")).hexdigest()


def _flatten(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        out.extend(item if isinstance(item, list) else [item])
    return out


def _closure(graph: dict[Any, Any], starts: list[Any]) -> list[Any]:
    """`starts` and every node reachable from them in `graph` (node -> nodes), each once,
    breadth first (a cycle ends where it comes back)."""
    out: dict[Any, None] = {}
    queue = list(starts)
    while queue:
        node = queue.pop(0)
        if node not in out:
            out[node] = None
            queue.extend(graph.get(node) or ())
    return list(out)


def _unique_by(items: list[Any], keys: list[Any]) -> list[Any]:
    """The first of the maps in `items` with each combination of the values of `keys`."""
    seen: set[str] = set()
    out: list[Any] = []
    for item in items:
        key = repr([item.get(k) for k in keys])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _sort(items: list[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        raise ValueError("sort: the items cannot be compared") from None


def _uuid4() -> str:
    return str(uuid.uuid4())


def _uuid5(namespace: str, name: str) -> str:
    return uuid.uuid5(uuid.UUID(namespace), name).hex


def _random_secret(nbytes: int) -> str:
    return secrets.token_urlsafe(max(16, min(int(nbytes), 256)))


def _ip_version(text: str) -> int:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


def _ip_net(text: str) -> dict[str, Any]:
    """An IP network (or a bare address, one of /32 or /128) as `ip_net` shows it."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return {"version": 0}
    small = net.num_addresses <= 2  # every address is a host's
    # IPv4 keeps its broadcast address from hosts, IPv6 has none
    last = net.broadcast_address - (0 if small or net.version == 6 else 1)
    return {
        "version": net.version,
        "cidr": str(net),
        "address": str(net.network_address),
        "prefixlen": net.prefixlen,
        "strict": net.network_address == ipaddress.ip_interface(text.strip()).ip,
        "small": small,
        "first": str(net.network_address + (0 if small else 1)),
        "last": str(last),
    }


def _ip_compare(first: str, second: str) -> int:
    a, b = ipaddress.ip_address(first.strip()), ipaddress.ip_address(second.strip())
    key_a, key_b = (a.version, int(a)), (b.version, int(b))
    return (key_a > key_b) - (key_a < key_b)


def _in_cidr(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip()) in ipaddress.ip_network(
            cidr.strip(), strict=False
        )
    except (ValueError, TypeError):
        return False


def _sublist(items: list[Any], start: int, count: int) -> list[Any]:
    start = max(0, int(start))
    return items[start:] if count < 0 else items[start : start + int(count)]


def _at_least(version: str, wanted: str) -> bool:
    """Whether microversion `version` ("2.19") is `wanted` or later; "" (none negotiated,
    a call not over HTTP) is every version."""
    if not version:
        return True
    major, _, minor = version.partition(".")
    want_major, _, want_minor = wanted.partition(".")
    return (int(major), int(minor)) >= (int(want_major), int(want_minor))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# name: (overload id, result kind, argument kinds, implementation); kinds as
# `celpython.Signature` names them
_FUNCTIONS: dict[str, tuple[str, str, list[str], Callable[..., Any]]] = {
    "pairs": ("pairs_string", "record", ["string"], _pairs),
    "ip_version": ("ip_version_string", "int", ["string"], _ip_version),
    "ip_net": ("ip_net_string", "record", ["string"], _ip_net),
    "ip_compare": ("ip_compare_string_string", "int", ["string", "string"], _ip_compare),
    "in_cidr": ("in_cidr_string_string", "bool", ["string", "string"], _in_cidr),
    "sublist": ("sublist_list_int_int", "list", ["list", "int", "int"], _sublist),
    "now": ("now_", "string", [], _now),
    "uuid4": ("uuid4_", "string", [], _uuid4),
    "uuid5": ("uuid5_string_string", "string", ["string", "string"], _uuid5),
    "random_secret": ("random_secret_int", "string", ["int"], _random_secret),
    "flatten": ("flatten_list", "list", ["list"], _flatten),
    "closure": ("closure_map_list", "list", ["map", "list"], _closure),
    "unique_by": ("unique_by_list_list", "list", ["list", "list"], _unique_by),
    "sort": ("sort_list", "list", ["list"], _sort),
    "hexdigest": ("hexdigest_string_string", "string", ["string", "string"], _hexdigest),
    "sum": ("sum_list", "dyn", ["list"], _sum),
    "map_of": ("map_of_list", "map", ["list"], _map_of),
    "merge": ("merge_maps", "map", ["map", "map"], _merge),
    "at_least": ("at_least_string_string", "bool", ["string", "string"], _at_least),
}
_SIGNATURES = {
    name: celpython.Signature(impl, arguments)
    for name, (_, _, arguments, impl) in _FUNCTIONS.items()
}


@lru_cache(maxsize=1)
def _env() -> Any:
    dyn = cel.Type.DYN
    kinds = {
        "string": cel.Type.STRING,
        "int": cel.Type.INT,
        "bool": cel.Type.BOOL,
        "dyn": dyn,
        "list": cel.Type.List(dyn),
        "map": cel.Type.Map(dyn, dyn),
        "record": cel.Type.Map(cel.Type.STRING, dyn),
    }
    table = {
        name: (overload, kinds[result], [kinds[a] for a in arguments], impl)
        for name, (overload, result, arguments, impl) in _FUNCTIONS.items()
    }
    functions = [
        cel.FunctionDecl(name, [cel.Overload(overload, result, arguments, impl=owned(impl))])
        for name, (overload, result, arguments, impl) in table.items()
    ]
    text = cel.Type.STRING
    cached = cel.Overload(
        "matches_cached_string", cel.Type.BOOL, [text, text], is_member=True, impl=owned(_matches)
    )
    functions.append(cel.FunctionDecl(_MATCHES_CACHED, [cached]))
    celcalls.probe(_probe_env)
    return cel.NewEnv(
        variables={name: cel.Type.DYN for name in VARIABLES},
        extensions=[ext_strings.ExtStrings(), ext_bindings.ExtBindings()],
        functions=functions,
    )


def _probe_env(fn: Callable[..., Any]) -> Any:
    record = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
    value = cel.Overload("probe_map", record, [record], impl=fn)
    variables = {"doc": cel.Type.DYN}
    return cel.NewEnv(variables=variables, functions=[cel.FunctionDecl("probe", [value])])


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNMADE = object()  # an expression's Python form not made yet
# every expression evaluated both ways, any difference an error (tests: celpython)
_CHECK = os.environ.get("SPECSTACK_CEL_CHECK", "") == "1"
_IMPURE = frozenset({"uuid4", "random_secret", "now"})  # functions whose value changes
# CEL's own `s.matches(p)` compiles `p` on every evaluation (~0.1 ms); the same RE2 match
# with the pattern compiled once (specstack_runtime.patterns) is what an expression runs.
_MATCHES_CACHED = "matches_cached"
_MEMBER_MATCHES = re.compile(r"\.(\s*)matches(\s*)\(")
# CEL's string and bytes literals (raw ones have no escapes): no `.matches(` inside is code
_RAW = r"""(?:[rR][bB]?|[bB][rR])(?:'{3}[\s\S]*?'{3}|"{3}[\s\S]*?"{3}|'[^'\n]*'|"[^"\n]*")"""
_TRIPLE = r"""'{3}(?:\\[\s\S]|[\s\S])*?'{3}|"{3}(?:\\[\s\S]|[\s\S])*?"{3}"""
_SINGLE = r"""'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*\""""
_QUOTED = re.compile(f"{_RAW}|{_TRIPLE}|{_SINGLE}")


def _matches(text: str, pattern: str) -> bool:
    return patterns.search(pattern, text)


# `at_least(v, '2.53')` with a literal version, as the spec writes every one, runs as CEL's
# own string and integer functions: no call into Python, whose arguments the runtime keeps
# for good (celcalls), some 160 bytes a call, and rendering a server makes several.
_AT_LEAST = re.compile(r"\bat_least\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*$")
_AT_LEAST_LITERAL = re.compile(r"""(['"])(\d+)\.(\d+)\1\s*\)""")
# (no cel.bind: one after an exists() or all() may read a stale slot, see celshapes.py)
_AT_LEAST_NATIVE = (
    "({v} == '' || int({v}.split('.')[0]) > {major}"
    " || int({v}.split('.')[0]) == {major} && int({v}.split('.')[1]) >= {minor})"
)


def _native(text: str) -> str:
    """`text` as the runtime runs it: each `.matches(` call outside a string literal made
    `.matches_cached(`, each `at_least(name, 'M.N')` CEL's own comparison (see above)."""
    if "matches" not in text and "at_least" not in text:
        return text
    out, at = [], 0
    for quoted in _QUOTED.finditer(text):
        code = text[at : quoted.start()]
        at = quoted.end()
        call = _AT_LEAST.search(code)
        wanted = _AT_LEAST_LITERAL.match(text, quoted.start()) if call else None
        if call is not None and wanted is not None:
            out.append(_cached_matches(code[: call.start()]))
            major, minor = int(wanted.group(2)), int(wanted.group(3))
            out.append(_AT_LEAST_NATIVE.format(v=call.group(1), major=major, minor=minor))
            at = wanted.end()
            continue
        out.append(_cached_matches(code))
        out.append(quoted.group())
    out.append(_cached_matches(text[at:]))
    return "".join(out)


def _cached_matches(code: str) -> str:
    return _MEMBER_MATCHES.sub(rf".\1{_MATCHES_CACHED}\2(", code)


def _uses(text: str) -> frozenset[str]:
    """The variables `text` may read: every one whose name appears in it (a superset)."""
    return frozenset(_NAME.findall(text)).intersection(VARIABLES)


@lru_cache(maxsize=4096)
def reads_of(texts: tuple[str, ...]) -> dict[str, Paths | None]:
    """What the expressions `texts` read together (each compiled once, cached)."""
    return merged_reads(compile_expr(t).reads for t in texts)


class Expr:
    """A compiled expression; `evaluate(**variables)` gives its plain Python value."""

    __slots__ = (
        "_fast",
        "_found",
        "_keeps",
        "_program",
        "_tries",
        "pure",
        "reads",
        "text",
        "uses",
    )

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._program = _env().compile(_native(text))
        except Exception:  # the runtime raises its own status error type
            try:  # the error as the text has it (or the text as it is, if that compiles)
                self._program = _env().compile(text)
            except Exception as exc:
                raise ExprError(_clean(str(exc))) from None
        # found once here: only these are handed to the runtime (which converts each one),
        # and of a map only the fields the expression reads (see `reads_in`)
        self.uses = _uses(text)
        self.reads = reads_in(text, self.uses)
        # the same variables give the same value: no new id, secret or time (a superset:
        # the names anywhere in the text)
        self.pure = _IMPURE.isdisjoint(_NAME.findall(text))
        self._keeps = self.pure  # its values are kept (`evaluate_in`)
        # the same expression as Python (celpython), made at its first evaluation (validation
        # compiles every expression and runs none); None if it has no such form
        self._fast: celpython.Fast | object | None = _UNMADE
        self._tries = self._found = 0  # values looked for, and found kept

    def evaluate(self, **variables: Any) -> Any:
        return self.evaluate_in(Bound(self.reads, **variables))

    def evaluate_in(self, bound: Bound) -> Any:
        """The value with variables bound once for several expressions (see `Bound`); a
        pure expression's value over the same variables is kept (`exprcache`)."""
        if not self._keeps:
            return self._run(bound)
        key = bound.key()
        self._tries += 1
        if key is not None:
            found, value = RESULTS.get(self.text, key)
            if found:
                self._found += 1
                return value
        if self._tries >= TRIES and self._found * RARE < self._tries:
            self._keeps = False  # new variables each time (or no key): no longer kept
        value = self._run(bound)
        if key is not None:
            RESULTS.put(self.text, key, value)
        return value

    def _run(self, bound: Bound) -> Any:
        """The program's value over `bound`: its Python form's where that answers (see
        celpython), else the CEL runtime's."""
        fast = self.python()
        if fast is not None:
            try:
                value = fast(bound.data)
            except Exception:  # the runtime's to answer, value or error
                return self._runtime(bound)
            if _CHECK and self.pure:  # (an impure one: a new id, a new time each run)
                celpython.compare(self.text, value, self._runtime(bound))
            return value
        return self._runtime(bound)

    def python(self) -> celpython.Fast | None:
        """Its Python form (made once), None if it has none."""
        if self._fast is _UNMADE:
            self._fast = celpython.translate(self._program.serialize(), _SIGNATURES)
        return self._fast  # type: ignore[return-value]

    def _runtime(self, bound: Bound) -> Any:
        """The CEL runtime's value of the program over `bound`."""
        activation = bound._activation
        if activation is None:  # made when an expression first runs over it
            activation = bound._activation = _env().Activation(data=bound.data)
        outer = celcalls.begin()  # the functions' values, given their references back
        try:
            try:
                value = self._program.eval(activation=activation)
            except Exception as exc:
                raise ExprError(f"{self.text}: {_clean(str(exc))}") from None
            if value.type() == cel.Type.ERROR:
                raise ExprError(f"{self.text}: {_clean(str(value.value()))}")
            plain = value.plain_value()
        finally:
            celcalls.end(outer)
        if plain is None or isinstance(plain, dict | list):
            owned_nulls(plain)
        return plain


class Bound:
    """Variables bound once: expressions evaluated in it share the runtime's view of them.

    Rendering a row evaluates tens of expressions over the same variables; the CEL
    runtime converts each variable it reads once per `Bound`, not once per expression.
    The values must not change while it is in use. Unset (None) variables are left out.
    With `reads` (what every expression evaluated in it reads, `Expr.reads`), only those
    variables are handed over, and of a map only the fields read: the runtime converts
    what it is given, whether an expression reads it or not.
    """

    __slots__ = ("_activation", "_key", "data")

    def __init__(self, reads: Reads | None = None, /, **variables: Any) -> None:
        if reads is None:
            data = {k: v for k, v in variables.items() if v is not None}
        else:
            data = {}
            for name, paths in reads.items():  # mostly a few of the variables given
                value = variables.get(name)
                if value is None:
                    continue
                data[name] = value if paths is None else pruned(value, paths)
        self.data = data
        self._activation: Any = None  # the runtime's, made when an expression first runs
        self._key: bytes | None = _UNKEYED

    def key(self) -> bytes | None:
        """The exact JSON of its variables (`exprcache.key_of`), worked out once."""
        if self._key is _UNKEYED:
            self._key = key_of(self.data)
        return self._key


_UNKEYED = b""  # no JSON is empty: a Bound's key not worked out yet


def unicode_only(value: Any) -> Any:
    """`value` with every string made Unicode text: a lone surrogate (JSON's `\\ud800`
    escape gives one) becomes U+FFFD, as CEL's strings hold code points only."""
    if isinstance(value, dict | list):
        try:
            orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
            return value  # orjson refuses a lone surrogate: there is none to replace
        except TypeError:
            pass  # one, or a value JSON has no form for: walked
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return value
    if isinstance(value, dict):
        return {unicode_only(k): unicode_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unicode_only(v) for v in value]
    return value


@lru_cache(maxsize=4096)
def compile_expr(text: str) -> Expr:
    """The compiled expression (cached by its text); ExprError if it does not compile."""
    return Expr(text)


def problem(text: str) -> tuple[str, int, int] | None:
    """Why `text` does not compile, with the 1-based line and column in it; None if it does."""
    try:
        compile_expr(text)
    except ExprError as exc:
        found = _WHERE.search(str(exc))
        if found is None:
            return str(exc).splitlines()[0] if str(exc) else "invalid expression", 1, 1
        reason = found.group(3).split(" | ", 1)[0].strip()
        return reason, int(found.group(1)), int(found.group(2)) + 1
    return None


_WHERE = re.compile(r"<input>:(\d+):(\d+): (.*)")


def _clean(message: str) -> str:
    message = message.replace(_MATCHES_CACHED, "matches")
    return " ".join(message.replace("[INVALID_ARGUMENT]", "").split())


def auth_vars(auth: Any) -> Mapping[str, Any]:
    """What `auth` is in an expression."""
    if auth is None:
        return {}
    token = (getattr(auth, "body", None) or {}).get("token") or {}
    return {
        # how the caller authenticated, and the application credential it used ({} if none)
        "methods": list(token.get("methods") or ()),
        "application_credential": dict(token.get("application_credential") or {}),
        "user_id": auth.user_id,
        "user_name": auth.user_name,
        "project_id": auth.project_id or "",
        "project_name": auth.project_name or "",
        "domain_id": auth.domain_id or "",
        "roles": list(auth.roles),
        "is_admin": bool(auth.is_admin),
    }
