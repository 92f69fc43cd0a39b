"""Resource persistence with SQLAlchemy 2: one database per project, one table per resource.

Each resource row keeps its whole document as JSON, and copies the fields the spec
lists as indexes into real, indexed columns so that OpenStack's list filters stay
cheap. SQLite (the embedded default) runs with WAL and normal sync; any SQLAlchemy
URL (PostgreSQL, MariaDB) works the same way.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from sqlalchemy.pool import StaticPool

from generator.runtime import jsonfast
from generator.runtime.errors import Conflict, NotFound

Doc = dict[str, Any]
BASE_COLUMNS = ("id", "created_at", "updated_at")


def utcnow() -> str:
    """OpenStack's timestamp format: ISO 8601, seconds, with a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TableSpec:
    name: str
    indexes: tuple[str, ...] = ()


def build_metadata(tables: Iterable[TableSpec]) -> MetaData:
    md = MetaData()
    for spec in tables:
        cols: list[Column[Any]] = [
            Column("id", String(64), primary_key=True),
            Column("created_at", String(32), nullable=False, index=True),
            Column("updated_at", String(32), nullable=False),
        ]
        cols += [Column(ix, String(255), nullable=True) for ix in spec.indexes]
        cols.append(Column("data", Text, nullable=False))
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

    def __init__(self, url: str, tables: Sequence[TableSpec]) -> None:
        self.url = url
        self.specs = {t.name: t for t in tables}
        self.metadata = build_metadata(tables)
        self.engine: Engine = _engine(url)
        # Statements built once per table (building them per call costs more than running them).
        self._stmts: dict[tuple[str, str], Any] = {}
        # SQLite in embedded mode: one event loop, and no store method awaits while it
        # holds a connection, so one connection serves them all (no pool round trip).
        self._conn: Connection | None = None
        if url.startswith("sqlite"):
            self._conn = self.engine.connect()

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

    def _stmt(self, table: str, kind: str) -> Any:
        key = (table, kind)
        stmt = self._stmts.get(key)
        if stmt is None:
            t = self._table(table)
            if kind == "get":
                stmt = select(t.c.data).where(t.c.id == bindparam("id_"))
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
        self.metadata.create_all(self.engine)

    def close(self) -> None:
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
        row["data"] = jsonfast.dumps(doc, sort_keys=True).decode()
        return row

    async def create(self, table: str, doc: Doc) -> Doc:
        """Insert `doc` (which must carry an `id`); stamps created_at/updated_at if absent."""
        doc = dict(doc)
        now = utcnow()
        doc.setdefault("created_at", now)
        doc.setdefault("updated_at", doc["created_at"])
        with self._tx() as conn:
            if conn.execute(self._stmt(table, "exists"), {"id_": str(doc["id"])}).first():
                raise Conflict(f"{table} {doc['id']} already exists")
            conn.execute(self._stmt(table, "insert"), self._row(table, doc))
        return doc

    async def get(self, table: str, id_: str) -> Doc | None:
        with self._tx() as conn:
            row = conn.execute(self._stmt(table, "get"), {"id_": str(id_)}).first()
        return jsonfast.loads(row[0]) if row else None

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
        with self._tx() as conn:
            row = conn.execute(self._stmt(table, "get"), {"id_": str(id_)}).first()
            if row is None:
                return None
            doc: Doc = jsonfast.loads(row[0])
            if expect and any(doc.get(k) != v for k, v in expect.items()):
                return None
            doc.update(changes)
            if "updated_at" not in changes:
                doc["updated_at"] = utcnow()
            values = self._row(table, doc)
            values.pop("id")
            conn.execute(self._stmt(table, "update").values(**values), {"id_": str(id_)})
        return doc

    async def delete(self, table: str, id_: str) -> bool:
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
        where = dict(where or {})
        stmt = select(t.c.id, t.c.data)
        indexed = set(self.specs[table].indexes) | {"id"}
        rest: dict[str, Any] = {}
        for key, value in where.items():
            if key in indexed:
                col = t.c[key]
                if isinstance(value, list | tuple | set):
                    stmt = stmt.where(col.in_([_column_value(v) for v in value]))
                elif value is None:
                    stmt = stmt.where(col.is_(None))
                else:
                    stmt = stmt.where(col == _column_value(value))
            else:
                rest[key] = value
        order_col = t.c.get(sort_key, t.c.created_at)
        stmt = stmt.order_by(order_col.desc() if reverse else order_col, t.c.id)
        with self._tx() as conn:
            rows = conn.execute(stmt).all()
        docs = [jsonfast.loads(data) for _, data in rows]
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
        stmt = select(t.c[column])
        for key, value in where.items():
            if key not in self.specs[table].indexes and key != "id":
                raise KeyError(f"{table}.{key} is not indexed")
            stmt = stmt.where(t.c[key] == _column_value(value))
        with self._tx() as conn:
            return [None if r[0] is None else str(r[0]) for r in conn.execute(stmt)]

    async def count(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        where = dict(where or {})
        indexed = set(self.specs[table].indexes) | {"id"}
        if not set(where) <= indexed:
            return len(await self.list(table, where))
        t = self._table(table)
        stmt = select(func.count()).select_from(t)
        for key, value in where.items():
            col = t.c[key]
            if isinstance(value, list | tuple | set):
                stmt = stmt.where(col.in_([_column_value(v) for v in value]))
            elif value is None:
                stmt = stmt.where(col.is_(None))
            else:
                stmt = stmt.where(col == _column_value(value))
        with self._tx() as conn:
            return int(conn.execute(stmt).scalar_one())


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, list | tuple | set):
        return any(_matches(actual, w) for w in wanted)
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return str(actual).lower() == str(wanted).lower()
    return actual == wanted or (actual is not None and str(actual) == str(wanted))


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
    return create_engine(url, pool_pre_ping=True)
