"""A pure expression's value kept by its variables is the value the CEL runtime gives."""

from __future__ import annotations

import datetime
import math
import uuid
from typing import Any

import pytest

from specstack_runtime import expr
from specstack_runtime.expr import Bound, ExprError, compile_expr
from specstack_runtime.exprcache import KEY_BYTES, RESULTS, VALUE_BYTES, Results, key_of
from specstack_runtime.resources.compiled import _COPY
from specstack_runtime.resources.views import _as_cel_gives

DOC = {
    "id": "s1",
    "name": "vm",
    "power_state": 1,
    "ratio": 0.5,
    "locked": False,
    "host": None,
    "addresses": {"private": [{"addr": "10.0.0.5", "version": 4}]},
}


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the CEL runtime evaluates (not those whose value was kept)."""
    RESULTS.clear()
    compile_expr.cache_clear()  # each expression's count of values found kept from 0
    seen: list[str] = []
    run = expr.Expr._run

    def counted(self: expr.Expr, bound: Bound) -> Any:
        seen.append(self.text)
        return run(self, bound)

    monkeypatch.setattr(expr.Expr, "_run", counted)
    return seen


@pytest.mark.parametrize(
    "text",
    [
        "doc.name",
        "doc.host",
        "doc.addresses",
        "doc.ratio * 2.0",
        "{'id': doc.id, 'up': doc.power_state == 1, 'none': null, 'list': [doc.locked]}",
        "[dyn(doc.id), dyn(doc.power_state), dyn(doc.addresses.private[0].addr)]",
    ],
)
def test_a_kept_value_is_the_runtimes_and_a_copy(text: str, runs: list[str]) -> None:
    first = compile_expr(text).evaluate_in(Bound(compile_expr(text).reads, doc=DOC))
    again = compile_expr(text).evaluate(doc=dict(DOC))
    assert runs == [text]  # the second from what was kept
    assert again == first and type(again) is type(first)
    if isinstance(first, dict | list):
        assert again is not first
        again.clear()  # a caller changing its value changes no one else's
        assert compile_expr(text).evaluate(doc=DOC) == first


def test_other_variables_run_again(runs: list[str]) -> None:
    e = compile_expr("doc.name + '!'")
    assert e.evaluate(doc=DOC) == "vm!"
    assert e.evaluate(doc={**DOC, "name": "other"}) == "other!"
    assert e.evaluate(doc={**DOC, "id": "s2"}) == "vm!"  # a field it does not read
    assert runs == ["doc.name + '!'"] * 2


def test_impure_expressions_run_each_time(runs: list[str]) -> None:
    e = compile_expr("doc.id + uuid4()")
    assert e.evaluate(doc=DOC) != e.evaluate(doc=DOC)
    assert len(runs) == 2


def test_errors_are_not_kept(runs: list[str]) -> None:
    e = compile_expr("doc.flavor_id")
    for _ in range(2):
        with pytest.raises(ExprError, match=r"doc\.flavor_id: .*flavor_id"):
            e.evaluate(doc=DOC)
    assert len(runs) == 2


@pytest.mark.parametrize(
    "value",
    [
        b"bytes",
        (1, 2),
        uuid.UUID(int=1),
        math.nan,
        "\ud800",
        2**70,
        datetime.datetime(2026, 1, 1),
        {1: "a"},
    ],
)
def test_no_key_for_what_json_does_not_hold_exactly(value: object) -> None:
    assert key_of({"doc": {"x": value}}) is None
    assert key_of({"doc": {"x": "plain", "y": [1, 1.0, True, None]}}) is not None


def test_the_same_text_as_the_key_but_another_type_is_not_the_same() -> None:
    assert key_of({"doc": {"x": 1}}) != key_of({"doc": {"x": 1.0}})
    assert key_of({"doc": {"x": 1}}) != key_of({"doc": {"x": True}})


def test_values_json_cannot_give_back_are_not_kept() -> None:
    kept = Results()
    kept.put("t", b"k", {"at": datetime.datetime(2026, 1, 1)})
    kept.put("t", b"n", math.nan)
    kept.put("t", b"b", b"bytes")
    assert len(kept) == 0
    kept.put("t", b"ok", {"a": [1, None, 2.5]})
    assert kept.get("t", b"ok") == (True, {"a": [1, None, 2.5]})
    assert kept.get("u", b"ok") == (False, None)


def test_the_oldest_goes_first() -> None:
    kept = Results(entries=2)
    kept.put("a", b"1", 1)
    kept.put("b", b"1", 2)
    kept.put("c", b"1", 3)
    assert kept.get("a", b"1") == (False, None)
    assert kept.get("b", b"1") == (True, 2) and kept.get("c", b"1") == (True, 3)
    assert len(kept) == 2


def test_an_expression_rarely_found_again_is_no_longer_kept(runs: list[str]) -> None:
    e = compile_expr("doc.id + '-rare'")
    for n in range(40):
        assert e.evaluate(doc={"id": str(n)}) == f"{n}-rare"
    kept = len(RESULTS)
    assert 0 < kept < 40
    assert e.evaluate(doc={"id": "0"}) == "0-rare"
    assert len(runs) == 41


@pytest.mark.parametrize(
    ("value", "copied"),
    [
        (None, True),
        (True, True),
        (0, True),
        (-(2**63), True),
        (2**63 - 1, True),
        (2**63, False),  # CEL's uint: not an int's copy
        (0.5, True),
        (math.inf, True),
        ("text", True),
        ("é and 😀", True),
        ("", True),
        ("a\x00b", False),  # CEL's string ends at the NUL
        ("a\ud800", False),  # CEL fails
        ([1], False),  # a structure: CEL's copy
        ({"a": 1}, False),
        ((1,), False),
        (datetime.datetime(2026, 1, 1), False),
    ],
)
def test_a_field_copied_in_an_answer_is_what_cel_gives(value: object, copied: bool) -> None:
    """views.render answers a `doc.F` field with the row's value only where CEL gives
    that value back unchanged."""
    assert _as_cel_gives(value) is copied
    if copied:
        got = compile_expr("doc.x").evaluate(doc={"x": value})
        assert got == value and type(got) is type(value)


def test_a_copy_is_a_plain_field_read() -> None:
    assert _COPY.fullmatch("doc.project_id") and _COPY.fullmatch(" doc . host\n")
    for text in ("doc.a.b", "doc['a']", "doc.a == null", "has(doc.a)", "row.a", "doc"):
        assert _COPY.fullmatch(text) is None


def test_an_expression_whose_variables_have_no_key_is_no_longer_tried(runs: list[str]) -> None:
    e = compile_expr("size(doc.blob) + 1")
    for _ in range(20):
        assert e.evaluate(doc={"blob": b"xy"}) == 3  # bytes: no JSON, no key
    assert len(RESULTS) == 0 and len(runs) == 20
    assert not e._keeps


def test_long_variables_or_values_are_not_kept() -> None:
    assert key_of({"doc": {"x": "a" * KEY_BYTES}}) is None
    kept = Results()
    kept.put("t", b"k", ["a" * VALUE_BYTES])
    assert len(kept) == 0
