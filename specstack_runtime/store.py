"""Resource persistence with SQLAlchemy 2: one database per project, one table per resource.

Each resource row keeps its whole document as JSON text, and copies the fields the spec
lists as indexes into real, indexed columns so that OpenStack's list filters stay
cheap. The backend is chosen by SQLAlchemy URL:

- SQLite (the embedded default): WAL, normal sync, one connection, schema by create_all;
- PostgreSQL (``postgresql://``, driven by psycopg 3) and MariaDB (``mysql://`` or
  ``mariadb://``, driven by PyMySQL): a connection pool, schema by the alembic
  migrations rendered from the spec (generated/migrations), row locks for
  compare-and-set, and deadlocks retried.

Only portable SQL is used: text columns with explicit lengths (MariaDB indexes need
them), JSON as text (no JSON column types), timestamps as ISO 8601 strings (no
datetime precision differences), ids chosen by the behaviours (no autoincrement).
Store methods are async for their callers but run their (short) statements inline:
no other coroutine of the process runs while one of them holds a connection.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

from specstack_runtime import jsoncodec
from specstack_runtime.database import TableSpec, engine_url
from specstack_runtime.errors import Conflict, NotFound
from specstack_runtime.sqlitefast import SqliteStatements

logger = logging.getLogger(__name__)

Doc = dict[str, Any]
T = TypeVar("T")
BASE_COLUMNS = ("id", "created_at", "updated_at")
# MariaDB's TEXT stops at 64 KiB; documents may be larger (the migrations agree).
DOC_TYPE = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
DEADLOCK_RETRIES = 5


def utcnow() -> str:
    """OpenStack's timestamp format: ISO 8601, seconds, with a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_metadata(tables: Iterable[TableSpec]) -> MetaData:
    md = MetaData()
    for spec in tables:
        cols: list[Column[Any]] = [
            Column("id", String(64), primary_key=True),
            Column("created_at", String(32), nullable=False, index=True),
            Column("updated_at", String(32), nullable=False),
        ]
        cols += [Column(ix, String(255), nullable=True) for ix in spec.indexes]
        cols.append(Column("data", DOC_TYPE, nullable=False))
        table = Table(spec.name, md, *cols)
        for ix in spec.indexes:
            Index(f"ix_{spec.name}_{ix}", table.c[ix])
    return md


def _column_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Store:
    """The database of one project."""

    def __init__(
        self,
        url: str,
        tables: Sequence[TableSpec],
        *,
        database: str | None = None,
        package: str = "generated",
    ) -> None:
        self.url = url
        self.specs = {t.name: t for t in tables}
        self.metadata = build_metadata(tables)
        self.engine: Engine = _engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"
        # The database component (e.g. "nova-db") whose migrations create the schema.
        self.database = database
        self.package = package
        # Statements built once per table (building them per call costs more than running them).
        self._stmts: dict[tuple[str, str], Any] = {}
        # SQLite in embedded mode: one event loop, and no store method awaits while it
        # holds a connection, so one connection serves them all (no pool round trip).
        self._conn: Connection | None = None
        # ... and its statements go to the driver directly (see sqlitefast).
        self._fast: SqliteStatements | None = None
        if self.sqlite:
            self._conn = self.engine.connect()
            columns = {
                name: [c.name for c in t.columns] for name, t in self.metadata.tables.items()
            }
            raw = self._conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            self._fast = SqliteStatements(raw, columns, _column_value)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        if self._conn is None:
            with self.engine.begin() as conn:
                yield conn
            return
        try:
            yield self._conn
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise

    def _run(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction; on PostgreSQL/MariaDB, retry it after a deadlock."""
        if self._conn is not None:
            with self._tx() as conn:
                return work(conn)
        for attempt in range(1, DEADLOCK_RETRIES + 1):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if attempt == DEADLOCK_RETRIES or not _is_deadlock(exc):
                    raise
                logger.info("deadlock in %s (attempt %d); retrying", self.url, attempt)
        raise AssertionError("unreachable")

    def _stmt(self, table: str, kind: str) -> Any:
        key = (table, kind)
        stmt = self._stmts.get(key)
        if stmt is None:
            t = self._table(table)
            if kind == "get":
                stmt = select(t.c.data).where(t.c.id == bindparam("id_"))
            elif kind == "get_for_update":
                # SQLite has one writer at a time anyway; elsewhere the row lock makes
                # read-compare-write atomic across processes.
                stmt = select(t.c.data).where(t.c.id == bindparam("id_"))
                if not self.sqlite:
                    stmt = stmt.with_for_update()
            elif kind == "exists":
                stmt = select(t.c.id).where(t.c.id == bindparam("id_"))
            elif kind == "insert":
                stmt = t.insert()
            elif kind == "update":
                stmt = t.update().where(t.c.id == bindparam("id_"))
            elif kind == "delete":
                stmt = t.delete().where(t.c.id == bindparam("id_"))
            else:
                raise KeyError(kind)
            self._stmts[key] = stmt
        return stmt

    def create_schema(self) -> None:
        """SQLite: create the tables directly (fast; the same schema the migrations make).
        PostgreSQL/MariaDB: create the database if missing and run its migrations."""
        if self.sqlite:
            self.metadata.create_all(self.engine)
            return
        from specstack_runtime import migrate

        database = self.database or migrate.database_for_tables(self.specs, self.package)
        migrate.ensure_database(self.url)
        migrate.upgrade(self.engine, database, package=self.package)

    def close(self) -> None:
        self._fast = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    def _table(self, name: str) -> Table:
        try:
            return self.metadata.tables[name]
        except KeyError:
            raise KeyError(
                f"no table {name!r} in {self.url}; declared: {sorted(self.specs)}"
            ) from None

    def _row(self, name: str, doc: Doc) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": str(doc["id"]),
            "created_at": doc.get("created_at") or utcnow(),
            "updated_at": doc.get("updated_at") or doc.get("created_at") or utcnow(),
        }
        for ix in self.specs[name].indexes:
            row[ix] = _column_value(doc.get(ix))
        row["data"] = jsoncodec.dumps(doc, sort_keys=True).decode()
        return row

    async def create(self, table: str, doc: Doc) -> Doc:
        """Insert `doc` (which must carry an `id`); stamps created_at/updated_at if absent."""
        doc = dict(doc)
        now = utcnow()
        doc.setdefault("created_at", now)
        doc.setdefault("updated_at", doc["created_at"])
        row = self._row(table, doc)
        if self._fast is not None:
            try:
                self._fast.insert(table, row)
            except sqlite3.IntegrityError:
                raise Conflict(f"{table} {doc['id']} already exists") from None
            return doc
        insert = self._stmt(table, "insert")
        try:
            # The primary key decides: concurrent creates of one id leave exactly one row.
            self._run(lambda conn: conn.execute(insert, row))
        except IntegrityError:
            raise Conflict(f"{table} {doc['id']} already exists") from None
        return doc

    async def get(self, table: str, id_: str) -> Doc | None:
        if self._fast is not None:
            self._table(table)
            data = self._fast.get(table, str(id_))
            return jsoncodec.loads(data) if data is not None else None
        with self._tx() as conn:
            row = conn.execute(self._stmt(table, "get"), {"id_": str(id_)}).first()
        return jsoncodec.loads(row[0]) if row else None

    async def require(self, table: str, id_: str, what: str | None = None) -> Doc:
        doc = await self.get(table, id_)
        if doc is None:
            raise NotFound(f"{what or table} {id_} could not be found.")
        return doc

    async def update(
        self,
        table: str,
        id_: str,
        changes: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> Doc | None:
        """Apply `changes`; with `expect`, only if those fields still hold those values.

        Returns the new document, or None when the row is gone or `expect` did not hold.
        """

        def changed(data: str) -> Doc | None:
            doc: Doc = jsoncodec.loads(data)
            if expect and any(doc.get(k) != v for k, v in expect.items()):
                return None
            doc.update(changes)
            if "updated_at" not in changes:
                doc["updated_at"] = utcnow()
            return doc

        if self._fast is not None:
            self._table(table)
            result: list[Doc] = []

            def values(data: str) -> dict[str, Any] | None:
                doc = changed(data)
                if doc is None:
                    return None
                result.append(doc)
                return self._row(table, doc)

            self._fast.update(table, str(id_), values)
            return result[0] if result else None

        get = self._stmt(table, "get_for_update")
        update = self._stmt(table, "update")

        def work(conn: Connection) -> Doc | None:
            row = conn.execute(get, {"id_": str(id_)}).first()
            if row is None:
                return None
            doc = changed(row[0])
            if doc is None:
                return None
            values = self._row(table, doc)
            values.pop("id")
            conn.execute(update.values(**values), {"id_": str(id_)})
            return doc

        return self._run(work)

    async def delete(self, table: str, id_: str) -> bool:
        if self._fast is not None:
            self._table(table)
            return self._fast.delete(table, str(id_))
        with self._tx() as conn:
            result = conn.execute(self._stmt(table, "delete"), {"id_": str(id_)})
        return bool(result.rowcount)

    async def list(
        self,
        table: str,
        where: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
        marker: str | None = None,
        sort_key: str = "created_at",
        reverse: bool = False,
    ) -> list[Doc]:
        """Documents matching every `where` field (a list value means "any of").

        Indexed fields filter in SQL; the rest are matched on the documents.
        `marker` is the id of the last item of the previous page.
        """
        t = self._table(table)
        indexed = set(self.specs[table].indexes) | {"id"}
        in_sql: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in (where or {}).items():
            (in_sql if key in indexed else rest)[key] = value
        order_col = t.c.get(sort_key, t.c.created_at)
        if self._fast is not None:
            found = self._fast.select_data(table, in_sql, order_col.name, reverse)
        else:
            stmt = _filtered(select(t.c.data), t, in_sql)
            stmt = stmt.order_by(order_col.desc() if reverse else order_col, t.c.id)
            with self._tx() as conn:
                found = [row[0] for row in conn.execute(stmt)]
        docs = [jsoncodec.loads(data) for data in found]
        if rest:
            docs = [d for d in docs if all(_matches(d.get(k), v) for k, v in rest.items())]
        if marker is not None:
            ids = [d.get("id") for d in docs]
            if marker not in ids:
                raise NotFound(f"marker {marker} could not be found.")
            docs = docs[ids.index(marker) + 1 :]
        if limit is not None:
            docs = docs[: max(limit, 0)]
        return docs

    async def ids(self, table: str, where: Mapping[str, Any]) -> builtins.list[str]:
        """Ids of the rows matching `where` on indexed fields only (no documents decoded)."""
        return [v or "" for v in await self.column(table, "id", where)]

    async def column(
        self, table: str, column: str, where: Mapping[str, Any]
    ) -> builtins.list[str | None]:
        """One indexed field of the rows matching `where` on indexed fields (no JSON decoded)."""
        t = self._table(table)
        if column != "id" and column not in self.specs[table].indexes:
            raise KeyError(f"{table}.{column} is not indexed")
        for key in where:
            if key not in self.specs[table].indexes and key != "id":
                raise KeyError(f"{table}.{key} is not indexed")
        if self._fast is not None:
            return [
                None if v is None else str(v)
                for v in self._fast.select_column(table, column, dict(where))
            ]
        stmt = _filtered(select(t.c[column]), t, where)
        with self._tx() as conn:
            return [None if r[0] is None else str(r[0]) for r in conn.execute(stmt)]

    async def count(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        where = dict(where or {})
        indexed = set(self.specs[table].indexes) | {"id"}
        if not set(where) <= indexed:
            return len(await self.list(table, where))
        t = self._table(table)
        if self._fast is not None:
            return self._fast.count(table, where)
        stmt = _filtered(select(func.count()).select_from(t), t, where)
        with self._tx() as conn:
            return int(conn.execute(stmt).scalar_one())


def _filtered(stmt: Any, t: Table, where: Mapping[str, Any]) -> Any:
    """`stmt` restricted to rows whose columns hold `where` (a list value: any of them)."""
    for key, value in where.items():
        col = t.c[key]
        if isinstance(value, list | tuple | set):
            stmt = stmt.where(col.in_([_column_value(v) for v in value]))
        elif value is None:
            stmt = stmt.where(col.is_(None))
        else:
            stmt = stmt.where(col == _column_value(value))
    return stmt


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, list | tuple | set):
        return any(_matches(actual, w) for w in wanted)
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return str(actual).lower() == str(wanted).lower()
    return actual == wanted or (actual is not None and str(actual) == str(wanted))


def _is_deadlock(exc: DBAPIError) -> bool:
    """PostgreSQL deadlock/serialization failure, or MariaDB deadlock/lock wait timeout."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in ("40P01", "40001"):
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in (1213, 1205)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    full = engine_url(url)
    pooled: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 3600}
    if make_url(full).get_backend_name() in ("mysql", "mariadb"):
        # InnoDB's default (REPEATABLE READ) takes gap locks; READ COMMITTED matches
        # PostgreSQL's default and keeps concurrent inserts from deadlocking.
        pooled["isolation_level"] = "READ COMMITTED"
    return create_engine(full, **pooled)
