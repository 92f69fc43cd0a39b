"""`delete.handoff`: the row changed compare-and-set, then handed to the component that
deletes it; one the message cannot reach takes `failed`; `when` false: deleted here."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from specstack_runtime import ir
from specstack_runtime.bus import BusError
from specstack_runtime.errors import ApiError
from specstack_runtime.resources import deleting
from tests.aio import arun
from tests.runtime.test_effects import _Store

HANDOFF = ir.Handoff(
    when="doc.host != null",
    set={"status": "deleting"},
    raced="delete_raced",
    send="volume_delete",
    host="doc.host",
    payload={"volume_id": {"expr": "doc.id"}},
    failed={"status": "error_deleting"},
)


def _rc(store: _Store) -> Any:
    res = SimpleNamespace(
        name="volume",
        res=SimpleNamespace(table="volumes", handoff=HANDOFF, deletes=()),
        fail=lambda name, **values: ApiError(f"{name}: {values['id']}", status=400),
    )
    return SimpleNamespace(
        res=res, store=store, call=SimpleNamespace(), variables=lambda **more: dict(more)
    )


@arun
async def test_the_row_is_marked_then_handed_to_its_host(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any], str | None]] = []

    async def send(call: Any, message: str, payload: dict[str, Any], host: str | None) -> None:
        sent.append((message, payload, host))

    monkeypatch.setattr(deleting, "send", send)
    store = _Store({"v1": {"id": "v1", "status": "available", "host": "h1"}})
    doc = await deleting.hand_off(_rc(store), dict(store.rows["v1"]))
    assert doc is not None and doc["status"] == "deleting" == store.rows["v1"]["status"]
    assert sent == [("volume_delete", {"volume_id": "v1"}, "h1")]
    assert await deleting.hand_off(_rc(store), {"id": "v2", "host": None}) is None


@arun
async def test_a_message_that_cannot_go_leaves_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def send(call: Any, message: str, payload: dict[str, Any], host: str | None) -> None:
        raise BusError("no route")

    monkeypatch.setattr(deleting, "send", send)
    store = _Store({"v1": {"id": "v1", "status": "available", "host": "h1"}})
    doc = await deleting.hand_off(_rc(store), dict(store.rows["v1"]))
    assert doc is not None and store.rows["v1"]["status"] == "error_deleting" == doc["status"]


@arun
async def test_a_row_changed_meanwhile_is_the_raced_error() -> None:
    store = _Store({"v1": {"id": "v1", "status": "error", "host": "h1"}})
    with pytest.raises(ApiError, match=r"^delete_raced: v1$"):
        await deleting.hand_off(_rc(store), {"id": "v1", "status": "available", "host": "h1"})
    assert store.rows["v1"]["status"] == "error"
