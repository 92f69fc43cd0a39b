"""Policy rules in oslo.policy's language (the subset the spec uses), parsed once and evaluated.

A rule is the spec's `x-specstack-policy` of an operation, for example
`role:admin or (role:member and project_id:%(project_id)s)`. Grammar:

    rule  := or
    or    := and ("or" and)*
    and   := not ("and" not)*
    not   := "not" not | atom
    atom  := "(" or ")" | "@" | "!" | check
    check := role:NAME | rule:NAME | KEY:%(TARGET)s | KEY:LITERAL
             KEY: project_id, user_id, domain_id

`rule:NAME` is one of the spec's named rules (`spec/policy.yaml`); an `Enforcer`
holds them, and every authorization decision of the stack goes through one.

`@` always allows (so does an empty rule, as in oslo.policy), `!` never does.
`role:` compares case-insensitively with the roles
of the token (keystone's implied roles are already in it). `KEY:%(name)s`
compares the caller's KEY with the target's `name`; neither may be empty.

The target of an operation is made of its path parameters (a parameter named
like a target attribute gives it; a parameter with a `x-specstack-policy-target`
template such as `AUTH_%(project_id)s` gives the attributes the template
captures); attributes the path does not name are the caller's own (the request
concerns the caller's project, as nova's and neutron's targets do for
collections). Resources looked up by id are checked by their behaviours.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from specstack_runtime.context import AuthContext
from specstack_runtime.errors import Forbidden

#: The caller's attributes a check may compare (besides `role`).
CREDENTIAL_KEYS = ("project_id", "user_id", "domain_id")
_TARGET_REF = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_.]*)\)s")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
MAX_DECISIONS = 4096  # remembered decisions (all forgotten at once past it)


class PolicyError(ValueError):
    """A rule that cannot be parsed."""


@dataclass(frozen=True)
class Rule:
    """A parsed rule; `evaluate(creds, target)` says whether it allows the call."""

    kind: str  # "@", "!", "role", "match", "not", "and", "or"
    value: str = ""  # role name, credential key
    ref: str | None = None  # target attribute (for %(name)s), else None
    literal: str = ""  # the literal to compare with (match without ref)
    parts: tuple[Rule, ...] = ()

    def evaluate(
        self,
        creds: AuthContext,
        target: Mapping[str, str | None],
        rules: Mapping[str, Rule] | None = None,
    ) -> bool:
        k = self.kind
        if k == "@":
            return True
        if k == "!":
            return False
        if k == "rule":
            named = (rules or {}).get(self.value)
            if named is None:
                raise PolicyError(f"rule:{self.value} is not a named rule of the spec")
            return named.evaluate(creds, target, rules)
        if k == "role":
            roles = creds.roles
            return self.value.lower() in _lowered(roles if type(roles) is tuple else tuple(roles))
        if k == "match":
            mine = getattr(creds, self.value, None)
            other = target.get(self.ref) if self.ref is not None else self.literal
            return bool(mine) and bool(other) and str(mine) == str(other)
        if k == "not":
            return not self.parts[0].evaluate(creds, target, rules)
        if k == "and":
            return all(p.evaluate(creds, target, rules) for p in self.parts)
        return any(p.evaluate(creds, target, rules) for p in self.parts)

    def refs(self) -> set[str]:
        """The target attributes the rule reads (named rules not followed)."""
        out = {self.ref} if self.ref else set()
        for p in self.parts:
            out |= p.refs()
        return out

    def named(self) -> set[str]:
        """The named rules it refers to directly."""
        out = {self.value} if self.kind == "rule" else set()
        for p in self.parts:
            out |= p.named()
        return out


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for chunk in text.split():
        lead = len(chunk) - len(chunk.lstrip("("))
        out.extend("(" * lead)
        chunk = chunk[lead:]
        trail = 0
        while chunk.endswith(")"):  # `%(name)s` ends with "s": a final ")" closes a group
            chunk = chunk[:-1]
            trail += 1
        if chunk:
            out.append(chunk)
        out.extend(")" * trail)
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Rule:
        if not self.toks:
            return Rule("@")
        rule = self.or_()
        if self.peek() is not None:
            raise PolicyError(f"unexpected {self.peek()!r}")
        return rule

    def or_(self) -> Rule:
        return self.joined("or", self.and_)

    def and_(self) -> Rule:
        return self.joined("and", self.not_)

    def joined(self, word: str, part: Callable[[], Rule]) -> Rule:
        """One or more `part`s joined by `word` (`and` binds tighter than `or`)."""
        parts = [part()]
        while self.peek() == word:
            self.take()
            parts.append(part())
        return parts[0] if len(parts) == 1 else Rule(word, parts=tuple(parts))

    def not_(self) -> Rule:
        if self.peek() == "not":
            self.take()
            return Rule("not", parts=(self.not_(),))
        return self.atom()

    def atom(self) -> Rule:
        tok = self.peek()
        if tok is None:
            prev = self.toks[self.pos - 1] if self.pos else "the start"
            raise PolicyError(f"expected a check after {prev!r}")
        self.take()
        if tok == "(":
            inner = self.or_()
            if self.peek() != ")":
                raise PolicyError("unbalanced parentheses: ')' expected")
            self.take()
            return inner
        if tok in ("@", "!"):
            return Rule(tok)
        if tok in (")", "and", "or", "not"):
            raise PolicyError(f"expected a check, got {tok!r}")
        return _check(tok)


def _check(tok: str) -> Rule:
    key, sep, match = tok.partition(":")
    if not sep or not match:
        raise PolicyError(f"{tok!r} is not a check like 'role:NAME' or 'project_id:%(project_id)s'")
    if key in ("role", "rule"):
        if not _NAME.fullmatch(match.replace(":", "")):
            raise PolicyError(f"{tok!r}: a {key} name is letters, digits, '_', '.', ':' or '-'")
        return Rule(key, value=match)
    if key not in CREDENTIAL_KEYS:
        raise PolicyError(
            f"{tok!r}: unknown check {key!r} (use role, rule, {', '.join(CREDENTIAL_KEYS)}, @ or !)"
        )
    if "%" in match or "(" in match:
        ref = _TARGET_REF.fullmatch(match)
        if ref is None:
            raise PolicyError(f"{tok!r}: a target reference is written %(name)s")
        return Rule("match", value=key, ref=ref.group(1))
    return Rule("match", value=key, literal=match)


@lru_cache(maxsize=1024)
def _lowered(roles: tuple[str, ...]) -> frozenset[str]:
    """A token's roles in lower case (role checks ignore case), found once per role set."""
    return frozenset(r.lower() for r in roles)


@lru_cache(maxsize=1024)
def parse(text: str) -> Rule:
    """The parsed rule (cached); PolicyError if it is malformed."""
    return _Parser(text).parse()


def check(text: str) -> str | None:
    """None if the rule parses, else what is wrong with it."""
    try:
        parse(text)
    except PolicyError as exc:
        return str(exc)
    return None


def _template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    names: list[str] = []
    pattern = ""
    last = 0
    for m in _TARGET_REF.finditer(template):
        pattern += re.escape(template[last : m.start()]) + "(.+)"
        names.append(m.group(1))
        last = m.end()
    pattern += re.escape(template[last:])
    return re.compile(pattern), tuple(names)


@lru_cache(maxsize=256)
def _compiled_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    return _template(template)


def target(
    auth: AuthContext,
    path_params: Mapping[str, str],
    templates: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """The target of a call: the caller's own attributes, overridden by what the path names."""
    out: dict[str, str | None] = {k: getattr(auth, k, None) for k in CREDENTIAL_KEYS}
    for name, value in path_params.items():
        template = (templates or {}).get(name)
        if template is None:
            out[name] = value
            continue
        pattern, names = _compiled_template(template)
        m = pattern.fullmatch(value)
        for i, attr in enumerate(names):
            # A value the template does not fit names no project the caller can have.
            out[attr] = m.group(i + 1) if m else f"\x00{value}"
    return out


def allows(
    rule: str,
    auth: AuthContext,
    path_params: Mapping[str, str],
    templates: Mapping[str, str] | None = None,
    rules: Mapping[str, Rule] | None = None,
) -> bool:
    return parse(rule).evaluate(auth, target(auth, path_params, templates), rules)


def problems(rules: Mapping[str, str]) -> dict[str, str]:
    """Named rules that do not parse, name unknown rules or refer to themselves."""
    parsed: dict[str, Rule] = {}
    out: dict[str, str] = {}
    for name, text in rules.items():
        try:
            parsed[name] = parse(text)
        except PolicyError as exc:
            out[name] = str(exc)
    for name, rule in parsed.items():
        unknown = sorted(rule.named() - set(rules))
        if unknown:
            out[name] = f"rule:{unknown[0]} is not a named rule"
    for name in parsed:
        if name not in out and _cycles(name, parsed, ()):
            out[name] = "refers to itself through its named rules"
    return out


def _cycles(name: str, parsed: Mapping[str, Rule], seen: tuple[str, ...]) -> bool:
    if name in seen:
        return True
    rule = parsed.get(name)
    return rule is not None and any(_cycles(n, parsed, (*seen, name)) for n in rule.named())


class _Rules(dict[str, Rule]):
    """An enforcer's named rules: a change (a test's, a policy reloaded) calls `changed`."""

    def __init__(self, rules: Mapping[str, Rule], changed: Callable[[], None]) -> None:
        super().__init__(rules)
        self._changed = changed

    def __setitem__(self, name: str, rule: Rule) -> None:
        super().__setitem__(name, rule)
        self._changed()

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, name: str, rule: Rule) -> Rule:
        out = super().setdefault(name, rule)
        self._changed()
        return out

    def pop(self, name: str, *default: Any) -> Any:
        out = super().pop(name, *default)
        self._changed()
        return out

    def popitem(self) -> tuple[str, Rule]:
        out = super().popitem()
        self._changed()
        return out

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __ior__(self, other: Any) -> _Rules:  # type: ignore[override,misc]
        self.update(other)
        return self


class Enforcer:
    """The stack's one policy enforcer: the spec's named rules, and rules that use them."""

    def __init__(self, rules: Mapping[str, str]) -> None:
        bad = problems(rules)
        if bad:
            name, why = next(iter(bad.items()))
            raise PolicyError(f"policy rule {name}: {why}")
        self._reads: dict[tuple[str, ...], frozenset[str]] = {}
        self._read_by: dict[str, tuple[str, ...]] = {}
        self._decided: dict[tuple[Any, ...], bool] = {}
        self.rules: dict[str, Rule] = _Rules(
            {name: parse(text) for name, text in rules.items()}, self._forget
        )

    def _forget(self) -> None:
        """A named rule changed: what was found with the old ones is found again."""
        self._reads.clear()
        self._read_by.clear()
        self._decided.clear()

    def decide(self, rule: str, auth: AuthContext, target: Mapping[str, str | None]) -> bool:
        """`rule` evaluated on `auth` and `target`, remembered by all it depends on (the
        caller's roles and ids, the target attributes the rule reads): the same caller asks
        the same questions request after request, and a walk of the rule's tree is dozens
        of calls."""
        reads = self._read_by.get(rule)
        if reads is None:
            reads = self._read_by[rule] = tuple(sorted(self.refs(rule)))
        roles = auth.roles if type(auth.roles) is tuple else tuple(auth.roles)
        ids = (auth.project_id, auth.user_id, auth.domain_id)
        key = (rule, roles, ids, *[target.get(k) for k in reads])
        known = self._decided.get(key)
        if known is None:
            known = parse(rule).evaluate(auth, target, self.rules)
            if len(self._decided) >= MAX_DECISIONS:
                self._decided.clear()
            self._decided[key] = known
        return known

    def allows(self, rule: str, auth: AuthContext, target: Mapping[str, Any]) -> bool:
        """Whether `rule` (a rule text, e.g. `rule:admin` or `role:member`) allows `auth` on
        `target` (a resource's fields, or the attributes a path names)."""
        return self.decide(rule, auth, self.target_of(auth, target, (rule,)))

    def target_of(
        self, auth: AuthContext, doc: Mapping[str, Any], rules: Iterable[str] | None = None
    ) -> dict[str, str | None]:
        """`doc` as the target `allows_on` takes: made once for several rules on one row;
        with `rules` (those it will be given), only the attributes they read are taken."""
        if rules is None:
            return _as_target(auth, doc)
        key = tuple(rules)
        reads = self._reads.get(key)
        if reads is None:  # found once per set of rules (through the named rules they use)
            reads = self._reads[key] = frozenset().union(*(self.refs(r) for r in key))
        return _as_target(auth, {k: doc[k] for k in reads if k in doc})

    def allows_on(self, rule: str, auth: AuthContext, target: Mapping[str, str | None]) -> bool:
        """`allows` with a target `target_of` made."""
        return self.decide(rule, auth, target)

    def refs(self, rule: str) -> set[str]:
        """The target attributes `rule` reads, through the named rules it uses."""
        seen: set[str] = set()
        out: set[str] = set()
        todo = [parse(rule)]
        while todo:
            r = todo.pop()
            out |= r.refs()
            for name in r.named() - seen:
                seen.add(name)
                if name in self.rules:
                    todo.append(self.rules[name])
        return out

    def allows_call(
        self,
        rule: str,
        auth: AuthContext,
        path_params: Mapping[str, str],
        templates: Mapping[str, str] | None = None,
    ) -> bool:
        return self.decide(rule, auth, target(auth, path_params, templates))

    def authorize(
        self,
        operation_id: str,
        rule: str | None,
        auth: AuthContext,
        path_params: Mapping[str, str],
        templates: Mapping[str, str] | None = None,
        *,
        target: Mapping[str, Any] | None = None,
    ) -> None:
        """An operation's rule against the caller and the path (or `target`, an object the
        operation found): Forbidden if it does not allow."""
        if rule is None:
            return
        if target is not None:
            allowed = self.allows(rule, auth, target)
        else:
            allowed = self.allows_call(rule, auth, path_params, templates)
        if not allowed:
            raise Forbidden(
                f"Policy doesn't allow {operation_id} to be performed.",
                kind="PolicyNotAuthorized",
            )


def _as_target(auth: AuthContext, doc: Mapping[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {k: getattr(auth, k, None) for k in CREDENTIAL_KEYS}
    for key, value in doc.items():
        if value is None or isinstance(value, str | int | bool):
            out[key] = None if value is None else str(value)
    return out
