"""nova-api's other resources through the engine: flavors, key pairs, zones, hypervisors,
services, volume attachments and interfaces."""

from __future__ import annotations

import re
import uuid

import pytest

from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound
from tests.aio import arun
from tests.runtime.test_compute_api import Api
from tests.runtime.test_compute_api import api as api  # the fixture
from tests.runtime.test_compute_kit import (
    NETWORK_ID,
    USER,
    VOLUME_ID,
    add_compute_node,
    auth_ctx,
    seed_flavors,
)

# -- flavors ---------------------------------------------------------------------------


@arun
async def test_flavors(api: Api) -> None:
    await seed_flavors(api.store)
    listing = (await api.run("listFlavors")).body["flavors"]
    assert [f["id"] for f in listing] == ["1", "2", "3", "4", "5"]
    # no microversion negotiated (not over HTTP): the newest shapes (2.55's description,
    # 2.75's swap of 0 for none)
    assert set(listing[0]) == {"id", "links", "name", "description"}
    detail = (await api.run("listFlavorsDetailed", query={"is_public": "None"})).body["flavors"]
    assert detail[0]["swap"] == 0 and detail[0]["os-flavor-access:is_public"] is True
    big = (await api.run("listFlavorsDetailed", query={"minRam": "8192"})).body["flavors"]
    assert [f["name"] for f in big] == ["m1.large", "m1.huge"]
    with pytest.raises(BadRequest, match="Invalid minRam filter"):
        await api.run("listFlavors", query={"minRam": "lots"})
    with pytest.raises(BadRequest, match="is_public"):
        await api.run("listFlavors", query={"is_public": "perhaps"})
    assert (await api.run("showFlavor", path_params={"flavor_id": "1"})).body["flavor"][
        "ram"
    ] == 512
    with pytest.raises(NotFound, match=re.escape("Flavor m1.tiny could not be found.")):
        await api.run("showFlavor", path_params={"flavor_id": "m1.tiny"})

    # extra specs (a spec query over the flavor row): its values as strings; 404 for none
    assert await api.store.update(
        "flavors", "2", {"extra_specs": {"hw:cpu_policy": "shared", "n": 2}}
    )
    specs = (await api.run("listFlavorExtraSpecs", path_params={"flavor_id": "2"})).body
    assert specs == {"extra_specs": {"hw:cpu_policy": "shared", "n": "2"}}
    plain = (await api.run("listFlavorExtraSpecs", path_params={"flavor_id": "1"})).body
    assert plain == {"extra_specs": {}}
    with pytest.raises(NotFound, match=re.escape("Flavor 99 could not be found.")):
        await api.run("listFlavorExtraSpecs", path_params={"flavor_id": "99"})

    new = {"flavor": {"name": "m1.nano", "ram": 64, "vcpus": 1, "disk": 0, "id": 42}}
    with pytest.raises(Forbidden):
        await api.run("createFlavor", body=new)
    admin = auth_ctx(admin=True)
    created = (await api.run("createFlavor", body=new, auth=admin)).body["flavor"]
    assert created["id"] == "42" and created["OS-FLV-EXT-DATA:ephemeral"] == 0
    with pytest.raises(Conflict, match=re.escape("Flavor with name m1.nano already exists.")):
        await api.run("createFlavor", body=new, auth=admin)
    dup_id = {"flavor": {**new["flavor"], "name": "other"}}
    with pytest.raises(Conflict, match=re.escape("Flavor with ID 42 already exists.")):
        await api.run("createFlavor", body=dup_id, auth=admin)
    generated = {"flavor": {"name": "auto", "ram": 64, "vcpus": 1, "disk": 0}}
    assert (
        len((await api.run("createFlavor", body=generated, auth=admin)).body["flavor"]["id"]) == 36
    )
    assert (
        await api.run("deleteFlavor", path_params={"flavor_id": "42"}, auth=admin)
    ).status == 202
    with pytest.raises(NotFound):
        await api.run("deleteFlavor", path_params={"flavor_id": "42"}, auth=admin)


# -- key pairs -------------------------------------------------------------------------


@arun
async def test_keypairs_generate_import_show_delete(api: Api) -> None:
    reply = await api.run("createKeypair", body={"keypair": {"name": "k1"}})
    generated = reply.body["keypair"]
    assert generated["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert generated["public_key"].startswith("ssh-rsa ")
    assert len(generated["fingerprint"].split(":")) == 16 and generated["user_id"] == USER
    imported = (
        await api.run(
            "createKeypair", body={"keypair": {"name": "k2", "public_key": generated["public_key"]}}
        )
    ).body["keypair"]
    assert "private_key" not in imported and imported["fingerprint"] == generated["fingerprint"]
    with pytest.raises(Conflict, match=re.escape("Key pair 'k1' already exists.")):
        await api.run("createKeypair", body={"keypair": {"name": "k1"}})
    with pytest.raises(BadRequest, match="unsafe characters"):
        await api.run("createKeypair", body={"keypair": {"name": "bad/name"}})
    with pytest.raises(BadRequest, match="failed to generate fingerprint"):
        await api.run("createKeypair", body={"keypair": {"name": "k3", "public_key": "ssh-rsa xx"}})
    with pytest.raises(BadRequest):  # the request schema's: a key is text
        await api.run("createKeypair", body={"keypair": {"name": "k3", "public_key": 7}})
    names = [k["keypair"]["name"] for k in (await api.run("listKeypairs")).body["keypairs"]]
    assert names == ["k1", "k2"]
    shown = (await api.run("showKeypair", path_params={"keypair_name": "k2"})).body["keypair"]
    assert shown["deleted"] is False and isinstance(shown["id"], int)
    # no microversion negotiated (not over HTTP): the newest status, 204 from 2.2
    assert (await api.run("deleteKeypair", path_params={"keypair_name": "k2"})).status == 204
    with pytest.raises(NotFound):
        await api.run("showKeypair", path_params={"keypair_name": "k2"})
    # The key pair can now be used to boot.
    await seed_flavors(api.store)
    row = await api.boot(key_name="k1")
    assert row["key_name"] == "k1"


# -- zones, hypervisors ----------------------------------------------------------------


@arun
async def test_availability_zones_and_hypervisors(api: Api) -> None:
    await add_compute_node(api.store, "compute-1")
    await add_compute_node(api.store, "compute-2", zone="az2", heartbeat=1.0)
    zones = (await api.run("listAvailabilityZones")).body["availabilityZoneInfo"]
    assert zones == [
        {"zoneName": "az2", "zoneState": {"available": False}, "hosts": None},
        {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None},
    ]
    # the zones' hosts: nova's rule allows administrators only (clients fall back on 403)
    with pytest.raises(Forbidden, match="listAvailabilityZonesDetailed"):
        await api.run("listAvailabilityZonesDetailed")
    admin = auth_ctx(admin=True)
    detail = (await api.run("listAvailabilityZonesDetailed", auth=admin)).body
    az2, nova = detail["availabilityZoneInfo"]
    assert az2["zoneName"] == "az2" and nova["zoneState"] == {"available": True}
    assert list(nova["hosts"]) == ["compute-1"] and list(az2["hosts"]) == ["compute-2"]
    assert az2["hosts"]["compute-2"]["nova-compute"]["available"] is False
    assert nova["hosts"]["compute-1"]["nova-compute"]["active"] is True
    with pytest.raises(Forbidden):
        await api.run("listHypervisors")
    hvs = (await api.run("listHypervisors", auth=auth_ctx(admin=True))).body["hypervisors"]
    # no microversion negotiated: the newest ids (2.53's UUIDs, one a node)
    assert [{k: v for k, v in h.items() if k != "id"} for h in hvs] == [
        {"hypervisor_hostname": "compute-1", "state": "up", "status": "enabled"},
        {"hypervisor_hostname": "compute-2", "state": "down", "status": "enabled"},
    ]
    assert len({str(uuid.UUID(h["id"])) for h in hvs}) == 2
    # what a claim of a 2-vCPU, 2 GB, 20 GB server leaves on compute-1's record
    used = {"vcpus_used": 2, "memory_mb_used": 2048, "local_gb_used": 20, "running_vms": 1}
    assert await api.store.update("compute_nodes", "compute-1", used) is not None
    admin = auth_ctx(admin=True)
    detail = (await api.run("listHypervisorsDetailed", auth=admin)).body["hypervisors"]
    assert [(h["id"], h["state"], h["service"]["host"]) for h in detail] == [
        (hvs[0]["id"], "up", "compute-1"),
        (hvs[1]["id"], "down", "compute-2"),
    ]
    assert all(h["vcpus"] == 8 and h["memory_mb"] == 16384 for h in detail)
    busy = detail[0]
    assert (busy["vcpus_used"], busy["free_ram_mb"], busy["free_disk_gb"]) == (2, 14336, 180)
    assert detail[1]["running_vms"] == 0 and detail[1]["free_ram_mb"] == 16384
    stats = (await api.run("getHypervisorStatistics", auth=admin)).body["hypervisor_statistics"]
    assert stats == {
        "count": 2,
        "vcpus": 16,
        "vcpus_used": 2,
        "memory_mb": 32768,
        "memory_mb_used": 2048,
        "free_ram_mb": 30720,
        "local_gb": 400,
        "local_gb_used": 20,
        "free_disk_gb": 380,
        "disk_available_least": 380,
        "running_vms": 1,
        "current_workload": 0,
    }
    with pytest.raises(Forbidden):
        await api.run("getHypervisorStatistics")
    services = (await api.run("listComputeServices", auth=admin)).body["services"]
    assert [(v["id"], v["binary"], v["host"], v["zone"], v["state"]) for v in services] == [
        (detail[0]["service"]["id"], "nova-compute", "compute-1", "nova", "up"),
        (detail[1]["service"]["id"], "nova-compute", "compute-2", "az2", "down"),
    ]
    assert services[0]["status"] == "enabled" and services[0]["disabled_reason"] is None
    only = await api.run("listComputeServices", auth=admin, query={"host": "compute-2"})
    assert [v["host"] for v in only.body["services"]] == ["compute-2"]
    none = await api.run("listComputeServices", auth=admin, query={"binary": "nova-scheduler"})
    assert none.body["services"] == []


# -- volume attachments, interfaces ------------------------------------------------------


@arun
async def test_volume_attachments(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    sid = {"server_id": row["id"]}
    body = {"volumeAttachment": {"volumeId": VOLUME_ID, "device": None}}
    # a building server (not one of the spec's `attachable` vm_states, a task running)
    building = f"Cannot 'attach_volume' instance {row['id']} while it is in vm_state building"
    with pytest.raises(Conflict, match=re.escape(building + ", task_state scheduling")):
        await api.run("attachVolume", path_params=sid, body=body)
    row = await api.set(
        row,
        vm_state="active",
        task_state=None,
        host="compute-1",
        launched_at="2026-01-01T00:00:00.000000",
    )
    att = {
        "attachment_id": "a1",
        "volume_id": VOLUME_ID,
        "device": "/dev/vdb",
        "connection_info": {"driver_volume_type": "iscsi", "data": {}},
    }
    api.bus.replies["attach_volume"] = {"attachment": att}
    reply = await api.run("attachVolume", path_params=sid, body=body)
    # no microversion negotiated: the newest shape (2.79's delete_on_termination)
    assert reply.body == {
        "volumeAttachment": {
            "id": VOLUME_ID,
            "serverId": row["id"],
            "volumeId": VOLUME_ID,
            "device": "/dev/vdb",
            "delete_on_termination": False,
        }
    }
    sent = api.bus.sent[-1]
    assert sent[:2] == ("call", "attach_volume") and sent[3] == "compute-1"
    with pytest.raises(NotFound, match="could not be found"):
        await api.run(
            "attachVolume",
            path_params=sid,
            body={"volumeAttachment": {"volumeId": "44444444-4444-4444-8444-444444444444"}},
        )
    with pytest.raises(BadRequest, match="device path"):
        await api.run(
            "attachVolume",
            path_params=sid,
            body={"volumeAttachment": {"volumeId": VOLUME_ID, "device": "vdb"}},
        )
    await api.set(row, attachments=[att])
    listing = (await api.run("listVolumeAttachments", path_params=sid)).body
    assert listing["volumeAttachments"][0]["device"] == "/dev/vdb"
    shown = await api.run("showVolumeAttachment", path_params={**sid, "volume_id": VOLUME_ID})
    assert shown.body["volumeAttachment"]["volumeId"] == VOLUME_ID
    with pytest.raises(NotFound):
        await api.run("showVolumeAttachment", path_params={**sid, "volume_id": "nope"})
    with pytest.raises(Conflict, match="already attached"):
        await api.run("attachVolume", path_params=sid, body=body)
    api.bus.replies["detach_volume"] = {"volume_id": VOLUME_ID}
    reply = await api.run("detachVolume", path_params={**sid, "volume_id": VOLUME_ID})
    assert reply.status == 202 and api.bus.sent[-1][1] == "detach_volume"
    with pytest.raises(NotFound):
        await api.run("detachVolume", path_params={**sid, "volume_id": "nope"})


@arun
async def test_interfaces_come_from_neutron(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    api.services.ports["p1"] = {
        "id": "p1",
        "network_id": NETWORK_ID,
        "mac_address": "fa:16:3e:00:00:09",
        "device_id": row["id"],
        "status": "ACTIVE",
        "fixed_ips": [
            {"subnet_id": "55555555-5555-4555-8555-555555555555", "ip_address": "10.0.0.9"}
        ],
    }
    reply = await api.run("listServerInterfaces", path_params={"server_id": row["id"]}, check=False)
    (iface,) = reply.body["interfaceAttachments"]
    assert iface["port_id"] == "p1" and iface["net_id"] == NETWORK_ID
    assert (
        iface["mac_addr"] == "fa:16:3e:00:00:09"
        and iface["fixed_ips"][0]["ip_address"] == "10.0.0.9"
    )


@arun
async def test_interfaces_are_the_recorded_ones_when_neutron_cannot_answer(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    vif = {
        "id": "p2",
        "address": "fa:16:3e:00:00:0a",
        "network_id": NETWORK_ID,
        "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.10"}],
        "status": "DOWN",
    }
    await api.set(row, vifs=[vif])
    api.services.fail["listPorts"] = 503  # the query's `ask` is optional: reply is null
    reply = await api.run("listServerInterfaces", path_params={"server_id": row["id"]}, check=False)
    assert reply.body["interfaceAttachments"] == [
        {
            "port_id": "p2",
            "net_id": NETWORK_ID,
            "mac_addr": "fa:16:3e:00:00:0a",
            "port_state": "DOWN",
            "fixed_ips": [{"ip_address": "10.0.0.10", "subnet_id": "s1"}],
        }
    ]
