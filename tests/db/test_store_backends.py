"""The store behaves the same on SQLite, PostgreSQL and MariaDB.

`db_url` runs each test on every backend; `server_url` (PostgreSQL and MariaDB) runs
the tests where several processes share one database, each process modelled as a
thread with its own Store (its own connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from unittest.mock import ANY

import pytest
from sqlalchemy import event

from specstack_runtime.behaviours.netports import _allocate_one
from specstack_runtime.errors import Conflict, NotFound
from specstack_runtime.store import Store, engine_url
from tests.db.conftest import THINGS
from tests.db.spec_tables import tables
from tests.runtime.netvol_fakes import stack_info

T = TypeVar("T")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def spec_store(url: str, database: str) -> Store:
    s = Store(url, tables(database), database=database)
    s.create_schema()
    return s


def in_threads(count: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run work(0..count-1) at once in threads, as if in separate processes."""
    results: list[T | BaseException] = [RuntimeError("not run")] * count
    barrier = threading.Barrier(count)

    def body(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@contextlib.contextmanager
def verbs_of(store: Store) -> Iterator[list[str]]:
    """The first word of each statement `store` sends meanwhile (SELECT, UPDATE, ...)."""
    verbs: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        verbs.append(statement.split()[0])

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield verbs
    finally:
        event.remove(store.engine, "before_cursor_execute", count)


def seen_by(old: dict[str, Any] | None, item: Any) -> dict[str, Any]:
    """An upsert's merge: the row's `seen` list with the item's `by` appended."""
    return {**(old or {}), "seen": [*((old or {}).get("seen") or []), item["by"]]}


# -- one connection's view ---------------------------------------------------


def test_crud_and_conflict(store: Store) -> None:
    async def go() -> None:
        doc = await store.create("things", {"id": "a", "project_id": "p", "name": "x", "n": 1})
        assert doc["created_at"].endswith("Z") and doc["updated_at"] == doc["created_at"]
        assert (await store.get("things", "a")) == doc
        with pytest.raises(Conflict, match="things a already exists"):
            await store.create("things", {"id": "a", "n": 2})
        assert (await store.require("things", "a"))["n"] == 1
        updated = await store.update("things", "a", {"n": 2, "state": "on"})
        assert updated is not None and updated["n"] == 2
        assert await store.ids("things", {"state": "on"}) == ["a"]
        assert await store.delete("things", "a") is True
        assert await store.delete("things", "a") is False
        assert await store.get("things", "a") is None
        with pytest.raises(NotFound, match="thing a could not be found"):
            await store.require("things", "a", "thing")
        # the connection is usable after the failed insert
        await store.create("things", {"id": "b"})
        assert await store.count("things") == 1

    run(go())


def test_compare_and_set(store: Store) -> None:
    async def go() -> None:
        await store.create("things", {"id": "a", "state": "building"})
        assert await store.update("things", "a", {"state": "active"}, expect={"state": "x"}) is None
        done = await store.update("things", "a", {"state": "active"}, expect={"state": "building"})
        assert done is not None and done["state"] == "active"
        assert (await store.get("things", "a"))["state"] == "active"  # type: ignore[index]
        assert await store.update("things", "missing", {"state": "x"}) is None

    run(go())


def test_an_update_from_the_row_read_writes_once_and_a_stale_one_reads_again(
    store: Store,
) -> None:

    async def go() -> None:
        read = await store.create("things", {"id": "a", "state": "building", "n": 1})
        with verbs_of(store) as statements:
            new = await store.update("things", "a", {"n": 2}, current=read)
            assert statements == ["UPDATE"]  # the row was as read: no read again
            # `read` is stale now: the row is read again, `expect` holds over it, not `read`
            statements.clear()
            stale = await store.update("things", "a", {"n": 3}, expect={"n": 1}, current=read)
            assert stale is None and statements[-1] == "SELECT"
            done = await store.update("things", "a", {"n": 3}, expect={"n": 2}, current=read)
        assert new is not None and new["n"] == 2 and done is not None and done["n"] == 3
        assert await store.get("things", "a") == done
        await store.delete("things", "a")
        assert await store.update("things", "a", {"n": 4}, current=done) is None

    run(go())


def test_the_row_a_store_last_saw_is_its_guess_and_a_wrong_guess_costs_a_read(
    store: Store, db_url: str
) -> None:
    """An update (or a one-row upsert) without `current` compares-and-sets against the row
    as this store last read or wrote it; another store's write between makes the guess
    wrong: the row is read and the change merged into it (nothing of the other's lost)."""
    other = Store(db_url, THINGS, database=None)

    async def go(statements: list[str]) -> None:
        await store.create("things", {"id": "a", "n": 1})
        statements.clear()
        assert (await store.update("things", "a", {"n": 2}))["n"] == 2  # type: ignore[index]
        assert statements == ["UPDATE"]  # as created: no read
        await other.update("things", "a", {"m": 1})  # the other store reads: it knows none
        statements.clear()
        new = await store.update("things", "a", {"n": 3}, expect={"n": 2})
        assert new is not None and (new["n"], new["m"]) == (3, 1)
        assert statements == ["UPDATE", "SELECT", "UPDATE"]  # guessed wrong, read, written
        statements.clear()  # a one-row upsert: a new row is one INSERT, a known one one UPDATE
        await store.upsert_many("things", {"b": {"by": "store"}}, seen_by)
        await store.upsert_many("things", {"b": {"by": "store"}}, seen_by)
        assert statements == ["INSERT", "UPDATE"]
        await other.upsert_many("things", {"b": {"by": "other"}}, seen_by)  # exists: merged into
        await store.upsert_many("things", {"b": {"by": "store"}}, seen_by)  # a wrong guess
        seen = (await store.require("things", "b"))["seen"]
        assert seen == ["store", "store", "other", "store"]
        await store.delete("things", "b")  # forgotten: a new row again
        statements.clear()
        assert await store.upsert_many("things", {"b": {"by": "x"}}, seen_by) == {
            "b": {"seen": ["x"], "id": "b", "created_at": ANY, "updated_at": ANY}
        }
        assert statements == ["INSERT"]

    try:
        with verbs_of(store) as statements:
            run(go(statements))
    finally:
        other.close()


def test_a_row_another_store_began_is_read_and_written_without_a_failed_insert(
    store: Store, db_url: str
) -> None:
    """`likely_new=False` (an event appended to an action another process recorded): a
    row this store does not know is read (locked) and written in one transaction, with no
    INSERT tried first (its failure would cost a rollback and an error); a row that is not
    there after all is inserted."""
    other = Store(db_url, THINGS, database=None)

    async def go(statements: list[str]) -> None:
        await other.upsert_many("things", {"c": {"by": "other"}}, seen_by)
        statements.clear()
        await store.upsert_many("things", {"c": {"by": "store"}}, seen_by, likely_new=False)
        assert [s for s in statements if s in ("INSERT", "UPDATE", "SELECT")] == [
            "SELECT",
            "UPDATE",
        ]
        assert "ROLLBACK" not in statements
        assert (await other.require("things", "c"))["seen"] == ["other", "store"]
        statements.clear()
        await store.upsert_many("things", {"d": {"by": "store"}}, seen_by, likely_new=False)
        assert [s for s in statements if s in ("INSERT", "UPDATE", "SELECT")] == [
            "SELECT",
            "INSERT",
        ]
        assert (await other.require("things", "d"))["seen"] == ["store"]

    try:
        with verbs_of(store) as statements:
            run(go(statements))
    finally:
        other.close()


def test_filters_sorting_and_paging(store: Store) -> None:
    async def go() -> None:
        rows = [
            ("p1", "on", "red"),
            ("p1", "off", "blue"),
            ("p2", "on", "red"),
            ("p1", "on", "blue"),
        ]
        for i, (project, state, colour) in enumerate(rows):
            await store.create(
                "things",
                {
                    "id": f"t{i}",
                    "project_id": project,
                    "state": state,
                    "colour": colour,
                    "flag": i % 2 == 0,
                    "size": i,
                    "name": None if i == 3 else f"n{i}",
                    "created_at": f"2026-01-0{i + 1}T00:00:00Z",
                },
            )

        async def ids(where: dict[str, Any] | None = None, **kw: Any) -> list[str]:
            return [d["id"] for d in await store.list("things", where, **kw)]

        assert await ids({"project_id": "p1"}) == ["t0", "t1", "t3"]
        assert await ids({"state": ["off", "x"]}) == ["t1"]
        assert await ids({"name": None}) == ["t3"]
        assert await ids({"colour": "red"}) == ["t0", "t2"]  # not indexed: matched on documents
        assert await ids({"flag": "true"}) == ["t0", "t2"]
        assert await ids({"size": "2"}) == ["t2"]
        assert await ids(reverse=True) == ["t3", "t2", "t1", "t0"]
        # NULL sorts first on every backend.
        assert await ids(sort_key="name") == ["t3", "t0", "t1", "t2"]
        assert await ids(sort_key="name", reverse=True) == ["t2", "t1", "t0", "t3"]
        assert await ids(limit=2) == ["t0", "t1"]
        assert await ids(marker="t1", limit=1) == ["t2"]
        assert await ids(marker="t3") == []
        assert await ids(limit=0) == []
        with pytest.raises(NotFound, match="marker nope"):
            await store.list("things", {}, marker="nope")
        assert await store.count("things", {"project_id": "p1", "state": "on"}) == 2
        assert await store.count("things", {"state": ["on", "off"], "project_id": "p1"}) == 3
        assert await store.count("things", {"state": []}) == 0
        assert await store.count("things", {"colour": "blue"}) == 2
        assert sorted(await store.ids("things", {"project_id": "p1"})) == ["t0", "t1", "t3"]
        assert await store.column("things", "state", {"project_id": "p2"}) == ["on"]
        with pytest.raises(KeyError, match="not indexed"):
            await store.column("things", "colour", {})

    run(go())


def test_text_compares_exactly_on_every_backend(store: Store) -> None:
    """No case folding, no trailing-space padding, full Unicode (MariaDB: utf8mb4, binary)."""

    async def go() -> None:
        for id_, name in [("a", "Web"), ("A", "web"), ("a ", "web "), ("ü", "🚀 émoji")]:
            await store.create("things", {"id": id_, "name": name})
        assert await store.count("things") == 4
        assert [d["id"] for d in await store.list("things", {"name": "web"})] == ["A"]
        assert [d["id"] for d in await store.list("things", {"name": "web "})] == ["a "]
        assert (await store.get("things", "ü"))["name"] == "🚀 émoji"  # type: ignore[index]
        assert (await store.get("things", "a"))["name"] == "Web"  # type: ignore[index]

    if store.url.startswith("sqlite"):
        run(go())
        return
    # On the servers the binary collation comes from the migrations; make the table with them.
    store.metadata.drop_all(store.engine)
    nova = spec_store(store.url, "nova-db")
    try:

        async def go_nova() -> None:
            for id_, name in [("a", "Web"), ("A", "web"), ("a ", "web "), ("ü", "🚀 émoji")]:
                await nova.create("flavors", {"id": id_, "name": name})
            assert await nova.count("flavors") == 4
            assert [d["id"] for d in await nova.list("flavors", {"name": "web"})] == ["A"]
            assert [d["id"] for d in await nova.list("flavors", {"name": "web "})] == ["a "]
            assert (await nova.get("flavors", "ü"))["name"] == "🚀 émoji"  # type: ignore[index]

        run(go_nova())
    finally:
        nova.close()


def test_large_documents_round_trip(store: Store) -> None:
    big = {"id": "big", "blob": "x" * 200_000, "items": list(range(5000))}
    run(store.create("things", big))
    got = run(store.get("things", "big"))
    assert got["blob"] == big["blob"] and got["items"] == big["items"]


def test_state_persists_across_store_instances(db_url: str) -> None:
    first = spec_store(db_url, "glance-db")
    run(first.create("images", {"id": "kept", "name": "cirros", "owner": "p"}))
    first.close()
    second = spec_store(db_url, "glance-db")
    try:
        assert run(second.get("images", "kept"))["name"] == "cirros"
        assert run(second.count("images", {"owner": "p"})) == 1
    finally:
        second.close()


def test_engine_url_picks_the_installed_drivers() -> None:
    assert engine_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("mysql://root@h/db") == "mysql+pymysql://root@h/db?charset=utf8mb4"
    assert engine_url("mariadb://root@h/db") == "mariadb+pymysql://root@h/db?charset=utf8mb4"
    assert engine_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert engine_url("sqlite:///x.db") == "sqlite:///x.db"


# -- several processes on one database (PostgreSQL, MariaDB) -----------------


def test_concurrent_creates_of_one_id_leave_exactly_one(server_url: str) -> None:
    stores = [spec_store(server_url, "nova-db") for _ in range(6)]
    try:
        results = in_threads(6, lambda i: run(stores[i].create("flavors", {"id": "f1", "n": i})))
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 5, results
        assert run(stores[0].get("flavors", "f1"))["n"] == won[0]["n"]
    finally:
        for s in stores:
            s.close()


def test_compare_and_set_has_one_winner_across_connections(server_url: str) -> None:
    """The conductor's "only if still BUILD" update, raced by several processes."""
    stores = [spec_store(server_url, "nova-db") for _ in range(6)]
    try:
        run(stores[0].create("instances", {"id": "i1", "vm_state": "building", "host": None}))
        results = in_threads(
            6,
            lambda i: run(
                stores[i].update(
                    "instances",
                    "i1",
                    {"vm_state": "active", "host": f"node{i}"},
                    expect={"vm_state": "building"},
                )
            ),
        )
        winners = [r for r in results if isinstance(r, dict)]
        assert len(winners) == 1 and results.count(None) == 5, results
        # each from the row as it read it (a write conditioned on it): still one winner
        read = run(stores[0].get("instances", "i1"))
        results = in_threads(
            6,
            lambda i: run(
                stores[i].update("instances", "i1", {"n": i}, expect={"n": None}, current=read)
            ),
        )
        assert len([r for r in results if isinstance(r, dict)]) == 1, results
        final = run(stores[0].get("instances", "i1"))
        assert final["host"] == winners[0]["host"]
        assert run(stores[0].ids("instances", {"host": final["host"]})) == ["i1"]
    finally:
        for s in stores:
            s.close()


def test_concurrent_merges_into_one_row_keep_every_item(server_url: str) -> None:
    """A `record:` rule's write (nova's instance action: the API's row and the scheduler's
    and compute hosts' events meet in one row), raced by several processes: the row is
    read locked and written in one transaction, so no event is lost."""
    stores = [spec_store(server_url, "nova-db") for _ in range(6)]

    def merge(i: int) -> Callable[[dict[str, Any] | None, Any], dict[str, Any]]:
        def add(old: dict[str, Any] | None, _: Any) -> dict[str, Any]:
            doc = dict(old or {})
            return {**doc, "events": [*(doc.get("events") or []), {"event": f"e{i}"}]}

        return add

    async def record(i: int) -> None:
        for _ in range(8):  # as records.py: a create raced by another is merged into it
            try:
                await stores[i].upsert_many("instance_actions", {"a1": {}}, merge(i))
                return
            except Conflict:
                continue
        raise AssertionError("not recorded")

    try:
        results = in_threads(6, lambda i: run(record(i)))
        assert results == [None] * 6, results
        row = run(stores[0].get("instance_actions", "a1"))
        assert sorted(e["event"] for e in row["events"]) == [f"e{i}" for i in range(6)]
    finally:
        for s in stores:
            s.close()


def test_ip_allocation_is_unique_across_processes(server_url: str) -> None:
    """neutron's allocation (insert decides, retry the next address) with 4 servers at once."""
    stores = [spec_store(server_url, "neutron-db") for _ in range(4)]
    port = stack_info().resources.resource("port")  # the words of its refusals
    subnet = {
        "id": "s1",
        "cidr": "10.9.0.0/26",
        "gateway_ip": "10.9.0.1",
        "allocation_pools": [{"start": "10.9.0.2", "end": "10.9.0.62"}],
    }
    try:

        def server(i: int) -> list[str]:
            async def allocate() -> list[str]:
                return [
                    await _allocate_one(stores[i], "n1", subnet, f"port-{i}-{k}", None, port=port)
                    for k in range(10)
                ]

            return list(run(allocate()))

        results = in_threads(4, server)
        ips = [ip for r in results for ip in (r if isinstance(r, list) else [])]
        assert all(isinstance(r, list) for r in results), results
        assert len(ips) == 40 and len(set(ips)) == 40
        assert run(stores[0].count("ipallocations", {"subnet_id": "s1"})) == 40
        # asking for a taken address is a conflict, not a second allocation
        with pytest.raises(Conflict, match="already allocated"):
            run(_allocate_one(stores[1], "n1", subnet, "port-x", ips[0], port=port))
    finally:
        for s in stores:
            s.close()


def test_allocators_that_lost_a_race_spread_out_instead_of_colliding_again(
    server_url: str,
) -> None:
    """Twenty ports allocated at once (a boot storm): all read the same free addresses and
    all but one lose the first; the losers take one of the first free at random (neutron's
    window), so they rarely collide again (13-21 failed inserts here). Taking the next free
    one instead made every loser race for it again: 119-121 failed inserts on PostgreSQL,
    40-52 on MariaDB, each a rollback and an error in the server's log."""
    store = spec_store(server_url, "neutron-db")
    port = stack_info().resources.resource("port")
    subnet = {
        "id": "s2",
        "cidr": "10.8.0.0/24",
        "gateway_ip": "10.8.0.1",
        "allocation_pools": [{"start": "10.8.0.2", "end": "10.8.0.254"}],
    }
    inserts: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO ipallocations"):
            inserts.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)

    async def storm() -> list[str]:
        return list(
            await asyncio.gather(
                *(_allocate_one(store, "n1", subnet, f"p{i}", None, port=port) for i in range(20))
            )
        )

    try:
        ips = run(storm())
        assert len(set(ips)) == 20
        assert run(store.count("ipallocations", {"subnet_id": "s2"})) == 20
        assert "10.8.0.2" in ips  # the first free address still goes first
        assert len(inserts) - 20 < 35, len(inserts)  # failed: the first race, and few more
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
        store.close()


def test_quota_count_sees_other_processes_rows(server_url: str) -> None:
    """The quota check counts live instances of a project, whoever wrote them."""
    writer = spec_store(server_url, "nova-db")
    reader = spec_store(server_url, "nova-db")
    live = ["building", "active", "stopped"]
    try:
        for i, state in enumerate(["building", "active", "deleted", "stopped", "error"]):
            run(writer.create("instances", {"id": f"i{i}", "project_id": "p", "vm_state": state}))
        run(writer.create("instances", {"id": "other", "project_id": "q", "vm_state": "active"}))
        assert run(reader.count("instances", {"project_id": "p", "vm_state": live})) == 3
        run(writer.update("instances", "i0", {"vm_state": "deleted"}))
        assert run(reader.count("instances", {"project_id": "p", "vm_state": live})) == 2
    finally:
        writer.close()
        reader.close()


def _close_other_connections(url: str) -> int:
    """What a server restart does to a store's pooled connections: the server closes them."""
    from sqlalchemy import create_engine, text

    engine = create_engine(engine_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                return len(
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).all()
                )
            ids = conn.execute(
                text(
                    "SELECT id FROM information_schema.processlist"
                    " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                )
            ).scalars()
            killed = 0
            for id_ in list(ids):
                conn.execute(text(f"KILL {int(id_)}"))
                killed += 1
            return killed
    finally:
        engine.dispose()


def test_connections_the_server_closed_are_replaced_without_an_error(server_url: str) -> None:
    """A pooled connection the server closed (restarted, or killed it) fails at its first use;
    the store takes a new one and runs the read or the transaction as if nothing happened."""
    s = spec_store(server_url, "nova-db")
    try:
        run(s.create("flavors", {"id": "f1", "name": "tiny", "vcpus": 1}))
        assert _close_other_connections(server_url) >= 1
        assert run(s.get("flavors", "f1")) == {
            "id": "f1",
            "name": "tiny",
            "vcpus": 1,
            "created_at": ANY,
            "updated_at": ANY,
        }
        _close_other_connections(server_url)
        updated = run(s.update("flavors", "f1", {"vcpus": 2}))
        assert updated is not None and updated["vcpus"] == 2
        _close_other_connections(server_url)
        run(s.create("flavors", {"id": "f2", "name": "small", "vcpus": 4}))
        _close_other_connections(server_url)
        assert [d["vcpus"] for d in run(s.list("flavors", sort_key="id"))] == [2, 4]
    finally:
        s.close()
