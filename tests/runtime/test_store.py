"""The SQLAlchemy store: documents, indexed filters, compare-and-set, SQL-only reads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from specstack_runtime.errors import Conflict, NotFound
from specstack_runtime.store import Store, TableSpec

TABLES = [TableSpec("things", ("project_id", "name", "state"))]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'db.sqlite'}", TABLES)
    s.create_schema()
    return s


def test_create_get_update_delete(store: Store) -> None:
    async def go() -> None:
        doc = await store.create("things", {"id": "a", "project_id": "p", "name": "x", "n": 1})
        assert doc["created_at"] and doc["updated_at"]
        assert (await store.get("things", "a"))["n"] == 1  # type: ignore[index]
        with pytest.raises(Conflict):
            await store.create("things", {"id": "a"})
        assert (await store.update("things", "a", {"n": 2}))["n"] == 2  # type: ignore[index]
        assert await store.delete("things", "a") is True
        assert await store.get("things", "a") is None
        with pytest.raises(NotFound, match="thing a could not be found"):
            await store.require("things", "a", "thing")

    run(go())


def test_compare_and_set_only_when_expected_values_hold(store: Store) -> None:
    async def go() -> None:
        await store.create("things", {"id": "a", "state": "building"})
        assert await store.update("things", "a", {"state": "active"}, expect={"state": "x"}) is None
        done = await store.update("things", "a", {"state": "active"}, expect={"state": "building"})
        assert done is not None and done["state"] == "active"
        assert await store.update("things", "missing", {"state": "x"}) is None

    run(go())


def test_filters_indexed_and_not_any_of_marker_limit(store: Store) -> None:
    async def go() -> None:
        for i, (p, state, colour) in enumerate(
            [("p1", "on", "red"), ("p1", "off", "blue"), ("p2", "on", "red"), ("p1", "on", "blue")]
        ):
            await store.create(
                "things",
                {
                    "id": f"t{i}",
                    "project_id": p,
                    "state": state,
                    "colour": colour,
                    "created_at": f"2026-01-0{i + 1}T00:00:00Z",
                },
            )
        ids = [d["id"] for d in await store.list("things", {"project_id": "p1"})]
        assert ids == ["t0", "t1", "t3"]
        assert [d["id"] for d in await store.list("things", {"state": ["off", "x"]})] == ["t1"]
        assert [d["id"] for d in await store.list("things", {"colour": "red"})] == ["t0", "t2"]
        assert [d["id"] for d in await store.list("things", {}, marker="t1", limit=1)] == ["t2"]
        with pytest.raises(NotFound):
            await store.list("things", {}, marker="nope")
        assert await store.count("things", {"project_id": "p1", "state": "on"}) == 2
        assert await store.count("things", {"colour": "blue"}) == 2
        assert sorted(await store.ids("things", {"project_id": "p1"})) == ["t0", "t1", "t3"]
        assert sorted(
            v or "" for v in await store.column("things", "state", {"project_id": "p2"})
        ) == ["on"]
        with pytest.raises(KeyError, match="not indexed"):
            await store.column("things", "colour", {})

    run(go())


def test_state_persists_across_store_instances(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = Store(url, TABLES)
    first.create_schema()
    run(first.create("things", {"id": "kept", "name": "x"}))
    first.close()
    second = Store(url, TABLES)
    assert run(second.get("things", "kept")) is not None
    second.close()


def test_a_failed_transaction_changes_nothing(store: Store) -> None:
    async def go() -> None:
        await store.create("things", {"id": "a", "n": 1})
        with pytest.raises(Conflict):
            await store.create("things", {"id": "a", "n": 2})
        assert (await store.get("things", "a"))["n"] == 1  # type: ignore[index]
        # The shared connection is usable after the failure.
        await store.create("things", {"id": "b"})
        assert await store.count("things") == 2

    run(go())


def _counting(store: Store) -> list[str]:
    statements: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split()[0])

    event.listen(store.engine, "before_cursor_execute", count)
    return statements


def test_a_sole_writer_reads_by_id_what_it_wrote_without_a_statement(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    sole = Store(url, TABLES, sole_writer=True)
    sole.create_schema()
    statements = _counting(sole)

    async def go() -> None:
        await sole.create("things", {"id": "a", "n": 1})
        await sole.update("things", "a", {"n": 2})
        await sole.upsert_many("things", {"b": {"n": 3}, "c": {"n": 4}}, lambda old, new: new)
        del statements[:]
        assert (await sole.get("things", "a"))["n"] == 2  # type: ignore[index]
        assert [(await sole.require("things", i))["n"] for i in "bc"] == [3, 4]
        assert statements == []
        assert await sole.get("things", "d") is None  # read once: its absence remembered too
        assert await sole.get("things", "d") is None
        assert statements == ["SELECT"]
        await sole.create("things", {"id": "d", "n": 5})
        assert (await sole.get("things", "d"))["n"] == 5  # type: ignore[index]
        await sole.delete("things", "d")
        assert await sole.get("things", "d") is None
        # rows it remembers, and one it knows is absent: merged and written, none read
        del statements[:]
        both = await sole.upsert_many("things", {"b": {"m": 1}, "d": {"m": 2}}, _merged)
        assert (both["b"]["n"], both["b"]["m"], both["d"]["m"]) == (3, 1, 2)
        assert statements == ["INSERT", "UPDATE"]
        assert (await sole.get("things", "d"))["m"] == 2  # type: ignore[index]
        # a failed transaction: nothing it remembered of it is taken as stored
        with pytest.raises(Conflict):
            await sole.upsert_many("things", {"a": {"n": 9}, "e": {"n": 9}}, _refuse)
        assert (await sole.get("things", "a"))["n"] == 2  # type: ignore[index]
        assert await sole.get("things", "e") is None

    run(go())
    sole.close()


def _merged(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    return {**(old or {}), **new}


def _refuse(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:  # a row created meanwhile by another writer, as the store sees it
        raise Conflict("refused")
    return new


def test_a_store_that_is_not_the_sole_writer_reads_what_another_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    mine, other = Store(url, TABLES), Store(url, TABLES)
    mine.create_schema()

    async def go() -> None:
        await mine.create("things", {"id": "a", "n": 1})
        await other.update("things", "a", {"n": 2})
        assert (await mine.get("things", "a"))["n"] == 2  # type: ignore[index]
        # compare-and-set over its stale memory: the row read again, the change kept
        assert (await mine.update("things", "a", {"m": 1}))["n"] == 2  # type: ignore[index]

    run(go())
    mine.close()
    other.close()


def test_paging_by_marker_builds_one_statement_not_one_a_marker(store: Store) -> None:
    """The marker is a bound value of the page's statement: a store that serves many pages
    keeps one statement for them (it kept one a marker, without end)."""

    async def go() -> list[str]:
        for i in range(12):
            await store.create(
                "things", {"id": f"t{i:02d}", "created_at": f"2026-01-01T00:00:{i:02d}Z"}
            )
        await store.list("things", limit=2, marker="t00")
        kept = len(store._stmts)
        seen: list[str] = []
        for i in range(1, 11):
            seen += [d["id"] for d in await store.list("things", limit=1, marker=f"t{i:02d}")]
        assert len(store._stmts) == kept
        return seen

    assert run(go()) == [f"t{i:02d}" for i in range(2, 12)]


def test_an_update_sets_only_the_columns_that_change(store: Store, tmp_path: Path) -> None:
    """A column set to its own value still rewrites its index: an UPDATE names the document
    and the columns whose value changes, and the columns stay right for the filters."""
    import sqlite3

    seen: list[str] = []

    async def go() -> None:
        await store.create("things", {"id": "a", "project_id": "p", "name": "x", "n": 1})
        assert store._conn is not None
        driver = store._conn.connection.dbapi_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.set_trace_callback(seen.append)
        await store.update("things", "a", {"n": 2})  # the store's guess: one statement
        store._known.clear()
        await store.update("things", "a", {"name": "y"})  # read, then written
        driver.set_trace_callback(None)

    run(go())
    updates = [s for s in seen if s.startswith("UPDATE")]
    assert len(updates) == 2
    first, second = (u.split(" WHERE ")[0] for u in updates)
    assert first.startswith("UPDATE things SET updated_at=") and "data=" in first
    assert not any(f"{c}=" in first for c in ("project_id", "name", "state", "created_at"))
    assert "name='y'" in second and "project_id=" not in second and "state=" not in second

    async def filters() -> None:
        assert [d["id"] for d in await store.list("things", {"name": "y", "project_id": "p"})] == [
            "a"
        ]
        assert await store.list("things", {"name": "x"}) == []
        got = await store.get("things", "a")
        assert got is not None and (got["n"], got["name"]) == (2, "y")

    run(filters())
