"""Cinder behaviours: volumes through the scheduler to a file back end, actions, attachments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.bus import InProcessBus
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store
from tests.aio import settle
from tests.runtime.fakes import serve_operation
from tests.runtime.netvol_fakes import (
    ADMIN,
    OTHER,
    PROJECT,
    USER,
    check_reply,
    expect_error,
    make_call,
    make_rt,
    make_store,
    stack_info,
    wire,
)

API = "block-storage"
GIB = 1024**3
SERVER = "0c4e3f6a-1d2b-4c5d-8e9f-a0b1c2d3e4f5"
CONNECTOR = {
    "host": "compute-1",
    "ip": "192.0.2.11",
    "initiator": "iqn.x",
    "platform": "x86_64",
    "os_type": "linux",
    "multipath": False,
    "mountpoint": "/dev/vdb",
}
# What `openstack volume create --size 1 v21` sends.
CLI_CREATE = {
    "volume": {
        "description": None,
        "backup_id": None,
        "metadata": None,
        "imageRef": None,
        "size": 1,
        "consistencygroup_id": None,
        "source_volid": None,
        "name": "v21",
        "availability_zone": None,
        "snapshot_id": None,
        "volume_type": None,
    }
}


@dataclass
class Cinder:
    api: ServiceRuntime
    scheduler: ServiceRuntime
    backends: list[ServiceRuntime]
    store: Store
    bus: InProcessBus
    data_dir: Path

    def pp(self, **more: str) -> dict[str, str]:
        return {"project_id": PROJECT, **more}

    async def op(
        self,
        fn: Callable[[Call], Awaitable[Reply]],
        operation_id: str,
        status: int,
        *,
        who: AuthContext | None = USER,
        sequence: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, Call]:
        kwargs.setdefault("path_params", self.pp())
        call = make_call(self.api, operation_id, who=who, sequence=sequence, **kwargs)
        reply = await fn(call)
        return check_reply(API, operation_id, reply, status), call

    async def row(self, volume_id: str) -> dict[str, Any] | None:
        return await self.store.get("volumes", volume_id)

    async def wait_status(self, volume_id: str, status: str) -> dict[str, Any]:
        async def reached() -> bool:
            row = await self.row(volume_id)
            return row is not None and row["status"] == status

        await settle(reached)
        row = await self.row(volume_id)
        assert row is not None
        return row

    async def wait_gone(self, volume_id: str) -> None:
        async def gone() -> bool:
            return await self.row(volume_id) is None

        await settle(gone)

    async def available(self, size: int = 1, who: AuthContext = USER, **attrs: Any) -> str:
        body, _ = await self.op(
            served,
            "createVolume",
            202,
            who=who,
            body={"volume": {"size": size, **attrs}},
        )
        await self.wait_status(body["volume"]["id"], "available")
        return str(body["volume"]["id"])

    def volume_file(self, volume_id: str, host: str = "storage") -> Path:
        return self.data_dir / "volumes" / host / f"volume-{volume_id}.img"


@asynccontextmanager
async def cinder(tmp_path: Path, info: StackInfo | None = None) -> AsyncIterator[Cinder]:
    info = info or stack_info()
    store = make_store(info, "cinder")
    async with InProcessBus() as bus:
        api = make_rt(info, "cinder-api", tmp_path, store=store, bus=bus)
        scheduler = make_rt(info, "cinder-scheduler", tmp_path, store=store, bus=bus)
        await wire(bus, scheduler)
        backends = []
        for node in info.components["cinder-volume"]["nodes"]:
            for host in info.node_hosts(node, api.config):
                backend = make_rt(info, "cinder-volume", tmp_path, store=store, bus=bus, host=host)
                await wire(bus, backend)
                backends.append(backend)
        yield Cinder(api, scheduler, backends, store, bus, tmp_path)
        assert bus.failure_count == 0, bus.failed_deliveries
    store.close()


async def served(call: Call) -> Reply:
    """An operation as the generated service serves it: its policy rule, then the resource
    model (spec/resources/block-storage.yaml) or its behaviour."""
    return await serve_operation(call.rt.info, API, call)


def run(tmp_path: Path, scenario: Callable[[Cinder], Awaitable[None]]) -> None:
    async def main() -> None:
        async with cinder(tmp_path) as c:
            await scenario(c)

    asyncio.run(main())


# -- versions ----------------------------------------------------------------------------------


def test_version_documents(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        body, _ = await c.op(served, "getVolumeVersions", 300, who=None)
        version = body["versions"][0]
        assert (version["id"], version["status"], version["version"]) == ("v3.0", "CURRENT", "3.59")
        assert version["min_version"] == "3.0"
        assert {"href": "http://cloud.example:1234/v3/", "rel": "self"} in version["links"]
        body, _ = await c.op(served, "getVolumeV3", 200, who=None)
        assert body["versions"][0]["version"].startswith("3.")
        assert {"href": "http://cloud.example:1234/v3/", "rel": "self"} in body["versions"][0][
            "links"
        ]
        media = body["versions"][0]["media-types"][0]
        assert media["type"] == "application/vnd.openstack.volume+json;version=3"

    run(tmp_path, scenario)


# -- volumes -----------------------------------------------------------------------------------


def test_create_with_cli_nulls_is_scheduled_and_backed_by_a_sparse_file(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        body, call = await c.op(served, "createVolume", 202, body=CLI_CREATE)
        created = body["volume"]
        assert created["status"] == "creating" and created["bootable"] == "false"
        assert created["name"] == "v21" and created["size"] == 1
        assert created["volume_type"] == "__DEFAULT__" and created["availability_zone"] == "nova"
        assert call.vars["volume"]["id"] == created["id"]
        row = await c.wait_status(created["id"], "available")
        assert row["host"] == "storage"
        path = c.volume_file(created["id"])
        assert path.stat().st_size == GIB
        assert path.stat().st_blocks * 512 < 1024 * 1024  # sparse: no data written

        shown, _ = await c.op(served, "showVolume", 200, path_params=c.pp(volume_id=created["id"]))
        assert shown["volume"]["status"] == "available"
        assert "os-vol-host-attr:host" not in shown["volume"]
        as_admin, _ = await c.op(
            served,
            "showVolume",
            200,
            who=ADMIN,
            path_params=c.pp(volume_id=created["id"]),
        )
        assert as_admin["volume"]["os-vol-host-attr:host"] == "storage@file#file"

        # the CLI's find: GET /volumes/v21 is a 404, then detail?name=v21
        await expect_error(
            served(make_call(c.api, "showVolume", path_params=c.pp(volume_id="v21"))),
            404,
            "VolumeNotFound",
        )
        found, _ = await c.op(served, "listVolumesDetailed", 200, query={"name": ["v21"]})
        assert [v["id"] for v in found["volumes"]] == [created["id"]]
        listed, _ = await c.op(served, "listVolumes", 200)
        assert listed["volumes"][0].keys() == {"id", "name", "links"}

    run(tmp_path, scenario)


def test_project_scoping_and_listing(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        mine = await c.available(name="a", metadata={"k": "v"})
        await c.available(name="b")
        theirs_body, _ = await c.op(
            served,
            "createVolume",
            202,
            who=OTHER,
            path_params={"project_id": OTHER.project_id or ""},
            body={"volume": {"size": 1}},
        )
        theirs = theirs_body["volume"]["id"]
        await expect_error(
            served(make_call(c.api, "showVolume", path_params=c.pp(volume_id=theirs))),
            404,
        )
        await expect_error(
            served(make_call(c.api, "listVolumes", who=OTHER, path_params=c.pp())), 403
        )
        listed, _ = await c.op(served, "listVolumes", 200)
        assert len(listed["volumes"]) == 2
        everything, _ = await c.op(
            served,
            "listVolumesDetailed",
            200,
            who=ADMIN,
            query={"all_tenants": ["1"]},
        )
        assert len(everything["volumes"]) == 3
        ignored, _ = await c.op(
            served, "listVolumes", 200, query={"all_tenants": ["1"]}
        )  # a user's all_tenants is ignored
        assert len(ignored["volumes"]) == 2
        by_meta, _ = await c.op(served, "listVolumes", 200, query={"metadata": ['{"k": "v"}']})
        assert [v["id"] for v in by_meta["volumes"]] == [mine]
        page, _ = await c.op(
            served, "listVolumes", 200, query={"limit": ["1"], "sort": ["name:asc"]}
        )
        assert [v["name"] for v in page["volumes"]] == ["a"]
        assert page["volumes_links"][0]["rel"] == "next"
        rest, _ = await c.op(
            served,
            "listVolumes",
            200,
            query={"sort": ["name:asc"], "marker": [page["volumes"][0]["id"]]},
        )
        assert [v["name"] for v in rest["volumes"]] == ["b"]
        for query in (
            {"limit": ["-1"]},
            {"sort": ["colour:asc"]},
            {"sort": ["name:up"]},
            {"metadata": ["nope"]},
            {"bootable": ["perhaps"]},
        ):
            await expect_error(
                served(make_call(c.api, "listVolumes", path_params=c.pp(), query=query)),
                400,
            )

    run(tmp_path, scenario)


def test_gigabytes_quota_from_the_spec_and_the_limits_report(tmp_path: Path) -> None:
    async def limits(c: Cinder) -> dict[str, Any]:
        async def serve(call: Call) -> Reply:
            return await serve_operation(c.api.info, API, call)

        body, _ = await c.op(serve, "getVolumeLimits", 200)
        absolute: dict[str, Any] = body["limits"]["absolute"]
        return absolute

    async def scenario(c: Cinder) -> None:
        c.api.config.quotas = {"gigabytes": 3}  # spec/resources/block-storage.yaml's quota
        two = {"volume": {**CLI_CREATE["volume"], "size": 2}}
        body, _ = await c.op(served, "createVolume", 202, body=two)
        await c.wait_status(body["volume"]["id"], "available")
        with pytest.raises(ApiError, match="quota is 3G and 2G has been consumed") as refused:
            await c.op(served, "createVolume", 413, body=two)
        assert refused.value.status == 413
        absolute = await limits(c)
        assert absolute["maxTotalVolumeGigabytes"] == 3 and absolute["totalGigabytesUsed"] == 2
        assert absolute["totalVolumesUsed"] == 1 and absolute["maxTotalVolumes"] == -1
        # a count quota in cinder's own words for it
        c.api.config.quotas = {"volumes": 1}
        one = {"volume": {**CLI_CREATE["volume"], "size": 1}}
        with pytest.raises(ApiError) as counted:
            await c.op(served, "createVolume", 413, body=one)
        assert (counted.value.status, counted.value.kind) == (413, "VolumeLimitExceeded")
        assert counted.value.message == (
            "Maximum number of volumes allowed (1) exceeded for quota 'volumes'."
        )

    run(tmp_path, scenario)


def test_create_volume_rejects_bad_input(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        cases: list[tuple[Any, int]] = [
            (None, 400),
            ({}, 400),
            ({"volume": None}, 400),
            ({"volume": {}}, 400),
            ({"volume": {"size": 0}}, 400),
            ({"volume": {"size": -3}}, 400),
            ({"volume": {"size": "big"}}, 400),
            ({"volume": {"size": True}}, 400),
            ({"volume": {"size": 1.5}}, 400),
            ({"volume": {"size": 1, "name": 7}}, 400),
            ({"volume": {"size": 1, "metadata": {"k": 1}}}, 400),
            ({"volume": {"size": 1, "metadata": []}}, 400),
            ({"volume": {"size": 1, "availability_zone": "mars"}}, 400),
            ({"volume": {"size": 1, "volume_type": "gold"}}, 404),
            ({"volume": {"size": 1, "snapshot_id": "s"}}, 404),
            ({"volume": {"size": 1, "source_volid": "missing"}}, 404),
            ({"volume": {"size": 1, "multiattach": True}}, 400),
            ({"volume": {"size": 5000}}, 413),
        ]
        for body, status in cases:
            await expect_error(
                served(make_call(c.api, "createVolume", body=body, path_params=c.pp())),
                status,
            )
        no_size = make_call(c.api, "createVolume", body={"volume": {}}, path_params=c.pp())
        await expect_error(served(no_size), 400, "ValidationError", "unless source_volid")
        assert await c.store.count("volumes") == 0

    run(tmp_path, scenario)


def test_update_and_delete_rules(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available(name="old")
        updated, _ = await c.op(
            served,
            "updateVolume",
            200,
            path_params=c.pp(volume_id=vid),
            body={"volume": {"name": "new", "description": "d", "metadata": {"a": "b"}}},
        )
        assert updated["volume"]["name"] == "new" and updated["volume"]["metadata"] == {"a": "b"}

        # in-use and creating volumes cannot be deleted; available ones can
        await c.store.update("volumes", vid, {"status": "in-use"})
        await expect_error(
            served(make_call(c.api, "deleteVolume", path_params=c.pp(volume_id=vid))),
            400,
            "InvalidVolume",
        )
        await expect_error(
            served(
                make_call(
                    c.api,
                    "deleteVolume",
                    path_params=c.pp(volume_id=vid),
                    query={"force": ["true"]},
                )
            ),
            403,
        )
        await c.store.update("volumes", vid, {"status": "available"})
        path = c.volume_file(vid)
        assert path.exists()
        _, call = await c.op(served, "deleteVolume", 202, path_params=c.pp(volume_id=vid))
        assert call.vars["volume"]["status"] == "deleting"
        await c.wait_gone(vid)
        assert not path.exists()
        await expect_error(
            served(make_call(c.api, "deleteVolume", path_params=c.pp(volume_id=vid))),
            404,
        )

        # a volume that never got a host goes at once
        await c.store.create(
            "volumes",
            {
                "id": "4b0a6e3c-0d8e-4e86-8c55-0c1f1c2b9a77",
                "project_id": PROJECT,
                "size": 1,
                "status": "error",
                "host": None,
                "attachments": [],
            },
        )
        await c.op(
            served,
            "deleteVolume",
            202,
            path_params=c.pp(volume_id="4b0a6e3c-0d8e-4e86-8c55-0c1f1c2b9a77"),
        )
        assert await c.row("4b0a6e3c-0d8e-4e86-8c55-0c1f1c2b9a77") is None

        creating = {
            "id": "5b0a6e3c-0d8e-4e86-8c55-0c1f1c2b9a77",
            "project_id": PROJECT,
            "size": 1,
            "status": "creating",
            "host": None,
            "attachments": [],
        }
        await c.store.create("volumes", creating)
        await expect_error(
            served(
                make_call(c.api, "deleteVolume", path_params=c.pp(volume_id=str(creating["id"])))
            ),
            400,
        )

    run(tmp_path, scenario)


def test_volume_actions(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available()

        async def action(body: Any, status: int = 202, who: AuthContext = USER) -> Any:
            result, _ = await c.op(
                served,
                "volumeAction",
                status,
                who=who,
                path_params=c.pp(volume_id=vid),
                body=body,
            )
            return result

        async def refused(body: Any, status: int = 400) -> None:
            await expect_error(
                served(
                    make_call(c.api, "volumeAction", body=body, path_params=c.pp(volume_id=vid))
                ),
                status,
            )

        await action({"os-reserve": None})
        assert (await c.row(vid) or {})["status"] == "attaching"
        await refused({"os-reserve": {}})
        await action({"os-unreserve": {}})
        assert (await c.row(vid) or {})["status"] == "available"
        await refused({"os-begin_detaching": None})

        await action({"os-set_bootable": {"bootable": True}})
        shown, _ = await c.op(served, "showVolume", 200, path_params=c.pp(volume_id=vid))
        assert shown["volume"]["bootable"] == "true"
        await refused({"os-set_bootable": {"bootable": "maybe"}})

        await refused({"os-extend": {"new_size": 1}})
        await refused({"os-extend": {"new_size": "x"}})
        await action({"os-extend": {"new_size": 3}})
        assert (await c.row(vid) or {})["size"] == 3

        connection = await action({"os-initialize_connection": {"connector": CONNECTOR}}, 200)
        assert connection["connection_info"]["driver_volume_type"] == "file"
        assert c.volume_file(vid).stat().st_size == 3 * GIB  # grown on export
        await refused({"os-initialize_connection": {"connector": {"ip": "x"}}})

        await action({"os-attach": {"instance_uuid": SERVER, "mountpoint": "/dev/vdc"}})
        row = await c.row(vid) or {}
        assert row["status"] == "in-use" and row["attachments"][0]["server_id"] == SERVER
        # extending an in-use volume comes with 3.42 (test_volume_microversions.py)
        before_342 = make_call(
            c.api,
            "volumeAction",
            body={"os-extend": {"new_size": 4}},
            path_params=c.pp(volume_id=vid),
        )
        before_342.microversion = (3, 41)
        await expect_error(served(before_342), 400, match="current status is: in-use")
        # an attachment the volume does not have: the spec's attachment not-found error
        gone = served(
            make_call(
                c.api,
                "volumeAction",
                body={"os-detach": {"attachment_id": "nope"}},
                path_params=c.pp(volume_id=vid),
            )
        )
        await expect_error(gone, 404, "VolumeAttachmentNotFound", "VolumeAttachment nope could")
        await action({"os-begin_detaching": {}})
        assert (await c.row(vid) or {})["status"] == "detaching"
        await action({"os-roll_detaching": {}})
        assert (await c.row(vid) or {})["status"] == "in-use"
        await action({"os-detach": {}})
        row = await c.row(vid) or {}
        assert row["status"] == "available" and row["attachments"] == []

        await refused({"os-frobnicate": {}})
        await refused({})
        await refused({"os-reserve": None, "os-unreserve": None})
        await refused({"os-reset_status": {"status": "available"}}, 403)
        await action({"os-reset_status": {"status": "error"}}, who=ADMIN)
        assert (await c.row(vid) or {})["status"] == "error"
        await expect_error(
            served(
                make_call(
                    c.api,
                    "volumeAction",
                    who=ADMIN,
                    body={"os-reset_status": {"status": "sleepy"}},
                    path_params=c.pp(volume_id=vid),
                )
            ),
            400,
        )

    run(tmp_path, scenario)


def test_volume_types(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        listed, _ = await c.op(served, "listVolumeTypes", 200)
        assert [t["name"] for t in listed["volume_types"]] == ["__DEFAULT__"]
        type_id = listed["volume_types"][0]["id"]
        for ref in (type_id, "__DEFAULT__", "default"):
            shown, _ = await c.op(
                served,
                "showVolumeType",
                200,
                path_params=c.pp(volume_type_id=ref),
            )
            assert shown["volume_type"]["id"] == type_id
        await expect_error(
            served(make_call(c.api, "showVolumeType", path_params=c.pp(volume_type_id="gold"))),
            404,
            "VolumeTypeNotFound",
        )
        private, _ = await c.op(served, "listVolumeTypes", 200, query={"is_public": ["false"]})
        # a caller who may not see private types asks in vain (cinder: public ones)
        assert [t["name"] for t in private["volume_types"]] == ["__DEFAULT__"]

    run(tmp_path, scenario)
