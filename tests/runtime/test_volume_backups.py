"""Volume backups (spec/resources/block-storage.yaml `backup`, volume_backup.py) over HTTP:
cinder-api's routes in-process, the back end writing the volume's data into a fake object
store as cinder-backup's swift driver does, and restoring it into a new or an existing
volume; cinder's errors and the backups and backup_gigabytes quotas."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from tests.aio import settle
from tests.runtime.netvol_fakes import PROJECT, USER
from tests.runtime.test_volume_microversions import V3, Api, run

ACCOUNT = f"AUTH_{PROJECT}"
DATA = b"backed-up data " * 1000


class FakeSwift:
    """The object store's operations the back end calls, on a dict; `token` recorded."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], bytes] = {}
        self.tokens: set[str | None] = set()

    async def call(
        self, api: str, operation: str, params: dict[str, str], **kw: Any
    ) -> httpx.Response:
        self.tokens.add(kw.get("token"))
        key = (params["account"], params["container"], params.get("object", ""))
        if operation == "createContainer":
            return httpx.Response(201)
        if operation == "putObject":
            data = bytes(kw["body"])
            assert kw["headers"]["ETag"] == hashlib.md5(data).hexdigest()
            self.objects[key] = data
            return httpx.Response(201)
        if operation == "getObject":
            found = self.objects.get(key)
            return httpx.Response(200, content=found) if found is not None else httpx.Response(404)
        if operation == "deleteObject":
            return httpx.Response(204 if self.objects.pop(key, None) is not None else 404)
        raise AssertionError(f"unexpected object store call {operation}")

    def names(self) -> list[str]:
        return sorted(
            name for (acc, cont, name) in self.objects if (acc, cont) == (ACCOUNT, "volumebackups")
        )


def with_swift(
    scenario: Callable[[Api, FakeSwift], Awaitable[None]],
) -> Callable[[Api], Awaitable[None]]:
    async def wrapped(api: Api) -> None:
        swift = FakeSwift()
        for backend in api.c.backends:
            backend.clients = swift  # type: ignore[assignment]
        await scenario(api, swift)

    return wrapped


async def _backup(api: Api, status: str, backup_id: str) -> dict[str, Any]:
    async def reached() -> bool:
        resp = await api.at("3.59", "GET", f"{V3}/backups/{backup_id}")
        return resp.status_code == 200 and resp.json()["backup"]["status"] == status

    await settle(reached)
    body: dict[str, Any] = (await api.at("3.59", "GET", f"{V3}/backups/{backup_id}")).json()[
        "backup"
    ]
    return body


async def _create(api: Api, volume_id: str, **more: Any) -> httpx.Response:
    return await api.at(
        "3.59", "POST", f"{V3}/backups", json={"backup": {"volume_id": volume_id, **more}}
    )


def _read(path: Path, n: int = len(DATA)) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _write(path: Path, data: bytes, offset: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_backup_list_show_restore_new_and_existing_delete(tmp_path: Path) -> None:
    async def scenario(api: Api, swift: FakeSwift) -> None:
        c = api.c
        vid = await c.available(size=1)
        _write(c.volume_file(vid), DATA)
        _write(c.volume_file(vid), b"tail", 900 << 20)  # a second chunk, far in the file
        made = await _create(api, vid, name="b1", description="nightly")
        assert made.status_code == 202, made.text
        summary = made.json()["backup"]
        assert set(summary) == {"id", "name", "links"} and summary["name"] == "b1"
        bid = summary["id"]
        backup = await _backup(api, "available", bid)
        assert (await api.volume("3.59", vid))["status"] == "available"
        assert backup["volume_id"] == vid and backup["size"] == 1
        assert (backup["container"], backup["description"]) == ("volumebackups", "nightly")
        assert backup["is_incremental"] is False and backup["has_dependent_backups"] is False
        assert backup["object_count"] == 3 and backup["user_id"] == USER.user_id
        # two chunks with data (the holes are not stored) and the metadata, as cinder names them
        names = swift.names()
        assert len(names) == 3 and all(n.startswith(f"volume_{vid}/") for n in names)
        assert names[-1].endswith(f"az_nova_backup_{bid}_metadata") and swift.tokens == {"user"}
        assert DATA in b"".join(swift.objects.values())
        listed = (await api.at("3.59", "GET", f"{V3}/backups")).json()["backups"]
        assert listed == [{"id": bid, "name": "b1", "links": summary["links"]}]
        detail = (
            await api.at("3.59", "GET", f"{V3}/backups/detail", params={"volume_id": vid})
        ).json()
        assert [(b["id"], b["status"], b["object_count"]) for b in detail["backups"]] == [
            (bid, "available", 3)
        ]
        # the project's quota set and limits count it
        quota = await api.at(
            "3.59", "GET", f"{V3}/os-quota-sets/{PROJECT}", params={"usage": "true"}
        )
        assert quota.json()["quota_set"]["backups"]["in_use"] == 1
        assert quota.json()["quota_set"]["backup_gigabytes"]["in_use"] == 1
        limits = (await api.at("3.59", "GET", f"{V3}/limits")).json()["limits"]["absolute"]
        assert (limits["totalBackupsUsed"], limits["maxTotalBackups"]) == (1, 10)

        # restore into a new volume of the backup's size
        restored = await api.at("3.59", "POST", f"{V3}/backups/{bid}/restore", json={"restore": {}})
        assert restored.status_code == 202, restored.text
        new = restored.json()["restore"]
        assert new["backup_id"] == bid and new["volume_name"] == f"restore_backup_{bid}"
        await c.wait_status(new["volume_id"], "available")
        copy = c.volume_file(new["volume_id"])
        assert _read(copy) == DATA and copy.stat().st_size == 1 << 30
        with open(copy, "rb") as f:
            f.seek(900 << 20)
            assert f.read(4) == b"tail"
        assert (await _backup(api, "available", bid))["status"] == "available"

        # restore over an existing, larger volume: its own data goes
        other = await c.available(size=2)
        _write(c.volume_file(other), b"x" * (2 * len(DATA)))
        body = {"restore": {"volume_id": other}}
        over = await api.at("3.59", "POST", f"{V3}/backups/{bid}/restore", json=body)
        assert over.status_code == 202 and over.json()["restore"]["volume_id"] == other
        await c.wait_status(other, "available")
        assert _read(c.volume_file(other), 2 * len(DATA)) == DATA + bytes(len(DATA))
        assert c.volume_file(other).stat().st_size == 2 << 30

        deleted = await api.at("3.59", "DELETE", f"{V3}/backups/{bid}")
        assert deleted.status_code == 202

        async def gone() -> bool:
            return (await api.at("3.59", "GET", f"{V3}/backups/{bid}")).status_code == 404

        await settle(gone)
        assert swift.names() == []

    run(tmp_path, with_swift(scenario))


def test_backup_errors_and_quotas(tmp_path: Path) -> None:
    async def scenario(api: Api, swift: FakeSwift) -> None:
        c = api.c
        vid = await c.available(size=2)
        _write(c.volume_file(vid), DATA)
        # an incremental backup needs a full one first
        first = await _create(api, vid, incremental=True)
        assert first.status_code == 400
        assert first.json()["badRequest"]["message"] == (
            "Invalid backup: No backups available to do an incremental backup."
        )
        missing = await _create(api, "no-such-volume")
        assert (
            missing.status_code == 404
            and "Volume no-such-volume could not be found" in missing.text
        )
        await c.store.update("volumes", vid, {"status": "in-use"})
        busy = await _create(api, vid)
        assert busy.status_code == 400
        assert busy.json()["badRequest"]["message"] == (
            "Invalid volume: Backing up an in-use volume must use the force flag."
        )
        forced = await _create(api, vid, force=True)
        assert forced.status_code == 202, forced.text
        full = forced.json()["backup"]["id"]
        await _backup(api, "available", full)
        assert (await api.volume("3.59", vid))["status"] == "in-use"  # as it was
        await c.store.update("volumes", vid, {"status": "available"})
        inc = await _create(api, vid, incremental=True)
        assert inc.status_code == 202, inc.text
        incremental = await _backup(api, "available", inc.json()["backup"]["id"])
        assert incremental["is_incremental"] is True
        assert (await _backup(api, "available", full))["has_dependent_backups"] is True
        parent = await api.at("3.59", "DELETE", f"{V3}/backups/{full}")
        assert parent.status_code == 400 and "Incremental backups exist" in parent.text
        # the name and description change from 3.9
        path = f"{V3}/backups/{full}"
        assert (await api.at("3.8", "PUT", path, json={"backup": {"name": "x"}})).status_code == 404
        renamed = await api.at("3.9", "PUT", path, json={"backup": {"name": "weekly"}})
        assert renamed.status_code == 200 and renamed.json()["backup"]["name"] == "weekly"
        # metadata from 3.43, the owner project for administrators from 3.18, user_id from 3.56
        older = (await api.at("3.42", "GET", path, token="admin")).json()["backup"]
        assert "metadata" not in older and "user_id" not in older
        assert older["os-backup-project-attr:project_id"] == PROJECT
        newer = (await api.at("3.56", "GET", path)).json()["backup"]
        assert newer["metadata"] == {} and newer["user_id"] == USER.user_id
        assert "os-backup-project-attr:project_id" not in newer  # not an administrator
        # unknown backups; a volume too small to restore into
        for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/restore")):
            unknown = await api.at(
                "3.59", method, f"{V3}/backups/nope{suffix}", json={"restore": {}}
            )
            assert unknown.status_code == 404 and "Backup nope could not be found" in unknown.text
        small = await c.available(size=1)
        too_small = await api.at(
            "3.59", "POST", f"{path}/restore", json={"restore": {"volume_id": small}}
        )
        assert (
            too_small.status_code == 400
            and "too small to restore backup of size 2" in too_small.text
        )
        # data that changed in the store is not restored (md5 checked)
        for key in list(swift.objects):
            if not key[2].endswith("_metadata"):
                swift.objects[key] = b"garbage"
        target = await c.available(size=2)
        spoilt = await api.at(
            "3.59", "POST", f"{path}/restore", json={"restore": {"volume_id": target}}
        )
        assert spoilt.status_code == 202
        await c.wait_status(target, "error_restoring")
        # the quotas: backups (a count) and backup_gigabytes (their sizes)
        limit = {"quota_set": {"backups": 2}}
        put = await api.at(
            "3.59", "PUT", f"{V3}/os-quota-sets/{PROJECT}", json=limit, token="admin"
        )
        assert put.status_code == 200, put.text
        over = await _create(api, vid)
        assert over.status_code == 413
        assert (
            over.json()["overLimit"]["message"] == "Maximum number of backups allowed (2) exceeded"
        )
        limit = {"quota_set": {"backups": 10, "backup_gigabytes": 5}}
        await api.at("3.59", "PUT", f"{V3}/os-quota-sets/{PROJECT}", json=limit, token="admin")
        gigs = await _create(api, vid)
        assert gigs.status_code == 413 and "Backup gigabytes quota" in gigs.text
        # once its incremental backup is gone, the full one has no dependent left
        gone = await api.at("3.59", "DELETE", f"{V3}/backups/{incremental['id']}")
        assert gone.status_code == 202

        async def freed() -> bool:
            return (await _backup(api, "available", full))["has_dependent_backups"] is False

        await settle(freed)

    run(tmp_path, with_swift(scenario))


def test_restore_into_a_new_volume_is_counted_against_the_volume_quotas(tmp_path: Path) -> None:
    """cinder's restore without a volume creates one through its volume API, which reserves
    the project's volumes and gigabytes: over either, 413 and nothing made (the backup stays
    available); within them the new volume is counted."""

    async def scenario(api: Api, swift: FakeSwift) -> None:
        c = api.c
        vid = await c.available(size=2)
        made = await _create(api, vid)
        assert made.status_code == 202, made.text
        bid = made.json()["backup"]["id"]
        await _backup(api, "available", bid)
        restore = f"{V3}/backups/{bid}/restore"

        async def volumes() -> list[str]:
            listed = (await api.at("3.59", "GET", f"{V3}/volumes")).json()["volumes"]
            return sorted(v["id"] for v in listed)

        async def limit(**quota: int) -> None:
            body = {"quota_set": quota}
            put = await api.at(
                "3.59", "PUT", f"{V3}/os-quota-sets/{PROJECT}", json=body, token="admin"
            )
            assert put.status_code == 200, put.text

        await limit(gigabytes=3)  # 2 in use: the backup's 2 more do not fit
        over = await api.at("3.59", "POST", restore, json={"restore": {}})
        assert over.status_code == 413, over.text
        assert over.json()["overLimit"]["message"] == (
            "Requested volume or snapshot exceeds allowed gigabytes quota. "
            "Requested 2G, quota is 3G and 2G has been consumed."
        )
        assert await volumes() == [vid]
        assert (await _backup(api, "available", bid))["status"] == "available"
        await limit(gigabytes=10, volumes=1)
        over = await api.at("3.59", "POST", restore, json={"restore": {"name": "again"}})
        assert over.status_code == 413, over.text
        assert over.json()["overLimit"]["message"] == (
            "Maximum number of volumes allowed (1) exceeded for quota 'volumes'."
        )
        assert await volumes() == [vid]
        # within both: the new volume made, and counted
        await limit(volumes=2)
        done = await api.at("3.59", "POST", restore, json={"restore": {}})
        assert done.status_code == 202, done.text
        new = done.json()["restore"]["volume_id"]
        assert await volumes() == sorted([vid, new])
        await c.wait_status(new, "available")
        await _backup(api, "available", bid)
        usage = await api.at(
            "3.59", "GET", f"{V3}/os-quota-sets/{PROJECT}", params={"usage": "true"}
        )
        assert usage.json()["quota_set"]["gigabytes"]["in_use"] == 4
        assert usage.json()["quota_set"]["volumes"]["in_use"] == 2

    run(tmp_path, with_swift(scenario))


def test_backup_of_a_snapshot(tmp_path: Path) -> None:
    """POST /backups with snapshot_id (`openstack volume backup create --snapshot`): the
    snapshot's data is backed up, whatever the volume holds since or its status; the snapshot
    is backing-up meanwhile, then available, the volume untouched; cinder's refusals."""

    async def scenario(api: Api, swift: FakeSwift) -> None:
        c = api.c
        vid, other = await c.available(size=1), await c.available(size=1)
        _write(c.volume_file(vid), DATA)
        taken = await api.at(
            "3.59", "POST", f"{V3}/snapshots", json={"snapshot": {"volume_id": vid}}
        )
        assert taken.status_code == 202, taken.text
        sid = taken.json()["snapshot"]["id"]
        _write(c.volume_file(vid), b"after the snapshot " * 100)
        await c.store.update("volumes", vid, {"status": "in-use"})  # (no force needed)
        await c.store.update("snapshots", sid, {"created_at": "2026-01-02T03:04:05Z"})
        made = await _create(api, vid, snapshot_id=sid, name="of-snap")
        assert made.status_code == 202, made.text
        bid = made.json()["backup"]["id"]
        backup = await _backup(api, "available", bid)
        snapshot = (await api.at("3.59", "GET", f"{V3}/snapshots/{sid}")).json()["snapshot"]
        assert snapshot["status"] == "available"
        assert (await api.volume("3.59", vid))["status"] == "in-use"
        assert (backup["snapshot_id"], backup["volume_id"], backup["size"]) == (sid, vid, 1)
        assert snapshot["created_at"] == "2026-01-02T03:04:05.000000"
        assert backup["data_timestamp"] == snapshot["created_at"] != backup["created_at"]
        # restored: the snapshot's data, not the volume's since
        restored = await api.at("3.59", "POST", f"{V3}/backups/{bid}/restore", json={"restore": {}})
        assert restored.status_code == 202, restored.text
        new = restored.json()["restore"]["volume_id"]
        await c.wait_status(new, "available")
        assert _read(c.volume_file(new)) == DATA
        # a snapshot of another volume, one unknown, one not available
        wrong = await _create(api, other, snapshot_id=sid)
        assert wrong.status_code == 400
        assert wrong.json()["badRequest"]["message"] == (
            f"Invalid volume: Volume {other} does not match with snapshot.volume_id {vid}."
        )
        unknown = await _create(api, vid, snapshot_id="nope")
        assert unknown.status_code == 404
        assert unknown.json()["itemNotFound"]["message"] == "Snapshot nope could not be found."
        await c.store.update("snapshots", sid, {"status": "backing-up"})
        busy = await _create(api, vid, snapshot_id=sid)
        assert busy.status_code == 400
        assert busy.json()["badRequest"]["message"] == (
            "Invalid snapshot: Snapshot to be backed up must be available, "
            'but the current status is "backing-up".'
        )
        gone = await api.at("3.59", "DELETE", f"{V3}/snapshots/{sid}")
        assert gone.status_code == 400 and "must be available or error" in gone.text
        assert len((await api.at("3.59", "GET", f"{V3}/backups")).json()["backups"]) == 1

    run(tmp_path, with_swift(scenario))


def test_an_incremental_backup_stores_only_what_changed(tmp_path: Path) -> None:
    """cinder's incremental backup: only the chunks that differ from its parent's are
    written; it restores the volume as it was when it was made, its parent as it was then;
    deleting it removes its own objects and leaves its parent's."""

    async def scenario(api: Api, swift: FakeSwift) -> None:
        c = api.c
        vid = await c.available(size=1)
        _write(c.volume_file(vid), DATA)
        _write(c.volume_file(vid), b"tail", 900 << 20)  # a second chunk, far in the file
        full = (await _create(api, vid)).json()["backup"]["id"]
        await _backup(api, "available", full)
        of_full = swift.names()
        assert len(of_full) == 3  # two chunks and the metadata
        _write(c.volume_file(vid), b"CHANGED")  # the first chunk only
        made = await _create(api, vid, incremental=True)
        assert made.status_code == 202, made.text
        inc = await _backup(api, "available", made.json()["backup"]["id"])
        assert inc["is_incremental"] is True and inc["object_count"] == 2
        added = sorted(set(swift.names()) - set(of_full))
        assert len(added) == 2 and all(f"_backup_{inc['id']}" in n for n in added)
        chunks = [swift.objects[(ACCOUNT, "volumebackups", n)] for n in added]
        assert [x[: len(DATA)] for x in chunks if not x.startswith(b"{")] == [b"CHANGED" + DATA[7:]]

        async def restored(backup_id: str) -> Path:
            target = await c.available(size=1)
            body = {"restore": {"volume_id": target}}
            sent = await api.at("3.59", "POST", f"{V3}/backups/{backup_id}/restore", json=body)
            assert sent.status_code == 202, sent.text
            await c.wait_status(target, "available")
            return c.volume_file(target)

        now = await restored(inc["id"])
        assert _read(now) == b"CHANGED" + DATA[7:]
        with open(now, "rb") as f:
            f.seek(900 << 20)
            assert f.read(4) == b"tail"  # the unchanged chunk, read from the parent's object
        assert _read(await restored(full)) == DATA  # the parent as it was
        gone = await api.at("3.59", "DELETE", f"{V3}/backups/{inc['id']}")
        assert gone.status_code == 202

        async def deleted() -> bool:
            return swift.names() == of_full

        await settle(deleted)
        assert _read(await restored(full)) == DATA

    run(tmp_path, with_swift(scenario))
