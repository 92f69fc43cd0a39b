"""Neutron's flow steps and agents (DHCP, L2: their files and resync), and no client input
giving a 500."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime import registry
from specstack_runtime.behaviours import netports
from specstack_runtime.behaviours import network as net
from specstack_runtime.bus import Envelope, InProcessBus
from specstack_runtime.context import Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.messaging import InvalidMessage, check, shaped
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.statefile import flush_all
from tests.aio import settle
from tests.runtime.netvol_fakes import (
    interaction,
    make_call,
    make_rt,
    make_store,
    stack_info,
    wire,
)
from tests.runtime.test_network import Neutron, run, serve, writable

# -- steps and agents ---------------------------------------------------------------------------


async def cast_as_spec(call: Any, sequence: str, number: int, message: str) -> None:
    """The cast of `message` in step `number` of the sequence, as the spec binds it: the
    generic step with the step's `with:` payload."""
    step = next(s for s in call.rt.info.sequences[sequence]["steps"] if s["number"] == number)
    found = next(t for t in step["then"] if t["message"] == message)
    ix = interaction(call, message, str(number))
    await registry.get("flow.amqp-cast")(replace(ix, bindings=found["bindings"]))


def test_step_payloads_match_the_message_schemas(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        await n.subnet(network["id"])
        port = await n.port(network["id"])  # unbound: binding:host_id is ""
        info = n.rt.info
        # the port as the messages' Port type carries it: its properties only, no nulls
        shown = shaped(info, "Port", {**port, "device_id": None})
        assert shown == {
            "id": port["id"],
            "network_id": network["id"],
            "mac_address": port["mac_address"],
            "device_owner": "",
            "binding:host_id": "",
            "fixed_ips": [
                {"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]}
                for f in port["fixed_ips"]
            ],
        }
        check(info, "port_create_end", "payload", {"port": shown})
        payload = netports.agent_payload(info, port, {**network, "provider:segmentation_id": 7})
        assert payload["network_type"] == "vxlan" and payload["segmentation_id"] == 7
        check(info, "port_update", "payload", payload)
        with pytest.raises(InvalidMessage):
            check(info, "port_update", "payload", {**payload, "extra": 1})

    run(tmp_path, scenario)


def test_flow_steps_reach_the_agents_and_their_files(tmp_path: Path) -> None:
    async def main() -> None:
        info = stack_info()
        store = make_store(info, "neutron")
        async with InProcessBus() as bus:
            server_rt = make_rt(info, "neutron-server", tmp_path, store=store, bus=bus)
            dhcp_rt = make_rt(info, "neutron-dhcp-agent", tmp_path, bus=bus)
            l2_one = make_rt(info, "neutron-l2-agent", tmp_path, bus=bus, host="compute-1")
            l2_two = make_rt(info, "neutron-l2-agent", tmp_path, bus=bus, host="compute-2")
            for rt in (dhcp_rt, l2_one, l2_two):
                await wire(bus, rt)
            # what a host's agent is handed: a port's update only if it is or was on it
            seen: dict[str, list[str]] = {"compute-1": [], "compute-9": []}
            topic = info.messages["port_update"]["topic"]
            for host, got in seen.items():

                async def record(env: Envelope, got: list[str] = got) -> None:
                    got.append(str(env.payload["port"]["binding:host_id"]))

                await bus.subscribe(topic, record, host=host, fanout=True)
            n = Neutron(server_rt)
            network = await n.network()
            await n.subnet(network["id"])
            await n.port(network["id"])  # another port already in the hosts file
            port = await n.port(
                network["id"],
                device_id="0c4e3f6a-1d2b-4c5d-8e9f-a0b1c2d3e4f5",
                **{"binding:host_id": "compute-1"},  # type: ignore[arg-type]
            )
            call = n.last_call  # the createPort call and its vars, as in step 14
            await cast_as_spec(call, "boot-vm", 14, "port_create_end")
            await net.notify_port_update(interaction(call, "port_update", "14.2"))

            host_file = tmp_path / "dhcp" / network["id"] / "host"
            l2_file = tmp_path / "l2" / "compute-1.json"

            async def delivered() -> bool:
                return host_file.exists() and l2_file.exists()

            await settle(delivered)
            ip = port["fixed_ips"][0]["ip_address"]
            line = f"{port['mac_address']},host-{ip.replace('.', '-')},{ip}"
            assert host_file.read_text().splitlines() == [line]
            wired = json.loads(l2_file.read_text())
            assert wired["host"] == "compute-1"
            assert wired["ports"][port["id"]]["status"] == "wired"
            assert wired["ports"][port["id"]]["network_type"] == "vxlan"
            assert isinstance(wired["ports"][port["id"]]["segmentation_id"], int)
            assert not (tmp_path / "l2" / "compute-2.json").exists()  # not its port
            assert bus.failure_count == 0

            # rebinding by PUT (no steps in the spec): the port moves between L2 agents
            await n.op(
                serve,
                "updatePort",
                200,
                path_params={"port_id": port["id"]},
                body={"port": {"binding:host_id": "compute-2"}},
            )
            l2_two_file = tmp_path / "l2" / "compute-2.json"

            async def moved() -> bool:
                if not l2_two_file.exists():
                    return False
                here = json.loads(l2_two_file.read_text())["ports"]
                there = json.loads(l2_file.read_text())["ports"]
                return port["id"] in here and port["id"] not in there

            await settle(moved)
            # compute-1 heard of its binding and of the move away; compute-9 of nothing
            assert seen == {"compute-1": ["compute-1", "compute-2"], "compute-9": []}

            # delete-vm steps 9.1/9.2
            del_call = make_call(server_rt, "deletePort", path_params={"port_id": port["id"]})
            await serve(del_call)
            await cast_as_spec(del_call, "delete-vm", 9, "port_delete_end")
            await cast_as_spec(del_call, "delete-vm", 9, "port_delete")

            async def removed() -> bool:
                state = json.loads(l2_two_file.read_text())
                return bool(host_file.read_text() == "" and state["ports"] == {})

            await settle(removed)
            assert bus.failure_count == 0
            assert not list((tmp_path / "dhcp" / network["id"]).glob(".*.tmp"))
        store.close()

    asyncio.run(main())


def test_agent_handlers_directly(tmp_path: Path) -> None:
    async def main() -> None:
        info = stack_info()
        dhcp = make_rt(info, "neutron-dhcp-agent", tmp_path)
        l2 = make_rt(info, "neutron-l2-agent", tmp_path, host="compute-2")

        def settled(path: Path) -> Path:
            flush_all(dhcp.shared)  # agents write their files behind; flush before reading
            flush_all(l2.shared)
            return path

        def call(rt: ServiceRuntime, payload: dict[str, Any]) -> Any:
            c = make_call(rt, "m", who=None)
            c.payload = payload
            return c

        port = {
            "id": "p1",
            "network_id": "n1",
            "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": [
                {"subnet_id": "s4", "ip_address": "10.0.0.5"},
                {"subnet_id": "s6", "ip_address": "fd00::5"},
            ],
        }
        await net.dhcp_port_create(call(dhcp, {"port": port}))
        await net.dhcp_port_create(call(dhcp, {"port": port}))  # idempotent
        host = tmp_path / "dhcp" / "n1" / "host"
        assert settled(host).read_text().splitlines() == [
            "fa:16:3e:00:00:01,host-10-0-0-5,10.0.0.5",
            "fa:16:3e:00:00:01,host-fd00--5,[fd00::5]",
        ]
        await net.dhcp_port_delete(call(dhcp, {"port_id": "p1", "network_id": "n1"}))
        await net.dhcp_port_delete(call(dhcp, {"port_id": "p1", "network_id": "n1"}))
        assert settled(host).read_text() == ""
        with pytest.raises(ValueError):
            await net.dhcp_port_delete(call(dhcp, {"port_id": "p1", "network_id": "../x"}))

        bound_here = {**port, "binding:host_id": "compute-2"}
        await net.l2_port_update(call(l2, {"port": bound_here}))
        state = tmp_path / "l2" / "compute-2.json"
        assert "p1" in json.loads(settled(state).read_text())["ports"]
        # the port moved to another host: this agent unwires it
        await net.l2_port_update(call(l2, {"port": {**port, "binding:host_id": "compute-1"}}))
        assert json.loads(settled(state).read_text())["ports"] == {}
        await net.l2_port_update(call(l2, {"port": bound_here}))
        await net.l2_port_delete(call(l2, {"port_id": "p1"}))
        await net.l2_port_delete(call(l2, {"port_id": "unknown"}))
        assert json.loads(settled(state).read_text())["ports"] == {}

    asyncio.run(main())


def test_steps_without_a_port_fail_cleanly(tmp_path: Path) -> None:
    from specstack_runtime.errors import StepFailed

    async def scenario(n: Neutron) -> None:
        call = make_call(n.rt, "createPort")
        with pytest.raises(StepFailed):
            await net.notify_port_update(interaction(call, "port_update"))
        with pytest.raises(StepFailed, match=r"\{port\.id\} is not set"):
            await cast_as_spec(call, "boot-vm", 14, "port_create_end")

    run(tmp_path, scenario)


# -- no client input gives a 500 -----------------------------------------------------------------

JUNK: list[Any] = [None, 0, "x", [], {}, {"a": None}, [{}], {"start": 1}, True, -1, "10.0.0.0/8"]


def test_junk_input_never_escapes_as_anything_but_an_api_error(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        subnet = await n.subnet(network["id"])
        port = await n.port(network["id"])
        targets: list[tuple[Callable[..., Awaitable[Reply]], str, str, dict[str, str]]] = [
            (serve, "createNetwork", "network", {}),
            (serve, "updateNetwork", "network", {"network_id": network["id"]}),
            (serve, "createSubnet", "subnet", {}),
            (serve, "updateSubnet", "subnet", {"subnet_id": subnet["id"]}),
            (serve, "createPort", "port", {}),
            (serve, "updatePort", "port", {"port_id": port["id"]}),
        ]
        attrs = {
            "network": writable(n.rt, "network"),
            "subnet": writable(n.rt, "subnet"),
            "port": writable(n.rt, "port"),
        }
        for fn, op, resource, params in targets:
            for attr in attrs[resource]:
                for value in JUNK:
                    body: dict[str, Any] = {resource: {attr: value}}
                    if op == "createSubnet":
                        body[resource] = {
                            "network_id": network["id"],
                            "ip_version": 4,
                            "cidr": "10.99.0.0/24",
                            attr: value,
                        }
                    if op == "createPort":
                        body[resource] = {"network_id": network["id"], attr: value}
                    try:
                        reply = await fn(make_call(n.rt, op, body=body, path_params=params))
                    except ApiError as exc:
                        assert 400 <= exc.status < 500, (op, attr, value, exc.message)
                    else:
                        assert reply.status < 300
                        await cleanup(n, op, reply)

    run(tmp_path, scenario)


async def cleanup(n: Neutron, op: str, reply: Reply) -> None:
    """Undo a junk create that happened to be valid, so later ones do not collide."""
    if op == "createSubnet":
        sid = reply.body["subnet"]["id"]
        await serve(make_call(n.rt, "deleteSubnet", path_params={"subnet_id": sid}))
    elif op == "createPort":
        pid = reply.body["port"]["id"]
        await serve(make_call(n.rt, "deletePort", path_params={"port_id": pid}))


def test_ipv4_pool_defaults_come_from_ipam(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        subnet = await n.subnet(network["id"], "172.16.0.0/16", gateway_ip="172.16.255.254")
        pools = subnet["allocation_pools"]
        assert pools == [{"start": "172.16.0.1", "end": "172.16.255.253"}]
        assert ipaddress.ip_address(pools[0]["start"]) in ipaddress.ip_network(subnet["cidr"])

    run(tmp_path, scenario)
