"""nova-api's operation behaviours: validation, the instance row, views at microversion 2.1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import nova_api
from specstack_runtime.errors import BadRequest, Forbidden, StepFailed
from specstack_runtime.resources import records
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store
from tests.aio import arun
from tests.runtime.fakes import serve_operation
from tests.runtime.test_compute_flow import FLAVOR
from tests.runtime.test_compute_kit import (
    IMAGE_ID,
    NETWORK_ID,
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
        reply = await nova_api.create_server(call)
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
    assert (v21["status"], v21["min_version"], v21["version"]) == ("CURRENT", "2.1", "2.79")
    assert v21["links"] == [{"rel": "self", "href": "http://nova.test:8774/v2.1/"}]
    reply = await api.run("getComputeV21", auth=None)
    version = reply.body["version"]
    assert (version["id"], version["min_version"], version["version"]) == ("v2.1", "2.1", "2.79")
    assert {"rel": "self", "href": "http://nova.test:8774/v2.1/"} in version["links"]
    assert version["media-types"][0]["base"] == "application/json"


# -- create ----------------------------------------------------------------------------


@arun
async def test_create_server_writes_the_row_and_answers_202(api: Api) -> None:
    await seed_flavors(api.store)
    call = op_call(api.rt, "createServer", body=boot_body(metadata={"k": "v"}))
    call.vars["image"] = IMAGE
    reply = await nova_api.create_server(call)
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
    assert row["flavor"] == FLAVOR
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
    await nova_api.create_server(call)
    invoke = Recorder()
    await nova_api.schedule_request(interaction(call, invoke, label="6"))
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
    await nova_api.create_server(call)

    async def broken(payload: dict[str, Any]) -> None:
        raise ConnectionError("bus down")

    with pytest.raises(StepFailed):
        await nova_api.schedule_request(interaction(call, broken))
    row = await api.store.get("instances", call.vars["instance"]["id"])
    assert row is not None and row["vm_state"] == "error"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flavorRef": "99"}, "Flavor 99 could not be found."),
        ({"min_count": 3, "max_count": 2}, "min_count must be <= max_count"),
        ({"max_count": 0}, "Invalid input for field/attribute max_count. Value: 0."),
        ({"min_count": "two"}, "Invalid input for field/attribute min_count. Value: two."),
        (
            {"max_count": 2, "networks": [{"port": NETWORK_ID}]},
            "Unable to launch multiple instances with a single configured port ID",
        ),
        (
            {
                "max_count": 2,
                "block_device_mapping_v2": [
                    {"uuid": VOLUME_ID, "source_type": "volume", "destination_type": "volume"}
                ],
            },
            "Cannot attach one or more volumes to multiple instances",
        ),
        ({"networks": [{"uuid": "not-a-uuid"}]}, "network uuid is not in proper format"),
        ({"networks": [{"uuid": NETWORK_ID, "fixed_ip": "10.0.0.300"}]}, "Invalid fixed IP"),
        ({"key_name": "nokey"}, "Keypair nokey not found"),
        ({"name": " padded "}, "name"),
        ({"availability_zone": "elsewhere"}, "availability zone is not available"),
        ({"imageRef": "", "block_device_mapping_v2": []}, "Missing imageRef attribute"),
        ({"user_data": "!!!not base64"}, "User data needs to be valid base 64."),
        ({"accessIPv4": "::1"}, "accessIPv4"),
        (
            {"OS-DCF:diskConfig": "SOMETIMES"},
            "Invalid input for field/attribute OS-DCF:diskConfig. Value: SOMETIMES.",
        ),
        ({"name": "x" * 256}, "Invalid input for field/attribute name."),
        ({"name": None}, "Invalid input for field/attribute name. Value: None."),
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
        await nova_api.create_server(call)
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
            await nova_api.create_server(call)


@arun
async def test_check_image_step(api: Api) -> None:
    call = op_call(api.rt, "createServer", body=boot_body())
    invoke = Recorder(response(200, IMAGE))
    await nova_api.check_image(interaction(call, invoke, label="4.1"))
    assert invoke.calls == [((), {"image_id": IMAGE_ID, "token": "user-token"})]
    assert call.vars["image"]["id"] == IMAGE_ID
    call = op_call(api.rt, "createServer", body=boot_body(imageRef="cirros"))
    with pytest.raises(BadRequest, match=re.escape("Image cirros could not be found.")):
        await nova_api.check_image(interaction(call, Recorder(response(404, {"message": "no"}))))
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
    await nova_api.check_image(interaction(op_call(api.rt, "createServer", body=body), invoke))
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
    reply = await nova_api.create_server(op_call(api.rt, "createServer", body=body))
    row = await api.store.get("instances", reply.body["server"]["id"])
    assert row is not None and row["image_ref"] == ""
    view = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert view["image"] == ""
    # no microversion negotiated: 2.3's shape
    assert view["os-extended-volumes:volumes_attached"] == [
        {"id": VOLUME_ID, "delete_on_termination": False}
    ]


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
    # the metadata limit (the spec's server data) is the one create enforces: 403 over it
    assert absolute["maxServerMeta"] == 128
    too_many = {f"k{i}": "v" for i in range(129)}
    api.rt.config.quotas = {}
    with pytest.raises(
        Forbidden, match="Quota exceeded for metadata_items: Requested 129, but the limit is 128"
    ):
        await api.boot(metadata=too_many)
    await api.boot(metadata=dict(list(too_many.items())[:128]))


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
        await nova_api.create_server(call)
    call = op_call(
        api.rt,
        "createServer",
        body=boot_body(availability_zone="nova:compute-2"),
        auth=auth_ctx(admin=True),
    )
    await nova_api.create_server(call)
    assert call.vars["request_spec"]["ignore_hosts"] == ["compute-1", "compute-3"]


@arun
async def test_create_server_reads_the_rows_the_server_relations_name(api: Api) -> None:
    """The flavor (by id or URL, never a disabled one) and the caller's own key pair of the
    name given: the server's `relations` in the spec, read into the rules' `refs`."""
    await seed_flavors(api.store)
    await api.store.update("flavors", "2", {"disabled": True})
    await api.store.create(
        "keypairs", {"id": "other:mine", "user_id": "other", "name": "mine", "public_key": "k"}
    )
    for change, message in (
        ({"flavorRef": "2"}, "Flavor 2 could not be found."),
        ({"key_name": "mine"}, f"Keypair mine not found for user {USER}"),
    ):
        call = op_call(api.rt, "createServer", body=boot_body(**change))
        call.vars["image"] = IMAGE
        with pytest.raises(BadRequest, match=re.escape(message)):
            await nova_api.create_server(call)
    call = op_call(api.rt, "createServer", body=boot_body(flavorRef="http://nova/flavors/3/"))
    call.vars["image"] = IMAGE
    assert (await nova_api.create_server(call)).status == 202
    assert call.vars["instance"]["flavor_id"] == "3"
    assert call.vars["instance"]["flavor"]["ram"] == 4096


# -- multiple create -------------------------------------------------------------------------


@arun
async def test_multiple_create_names_each_server_and_schedules_each(api: Api) -> None:
    """min_count/max_count: max_count servers named as nova forms them (name-1, name-2...),
    one reservation, one schedule request each; return_reservation_id answers only it."""
    await seed_flavors(api.store)
    call = op_call(api.rt, "createServer", body=boot_body(name="web", min_count=2, max_count=3))
    call.vars["image"] = IMAGE
    reply = await nova_api.create_server(call)
    check_response("createServer", reply)
    rows = sorted(await api.store.list("instances"), key=lambda r: r["name"])
    assert [(r["name"], r["hostname"]) for r in rows] == [
        ("web-1", "web-1"),
        ("web-2", "web-2"),
        ("web-3", "web-3"),
    ]
    assert len({r["id"] for r in rows}) == len({r["instance_name"] for r in rows}) == 3
    assert len({r["reservation_id"] for r in rows}) == 1
    assert reply.body["server"]["id"] == call.vars["instance"]["id"] == rows[0]["id"]
    invoke = Recorder()
    await nova_api.schedule_request(interaction(call, invoke, label="6"))
    assert sorted(c[0][0]["instance"]["uuid"] for c in invoke.calls) == sorted(
        r["id"] for r in rows
    )
    listed = await api.run("listServers", query={"reservation_id": [rows[0]["reservation_id"]]})
    assert sorted(s["name"] for s in listed.body["servers"]) == ["web-1", "web-2", "web-3"]
    body = boot_body(name="db", max_count=2, return_reservation_id=True)
    reply = await nova_api.create_server(op_call(api.rt, "createServer", body=body))
    check_response("createServer", reply)
    assert set(reply.body) == {"reservation_id"}
    made = await api.store.list("instances", {"reservation_id": reply.body["reservation_id"]})
    assert sorted(r["name"] for r in made) == ["db-1", "db-2"]


@arun
async def test_multiple_create_records_a_create_action_for_each_server(api: Api) -> None:
    """nova's conductor starts a create action of each server it makes, with the request id
    nova-api answered: listed for every server, the reservation-only answer's too."""
    await seed_flavors(api.store)
    for extra in ({}, {"return_reservation_id": True}):
        call = op_call(api.rt, "createServer", body=boot_body(min_count=2, max_count=2, **extra))
        call.vars["image"] = IMAGE
        call.request_id = f"req-{len(extra)}"
        call.reply = await nova_api.create_server(call)
        await records.handled(call, 1.0e9)
        servers = call.vars["instances"]
        assert len(servers) == 2
        for server in servers:
            listed = await api.run("listInstanceActions", path_params={"server_id": server["id"]})
            assert [
                (a["action"], a["request_id"], a["instance_uuid"])
                for a in listed.body["instanceActions"]
            ] == [("create", call.request_id, server["id"])]
            path = {"server_id": server["id"], "request_id": call.request_id}
            shown = await api.run("showInstanceAction", path_params=path)
            assert shown.body["instanceAction"]["instance_uuid"] == server["id"]


@arun
async def test_multiple_create_takes_what_the_quota_allows_else_nothing(api: Api) -> None:
    """Fewer than max_count when the quota leaves room for at least min_count; fewer than
    min_count fit: 403 and no server is written."""
    await seed_flavors(api.store)
    api.rt.config.quotas = {"instances": 3}
    await api.boot(name="one")
    with pytest.raises(
        Forbidden, match="Quota exceeded for instances: Requested 3, but already used 1 of 3"
    ):
        await api.boot(name="many", min_count=3, max_count=4)
    assert [r["name"] for r in await api.store.list("instances")] == ["one"]
    await api.boot(name="many", min_count=1, max_count=5)
    names = sorted(r["name"] for r in await api.store.list("instances"))
    assert names == ["many-1", "many-2", "one"]
