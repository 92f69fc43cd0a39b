"""Block storage microversions 3.0 to 3.59 over HTTP: cinder-api's generated routes served
in-process (the volume kit's store, scheduler and back ends), each change asked for at the
version before it and at it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from generated.services import cinder_api
from specstack_runtime.app import ApiApp
from specstack_runtime.config import StackConfig
from specstack_runtime.context import AuthContext
from specstack_runtime.http import ClientSet
from tests.aio import settle
from tests.runtime.netvol_fakes import ADMIN, OTHER, OTHER_PROJECT, PROJECT, USER, stack_info
from tests.runtime.test_volume import CONNECTOR, SERVER, Cinder, cinder, served

V3 = f"/v3/{PROJECT}"


class _Tokens:
    """The token names the caller: "admin" or anything else (the project's member)."""

    async def validate(self, token: str) -> AuthContext:
        return ADMIN if token == "admin" else USER


class Api:
    """cinder-api's routes over the kit's runtime; `at` asks for a microversion."""

    def __init__(self, c: Cinder) -> None:
        self.c = c
        c.api.auth = _Tokens()  # type: ignore[assignment]
        app = ApiApp(c.api, error_format="cinder", identity_url="http://keystone.test/v3")
        self.asgi = app.build(cinder_api.ROUTES, title="cinder")

    async def at(
        self, version: str | None, method: str, path: str, *, token: str = "user", **kw: Any
    ) -> httpx.Response:
        headers = {"X-Auth-Token": token, **kw.pop("headers", {})}
        if version is not None:
            headers["OpenStack-API-Version"] = f"volume {version}"
        transport = httpx.ASGITransport(app=self.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://cinder.test") as cl:
            return await cl.request(method, path, headers=headers, **kw)

    async def volume(self, version: str, volume_id: str, token: str = "user") -> dict[str, Any]:
        resp = await self.at(version, "GET", f"{V3}/volumes/{volume_id}", token=token)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()["volume"]
        return body

    async def ids(self, version: str, path: str, **params: str) -> set[str]:
        resp = await self.at(version, "GET", f"{V3}/{path}", params=params)
        assert resp.status_code == 200, resp.text
        key = "snapshots" if path.startswith("snapshots") else "volumes"
        return {item["id"] for item in resp.json()[key]}


async def _missing(path: Path) -> bool:
    return not path.exists()


def run(tmp_path: Path, scenario: Callable[[Api], Awaitable[None]]) -> None:
    async def main() -> None:
        async with cinder(tmp_path) as c:
            await scenario(Api(c))

    asyncio.run(main())


def test_the_range_is_3_0_to_3_59_and_each_answer_names_its_version(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        doc = (await api.at(None, "GET", "/v3/")).json()["versions"][0]
        assert (doc["min_version"], doc["version"]) == ("3.0", "3.59")
        named = {
            v: (await api.at(v, "GET", f"{V3}/volumes")).headers.get("OpenStack-API-Version")
            for v in (None, "3.27", "latest")
        }
        assert named == {None: "volume 3.0", "3.27": "volume 3.27", "latest": "volume 3.59"}
        beyond = await api.at("3.60", "GET", f"{V3}/volumes")
        assert beyond.status_code == 406
        assert "Minimum is 3.0 and maximum is 3.59" in beyond.text
        assert beyond.headers["OpenStack-API-Version"] == "volume 3.0"
        malformed = await api.at("3.x", "GET", f"{V3}/volumes")
        assert malformed.status_code == 400 and "invalid format" in malformed.text
        # another service's version is not cinder's: 3.0
        other = await api.at(None, "GET", f"{V3}/volumes/detail",
                             headers={"OpenStack-API-Version": "compute 2.19"})  # fmt: skip
        assert other.status_code == 200
        assert other.headers["OpenStack-API-Version"] == "volume 3.0"

    run(tmp_path, scenario)


def test_volume_fields_of_3_13_3_21_and_3_48(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vid = await api.c.available()
        base = await api.volume("3.12", vid)
        assert not {"group_id", "provider_id", "shared_targets", "service_uuid"} & base.keys()
        assert (await api.volume("3.13", vid))["group_id"] is None
        # provider_id: administrators only, from 3.21
        assert "provider_id" not in await api.volume("3.20", vid, token="admin")
        assert (await api.volume("3.21", vid, token="admin"))["provider_id"] is None
        assert "provider_id" not in await api.volume("3.21", vid)
        assert "shared_targets" not in await api.volume("3.47", vid)
        at48 = await api.volume("3.48", vid)
        assert at48["shared_targets"] is False
        # the volume service's id: a UUID of its host, the same for its other volumes
        assert str(uuid.UUID(at48["service_uuid"])) == at48["service_uuid"]
        other = await api.c.available()
        assert (await api.volume("3.59", other))["service_uuid"] == at48["service_uuid"]
        listed = (await api.at("3.48", "GET", f"{V3}/volumes/detail")).json()["volumes"]
        assert {v["id"]: v["shared_targets"] for v in listed} == {vid: False, other: False}
        # a field of a later version is an unknown attribute before it
        refused = await api.at("3.12", "POST", f"{V3}/volumes",
                               json={"volume": {"size": 1, "group_id": None}})  # fmt: skip
        assert refused.status_code == 400 and "group_id" in refused.text
        assert len(await api.c.store.list("volumes", {})) == 2

    run(tmp_path, scenario)


def test_list_filters_of_3_4_3_10_and_3_22(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        imaged, plain = await api.c.available(), await api.c.available()
        await api.c.store.update("volumes", imaged, {"volume_image_metadata": {"os": "linux"}})
        both = {imaged, plain}
        image = json.dumps({"os": "linux"})
        assert await api.ids("3.3", "volumes", glance_metadata=image) == both  # ignored
        assert await api.ids("3.4", "volumes", glance_metadata=image) == {imaged}
        assert await api.ids("3.4", "volumes/detail", glance_metadata=image) == {imaged}
        assert await api.ids("3.9", "volumes", group_id="g-1") == both  # ignored
        assert await api.ids("3.10", "volumes", group_id="g-1") == set()
        # snapshots' metadata filter
        snaps = {}
        for key in ("a", "b"):
            resp = await api.at("3.21", "POST", f"{V3}/snapshots",
                                json={"snapshot": {"volume_id": plain, "metadata": {"k": key}}})  # fmt: skip
            assert resp.status_code == 202, resp.text
            snaps[key] = resp.json()["snapshot"]["id"]
        meta = json.dumps({"k": "a"})
        assert await api.ids("3.21", "snapshots", metadata=meta) == set(snaps.values())
        assert await api.ids("3.22", "snapshots", metadata=meta) == {snaps["a"]}
        assert await api.ids("3.22", "snapshots/detail", metadata=meta) == {snaps["a"]}
        bad = await api.at("3.22", "GET", f"{V3}/snapshots", params={"metadata": "[1"})
        assert bad.status_code == 400

    run(tmp_path, scenario)


def test_a_snapshot_shows_its_user_from_3_41(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vid = await api.c.available()
        made = await api.at("3.41", "POST", f"{V3}/snapshots",
                            json={"snapshot": {"volume_id": vid, "name": "s1"}})  # fmt: skip
        assert made.status_code == 202 and made.json()["snapshot"]["user_id"] == USER.user_id
        sid = made.json()["snapshot"]["id"]
        before = (await api.at("3.40", "GET", f"{V3}/snapshots/{sid}")).json()["snapshot"]
        assert "user_id" not in before and before["name"] == "s1"
        listed = (await api.at("3.41", "GET", f"{V3}/snapshots/detail")).json()["snapshots"]
        assert [(s["id"], s["user_id"]) for s in listed] == [(sid, USER.user_id)]

    run(tmp_path, scenario)


def test_an_in_use_volume_is_extended_from_3_42(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vid = await api.c.available()
        await api.c.store.update("volumes", vid, {"status": "in-use"})
        path = f"{V3}/volumes/{vid}/action"
        extend = {"os-extend": {"new_size": 2}}
        refused = await api.at("3.41", "POST", path, json=extend)
        assert refused.status_code == 400
        assert refused.json()["badRequest"]["message"] == (
            "Invalid volume: Volume status must be 'available' to extend, "
            "but the current status is: in-use."
        )
        assert (await api.c.row(vid) or {})["size"] == 1
        done = await api.at("3.42", "POST", path, json=extend)
        assert done.status_code == 202, done.text
        assert (await api.volume("3.42", vid))["size"] == 2
        # a reserved volume is not extended at any version
        await api.c.store.update("volumes", vid, {"status": "reserved"})
        again = await api.at("3.59", "POST", path, json={"os-extend": {"new_size": 3}})
        assert again.status_code == 400 and "reserved" in again.text

    run(tmp_path, scenario)


def test_force_is_a_delete_parameter_from_3_23(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vid = await api.c.available()
        path = f"{V3}/volumes/{vid}"
        # 3.23: force is for administrators, and a boolean
        forbidden = await api.at("3.23", "DELETE", path, params={"force": "true"})
        assert forbidden.status_code == 403 and "volume:force_delete" in forbidden.text
        wrong = await api.at("3.23", "DELETE", path, params={"force": "maybe"})
        assert wrong.status_code == 400
        assert (await api.c.row(vid) or {})["status"] == "available"
        # 3.22: the parameter is ignored, the volume deleted as without it
        gone = await api.at("3.22", "DELETE", path, params={"force": "maybe"})
        assert gone.status_code == 202, gone.text
        await api.c.wait_gone(vid)
        # an in-use volume: only a forced delete (3.23) takes it
        busy = await api.c.available()
        await api.c.store.update("volumes", busy, {"status": "in-use"})
        kept = await api.at("3.22", "DELETE", f"{V3}/volumes/{busy}", token="admin",
                            params={"force": "true"})  # fmt: skip
        assert kept.status_code == 400 and "is in-use" in kept.text
        forced = await api.at("3.23", "DELETE", f"{V3}/volumes/{busy}", token="admin",
                              params={"force": "true"})  # fmt: skip
        assert forced.status_code == 202, forced.text
        await api.c.wait_gone(busy)

    run(tmp_path, scenario)


def test_attachments_from_3_27_completion_from_3_44_mode_from_3_54(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vid = await api.c.available()
        body = {"attachment": {"volume_uuid": vid, "instance_uuid": SERVER}}
        before = await api.at("3.26", "POST", f"{V3}/attachments", json=body)
        assert before.status_code == 404
        assert (await api.c.row(vid) or {})["status"] == "available"
        made = await api.at("3.27", "POST", f"{V3}/attachments", json=body)
        assert made.status_code == 200, made.text
        att = made.json()["attachment"]
        assert (att["status"], att["attach_mode"]) == ("reserved", "rw")
        one = f"{V3}/attachments/{att['id']}"
        assert (await api.at("3.26", "GET", one)).status_code == 404
        assert (await api.at("3.27", "GET", one)).json()["attachment"]["volume_id"] == vid
        updated = await api.at("3.27", "PUT", one, json={"attachment": {"connector": CONNECTOR}})
        assert updated.status_code == 200, updated.text
        assert updated.json()["attachment"]["status"] == "attaching"
        complete = {"os-complete": None}
        assert (await api.at("3.43", "POST", f"{one}/action", json=complete)).status_code == 404
        assert (await api.c.row(vid) or {})["status"] == "attaching"
        done = await api.at("3.44", "POST", f"{one}/action", json=complete)
        assert done.status_code == 204, done.text
        shown = await api.volume("3.44", vid)
        assert shown["status"] == "in-use"
        assert [a["attachment_id"] for a in shown["attachments"]] == [att["id"]]
        # mode: an unknown attribute before 3.54
        other = await api.c.available()
        ro = {"attachment": {"volume_uuid": other, "instance_uuid": SERVER, "mode": "ro"}}
        refused = await api.at("3.53", "POST", f"{V3}/attachments", json=ro)
        assert refused.status_code == 400 and "mode" in refused.text
        assert (await api.c.row(other) or {})["status"] == "available"
        given = await api.at("3.54", "POST", f"{V3}/attachments", json=ro)
        assert given.status_code == 200, given.text
        assert given.json()["attachment"]["attach_mode"] == "ro"

    run(tmp_path, scenario)


def test_the_volume_summary_from_3_12_and_its_metadata_from_3_36(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        path = f"{V3}/volumes/summary"
        assert (await api.at("3.11", "GET", path)).status_code == 404
        empty = await api.at("3.12", "GET", path)
        assert empty.json() == {"volume-summary": {"total_count": 0, "total_size": 0}}
        await api.c.available(2, metadata={"tier": "gold", "team": "a"})
        await api.c.available(3, metadata={"tier": "silver"})
        await api.c.available(1, metadata={"tier": "gold"})
        theirs, _ = await api.c.op(served, "createVolume", 202, who=OTHER,
                                   path_params={"project_id": OTHER_PROJECT},
                                   body={"volume": {"size": 5}})  # fmt: skip
        await api.c.wait_status(theirs["volume"]["id"], "available")  # not the caller's
        at12 = (await api.at("3.35", "GET", path)).json()
        assert at12 == {"volume-summary": {"total_count": 3, "total_size": 6}}
        at36 = (await api.at("3.36", "GET", path)).json()["volume-summary"]
        assert at36 == {
            "total_count": 3,
            "total_size": 6,
            "metadata": {"tier": ["gold", "silver"], "team": ["a"]},
        }
        gold = await api.at("3.36", "GET", path, params={"metadata": '{"tier": "gold"}'})
        assert gold.json()["volume-summary"] == {
            "total_count": 2,
            "total_size": 3,
            "metadata": {"tier": ["gold"], "team": ["a"]},
        }
        every = await api.at("3.12", "GET", path, token="admin", params={"all_tenants": "1"})
        assert every.json()["volume-summary"] == {"total_count": 4, "total_size": 11}

    run(tmp_path, scenario)


def test_a_service_asks_for_the_version_an_operation_needs(tmp_path: Path) -> None:
    """nova's calls to cinder (specstack_runtime/http.py): an operation a version brings is
    asked for at that version unless the caller names one; others name none (3.0)."""
    sent: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, request.headers.get("OpenStack-API-Version")))
        return httpx.Response(200, json={})

    info = stack_info()
    clients = ClientSet(
        info,
        StackConfig(data_dir=tmp_path),
        transport=httpx.MockTransport(answer),
        endpoints={"block-storage": "http://cinder.test"},
    )
    api = info.api_of_type("block-storage")
    project = {"project_id": PROJECT}
    one = {**project, "attachment_id": "a1"}

    async def go() -> None:
        await clients.call(api, "createAttachment", project, body={"attachment": {}})
        await clients.call(api, "completeAttachment", one, body={"os-complete": None})
        await clients.call(api, "deleteAttachment", one,
                           headers={"openstack-api-version": "volume 3.54"})  # fmt: skip
        await clients.call(api, "listVolumes", project)
        await clients.aclose()

    asyncio.run(go())
    assert sent == [
        (f"{V3}/attachments", "volume 3.27"),
        (f"{V3}/attachments/a1/action", "volume 3.44"),
        (f"{V3}/attachments/a1", "volume 3.54"),
        (f"{V3}/volumes", None),
    ]


def test_volume_types_filter_by_extra_specs_from_3_52(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        async def names(version: str, specs: dict[str, str], token: str = "admin") -> list[str]:
            resp = await api.at(version, "GET", f"{V3}/types", token=token,
                                params={"extra_specs": json.dumps(specs)})  # fmt: skip
            assert resp.status_code == 200, resp.text
            return [t["name"] for t in resp.json()["volume_types"]]

        gold = {"tier": "gold"}
        assert await names("3.51", gold) == ["__DEFAULT__"]  # ignored
        assert await names("3.52", gold) == []  # the default type has no extra specs
        assert await names("3.52", {}) == ["__DEFAULT__"]
        # a caller who does not see extra specs cannot filter by them
        assert await names("3.52", gold, token="user") == ["__DEFAULT__"]

    run(tmp_path, scenario)


def test_lists_count_every_match_with_count_from_3_45(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vids = [await api.c.available() for _ in range(3)]

        async def listed(version: str, path: str, **params: str) -> dict[str, Any]:
            resp = await api.at(version, "GET", f"{V3}/{path}", params=params)
            assert resp.status_code == 200, resp.text
            body: dict[str, Any] = resp.json()
            return body

        page = await listed("3.45", "volumes", with_count="true", limit="2")
        assert (len(page["volumes"]), page["count"]) == (2, 3)  # every match, not the page
        detail = await listed("3.45", "volumes/detail", with_count="true", status="available")
        assert detail["count"] == 3 and {v["id"] for v in detail["volumes"]} == set(vids)
        assert "count" not in await listed("3.44", "volumes", with_count="true")
        assert "count" not in await listed("3.45", "volumes", with_count="false")
        bad = await api.at("3.45", "GET", f"{V3}/volumes", params={"with_count": "maybe"})
        assert bad.status_code == 400
        made = await api.at("3.45", "POST", f"{V3}/snapshots",
                            json={"snapshot": {"volume_id": vids[0]}})  # fmt: skip
        assert made.status_code == 202, made.text
        snaps = await listed("3.45", "snapshots/detail", with_count="true")
        assert snaps["count"] == 1 and snaps["snapshots"][0]["volume_id"] == vids[0]

    run(tmp_path, scenario)


def test_like_filters_from_3_34(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        web = await api.c.available(name="Web-Data")
        db = await api.c.available(name="db-data")
        await api.c.available(name="logs")
        assert await api.ids("3.34", "volumes", **{"name~": "data"}) == {web, db}
        assert await api.ids("3.34", "volumes/detail", **{"name~": "WEB"}) == {web}
        assert len(await api.ids("3.33", "volumes", **{"name~": "data"})) == 3  # ignored
        assert len(await api.ids("3.34", "volumes", **{"status~": "avail"})) == 3
        made = await api.at("3.34", "POST", f"{V3}/snapshots",
                            json={"snapshot": {"volume_id": db, "name": "nightly-1"}})  # fmt: skip
        assert made.status_code == 202, made.text
        assert await api.ids("3.34", "snapshots", **{"name~": "night"}) == {
            made.json()["snapshot"]["id"]
        }
        assert await api.ids("3.34", "snapshots", **{"name~": "weekly"}) == set()

    run(tmp_path, scenario)


def test_snapshots_sort_by_name_from_3_30(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vid = await api.c.available()
        for name in ("b-snap", "a-snap", "c-snap"):
            made = await api.at("3.30", "POST", f"{V3}/snapshots",
                                json={"snapshot": {"volume_id": vid, "name": name}})  # fmt: skip
            assert made.status_code == 202, made.text

        async def order(version: str, key: str) -> list[str]:
            resp = await api.at(version, "GET", f"{V3}/snapshots",
                                params={"sort_key": key, "sort_dir": "asc"})  # fmt: skip
            assert resp.status_code == 200, resp.text
            return [s["name"] for s in resp.json()["snapshots"]]

        assert await order("3.30", "name") == ["a-snap", "b-snap", "c-snap"]
        assert await order("3.29", "display_name") == ["a-snap", "b-snap", "c-snap"]
        before = await api.at("3.29", "GET", f"{V3}/snapshots", params={"sort": "name:asc"})
        assert before.status_code == 400 and "name" in before.json()["badRequest"]["message"]

    run(tmp_path, scenario)


def test_an_administrator_asks_for_another_projects_limits_from_3_39(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        await api.c.available(2)
        theirs, _ = await api.c.op(served, "createVolume", 202, who=OTHER,
                                   path_params={"project_id": OTHER_PROJECT},
                                   body={"volume": {"size": 5}})  # fmt: skip
        await api.c.wait_status(theirs["volume"]["id"], "available")

        async def used(version: str, token: str) -> tuple[int, int]:
            resp = await api.at(version, "GET", f"{V3}/limits", token=token,
                                params={"project_id": OTHER_PROJECT})  # fmt: skip
            assert resp.status_code == 200, resp.text
            absolute = resp.json()["limits"]["absolute"]
            return absolute["totalVolumesUsed"], absolute["totalGigabytesUsed"]

        assert await used("3.39", "admin") == (1, 5)  # the other project's
        assert await used("3.38", "admin") == (1, 2)  # ignored: the path's project
        assert await used("3.39", "user") == (1, 2)  # ignored for others than administrators

    run(tmp_path, scenario)


def test_revert_to_the_latest_snapshot_from_3_40(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        vid = await api.c.available()
        path, disk = f"{V3}/volumes/{vid}/action", api.c.volume_file(vid)
        snaps = []
        for name in ("first", "second"):  # the data each snapshot keeps a copy of
            with open(disk, "r+b") as f:
                f.write(f"{name} data".encode())
            made = await api.at("3.40", "POST", f"{V3}/snapshots",
                                json={"snapshot": {"volume_id": vid, "name": name}})  # fmt: skip
            assert made.status_code == 202, made.text
            snaps.append(made.json()["snapshot"]["id"])
        first, second = snaps
        with open(disk, "r+b") as f:
            f.write(b"changed lat")
        # the second one is the later
        await api.c.store.update("snapshots", first, {"created_at": "2026-01-01T00:00:00Z"})
        before = await api.at("3.39", "POST", path, json={"revert": {"snapshot_id": second}})
        assert before.status_code == 400 and "no such action: revert" in before.text
        older = await api.at("3.40", "POST", path, json={"revert": {"snapshot_id": first}})
        assert older.status_code == 400
        assert older.json()["badRequest"]["message"].startswith(
            f"Invalid snapshot: Reverting to snapshot {first} is not supported"
        )
        missing = await api.at("3.40", "POST", path, json={"revert": {"snapshot_id": "nope"}})
        assert missing.status_code == 404 and "Snapshot nope could not be found" in missing.text
        assert (await api.at("3.40", "POST", path, json={"revert": {}})).status_code == 400
        done = await api.at("3.40", "POST", path, json={"revert": {"snapshot_id": second}})
        assert done.status_code == 202, done.text
        assert (await api.volume("3.40", vid))["status"] == "available"
        with open(disk, "rb") as f:  # the second snapshot's data back, the size kept
            assert f.read(11) == b"second data"
        assert disk.stat().st_size == 1024**3
        # deleting a snapshot deletes its copy
        copy = disk.with_name(f"snapshot-{second}.img")
        assert copy.exists()
        assert (await api.at("3.40", "DELETE", f"{V3}/snapshots/{second}")).status_code == 202
        await settle(lambda: _missing(copy))
        await api.c.store.update("volumes", vid, {"status": "in-use"})
        busy = await api.at("3.40", "POST", path, json={"revert": {"snapshot_id": second}})
        assert busy.status_code == 400 and "must be available to revert" in busy.text

    run(tmp_path, scenario)
