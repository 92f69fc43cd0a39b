"""What the store and the migrations both use: a table's spec, the SQLAlchemy URL
with the database drivers this project installs, and the engine of a URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool


@dataclass(frozen=True)
class TableSpec:
    name: str
    indexes: tuple[str, ...] = ()


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
