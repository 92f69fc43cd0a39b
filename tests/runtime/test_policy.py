"""The policy engine: oslo.policy's rule language (the spec's subset), parsed and evaluated."""

from __future__ import annotations

import pytest

from specstack_runtime import policy
from specstack_runtime.context import AuthContext


def _ctx(*roles: str, project: str | None = "p1", user: str = "u1") -> AuthContext:
    return AuthContext(
        token="t",
        user_id=user,
        user_name="someone",
        project_id=project,
        project_name=None,
        domain_id="default",
        roles=roles,
        expires_at="",
    )


MEMBER = "role:admin or (role:member and project_id:%(project_id)s)"


@pytest.mark.parametrize(
    ("rule", "ctx", "params", "allowed"),
    [
        ("@", _ctx(), {}, True),
        ("", _ctx(), {}, True),
        ("!", _ctx("admin"), {}, False),
        ("role:admin", _ctx("member", "reader"), {}, False),
        ("role:ADMIN", _ctx("admin"), {}, True),
        ("not role:admin", _ctx("member"), {}, True),
        (MEMBER, _ctx("member"), {}, True),  # the target is the caller's own project
        (MEMBER, _ctx("member"), {"project_id": "p1"}, True),
        (MEMBER, _ctx("member"), {"project_id": "p2"}, False),
        (MEMBER, _ctx("reader"), {"project_id": "p1"}, False),
        (MEMBER, _ctx("admin"), {"project_id": "p2"}, True),
        (MEMBER, _ctx("member", project=None), {}, False),  # no project never matches
        ("role:admin or user_id:%(user_id)s", _ctx(), {"user_id": "u1"}, True),
        ("role:admin or user_id:%(user_id)s", _ctx(), {"user_id": "u2"}, False),
        ("project_id:p1 and (role:a or role:b)", _ctx("b"), {}, True),
    ],
)
def test_evaluate(rule: str, ctx: AuthContext, params: dict[str, str], allowed: bool) -> None:
    assert policy.allows(rule, ctx, params) is allowed


def test_target_template() -> None:
    templates = {"account": "AUTH_%(project_id)s"}
    assert policy.allows(MEMBER, _ctx("member"), {"account": "AUTH_p1"}, templates)
    assert not policy.allows(MEMBER, _ctx("member"), {"account": "AUTH_p2"}, templates)
    assert not policy.allows(MEMBER, _ctx("member"), {"account": "p1"}, templates)


def test_parsed_once() -> None:
    assert policy.parse(MEMBER) is policy.parse(MEMBER)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("role:admin or", "expected a check after 'or'"),
        ("(role:admin", "unbalanced parentheses: ')' expected"),
        ("role:admin)", "unexpected ')'"),
        ("role:admin role:member", "unexpected 'role:member'"),
        ("and role:admin", "expected a check, got 'and'"),
        ("group:admins", "'group:admins': unknown check 'group'"),
        ("admin", "'admin' is not a check"),
        ("project_id:%(project_id", "a target reference is written %(name)s"),
    ],
)
def test_malformed(rule: str, message: str) -> None:
    problem = policy.check(rule)
    assert problem is not None and message in problem


def test_expressions_decide_only_the_rules_they_name() -> None:
    """A resource's expressions name the policy rules they read; a call works out those
    (found once at start-up), and every rule when one is read by a computed key."""
    from specstack_runtime.resources.compiled import rule_names

    texts = ["rules.admin || doc.rules_seen", "rules['os:x:y'] ? 1 : rules[\"b\"]"]
    assert rule_names(texts) == frozenset({"admin", "os:x:y", "b"})
    assert rule_names(["doc.size > 1"]) == frozenset()
    assert rule_names(["rules[doc.rule]"]) is None
    assert rule_names(["rules.a", "has(doc.x) && rules"]) is None


def test_a_row_is_taken_as_a_target_only_for_the_attributes_its_rules_read() -> None:
    enforcer = policy.Enforcer(
        {"owner": "user_id:%(user_id)s", "owner_or_admin": "rule:owner or role:admin"}
    )
    row = {"user_id": "u2", "project_id": "p2", "name": "vm", "metadata": {"k": "v"}}
    # through the named rule: the row's user, and the caller's own attributes otherwise
    target = enforcer.target_of(_ctx("member"), row, ("rule:owner_or_admin",))
    assert target["user_id"] == "u2" and target["project_id"] == "p1"
    assert "name" not in target
    # the decisions are the row's, not the caller's
    assert not enforcer.allows("rule:owner_or_admin", _ctx("member"), row)
    assert enforcer.allows("rule:owner_or_admin", _ctx("member", user="u2"), row)
    assert enforcer.allows("project_id:%(project_id)s", _ctx("member", project="p2"), row)
    assert not enforcer.allows("project_id:%(project_id)s", _ctx("member"), row)


def test_a_remembered_decision_is_the_same_callers_on_the_same_target_only() -> None:
    enforcer = policy.Enforcer({"owner": "user_id:%(user_id)s", "admin": "role:admin"})
    rule = "rule:admin or (rule:owner and project_id:%(project_id)s)"
    mine = {"user_id": "u1", "project_id": "p1"}
    theirs = {"user_id": "u2", "project_id": "p1"}
    for _ in range(2):  # asked again: remembered, and the same
        assert enforcer.allows(rule, _ctx("member"), mine)
        assert not enforcer.allows(rule, _ctx("member"), theirs)
        assert enforcer.allows(rule, _ctx("Admin"), theirs)  # roles are the caller's own
        assert not enforcer.allows(rule, _ctx("member", project="p2"), mine)
        assert not enforcer.allows(rule, _ctx("member", user="u2", project="p2"), theirs)
        assert enforcer.allows_call(rule, _ctx("member"), {"project_id": "p1"})
        assert not enforcer.allows_call(rule, _ctx("member"), {"project_id": "p9"})
    assert len(enforcer._decided) == 6  # the first allows_call asks what the first allows did


def test_a_changed_named_rule_is_decided_again() -> None:
    enforcer = policy.Enforcer({"publicize": "role:admin", "owner": "user_id:%(user_id)s"})
    assert not enforcer.allows("rule:publicize", _ctx("member"), {})
    enforcer.rules["publicize"] = policy.parse("role:member")
    assert enforcer.allows("rule:publicize", _ctx("member"), {})
    enforcer.rules.update(publicize=policy.parse("rule:owner"))  # reads the target now
    assert enforcer.allows("rule:publicize", _ctx("member"), {"user_id": "u1"})
    assert not enforcer.allows("rule:publicize", _ctx("member"), {"user_id": "u2"})
    del enforcer.rules["publicize"]
    with pytest.raises(policy.PolicyError, match="rule:publicize is not a named rule"):
        enforcer.allows("rule:publicize", _ctx("member"), {})
