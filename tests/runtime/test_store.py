"""The SQLAlchemy store: documents, indexed filters, compare-and-set, SQL-only reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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
