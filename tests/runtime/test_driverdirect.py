"""The store's speed path (`driverdirect.py`): the driver (sqlite3, psycopg) runs exactly the
statements SQLAlchemy would have run, with the same answers, errors and transactions."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from specstack_runtime import driverdirect
from specstack_runtime.errors import Conflict
from specstack_runtime.store import Not, Store, TableSpec

TABLES = [TableSpec("things", ("project_id", "name", "state"))]
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _store(path: Path) -> Store:
    store = Store(f"sqlite:///{path}", TABLES, sole_writer=True)
    store.create_schema()
    return store


def _driver_trace(store: Store) -> list[str]:
    """Every statement SQLite itself runs on the store's connection, BEGIN and COMMIT too,
    values written in (timestamps as T)."""
    seen: list[str] = []
    assert store._conn is not None
    driver = store._conn.connection.dbapi_connection
    driver.set_trace_callback(lambda sql: seen.append(_STAMP.sub("T", " ".join(sql.split()))))  # type: ignore[union-attr]
    return seen


async def _workload(store: Store) -> list[Any]:
    """Every kind of store call, and what each answered."""
    out: list[Any] = []
    for i in range(5):
        doc = {"id": f"t{i}", "project_id": "p", "name": f"n{i}", "state": "on" if i % 2 else "off"}
        out.append(
            await store.create("things", {**doc, "created_at": f"2026-01-0{i + 1}T00:00:00Z"})
        )
    with pytest.raises(Conflict):
        await store.create("things", {"id": "t1"})
    out.append(await store.get("things", "t3"))
    out.append(await store.get("things", "absent"))
    out.append(await store.update("things", "t2", {"state": "on"}))
    out.append(await store.update("things", "t2", {"state": "x"}, expect={"state": "off"}))
    out.append(await store.list("things", {"state": "on"}, limit=2, marker="t1"))
    out.append(await store.list("things", {"state": ["on", "off"]}))  # an IN list: SQLAlchemy's
    out.append(await store.list("things", {"n": None}))  # a field not indexed: matched in Python
    out.append(await store.count("things", {"state": Not("on")}))
    out.append(await store.column("things", "name", {"project_id": "p"}))
    merged = await store.upsert_many(
        "things",
        {"t0": {"state": "gone"}, "t9": {"state": "new"}},
        lambda old, new: {**(old or {}), **new},
    )
    out.append(merged)
    out.append(await store.delete("things", "t4"))
    out.append(await store.list("things"))
    return [_STAMP.sub("T", repr(x)) for x in out]


@pytest.fixture
def direct_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first word of each statement the driver ran directly (the rest ran through
    SQLAlchemy), in order."""
    calls: list[str] = []
    on_driver = driverdirect._on_driver

    def counted(conn: Any, plan: Any, params: Any, *, many: bool) -> Any:
        calls.append(plan.sql.split()[0])
        return on_driver(conn, plan, params, many=many)

    monkeypatch.setattr(driverdirect, "_on_driver", counted)
    return calls


def test_the_driver_runs_the_statements_sqlalchemy_would_with_the_same_answers(
    tmp_path: Path, direct_calls: list[str]
) -> None:

    fast = _store(tmp_path / "fast.sqlite")
    fast_sql = _driver_trace(fast)
    fast_answers = asyncio.run(_workload(fast))

    slow = _store(tmp_path / "slow.sqlite")
    through_sqlalchemy: list[str] = []
    event.listen(
        slow.engine, "before_cursor_execute", lambda *a: through_sqlalchemy.append(a[2].split()[0])
    )
    slow_sql = _driver_trace(slow)
    slow_answers = asyncio.run(_workload(slow))
    try:
        assert fast_answers == slow_answers
        assert fast_sql == slow_sql  # the same statements, values, transactions, in order
        # the direct path ran all but the IN lists and the streamed read (SQLAlchemy's)
        assert len(direct_calls) == len(through_sqlalchemy) - 3
        assert set(direct_calls) == {"INSERT", "SELECT", "UPDATE", "DELETE"}
        assert any(" IN (" in sql for sql in fast_sql)
    finally:
        fast.close()
        slow.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = _store(tmp_path / "db.sqlite")
    yield s
    s.close()


def test_a_key_taken_is_sqlalchemys_integrity_error_and_the_connection_goes_on(
    store: Store,
) -> None:
    asyncio.run(store.create("things", {"id": "a", "name": "one"}))
    t = store.metadata.tables["things"]
    assert store._conn is not None and store._direct is not None
    row = {"id": "a", "created_at": "x", "updated_at": "x", "data": "{}"}
    with pytest.raises(IntegrityError) as raised:
        store._transaction(lambda conn: store._direct.run(conn, t.insert(), row))  # type: ignore[union-attr]
    assert "UNIQUE constraint failed: things.id" in str(raised.value.orig)
    assert asyncio.run(store.get("things", "a"))["name"] == "one"  # type: ignore[index]
    asyncio.run(store.create("things", {"id": "b"}))
    assert asyncio.run(store.count("things")) == 2


def test_a_failed_transaction_takes_back_what_ran_on_the_driver(store: Store) -> None:
    t = store.metadata.tables["things"]
    row = {"id": "a", "created_at": "x", "updated_at": "x", "data": "{}"}

    def insert_then_fail(conn: Any) -> None:
        store._direct.run(conn, t.insert(), row)  # type: ignore[union-attr]
        assert store._direct.run(conn, select(t.c.id), None).fetchone() == ("a",)  # type: ignore[union-attr]
        raise RuntimeError("after the write")

    with pytest.raises(RuntimeError):
        store._transaction(insert_then_fail)
    assert asyncio.run(store.count("things")) == 0
    assert asyncio.run(store.get("things", "a")) is None


def test_a_driver_error_is_sqlalchemys_dbapi_error(store: Store) -> None:
    assert store._direct is not None
    gone = store.metadata.tables["things"]
    store._transaction(lambda conn: conn.execute(text("DROP TABLE things")))
    with pytest.raises(DBAPIError, match="no such table: things"):
        store._transaction(lambda conn: store._direct.run(conn, select(gone.c.id), None))  # type: ignore[union-attr]


@pytest.fixture
def pg_urls() -> Iterator[tuple[str, str]]:
    """Two new, empty databases on the PostgreSQL server (dropped after)."""
    from specstack_runtime import migrate
    from tests.db.conftest import server_database

    urls = (server_database("postgresql"), server_database("postgresql"))
    try:
        yield urls
    finally:
        for url in urls:
            migrate.drop_database(url)


def _server_store(url: str) -> Store:
    store = Store(url, TABLES, database=None)
    store.metadata.create_all(store.engine)  # no migration is for a test's table
    return store


def test_on_postgresql_the_driver_gives_the_answers_sqlalchemy_would(
    pg_urls: tuple[str, str], direct_calls: list[str]
) -> None:
    fast, slow = (_server_store(url) for url in pg_urls)
    through_sqlalchemy: list[str] = []
    event.listen(
        slow.engine, "before_cursor_execute", lambda *a: through_sqlalchemy.append(a[2].split()[0])
    )
    try:
        assert asyncio.run(_workload(fast)) == asyncio.run(_workload(slow))
        # the writes and reads by id and by indexed field ran on psycopg; SQLAlchemy's own
        # (the IN lists, the streamed read) and the test's schema are not counted there
        assert {"INSERT", "SELECT", "UPDATE", "DELETE"} == set(direct_calls)
        assert len(direct_calls) >= len(through_sqlalchemy) - 6
        t = fast.metadata.tables["things"]
        row = {"id": "t0", "created_at": "x", "updated_at": "x", "data": "{}"}
        with pytest.raises(IntegrityError) as raised:
            fast._transaction(lambda conn: fast._direct.run(conn, t.insert(), row))  # type: ignore[union-attr]
        assert raised.value.orig is not None and raised.value.orig.sqlstate == "23505"  # type: ignore[attr-defined]
        assert asyncio.run(fast.count("things")) == asyncio.run(slow.count("things"))
    finally:
        fast.close()
        slow.close()


def test_on_postgresql_a_dropped_connection_is_invalidated_and_the_work_run_again(
    pg_urls: tuple[str, str],
) -> None:
    """The server closed the pooled connection (it restarted): the statement on the driver
    fails as SQLAlchemy's would, the connection is invalidated, and the store runs its work
    again on a new one."""
    from sqlalchemy import create_engine

    store = _server_store(pg_urls[0])
    try:
        asyncio.run(store.create("things", {"id": "a", "name": "one"}))
        asyncio.run(store.update("things", "a", {"name": "two"}))  # a pooled connection, used
        admin = create_engine(pg_urls[1], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = make_url(pg_urls[0]).database
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        admin.dispose()
        # a read by id: its statement, on the driver, is the first to use the dead connection
        assert asyncio.run(store.get("things", "a"))["name"] == "two"  # type: ignore[index]
        assert asyncio.run(store.update("things", "a", {"name": "three"}))["name"] == "three"  # type: ignore[index]
    finally:
        store.close()
