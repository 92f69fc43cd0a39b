"""The Python form of CEL expressions (celpython): the CEL runtime's answers, or none."""

from __future__ import annotations

from typing import Any

import pytest

from specstack_runtime import celops, celpython, celwire
from specstack_runtime.expr import Bound, Expr, ExprError, compile_expr
from tests.conftest import REPO

DOC = {
    "name": "web-1",
    "count": 3,
    "ratio": 1.5,
    "flag": True,
    "none": None,
    "tags": ["a", "b", "c"],
    "nested": {"z": 1, "a": {"deep": [1, 2]}},
    "items": [{"k": "x", "v": 1}, {"k": "y", "v": 2}, {"k": "x", "v": 3}],
    "text": "  Hello, World  ",
    "csv": "a,b,,c",
}

# expressions whose value the Python form gives (no fallback), each checked against the
# runtime's
ANSWERED = [
    "doc.name + '-' + string(doc.count)",
    "doc.count * 2 - 1",
    "-7 % 3",
    "7 % -3",
    "-7 / 2",
    "doc.ratio * 2.0",
    "dyn(doc.count) == dyn(3.0)",
    "dyn(doc.flag) == dyn(1)",
    "dyn(doc.none) == dyn(null)",
    "dyn(doc.name) == dyn(1)",
    "[1, 2] == [dyn(1.0), dyn(2)]",
    "{'a': 1} == {'a': dyn(1.0)}",
    "{'a': 1} == {'b': 1}",
    "doc.count < doc.ratio * 3.0",
    "doc.name > 'abc'",
    "'b' in doc.tags && !('q' in doc.tags)",
    "'z' in doc.nested",
    "has(doc.nested.z) && !has(doc.nested.q)",
    "doc.tags.map(t, t + t)",
    "doc.tags.filter(t, t != 'b')",
    "doc.tags.exists(t, t == 'c') && doc.tags.all(t, size(t) == 1)",
    "doc.tags.exists_one(t, t == 'a')",
    "doc.items.filter(i, i.k == 'x').map(i, i.v)",
    "doc.tags.map(t, doc.tags.map(t, t + '!'))",
    "doc.tags.map(x, [x].map(x, x + x))",
    "cel.bind(n, doc.count, n * n + n)",
    "doc.nested.map(k, k)",
    "type(doc.count) == int && type(doc.name) == string && type(doc.nested) == map",
    "type(doc.tags) == list && type(doc.none) == null_type && type(doc.ratio) == double",
    "doc.csv.split(',')",
    "doc.csv.split(',', 2)",
    "doc.csv.split(',', 0)",
    "doc.name.substring(4)",
    "doc.name.substring(0, 3)",
    "doc.text.trim()",
    "doc.text.lowerAscii()",
    "doc.name.replace('-', '_')",
    "doc.name.contains('b-') && doc.name.startsWith('we') && doc.name.endsWith('-1')",
    "doc.name.matches('^w[a-z]+-[0-9]$')",
    "size(doc.tags) + size(doc.name) + size(doc.nested) + doc.tags.size()",
    "int('42') + int(doc.ratio) + int(-2.7)",
    "double(doc.count) / 2.0",
    "string(true) + string(b'xy')",
    "doc.count > 2 ? 'big' : 'small'",
    "doc.flag || doc.missing",
    "!doc.flag && doc.missing",
    "merge(doc.nested, {'q': [doc.none]})",
    "pairs('VCPU:1,MEMORY_MB:512')",
    "sum([1, 2, 3]) + size(flatten([[1], [2, 3]]))",
    "map_of([['a', 1], ['b', 2]])",
    "sort(['b', 'a'])",
    "unique_by(doc.items, ['k'])",
    "closure({'a': ['b'], 'b': ['c']}, ['a'])",
    "at_least('2.10', '2.9') && !at_least('2.1', '2.9')",
    "ip_net('10.0.0.0/24').last",
    "in_cidr('10.0.0.5', '10.0.0.0/24')",
    "doc.items[1].v + doc.tags.size()",
    "[doc.none, null]",
    "{'id': doc.name, 'tags': doc.tags}",
]


def _vars() -> dict[str, Any]:
    return {"doc": DOC}


def _big_vars() -> dict[str, Any]:
    nested = {**DOC["nested"], "big_list": [1, 2**70]}  # type: ignore[dict-item]
    return {"doc": {**DOC, "big": 2**63, "huge": 2**64 + 5, "nested": nested}}


@pytest.mark.parametrize("text", ANSWERED)
def test_the_python_form_answers_as_the_runtime_does(text: str) -> None:
    expr = Expr(text)
    python = expr.python()
    assert python is not None, "translated"
    bound = Bound(expr.reads, **_vars())
    fast = python(bound.data)  # no fallback: the Python form answered itself
    runtime = expr._runtime(Bound(expr.reads, **_vars()))
    celpython.compare(text, fast, runtime)
    # the same value, its kinds included (an int stays an int, not a float or a bool)
    assert celpython._same(fast, runtime) or text == "doc.nested.map(k, k)", (fast, runtime)


FALLS_BACK = [
    # what CEL refuses or where this module does not know the runtime's answer: the
    # Python form raises, the runtime's value or error is the answer
    ("dyn(doc.count) + dyn(doc.ratio)", ExprError),  # int + double: no overload
    ("doc.missing", ExprError),  # no such key
    ("doc.tags[3]", ExprError),  # index out of range
    ("doc.tags[-1]", ExprError),  # Python would answer 'c'
    ("doc.name.substring(2, 99)", ExprError),  # Python would clamp
    ("dyn(doc.count) && true", ExprError),  # not a bool
    ("dyn(doc.flag) + 1", ExprError),  # a bool is no number in CEL
    ("9223372036854775807 + doc.count", ExprError),  # overflow
    ("has(doc.name.x)", ExprError),  # has() on a string
    ("string(doc.ratio)", "1.5"),  # a double's text: the runtime writes it
    ("[1, 2][dyn(1.0)]", 2),  # a double index the runtime takes
    ("pairs(dyn(doc.count))", ExprError),  # an argument of the wrong kind
    ("at_least(dyn(doc.count), '2.1')", ExprError),  # Python's function would say True
    # integers CEL's int does not hold: a uint to 2**64 in the runtime, beyond its error
    ("type(doc.big) == int", False),
    ("doc.huge > 1", ExprError),
    ("doc.nested.big_list.map(x, x > 1)", ExprError),
    ("doc.nested", ExprError),
    ("doc.nested.big_list == [1]", ExprError),
]


@pytest.mark.parametrize(("text", "expected"), FALLS_BACK)
def test_the_runtime_answers_where_the_python_form_does_not(text: str, expected: Any) -> None:
    expr = Expr(text)
    python = expr.python()
    assert python is not None
    with pytest.raises(Exception):  # noqa: B017 - any: each means "the runtime's to answer"
        python(Bound(expr.reads, **_big_vars()).data)
    if expected is ExprError:
        with pytest.raises(ExprError):
            expr.evaluate(**_big_vars())
    else:
        assert expr.evaluate(**_big_vars()) == expected


def test_an_expression_it_cannot_translate_runs_on_the_runtime() -> None:
    expr = Expr("int(timestamp('2026-01-02T03:04:05Z')) + doc.count")
    assert expr.python() is None
    assert expr.evaluate(**_vars()) == 1767323045 + 3


def test_a_map_with_a_key_twice_is_the_runtimes_error() -> None:
    expr = Expr("{'a': 1, 'a': doc.count}")
    assert expr.python() is None
    with pytest.raises(ExprError, match="duplicate key"):
        expr.evaluate(**_vars())


def test_its_answer_is_a_copy_the_caller_may_change() -> None:
    doc = {"tags": ["a"], "nested": {"k": [1]}}
    value = Expr("{'t': doc.tags, 'n': doc.nested}").evaluate(doc=doc)
    value["t"].append("b")
    value["n"]["k"].append(2)
    assert doc == {"tags": ["a"], "nested": {"k": [1]}}


def test_the_check_fails_on_a_difference_and_allows_another_map_order() -> None:
    celpython.compare("x", {"a": [1, 2]}, {"a": [2, 1]})  # a map's keys iterated otherwise
    with pytest.raises(
        celpython.Differs, match="the top the Python form gave int, the CEL runtime bool"
    ):
        celpython.compare("x", 1, True)
    with pytest.raises(celpython.Differs, match=r"at \['a'\]\[1\] the Python form gave a int"):
        celpython.compare("x", {"a": [1, 2]}, {"a": [1, 3]})
    # where and of what kind, never the values (a seed's password, a token)
    with pytest.raises(celpython.Differs) as raised:
        celpython.compare("x", {"password": "s3cret-1"}, {"password": "s3cret-2"})
    assert "['password']" in str(raised.value) and "s3cret" not in str(raised.value)


def test_every_expression_of_the_spec_is_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec's expressions (each one validation compiles) use what the Python form
    knows, but those on times (one left out would still be right, only slower: this is
    what the speed path covers)."""
    from generator.pipeline.validate import load_and_validate
    from specstack_runtime import expr as module

    texts: set[str] = set()
    compile_expr.cache_clear()
    init = module.Expr.__init__

    def noted(self: Expr, text: str) -> None:
        init(self, text)
        texts.add(text)

    monkeypatch.setattr(module.Expr, "__init__", noted)
    _, diagnostics = load_and_validate(REPO / "spec")
    compile_expr.cache_clear()
    assert diagnostics == []
    untranslated = [t for t in texts if compile_expr(t).python() is None]
    assert len(texts) > 700
    assert untranslated and all("timestamp(" in t or "duration(" in t for t in untranslated), [
        t[:80] for t in untranslated if "timestamp(" not in t
    ]


def test_a_malformed_tree_is_not_translated() -> None:
    with pytest.raises(ValueError):
        celwire.checked(b"\x0a\xff")
    assert celpython.translate(b"\x0a\x03abc", {}) is None


def test_types_are_values() -> None:
    assert celops.eq(celops.type_of(1), celops.TYPES["int"])
    assert not celops.eq(celops.type_of(True), celops.TYPES["int"])
