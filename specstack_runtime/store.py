"""Resource persistence with SQLAlchemy 2: one database per project, one table per resource.

Each resource row keeps its whole document as JSON text, and copies the fields the spec
lists as indexes into real, indexed columns so that OpenStack's list filters stay
cheap. The backend is chosen by SQLAlchemy URL:

- SQLite (the embedded default): WAL, normal sync, one connection, schema by create_all;
  an embedded stack's store is its file's only writer, so what it remembers of a row (as
  it last wrote or read it) is the row, and a read by id of it makes no statement;
- PostgreSQL (``postgresql://``, driven by psycopg 3) and MariaDB (``mysql://`` or
  ``mariadb://``, driven by PyMySQL): a connection pool, schema by the alembic
  migrations rendered from the spec (generated/migrations), row locks for
  compare-and-set, deadlocks retried, and PostgreSQL reads in autocommit
  (`database.run_on_server`).

Only portable SQL is used: text columns with explicit lengths (MariaDB indexes need
them), JSON as text (no JSON column types), timestamps as ISO 8601 strings (no
datetime precision differences), ids chosen by the behaviours (no autoincrement).
Every statement is built and compiled by SQLAlchemy Core; on SQLite and PostgreSQL the
driver runs it (driverdirect.py, the one speed path). Store methods are coroutines; a server database's
work runs on the store's worker threads, so the event loop serves on meanwhile. Filters
on indexed fields, ordering, the page marker and the page limit are SQL; an UPDATE sets
only the columns that change.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, and_, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError

from specstack_runtime import jsoncodec
from specstack_runtime.database import (
    TableSpec,
    autocommit,
    build_metadata,
    check_columns,
    create_tables,
    engine_url,
    make_engine,
    run_on_server,
)
from specstack_runtime.driverdirect import DriverDirect, Rows
from specstack_runtime.driverdirect import first_value as _value
from specstack_runtime.errors import Conflict, NotFound
from specstack_runtime.storequery import (
    AtLeast,
    Not,
    as_number,
    column_value,
    matches_value,
    order_expr,
    params_of,
    restrict,
    shape_of,
    sortable,
)

__all__ = [
    "AtLeast",
    "Doc",
    "Not",
    "Store",
    "TableSpec",
    "build_metadata",
    "engine_url",
    "sortable",
    "utcnow",
]

logger = logging.getLogger(__name__)

Doc = dict[str, Any]
T = TypeVar("T")
BASE_COLUMNS = ("id", "created_at", "updated_at")
# PostgreSQL/MariaDB: worker threads of a store, one per connection of SQLAlchemy's
# default pool (5, and 10 more on demand).
SERVER_WORKERS = 15
# Rows read at a time when documents are matched in Python (non-indexed filters).
PAGE_ROWS = 200
# Ids per statement of the batch reads (well under every backend's parameter limit).
BATCH_ROWS = 500
# Documents a store remembers as it last read or wrote them (see Store._guess).
KNOWN_ROWS = 1024


def utcnow() -> str:
    """OpenStack's timestamp format: ISO 8601, seconds, with a Z."""
    return _utc_at(int(time.time()))


@lru_cache(maxsize=4)
def _utc_at(second: int) -> str:
    # formatted once a second: a boot's writes stamp a dozen rows within one
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


class Store:
    """The database of one project (a server's work on worker threads: a slow query
    stalls the coroutine that waits for it, not the process)."""

    def __init__(
        self,
        url: str,
        tables: Sequence[TableSpec],
        *,
        database: str | None = None,
        package: str = "generated",
        sole_writer: bool = False,
    ) -> None:
        self.url = url
        self.specs = {t.name: t for t in tables}
        self.metadata = build_metadata(tables)
        self.engine: Engine = make_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self._reader = None if self.sqlite else autocommit(self.engine)
        # The database component (e.g. "nova-db") whose migrations create the schema.
        self.database = database
        self.package = package
        # Statements built once per table and kind; SQLAlchemy caches their compiled form.
        self._stmts: dict[tuple[Any, ...], Any] = {}
        # SQLite: one connection, used by one worker thread, so the store's transactions
        # run one after another (SQLite has one writer at a time anyway). Elsewhere: a
        # worker per pooled connection, each transaction on a connection of its own.
        self._conn: Connection | None = self.engine.connect() if self.sqlite else None
        direct = self.sqlite or self.engine.dialect.name == "postgresql"
        self._direct = DriverDirect() if direct else None  # see driverdirect.py
        workers = 1 if self.sqlite else SERVER_WORKERS
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"store-{database or ''}")
        # (table, id) -> the stored text of the document as this store last read or wrote
        # it ("" when an exact store read no row): only ever a guess that an update compares-and-sets against (one UPDATE and
        # no read when right; when another writer came between, the read it would have made)
        self._known: dict[tuple[str, str], str] = {}
        self._known_lock = threading.Lock()
        # An SQLite file no other store or process writes (an embedded stack's, whose
        # components share one store per database): what it remembers is what is stored, so
        # a read by id of a row it remembers is answered without a statement.
        self.exact = sole_writer and self.sqlite

    def _remember(self, table: str, id_: str, data: str | None) -> None:
        key = (table, id_)
        with self._known_lock:  # (worker threads of a server database write it too)
            self._known.pop(key, None)
            if data is not None:
                self._known[key] = data
                if len(self._known) > KNOWN_ROWS:
                    del self._known[next(iter(self._known))]

    def _guess(self, table: str, id_: str) -> tuple[Doc, str] | None:
        """The document as this store last saw it, and its stored text, if remembered."""
        data = self._known.get((table, id_))
        return (jsoncodec.loads(data), data) if data else None

    async def _call(self, work: Callable[[Connection], T], *, read: bool = False) -> T:
        """`work` in one transaction on a worker thread (see `_transaction`); `read`: work
        that only reads, without locks (a server runs its statements in autocommit)."""
        if self._conn is not None:
            # SQLite is a file in this process: a statement takes microseconds, a hand-off to
            # a thread twenty times that (a boot makes ~40); only server databases, whose
            # round trips and lock waits would stall every request, go to the workers
            return self._transaction(work)
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, ctx.run, self._transaction, work, read)

    def _transaction(self, work: Callable[[Connection], T], read: bool = False) -> T:
        """Run `work` in one transaction that commits on success and rolls back on error;
        on PostgreSQL/MariaDB, see `run_on_server`."""
        conn = self._conn
        if conn is not None:
            driver = conn.connection.dbapi_connection
            assert driver is not None
            try:
                result = work(conn)
                # the driver begins a transaction at the first write only: work that only
                # read has nothing to commit (SQLAlchemy's transaction stays open, empty);
                # SQLAlchemy commits what it began, the driver what ran on it directly
                if driver.in_transaction:
                    (conn.commit if conn.in_transaction() else driver.commit)()
            except BaseException:
                if self.exact:  # what it remembered of the work may not be stored
                    with self._known_lock:
                        self._known.clear()
                conn.rollback()
                driver.rollback()
                raise
            return result
        if read and self._reader is not None:
            return run_on_server(self._reader, work, read=True)
        return run_on_server(self.engine, work)

    def _run(self, conn: Connection, stmt: Any, params: Any = None) -> Rows:
        if self._direct is not None:
            return self._direct.run(conn, stmt, params)
        return conn.execute(stmt, params)

    def _stmt(self, table: str, kind: str) -> Any:
        key = (table, kind)
        stmt = self._stmts.get(key)
        if stmt is None:
            t = self._table(table)
            by_id = t.c.id == bindparam("id_")
            if kind == "get":
                stmt = select(t.c.data).where(by_id)
            elif kind == "get_for_update":  # (the row lock: read-compare-write atomic)
                stmt = self._locked(select(t.c.data).where(by_id))
            elif kind == "insert":
                stmt = t.insert()
            elif kind == "update":
                # The SET clause is the columns the parameters name.
                stmt = t.update().where(by_id)
            elif kind == "update_if":
                # compare-and-set on the whole document as the caller read it
                stmt = t.update().where(by_id, t.c.data == bindparam("was_"))
            elif kind == "delete":
                stmt = t.delete().where(by_id)
            else:
                raise KeyError(kind)
            self._stmts[key] = stmt
        return stmt

    def create_schema(self) -> None:
        """SQLite: create the tables directly (fast; the same schema the migrations make).
        PostgreSQL/MariaDB: create the database if missing and run its migrations."""
        if self.sqlite:
            create_tables(self.metadata, self._conn or self.engine)
            if self._conn is not None:
                self._conn.commit()
            return
        from specstack_runtime import migrate

        database = self.database or migrate.database_for_tables(self.specs, self.package)
        migrate.ensure_database(self.url)
        migrate.upgrade(self.engine, database, package=self.package)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
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
            row[ix] = column_value(doc.get(ix))
        check_columns(row, self.specs[name].indexes)
        row["data"] = jsoncodec.dumps(doc, sort_keys=True).decode()
        return row

    def _changing(self, table: str, old: Doc, new: Doc) -> dict[str, Any]:
        """An UPDATE's columns from `old` to `new`: the document and those that change (one
        set to its own value still rewrites its index: a page more to SQLite's log)."""
        values = self._row(table, new)
        del values["id"]
        for k in (*self.specs[table].indexes, "created_at"):
            if values[k] == column_value(old.get(k)):
                del values[k]
        return values

    def _indexed(self, table: str, keys: Iterable[str]) -> None:
        for key in keys:
            if key != "id" and key not in self.specs[table].indexes:
                raise KeyError(f"{table}.{key} is not indexed")

    async def create(self, table: str, doc: Doc) -> Doc:
        """Insert `doc` (which must carry an `id`); stamps created_at/updated_at if absent."""
        doc = dict(doc)
        now = utcnow()
        doc.setdefault("created_at", now)
        doc.setdefault("updated_at", doc["created_at"])
        row = self._row(table, doc)
        insert = self._stmt(table, "insert")
        try:
            # The primary key decides: concurrent creates of one id leave exactly one row.
            await self._call(lambda conn: self._run(conn, insert, row))
        except IntegrityError:
            raise Conflict(f"{table} {doc['id']} already exists") from None
        self._remember(table, row["id"], row["data"])
        return doc

    async def get(self, table: str, id_: str) -> Doc | None:
        params = {"id_": str(id_)}
        if self.exact and (known := self._known.get((table, params["id_"]))) is not None:
            return jsoncodec.loads(known) if known else None
        stmt = self._stmt(table, "get")
        data = await self._call(lambda conn: _value(self._run(conn, stmt, params)), read=True)
        # an exact store remembers a row's absence too ("", no document's text)
        self._remember(table, params["id_"], "" if data is None and self.exact else data)
        return jsoncodec.loads(data) if data is not None else None

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
        current: Doc | None = None,
    ) -> Doc | None:
        """Apply `changes`; with `expect`, only if those fields still hold those values.

        `current` is the document as the caller read it (unchanged), else the store's
        guess (`_guess`): when the row still is that document, one UPDATE conditioned on
        it writes the change (no read); otherwise the row is read, locked, and compared.
        Returns the new document, or None when the row is gone or `expect` did not hold.
        """
        get = self._stmt(table, "get_for_update")
        update = self._stmt(table, "update")
        key = {"id_": str(id_)}
        guess = self._guess(table, key["id_"]) if current is None else None
        if current is not None:
            guess = (current, jsoncodec.dumps(current, sort_keys=True).decode())

        def changed(doc: Doc) -> Doc | None:
            if expect and any(doc.get(k) != v for k, v in expect.items()):
                return None
            doc = {**doc, **changes}
            if "updated_at" not in changes:
                doc["updated_at"] = utcnow()
            return doc

        def work(conn: Connection) -> Doc | None:
            new = changed(guess[0]) if guess is not None else None
            if new is not None and guess is not None:
                values = self._changing(table, guess[0], new)
                was = {**key, "was_": guess[1]}
                if self._run(conn, self._stmt(table, "update_if"), {**values, **was}).rowcount:
                    self._remember(table, key["id_"], values["data"])
                    return new
            data = _value(self._run(conn, get, key))
            self._remember(table, key["id_"], data)
            if data is None:
                return None
            old = jsoncodec.loads(data)
            new = changed(old)
            if new is None:
                return None
            values = self._changing(table, old, new)
            self._run(conn, update, {**values, **key})
            self._remember(table, key["id_"], values["data"])
            return new

        return await self._call(work)

    async def delete(self, table: str, id_: str) -> bool:
        stmt = self._stmt(table, "delete")
        params = {"id_": str(id_)}
        self._remember(table, params["id_"], None)
        return await self._call(lambda conn: bool(self._run(conn, stmt, params).rowcount))

    async def upsert_many(
        self,
        table: str,
        items: Mapping[str, Doc],
        merge: Callable[[Doc | None, Doc], Doc],
        *,
        likely_new: bool = True,
    ) -> dict[str, Doc]:
        """Write `merge(current or None, item)` for each id of `items`, all in one
        transaction: a locked read per BATCH_ROWS ids, one executemany of the inserts and
        one of the updates, not a round trip per row. One row alone is one statement when
        the store guesses right: an UPDATE conditioned on the row it remembers (`_guess`),
        else, when `likely_new`, an INSERT; when wrong, it is read and written as above.
        (`likely_new=False`: a row another process most often wrote first, such as the
        event of an action its API recorded: the INSERT would fail, and its rollback and
        error cost three round trips.) So `merge` may run more than once for a row: the
        last result is written. The written documents, by id."""
        t = self._table(table)
        read = self._query(
            (table, "upsert_read"),
            lambda: self._locked(
                select(t.c.id, t.c.data).where(t.c.id.in_(bindparam("ids", expanding=True)))
            ),
        )
        insert, update = self._stmt(table, "insert"), self._stmt(table, "update")
        ids = [str(i) for i in items]
        guess = self._guess(table, ids[0]) if len(ids) == 1 else None

        def write(id_: str, old: Doc | None, now: str) -> tuple[Doc, dict[str, Any]]:
            doc = {**merge(old, items[id_]), "id": id_, "updated_at": now}
            doc.setdefault("created_at", now)
            values = self._row(table, doc) if old is None else self._changing(table, old, doc)
            return doc, values

        def work(conn: Connection) -> dict[str, Doc]:
            now = utcnow()
            if guess is not None:
                doc, values = write(ids[0], guess[0], now)
                was = {"id_": ids[0], "was_": guess[1]}
                if self._run(conn, self._stmt(table, "update_if"), {**values, **was}).rowcount:
                    self._remember(table, ids[0], values["data"])
                    return {ids[0]: doc}
            current: dict[str, Doc] = {}
            # an exact store that remembers every row (or its absence) reads none of them
            known = [self._known.get((table, i)) for i in ids] if self.exact else [None]
            if None not in known:
                current.update(
                    (i, jsoncodec.loads(d)) for i, d in zip(ids, known, strict=True) if d
                )
            else:
                for at in range(0, len(ids), BATCH_ROWS):
                    rows = self._run(conn, read, {"ids": ids[at : at + BATCH_ROWS]})
                    current.update((str(i), jsoncodec.loads(d)) for i, d in rows)
            written: dict[str, Doc] = {}
            inserts = []
            # rows grouped by the columns that change
            updates: dict[tuple[str, ...], builtins.list[dict[str, Any]]] = {}
            for id_ in ids:
                old = current.get(id_)
                written[id_], values = write(id_, old, now)
                if old is None:
                    inserts.append(values)
                else:
                    updates.setdefault(tuple(sorted(values)), []).append({**values, "id_": id_})
                self._remember(table, id_, values["data"])
            if inserts:
                self._run(conn, insert, inserts)
            for group in updates.values():
                self._run(conn, update, group)
            return written

        if len(ids) == 1 and guess is None and likely_new:
            doc, values = write(ids[0], None, utcnow())
            try:  # the primary key decides; a row there after all is merged into below
                await self._call(lambda conn: self._run(conn, insert, values))
                self._remember(table, ids[0], values["data"])
                return {ids[0]: doc}
            except IntegrityError:
                pass
        try:
            return await self._call(work)
        except IntegrityError:
            raise Conflict(f"{table}: a row was created meanwhile; try again") from None

    def _locked(self, stmt: Any) -> Any:
        return stmt if self.sqlite else stmt.with_for_update()

    def _query(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """The statement cached under `key`, built once: SQLAlchemy then finds its
        compiled form by the statement's memoized cache key."""
        stmt = self._stmts.get(key)
        if stmt is None:
            stmt = self._stmts[key] = build()
        return stmt

    async def list(
        self,
        table: str,
        where: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
        marker: str | None = None,
        sort_key: str = "created_at",
        reverse: bool = False,
        numeric: bool = False,
        by_index: bool = False,
    ) -> builtins.list[Doc]:
        """Documents matching every `where` field (a list value means "any of"), in order.

        Indexed fields filter in SQL; the rest are matched on the documents as they are
        read. `marker` is the id of the last item of the previous page: the page starts
        after it, in SQL. `limit` is applied in SQL when every filter is indexed, else
        reading stops once `limit` documents matched.
        """
        t = self._table(table)
        indexed = set(self.specs[table].indexes) | {"id"}
        in_sql: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in (where or {}).items():
            (in_sql if key in indexed else rest)[key] = value
        by = t.c.get(sort_key, t.c.created_at)
        shape = shape_of(in_sql)
        params = params_of(in_sql)
        sql_limit = limit is not None and not rest
        if sql_limit:
            params["limit_"] = max(limit or 0, 0)

        # the statements are built once per shape (then cached): the ordering with them
        def build() -> Any:
            order = as_number(by) if numeric else order_expr(by)
            stmt = restrict(select(t.c.data), t, shape)
            if marker is not None:
                at: Any = bindparam("marker_at")
                after: Any = bindparam("marker_id")
                later = order < at if reverse else order > at
                stmt = stmt.where(or_(later, and_(order == at, t.c.id > after)))
            ordering: tuple[Any, ...] = (order.desc() if reverse else order, t.c.id)
            if by_index:
                # the column as it is, ties in no given order: a limited walk of its index
                stmt = stmt.where(by.is_not(None))
                ordering = (by.desc() if reverse else by,)
            stmt = stmt.order_by(*ordering)
            if sql_limit and by_index:
                # the few best of many rows: sort their ids, not their documents
                best = restrict(select(t.c.id), t, shape).order_by(*ordering)
                best = best.limit(bindparam("limit_")).scalar_subquery()
                return select(t.c.data).where(t.c.id.in_(best)).order_by(*ordering)
            return stmt.limit(bindparam("limit_")) if sql_limit else stmt

        paged = marker is not None  # the marker itself is a bound value: one statement
        stmt = self._query(
            (table, "list", shape, by.name, reverse, sql_limit, paged, numeric, by_index), build
        )
        find_marker = self._query(
            (table, "marker", shape, by.name),
            lambda: restrict(select(order_expr(by), t.c.data), t, shape).where(
                t.c.id == bindparam("marker_id")
            ),
        )

        def matches(doc: Doc) -> bool:
            return all(matches_value(doc.get(k), v) for k, v in rest.items())

        def work(conn: Connection) -> builtins.list[Doc]:
            if marker is not None:
                found = self._run(conn, find_marker, {**params, "marker_id": marker}).fetchone()
                if found is None or (rest and not matches(jsoncodec.loads(found[1]))):
                    raise NotFound(f"marker {marker} could not be found.")
                params.update(marker_at=found[0], marker_id=marker)
            if not rest:
                return [jsoncodec.loads(row[0]) for row in self._run(conn, stmt, params)]
            docs: builtins.list[Doc] = []
            if limit is not None and limit <= 0:
                return docs
            rows = conn.execution_options(yield_per=PAGE_ROWS).execute(stmt, params).scalars()
            for data in rows:
                doc = jsoncodec.loads(data)
                if matches(doc):
                    docs.append(doc)
                    if limit is not None and len(docs) >= limit:
                        rows.close()
                        break
            return docs

        # documents matched in Python are streamed (a server-side cursor: a transaction)
        return await self._call(work, read=not rest)

    async def ids(self, table: str, where: Mapping[str, Any]) -> builtins.list[str]:
        """Ids of the rows matching `where` on indexed fields only (no documents decoded)."""
        return [v or "" for v in await self.column(table, "id", where)]

    async def column(
        self, table: str, column: str, where: Mapping[str, Any]
    ) -> builtins.list[str | None]:
        """One indexed field of the rows matching `where` on indexed fields (no JSON decoded)."""
        t = self._table(table)
        self._indexed(table, [column, *where])
        shape = shape_of(where)
        stmt = self._query(
            (table, "column", column, shape), lambda: restrict(select(t.c[column]), t, shape)
        )
        params = params_of(where)
        values = await self._call(
            lambda conn: [row[0] for row in self._run(conn, stmt, params)], read=True
        )
        return [None if v is None else str(v) for v in values]

    async def count(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        where = dict(where or {})
        indexed = set(self.specs[table].indexes) | {"id"}
        if not set(where) <= indexed:
            return len(await self.list(table, where))
        t = self._table(table)
        shape = shape_of(where)
        stmt = self._query(
            (table, "count", shape),
            lambda: restrict(select(func.count()).select_from(t), t, shape),
        )
        params = params_of(where)
        return int(await self._call(lambda conn: _value(self._run(conn, stmt, params)), read=True))
