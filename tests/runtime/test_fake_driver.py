"""The fake hypervisor honours the driver interface of spec/hypervisors.yaml."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any, cast

import pytest
from jsonschema import Draft202012Validator

from generated.drivers.types import BlockDevice, ConnectionInfo, Instance, Vif
from specstack_runtime import filewriter
from specstack_runtime.virt import (
    DeviceBusy,
    DiskNotFound,
    InstanceExists,
    InstanceNotFound,
    VirtError,
    journal,
)
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.test_compute_kit import ir_json

CONN: ConnectionInfo = {"driver_volume_type": "iscsi", "data": {"volume_id": "vol-1"}}


def guest(uuid: str = "u1", name: str = "vm1") -> Instance:
    return {
        "uuid": uuid,
        "name": name,
        "vcpus": 2,
        "memory_mb": 1024,
        "root_gb": 10,
        "image_id": "img",
    }


def _types_schema() -> dict[str, Any]:
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(
        (Path(__file__).resolve().parents[2] / "spec" / "hypervisors.yaml").read_text()
    )
    return {"types": data["types"]}


def _check(type_name: str, value: Any) -> None:
    schema = {"$ref": f"#/types/{type_name}", **_types_schema()}
    errors = list(Draft202012Validator(schema).iter_errors(value))
    assert not errors, errors[0].message


def test_every_interface_method_is_async_with_the_spec_parameters() -> None:
    methods = json.loads(ir_json())["hypervisors"]["methods"]
    assert methods
    for method in methods:
        fn = getattr(FakeHypervisor, method["name"])
        assert inspect.iscoroutinefunction(fn), method["name"]
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert params == [p["name"] for p in method["params"]], method["name"]


@arun
async def test_spawn_power_console_destroy(tmp_path: Path) -> None:
    hv = FakeHypervisor(
        tmp_path / "state.json", vcpus=4, memory_mb=4096, local_gb=50, hostname="c1"
    )
    await hv.spawn(guest(), {"id": "img"}, [], [])
    assert await hv.get_power_state(guest()) == 1
    _check("PowerState", await hv.get_power_state(guest()))
    assert await hv.list_instances() == ["vm1"]
    assert "fake-guest vm1: booted; disks: vda" in await hv.get_console_output(guest())
    with pytest.raises(InstanceExists):
        await hv.spawn(guest(), {"id": "img"}, [], [])
    await hv.destroy(guest())
    assert await hv.list_instances() == []
    with pytest.raises(InstanceNotFound, match="Instance u1 could not be found"):
        await hv.destroy(guest())
    with pytest.raises(InstanceNotFound):
        await hv.get_console_output(guest())


@arun
async def test_a_crash_dump_is_an_nmi_to_a_running_or_paused_guest(tmp_path: Path) -> None:
    hv = FakeHypervisor(
        tmp_path / "state.json", vcpus=4, memory_mb=4096, local_gb=50, hostname="c1"
    )
    await hv.spawn(guest(), {"id": "img"}, [], [])
    await hv.trigger_crash_dump(guest())
    await hv.pause(guest())
    await hv.trigger_crash_dump(guest())
    assert (await hv.get_console_output(guest())).count("NMI received") == 2
    await hv.unpause(guest())
    await hv.power_off(guest())
    with pytest.raises(VirtError, match="is not running"):
        await hv.trigger_crash_dump(guest())
    assert await hv.get_power_state(guest()) == 4


@arun
async def test_resources_follow_the_guests(tmp_path: Path) -> None:
    hv = FakeHypervisor(None, vcpus=4, memory_mb=4096, local_gb=50, hostname="c1")
    res = await hv.get_available_resource()
    _check("Resources", res)
    assert res["vcpus_used"] == res["memory_mb_used"] == res["running_vms"] == 0
    await hv.spawn(guest("a"), {"id": "img"}, [], [])
    await hv.spawn(guest("b"), {"id": "img"}, [], [])
    res = await hv.get_available_resource()
    assert (res["vcpus"], res["vcpus_used"], res["memory_mb_used"], res["local_gb_used"]) == (
        4,
        4,
        2048,
        20,
    )
    assert res["running_vms"] == 2 and res["hypervisor_hostname"] == "c1"
    assert res["hypervisor_type"] == "fake"


@arun
async def test_volumes_and_vifs_show_on_the_console(tmp_path: Path) -> None:
    hv = FakeHypervisor(None)
    await hv.spawn(guest(), {"id": "img"}, [], [])
    await hv.attach_volume(guest(), CONN, "/dev/vdb")
    assert "disks: vda vdb" in (await hv.get_console_output(guest())).splitlines()[-1]
    with pytest.raises(DeviceBusy):
        await hv.attach_volume(guest(), CONN, "/dev/vdb")
    await hv.detach_volume(guest(), CONN, "/dev/vdb")
    assert (await hv.get_console_output(guest())).splitlines()[-1].endswith("disks: vda")
    with pytest.raises(DiskNotFound):
        await hv.detach_volume(guest(), CONN, "/dev/vdb")
    vif: Vif = {
        "id": "p1",
        "address": "fa:16:3e:00:00:01",
        "network_id": "n1",
        "ip_addresses": ["10.0.0.5"],
    }
    _check("Vif", vif)
    await hv.plug_vifs(guest(), [vif])
    await hv.plug_vifs(guest(), [vif])  # plugging twice is harmless
    assert hv.guests["u1"]["vifs"] == [vif]
    assert "link up fa:16:3e:00:00:01 (10.0.0.5)" in await hv.get_console_output(guest())
    await hv.unplug_vifs(guest(), [vif])
    await hv.unplug_vifs(guest(), [vif])  # and unplugging twice
    assert hv.guests["u1"]["vifs"] == []
    assert (
        (await hv.get_console_output(guest()))
        .splitlines()[-1]
        .endswith("link down fa:16:3e:00:00:01")
    )


@arun
async def test_boot_from_volume_has_the_volume_as_vda(tmp_path: Path) -> None:
    hv = FakeHypervisor(None)
    bdev: BlockDevice = {"mountpoint": "/dev/vda", "connection_info": CONN, "serial": "vol-1"}
    _check("BlockDevice", bdev)
    await hv.spawn({"uuid": "u1", "name": "bfv"}, {"id": ""}, [], [bdev])
    assert hv.guests["u1"]["disks"]["vda"]["kind"] == "volume"


@arun
async def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "hv" / "state.json"
    hv = FakeHypervisor(path)
    await hv.spawn(guest(), {"id": "img"}, [], [])
    await hv.power_off(guest())
    await hv.sync()
    # the change is in the journal; no snapshot until the journal is long, no temp files
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json.0.log"]
    again = FakeHypervisor(path)
    assert await again.list_instances() == ["vm1"]
    assert await again.get_power_state(guest()) == 4
    await again.power_on(guest())
    await again.reboot(guest(), "HARD")
    again.close()
    assert await FakeHypervisor(path).get_power_state(guest()) == 1


def _journal_lines(path: Path, number: int = 0) -> list[dict[str, Any]]:
    log = journal.journal_path(path, number)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@arun
async def test_changes_are_written_together_by_sync(tmp_path: Path) -> None:
    """A burst of changes (a boot's spawn and vifs) is one journal line per guest, written by
    `sync`; every change is on disk after it, and a sync with nothing new writes nothing."""
    path = tmp_path / "state.json"
    hv = FakeHypervisor(path)
    await hv.spawn(guest(), {"id": "img"}, [], [])
    vif: Vif = {"id": "p1", "address": "fa:16:3e:00:00:01", "ip_addresses": ["10.0.0.5"]}
    await hv.plug_vifs(guest(), [vif])
    assert hv.pending() and list(tmp_path.iterdir()) == []
    await hv.sync()
    lines = _journal_lines(path)
    assert not hv.pending() and [line["key"] for line in lines] == ["u1"]
    assert lines[0]["record"]["vifs"][0]["id"] == "p1"  # the guest as it is after both
    assert FakeHypervisor(path).guests["u1"]["vifs"][0]["id"] == "p1"
    await hv.sync()  # nothing new: no write
    assert len(_journal_lines(path)) == 1
    await asyncio.gather(*(hv.spawn(guest(f"v{i}"), {"id": "img"}, [], []) for i in range(20)))
    await asyncio.gather(*(hv.sync() for _ in range(5)))
    assert len(FakeHypervisor(path).guests) == 21 and len(_journal_lines(path)) == 21
    await hv.destroy(guest("v3"))
    await hv.sync()
    assert _journal_lines(path)[-1] == {"key": "v3", "record": None}
    assert "v3" not in FakeHypervisor(path).guests


@arun
async def test_a_long_journal_is_folded_into_a_snapshot(tmp_path: Path) -> None:
    """Past `MIN_LINES` changes (and more than there are guests) the guests go into a
    snapshot naming the next journal, written behind; the journal before it is removed."""
    path = tmp_path / "state.json"
    hv = FakeHypervisor(path)
    await hv.spawn(guest(), {"id": "img"}, [], [])
    for _ in range(journal.MIN_LINES + 1):
        await hv.reboot(guest(), "SOFT")
        await hv.sync()
    filewriter.drain()
    snapshot = json.loads(path.read_text())
    assert snapshot["journal"] == 1 and list(snapshot["guests"]) == ["u1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    await hv.power_off(guest())
    await hv.sync()
    assert [line["key"] for line in _journal_lines(path, 1)] == ["u1"]
    again = FakeHypervisor(path)
    assert await again.get_power_state(guest()) == 4
    assert len(again.guests["u1"]["console"]) == len(hv.guests["u1"]["console"])


def test_a_crash_mid_fold_or_mid_write_loses_nothing_reported(tmp_path: Path) -> None:
    """The files a crash can leave: a snapshot older than the journal begun for the one
    that did not land (both journals are read, in order), and a last line cut short
    (skipped: its change was never reported, as `sync` had not returned)."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": 1, "hostname": "h", "guests": {}, "journal": 0}))

    def line(key: str, name: str | None) -> str:
        return json.dumps({"key": key, "record": name and {"uuid": key, "name": name}}) + "\n"

    journal.journal_path(path, 0).write_text(line("a", "A") + line("b", "B"))
    journal.journal_path(path, 1).write_text(line("a", None) + line("c", "C") + '{"key": "d", "re')
    hv = FakeHypervisor(path)
    assert {k: g["name"] for k, g in hv.guests.items()} == {"b": "B", "c": "C"}
    # reading changes no file (a reader may be another process than the host's)
    assert journal.journal_path(path, 1).read_text().endswith('{"key": "d", "re')
    # the next change goes on journal 1, after the cut line: read back too
    hv.guests["b"]["name"] = "B2"
    hv._changed("b")
    hv.flush()
    assert {k: g["name"] for k, g in FakeHypervisor(path).guests.items()} == {"b": "B2", "c": "C"}
    # the snapshot naming journal 2 never landed (its write failed): no journal is removed
    journal._remove_older(path, 2)
    assert journal.journal_path(path, 0).exists() and journal.journal_path(path, 1).exists()


def test_a_state_file_of_before_the_journal_is_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": 1, "hostname": "h", "guests": {"u1": {"name": "x"}}}))
    hv = FakeHypervisor(path)
    assert list(hv.guests) == ["u1"] and not hv.pending()


def test_an_unreadable_state_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(Exception, match="unreadable"):
        FakeHypervisor(path)


@arun
async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    hv = FakeHypervisor(None)
    with pytest.raises(Exception, match="uuid"):
        await hv.spawn(cast(Instance, {"name": "x"}), {"id": "img"}, [], [])
    await hv.spawn(guest(), {"id": "img"}, [], [])
    with pytest.raises(Exception, match="device path"):
        await hv.attach_volume(guest(), CONN, "vdb")
