"""What the store and the migrations both use: a table's spec and its columns, the
SQLAlchemy URL with the database drivers this project installs, and the engine of a URL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Engine, Index, MetaData, String, Table, Text, create_engine, event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from specstack_runtime.errors import BadRequest

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
            Index(f"ix_{spec.name}_{ix}", table.c[ix])
    return md


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
    pooled: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 3600}
    if make_url(full).get_backend_name() in ("mysql", "mariadb"):
        # InnoDB's default (REPEATABLE READ) takes gap locks; READ COMMITTED matches
        # PostgreSQL's default and keeps concurrent inserts from deadlocking.
        pooled["isolation_level"] = "READ COMMITTED"
    return create_engine(full, **pooled)
