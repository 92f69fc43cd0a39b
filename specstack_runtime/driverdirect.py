"""The store's one speed path: a statement SQLAlchemy compiled runs on the database driver
directly, on SQLite (sqlite3) and PostgreSQL (psycopg).

An embedded stack runs every store statement on one SQLite connection, on its event loop's
thread, where SQLite takes microseconds over a statement and SQLAlchemy's execution around it
(the cache key, the parameters, the event hooks, the result object) takes several times that:
about 1.1 ms of the 11 a boot costs (`specstack bench --profile 300 --unprofiled`, 11.3 -> 10.2
ms). On PostgreSQL that execution was about a third of the CPU a `GET /servers/{id}` costs a
distributed stack's nova-api. SQLAlchemy still builds and compiles every statement (the SQL
text is its, compiled once per statement and set of parameter names) and still holds the
connection and its transaction; only running the statement is cut short: the parameters put as
the compiled statement names or orders them, the driver's cursor returned (rows as tuples,
`fetchone`, `rowcount`: what the store reads of a result, which SQLAlchemy's results have too).

A statement goes through SQLAlchemy, as on MariaDB (not measured on this path), when this path
could not run it as SQLAlchemy would: an IN list expanded at execution, a type that converts a
value on its way in or out (the store's columns are text and counts integers: none does), or
anyone listening to the engine's cursor events (a test counting statements sees them all). An
error comes out as SQLAlchemy's (`IntegrityError` for a key taken), as from every other path;
a connection the server dropped is invalidated, as SQLAlchemy does, so that the store's retry
on a new connection (`database.run_on_server`) sees it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Delete, Insert, Select, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.compiler import Compiled

Params = Mapping[str, Any]


class Rows(Protocol):
    """What the store reads of a statement's result, from the driver or from SQLAlchemy."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


def first_value(rows: Rows) -> Any:
    """The first column of the first row (None: no row)."""
    row = rows.fetchone()
    return None if row is None else row[0]


class DriverDirect:
    """Runs the store's statements on its connection's driver (see the module)."""

    def __init__(self) -> None:
        # (statement, its parameters' names) -> compiled form, SQL and bind order; None: not
        # for this path (statements are the store's own, built once and kept)
        self._compiled: dict[tuple[Any, tuple[str, ...]], _Plan | None] = {}

    def run(self, conn: Connection, stmt: Any, params: Params | list[Params] | None = None) -> Rows:
        """`stmt` with `params` (a list: one execution for each) on `conn`'s driver, or through
        SQLAlchemy when this path cannot run it exactly as SQLAlchemy would."""
        each = params if isinstance(params, list) else [params or {}]
        first: Params = each[0] if each else {}
        key = (stmt, tuple(first))
        plan = self._compiled.get(key, _UNPLANNED)
        if plan is _UNPLANNED:
            plan = self._compiled[key] = _plan(stmt, conn.dialect, first)
        events = conn.engine.dispatch
        if plan is None or events.before_cursor_execute or events.after_cursor_execute:
            return conn.execute(stmt, params)
        return _on_driver(conn, plan, each, many=isinstance(params, list))


class _Plan:
    __slots__ = ("compiled", "names", "sql")

    def __init__(self, compiled: Compiled, sql: str, names: tuple[str, ...] | None) -> None:
        self.compiled, self.sql, self.names = compiled, sql, names

    def values(self, params: Params) -> tuple[Any, ...] | dict[str, Any]:
        # the statement's own values (a literal it binds) with the caller's, in its order
        # (sqlite3's `?`) or by its names (psycopg's `%(name)s`); a name missing raises as
        # SQLAlchemy's execution would
        values = self.compiled.construct_params(params) or {}
        if self.names is None:
            return dict(values)
        return tuple([values[name] for name in self.names])


_UNPLANNED: Any = object()
_STATEMENTS = (Select, Insert, Update, Delete)


def _plan(stmt: Any, dialect: Dialect, params: Params) -> _Plan | None:
    if not isinstance(stmt, _STATEMENTS):
        return None
    # an INSERT's columns and an UPDATE's SET clause are those the parameters name
    compiled = stmt.compile(dialect=dialect, column_keys=list(params))
    binds = compiled.binds.values()
    names: tuple[str, ...] | None = None  # by name: psycopg's `%(name)s`
    if dialect.positional:  # in order: sqlite3's `?`
        if compiled.positiontup is None:
            return None
        names = tuple(compiled.positiontup)
    if any(b.expanding or b.type.bind_processor(dialect) for b in binds):
        return None
    if isinstance(stmt, Select) and any(
        c.type.result_processor(dialect, None) for c in stmt.selected_columns
    ):
        return None
    return _Plan(compiled, compiled.string, names)


def _on_driver(conn: Connection, plan: _Plan, params: Iterable[Params], *, many: bool) -> Rows:
    """The statement on the driver's connection under `conn` (in the transaction SQLAlchemy
    began, or the driver at the first write: the store's to commit)."""
    driver = conn.connection.dbapi_connection
    assert driver is not None
    rows: list[Any] = [plan.values(p) for p in params]
    dbapi = conn.dialect.loaded_dbapi
    try:
        cursor: Any = driver.cursor()
        if many:
            cursor.executemany(plan.sql, rows)
        else:
            cursor.execute(plan.sql, rows[0])
        return cast(Rows, cursor)
    except dbapi.IntegrityError as exc:
        raise IntegrityError(plan.sql, rows, exc) from None
    except dbapi.Error as exc:
        dropped = conn.dialect.is_disconnect(exc, driver, None)
        if dropped:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            plan.sql, rows, exc, dbapi.Error, connection_invalidated=dropped
        ) from None
