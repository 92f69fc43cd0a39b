"""`refuse` rules over a list (`each`, the item quoted) and with computed values (`quote`),
and the `ip_version` and `sublist` functions of the spec's expressions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from specstack_runtime import ir
from specstack_runtime.errors import ApiError, BadRequest, Forbidden
from specstack_runtime.expr import ExprError, compile_expr
from specstack_runtime.resources import guards


def _rc(*rules: dict[str, Any]) -> Any:
    """Just what guards.check reads of a resource call: the rules, defaults, variables."""
    res = SimpleNamespace(
        res=SimpleNamespace(guards=tuple(ir.Guard(**r) for r in rules)),
        complete=lambda doc: {"tags": [], **doc},
    )
    return SimpleNamespace(
        res=res,
        refs={},
        variables=lambda **more: {"data": {"limit": 2}, **more},
        allows=lambda rule, target: False,
    )


NETWORKS = {
    "on": ("create",),
    "each": "doc.networks",
    "when": "has(item.fixed_ip) && ip_version(item.fixed_ip) == 0",
    "status": 400,
    "message": "Invalid fixed IP address ({item[fixed_ip]})",
}


def test_each_refuses_with_the_first_item_that_holds() -> None:
    rc = _rc(NETWORKS)
    doc = {"networks": [{"uuid": "a"}, {"fixed_ip": "10.0.0.300"}, {"fixed_ip": "nope"}]}
    with pytest.raises(BadRequest, match=r"^Invalid fixed IP address \(10\.0\.0\.300\)$"):
        guards.check(rc, "create", doc)
    fine = {"networks": [{"fixed_ip": "10.0.0.3"}, {"fixed_ip": "fd00::1"}]}
    guards.check(rc, "create", fine)  # every item passes: nothing refused
    guards.check(rc, "create", {"networks": []})
    guards.check(rc, "update", doc)  # not a rule of this operation


def test_quote_gives_the_message_computed_values() -> None:
    rule = {
        "on": ("create",),
        "when": "size(doc.tags) > data.limit",
        "status": 403,
        "quote": {"requested": "size(doc.tags)", "limit": "data.limit"},
        "message": "Quota exceeded for tags: Requested {requested}, but the limit is {limit}",
    }
    rc = _rc(rule)
    with pytest.raises(Forbidden) as caught:
        guards.check(rc, "create", {"tags": ["a", "b", "c"]})
    assert caught.value.message == "Quota exceeded for tags: Requested 3, but the limit is 2"
    guards.check(rc, "create", {})  # the default (no tags) is within the limit


def test_rules_apply_in_order() -> None:
    first = {"on": ("create",), "when": "true", "status": 400, "message": "first"}
    both = {"networks": [{"fixed_ip": "x"}]}  # the second rule holds too
    with pytest.raises(ApiError, match=r"^first$"):
        guards.check(_rc(first, NETWORKS), "create", both)
    with pytest.raises(ApiError, match=r"^Invalid fixed IP address \(x\)$"):
        guards.check(_rc(NETWORKS, first), "create", both)


@pytest.mark.parametrize(
    ("text", "version"),
    [("10.0.0.1", 4), ("::1", 6), ("fd00::1:2", 6), ("10.0.0.300", 0), ("", 0), ("a.b", 0)],
)
def test_ip_version(text: str, version: int) -> None:
    assert compile_expr("ip_version(doc.addr)").evaluate(doc={"addr": text}) == version


@pytest.mark.parametrize(
    ("start", "count", "got"),
    [(0, -1, [1, 2, 3, 4]), (1, 2, [2, 3]), (3, 5, [4]), (9, 1, []), (-2, 1, [1]), (0, 0, [])],
)
def test_sublist_pages_a_list(start: int, count: int, got: list[int]) -> None:
    expr = compile_expr("sublist(doc.items, doc.start, doc.count)")
    assert expr.evaluate(doc={"items": [1, 2, 3, 4], "start": start, "count": count}) == got


def test_an_earlier_rule_refuses_before_a_later_one_fails() -> None:
    # the rules are evaluated at once; one failing, each is evaluated in turn
    first = {"on": ("create",), "when": "size(doc.tags) > 0", "status": 400, "message": "first"}
    fails = {"on": ("create",), "when": "doc.missing == 1", "status": 400, "message": "never"}
    with pytest.raises(ApiError, match=r"^first$"):
        guards.check(_rc(first, fails, NETWORKS), "create", {"tags": ["a"], "networks": []})
    with pytest.raises(ApiError, match=r"^Invalid fixed IP address \(x\)$"):
        guards.check(_rc(NETWORKS, fails), "create", {"networks": [{"fixed_ip": "x"}]})
    with pytest.raises(ExprError, match=r"doc\.missing"):
        guards.check(_rc(first, fails), "create", {"networks": []})


def test_a_rule_given_a_key_applies_only_when_the_changes_have_it() -> None:
    # nothing but the key decides whether it is evaluated: `doc.missing` would fail
    rule = {
        "on": ("update",),
        "given": "tags",
        "when": "changes.tags == null || doc.missing == 1",
        "status": 400,
        "message": "no tags",
    }
    rc = _rc(rule)
    guards.check(rc, "update", {"name": "a"}, {"name": "b"})  # no tags given: not evaluated
    with pytest.raises(BadRequest, match=r"^no tags$"):
        guards.check(rc, "update", {"name": "a"}, {"tags": None})  # given, even as null
    # without `changes` (a create's own row): the row's keys are the changes
    with pytest.raises(BadRequest, match=r"^no tags$"):
        guards.check(_rc({**rule, "on": ("create",)}, NETWORKS), "create", {"tags": None})
    with pytest.raises(ExprError, match=r"doc\.missing"):
        guards.check(rc, "update", {"name": "a"}, {"tags": ["x"]})
