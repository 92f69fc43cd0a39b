"""CEL shapes the cel library evaluates wrongly, refused at validation (docs/resources.md,
"Expressions").

cel-expr-python 0.1.3 (the newest the project allows) binds `cel.bind(m, init, body)`
lazily, in a slot of the program's frame: the first read of `m` takes what the slot holds
and evaluates `init` only if it holds nothing. An `exists()` or `all()` that stops early
(it found its answer before the end of the list) leaves its iteration variable in its slot,
and a bind evaluated after it in the same program may read that value instead of its own:
`doc.a.exists(x, x == 2) && cel.bind(m, 5, m == 5)` is false over `doc.a = [1, 2, 3]`, as
`m` is 3. `exists_one()`, `map()` and `filter()` never stop early and leave nothing.

Which slot is which depends on how the library plans the program, so the check is the
safe side of it: a bind may not be evaluated after an `exists()`/`all()` it does not
enclose, that is (1) after one that comes before it in the expression, or (2) after one
that comes after it when both are in the body of the same comprehension (a later turn of
the loop runs the bind after an earlier turn's macro) or the bind is in another bind's
value and the macro in that bind's body (a bind's value is evaluated where its name is
first read). A bind that encloses the macro is never affected: moving the bind outward,
`cel.bind(m, 5, doc.a.exists(x, x == 2) && m == 5)`, is the rewrite.

The expression is read as the cel library's tokens (names, strings, brackets); the
library exposes no syntax tree. Nothing is evaluated here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import LoadedSpec, PathElem, to_plain
from specstack_runtime.expr import problem

#: the macros whose loop may stop before the end of the range, leaving a slot set
STOPPING = frozenset({"exists", "all"})
#: every macro that loops over a range (its body runs once per item)
LOOPS = STOPPING | {"exists_one", "map", "filter"}

LIBRARY_BUG = (
    "cel-expr-python 0.1.3 evaluates this wrongly: an exists()/all() that stops early "
    "leaves its variable in a slot a cel.bind evaluated after it reads instead of its own value"
)

_RAW = r"""(?:[rR][bB]?|[bB][rR])(?:'{3}[\s\S]*?'{3}|"{3}[\s\S]*?"{3}|'[^'\n]*'|"[^"\n]*")"""
_TRIPLE = r"""[bB]?(?:'{3}(?:\\[\s\S]|[\s\S])*?'{3}|"{3}(?:\\[\s\S]|[\s\S])*?"{3})"""
_SINGLE = r"""[bB]?(?:'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")"""
_TOKEN = re.compile(
    rf"(?P<str>{_RAW}|{_TRIPLE}|{_SINGLE})|(?P<comment>//[^\n]*)|(?P<space>\s+)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>[0-9][0-9A-Za-z_.]*)"
    r"|(?P<punct>&&|\|\||==|!=|<=|>=|[^\sA-Za-z0-9_])"
)
_OPEN = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int  # offset in the expression


@dataclass(frozen=True)
class _Call:
    """A `cel.bind(...)` or a macro `.name(...)`: where its name is, and its arguments'
    spans (offsets, end exclusive)."""

    name: str
    at: int
    args: tuple[tuple[int, int], ...]

    @property
    def span(self) -> tuple[int, int]:
        return self.args[0][0], self.args[-1][1]


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "punct"
        if kind not in ("space", "comment"):
            out.append(_Token(kind, m.group(), m.start()))
    return out


def _closing(tokens: list[_Token]) -> dict[int, int]:
    """For each opening bracket's token index, its closing one's (unbalanced: left out)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, tok in enumerate(tokens):
        if tok.kind != "punct":
            continue
        if tok.text in _OPEN:
            stack.append(i)
        elif tok.text in _OPEN.values() and stack and _OPEN[tokens[stack[-1]].text] == tok.text:
            pairs[stack.pop()] = i
    return pairs


def _args(tokens: list[_Token], open_: int, close: int) -> tuple[tuple[int, int], ...]:
    """The spans of the arguments between brackets `open_` and `close` (token indices)."""
    spans: list[tuple[int, int]] = []
    depth, start = 0, open_ + 1
    for i in range(open_ + 1, close + 1):
        tok = tokens[i]
        if tok.kind == "punct" and tok.text in _OPEN:
            depth += 1
        elif tok.kind == "punct" and tok.text in _OPEN.values() and i != close:
            depth -= 1
        elif (tok.text == "," and depth == 0) or i == close:
            if i > start:
                end = tokens[i - 1].at + len(tokens[i - 1].text)
                spans.append((tokens[start].at, end))
            start = i + 1
    return tuple(spans)


def _calls(text: str) -> list[_Call]:
    """The binds and macros of `text`, in the order they start."""
    tokens = _tokens(text)
    closing = _closing(tokens)
    calls: list[_Call] = []
    for i in range(1, len(tokens) - 1):
        name, dot, paren = tokens[i], tokens[i - 1], tokens[i + 1]
        if name.kind != "name" or dot.text != "." or paren.text != "(" or i + 1 not in closing:
            continue
        args = _args(tokens, i + 1, closing[i + 1])
        if name.text == "bind" and i >= 2 and tokens[i - 2].text == "cel" and len(args) == 3:
            calls.append(_Call("cel.bind", tokens[i - 2].at, args))
        elif name.text in LOOPS and len(args) in (2, 3):
            first = args[0]
            if _NAME.fullmatch(text[first[0] : first[1]]):  # a macro: its variable first
                calls.append(_Call(name.text, name.at, args))
    return calls


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _within(inner: tuple[int, int], outer: tuple[int, int]) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1]


def _may_follow(bind: _Call, macro: _Call, calls: list[_Call]) -> bool:
    """Whether `bind` may be evaluated after `macro` stopped (see the module's doc)."""
    b, m = bind.span, macro.span
    if _within(m, b) or _within(b, m):
        return False  # a bind enclosing the macro; a bind in the macro's own body
    if m[1] <= b[0]:
        return True
    for other in calls:
        if other.name in LOOPS:
            body = (other.args[1][0], other.args[-1][1])
            if _within(b, body) and _within(m, body):
                return True
        elif _within(b, other.args[1]) and _within(m, other.args[2]):
            return True
    return False


def _line_col(text: str, at: int) -> tuple[int, int]:
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def stale_bind(text: str) -> tuple[str, int, int] | None:
    """Why `text` has a shape the cel library evaluates wrongly, with the 1-based line and
    column of the bind that would read a stale value; None if it has none."""
    if "bind" not in text or ("exists" not in text and "all" not in text):
        return None
    calls = _calls(text)
    for bind in (c for c in calls if c.name == "cel.bind"):
        for macro in (c for c in calls if c.name in STOPPING):
            if _may_follow(bind, macro, calls):
                var = text[bind.args[0][0] : bind.args[0][1]]
                mline, mcol = _line_col(text, macro.at)
                line, col = _line_col(text, bind.at)
                return (
                    f"cel.bind({var}, ...) may be evaluated after the {macro.name}() at line "
                    f"{mline}, column {mcol}: {LIBRARY_BUG}; move the bind outward so that "
                    f"it encloses the {macro.name}(), e.g. `cel.bind({var}, ..., "
                    f"list.{macro.name}(x, ...) && ...)`",
                    line,
                    col,
                )
    return None


Where = list[PathElem]


def _strings(value: Any, where: Where) -> Iterator[tuple[Where, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, [*where, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, [*where, i])
    elif isinstance(value, str):
        yield where, value


def check_cel_shapes(spec: LoadedSpec) -> list[Diagnostic]:
    """Every CEL expression of the spec (any string that compiles as one and names
    `cel.bind`), wherever it is, against the shapes the cel library evaluates wrongly."""
    diags: list[Diagnostic] = []
    for f in spec.files:
        for where, text in _strings(to_plain(f.data), []):
            if "cel.bind" not in text or (found := stale_bind(text)) is None:
                continue
            if problem(text) is not None:
                continue  # not an expression (or one already reported as not compiling)
            message, line, col = found
            diags.append(f.at(where, f"CEL expression (line {line}, column {col}): {message}"))
    return diags
