"""The live flow view, without a browser and without timing: a stand-in trace endpoint
whose flow grows by a few steps at each read. A flow still running is served live (the
page connects to its event stream) and the stream sends each row as it turns ok, in the
declared order, then `done` with the final table; a flow already over is served whole,
with no stream to open. (The browser test shows the same in chromium, when its boot is
still running as the page loads.)"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from specstack_runtime.dashboard import app as dashboard_app
from specstack_runtime.dashboard import flows
from specstack_runtime.dashboard.app import Dashboard
from specstack_runtime.stackinfo import StackInfo

from ..conftest import REPO

IDENTITY = "http://keystone.test:5000/v3"
TOKEN = "tok-5e3c0d9a"
INFO = StackInfo.load(REPO / "generated" / "ir.json")
ROWS = flows.rows(INFO.sequences["boot-vm"], "dashboard")
PER_READ = 4  # steps the flow gains between two reads of its trace


def _event(row: flows.Row, at: float) -> dict[str, Any]:
    return {
        "step": row.label,
        "sequence": "boot-vm",
        "status": "ok",
        "started_at": at,
        "ended_at": at + 0.002,
        "source": row.source,
        "target": row.target,
        "via": row.via,
        "name": row.name,
        "host": "controller",
        "detail": {},
    }


class Stack:
    """Keystone's token API, and a trace endpoint: flow `req-live` gains PER_READ steps at
    each read (its first read has the first PER_READ), `req-over` has all of them."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v3/auth/tokens":
            token = {
                "user": {"id": "u1", "name": "demo", "domain": {"id": "default"}},
                "project": {"id": "p-demo", "name": "demo"},
                "roles": [{"name": "member"}],
                "catalog": [],
            }
            return httpx.Response(201, json={"token": token}, headers={"X-Subject-Token": TOKEN})
        if path == "/v3/auth/projects":
            return httpx.Response(200, json={"projects": [{"id": "p-demo", "name": "demo"}]})
        flow_id = path.rsplit("/", 1)[1]
        if path.startswith("/specstack/trace/") and flow_id in ("req-live", "req-over"):
            assert request.headers["X-Auth-Token"] == TOKEN
            if flow_id == "req-live":
                self.reads += 1
            seen = self.reads * PER_READ if flow_id == "req-live" else len(ROWS)
            now = time.time()
            events = [_event(r, now) for r in ROWS[:seen]]
            return httpx.Response(200, json={"flow_id": flow_id, "events": events})
        return httpx.Response(404, json={"error": {"code": 404, "message": "Not found."}})


def _sse(text: str) -> list[tuple[str, str]]:
    """(event, data) of each server-sent event in `text`."""
    got = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        name = lines[0].removeprefix("event: ")
        data = "\n".join(line.removeprefix("data: ") for line in lines[1:])
        got.append((name, data))
    return got


def _status(html: str) -> str:
    m = re.search(r'data-status="(\w+)"', html)
    assert m, html
    return m.group(1)


def test_a_running_flow_is_streamed_row_by_row_then_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_app, "POLL_S", 0.0)  # no waiting between reads here
    stack = Stack()
    dash = Dashboard(INFO, IDENTITY, REPO / "generated" / "openapi", component="dashboard")

    async def go() -> tuple[str, str, str]:
        dash.http = httpx.AsyncClient(transport=httpx.MockTransport(stack))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=dash.build()), base_url="http://dash.test"
        ) as browser:
            form = {"username": "demo", "password": "secret", "project": "demo"}
            assert (await browser.post("/login", data=form)).status_code == 303
            live = await browser.get("/flows/req-live")
            assert live.status_code == 200
            events = await browser.get("/flows/req-live/events")
            assert events.headers["content-type"].startswith("text/event-stream")
            over = await browser.get("/flows/req-over")
            return live.text, events.text, over.text

    page, stream, over = asyncio.run(go())
    assert 'sse-connect="/flows/req-live/events"' in page and 'sse-close="done"' in page
    assert "sse-connect" not in over and "Finished: all 15 steps recorded." in over

    sent = _sse(stream)
    *rows, (last, final) = sent
    assert last == "done" and "Finished: all 15 steps recorded." in final
    assert "sse-connect" not in final  # the final table stays; nothing reconnects
    assert all(_status(html) == "ok" for html in re.findall(r"<tr [^>]*>", final))
    # every row once as the stream opens (the first reads' rows ok, the rest pending),
    # then each row again as it turns ok, in the declared order
    first = [(name, _status(html)) for name, html in rows[: len(ROWS)]]
    assert [n for n, _ in first] == [r.anchor for r in ROWS]
    opened = 2 * PER_READ  # the page read the trace once, the stream's first read once more
    assert [s for _, s in first] == ["ok"] * opened + ["pending"] * (len(ROWS) - opened)
    later = [(name, _status(html)) for name, html in rows[len(ROWS) :]]
    assert later == [(r.anchor, "ok") for r in ROWS[opened:]]
    assert stack.reads == -(-len(ROWS) // PER_READ)  # it stopped reading at the end
    assert TOKEN not in page and TOKEN not in stream  # the token stays on the server
