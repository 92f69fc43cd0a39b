"""The store pages in SQL, and its queries never hold up the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, inspect, select, text

from specstack_runtime.errors import NotFound
from specstack_runtime.store import Not, Store, TableSpec
from tests.db.conftest import THINGS


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def statements(store: Store) -> list[str]:
    """The SQL `store` sends from now on, in order."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        seen.append(" ".join(sql.split()))

    event.listen(store.engine, "before_cursor_execute", record)
    return seen


async def fill(store: Store, count: int) -> None:
    for i in range(count):
        await store.create(
            "things",
            {
                "id": f"t{i:02d}",
                "state": "on" if i % 3 else "off",
                "colour": "red" if i % 2 else "blue",
                "created_at": f"2026-01-01T00:00:{i:02d}Z",
            },
        )


def test_marker_and_limit_are_sql(store: Store) -> None:
    async def go() -> None:
        await fill(store, 12)
        sent = statements(store)
        page = await store.list("things", {"state": "on"}, marker="t04", limit=3)
        assert [d["id"] for d in page] == ["t05", "t07", "t08"]
        # The page query starts after the marker and stops at the limit in the database.
        query = sent[-1]
        assert " LIMIT " in query.upper() and "things.id >" in query
        back = await store.list("things", {"state": "on"}, marker="t05", limit=2, reverse=True)
        assert [d["id"] for d in back] == ["t04", "t02"]
        assert await store.list("things", {"state": "on"}, marker="t11", limit=5) == []
        # The marker must be a row the filters select.
        with pytest.raises(NotFound, match="marker t03 could not be found"):
            await store.list("things", {"state": "on"}, marker="t03")

    run(go())


def test_pages_with_filters_on_documents(store: Store) -> None:
    """Non-indexed fields are matched on the documents; the page still starts after the
    marker and holds `limit` matches."""

    async def go() -> None:
        await fill(store, 12)
        where = {"state": "on", "colour": "red"}
        assert [d["id"] for d in await store.list("things", where)] == [
            "t01",
            "t05",
            "t07",
            "t11",
        ]
        page = await store.list("things", where, marker="t01", limit=2)
        assert [d["id"] for d in page] == ["t05", "t07"]
        assert [d["id"] for d in await store.list("things", where, marker="t07")] == ["t11"]
        assert await store.list("things", where, limit=0) == []
        # A marker the document filters reject is no marker of this listing.
        with pytest.raises(NotFound, match="marker t02"):
            await store.list("things", where, marker="t02")

    run(go())


def _lock_waits(conn: Connection) -> int:
    """How many transactions on this connection's database wait for a row lock."""
    if conn.dialect.name == "postgresql":
        sql = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
    else:
        sql = (
            "SELECT count(*) FROM information_schema.innodb_trx t"
            " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
            " WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
        )
    return int(conn.execute(text(sql)).scalar_one())


def test_a_query_waiting_on_the_database_leaves_the_loop_free(server_url: str) -> None:
    """While one request's update waits for a row lock another process holds, the other
    requests of this process are served (the update is not done when they are)."""
    store = Store(server_url, THINGS)
    store.metadata.create_all(store.engine)
    things = store.metadata.tables["things"]
    locked, release = threading.Event(), threading.Event()

    def other_process() -> None:
        with store.engine.connect() as conn:
            conn.execute(select(things.c.id).where(things.c.id == "a").with_for_update())
            locked.set()
            release.wait(timeout=20)  # a safety net: the test releases it
            conn.rollback()

    def until_the_update_waits() -> None:
        with store.engine.connect() as conn:
            for _ in range(100):  # a bound, should the update never come to wait
                if _lock_waits(conn):
                    return
                conn.rollback()
                # InnoDB refreshes its lock tables when they were not read for 0.1 s.
                time.sleep(0.15)

    async def go() -> None:
        await store.create("things", {"id": "a", "n": 1})
        await store.create("things", {"id": "b", "n": 1})
        holder = threading.Thread(target=other_process)
        holder.start()
        assert await asyncio.to_thread(locked.wait, 60)
        update = asyncio.create_task(store.update("things", "a", {"n": 2}))
        await asyncio.sleep(0)  # the update starts (and, inline, would block here)
        await asyncio.to_thread(until_the_update_waits)
        served = await store.get("things", "b")
        assert served is not None and served["n"] == 1
        assert not update.done()
        release.set()
        done = await update
        assert done is not None and done["n"] == 2
        await asyncio.to_thread(holder.join)

    try:
        run(go())
    finally:
        release.set()
        store.close()


def test_not_filters_count_in_sql_and_match_documents(store: Store) -> None:
    """`Not(value)`: rows whose field does not hold value, NULL included; on an indexed
    column the count is one SQL statement (how quotas count live rows)."""

    async def go() -> None:
        await fill(store, 9)  # state: off for t00, t03, t06; colour: blue for the even ones
        await store.create("things", {"id": "t99", "state": None, "colour": None})
        sent = statements(store)
        assert await store.count("things", {"state": Not("off")}) == 7  # 6 on, 1 NULL
        assert len(sent) == 1 and "count(" in sent[0].lower()
        on = await store.list("things", {"state": Not("off"), "colour": Not("blue")})
        assert sorted(d["id"] for d in on) == ["t01", "t05", "t07", "t99"]

    run(go())


# servers soft-deleted as nova's are: the row stays, its vm_state `deleted`
SERVERS = [TableSpec("servers", ("project_id", "vm_state"), (("project_id", "vm_state"),))]


def test_live_rows_are_counted_from_ranges_of_a_compound_index(db_url: str) -> None:
    """A project's rows whose state is not `deleted` (how the instances quota counts live
    servers): the right rows on every backend, NULL included, states sorting before and
    after `deleted` too; on SQLite the count reads three ranges of the compound index
    (NULL, below, above), never every row of the project, so a project's deleted servers
    do not make its next boot slower."""
    store = Store(db_url, SERVERS, database=None)
    if store.sqlite:
        store.create_schema()
    else:
        store.metadata.create_all(store.engine)
    states = {"a1": "active", "a2": "building", "a3": "error", "a4": "stopped", "a5": None}
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        sent.append((sql, params))

    async def go() -> None:
        for i in range(30):
            await store.create(
                "servers", {"id": f"d{i:02d}", "project_id": "p1", "vm_state": "deleted"}
            )
        for id_, state in states.items():
            await store.create("servers", {"id": id_, "project_id": "p1", "vm_state": state})
        for i, state in enumerate(["active", "deleted", "error"]):
            await store.create("servers", {"id": f"o{i}", "project_id": "p2", "vm_state": state})
        event.listen(store.engine, "before_cursor_execute", record)
        live = {"project_id": "p1", "vm_state": Not("deleted")}
        assert await store.count("servers", live) == 5
        listed = await store.list("servers", live)
        assert sorted(d["id"] for d in listed) == sorted(states)
        assert await store.count("servers", {"project_id": "p2", "vm_state": Not("deleted")}) == 2
        assert await store.count("servers", {"project_id": "p1", "vm_state": "deleted"}) == 30

    try:
        run(go())
        if store.sqlite:
            sql, params = sent[0]
            with store.engine.connect() as conn:
                driver = conn.connection.dbapi_connection
                assert driver is not None
                plan = [row[3] for row in driver.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            searches = [p for p in plan if p.startswith("SEARCH")]
            assert len(searches) == 3, plan
            assert all(
                "INDEX ix_servers_project_id_vm_state (project_id=? AND vm_state" in p
                for p in searches
            ), plan
            assert {p.rsplit("vm_state", 1)[1] for p in searches} == {"=?)", "<?)", ">?)"}
    finally:
        store.close()


def test_a_sqlite_file_made_before_an_index_was_declared_gets_it(tmp_path: Path) -> None:
    """An embedded data directory from before the spec declared an index (the compound one
    here) has it, and its rows, once a store starts on it."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    old = Store(url, [TableSpec("servers", ("project_id", "vm_state"))], database=None)
    old.create_schema()
    run(old.create("servers", {"id": "a", "project_id": "p1", "vm_state": "active"}))
    old.close()
    new = Store(url, SERVERS, database=None)
    try:
        new.create_schema()
        indexes = {i["name"] for i in inspect(new.engine).get_indexes("servers")}
        assert "ix_servers_project_id_vm_state" in indexes
        assert run(new.count("servers", {"project_id": "p1", "vm_state": Not("deleted")})) == 1
    finally:
        new.close()
