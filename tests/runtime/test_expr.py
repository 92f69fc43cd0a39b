"""Expressions evaluated together in one binding give what each gives on its own."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from specstack_runtime import expr, grouped, patterns
from specstack_runtime.expr import Bound, ExprError, compile_expr, unicode_only
from specstack_runtime.exprcache import RESULTS
from specstack_runtime.resources.queries import _parse

DOC = {
    "id": "s1",
    "name": "vm",
    "power_state": 1,
    "ratio": 0.5,
    "locked": False,
    "host": None,
    "addresses": {"private": [{"addr": "10.0.0.5", "version": 4}]},
}


@pytest.mark.parametrize("field", ["id", "name", "power_state", "ratio", "locked", "host"])
def test_a_field_gives_the_fields_value(field: str) -> None:
    expr = compile_expr(f"doc.{field}")
    got = expr.evaluate_in(Bound(doc=DOC))
    assert got == DOC[field] and type(got) is type(DOC[field])


def test_a_structure_is_a_copy() -> None:
    got = compile_expr("doc.addresses").evaluate_in(Bound(doc=DOC))
    assert got == DOC["addresses"] and got is not DOC["addresses"]


def test_errors_are_the_ones_cel_gives() -> None:
    with pytest.raises(ExprError, match=r"doc\.flavor_id"):
        compile_expr("doc.flavor_id").evaluate_in(Bound(doc=DOC))
    with pytest.raises(ExprError):
        compile_expr("doc.name").evaluate_in(Bound(base="http://x"))
    with pytest.raises(ExprError, match="out of range"):
        compile_expr("doc.name").evaluate_in(Bound(doc={**DOC, "big": 2**70}))  # no CEL int


def test_many_expressions_share_one_binding() -> None:
    bound = Bound(doc=DOC, base="http://h:1", auth={"is_admin": False})
    texts = {
        "base + '/servers/' + doc.id": "http://h:1/servers/s1",
        "auth.is_admin ? 'all' : doc.name": "vm",
        "doc.power_state == null ? 0 : int(doc.power_state)": 1,
        "doc.host == null ? '' : doc.host": "",
    }
    for text, want in texts.items():
        assert compile_expr(text).evaluate_in(bound) == want
        assert (
            compile_expr(text).evaluate(doc=DOC, base="http://h:1", auth={"is_admin": False})
            == want
        )


def test_only_the_variables_an_expression_names_reach_the_runtime() -> None:
    expr = compile_expr("doc.name + ' in ' + vars.project.name")
    assert expr.uses == {"doc", "vars"}
    unused = {"quotas": {"instances": 10}, "auth": {"is_admin": True}, "base": "http://h:1"}
    project = {"project": {"name": "demo"}}
    assert expr.evaluate(doc=DOC, vars=project, **unused) == "vm in demo"
    with pytest.raises(ExprError, match="vars"):
        expr.evaluate(doc=DOC, **unused)  # a variable it reads and was not given


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", None),
        ("doc.host", None),
        ("{'a': null, 'b': [null, 1]}", {"a": None, "b": [None, 1]}),
        ("doc", DOC),
    ],
)
def test_null_results_keep_nones_reference_count(text: str, expected: object) -> None:
    """The CEL runtime hands back None without its reference: before the fix, None's
    count fell by one per null until CPython aborted the stack ("none_dealloc")."""
    expr = compile_expr(text)
    bound = Bound(doc=DOC)
    assert expr.evaluate_in(bound) == expected
    before = sys.getrefcount(None)
    for _ in range(1000):
        RESULTS.clear()  # the runtime's value each time, not the one kept
        expr.evaluate_in(bound)
    # the fault took one a null (1000 here); other threads of the process move the count
    # by a few meanwhile
    assert sys.getrefcount(None) > before - 100


def test_sort_orders_a_list_and_refuses_what_cannot_be_compared() -> None:
    zones = compile_expr("sort(map_of(rows.map(r, [r.zone, true])).map(z, z))")
    assert zones.evaluate(rows=[{"zone": "nova"}, {"zone": "az2"}, {"zone": "nova"}]) == [
        "az2",
        "nova",
    ]
    assert compile_expr("sort([3, 1, 2])").evaluate() == [1, 2, 3]
    with pytest.raises(ExprError, match="cannot be compared"):
        compile_expr("sort(['a', 1])").evaluate()


def test_merge_joins_two_maps_the_second_winning() -> None:
    merged = compile_expr("merge(doc, {'name': 'other', 'extra': [1]})").evaluate(doc=DOC)
    assert merged == {**DOC, "name": "other", "extra": [1]}
    assert DOC["name"] == "vm"  # the row itself is left as it was


@pytest.mark.parametrize(
    ("raw", "rfc3339"),
    [
        ("2026-11-06T16:55:22", "2026-11-06T16:55:22.000000Z"),
        ("2026-11-06T16:55:22.012564", "2026-11-06T16:55:22.012564Z"),
        ("2026-11-06 16:55:22.5", "2026-11-06T16:55:22.500000Z"),
        ("2026-11-06T16:55:22Z", "2026-11-06T16:55:22.000000Z"),
    ],
)
def test_a_datetime_query_parameter_becomes_what_cel_s_timestamp_reads(
    raw: str, rfc3339: str
) -> None:
    parsed = _parse("datetime", raw)
    assert parsed == rfc3339
    assert (
        compile_expr("string(timestamp(params.t))").evaluate(params={"t": parsed})[:10] == raw[:10]
    )
    with pytest.raises(ValueError, match="Datetime is in invalid format"):
        _parse("datetime", "yesterday")


def test_ip_net_parses_a_network_and_its_hosts() -> None:
    def net(text: str) -> object:
        return compile_expr(f"ip_net('{text}')").evaluate()

    assert net("10.0.0.5/24") == {
        "version": 4,
        "cidr": "10.0.0.0/24",
        "address": "10.0.0.0",
        "prefixlen": 24,
        "strict": False,
        "small": False,
        "first": "10.0.0.1",
        "last": "10.0.0.254",
    }
    six = net(" fd00::/64 ")
    assert isinstance(six, dict)
    assert (six["strict"], six["first"], six["last"]) == (
        True,
        "fd00::1",
        "fd00::ffff:ffff:ffff:ffff",
    )
    small = net("10.0.0.4/31")
    assert isinstance(small, dict)
    assert (small["small"], small["first"], small["last"]) == (True, "10.0.0.4", "10.0.0.5")
    assert net("10.0.0.7") == {**net("10.0.0.7/32"), "cidr": "10.0.0.7/32"}  # type: ignore[dict-item]
    assert net("banana") == {"version": 0}


def test_ip_compare_and_in_cidr() -> None:
    def value(text: str) -> object:
        return compile_expr(text).evaluate()

    assert value("ip_compare('10.0.0.9', '10.0.0.10')") == -1
    assert value("ip_compare('10.0.0.10', ' 10.0.0.10')") == 0
    assert value("ip_compare('fd00::1', '10.0.0.1')") == 1  # IPv6 after IPv4
    assert value("in_cidr('10.0.0.9', '10.0.0.0/28')") is True
    assert value("in_cidr('10.0.0.19', '10.0.0.0/28')") is False
    assert value("in_cidr('banana', '10.0.0.0/28')") is False
    with pytest.raises(ExprError):
        value("ip_compare('banana', '10.0.0.1')")


def test_closure_reaches_every_node_once_breadth_first() -> None:
    graph = {"admin": ["member"], "member": ["reader"], "reader": ["admin"], "x": ["y"]}
    reach = compile_expr("closure(data, [doc])")
    assert reach.evaluate(data=graph, doc="admin") == ["admin", "member", "reader"]
    assert reach.evaluate(data=graph, doc="reader") == ["reader", "admin", "member"]
    assert reach.evaluate(data=graph, doc="nobody") == ["nobody"]


def test_unique_by_keeps_the_first_map_of_each_key() -> None:
    rows = [
        {"u": "1", "r": "a", "prior": "a"},
        {"u": "1", "r": "b", "prior": "a"},
        {"u": "1", "r": "b", "prior": "b"},
        {"u": "2", "r": "b", "prior": "b"},
    ]
    kept = compile_expr("unique_by(rows, ['u', 'r'])").evaluate(rows=rows)
    assert kept == [rows[0], rows[1], rows[3]]


def test_a_flag_parameter_is_true_unless_it_says_otherwise() -> None:
    assert [_parse("flag", v) for v in ("", "1", "true", "anything")] == [True] * 4
    assert [_parse("flag", v) for v in ("0", "False", "no", "off ")] == [False] * 4


def test_uuid5_is_a_stable_name_based_id() -> None:
    ns = "6f1c2b9e-4d3a-5b7c-8e9f-0a1b2c3d4e5f"
    made = compile_expr("uuid5(data, doc)")
    assert made.evaluate(data=ns, doc="user|default|admin") == "20fe25ca878354ec9b98312ac4194b3c"
    assert made.evaluate(data=ns, doc="user|default|demo") != made.evaluate(data=ns, doc="x")
    with pytest.raises(ExprError):
        made.evaluate(data="not a uuid", doc="x")


def test_a_lone_surrogate_reaches_cel_as_a_replacement_character() -> None:
    body = {"auth": {"name": "a\ud800", "tags": ["b\udfff"]}, "ok": "plain"}
    with pytest.raises(ExprError):  # CEL's strings hold code points only
        compile_expr("size(changes.auth.name)").evaluate(changes=body)
    safe = unicode_only(body)
    assert compile_expr("changes.auth.name.startsWith('a')").evaluate(changes=safe) is True
    assert safe["ok"] == "plain" and "\ufffd" in safe["auth"]["tags"][0]


MATCH_CASES = [
    ("abc", "^a"),
    ("abc", "z$"),
    ("é", "^.$"),  # a character, not a byte, as CEL's own
    ("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?"),
    ("line\nbreak", "^break"),
    ("", "^$"),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", "^(a+)+$"),  # catastrophic for backtracking: not RE2
]


@pytest.mark.parametrize(("text", "pattern"), MATCH_CASES)
def test_matches_answers_as_cels_own_with_the_pattern_compiled_once(
    text: str, pattern: str
) -> None:
    data = {"t": text, "p": pattern}
    own = expr._env().compile("data.t.matches(data.p)")  # CEL's, compiling p each time
    want = own.eval(data={"data": data}).value()
    patterns.compiled.cache_clear()
    e = compile_expr("data.t.matches(data.p)")
    got = []
    for _ in range(3):
        RESULTS.clear()  # the runtime's value each time, not the one kept
        got.append(e.evaluate(data=data))
    assert got == [want] * 3
    info = patterns.compiled.cache_info()
    # (run both ways under SPECSTACK_CEL_CHECK: more hits, still one compile)
    assert info.misses == 1 and info.hits >= 2


def test_matches_in_a_string_literal_is_text_and_errors_name_matches() -> None:
    assert compile_expr("'x.matches(y)' + \"a.matches(\"").evaluate() == "x.matches(y)a.matches("
    assert compile_expr("'a.matches(b)'.matches('^a\\\\.matches')").evaluate() is True
    with pytest.raises(ExprError, match=r"invalid regular expression: missing \)"):
        compile_expr("data.t.matches(data.p)").evaluate(data={"t": "x", "p": "(("})
    with pytest.raises(ExprError, match=r"no matching overload for 'matches' applied to '\(int"):
        compile_expr("1.matches('a')")
    with pytest.raises(ExprError, match=r"No matching overloads found : \(int64\)\.matches\("):
        compile_expr("data.t.matches('a')").evaluate(data={"t": 1})


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ("doc.name", {"doc": {"name": None}}),
        (
            "has(doc.name) && doc.name != null ? doc.name : doc.id",
            {"doc": {"name": None, "id": None}},
        ),
        # a chain of fields reads the value it ends at, whole
        ("doc.addresses.private[0].addr", {"doc": {"addresses": {"private": None}}}),
        (
            "request.payload.instance.uuid + request.payload.host",
            {"request": {"payload": {"instance": {"uuid": None}, "host": None}}, "host": {}},
        ),
        ("doc.a.b.exists(x, x) || doc.a.b.c", {"doc": {"a": {"b": None}}}),
        ("doc.a.b.c + doc.a", {"doc": {"a": None}}),
        ("has(doc.a.b) ? size(doc.a.b.c) : 0", {"doc": {"a": {"b": None}}}),
        # anything but `doc.field` may read any field
        ("'name' in doc", {"doc": None}),
        ("doc['name']", {"doc": None}),
        ("size(doc)", {"doc": None}),
        ("doc.map(k, k)", {"doc": None}),
        ("[doc.id].map(doc, doc.name)", {"doc": None}),
        ("cel.bind(d, doc.a, d.b)", {"doc": {"a": None}}),
        # a name after a dot is a field's, not the variable's
        ("vars.doc.name", {"vars": {"doc": {"name": None}}, "doc": {}}),
    ],
)
def test_the_fields_an_expression_reads_are_found_once(text: str, reads: dict[str, Any]) -> None:
    assert compile_expr(text).reads == reads


@pytest.mark.parametrize(
    "text",
    [
        "doc.name + '/' + string(doc.power_state)",
        "has(doc.host) ? 'set' : 'unset'",
        "'ratio' in doc && doc.ratio > 0.1",
        "doc.addresses.private.map(a, a.addr)",
        "doc.addresses.private[0].addr",
        "has(doc.addresses.public) ? 'public' : doc.addresses.private[0].addr",
        "doc.name.size() + size(doc.addresses)",
        "size(doc)",
    ],
)
def test_a_binding_given_only_what_is_read_gives_the_same_value(text: str) -> None:
    # what a shared binding's expressions read together: only those fields are handed over
    reads = expr.reads_of((text, "doc.id"))
    assert compile_expr(text).evaluate_in(Bound(reads, doc=DOC)) == compile_expr(text).evaluate_in(
        Bound(doc=DOC)
    )
    assert compile_expr("doc.id").evaluate_in(Bound(reads, doc=DOC, auth={"x": 1})) == "s1"


def test_only_the_fields_a_chain_selects_are_handed_to_the_runtime() -> None:
    private = [{"addr": "10.0.0.5", "version": 4}]
    doc = {**DOC, "addresses": {"private": private, "public": [{"addr": "203.0.113.9"}]}}
    bound = Bound(expr.reads_of(("doc.addresses.private[0].addr", "doc.id")), doc=doc)
    assert bound.data == {"doc": {"id": "s1", "addresses": {"private": private}}}
    # what is not a map is handed as it is: reading a field of it fails as it would
    bound = Bound(expr.reads_of(("doc.name.first",)), doc=DOC)
    assert bound.data == {"doc": {"name": "vm"}}
    with pytest.raises(ExprError):
        compile_expr("doc.name.first").evaluate_in(bound)


def test_a_field_not_read_is_not_handed_to_the_runtime() -> None:
    reads = expr.reads_of(("doc.name",))
    # `doc.id` was not among the expressions the binding was made for: not there
    with pytest.raises(ExprError, match="id"):
        compile_expr("doc.id").evaluate_in(Bound(reads, doc=DOC))


def test_expressions_evaluated_at_once_give_what_each_gives_alone() -> None:
    texts = (
        "doc.name",
        "doc.power_state + 1",
        "doc.host == null ? 'none' : doc.host",  # a comment ends this one // here
        "doc.addresses.private.map(a, a.addr)",
        "{'id': doc.id, 'locked': doc.locked}",
    )
    bound = Bound(expr.reads_of(texts), doc=DOC)
    alone = [compile_expr(t).evaluate(doc=DOC) for t in texts]
    assert alone == ["vm", 2, "none", ["10.0.0.5"], {"id": "s1", "locked": False}]
    assert grouped.values_in(texts, bound) == alone
    assert grouped.values_in((), bound) == []
    assert grouped.values_in(texts[:1], bound) == ["vm"]


def test_expressions_evaluated_at_once_give_none_when_one_fails() -> None:
    texts = ("doc.name", "doc.missing", "doc.id")
    bound = Bound(expr.reads_of(texts), doc=DOC)
    assert grouped.values_in(texts, bound) is None  # the caller evaluates each in turn
    assert grouped.values_in(texts[1:2], bound) is None
    with pytest.raises(ExprError, match=r"doc\.missing"):
        compile_expr(texts[1]).evaluate_in(bound)


def test_a_pure_templates_value_is_kept_by_its_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.runtime.netvol_fakes import stack_info

    flavor = stack_info().resources.resource("flavor")
    RESULTS.clear()
    calls: list[str] = []
    run = expr.Expr._run

    def counted(self: expr.Expr, bound: Bound) -> object:
        calls.append(self.text)
        return run(self, bound)

    monkeypatch.setattr(expr.Expr, "_run", counted)
    doc = {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1}
    first = flavor.template("info", doc=doc)
    assert first["id"] == "1" and first["name"] == "m1.tiny" and first["ram"] == 512
    again = flavor.template("info", doc=dict(doc))
    assert again == first and again is not first  # a copy: the caller may change it
    assert len(calls) == 1
    assert flavor.template("info", doc=doc, vars={"x": 1}) == first  # a variable it does not read
    assert len(calls) == 1
    assert flavor.template("info", doc={**doc, "ram": 1024})["ram"] == 1024  # other variables
    assert len(calls) == 2
    # variables JSON does not hold exactly (NaN: null in JSON) are evaluated each time
    flavor.template("info", doc={**doc, "extra": float("nan")})
    flavor.template("info", doc={**doc, "extra": float("nan")})
    assert len(calls) == 4
    # a template with a new id each time is never kept
    assert compile_expr("{'id': uuid4(), 'x': doc.x}").pure is False
    assert compile_expr("doc.at > now").pure is False  # the name anywhere: a superset
    assert compile_expr("doc.now_at").pure is True
    assert compile_expr("{'id': string(doc.id)}").pure is True


def test_a_binding_after_a_comprehension_gives_what_it_gives_alone() -> None:
    # the CEL runtime's lazy cel.bind reads a slot an earlier comprehension of the same
    # program left a value in: such a text is evaluated alone, not in the group
    doc = {"a": [{"id": "a", "c": "1"}, {"id": "b", "c": "2"}]}
    texts = (
        "doc.a.exists(x, x.id == 'a')",
        "cel.bind(mine, doc.a.filter(s, s.id == 'a')[0], doc.a.exists(s, s.c > mine.c))",
        "cel.bind(mine, doc.a.filter(s, s.id == 'a')[0], mine.id)",
    )
    alone = [compile_expr(t).evaluate(doc=doc) for t in texts]
    assert alone == [True, True, "a"]
    assert grouped.values_in(texts, Bound(expr.reads_of(texts), doc=doc)) == alone


def test_the_library_still_keeps_the_lists_it_hands_a_list_argument() -> None:
    """cel-expr-python 0.1.3 keeps one reference too many to a list or map it hands a
    function (`merge`, `sum`, ...): never freed (README, "Benchmarks", Memory). When this
    fails the library is fixed: drop that paragraph."""
    import cel_expr_python.cel as cel

    seen: list[Any] = []

    def count(items: list[Any]) -> int:
        seen.append(items)
        return len(items)

    dyn = cel.Type.DYN
    overload = cel.Overload("count_list", cel.Type.INT, [cel.Type.List(dyn)], impl=count)
    env = cel.NewEnv(variables={}, functions=[cel.FunctionDecl("count", [overload])])
    value = env.compile("count([1, 2])").eval(activation=env.Activation(data={}))
    assert value.value() == 2
    # held by `seen` and by getrefcount's own argument; the third is the runtime's
    references = sys.getrefcount(seen[0])
    assert references == 3
