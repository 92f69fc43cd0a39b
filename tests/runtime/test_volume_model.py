"""Cinder's volumes as spec/resources/block-storage.yaml declares them: what the engine's
features added for cinder (field aliases, the `subset` filter, offset paging and cinder's
sort direction, `all_rule`, action policies and quotas, payload checks, refusal kinds) do
for a client, checked for content."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from specstack_runtime.context import AuthContext, Call
from tests.aio import settle
from tests.runtime.netvol_fakes import (
    ADMIN,
    OTHER,
    OTHER_PROJECT,
    PROJECT,
    USER,
    auth,
    check_reply,
    expect_error,
    make_call,
    stack_info,
)
from tests.runtime.test_volume import API, CONNECTOR, SERVER, Cinder, cinder, run, served

SERVICE = auth(PROJECT, ("service",), "nova")


async def _op(
    c: Cinder,
    operation_id: str,
    status: int,
    who: AuthContext = USER,
    *,
    path: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
) -> Any:
    call = _call(c, operation_id, who, path, query, body)
    return check_reply(API, operation_id, await served(call), status)


def _call(
    c: Cinder,
    operation_id: str,
    who: AuthContext,
    path: dict[str, str] | None,
    query: dict[str, str] | None,
    body: Any,
) -> Call:
    return make_call(
        c.api,
        operation_id,
        who=who,
        path_params=c.pp(**(path or {})),
        query={k: [v] for k, v in (query or {}).items()},
        body=body,
    )


async def _with_and_without_members(
    tmp_path: Path,
    members: Callable[[dict[str, Any]], None],
    scenario: Callable[..., Awaitable[None]],
) -> None:
    """`scenario` under the spec's policy (members may not), then with `members` applied to
    the IR's policy (members may)."""
    async with cinder(tmp_path) as c:
        await scenario(c, members_may=False)
    async with cinder(tmp_path, stack_info(members)) as c:
        await scenario(c, members_may=True)


async def _gone(c: Cinder, table: str, row_id: str) -> bool:
    return await c.store.get(table, row_id) is None


async def _refused(
    c: Cinder,
    operation_id: str,
    status: int,
    who: AuthContext = USER,
    *,
    kind: str | None = None,
    match: str | None = None,
    path: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
) -> None:
    call = _call(c, operation_id, who, path, query, body)
    await expect_error(served(call), status, kind, match)


def test_lists_sort_as_cinder_does_and_page_by_offset(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        ids = {size: await c.available(size=size, name=f"v{size}") for size in (2, 10, 3)}
        # a key without a direction is cinder's desc; sizes sort as numbers (10 after 3)
        body = await _op(c, "listVolumesDetailed", 200, query={"sort": "size"})
        assert [v["size"] for v in body["volumes"]] == [10, 3, 2]
        body = await _op(
            c, "listVolumesDetailed", 200, query={"sort_key": "size", "sort_dir": "asc"}
        )
        assert [v["size"] for v in body["volumes"]] == [2, 3, 10]
        # offset skips rows; the next link keeps the query but not the offset
        page = await _op(
            c, "listVolumes", 200, query={"sort": "size:asc", "offset": "1", "limit": "1"}
        )
        assert [v["id"] for v in page["volumes"]] == [ids[3]]
        href = page["volumes_links"][0]["href"]
        assert "offset" not in href and f"marker={ids[3]}" in href and "limit=1" in href
        await _refused(c, "listVolumes", 400, query={"offset": "-2"}, kind="InvalidInput")
        await _refused(c, "listVolumes", 400, query={"sort": "size:sideways"})
        # metadata: a JSON object whose pairs the volume holds
        await _op(
            c,
            "updateVolume",
            200,
            path={"volume_id": ids[2]},
            body={"volume": {"metadata": {"tier": "gold", "n": "1"}}},
        )
        found = await _op(c, "listVolumes", 200, query={"metadata": '{"tier": "gold"}'})
        assert [v["id"] for v in found["volumes"]] == [ids[2]]
        found = await _op(c, "listVolumes", 200, query={"metadata": '{"tier": "gold", "n": 2}'})
        assert found["volumes"] == []
        await _refused(c, "listVolumes", 400, query={"metadata": "[1]"})

    run(tmp_path, scenario)


def test_all_tenants_is_for_administrators_while_services_see_each_volume(
    tmp_path: Path,
) -> None:
    async def scenario(c: Cinder) -> None:
        created, _ = await c.op(
            served,
            "createVolume",
            202,
            who=OTHER,
            path_params={"project_id": OTHER_PROJECT},
            body={"volume": {"size": 1}},
        )
        theirs = created["volume"]["id"]
        await c.wait_status(theirs, "available")
        await _op(c, "showVolume", 200, SERVICE, path={"volume_id": theirs})
        listed = await _op(c, "listVolumes", 200, SERVICE, query={"all_tenants": "1"})
        assert listed["volumes"] == []  # a service's all_tenants is ignored, not refused
        listed = await _op(c, "listVolumes", 200, ADMIN, query={"all_tenants": "true"})
        assert [v["id"] for v in listed["volumes"]] == [theirs]
        shown = await _op(c, "showVolume", 200, ADMIN, path={"volume_id": theirs})
        assert shown["volume"]["os-vol-tenant-attr:tenant_id"] == OTHER_PROJECT
        assert shown["volume"]["os-vol-host-attr:host"] == "storage@file#file"
        assert (
            "os-vol-host-attr:host"
            not in (await _op(c, "showVolume", 200, SERVICE, path={"volume_id": theirs}))["volume"]
        )

    run(tmp_path, scenario)


def test_update_takes_the_old_names_and_the_new_ones_win(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available(name="a")
        path = {"volume_id": vid}
        body = await _op(
            c, "updateVolume", 200, path=path, body={"volume": {"display_name": "old-style"}}
        )
        assert body["volume"]["name"] == "old-style"
        body = await _op(
            c,
            "updateVolume",
            200,
            path=path,
            body={"volume": {"display_name": "loses", "name": "wins", "display_description": "d"}},
        )
        assert body["volume"]["name"] == "wins" and body["volume"]["description"] == "d"
        await _refused(c, "updateVolume", 400, path=path, body={"volume": {"size": 9}})
        await _refused(
            c, "updateVolume", 400, path=path, body={"volume": {"display_name": "x" * 256}}
        )
        assert (await c.row(vid) or {})["name"] == "wins"

    run(tmp_path, scenario)


def test_extend_counts_against_the_gigabytes_quota(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        c.api.config.quotas = {"gigabytes": 4}
        vid = await c.available(size=1)
        await c.available(size=1)
        path = {"volume_id": vid}
        await _refused(
            c,
            "volumeAction",
            413,
            path=path,
            body={"os-extend": {"new_size": 4}},
            kind="VolumeSizeExceedsAvailableQuota",
            match="Requested 3G, quota is 4G and 2G has been consumed.",
        )
        assert (await c.row(vid) or {})["size"] == 1
        await _op(c, "volumeAction", 202, path=path, body={"os-extend": {"new_size": "3"}})
        assert (await c.row(vid) or {})["size"] == 3

    run(tmp_path, scenario)


def test_connector_is_checked_against_the_export_message_before_the_back_end(
    tmp_path: Path,
) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        bad = {**CONNECTOR, "multipath": "sometimes"}  # the message's schema: a boolean
        await _refused(
            c,
            "volumeAction",
            400,
            path={"volume_id": vid},
            body={"os-initialize_connection": {"connector": bad}},
            match="multipath",
        )
        answer = await _op(
            c,
            "volumeAction",
            200,
            path={"volume_id": vid},
            body={"os-initialize_connection": {"connector": CONNECTOR}},
        )
        assert answer["connection_info"]["data"]["volume_id"] == vid

    run(tmp_path, scenario)


def test_reset_status_follows_the_policy_file(tmp_path: Path) -> None:
    rule = "volume_extension:volume_admin_actions:reset_status"

    async def scenario(c: Cinder, *, members_may: bool) -> None:
        vid = await c.available()
        body = {"os-reset_status": {"status": "error", "attach_status": "detached"}}
        if members_may:
            await _op(c, "volumeAction", 202, path={"volume_id": vid}, body=body)
            assert (await c.row(vid) or {})["status"] == "error"
        else:
            # refused before the argument is looked at
            bad = {"os-reset_status": {"status": "sleepy"}}
            await _refused(
                c,
                "volumeAction",
                403,
                path={"volume_id": vid},
                body=bad,
                kind="PolicyNotAuthorized",
                match=f"Policy doesn't allow {rule} to be performed.",
            )
            assert (await c.row(vid) or {})["status"] == "available"

    def members(ir: dict[str, Any]) -> None:
        for p in ir["policy"]:
            if p["name"] == rule:
                p["rule"] = "rule:admin_or_member"

    asyncio.run(_with_and_without_members(tmp_path, members, scenario))


def test_delete_is_refused_while_attached_unless_an_administrator_forces_it(
    tmp_path: Path,
) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        path = {"volume_id": vid}
        # a reserved attachment (the attachment API) keeps the volume, whatever its status
        await _op(
            c,
            "createAttachment",
            200,
            body={"attachment": {"volume_uuid": vid, "instance_uuid": SERVER}},
        )
        await c.store.update("volumes", vid, {"status": "available"})
        await _refused(c, "deleteVolume", 400, path=path, kind="InvalidVolume", match=vid)
        await _refused(c, "deleteVolume", 400, path=path, query={"force": "perhaps"})
        await _refused(
            c, "deleteVolume", 403, path=path, query={"force": "true"}, kind="PolicyNotAuthorized"
        )
        assert (await c.row(vid) or {})["status"] == "available"
        await _op(c, "deleteVolume", 202, ADMIN, path=path, query={"force": "true"})
        await c.wait_gone(vid)
        assert await c.store.list("attachments", {"volume_id": vid}) == []

    run(tmp_path, scenario)


def test_snapshots_keep_their_volume_and_count_against_their_quota(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        c.api.config.quotas = {"snapshots": 1}
        vid = await c.available(size=2)
        body = {"snapshot": {"volume_id": vid, "display_name": "s1", "metadata": {"k": "v"}}}
        created = await _op(c, "createSnapshot", 202, body=body)
        snap = created["snapshot"]
        assert (snap["name"], snap["size"], snap["volume_id"]) == ("s1", 2, vid)
        assert snap["status"] == "available" and snap["metadata"] == {"k": "v"}
        path = {"snapshot_id": snap["id"]}
        # the volume cannot go while it has a snapshot, even forced
        await _refused(c, "deleteVolume", 400, path={"volume_id": vid}, kind="InvalidVolume")
        await _refused(
            c, "deleteVolume", 400, ADMIN, path={"volume_id": vid}, query={"force": "true"}
        )
        await _refused(
            c,
            "createSnapshot",
            413,
            body={"snapshot": {"volume_id": vid}},
            kind="SnapshotLimitExceeded",  # cinder's words for a count quota
            match="Maximum number of snapshots allowed (1) exceeded",
        )
        limits = await _op(c, "getVolumeLimits", 200)
        assert limits["limits"]["absolute"]["totalSnapshotsUsed"] == 1
        assert limits["limits"]["absolute"]["maxTotalSnapshots"] == 1
        updated = await _op(
            c, "updateSnapshot", 200, path=path, body={"snapshot": {"name": "renamed"}}
        )
        assert updated["snapshot"]["name"] == "renamed"
        listed = await _op(c, "listSnapshotsDetailed", 200, query={"volume_id": vid})
        assert [s["id"] for s in listed["snapshots"]] == [snap["id"]]
        assert (await _op(c, "listSnapshots", 200, query={"name": "s1"}))["snapshots"] == []
        other = auth("f" * 32, user="u9")
        theirs = {"project_id": "f" * 32, **path}
        await _refused(c, "showSnapshot", 404, other, path=theirs, kind="SnapshotNotFound")
        await _op(c, "deleteSnapshot", 202, path=path)  # the back end removes its copy, then it
        await settle(lambda: _gone(c, "snapshots", snap["id"]))
        await _refused(c, "showSnapshot", 404, path=path)
        await _op(c, "deleteVolume", 202, path={"volume_id": vid})
        await c.wait_gone(vid)

    run(tmp_path, scenario)


def test_a_snapshot_needs_an_available_volume_unless_forced(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        await _refused(
            c,
            "createSnapshot",
            404,
            body={"snapshot": {"volume_id": "4b0a6e3c-0d8e-4e86-8c55-0c1f1c2b9a77"}},
        )
        await _refused(c, "createSnapshot", 400, body={"snapshot": {"name": "no volume"}})
        await c.store.update("volumes", vid, {"status": "in-use"})
        await _refused(
            c,
            "createSnapshot",
            400,
            body={"snapshot": {"volume_id": vid}},
            kind="InvalidVolume",
            match="must be available, but the current status is in-use.",
        )
        await _refused(
            c, "createSnapshot", 400, body={"snapshot": {"volume_id": vid, "force": "maybe"}}
        )
        forced = await _op(
            c, "createSnapshot", 202, body={"snapshot": {"volume_id": vid, "force": True}}
        )
        assert forced["snapshot"]["volume_id"] == vid
        assert await c.store.count("snapshots") == 1

    run(tmp_path, scenario)


def test_a_clone_takes_its_source_size_and_needs_it_usable(tmp_path: Path) -> None:
    """The spec's `refuse` rules read the source volume (`refs.source_volid`)."""

    async def scenario(c: Cinder) -> None:
        source = await c.available(size=2)
        await c.store.update("volumes", source, {"bootable": True})
        clone = await _op(c, "createVolume", 202, body={"volume": {"source_volid": source}})
        assert clone["volume"]["size"] == 2 and clone["volume"]["bootable"] == "true"
        await c.wait_status(clone["volume"]["id"], "available")
        await _refused(
            c,
            "createVolume",
            400,
            body={"volume": {"source_volid": source, "size": 1}},
            kind="InvalidInput",
            match="Volume size 1GB cannot be smaller than the source volume size 2GB.",
        )
        await c.store.update("volumes", source, {"status": "error"})
        await _refused(
            c,
            "createVolume",
            400,
            body={"volume": {"source_volid": source, "size": 3}},
            kind="InvalidVolume",
            match=f"Source volume {source} status must be available or in-use to clone, "
            "but the current status is error.",
        )
        assert await c.store.count("volumes") == 2

    run(tmp_path, scenario)


def test_volume_types_follow_the_policy_file(tmp_path: Path) -> None:
    """Private types and extra specs are for the callers spec/policy.yaml's rules allow."""
    gold: dict[str, Any] = {
        "id": "6a0e4a3c-94d4-4a43-8c8e-3f1b0f0a2d11",
        "name": "gold",
        "description": "fast",
        "is_public": False,
        "extra_specs": {"volume_backend_name": "file"},
        "qos_specs_id": None,
    }

    async def names(c: Cinder, who: AuthContext, **query: str) -> list[str]:
        body = await _op(c, "listVolumeTypes", 200, who, query=query)
        return [t["name"] for t in body["volume_types"]]

    async def scenario(c: Cinder, *, members_may: bool) -> None:
        await c.store.create("volume_types", dict(gold))
        # administrators: public types by default, private ones or all when asked
        assert await names(c, ADMIN) == ["__DEFAULT__"]
        assert await names(c, ADMIN, is_public="false") == ["gold"]
        assert await names(c, ADMIN, is_public="None") == ["__DEFAULT__", "gold"]
        shown = await _op(c, "showVolumeType", 200, ADMIN, path={"volume_type_id": "gold"})
        assert shown["volume_type"]["id"] == gold["id"]
        assert shown["volume_type"]["extra_specs"] == {"volume_backend_name": "file"}
        assert shown["volume_type"]["os-volume-type-access:is_public"] is False
        await _refused(
            c,
            "listVolumeTypes",
            400,
            ADMIN,
            query={"is_public": "maybe"},
            kind="InvalidParameterValue",
        )
        created = await _op(
            c, "createVolume", 202, ADMIN, body={"volume": {"size": 1, "volume_type": "gold"}}
        )
        assert created["volume"]["volume_type"] == "gold"
        if members_may:
            assert await names(c, USER, is_public="None") == ["__DEFAULT__", "gold"]
            shown = await _op(c, "showVolumeType", 200, path={"volume_type_id": gold["id"]})
            assert shown["volume_type"]["extra_specs"] == {"volume_backend_name": "file"}
            assert shown["volume_type"]["qos_specs_id"] is None
            return
        # others: public types only, whatever they ask, and no extra specs
        assert await names(c, USER, is_public="None") == ["__DEFAULT__"]
        listed = await _op(c, "listVolumeTypes", 200)
        assert "extra_specs" not in listed["volume_types"][0]
        assert "qos_specs_id" not in listed["volume_types"][0]
        for ref in ("gold", gold["id"]):
            await _refused(
                c,
                "showVolumeType",
                404,
                path={"volume_type_id": ref},
                kind="VolumeTypeNotFound",
                match=f"Volume type {ref} could not be found.",
            )
        await _refused(
            c,
            "createVolume",
            404,
            body={"volume": {"size": 1, "volume_type": "gold"}},
            kind="VolumeTypeNotFoundByName",
        )

    def members(ir: dict[str, Any]) -> None:
        for p in ir["policy"]:
            if p["name"] in (
                "volume_extension:type_get_private",
                "volume_extension:access_types_extra_specs",
                "volume_extension:access_types_qos_specs_id",
            ):
                p["rule"] = "rule:admin_or_member"

    asyncio.run(_with_and_without_members(tmp_path, members, scenario))


def test_attached_host_is_shown_as_the_policy_rule_says(tmp_path: Path) -> None:
    """A volume's attachments show host_name where `rules.admin_or_service` holds: editing
    that rule in the policy changes who sees it."""

    async def host_seen(c: Cinder) -> Any:
        vid = await c.available()
        attach = {
            "os-attach": {"instance_uuid": SERVER, "mountpoint": "/dev/vdc", "host_name": "cn-9"}
        }
        await _op(c, "volumeAction", 202, path={"volume_id": vid}, body=attach)
        shown = await _op(c, "showVolume", 200, path={"volume_id": vid})
        (entry,) = shown["volume"]["attachments"]
        assert entry["server_id"] == SERVER and entry["device"] == "/dev/vdc"
        assert entry["attached_at"].endswith(".000000") and "Z" not in entry["attached_at"]
        return entry["host_name"]

    def members(ir: dict[str, Any]) -> None:
        for p in ir["policy"]:
            if p["name"] == "admin_or_service":
                p["rule"] = "rule:admin or rule:service or role:member"

    async def main() -> None:
        async with cinder(tmp_path) as c:
            assert await host_seen(c) is None
        async with cinder(tmp_path, stack_info(members)) as c:
            assert await host_seen(c) == "cn-9"

    asyncio.run(main())


def test_create_and_detach_refusals_say_what_the_spec_says(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        await _refused(
            c,
            "createVolume",
            400,
            body={"volume": {"size": 1, "availability_zone": "mars"}},
            kind="InvalidAvailabilityZone",
            match="Invalid input received: Availability zone 'mars' is invalid.",
        )
        await _refused(
            c,
            "createVolume",
            400,
            body={"volume": {"size": 1}, "OS-SCH-HNT:scheduler_hints": ["x"]},
            kind="InvalidInput",
            match="Invalid scheduler hints: an object is expected.",
        )
        vid = await c.available()
        await _refused(
            c,
            "volumeAction",
            400,
            path={"volume_id": vid},
            body={"os-detach": {}},
            kind="InvalidVolume",
            match=f"Invalid volume: Volume {vid} is not attached to anything.",
        )
        await _refused(
            c,
            "createAttachment",
            400,
            body={
                "attachment": {
                    "volume_uuid": vid,
                    "instance_uuid": SERVER,
                    "connector": {"ip": "x"},
                }
            },
            kind="InvalidInput",
            match="Invalid connector: ",
        )

    run(tmp_path, scenario)
