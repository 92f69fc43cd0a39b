"""A server's console URL (spec/resources/compute.yaml, issue 15): 2.6's remote-consoles
and the legacy os-getVNCConsole / os-getSerialConsole actions answer the server's page of
the dashboard, where its serial console log is offered (the stack's console); nova's 400
for a bad or unavailable type, 409 when the server is not ACTIVE."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from specstack_runtime.dashboard.listings import Catalogue
from specstack_runtime.errors import BadRequest, Conflict
from tests.aio import arun
from tests.conftest import REPO
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_nova_cell import booted_cell


async def _console(cell: NovaCell, sid: str, body: Any) -> Any:
    reply, _ = await cell.operation(
        "createRemoteConsole",
        path_params={"server_id": sid},
        body={"remote_console": body},
        headers={"OpenStack-API-Version": "compute 2.6"},
    )
    assert reply.status == 200
    return reply.body["remote_console"]


async def _legacy(cell: NovaCell, sid: str, action: str, arg: Any) -> Any:
    reply, _ = await cell.operation(
        "serverAction", path_params={"server_id": sid}, body={action: arg}
    )
    assert reply.status == 200
    return reply.body["console"]


def _served_page(cell: NovaCell, url: str, sid: str) -> None:
    """The URL is the dashboard's, of the server's page, which offers its console log."""
    dashboard = cell.api.info.urls(cell.api.config)["dashboard"]
    assert url.startswith(dashboard + "/")
    servers = Catalogue(cell.api.info, REPO / "generated" / "openapi").find("compute", "servers")
    assert servers is not None
    assert urlsplit(url).path == f"{servers.href}/{sid}"
    assert "os-getConsoleOutput" in [a.key for a in servers.actions]


@arun
async def test_console_urls_are_the_servers_dashboard_page(tmp_path: Path) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = row["id"]
        got = await _console(cell, sid, {"protocol": "vnc", "type": "novnc"})
        assert (got["protocol"], got["type"]) == ("vnc", "novnc")
        _served_page(cell, got["url"], sid)
        serial = await _console(cell, sid, {"protocol": "serial", "type": "serial"})
        assert serial["url"] == got["url"]
        legacy = await _legacy(cell, sid, "os-getVNCConsole", {"type": "novnc"})
        assert legacy == {"type": "novnc", "url": got["url"]}
        legacy = await _legacy(cell, sid, "os-getSerialConsole", {"type": "serial"})
        assert legacy == {"type": "serial", "url": got["url"]}


@arun
async def test_console_refusals(tmp_path: Path) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = row["id"]
        # the types this stack has no console of, and types nova does not know
        with pytest.raises(BadRequest, match="Unavailable console type spice-html5"):
            await _console(cell, sid, {"protocol": "spice", "type": "spice-html5"})
        with pytest.raises(BadRequest, match="Unavailable console type xvpvnc"):
            await _legacy(cell, sid, "os-getVNCConsole", {"type": "xvpvnc"})
        with pytest.raises(BadRequest, match="field/attribute type"):
            await _console(cell, sid, {"protocol": "vnc", "type": "telnet"})
        with pytest.raises(BadRequest, match="field/attribute protocol"):
            await _console(cell, sid, {"type": "novnc"})
        with pytest.raises(BadRequest, match="Additional properties are not allowed"):
            await _console(cell, sid, {"protocol": "vnc", "type": "novnc", "x": 1})
        with pytest.raises(BadRequest, match="field/attribute type"):
            await _legacy(cell, sid, "os-getVNCConsole", {})
        # a server that does not run has no console (nova's 409)
        await cell.operation("serverAction", path_params={"server_id": sid}, body={"os-stop": None})
        await cell.wait_for(sid, lambda r: r["vm_state"] == "stopped" and r["task_state"] is None)
        with pytest.raises(Conflict, match=r"vm_state stopped"):
            await _console(cell, sid, {"protocol": "vnc", "type": "novnc"})
