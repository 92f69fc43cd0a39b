"""What the store and the migrations both use: a table's spec and its columns, the
SQLAlchemy URL with the database drivers this project installs, and the engine of a URL."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
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
    create_engine,
    event,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from specstack_runtime.errors import BadRequest
from specstack_runtime.ir import index_name

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEADLOCK_RETRIES = 5

# MariaDB's TEXT stops at 64 KiB; documents may be larger (the migrations agree).
DOC_TYPE = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# Column sizes (the migrations agree): a longer value, or one with NUL (no backend stores
# it in text; PostgreSQL refuses it), is bad input, refused the same way on every backend.
ID_SIZE = 64
INDEX_SIZE = 255


@dataclass(frozen=True)
class TableSpec:
    name: str
    indexes: tuple[str, ...] = ()
    #: indexes over several of `indexes`' columns, in order
    compound: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> TableSpec:
        """From a database component's table as the generated stack info holds it."""
        compound = tuple(tuple(c) for c in table.get("compound", ()))
        return cls(table["name"], tuple(table["indexes"]), compound)


def build_metadata(tables: Iterable[TableSpec]) -> MetaData:
    md = MetaData()
    for spec in tables:
        cols: list[Column[Any]] = [
            Column("id", String(ID_SIZE), primary_key=True),
            Column("created_at", String(32), nullable=False, index=True),
            Column("updated_at", String(32), nullable=False),
        ]
        cols += [Column(ix, String(INDEX_SIZE), nullable=True) for ix in spec.indexes]
        cols.append(Column("data", DOC_TYPE, nullable=False))
        table = Table(spec.name, md, *cols)
        for ix in spec.indexes:
            Index(index_name(spec.name, (ix,)), table.c[ix])
        for columns in spec.compound:
            Index(index_name(spec.name, columns), *(table.c[c] for c in columns))
    return md


def create_tables(md: MetaData, target: Engine | Connection) -> None:
    """SQLite: the tables of `md`, and every index of theirs the file lacks (one the spec
    declared since an embedded data directory was made: `create_all` leaves a table it
    finds as it is)."""
    md.create_all(target)
    for table in md.tables.values():
        for index in table.indexes:
            index.create(target, checkfirst=True)


@lru_cache(maxsize=512)
def _sized(indexes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """A table's string columns and their sizes (made once per table)."""
    return (("id", ID_SIZE), *((ix, INDEX_SIZE) for ix in indexes))


def check_columns(row: Mapping[str, Any], indexes: Iterable[str]) -> None:
    """400 for a column value that no backend would store as given (see ID_SIZE)."""
    for column, size in _sized(tuple(indexes)):
        value = row.get(column)
        if value is None:
            continue
        if len(value) > size:
            raise BadRequest(
                f"Invalid input for field/attribute {column}: it is longer than {size} characters."
            )
        if "\x00" in value:
            raise BadRequest(
                f"Invalid input for field/attribute {column}: it contains a NUL character."
            )


def engine_url(url: str) -> str:
    """The URL with the driver this project installs, when the URL names none.

    postgresql:// -> postgresql+psycopg:// (psycopg 3); mysql:// and mariadb:// ->
    +pymysql with utf8mb4. Explicit drivers are kept.
    """
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername in ("mysql", "mariadb"):
        u = u.set(drivername=f"{u.drivername}+pymysql")
    if u.get_backend_name() in ("mysql", "mariadb") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u.render_as_string(hide_password=False)


def is_deadlock(exc: DBAPIError) -> bool:
    """PostgreSQL deadlock/serialization failure, or MariaDB deadlock/lock wait timeout."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in ("40P01", "40001"):
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in (1213, 1205)


def make_engine(url: str) -> Engine:
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
    # No pool_pre_ping (a round trip per checkout): `run_on_server` replaces a connection
    # found dead at its first use instead.
    pooled: dict[str, Any] = {"pool_recycle": 3600}
    if make_url(full).get_backend_name() in ("mysql", "mariadb"):
        # InnoDB's default (REPEATABLE READ) takes gap locks; READ COMMITTED matches
        # PostgreSQL's default and keeps concurrent inserts from deadlocking.
        pooled["isolation_level"] = "READ COMMITTED"
    return create_engine(full, **pooled)


def autocommit(engine: Engine) -> Engine | None:
    """PostgreSQL: the engine's pool with each statement its own transaction (no BEGIN, no
    COMMIT; psycopg switches without a round trip). None elsewhere: PyMySQL sends no BEGIN
    but would send SET autocommit twice per checkout."""
    if engine.dialect.name != "postgresql":
        return None
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def run_on_server(engine: Engine, work: Callable[[Connection], T], *, read: bool = False) -> T:
    """`work` on a pooled connection of a PostgreSQL or MariaDB server, in one transaction
    that commits on success (after a deadlock, run again).

    `read`: work that only reads (no locks, no server-side cursor) on `autocommit(engine)`:
    under READ COMMITTED each statement sees its own snapshot inside a transaction too,
    so it reads the same without BEGIN and COMMIT, two round trips of three for one SELECT.

    A pooled connection the server closed (it restarted) fails at its first use: the
    pool is then refreshed and the work run again, unless it failed committing (whether
    that committed is unknown). Before that failure nothing was committed, as nothing is
    when a transaction's connection dies.
    """
    replaced = False
    for attempt in range(1, DEADLOCK_RETRIES + 1):
        committing = False
        try:
            with engine.connect() as conn:
                if read:
                    return work(conn)
                with conn.begin():
                    result = work(conn)
                    committing = True
                return result
        except DBAPIError as exc:
            if exc.connection_invalidated and not committing and not replaced:
                replaced = True
                logger.info("a connection to %s was closed; retrying on a new one", engine.url)
                continue
            if attempt == DEADLOCK_RETRIES or not is_deadlock(exc):
                raise
            logger.info("deadlock in %s (attempt %d); retrying", engine.url, attempt)
    raise AssertionError("unreachable")
