"""Run the alembic migrations rendered from the spec (generated/migrations/), in process.

    upgrade("postgresql://postgres@127.0.0.1/nova", "nova-db")

No alembic.ini or env.py is involved: the script directory of each database is
found in the generated package and its revisions run on one connection. Each
database keeps its version in its own table (`alembic_version_<module>`), so
several projects may even share one physical database.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from specstack_runtime.database import TableSpec, engine_url


class MigrationError(RuntimeError):
    """The migrations of a database could not be found or run."""


def databases(package: str = "generated") -> dict[str, tuple[str, tuple[str, ...]]]:
    """database component -> (script directory name, tables), as rendered from the spec."""
    try:
        module = importlib.import_module(f"{package}.migrations")
    except ModuleNotFoundError as exc:
        raise MigrationError(
            f"{package}.migrations is missing: run `specstack generate` ({exc})"
        ) from None
    found: dict[str, tuple[str, tuple[str, ...]]] = module.DATABASES
    return found


def database_for_tables(tables: Iterable[str], package: str = "generated") -> str:
    """The database component whose migrations create exactly these tables."""
    wanted = set(tables)
    matches = [name for name, (_, t) in databases(package).items() if set(t) == wanted]
    if len(matches) != 1:
        raise MigrationError(
            f"no single database in {package}.migrations has the tables {sorted(wanted)}; "
            "pass the database name"
        )
    return matches[0]


def script_directory(database: str, package: str = "generated") -> ScriptDirectory:
    return _scripts(database, package)[1]


def _scripts(database: str, package: str) -> tuple[Config, ScriptDirectory]:
    known = databases(package)
    if database not in known:
        raise MigrationError(
            f"no migrations for database {database!r}; the spec declares {sorted(known)}"
        )
    pkg = importlib.import_module(package)
    path = Path(pkg.__file__ or "").parent / "migrations" / known[database][0]
    config = Config()
    config.set_main_option("script_location", str(path))
    return config, ScriptDirectory.from_config(config)


def version_table(database: str, package: str = "generated") -> str:
    return f"alembic_version_{databases(package)[database][0]}"


def upgrade(
    url: str | Engine, database: str, *, revision: str = "heads", package: str = "generated"
) -> None:
    """Bring `database` at `url` up to `revision` (default: the newest), in one transaction
    where the backend has transactional DDL (PostgreSQL, SQLite)."""
    config, script = _scripts(database, package)
    table = version_table(database, package)

    def steps(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs(revision, rev)

    engine = url if isinstance(url, Engine) else create_engine(engine_url(url))
    try:
        with (
            engine.connect() as connection,
            _migration_lock(connection, table),
            EnvironmentContext(config, script, fn=steps, destination_rev=revision) as env,
        ):
            env.configure(connection=connection, version_table=table)
            try:
                with env.begin_transaction():
                    env.run_migrations()
            except (RevisionError, CommandError) as exc:
                at = MigrationContext.configure(
                    connection, opts={"version_table": table}
                ).get_current_revision()
                raise MigrationError(
                    f"database {database} at {_redact(url)} is at revision {at!r}, which the "
                    f"migrations of this spec do not know (newest: {script.get_current_head()!r}): "
                    "it was made from another spec; recreate it, or keep that spec"
                ) from exc
            connection.commit()
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


@contextmanager
def _migration_lock(connection: Connection, name: str) -> Iterator[None]:
    """One migrator at a time per database: processes that start together wait their turn
    (and then find the schema at its head) instead of racing to create the same tables."""
    backend = connection.dialect.name
    if backend == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            connection.commit()
    elif backend in ("mysql", "mariadb"):
        lock = f"specstack:{name}"
        got = connection.execute(text("SELECT GET_LOCK(:n, 300)"), {"n": lock}).scalar()
        connection.commit()
        if got != 1:
            raise MigrationError(f"timed out waiting for another migration of {name}")
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
            connection.commit()
    else:
        yield  # SQLite: its own write lock serialises the migrations


def upgrade_store(url: str, tables: Iterable[TableSpec], *, package: str = "generated") -> None:
    """Upgrade the database whose migrations create exactly `tables` (as a Store lists them)."""
    upgrade(url, database_for_tables((t.name for t in tables), package), package=package)


def head(database: str, package: str = "generated") -> str | None:
    """The newest revision of `database`'s migrations."""
    return script_directory(database, package).get_current_head()


def current(url: str | Engine, database: str, *, package: str = "generated") -> str | None:
    """The revision `database` at `url` is at (None before its first migration)."""
    table = version_table(database, package)
    engine = url if isinstance(url, Engine) else create_engine(engine_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": table})
            return context.get_current_revision()
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def ensure_database(url: str) -> bool:
    """Create the database a PostgreSQL or MariaDB URL names, if it is missing.

    Returns True when it was created. SQLite files are created on first use anyway.
    """
    u = make_url(engine_url(url))
    name = u.database
    backend = u.get_backend_name()
    if backend == "sqlite" or not name:
        return False
    if backend == "postgresql":
        admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                exists = conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
                if exists:
                    return False
                conn.execute(text(f'CREATE DATABASE "{_identifier(name)}"'))
                return True
        finally:
            admin.dispose()
    if backend in ("mysql", "mariadb"):
        admin = create_engine(u.set(database=""))
        try:
            with admin.connect() as conn:
                exists = conn.execute(
                    text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :n"),
                    {"n": name},
                ).first()
                if exists:
                    return False
                collate = (
                    "utf8mb4_nopad_bin"
                    if getattr(conn.dialect, "is_mariadb", False)
                    else "utf8mb4_0900_bin"
                )
                conn.execute(
                    text(
                        f"CREATE DATABASE `{_identifier(name)}` "
                        f"CHARACTER SET utf8mb4 COLLATE {collate}"
                    )
                )
                return True
        finally:
            admin.dispose()
    raise MigrationError(f"cannot create databases on {backend}")


def drop_database(url: str) -> None:
    """Drop the database a PostgreSQL or MariaDB URL names (tests clean up with this)."""
    u = make_url(engine_url(url))
    name = u.database
    backend = u.get_backend_name()
    if backend == "postgresql" and name:
        admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{_identifier(name)}" WITH (FORCE)'))
        finally:
            admin.dispose()
    elif backend in ("mysql", "mariadb") and name:
        admin = create_engine(u.set(database=""))
        try:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{_identifier(name)}`"))
        finally:
            admin.dispose()


def _redact(url: str | Engine) -> str:
    if isinstance(url, Engine):
        return url.url.render_as_string(hide_password=True)
    return make_url(url).render_as_string(hide_password=True)


def _identifier(name: str) -> str:
    """Database names go into DDL unquoted by the driver: allow only plain ones."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise MigrationError(f"database name {name!r}: use letters, digits, '_' and '-'")
    return name
