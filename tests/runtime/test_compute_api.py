"""nova-api's operation behaviours: validation, the instance row, views at microversion 2.1."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import compute
from specstack_runtime.bus import RemoteError
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound, StepFailed
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store
from tests.aio import arun
from tests.runtime.fakes import serve_operation
from tests.runtime.test_compute_kit import (
    IMAGE_ID,
    NETWORK_ID,
    OTHER_PROJECT,
    PROJECT,
    USER,
    VOLUME_ID,
    FakeServices,
    Recorder,
    RecordingBus,
    add_compute_node,
    auth_ctx,
    boot_body,
    check_response,
    interaction,
    make_runtime,
    nova_store,
    op_call,
    response,
    seed_flavors,
    stack_info,
)

IMAGE = {
    "id": IMAGE_ID,
    "status": "active",
    "checksum": "x",
    "size": 1024,
    "min_disk": 0,
    "min_ram": 0,
}

# The server body at 2.1 for a member (openstack-wire.md, nova's 2.1 view).
SERVER_KEYS_21 = {
    "id",
    "name",
    "status",
    "tenant_id",
    "user_id",
    "metadata",
    "hostId",
    "image",
    "flavor",
    "created",
    "updated",
    "addresses",
    "accessIPv4",
    "accessIPv6",
    "links",
    "OS-DCF:diskConfig",
    "key_name",
    "config_drive",
    "OS-EXT-AZ:availability_zone",
    "OS-EXT-STS:task_state",
    "OS-EXT-STS:vm_state",
    "OS-EXT-STS:power_state",
    "OS-SRV-USG:launched_at",
    "OS-SRV-USG:terminated_at",
    "os-extended-volumes:volumes_attached",
}
ADMIN_KEYS = {
    "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:hypervisor_hostname",
    "OS-EXT-SRV-ATTR:instance_name",
}


class Api:
    def __init__(self, tmp_path: Path) -> None:
        self.info = stack_info()
        self.store: Store = nova_store(self.info)
        self.bus = RecordingBus()
        self.services = FakeServices()
        self.rt: ServiceRuntime = make_runtime(
            self.info,
            "nova-api",
            bus=self.bus,
            clients=self.services,
            store=self.store,
            data_dir=tmp_path,
        )

    async def run(self, operation_id: str, *, check: bool = True, **kwargs: Any) -> Any:
        call = op_call(self.rt, operation_id, **kwargs)
        reply = await serve_operation(self.info, "compute", call)
        if check:
            check_response(operation_id, reply)
        return reply

    async def boot(self, image: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
        call = op_call(self.rt, "createServer", body=boot_body(**server))
        call.vars["image"] = dict(image or IMAGE)
        reply = await compute.create_server(call)
        check_response("createServer", reply)
        row = await self.store.get("instances", reply.body["server"]["id"])
        assert row is not None
        return row

    async def set(self, row: dict[str, Any], **changes: Any) -> dict[str, Any]:
        new = await self.store.update("instances", row["id"], changes)
        assert new is not None
        return new


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return Api(tmp_path)


# -- versions -------------------------------------------------------------------------


@arun
async def test_version_documents(api: Api) -> None:
    reply = await api.run("getComputeVersions", auth=None)
    assert reply.status == 200
    v21 = next(v for v in reply.body["versions"] if v["id"] == "v2.1")
    assert (v21["status"], v21["min_version"], v21["version"]) == ("CURRENT", "2.1", "2.1")
    assert v21["links"] == [{"rel": "self", "href": "http://nova.test:8774/v2.1/"}]
    reply = await api.run("getComputeV21", auth=None)
    version = reply.body["version"]
    assert (version["id"], version["min_version"], version["version"]) == ("v2.1", "2.1", "2.1")
    assert {"rel": "self", "href": "http://nova.test:8774/v2.1/"} in version["links"]
    assert version["media-types"][0]["base"] == "application/json"


# -- create ----------------------------------------------------------------------------


@arun
async def test_create_server_writes_the_row_and_answers_202(api: Api) -> None:
    await seed_flavors(api.store)
    call = op_call(api.rt, "createServer", body=boot_body(metadata={"k": "v"}))
    call.vars["image"] = IMAGE
    reply = await compute.create_server(call)
    check_response("createServer", reply)
    assert reply.status == 202
    server = reply.body["server"]
    assert set(server) == {"id", "links", "adminPass", "OS-DCF:diskConfig", "security_groups"}
    assert server["OS-DCF:diskConfig"] == "MANUAL"
    assert server["security_groups"] == [{"name": "default"}]
    assert reply.headers["Location"] == f"http://nova.test:8774/v2.1/servers/{server['id']}"
    row = await api.store.get("instances", server["id"])
    assert row is not None
    assert row["vm_state"] == "building" and row["task_state"] == "scheduling"
    assert row["power_state"] == 0 and row["host"] is None and row["node"] is None
    assert row["project_id"] == PROJECT and row["user_id"] == USER
    assert row["image_ref"] == IMAGE_ID and row["flavor_id"] == "1"
    assert row["flavor"] == {
        "id": "1",
        "name": "m1.tiny",
        "vcpus": 1,
        "ram": 512,
        "disk": 1,
        "ephemeral": 0,
        "swap": 0,
    }
    assert row["requested_networks"] == [{"network_id": NETWORK_ID}]
    assert row["block_device_mapping"][0]["source_type"] == "image"
    assert row["metadata"] == {"k": "v"}
    assert row["addresses"] == {} and row["ports"] == [] and row["attachments"] == []
    assert row["fault"] is None and row["launched_at"] is None
    assert call.vars["instance"]["id"] == server["id"]
    assert call.vars["flavor"]["ram"] == 512


@arun
async def test_schedule_request_casts_a_valid_payload(api: Api) -> None:
    await seed_flavors(api.store)
    call = op_call(api.rt, "createServer", body=boot_body())
    call.vars["image"] = IMAGE
    await compute.create_server(call)
    invoke = Recorder()
    await compute.schedule_request(interaction(call, invoke, label="6"))
    (((payload,), _),) = invoke.calls
    from specstack_runtime.messaging import check

    check(api.info, "schedule_and_build_instances", "payload", payload)
    assert payload["instance"]["uuid"] == call.vars["instance"]["id"]
    assert payload["request_spec"]["flavor"]["ram"] == 512
    assert payload["request_spec"]["image_id"] == IMAGE_ID
    assert payload["requested_networks"] == [{"network_id": NETWORK_ID}]


@arun
async def test_schedule_request_failure_puts_the_instance_in_error(api: Api) -> None:
    await seed_flavors(api.store)
    call = op_call(api.rt, "createServer", body=boot_body())
    await compute.create_server(call)

    async def broken(payload: dict[str, Any]) -> None:
        raise ConnectionError("bus down")

    with pytest.raises(StepFailed):
        await compute.schedule_request(interaction(call, broken))
    row = await api.store.get("instances", call.vars["instance"]["id"])
    assert row is not None and row["vm_state"] == "error"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flavorRef": "99"}, "Flavor 99 could not be found."),
        ({"min_count": 2, "max_count": 2}, "min_count"),
        ({"max_count": 3}, "max_count"),
        ({"networks": [{"uuid": "not-a-uuid"}]}, "network uuid is not in proper format"),
        ({"networks": [{"uuid": NETWORK_ID, "fixed_ip": "10.0.0.300"}]}, "Invalid fixed IP"),
        ({"key_name": "nokey"}, "Keypair nokey not found"),
        ({"name": " padded "}, "name"),
        ({"availability_zone": "elsewhere"}, "availability zone is not available"),
        ({"imageRef": "", "block_device_mapping_v2": []}, "Missing imageRef attribute"),
        ({"user_data": "!!!not base64"}, "User data needs to be valid base 64."),
        ({"accessIPv4": "::1"}, "accessIPv4"),
        (
            {
                "block_device_mapping_v2": [
                    {
                        "uuid": IMAGE_ID,
                        "boot_index": 0,
                        "source_type": "image",
                        "destination_type": "local",
                    },
                    {
                        "uuid": VOLUME_ID,
                        "boot_index": 0,
                        "source_type": "volume",
                        "destination_type": "volume",
                    },
                ]
            },
            "Boot sequence",
        ),
        (
            {
                "block_device_mapping_v2": [
                    {
                        "source_type": "blank",
                        "destination_type": "volume",
                        "volume_size": 1,
                        "boot_index": -1,
                    }
                ]
            },
            "not supported",
        ),
    ],
)
@arun
async def test_create_server_rejects_bad_input_with_400(
    api: Api, change: dict[str, Any], message: str
) -> None:
    await seed_flavors(api.store)
    await add_compute_node(api.store, "compute-1")
    call = op_call(api.rt, "createServer", body=boot_body(**change))
    call.vars["image"] = IMAGE
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        await compute.create_server(call)
    assert await api.store.count("instances") == 0


@arun
async def test_image_checks(api: Api) -> None:
    await seed_flavors(api.store)
    for image, message in (
        ({**IMAGE, "status": "queued"}, "is not active"),
        ({**IMAGE, "min_ram": 1024}, "memory is too small"),
        ({**IMAGE, "size": 2 * 1024**3}, "disk is too small"),
    ):
        call = op_call(api.rt, "createServer", body=boot_body())
        call.vars["image"] = image
        with pytest.raises(BadRequest, match=message):
            await compute.create_server(call)


@arun
async def test_check_image_step(api: Api) -> None:
    call = op_call(api.rt, "createServer", body=boot_body())
    invoke = Recorder(response(200, IMAGE))
    await compute.check_image(interaction(call, invoke, label="4.1"))
    assert invoke.calls == [((), {"image_id": IMAGE_ID, "token": "user-token"})]
    assert call.vars["image"]["id"] == IMAGE_ID
    call = op_call(api.rt, "createServer", body=boot_body(imageRef="cirros"))
    with pytest.raises(BadRequest, match=re.escape("Image cirros could not be found.")):
        await compute.check_image(interaction(call, Recorder(response(404, {"message": "no"}))))
    # Booting from a volume: nothing to check, nothing invoked.
    body = boot_body(
        imageRef="",
        block_device_mapping_v2=[
            {
                "uuid": VOLUME_ID,
                "boot_index": 0,
                "source_type": "volume",
                "destination_type": "volume",
            }
        ],
    )
    invoke = Recorder()
    await compute.check_image(interaction(op_call(api.rt, "createServer", body=body), invoke))
    assert invoke.calls == []


@arun
async def test_boot_from_volume_row(api: Api) -> None:
    await seed_flavors(api.store)
    body = boot_body(
        imageRef="",
        block_device_mapping_v2=[
            {
                "uuid": VOLUME_ID,
                "boot_index": "0",
                "source_type": "volume",
                "destination_type": "volume",
            }
        ],
    )
    reply = await compute.create_server(op_call(api.rt, "createServer", body=body))
    row = await api.store.get("instances", reply.body["server"]["id"])
    assert row is not None and row["image_ref"] == ""
    view = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert view["image"] == ""
    assert view["os-extended-volumes:volumes_attached"] == [{"id": VOLUME_ID}]


@arun
async def test_quota_of_instances(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed_flavors(api.store)
    api.rt.config.quotas = {"instances": 2}
    first = await api.boot()
    await api.boot()
    with pytest.raises(Forbidden, match="Quota exceeded for instances"):
        await api.boot()
    await api.set(first, vm_state="deleted")
    await api.boot()  # deleted instances do not count
    limits = (await api.run("getLimits")).body["limits"]
    assert limits["rate"] == []
    absolute = limits["absolute"]
    assert absolute["maxTotalInstances"] == 2 and absolute["totalInstancesUsed"] == 2
    assert absolute["maxTotalCores"] == -1 and absolute["totalCoresUsed"] == 2
    assert absolute["totalRAMUsed"] == 1024  # two m1.tiny of 512 MB
    other = auth_ctx(project="p-other")  # another project uses nothing
    mine = (await api.run("getLimits", auth=other)).body["limits"]["absolute"]
    assert mine["totalInstancesUsed"] == 0 and mine["totalCoresUsed"] == 0


@arun
async def test_quota_of_cores_counts_the_flavors(api: Api) -> None:
    await seed_flavors(api.store)
    api.rt.config.quotas = {"cores": 3}
    await api.boot(flavorRef="3")  # 2 vCPUs
    with pytest.raises(
        Forbidden, match="Quota exceeded for cores: Requested 2, but already used 2 of 3 cores"
    ):
        await api.boot(flavorRef="3")
    await api.boot(flavorRef="1")  # 1 more fits
    assert len(await api.store.list("instances")) == 2


@arun
async def test_forced_host_is_admin_only_and_ignores_the_other_hosts(api: Api) -> None:
    await seed_flavors(api.store)
    for host in ("compute-1", "compute-2", "compute-3"):
        await add_compute_node(api.store, host)
    call = op_call(api.rt, "createServer", body=boot_body(availability_zone="nova:compute-2"))
    with pytest.raises(Forbidden):
        await compute.create_server(call)
    call = op_call(
        api.rt,
        "createServer",
        body=boot_body(availability_zone="nova:compute-2"),
        auth=auth_ctx(admin=True),
    )
    await compute.create_server(call)
    assert call.vars["request_spec"]["ignore_hosts"] == ["compute-1", "compute-3"]


# -- show, list, update ----------------------------------------------------------------


@arun
async def test_server_view_has_exactly_the_21_field_set(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    body = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert set(body) == SERVER_KEYS_21 | {"progress", "security_groups"}
    assert body["status"] == "BUILD" and body["OS-EXT-STS:task_state"] == "scheduling"
    assert body["flavor"] == {
        "id": "1",
        "links": [{"rel": "bookmark", "href": "http://nova.test:8774/flavors/1"}],
    }
    assert body["image"]["id"] == IMAGE_ID
    assert body["hostId"] == "" and body["tenant_id"] == PROJECT
    for absent in ("description", "tags", "locked", "fault"):
        assert absent not in body

    row = await api.set(
        row,
        vm_state="active",
        task_state=None,
        power_state=1,
        host="compute-1",
        node="compute-1",
        launched_at="2026-01-01T00:00:00.000000",
        addresses={
            "private": [
                {
                    "version": 4,
                    "addr": "10.0.0.5",
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01",
                }
            ]
        },
    )
    body = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert body["status"] == "ACTIVE"
    assert body["hostId"] == hashlib.sha224(f"{PROJECT}compute-1".encode()).hexdigest()
    assert body["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"] == "fa:16:3e:00:00:01"
    assert not ADMIN_KEYS & set(body)
    admin = (
        await api.run(
            "showServer",
            path_params={"server_id": row["id"]},
            auth=auth_ctx(admin=True, project=OTHER_PROJECT),
        )
    ).body["server"]
    assert set(admin) >= ADMIN_KEYS and admin["OS-EXT-SRV-ATTR:host"] == "compute-1"

    fault = {
        "code": 500,
        "message": "No valid host was found. There are not enough hosts available.",
        "details": "RamFilter eliminated 2",
        "created": "2026-01-01T00:00:00Z",
    }
    row = await api.set(row, vm_state="error", task_state=None, fault=fault)
    body = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert body["status"] == "ERROR"
    assert body["fault"] == {k: fault[k] for k in ("code", "message", "created")}
    assert "progress" not in body


@arun
async def test_show_hides_deleted_and_foreign_servers(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    with pytest.raises(NotFound, match=f"Instance {row['id']} could not be found."):
        await api.run(
            "showServer", path_params={"server_id": row["id"]}, auth=auth_ctx(project=OTHER_PROJECT)
        )
    await api.set(row, vm_state="deleted")
    with pytest.raises(NotFound):
        await api.run("showServer", path_params={"server_id": row["id"]})
    with pytest.raises(NotFound):
        await api.run("showServer", path_params={"server_id": "vm1"})


@arun
async def test_list_servers_filters_and_pages(api: Api) -> None:
    await seed_flavors(api.store)
    rows = [await api.boot(name=f"vm{i}") for i in range(5)]
    await api.set(rows[0], vm_state="active", task_state=None)
    await api.set(rows[4], vm_state="deleted")
    reply = await api.run("listServers", query={"deleted": "False"})
    items = reply.body["servers"]
    assert {i["name"] for i in items} == {"vm0", "vm1", "vm2", "vm3"}
    assert all(set(i) == {"id", "links", "name"} for i in items)
    reply = await api.run("listServersDetailed", query={"name": "^vm[12]$"})
    assert sorted(s["name"] for s in reply.body["servers"]) == ["vm1", "vm2"]
    reply = await api.run("listServersDetailed", query={"status": "ACTIVE"})
    assert [s["name"] for s in reply.body["servers"]] == ["vm0"]
    page = (await api.run("listServers", query={"limit": "2"})).body
    assert len(page["servers"]) == 2 and page["servers_links"][0]["rel"] == "next"
    marker = page["servers"][-1]["id"]
    rest = (await api.run("listServers", query={"limit": "2", "marker": marker})).body["servers"]
    assert {i["id"] for i in rest}.isdisjoint({i["id"] for i in page["servers"]})
    with pytest.raises(BadRequest, match="marker"):
        await api.run("listServers", query={"marker": "nope"})
    with pytest.raises(BadRequest):
        await api.run("listServers", query={"name": "("})
    with pytest.raises(BadRequest):
        await api.run("listServers", query={"sort_key": "bogus"})


@arun
async def test_list_servers_tenancy(api: Api) -> None:
    await seed_flavors(api.store)
    await api.boot(name="mine")
    other = op_call(
        api.rt, "createServer", body=boot_body(name="theirs"), auth=auth_ctx(project=OTHER_PROJECT)
    )
    await compute.create_server(other)
    names = [s["name"] for s in (await api.run("listServers")).body["servers"]]
    assert names == ["mine"]
    with pytest.raises(Forbidden, match="get_all_tenants"):
        await api.run("listServers", query={"all_tenants": "True"})
    with pytest.raises(BadRequest):
        await api.run("listServers", query={"all_tenants": "maybe"}, auth=auth_ctx(admin=True))
    admin = auth_ctx(admin=True)
    names = [
        s["name"]
        for s in (await api.run("listServers", query={"all_tenants": "1"}, auth=admin)).body[
            "servers"
        ]
    ]
    assert sorted(names) == ["mine", "theirs"]
    # host is an admin filter; members' unknown filters are ignored, as in nova.
    assert len((await api.run("listServers", query={"host": "x"})).body["servers"]) == 1
    assert (await api.run("listServers", query={"host": "x"}, auth=admin)).body["servers"] == []


@arun
async def test_update_server_name(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    reply = await api.run(
        "updateServer", path_params={"server_id": row["id"]}, body={"server": {"name": "renamed"}}
    )
    assert reply.body["server"]["name"] == "renamed"
    assert "OS-EXT-STS:vm_state" not in reply.body["server"]
    with pytest.raises(BadRequest):
        await api.run(
            "updateServer", path_params={"server_id": row["id"]}, body={"server": {"name": " x"}}
        )


# -- delete ----------------------------------------------------------------------------


@arun
async def test_delete_without_host_deletes_at_once(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    call = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    reply = await compute.delete_server(call)
    assert reply.status == 204
    assert call.vars["instance"]["vm_state"] == "deleted"
    invoke = Recorder()
    await compute.terminate_request(interaction(call, invoke, label="6"))
    assert invoke.calls == []
    with pytest.raises(NotFound):
        await api.run("showServer", path_params={"server_id": row["id"]})


@arun
async def test_delete_with_host_marks_deleting_and_casts_terminate(api: Api) -> None:
    await seed_flavors(api.store)
    await add_compute_node(api.store, "compute-1")
    row = await api.boot()
    att = {
        "attachment_id": "a1",
        "volume_id": VOLUME_ID,
        "device": "/dev/vdb",
        "connection_info": {"driver_volume_type": "iscsi", "data": {}},
    }
    row = await api.set(
        row, vm_state="active", task_state=None, host="compute-1", ports=["p1"], attachments=[att]
    )
    call = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    assert (await compute.delete_server(call)).status == 204
    assert call.vars["instance"]["task_state"] == "deleting"
    invoke = Recorder()
    await compute.terminate_request(interaction(call, invoke, label="6"))
    (((payload,), kwargs),) = invoke.calls
    assert kwargs == {"host": "compute-1"}
    from specstack_runtime.messaging import check

    check(api.info, "terminate_instance", "payload", payload)
    assert payload["ports"] == ["p1"] and payload["attachments"] == [att]
    # A repeated delete is accepted and sends nothing more.
    again = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    assert (await compute.delete_server(again)).status == 204
    assert again.vars["terminate"] is False


@arun
async def test_delete_is_for_the_owner_or_admin(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    call = op_call(
        api.rt,
        "deleteServer",
        path_params={"server_id": row["id"]},
        auth=auth_ctx(project=OTHER_PROJECT),
    )
    with pytest.raises(NotFound):
        await compute.delete_server(call)
    call = op_call(
        api.rt,
        "deleteServer",
        path_params={"server_id": row["id"]},
        auth=auth_ctx(project=OTHER_PROJECT, admin=True),
    )
    assert (await compute.delete_server(call)).status == 204


@arun
async def test_delete_when_the_compute_host_is_down_is_local(api: Api) -> None:
    await seed_flavors(api.store)
    await add_compute_node(api.store, "compute-1", heartbeat=1.0)
    row = await api.boot()
    await api.set(row, vm_state="active", task_state=None, host="compute-1")
    call = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    await compute.delete_server(call)
    assert call.vars["instance"]["vm_state"] == "deleted" and call.vars["terminate"] is False


# -- actions ---------------------------------------------------------------------------


@arun
async def test_stop_start_reboot_go_to_the_host(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    sid = {"server_id": row["id"]}
    with pytest.raises(Conflict, match="Cannot 'stop' instance"):
        await api.run("serverAction", path_params=sid, body={"os-stop": None})
    row = await api.set(row, vm_state="active", task_state=None, host="compute-1", power_state=1)
    with pytest.raises(Conflict, match="Cannot 'start' instance"):
        await api.run("serverAction", path_params=sid, body={"os-start": None})
    reply = await api.run("serverAction", path_params=sid, body={"os-stop": None})
    assert reply.status == 202
    assert api.bus.sent[-1][:2] == ("cast", "stop_instance")
    assert api.bus.sent[-1][3] == "compute-1"
    assert (await api.store.get("instances", row["id"]))["task_state"] == "powering-off"  # type: ignore[index]
    with pytest.raises(Conflict):
        await api.run("serverAction", path_params=sid, body={"os-stop": None})
    await api.set(row, vm_state="stopped", task_state=None, power_state=4)
    assert (await api.run("serverAction", path_params=sid, body={"os-start": None})).status == 202
    assert api.bus.sent[-1][1] == "start_instance"
    await api.set(row, vm_state="active", task_state=None, power_state=1)
    reply = await api.run("serverAction", path_params=sid, body={"reboot": {"type": "HARD"}})
    assert reply.status == 202 and api.bus.sent[-1][2]["reboot_type"] == "HARD"
    with pytest.raises(BadRequest, match="There is no such action: os-migrateLive"):
        await api.run("serverAction", path_params=sid, body={"os-migrateLive": None})


@arun
async def test_console_output(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    row = await api.set(row, vm_state="active", task_state=None, host="compute-1")
    api.bus.replies["get_console_output"] = lambda p: {"output": f"len={p['length']}\n"}
    reply = await api.run(
        "serverAction",
        path_params={"server_id": row["id"]},
        body={"os-getConsoleOutput": {"length": "5"}},
    )
    assert reply.status == 200 and reply.body == {"output": "len=5\n"}
    reply = await api.run(
        "serverAction",
        path_params={"server_id": row["id"]},
        body={"os-getConsoleOutput": {"length": -1}},
    )
    assert reply.body == {"output": "len=None\n"}
    with pytest.raises(BadRequest):
        await api.run(
            "serverAction",
            path_params={"server_id": row["id"]},
            body={"os-getConsoleOutput": {"length": "x"}},
        )
    api.bus.replies["get_console_output"] = RemoteError(
        "NotFound", "Guest does not have a console available."
    )
    with pytest.raises(NotFound):
        await api.run(
            "serverAction", path_params={"server_id": row["id"]}, body={"os-getConsoleOutput": {}}
        )


# -- flavors ---------------------------------------------------------------------------


@arun
async def test_flavors(api: Api) -> None:
    await seed_flavors(api.store)
    listing = (await api.run("listFlavors")).body["flavors"]
    assert [f["id"] for f in listing] == ["1", "2", "3", "4", "5"]
    assert set(listing[0]) == {"id", "links", "name"}
    detail = (await api.run("listFlavorsDetailed", query={"is_public": "None"})).body["flavors"]
    assert detail[0]["swap"] == "" and detail[0]["os-flavor-access:is_public"] is True
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
    names = [k["keypair"]["name"] for k in (await api.run("listKeypairs")).body["keypairs"]]
    assert names == ["k1", "k2"]
    shown = (await api.run("showKeypair", path_params={"keypair_name": "k2"})).body["keypair"]
    assert shown["deleted"] is False and isinstance(shown["id"], int)
    assert (await api.run("deleteKeypair", path_params={"keypair_name": "k2"})).status == 202
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
    assert hvs == [
        {"id": 1, "hypervisor_hostname": "compute-1", "state": "up", "status": "enabled"},
        {"id": 2, "hypervisor_hostname": "compute-2", "state": "down", "status": "enabled"},
    ]
    # what a claim of a 2-vCPU, 2 GB, 20 GB server leaves on compute-1's record
    used = {"vcpus_used": 2, "memory_mb_used": 2048, "local_gb_used": 20, "running_vms": 1}
    assert await api.store.update("compute_nodes", "compute-1", used) is not None
    admin = auth_ctx(admin=True)
    detail = (await api.run("listHypervisorsDetailed", auth=admin)).body["hypervisors"]
    assert [(h["id"], h["state"], h["service"]["host"]) for h in detail] == [
        (1, "up", "compute-1"),
        (2, "down", "compute-2"),
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
        (1, "nova-compute", "compute-1", "nova", "up"),
        (2, "nova-compute", "compute-2", "az2", "down"),
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
    with pytest.raises(Conflict, match="attach_volume"):
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
    assert reply.body == {
        "volumeAttachment": {
            "id": VOLUME_ID,
            "serverId": row["id"],
            "volumeId": VOLUME_ID,
            "device": "/dev/vdb",
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
