"""The alembic migrations rendered from the spec make exactly the schema the store expects."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text

from specstack_runtime import migrate
from specstack_runtime.store import Store, build_metadata, engine_url
from tests.db.spec_tables import DATABASES, INFO, tables


def _not_version_table(name: str | None, type_: str, _parent: Any) -> bool:
    return not (type_ == "table" and (name or "").startswith("alembic_version_"))


def expected_metadata() -> MetaData:
    """Every database's tables in one MetaData (their names are unique across the spec)."""
    combined = MetaData()
    for database in DATABASES:
        for table in build_metadata(tables(database)).tables.values():
            assert table.name not in combined.tables, f"{table.name} is in two databases"
            table.to_metadata(combined)
    return combined


def test_every_database_of_the_spec_has_migrations() -> None:
    assert sorted(migrate.databases()) == DATABASES
    for database in DATABASES:
        _, names = migrate.databases()[database]
        assert list(names) == [t["name"] for t in INFO.components[database]["tables"]]


def test_migrations_create_the_schema_the_store_expects(db_url: str) -> None:
    for database in DATABASES:
        assert migrate.current(db_url, database) is None
        migrate.upgrade(db_url, database)
        module = migrate.databases()[database][0]
        head = migrate.head(database)
        assert head is not None and head.startswith(f"{module}_0001_")
        assert migrate.current(db_url, database) == head
    migrate.upgrade(db_url, DATABASES[0])  # already at head: nothing happens
    engine = create_engine(engine_url(db_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": _not_version_table}
            )
            assert compare_metadata(context, expected_metadata()) == []
            # compare_metadata does not look at index uniqueness or column order; check those.
            inspector = inspect(conn)
            for database in DATABASES:
                for table in build_metadata(tables(database)).tables.values():
                    columns = [c["name"] for c in inspector.get_columns(table.name)]
                    assert columns == [c.name for c in table.columns]
                    indexes = {
                        i["name"]: i["column_names"] for i in inspector.get_indexes(table.name)
                    }
                    assert indexes == {i.name: [c.name for c in i.columns] for i in table.indexes}
                    assert inspector.get_pk_constraint(table.name)["constrained_columns"] == ["id"]
    finally:
        engine.dispose()


def test_store_create_schema_uses_the_migrations_on_servers(db_url: str) -> None:
    store = Store(db_url, tables("glance-db"))
    try:
        store.create_schema()
        store.create_schema()  # idempotent
        asyncio.run(store.create("images", {"id": "i1", "name": "cirros"}))
        expected = None if store.sqlite else migrate.head("glance-db")
        assert migrate.current(db_url, "glance-db") == expected
    finally:
        store.close()


def test_unknown_database_and_ambiguous_tables_are_clear_errors() -> None:
    with pytest.raises(migrate.MigrationError, match="no migrations for database 'x-db'"):
        migrate.upgrade("sqlite://", "x-db")
    with pytest.raises(migrate.MigrationError, match="no single database"):
        migrate.database_for_tables(["images", "instances"])
    assert migrate.database_for_tables([t.name for t in tables("nova-db")]) == "nova-db"


def test_upgrade_store_finds_the_database_by_its_tables(db_url: str) -> None:
    migrate.upgrade_store(db_url, tables("neutron-db"))
    assert migrate.current(db_url, "neutron-db") == migrate.head("neutron-db")
    assert migrate.current(db_url, "nova-db") is None


def test_a_database_from_another_spec_is_refused_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version_glance_db (version_num VARCHAR(32))"))
        conn.execute(text("INSERT INTO alembic_version_glance_db VALUES ('glance_db_0001_0ld')"))
    engine.dispose()
    with pytest.raises(
        migrate.MigrationError, match=r"glance-db .* 'glance_db_0001_0ld'.*another spec"
    ):
        migrate.upgrade(url, "glance-db")


def test_processes_migrating_at_once_all_succeed(server_url: str) -> None:
    """Processes of a distributed stack may start together: one migrates, the rest wait."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def process() -> None:
        barrier.wait()
        try:
            migrate.upgrade(server_url, "nova-db")
        except BaseException as exc:
            errors.append(exc)

    # daemon threads with a bound: without the lock, migrations can block each other for good
    threads = [threading.Thread(target=process, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "migrations blocked each other"
    assert errors == []
    assert migrate.current(server_url, "nova-db") == migrate.head("nova-db")
