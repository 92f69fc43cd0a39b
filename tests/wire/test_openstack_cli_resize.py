"""resize, its confirmation and revert, and cold migrate through the real `openstack` CLI
(issue 15): `server resize --flavor --wait` moves the server to the other compute host with
the new flavor (VERIFY_RESIZE, both flavors counted in the project's limits), `server resize
revert` brings it back as it was, `server migrate --wait` (an administrator's) moves it with
its flavor and `server resize confirm` keeps it there; each recorded as an instance action,
the administrator's migrate listed to the owner too; and `server delete` of a server in
VERIFY_RESIZE confirms the resize (nova's refusals are tests/runtime/test_server_resize.py's)."""

from __future__ import annotations

import time
from typing import Any

from .conftest import Stack

VM = "wire-resize-vm"
ADMIN = "specstack-admin"


def _shown(stack: Stack, sid: str) -> tuple[str, str, str]:
    """The server's status, host (an administrator's view) and flavor name."""
    shown: dict[str, Any] = stack.json("server", "show", sid, cloud=ADMIN)
    flavor = shown["flavor"]
    name = flavor["name"] if isinstance(flavor, dict) else str(flavor).split(" (")[0]
    return str(shown["status"]), str(shown["OS-EXT-SRV-ATTR:host"]), name


def _ram_used(stack: Stack) -> int:
    """The project's RAM in use, as `limits show --absolute` names it (total_ram_used)."""
    rows = stack.json("limits", "show", "--absolute")
    absolute = {str(r["Name"]).replace("_", "").lower(): r["Value"] for r in rows}
    return int(absolute["totalramused"])


def _ram_on_hosts(stack: Stack) -> int:
    """The RAM the compute hosts have claimed (`hypervisor stats show`, an administrator's)."""
    return int(stack.json("hypervisor", "stats", "show", cloud=ADMIN)["memory_mb_used"])


def test_resize_revert_migrate_and_confirm(stack: Stack) -> None:
    claimed = _ram_on_hosts(stack)
    sid = str(stack.json("server", "create", "--image", "demo-image", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", VM)["id"])  # fmt: skip
    try:
        status, first, flavor = _shown(stack, sid)
        assert (status, flavor) == ("ACTIVE", "m1.tiny")
        used = _ram_used(stack)
        stack.run("server", "resize", "--flavor", "m1.small", "--wait", VM)
        status, host, flavor = _shown(stack, sid)
        assert (status, flavor) == ("VERIFY_RESIZE", "m1.small") and host != first
        # the larger flavor counted until the resize is over (m1.tiny 512 MB, m1.small 2048)
        assert _ram_used(stack) == used - 512 + 2048
        stack.run("server", "resize", "revert", VM)
        stack.wait_for("server", VM, "status", "ACTIVE")
        assert _shown(stack, sid) == ("ACTIVE", first, "m1.tiny")
        stack.run("server", "migrate", "--wait", sid, cloud=ADMIN)
        status, host, flavor = _shown(stack, sid)
        assert (status, flavor) == ("VERIFY_RESIZE", "m1.tiny") and host != first
        stack.run("server", "resize", "confirm", VM)
        stack.wait_for("server", VM, "status", "ACTIVE")
        assert _shown(stack, sid) == ("ACTIVE", host, "m1.tiny")
        # the owner lists the administrator's migrate too, with the administrator's project
        # (nova records the request's and lists a server's actions whoever made them)
        events = stack.json("server", "event", "list", "--long", sid)
        actions = [a["Action"] for a in events]
        assert actions == ["confirmResize", "migrate", "revertResize", "resize", "create"]
        admin_project = stack.json("token", "issue", cloud=ADMIN)["project_id"]
        projects = {a["Action"]: a["Project ID"] for a in events}
        assert projects["migrate"] == admin_project != projects["resize"]
        # deleted in VERIFY_RESIZE: the resize confirmed with it, both hosts' claims given back
        stack.run("server", "resize", "--flavor", "m1.small", "--wait", VM)
        assert _shown(stack, sid)[0] == "VERIFY_RESIZE"
        assert _ram_on_hosts(stack) == claimed + 512 + 2048
        stack.run("server", "delete", "--wait", VM)
        deadline = time.monotonic() + 60
        while _ram_on_hosts(stack) != claimed:
            assert time.monotonic() < deadline, f"{_ram_on_hosts(stack)} MB still claimed"
            time.sleep(0.3)
    finally:
        stack.run("server", "delete", "--wait", VM, check=False)
