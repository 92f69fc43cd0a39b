"""neutron's agents: their report_state at start-up and `every:` period (one message for the
agents of a process), the rows neutron-server records from it, alive by the reports' age
(an injected clock), and the network availability zones derived from them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from generated.services import neutron_server
from specstack_runtime.bus import Envelope, InProcessBus
from specstack_runtime.consumers import start_consumers
from specstack_runtime.startup import Periodic, run_startup
from tests.aio import settle
from tests.clock import FakeClock
from tests.runtime.netvol_fakes import ADMIN, make_rt, make_store, stack_info
from tests.runtime.test_network import Neutron, serve

HOSTS = [f"compute-{i}" for i in range(1, 6)]


def _report_item(info: Any, component: str) -> dict[str, Any]:
    return next(i for i in info.components[component]["startup"] if i.get("message"))


def test_agents_report_together_and_age_by_their_last_report(tmp_path: Path) -> None:
    async def main() -> None:
        info = stack_info()
        store = make_store(info, "neutron")
        clock = FakeClock()
        sent: list[Envelope] = []
        async with InProcessBus() as bus:
            cast = bus._send_cast

            async def counted(env: Envelope) -> None:
                sent.append(env)
                await cast(env)

            bus._send_cast = counted  # type: ignore[method-assign,assignment]
            server = make_rt(info, "neutron-server", tmp_path, store=store, bus=bus)
            server.clock = clock
            await start_consumers(server, neutron_server.CONSUMERS)
            shared: dict[str, Any] = {}
            l2 = [make_rt(info, "neutron-l2-agent", tmp_path, bus=bus, host=h) for h in HOSTS]
            dhcp = make_rt(info, "neutron-dhcp-agent", tmp_path, bus=bus)
            for rt in l2:
                rt.shared = shared  # the hosts of one process
            l2_item = _report_item(info, "neutron-l2-agent")
            await asyncio.gather(*(run_startup(rt, l2_item) for rt in l2))
            await run_startup(dhcp, _report_item(info, "neutron-dhcp-agent"))
            # five L2 agents in one message, the DHCP agent in its own
            reports = [e.payload["agents"] for e in sent if e.method == "report_state"]
            assert sorted(len(r) for r in reports) == [1, 5]
            assert all(a["start_flag"] is True for r in reports for a in r)
            n = Neutron(server)

            async def listed(**query: str) -> list[dict[str, Any]]:
                q = {k: [v] for k, v in query.items()}
                body = await n.op(serve, "listAgents", 200, who=ADMIN, query=q)
                return list(body["agents"])

            async def all_listed() -> bool:
                return len(await listed()) == 6

            await settle(all_listed)
            agents = await listed()
            ovs = sorted(
                (a for a in agents if a["agent_type"] == "Open vSwitch agent"),
                key=lambda a: a["host"],
            )
            assert [a["host"] for a in ovs] == HOSTS
            assert {a["binary"] for a in ovs} == {"neutron-openvswitch-agent"}
            assert all(a["alive"] and a["admin_state_up"] for a in agents)
            (agent,) = [a for a in agents if a["agent_type"] == "DHCP agent"]
            assert agent["host"] == "network" and agent["binary"] == "neutron-dhcp-agent"
            assert agent["topic"] == "dhcp_agent" and agent["availability_zone"] == "nova"
            assert agent["configurations"]["dhcp_driver"].endswith("Dnsmasq")
            assert agent["heartbeat_timestamp"] == agent["started_at"]
            assert len(agent["heartbeat_timestamp"]) == 19 and agent["resources_synced"] is None
            started = agent["started_at"]
            assert [a["host"] for a in await listed(agent_type="DHCP agent")] == ["network"]
            assert [a["agent_type"] for a in await listed(host="compute-3")] == [
                "Open vSwitch agent"
            ]
            zones = await n.op(serve, "listNetworkAvailabilityZones", 200)
            assert zones["availability_zones"] == [
                {"name": "nova", "resource": "network", "state": "available"}
            ]

            # past agent_down_time (75 s) without a report: dead, and alive=false lists them
            clock.advance(100)
            assert not any(a["alive"] for a in await listed())
            assert len(await listed(alive="false")) == 6 and await listed(alive="true") == []
            # the L2 agents' next period: one message for the five, alive again; the DHCP
            # agent's own report has not come
            loop = shared[f"every:neutron-l2-agent:{l2_item['message']}"]
            assert isinstance(loop, Periodic)
            before = len(sent)
            assert await loop.report() == 5
            assert len(sent) == before + 1
            assert all(a["start_flag"] is False for a in sent[-1].payload["agents"])

            async def five_alive() -> bool:
                return len(await listed(alive="true")) == 5

            await settle(five_alive)
            (dead,) = await listed(alive="false")
            assert dead["agent_type"] == "DHCP agent" and dead["started_at"] == started

            # an administrator takes the DHCP agent down: its zone is unavailable
            await n.op(
                serve,
                "updateAgent",
                200,
                who=ADMIN,
                path_params={"agent_id": dead["id"]},
                body={"agent": {"admin_state_up": False, "description": "maintenance"}},
            )
            shown = await n.op(
                serve, "showAgent", 200, who=ADMIN, path_params={"agent_id": dead["id"]}
            )
            assert shown["agent"]["admin_state_up"] is False
            assert shown["agent"]["description"] == "maintenance"
            zones = await n.op(serve, "listNetworkAvailabilityZones", 200)
            assert [z["state"] for z in zones["availability_zones"]] == ["unavailable"]
            for rt in [*l2, dhcp]:
                for task in rt.local.values():
                    if isinstance(task, asyncio.Task):
                        task.cancel()
            store.close()

    asyncio.run(main())
