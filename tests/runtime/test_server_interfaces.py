"""A server's port interfaces (os-interface) attached and detached through the nova cell
(issue 15): the user's port bound and kept, a port made on a network and deleted, the
guest's links, the server's addresses, nova's refusals, and the instance actions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generated.drivers.types import Instance
from specstack_runtime.behaviours import nova_interfaces  # noqa: F401  (registers them)
from specstack_runtime.context import Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.resources import records
from specstack_runtime.virt import VirtError
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import NETWORK_ID, msg_call, seed_flavors
from tests.runtime.test_nova_cell import boot_through_the_cell

USER_PORT = "44444444-4444-4444-8444-444444444444"
USER_MAC = "fa:16:3e:aa:bb:cc"
OTHER_NET = "55555555-5555-4555-8555-555555555555"
BUSY_PORT = "66666666-6666-4666-8666-666666666666"


def user_port(**fields: Any) -> dict[str, Any]:
    return {
        "id": USER_PORT,
        "network_id": NETWORK_ID,
        "mac_address": USER_MAC,
        "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.99"}],
        "status": "DOWN",
        "device_id": "",
        "device_owner": "",
        **fields,
    }


async def _booted(cell: NovaCell, **server: Any) -> dict[str, Any]:
    await seed_flavors(cell.store)
    row = await boot_through_the_cell(cell, **server)
    assert row["vm_state"] == "active", (row["fault"], cell.errors)
    return row


def _links(cell: NovaCell, row: dict[str, Any]) -> list[str]:
    driver: FakeHypervisor = cell.computes[row["host"]].driver
    return [v["address"] for v in driver.guests[row["id"]]["vifs"]]


def _addrs(row: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["addr"], a["OS-EXT-IPS-MAC:mac_addr"]) for a in row["addresses"]["private"]]


async def _server(cell: NovaCell, sid: str) -> dict[str, Any]:
    row = await cell.store.get("instances", sid)
    assert row is not None
    return row


@arun
async def test_a_users_port_is_bound_plugged_shown_then_unbound_and_kept(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        row = await _booted(cell)
        sid = {"server_id": row["id"]}
        (booted_port,) = row["ports"]
        cell.services.ports[USER_PORT] = user_port()

        body = {"interfaceAttachment": {"port_id": USER_PORT}}
        reply, call = await cell.operation("attachInterface", path_params=sid, body=body)
        assert reply.status == 200
        assert reply.body["interfaceAttachment"] == {
            "port_id": USER_PORT,
            "net_id": NETWORK_ID,
            "mac_addr": USER_MAC,
            "port_state": "DOWN",
            "fixed_ips": [{"ip_address": "10.0.0.99", "subnet_id": "s1"}],
        }
        port = cell.services.ports[USER_PORT]
        assert (port["device_id"], port["device_owner"]) == (row["id"], "compute:nova")
        assert port["binding:host_id"] == row["host"]
        assert _links(cell, row)[-1] == USER_MAC  # hot-plugged into the running guest
        saved = await _server(cell, row["id"])
        assert [v["id"] for v in saved["vifs"]] == [booted_port, USER_PORT]
        assert saved["ports"] == [booted_port]  # the user's port is not nova's to delete
        assert ("10.0.0.99", USER_MAC) in _addrs(saved)
        listing = (await cell.operation("listServerInterfaces", path_params=sid))[0].body
        assert USER_PORT in [i["port_id"] for i in listing["interfaceAttachments"]]

        # nova-api's action of the request, and the compute host's event in it
        call.reply = Reply(200, reply.body)
        await records.handled(call, 1.0e9)
        event = msg_call(
            cell.computes[row["host"]], "attach_interface", {"instance": {"uuid": row["id"]}}
        )
        event.global_request_id = call.global_request_id
        await records.handled(event, 1.0e9)
        (action,) = [
            a for a in await cell.store.list("instance_actions") if a["action"] != "create"
        ]
        assert (action["action"], action["request_id"]) == ("attach_interface", call.request_id)
        assert [(e["event"], e["result"]) for e in action["events"]] == [
            ("compute_attach_interface", "Success")
        ]

        # the same port again: in use (by this server now)
        with pytest.raises(ApiError) as refused:
            await cell.operation("attachInterface", path_params=sid, body=body)
        assert (refused.value.status, str(refused.value)) == (
            409,
            f"Port {USER_PORT} is still in use.",
        )

        reply, _ = await cell.operation(
            "detachInterface", path_params={**sid, "port_id": USER_PORT}
        )
        assert reply.status == 202
        port = cell.services.ports[USER_PORT]  # kept, unbound
        assert (port["device_id"], port["device_owner"], port["binding:host_id"]) == ("", "", "")
        assert USER_MAC not in _links(cell, row)
        saved = await _server(cell, row["id"])
        assert [v["id"] for v in saved["vifs"]] == [booted_port]
        assert ("10.0.0.99", USER_MAC) not in _addrs(saved)
        with pytest.raises(ApiError) as again:
            await cell.operation("detachInterface", path_params={**sid, "port_id": USER_PORT})
        assert (again.value.status, str(again.value)) == (
            404,
            f"Port id {USER_PORT} could not be found.",
        )
    finally:
        await cell.stop()


@arun
async def test_a_port_made_on_a_network_is_deleted_on_detach(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        row = await _booted(cell, security_groups=[{"name": "sg-default"}])  # named by id
        sid = {"server_id": row["id"]}
        body = {
            "interfaceAttachment": {
                "net_id": NETWORK_ID,
                "fixed_ips": [{"ip_address": "10.0.0.50"}],
            }
        }
        reply, _ = await cell.operation("attachInterface", path_params=sid, body=body)
        made = reply.body["interfaceAttachment"]
        assert made["net_id"] == NETWORK_ID and made["port_state"] == "ACTIVE"
        assert made["fixed_ips"] == [{"ip_address": "10.0.0.50", "subnet_id": "s1"}]
        port = cell.services.ports[made["port_id"]]
        assert (port["device_id"], port["device_owner"]) == (row["id"], "compute:nova")
        assert port["security_groups"] == ["sg-default"]  # the server's groups
        saved = await _server(cell, row["id"])
        assert made["port_id"] in saved["ports"]  # nova's: deleted with the interface
        assert ("10.0.0.50", made["mac_addr"]) in _addrs(saved)
        assert _links(cell, row)[-1] == made["mac_addr"]

        await cell.operation("detachInterface", path_params={**sid, "port_id": made["port_id"]})
        assert made["port_id"] not in cell.services.ports
        saved = await _server(cell, row["id"])
        assert made["port_id"] not in saved["ports"] + [v["id"] for v in saved["vifs"]]
        assert made["mac_addr"] not in _links(cell, row)

        # no port nor network named: the project's only network
        reply, _ = await cell.operation(
            "attachInterface", path_params=sid, body={"interfaceAttachment": {}}
        )
        assert reply.body["interfaceAttachment"]["net_id"] == NETWORK_ID
        assert reply.body["interfaceAttachment"]["port_id"] in cell.services.ports
    finally:
        await cell.stop()


@arun
async def test_bad_requests_are_refused_and_change_nothing(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        row = await _booted(cell)
        sid = {"server_id": row["id"]}
        cell.services.ports[USER_PORT] = user_port()
        cell.services.ports[BUSY_PORT] = user_port(id=BUSY_PORT, device_id="another-server")
        cell.services.absent_networks.add(OTHER_NET)
        ports_before = {k: dict(v) for k, v in cell.services.ports.items()}
        before = await _server(cell, row["id"])

        async def refused(attachment: Any, status: int, message: str) -> None:
            with pytest.raises(ApiError) as err:
                await cell.operation(
                    "attachInterface", path_params=sid, body={"interfaceAttachment": attachment}
                )
            assert (err.value.status, str(err.value)) == (status, message)

        both = {"port_id": USER_PORT, "net_id": NETWORK_ID}
        await refused(both, 400, "Must not input both network_id and port_id")
        cell.services.networks.append({"id": OTHER_NET, "name": "public"})
        ambiguous = "More than one possible network found. Specify network ID(s) to select which one(s) to connect to."
        await refused({}, 400, ambiguous)
        cell.services.networks.clear()
        await refused(
            {"port_id": "nope"},
            400,
            "Invalid input for field/attribute port_id. Value: nope. 'nope' is not a 'uuid'",
        )
        ips = [{"ip_address": "10.0.0.7"}]
        await refused(
            {"port_id": USER_PORT, "fixed_ips": ips},
            400,
            "Must input network_id when request IP address",
        )
        await refused(
            {"net_id": NETWORK_ID, "fixed_ips": [{"ip_address": "10.0.0.300"}]},
            400,
            "Invalid input for field/attribute fixed_ips: one fixed IP address is allowed.",
        )
        await refused({"net_id": OTHER_NET}, 404, f"Network {OTHER_NET} could not be found.")
        await refused({"port_id": "7" * 8 + "-7777-4777-8777-" + "7" * 12}, 404,
                      f"Port id {'7' * 8}-7777-4777-8777-{'7' * 12} could not be found.")  # fmt: skip
        await refused({"port_id": BUSY_PORT}, 409, f"Port {BUSY_PORT} is still in use.")

        await cell.store.update("instances", row["id"], {"locked": True, "locked_by": "owner"})
        await refused({"port_id": USER_PORT}, 409, f"Instance {row['id']} is locked")
        await cell.store.update("instances", row["id"], {"locked": False, "vm_state": "suspended"})
        await refused(
            {"port_id": USER_PORT},
            409,
            f"Cannot 'attach_interface' instance {row['id']} while it is in vm_state suspended, task_state None",
        )
        with pytest.raises(ApiError) as detach:
            await cell.operation("detachInterface", path_params={**sid, "port_id": row["ports"][0]})
        assert detach.value.status == 409 and "'detach_interface'" in str(detach.value)
        await cell.store.update("instances", row["id"], {"vm_state": "active"})
        with pytest.raises(ApiError) as unknown:
            await cell.operation("detachInterface", path_params={**sid, "port_id": USER_PORT})
        assert unknown.value.status == 404

        assert cell.services.ports == ports_before
        after = await _server(cell, row["id"])
        assert (after["vifs"], after["ports"], after["addresses"]) == (
            before["vifs"],
            before["ports"],
            before["addresses"],
        )
    finally:
        await cell.stop()


@arun
async def test_deleting_the_server_keeps_an_attached_users_port(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        row = await _booted(cell)
        sid = {"server_id": row["id"]}
        cell.services.ports[USER_PORT] = user_port()
        body = {"interfaceAttachment": {"port_id": USER_PORT}}
        await cell.operation("attachInterface", path_params=sid, body=body)
        await cell.operation("deleteServer", sequence="delete-vm", path_params=sid)
        await cell.wait_for(row["id"], lambda r: r["vm_state"] == "deleted")
        assert list(cell.services.ports) == [USER_PORT]  # the booted port (nova's) went
        guest: Instance = {"uuid": row["id"], "name": "vm1"}
        assert guest["uuid"] not in cell.computes[row["host"]].driver.guests
    finally:
        await cell.stop()


@arun
async def test_a_guest_refusing_the_port_undoes_the_binding(tmp_path: Path) -> None:
    """The hypervisor fails to plug: nova's new port is deleted, the user's unbound, the
    server unchanged, and the caller hears the driver's reason."""
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        row = await _booted(cell)
        driver = cell.computes[row["host"]].driver

        async def refuse(instance: Instance, network_info: list[Any]) -> None:
            raise VirtError("no PCI slot left")

        driver.plug_vifs = refuse
        cell.services.ports[USER_PORT] = user_port()
        ports_before = {k: dict(v) for k, v in cell.services.ports.items()}
        for attachment in ({"port_id": USER_PORT}, {"net_id": NETWORK_ID}):
            with pytest.raises(ApiError) as err:
                await cell.operation(
                    "attachInterface",
                    path_params={"server_id": row["id"]},
                    body={"interfaceAttachment": attachment},
                )
            assert "no PCI slot left" in str(err.value)
        assert list(cell.services.ports) == list(ports_before)
        assert cell.services.ports[USER_PORT]["device_id"] == ""
        saved = await _server(cell, row["id"])
        assert (saved["vifs"], saved["ports"]) == (row["vifs"], row["ports"])
    finally:
        await cell.stop()
