"""Hand-written OSProfiler reports (the JSON of `osprofiler trace show --json`) of a boot
as an OpenStack cloud traces it, for the tests of `diagram --diff` and `conform`."""

from __future__ import annotations

import datetime
from typing import Any


class Trace:
    """An OSProfiler report (the JSON of `osprofiler trace show --json`), point by point."""

    def __init__(self) -> None:
        self.t0 = datetime.datetime(2026, 12, 3, 12, 0, 0)
        self.children: list[dict[str, Any]] = []
        self.us = 0

    def point(
        self, name: str, project: str, service: str, info: dict[str, Any], *, under: Any = None
    ) -> dict[str, Any]:
        start, self.us = self.t0 + datetime.timedelta(microseconds=self.us), self.us + 700
        stop = start + datetime.timedelta(microseconds=500)
        ids = {"base_id": "b" * 8, "parent_id": "p", "trace_id": f"t{len(self.children)}"}
        node = {
            "info": {
                "name": name,
                "project": project,
                "service": service,
                "host": "node-1",
                f"meta.raw_payload.{name}-start": {
                    "name": f"{name}-start",
                    "timestamp": start.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                    "info": info,
                    **ids,
                },
                f"meta.raw_payload.{name}-stop": {
                    "name": f"{name}-stop",
                    "timestamp": stop.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                    **ids,
                },
                "started": self.us // 1000,  # whole ms: too coarse to order the points
                "finished": self.us // 1000,
                "exception": "None",
            },
            **ids,
            "children": [],
        }
        (under["children"] if under else self.children).append(node)
        return node

    def wsgi(self, project: str, method: str, path: str) -> dict[str, Any]:
        info = {"request": {"method": method, "path": path, "query": "", "scheme": "http"}}
        return self.point("wsgi", project, f"{project}-api", info)

    def rpc(self, project: str, function: str) -> dict[str, Any]:
        return self.point("rpc", project, project, {"function": {"name": function}})

    def db(self, project: str, statement: str, under: Any) -> None:
        self.point("db", project, project, {"db": {"statement": statement}}, under=under)

    def report(self) -> dict[str, Any]:
        return {"info": {"name": "total", "started": 0}, "children": self.children, "stats": {}}


def openstack_boot(*, skip: str = "", early: str = "") -> dict[str, Any]:
    """A boot as OpenStack's services trace it (devstack's paths, nova's manager functions,
    SQLAlchemy statements), with OpenStack's own detail around the deck's steps."""
    t = Trace()
    image = "/image/v2/images/5e0b1c2a-0000-4000-8000-000000000001"
    steps: list[tuple[str, Any]] = [
        ("2", lambda: t.wsgi("keystone", "POST", "/identity/v3/auth/tokens")),
        (
            "2.1",
            lambda: t.db("keystone", "SELECT user.id FROM user", t.children[-1]),
        ),  # keystone's table is `user`: not the spec's `users`
        ("3", lambda: t.wsgi("nova", "POST", "/compute/v2.1/servers")),
        ("4", lambda: t.wsgi("keystone", "GET", "/identity/v3/auth/tokens")),
        ("4.1", lambda: t.wsgi("glance", "GET", image)),
        ("4.2", lambda: t.wsgi("neutron", "GET", "/networking/v2.0/security-groups")),
        ("5", lambda: t.db("nova", "INSERT INTO instances (uuid) VALUES (%s)", t.children[-4])),
        (
            "6",
            lambda: t.rpc(
                "nova", "nova.conductor.manager.ComputeTaskManager.schedule_and_build_instances"
            ),
        ),
        ("7", lambda: t.db("nova", "SELECT compute_nodes.id FROM compute_nodes", t.children[-1])),
        (
            "7.1",
            lambda: t.rpc("nova", "nova.compute.manager.ComputeManager.build_and_run_instance"),
        ),
        ("8", lambda: t.rpc("nova", "nova.conductor.manager.ConductorManager.instance_get")),
        (
            "8.1",
            lambda: t.db(
                "nova", "SELECT instances.uuid, flavors.id FROM instances", t.children[-1]
            ),
        ),
        (
            "9",
            lambda: t.point(
                "driver",
                "nova",
                "nova-compute",
                {"function": {"name": "nova.virt.libvirt.driver.LibvirtDriver.spawn"}},
            ),
        ),
        ("10", lambda: t.wsgi("glance", "GET", image)),
        ("10.1", lambda: t.wsgi("keystone", "GET", "/identity/v3/auth/tokens")),
        ("11", lambda: t.db("glance", "SELECT images.id FROM images", t.children[-2])),
        ("12", lambda: t.wsgi("swift", "GET", "/v1/AUTH_p/glance/5e0b1c2a")),
        ("13", lambda: t.wsgi("neutron", "POST", "/networking/v2.0/ports")),
        ("13.1", lambda: t.wsgi("keystone", "GET", "/identity/v3/auth/tokens")),
        (
            "14",
            lambda: t.db(
                "neutron", "INSERT INTO ipallocations (ip_address) VALUES (%s)", t.children[-2]
            ),
        ),
        (
            "14.1",
            lambda: t.rpc(
                "neutron",
                "neutron.api.rpc.agentnotifiers.dhcp_rpc_agent_api.DhcpAgentNotifyAPI.port_create_end",
            ),
        ),
        (
            "14.2",
            lambda: t.rpc("neutron", "neutron.plugins.ml2.rpc.AgentNotifierApi.port_update"),
        ),
        (
            "14.3",
            lambda: t.point(
                "driver",
                "nova",
                "nova-compute",
                {"function": {"name": "nova.virt.libvirt.driver.LibvirtDriver.plug_vifs"}},
            ),
        ),
    ]
    t.wsgi("nova", "GET", "/compute/v2.1/flavors/1")  # OpenStack's own detail: no step
    order = [label for label, _ in steps if label != early]
    if early:
        order.insert(order.index("10"), early)  # done before step 10 instead of after 12
    for label in order:
        if label != skip:
            dict(steps)[label]()
    t.rpc("nova", "nova.compute.manager.ComputeManager._heal_instance_info_cache")
    return t.report()
