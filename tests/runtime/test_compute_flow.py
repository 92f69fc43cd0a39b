"""nova-scheduler, nova-conductor and nova-compute: the boot and delete flows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import conductor, nova_api, nova_build, scheduler
from specstack_runtime.behaviours.scheduling import NoValidHost
from specstack_runtime.bus import RemoteError
from specstack_runtime.errors import Dropped, StepFailed
from specstack_runtime.messaging import check
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.fakes import serve_operation
from tests.runtime.test_compute_kit import (
    IMAGE_BDM,
    IMAGE_DATA,
    IMAGE_ID,
    NETWORK_ID,
    VOLUME_BDM,
    VOLUME_ID,
    FakeServices,
    Recorder,
    RecordingBus,
    add_compute_node,
    boot_body,
    instance_message,
    interaction,
    make_runtime,
    msg_call,
    nova_store,
    op_call,
    response,
    run_spec_step,
    seed_flavors,
    stack_info,
)

FLAVOR = {
    "id": "1",
    "name": "m1.tiny",
    "vcpus": 1,
    "ram": 512,
    "disk": 1,
    "ephemeral": 0,
    "swap": 0,
}


async def new_instance(store: Any, **changes: Any) -> dict[str, Any]:
    """An instance row as nova-api writes it (through compute.create_server)."""
    info = stack_info()
    rt = make_runtime(info, "nova-api", store=store, bus=RecordingBus())
    if await store.get("flavors", "1") is None:
        await seed_flavors(store)
    call = op_call(rt, "createServer", body=boot_body())
    await nova_api.create_server(call)
    row: dict[str, Any] = call.vars["instance"]
    if changes:
        row = await store.update("instances", row["id"], changes)
    return row


def schedule_payload(row: dict[str, Any], flavor: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = nova_api.schedule_payload(stack_info(), row)
    if flavor is not None:
        payload["request_spec"]["flavor"] = flavor
    return payload


# -- scheduler -------------------------------------------------------------------------------


@arun
async def test_scheduler_picks_the_host_with_most_free_ram(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    for host, ram in (("compute-1", 8192), ("compute-2", 16384), ("compute-3", 12288)):
        await add_compute_node(store, host, memory_mb=ram)
    row = await new_instance(store)
    rt = make_runtime(info, "nova-scheduler", store=store, data_dir=tmp_path)
    call = msg_call(rt, "schedule_and_build_instances", schedule_payload(row))
    await scheduler.schedule_and_build(call)
    assert call.vars["host"] == "compute-2"
    saved = await store.get("instances", row["id"])
    assert saved is not None and saved["host"] == "compute-2" and saved["node"] == "compute-2"
    assert saved["task_state"] == "scheduling" and saved["availability_zone"] == "nova"
    node = await store.get("compute_nodes", "compute-2")
    assert node is not None and node["memory_mb_used"] == 512 and node["running_vms"] == 1
    assert row["id"] in node["claims"]

    invoke = Recorder()
    await scheduler.build_request(interaction(call, invoke, label="7.1"))
    (((payload,), kwargs),) = invoke.calls
    assert kwargs == {"host": "compute-2"}
    check(info, "build_and_run_instance", "payload", payload)
    assert payload["host"] == "compute-2" and payload["image_id"] == IMAGE_ID
    assert payload["requested_networks"] == [{"network_id": NETWORK_ID}]


@arun
async def test_claims_spread_nine_boots_three_per_host(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    for i in (1, 2, 3):
        await add_compute_node(store, f"compute-{i}")
    rt = make_runtime(info, "nova-scheduler", store=store, data_dir=tmp_path)
    hosts = []
    for _ in range(9):
        row = await new_instance(store)
        call = msg_call(rt, "schedule_and_build_instances", schedule_payload(row))
        await scheduler.schedule_and_build(call)
        hosts.append(call.vars["host"])
    assert Counter(hosts) == {"compute-1": 3, "compute-2": 3, "compute-3": 3}
    for i in (1, 2, 3):
        node = await store.get("compute_nodes", f"compute-{i}")
        assert node is not None and node["memory_mb_used"] == 3 * 512 and len(node["claims"]) == 3


@arun
async def test_no_valid_host_puts_the_instance_in_error(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1", memory_mb=1024)
    row = await new_instance(store)
    rt = make_runtime(info, "nova-scheduler", store=store, data_dir=tmp_path)
    huge = {**FLAVOR, "id": "5", "ram": 65536}
    call = msg_call(rt, "schedule_and_build_instances", schedule_payload(row, huge))
    with pytest.raises(NoValidHost) as err:
        await scheduler.schedule_and_build(call)
    await scheduler.set_instance_error(call, err.value)
    saved = await store.get("instances", row["id"])
    assert saved is not None
    assert (saved["vm_state"], saved["task_state"]) == ("error", None)
    assert saved["fault"]["code"] == 500
    assert saved["fault"]["message"].startswith("No valid host was found")
    assert "RamFilter" in saved["fault"]["details"] and saved["fault"]["created"]
    node = await store.get("compute_nodes", "compute-1")
    assert node is not None and node["claims"] == {}
    # The API shows it as ERROR with the fault.
    api = make_runtime(info, "nova-api", store=store)
    view = (
        await serve_operation(
            info, "compute", op_call(api, "showServer", path_params={"server_id": row["id"]})
        )
    ).body["server"]
    assert view["status"] == "ERROR" and view["fault"]["message"].startswith(
        "No valid host was found"
    )


@arun
async def test_dead_hosts_are_not_chosen(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1", heartbeat=1.0)
    row = await new_instance(store)
    call = msg_call(
        make_runtime(info, "nova-scheduler", store=store),
        "schedule_and_build_instances",
        schedule_payload(row),
    )
    with pytest.raises(NoValidHost):
        await scheduler.schedule_and_build(call)


@arun
async def test_set_instance_error_never_raises_and_releases_the_claim(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1")
    row = await new_instance(store)
    rt = make_runtime(info, "nova-scheduler", store=store)
    call = msg_call(rt, "schedule_and_build_instances", schedule_payload(row))
    await scheduler.schedule_and_build(call)
    # 7.1 fails after the claim: the claim is given back, the instance is in ERROR.
    await scheduler.set_instance_error(call, ConnectionError("compute queue unreachable"))
    saved = await store.get("instances", row["id"])
    assert saved is not None and saved["vm_state"] == "error"
    assert saved["fault"]["message"].startswith("No valid host was found")
    node = await store.get("compute_nodes", "compute-1")
    assert node is not None and node["claims"] == {} and node["memory_mb_used"] == 0
    broken = msg_call(rt, "schedule_and_build_instances", {"instance": {}})
    await scheduler.set_instance_error(broken, RuntimeError("x"))  # no exception


@arun
async def test_a_lost_claim_race_chooses_again(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1")
    await add_compute_node(store, "compute-2", memory_mb=8192)
    row = await new_instance(store)
    original = store.update
    raced = {"done": False}

    async def racing_update(table: str, id_: str, changes: Any, **kw: Any) -> Any:
        if table == "compute_nodes" and not raced["done"]:
            raced["done"] = True  # another scheduler claims 12 GB on compute-1 first
            claims = {"other": {"memory_mb": 12288, "vcpus": 1, "disk_gb": 1}}
            doc = await store.get("compute_nodes", id_)
            assert doc is not None
            await original(
                table,
                id_,
                {
                    "claims": claims,
                    **conductor.usage_of(claims),
                    "generation": doc["generation"] + 1,
                },
            )
        return await original(table, id_, changes, **kw)

    store.update = racing_update  # type: ignore[method-assign]
    call = msg_call(
        make_runtime(info, "nova-scheduler", store=store),
        "schedule_and_build_instances",
        schedule_payload(row),
    )
    await scheduler.schedule_and_build(call)
    assert call.vars["host"] == "compute-2"  # compute-1 has less free RAM after the race
    node1 = await store.get("compute_nodes", "compute-1")
    assert node1 is not None and set(node1["claims"]) == {"other"}


@arun
async def test_an_instance_deleted_while_scheduling_is_not_built(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1")
    row = await new_instance(store, vm_state="deleted", task_state=None)
    call = msg_call(
        make_runtime(info, "nova-scheduler", store=store),
        "schedule_and_build_instances",
        schedule_payload(row),
    )
    await scheduler.schedule_and_build(call)
    assert call.vars["host"] is None
    invoke = Recorder()
    await scheduler.build_request(interaction(call, invoke))
    assert invoke.calls == []
    node = await store.get("compute_nodes", "compute-1")
    assert node is not None and node["claims"] == {}


# -- nova-compute: the build steps with canned invokes ----------------------------------------


def build_payload(
    row: dict[str, Any], *, volume: bool = True, network: bool = True
) -> dict[str, Any]:
    bdm = [dict(IMAGE_BDM), dict(VOLUME_BDM)] if volume else [dict(IMAGE_BDM)]
    return {
        "instance": {"uuid": row["id"], "project_id": row["project_id"], "user_id": row["user_id"]},
        "host": "compute-1",
        "node": "compute-1",
        "image_id": IMAGE_ID,
        "flavor_id": "1",
        "requested_networks": [{"network_id": NETWORK_ID}] if network else [],
        "block_device_mapping": bdm,
    }


@arun
async def test_build_steps_in_order_with_canned_invokes(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    services = FakeServices()
    rt = make_runtime(
        info,
        "nova-compute",
        host="compute-1",
        clients=services,
        data_dir=tmp_path,
        driver=FakeHypervisor(None),
    )
    payload = build_payload(row)
    check(info, "build_and_run_instance", "payload", payload)
    call = msg_call(rt, "build_and_run_instance", payload)
    await nova_build.begin_build(call)
    instance_msg = instance_message({**row, "host": "compute-1"})

    fetch = Recorder({"instance": instance_msg, "flavor": FLAVOR})
    taken = {**instance_msg, "task_state": "spawning"}
    rt.bus = RecordingBus({"instance_update": {"instance": taken}})  # type: ignore[assignment]
    await run_spec_step(call, "boot-vm", "8", fetch)
    assert fetch.calls == [(({"instance_uuid": row["id"]},), {})]
    # the build takes the instance: compare-and-set of its task state through the conductor
    ((kind, method, sent_take, _),) = rt.bus.sent  # type: ignore[attr-defined]
    assert (kind, method) == ("call", "instance_update")
    assert sent_take == {
        "instance_uuid": row["id"],
        "updates": {"task_state": "spawning"},
        "expected_task_state": "scheduling",
    }

    spawn = Recorder()
    await nova_build.spawn(interaction(call, spawn, label="9"))
    (((), kw),) = spawn.calls
    kw_spawn = kw
    assert kw == {
        "instance": {
            "uuid": row["id"],
            "name": "vm1",
            "vcpus": 1,
            "memory_mb": 512,
            "root_gb": 1,
            "image_id": IMAGE_ID,
        },
        # spawn comes (step 9) before the download (step 12): the driver is told where the
        # image will be and that it is still pending
        "image": {
            "id": IMAGE_ID,
            "path": str(tmp_path / "image-cache" / "compute-1" / IMAGE_ID),
            "pending": True,
        },
        "network_info": [],
        "block_device_info": [],
    }

    get_image = Recorder(response(200, services.image))
    await nova_build.get_image(interaction(call, get_image, label="10"))
    assert get_image.calls == [((), {"image_id": IMAGE_ID, "token": "user-token"})]

    download = Recorder(response(200, IMAGE_DATA))
    await nova_build.download_image(interaction(call, download, label="12"))
    assert download.calls == [
        (
            (),
            {
                "account": "AUTH_" + "d" * 32,
                "container": "glance",
                "object": IMAGE_ID,
                "token": "service-token",
            },
        )
    ]
    cached = tmp_path / "image-cache" / "compute-1" / IMAGE_ID
    assert cached.read_bytes() == IMAGE_DATA
    again = Recorder()
    await nova_build.download_image(interaction(call, again, label="12"))
    assert again.calls == []  # in the image cache already

    port = {
        "id": "p1",
        "network_id": NETWORK_ID,
        "mac_address": "fa:16:3e:00:00:01",
        "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}],
    }
    create_port = Recorder(response(201, {"port": port}))
    await nova_build.create_ports(interaction(call, create_port, label="13"))
    (((), kw),) = create_port.calls
    assert kw == {
        "body": {
            "port": {
                "network_id": NETWORK_ID,
                "device_id": row["id"],
                "device_owner": "compute:nova",
                "binding:host_id": "compute-1",
            }
        },
        "token": "user-token",
    }

    plug = Recorder()
    await run_spec_step(call, "boot-vm", "14.3", plug)
    assert plug.calls[0][1]["network_info"] == [
        {
            "id": "p1",
            "address": "fa:16:3e:00:00:01",
            "network_id": NETWORK_ID,
            "ip_addresses": ["10.0.0.5"],
        }
    ]

    conn = {"driver_volume_type": "iscsi", "data": {"volume_id": VOLUME_ID}}
    create_att = Recorder(response(200, {"attachment": {"id": "a1", "connection_info": conn}}))
    await run_spec_step(call, "boot-vm", "15", create_att)
    (((), kw),) = create_att.calls
    assert kw["project_id"] == row["project_id"] and kw["token"] == "user-token"
    assert kw["body"] == {
        "attachment": {
            "volume_uuid": VOLUME_ID,
            "instance_uuid": row["id"],
            "connector": {
                "host": "compute-1",
                "ip": "127.0.0.1",
                "platform": "x86_64",
                "os_type": "linux",
                "multipath": False,
                "mountpoint": "/dev/vdb",  # cinder shows it as the attachment's device
            },
        }  # no mode: nova asks for 3.27, where cinder's default is rw (mode comes with 3.54)
    }

    attach = Recorder()
    await run_spec_step(call, "boot-vm", "15.3", attach)
    assert (
        attach.calls[0][1]["mountpoint"] == "/dev/vdb"
        and attach.calls[0][1]["connection_info"] == conn
    )

    complete = Recorder(response(204))
    await run_spec_step(call, "boot-vm", "15.4", complete)
    assert complete.calls == [
        (
            (),
            {
                "project_id": row["project_id"],
                "attachment_id": "a1",
                "body": {"os-complete": None},
                "token": "user-token",
            },
        )
    ]

    # ACTIVE waits for the guest to run; the canned spawn above never reached the driver
    await rt.driver.spawn(kw_spawn["instance"], kw_spawn["image"], [], [])
    update = Recorder(fn=lambda p: {"instance": {**instance_msg, "vm_state": "active"}})
    await run_spec_step(call, "boot-vm", "15.5", update)
    (((sent,), _),) = update.calls
    check(info, "instance_update", "payload", sent)
    assert sent["expected_task_state"] == "spawning"  # as the build took it
    u = sent["updates"]
    assert (u["vm_state"], u["task_state"], u["power_state"]) == ("active", None, 1)
    assert u["addresses"] == {
        "private": [
            {
                "version": 4,
                "addr": "10.0.0.5",
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01",
            }
        ]
    }
    assert u["ports"] == ["p1"] and u["launched_at"]
    assert u["attachments"] == [
        {
            "attachment_id": "a1",
            "volume_id": VOLUME_ID,
            "device": "/dev/vdb",
            "connection_info": conn,
        }
    ]


@arun
async def test_steps_with_nothing_to_do_do_not_invoke(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    rt = make_runtime(
        info, "nova-compute", host="compute-1", data_dir=tmp_path, driver=FakeHypervisor(None)
    )
    call = msg_call(rt, "build_and_run_instance", build_payload(row, volume=False, network=False))
    await nova_build.begin_build(call)
    invoke = Recorder()
    await nova_build.create_ports(interaction(call, invoke))
    for label in ("14.3", "15", "15.3", "15.4"):  # the spec's steps: `when`, `each` over nothing
        await run_spec_step(call, "boot-vm", label, invoke)
    assert invoke.calls == []


@arun
async def test_a_corrupt_image_fails_the_step(tmp_path: Path) -> None:
    info = stack_info()
    rt = make_runtime(info, "nova-compute", host="compute-1", data_dir=tmp_path)
    call = msg_call(rt, "build_and_run_instance", {})
    call.vars["image"] = FakeServices().image
    with pytest.raises(StepFailed, match="corrupt"):
        await nova_build.download_image(interaction(call, Recorder(response(200, b"other bytes"))))
    assert not (tmp_path / "image-cache" / "compute-1" / IMAGE_ID).exists()
    call.vars["image"] = {**FakeServices().image, "direct_url": None}
    with pytest.raises(StepFailed, match="no location"):
        await nova_build.download_image(interaction(call, Recorder()))
    call.vars["image"] = FakeServices().image
    # a cached image changed on disk (its checksum remembered by inode, size and mtime)
    # is fetched again, not trusted
    for _ in range(2):
        await nova_build.download_image(interaction(call, Recorder(response(200, IMAGE_DATA))))
    cached = tmp_path / "image-cache" / "compute-1" / IMAGE_ID
    cached.write_bytes(b"x" * len(IMAGE_DATA))
    refetch = Recorder(response(200, IMAGE_DATA))
    await nova_build.download_image(interaction(call, refetch))
    assert len(refetch.calls) == 1 and cached.read_bytes() == IMAGE_DATA


@arun
async def test_fetch_refuses_an_instance_that_is_no_longer_building(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    rt = make_runtime(info, "nova-compute", host="compute-1", data_dir=tmp_path)
    call = msg_call(rt, "build_and_run_instance", build_payload(row))
    await nova_build.begin_build(call)
    msg = {**instance_message(row), "host": "compute-1", "task_state": "deleting"}
    # dropped, not failed: the delete cleans up, the build's error behaviour must not
    with pytest.raises(Dropped, match="task_state deleting, host compute-1"):
        await nova_build.fetch_instance(
            interaction(call, Recorder({"instance": msg, "flavor": FLAVOR}))
        )
    assert rt.local[nova_build.LIVE_BUILDS] == {}  # a later delivery is judged afresh


@arun
async def test_a_build_that_loses_the_take_is_dropped_and_a_conductor_failure_fails_it(
    tmp_path: Path,
) -> None:
    """The compare-and-set of the take lost (the instance changed: a delete began): dropped.
    Lost to this run's own take (the conductor died before it answered, and refused it
    when asked again): taken. Any other failure of the conductor is the build's failure."""
    info = stack_info()
    row = await new_instance(nova_store(info))
    msg = {**instance_message(row), "host": "compute-1"}
    conflict = RemoteError("Conflict", "Unexpected task state")
    for failure, now, raised in (
        (conflict, {"task_state": "deleting"}, Dropped),
        (RemoteError("OperationalError", "the database is away"), {}, RemoteError),
        (conflict, {"task_state": "spawning"}, None),
    ):
        rt = make_runtime(info, "nova-compute", host="compute-1", data_dir=tmp_path)
        rt.bus = RecordingBus(  # type: ignore[assignment]
            {
                "instance_update": failure,
                "instance_get": {"instance": {**msg, **now}, "flavor": FLAVOR},
            }
        )
        call = msg_call(rt, "build_and_run_instance", build_payload(row))
        await nova_build.begin_build(call)
        fetch = Recorder({"instance": msg, "flavor": FLAVOR})
        if raised is None:
            await run_spec_step(call, "boot-vm", "8", fetch)
            assert call.vars["task_state"] == "spawning"
            assert call.vars["instance"]["task_state"] == "spawning"
            assert call.vars["driver_instance"]["memory_mb"] == FLAVOR["ram"]
            continue
        with pytest.raises(raised):
            await run_spec_step(call, "boot-vm", "8", fetch)


@arun
async def test_volumes_are_named_vda_for_the_boot_volume_then_vdb_vdc(tmp_path: Path) -> None:
    """boot-vm 15 (the spec's `with:`): the connector's mountpoint names each disk."""
    info = stack_info()
    row = await new_instance(nova_store(info))
    rt = make_runtime(info, "nova-compute", host="compute-1", data_dir=tmp_path)
    volumes = [
        {"source_type": "volume", "uuid": f"v{i}", "boot_index": index}
        for i, index in enumerate((-1, 0, -1))
    ]
    payload = {**build_payload(row, volume=False), "block_device_mapping": volumes}
    call = msg_call(rt, "build_and_run_instance", payload)
    await nova_build.begin_build(call)
    made = Recorder(
        fn=lambda **kw: response(200, {"attachment": {"id": "a-" + str(len(made.calls))}})
    )
    await run_spec_step(call, "boot-vm", "15", made)
    mounts = [kw["body"]["attachment"]["connector"]["mountpoint"] for _, kw in made.calls]
    assert mounts == ["/dev/vdb", "/dev/vda", "/dev/vdc"]
    assert [(a["volume_id"], a["device"]) for a in call.vars["attachments"]] == [
        ("v0", "/dev/vdb"),
        ("v1", "/dev/vda"),
        ("v2", "/dev/vdc"),
    ]
    assert all(a["connection_info"] is None for a in call.vars["attachments"])
