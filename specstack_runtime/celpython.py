"""A compiled CEL expression as a Python function: the runtime's one CEL speed path.

The CEL runtime converts every variable an expression reads into its own values and
its answer back, some 40 us an evaluation in a running stack, and a boot evaluates some
thirty. The expression's checked syntax tree (`celwire`: the runtime's own parse, its
macros expanded, its overloads resolved) is turned once, at compile time, into Python
source over the plain values (`celops`), compiled with `compile()`. It answers only
where it gives what the runtime gives: any operation outside what it knows (a
function it has no code for, a type CEL does not mix, an error) raises, and the
expression is then evaluated by the CEL runtime, whose value or error is the answer.
An expression this module cannot translate at all (`translate` gives None) always
runs on the runtime. `SPECSTACK_CEL_CHECK=1` evaluates every expression both ways
and fails on any difference (the test suite runs so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from specstack_runtime import celops
from specstack_runtime.celwire import Checked, Node, checked

Fast = Callable[[Mapping[str, Any]], Any]

# operator or function name -> celops function (an argument count of None: any)
_OPERATORS: dict[str, tuple[str, int | None]] = {
    "_==_": ("eq", 2),
    "_!=_": ("ne", 2),
    "_[_]": ("index", 2),
    "@in": ("contains", 2),
    "_+_": ("add", 2),
    "_-_": ("sub", 2),
    "_*_": ("mul", 2),
    "_/_": ("div", 2),
    "_%_": ("mod", 2),
    "_<_": ("lt", 2),
    "_<=_": ("le", 2),
    "_>_": ("gt", 2),
    "_>=_": ("ge", 2),
    "-_": ("neg", 1),
    "size": ("size", 1),
    "int": ("to_int", 1),
    "string": ("to_string", 1),
    "double": ("to_double", 1),
    "bytes": ("to_bytes", 1),
    "type": ("type_of", 1),
}
# receiver-style functions (`s.split(',')`): the receiver is the first argument
_METHODS: dict[str, tuple[str, int | None]] = {
    "size": ("size", 0),
    "split": ("split", None),
    "substring": ("substring", None),
    "replace": ("replace", 2),
    "trim": ("trim", 0),
    "lowerAscii": ("lower_ascii", 0),
    "upperAscii": ("upper_ascii", 0),
    "contains": ("has_text", 1),
    "startsWith": ("starts_with", 1),
    "endsWith": ("ends_with", 1),
    "matches_cached": ("matches", 1),
}


class Untranslatable(Exception):
    pass


class _Writer:
    def __init__(self, checked_expr: Checked, functions: Mapping[str, Signature]) -> None:
        self.refs = checked_expr.references
        self.functions = functions
        self.count = 0
        self.used: dict[str, Any] = {}  # the generated code's globals

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any) -> str:
        if value is None or isinstance(value, bool | int | str):
            return repr(value)
        name = self.name("_k")
        self.used[name] = value
        return name

    def expr(self, node: Node, scope: dict[str, str], block: list[str], indent: str) -> str:
        kind = node.kind
        if kind == "const":
            return self.const(node.value)
        if kind == "ident":
            return self.ident(node, scope)
        if kind == "select":
            assert node.target is not None
            operand = self.expr(node.target, scope, block, indent)
            op = "has" if node.test_only else "select"
            return f"_o.{op}({operand}, {node.value!r})"
        if kind == "list":
            return "[" + "".join(self.expr(a, scope, block, indent) + ", " for a in node.args) + "]"
        if kind == "map":
            entries = []
            for key, value in zip(node.keys, node.args, strict=True):
                if key.kind != "const" or type(key.value) is not str:
                    raise Untranslatable("a map key that is not a string literal")
                if any(k.value == key.value for k in node.keys if k is not key):
                    raise Untranslatable("a key twice: the runtime's error")
                entries.append(f"{key.value!r}: {self.expr(value, scope, block, indent)}")
            return "{" + ", ".join(entries) + "}"
        if kind == "comprehension":
            return self.comprehension(node, scope, block, indent)
        return self.call(node, scope, block, indent)

    def ident(self, node: Node, scope: dict[str, str]) -> str:
        name = str(node.value)
        if name in scope:
            return scope[name]
        if node.id in self.refs:
            name = self.refs[node.id][0] or name
        if name in celops.TYPES:
            return f"_o.TYPES[{name!r}]"
        return f"_o.read(_a[{name!r}])"

    def call(self, node: Node, scope: dict[str, str], block: list[str], indent: str) -> str:
        name = str(node.value)

        def arg(n: Node) -> str:
            return self.expr(n, scope, block, indent)

        args = [arg(a) for a in node.args]
        if node.target is not None:
            receiver = arg(node.target)
            found = _METHODS.get(name)
            if found is None or (found[1] is not None and found[1] != len(args)):
                raise Untranslatable(f"method {name}")
            return f"_o.{found[0]}({', '.join([receiver, *args])})"
        if name == "_&&_":
            return f"(_o.truth({args[1]}) if _o.truth({args[0]}) else False)"
        if name == "_||_":
            return f"(True if _o.truth({args[0]}) else _o.truth({args[1]}))"
        if name == "_?_:_":
            return f"({args[1]} if _o.truth({args[0]}) else {args[2]})"
        if name == "!_":
            return f"(not _o.truth({args[0]}))"
        if name == "@not_strictly_false":  # (an error would be true: here, the runtime's)
            return f"_o.truth({args[0]})"
        if name == "dyn" and len(args) == 1:
            return args[0]
        found = _OPERATORS.get(name)
        if found is not None and (found[1] is None or found[1] == len(args)):
            return f"_o.{found[0]}({', '.join(args)})"
        signature = self.functions.get(name)
        if signature is None or len(signature.arguments) != len(args):
            raise Untranslatable(f"function {name}")
        fn = self.name("_f")
        self.used[fn] = signature.checked
        return f"{fn}({', '.join(args)})"

    def comprehension(
        self, node: Node, scope: dict[str, str], block: list[str], indent: str
    ) -> str:
        """A nested function, defined in the enclosing one (its loop variables are free
        in it), called with the range and the accumulator's start evaluated outside."""
        iter_name, accu_name = node.names
        over, start, condition, step, result = node.args
        fn = self.name("_c")
        item, accu = self.name("_i"), self.name("_r")
        inner = {**scope, iter_name: item, accu_name: accu}
        body: list[str] = []
        deeper = indent + "    "
        range_code = self.expr(over, scope, block, indent)
        start_code = self.expr(start, scope, block, indent)
        cond_code = self.expr(condition, inner, body, deeper)
        step_code = self.expr(step, inner, body, deeper)
        result_code = self.expr(result, {**scope, accu_name: accu}, body, deeper)
        block.append(f"{indent}def {fn}(_range, {accu}):")
        block.extend(body)
        block.append(f"{deeper}for {item} in _o.iterate(_range):")
        if not (condition.kind == "const" and condition.value is True):
            block.append(f"{deeper}    if not _o.truth({cond_code}):")
            block.append(f"{deeper}        break")
        block.append(f"{deeper}    {accu} = {step_code}")
        block.append(f"{deeper}return {result_code}")
        return f"{fn}({range_code}, {start_code})"


class Signature:
    """A spec function's Python implementation and the kinds of its arguments ("string",
    "int", "bool", "list", "map", or "dyn" for any), checked before each call as the
    runtime checks its overload."""

    _KINDS: ClassVar[dict[str, tuple[type, ...]]] = {
        "string": (str,),
        "int": (int,),
        "bool": (bool,),
        "list": (list,),
        "map": (dict,),
    }

    def __init__(self, impl: Callable[..., Any], arguments: list[str]) -> None:
        self.impl, self.arguments = impl, arguments
        kinds = [self._KINDS.get(a) for a in arguments]

        def call(*args: Any) -> Any:
            for value, kind in zip(args, kinds, strict=True):
                if kind is not None and type(value) not in kind:
                    celops.unlike("argument")
            return impl(*args)

        self.checked = call


def translate(serialized: bytes, functions: Mapping[str, Signature]) -> Fast | None:
    """The Python function of a compiled expression (`Expression.serialize()`), or None
    when it uses what this module does not translate."""
    try:
        tree = checked(serialized)
        writer = _Writer(tree, functions)
        block: list[str] = []
        top = writer.expr(tree.expr, {}, block, "    ")
    except (Untranslatable, ValueError, RecursionError):
        return None
    source = "\n".join(["def _expr(_a):", *block, f"    return _o.plain({top})", ""])
    names: dict[str, Any] = {"_o": celops, **writer.used}
    exec(compile(source, "<cel>", "exec"), names)
    fn: Fast = names["_expr"]
    return fn


class Differs(AssertionError):
    """The Python form of an expression answered otherwise than the CEL runtime."""


def compare(text: str, fast: Any, runtime: Any) -> None:
    """Raise `Differs` unless the two answers are the same value of the same kinds. CEL
    leaves the order in which a map's keys are iterated open (the runtime's is its hash
    table's, this module's the map's own): lists that hold the same items in another
    order count as the same."""
    if not _same(fast, runtime) and _canonical(fast) != _canonical(runtime):
        # where and of what kind, never the values: an expression may hold a secret
        where, mine, theirs = _difference(fast, runtime, "")
        raise Differs(
            f"{text!r}: at {where or 'the top'} the Python form gave {mine},"
            f" the CEL runtime {theirs} (values not shown)"
        )


def _difference(a: Any, b: Any, path: str) -> tuple[str, str, str]:
    """The first place where `a` and `b` differ, and what each holds there."""
    if type(a) is not type(b):
        return path, type(a).__name__, type(b).__name__
    if type(a) is dict:
        if a.keys() != b.keys():
            return path, f"keys {sorted(map(str, a))}", f"keys {sorted(map(str, b))}"
        for key in a:
            if not _same(a[key], b[key]):
                return _difference(a[key], b[key], f"{path}[{key!r}]")
    if type(a) is list:
        if len(a) != len(b):
            return path, f"a list of {len(a)}", f"a list of {len(b)}"
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            if not _same(x, y):
                return _difference(x, y, f"{path}[{n}]")
    return path, f"a {type(a).__name__}", f"another {type(b).__name__}"


def _canonical(value: Any) -> Any:
    if type(value) is dict:
        return ("map", sorted((repr(k), _canonical(v)) for k, v in value.items()))
    if type(value) is list:
        return ("list", sorted((_canonical(v) for v in value), key=repr))
    return (type(value).__name__, repr(value))


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float and a != a:
        return bool(b != b)
    return bool(a == b)
