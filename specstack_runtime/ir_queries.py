"""The IR of computed queries (a resource file's `queries:`): an answer derived from rows,
and the rows a list or show requires."""

from __future__ import annotations

from typing import Any, Literal

from specstack_runtime.ir_node import ErrorText, Node


class QueryRequire(Node):
    resource: str
    id: str  # CEL
    # a soft-deleted row counts (nova's actions of a deleted server); a version: from it on
    deleted: bool | str = False


class QueryParam(Node):
    name: str
    parse: Literal["string", "int", "bool", "flag", "pairs", "list", "datetime"]
    required: bool
    default: Any = None


class QueryJoin(Node):
    name: str
    resource: str
    on: str
    key: str | None
    sum: str | None
    value: str | None


class QueryAsk(Node):  # another API asked before the answer (its JSON is `reply`)
    api: str  # catalog type
    operation: str
    path: str | None = None  # CEL: path parameters
    query: str | None = None  # CEL: query parameters
    optional: bool = False  # no answer: `reply` is {}


class QueryRefusal(Node):  # a request a query refuses before reading anything
    when: str  # CEL over params, path and auth
    error: ErrorText


class Query(Node):
    """A computed query: the rows of `source` for which `where` holds, shaped by `answer`."""

    name: str
    api: str
    operation: str
    source: str  # the resource queried
    params: tuple[QueryParam, ...]
    joins: tuple[QueryJoin, ...]
    require: tuple[QueryRequire, ...] = ()
    tables: dict[str, str] = {}  # variable -> resource: every row, as tables.NAME
    filters: bool = True
    where: str | None
    answer: str
    status: int
    ask: QueryAsk | None = None
    empty: ErrorText | None = None  # an answer of null: this error (nova's 404 of an item)
    refuse: tuple[QueryRefusal, ...] = ()
    target: str | None = None  # CEL: the policy target the operation's rule is checked on again
