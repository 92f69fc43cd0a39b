"""Effects (`effects:` in spec/resources): a write's change to a row of another resource,
compare-and-set, retried when another writer wins, refused or skipped as `when` says."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from specstack_runtime import ir
from specstack_runtime.bus import BusError
from specstack_runtime.errors import ApiError, BadRequest, NotFound
from specstack_runtime.resources import effects
from tests.aio import arun


class _Store:
    """Rows by id; `update` honours `expect`; `race` rows another writer changes first."""

    def __init__(self, rows: dict[str, dict[str, Any]], race: int = 0) -> None:
        self.rows = rows
        self.race = race
        self.writes = 0

    async def get(self, table: str, id_: str) -> dict[str, Any] | None:
        row = self.rows.get(id_)
        return None if row is None else dict(row)

    async def update(
        self,
        table: str,
        id_: str,
        changes: dict[str, Any],
        expect: dict[str, Any] | None = None,
        current: dict[str, Any] | None = None,  # what spares the real store a read
    ) -> dict[str, Any] | None:
        row = self.rows[id_]
        if self.race:  # someone else's write lands between our read and our update
            self.race -= 1
            row["updated_at"] = f"t{self.race}"
        if any(row.get(k) != v for k, v in (expect or {}).items()):
            return None
        self.writes += 1
        row.update(changes)
        return dict(row)


def _fail(status: int) -> Any:
    return lambda name, **values: ApiError(f"{name}: {values.get('id')}", status=status)


def _rc(store: _Store) -> Any:
    other = SimpleNamespace(
        store=store,
        res=SimpleNamespace(res=SimpleNamespace(table="volumes", revision="_rev"), fail=_fail(404)),
    )
    return SimpleNamespace(
        of=lambda name: other,
        variables=lambda **more: dict(more),
        call=SimpleNamespace(vars={}),
        refs={},
        res=SimpleNamespace(fail=_fail(400)),
    )


RESERVE = ir.Effect(
    resource="volume",
    id="doc.volume_id",
    when="row.status == 'available'",
    refuse="not_available",
    set={"status": {"expr": "doc.attach_status"}, "mode": "rw"},
    var="volume",
)


@arun
async def test_an_effect_sets_the_other_row_compare_and_set() -> None:
    store = _Store({"v1": {"id": "v1", "status": "available", "_rev": 4}}, race=2)
    rc = _rc(store)
    await effects.apply(rc, (RESERVE,), {"volume_id": "v1", "attach_status": "attaching"}, None)
    assert store.rows["v1"] == {
        "id": "v1",
        "status": "attaching",
        "mode": "rw",
        "_rev": 5,
        "updated_at": "t0",
    }
    assert store.writes == 1 and rc.call.vars["volume"]["status"] == "attaching"


@arun
async def test_refuse_when_it_does_not_hold_and_skip_without_refuse() -> None:
    store = _Store({"v1": {"id": "v1", "status": "in-use"}})
    rc = _rc(store)
    with pytest.raises(ApiError, match=r"^not_available: v1$"):
        await effects.apply(rc, (RESERVE,), {"volume_id": "v1", "attach_status": "x"}, None)
    skip = RESERVE.model_copy(update={"refuse": None})
    await effects.apply(rc, (skip,), {"volume_id": "v1", "attach_status": "x"}, None)
    assert store.rows["v1"] == {"id": "v1", "status": "in-use"} and store.writes == 0
    assert rc.call.vars["volume"] == {"id": "v1", "status": "in-use"}  # as it is


@arun
async def test_a_missing_row_is_the_named_error_or_nothing() -> None:
    rc = _rc(_Store({}))
    await effects.apply(rc, (RESERVE,), {"volume_id": "v9", "attach_status": "x"}, None)
    missing = RESERVE.model_copy(update={"missing": "not_found"})
    with pytest.raises(ApiError, match=r"^not_found: v9$") as caught:
        await effects.apply(rc, (missing,), {"volume_id": "v9", "attach_status": "x"}, None)
    assert caught.value.status == 404


@arun
async def test_a_row_always_changed_meanwhile_is_a_conflict() -> None:
    store = _Store({"v1": {"id": "v1", "status": "available"}}, race=effects.MAX_ATTEMPTS)
    with pytest.raises(ApiError) as caught:
        await effects.apply(_rc(store), (RESERVE,), {"volume_id": "v1", "attach_status": "a"}, None)
    assert caught.value.status == 409 and not isinstance(caught.value, BadRequest | NotFound)
    assert store.rows["v1"]["status"] == "available"


@arun
async def test_create_effects_make_rows_as_a_create_does_the_next_effects_see_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[dict[str, Any]] = []
    told: list[str] = []

    async def create(table: str, row: dict[str, Any]) -> dict[str, Any]:
        created.append(row)
        return {**row, "created_at": "now"}

    async def for_create(rc: Any, attrs: dict[str, Any], id_: Any = None, *, server: bool) -> Any:
        assert server  # the server's own row: server-set fields may be given
        return {"mode": "rw", **attrs, "id": id_ or f"a{len(created) + 1}"}

    async def added(rc: Any, row: dict[str, Any]) -> None:
        told.append(row["id"])

    monkeypatch.setattr(effects.writes, "for_create", for_create)
    monkeypatch.setattr(effects.collects, "added", added)
    store = _Store({"v1": {"id": "v1", "status": "in-use", "attachments": []}})
    store.create = create  # type: ignore[attr-defined]
    rc = _rc(store)
    rc.of("attachment").res.name = rc.res.name = "attachment"
    rc.catalog = SimpleNamespace(collectors=lambda name: [])
    rc.variables = lambda **more: {"vars": rc.call.vars, **more}
    record = ir.Effect(
        resource="attachment",
        each="params.servers",
        create={"volume_id": {"expr": "doc.id"}, "server": {"expr": "item"}},
        var="attachment",
    )
    entry = ir.Effect(
        resource="volume",
        id="doc.id",
        set={"attachments": {"expr": "row.attachments + [vars.attachment.id]"}},
    )
    params = {"servers": ["s1", "s2"]}
    await effects.apply(rc, (record, entry), {"id": "v1"}, None, params=params)
    assert created == [
        {"mode": "rw", "volume_id": "v1", "server": "s1", "id": "a1"},
        {"mode": "rw", "volume_id": "v1", "server": "s2", "id": "a2"},
    ]
    assert told == ["a1", "a2"]  # the rows collecting them are told of each
    assert rc.call.vars["attachment"]["created_at"] == "now"
    assert store.rows["v1"]["attachments"] == ["a2"]


@arun
async def test_a_send_effect_that_cannot_go_leaves_the_row_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def send(call: Any, message: str, payload: dict[str, Any], host: str | None) -> None:
        sent.append((message, payload))
        if len(sent) > 1:
            raise BusError("no scheduler")

    monkeypatch.setattr(effects, "send", send)
    store = _Store({"v1": {"id": "v1", "status": "creating", "size": 2}})
    rc = _rc(store)
    rc.res.name, rc.res.res, rc.store = "volume", SimpleNamespace(table="volumes"), store
    cast = ir.Effect(
        resource="volume",
        send="create_volume",
        payload={"volume_id": {"expr": "doc.id"}, "size": {"expr": "doc.size"}},
        failed={"status": "error"},
    )
    doc = dict(store.rows["v1"])
    await effects.apply(rc, (cast,), doc, None)
    assert sent == [("create_volume", {"volume_id": "v1", "size": 2})]
    assert doc["status"] == "creating" == store.rows["v1"]["status"]
    await effects.apply(rc, (cast,), doc, None)
    assert doc["status"] == "error" == store.rows["v1"]["status"]
