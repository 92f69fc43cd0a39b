"""Compute microversions 2.1 to 2.19 over HTTP, against a running (embedded) stack: what each
version brings to the operations this stack serves, asked for at both sides of it (2.20 and
later: test_compute_microversions_2x.py, on the same stack)."""

from __future__ import annotations

import base64
import hashlib
import time

import httpx
import pytest

from specstack_conformance.harness import FlowRecord
from tests.runtime.compute_mv_kit import at as _at
from tests.runtime.test_hardening import Running


@pytest.fixture(scope="module")
def stack(compute_mv_stack: Running) -> Running:
    return compute_mv_stack


@pytest.fixture(scope="module")
def server(compute_mv_server: FlowRecord) -> FlowRecord:
    return compute_mv_server


MAX = "2.79"


def test_the_range_is_2_1_to_the_maximum(stack: Running) -> None:
    doc = stack.http("compute", "GET", "/v2.1", auth=False).json()["version"]
    assert (doc["min_version"], doc["version"]) == ("2.1", MAX)
    latest = _at(stack, "latest", "GET", "/v2.1/flavors")
    assert latest.headers["OpenStack-API-Version"] == f"compute {MAX}"
    beyond = _at(stack, f"2.{int(MAX[2:]) + 1}", "GET", "/v2.1/flavors")
    assert beyond.status_code == 406
    assert f"Minimum is 2.1 and maximum is {MAX}" in beyond.text


def test_keypair_type_and_statuses_come_with_2_2(stack: Running) -> None:
    # 2.1: no type (given, it is an unknown attribute), 200 and 202
    refused = _at(stack, "2.1", "POST", "/v2.1/os-keypairs",
                  json={"keypair": {"name": "kp21", "type": "ssh"}})  # fmt: skip
    assert refused.status_code == 400 and "type" in refused.text
    made = _at(stack, "2.1", "POST", "/v2.1/os-keypairs", json={"keypair": {"name": "kp21"}})
    assert made.status_code == 200 and "type" not in made.json()["keypair"]
    shown = _at(stack, "2.1", "GET", "/v2.1/os-keypairs/kp21").json()["keypair"]
    assert "type" not in shown and shown["name"] == "kp21"
    # 2.2: type shown everywhere (ssh by default), 201 and 204
    made22 = _at(stack, "2.2", "POST", "/v2.1/os-keypairs", json={"keypair": {"name": "kp22"}})
    assert made22.status_code == 201 and made22.json()["keypair"]["type"] == "ssh"
    listed = _at(stack, "2.2", "GET", "/v2.1/os-keypairs").json()["keypairs"]
    assert {k["keypair"]["name"]: k["keypair"]["type"] for k in listed} == {
        "kp21": "ssh",
        "kp22": "ssh",
    }
    listed21 = _at(stack, "2.1", "GET", "/v2.1/os-keypairs").json()["keypairs"]
    assert all("type" not in k["keypair"] for k in listed21)
    assert _at(stack, "2.1", "DELETE", "/v2.1/os-keypairs/kp21").status_code == 202
    assert _at(stack, "2.2", "DELETE", "/v2.1/os-keypairs/kp22").status_code == 204
    bad = _at(stack, "2.2", "POST", "/v2.1/os-keypairs",
              json={"keypair": {"name": "kpx", "type": "rsa"}})  # fmt: skip
    assert bad.status_code == 400


def test_x509_key_pairs_are_generated_and_imported_from_2_2(stack: Running) -> None:
    made = _at(stack, "2.2", "POST", "/v2.1/os-keypairs",
               json={"keypair": {"name": "cert1", "type": "x509"}})  # fmt: skip
    assert made.status_code == 201, made.text
    pair = made.json()["keypair"]
    assert pair["type"] == "x509" and "BEGIN RSA PRIVATE KEY" in pair["private_key"]
    cert = pair["public_key"]
    assert cert.startswith("-----BEGIN CERTIFICATE-----")
    der = base64.b64decode("".join(cert.strip().splitlines()[1:-1]))
    sha1 = hashlib.sha1(der).hexdigest()
    assert pair["fingerprint"] == ":".join(sha1[i : i + 2] for i in range(0, 40, 2))
    # the same certificate imported under another name: the same fingerprint
    imported = _at(stack, "2.2", "POST", "/v2.1/os-keypairs",
                   json={"keypair": {"name": "cert2", "type": "x509", "public_key": cert}})  # fmt: skip
    assert imported.status_code == 201, imported.text
    assert imported.json()["keypair"]["fingerprint"] == pair["fingerprint"]
    assert "private_key" not in imported.json()["keypair"]
    garbage = _at(stack, "2.2", "POST", "/v2.1/os-keypairs",
                  json={"keypair": {"name": "cert3", "type": "x509", "public_key": "nope"}})  # fmt: skip
    assert garbage.status_code == 400
    assert "failed to generate X509 fingerprint" in garbage.json()["badRequest"]["message"]
    for name in ("cert1", "cert2"):
        assert _at(stack, "2.2", "DELETE", f"/v2.1/os-keypairs/{name}").status_code == 204


EXTENDED_23 = {
    "OS-EXT-SRV-ATTR:reservation_id",
    "OS-EXT-SRV-ATTR:launch_index",
    "OS-EXT-SRV-ATTR:hostname",
    "OS-EXT-SRV-ATTR:kernel_id",
    "OS-EXT-SRV-ATTR:ramdisk_id",
    "OS-EXT-SRV-ATTR:root_device_name",
    "OS-EXT-SRV-ATTR:user_data",
}


def test_extended_attributes_and_volume_flags_come_with_2_3(
    stack: Running, server: FlowRecord
) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    at22 = _at(stack, "2.2", "GET", path).json()["server"]
    at23 = _at(stack, "2.3", "GET", path).json()["server"]
    assert not EXTENDED_23 & at22.keys()
    assert at23.keys() >= EXTENDED_23
    assert at23["OS-EXT-SRV-ATTR:launch_index"] == 0
    assert at23["OS-EXT-SRV-ATTR:reservation_id"].startswith("r-")
    assert at23["OS-EXT-SRV-ATTR:hostname"] == at23["name"].lower()
    assert at23["OS-EXT-SRV-ATTR:root_device_name"] == "/dev/vda"
    assert (at23["OS-EXT-SRV-ATTR:kernel_id"], at23["OS-EXT-SRV-ATTR:ramdisk_id"]) == ("", "")
    # the boot volume: its id only before 2.3, and whether it goes with the server from it
    volumes22 = at22["os-extended-volumes:volumes_attached"]
    volumes23 = at23["os-extended-volumes:volumes_attached"]
    assert volumes22 and all(v.keys() == {"id"} for v in volumes22)
    assert [v["id"] for v in volumes23] == [v["id"] for v in volumes22]
    assert all(isinstance(v["delete_on_termination"], bool) for v in volumes23)
    # the member does not see them at any version
    member, _ = stack.target.run(stack.target.token(stack.target.member))
    mine = _at(stack, "2.9", "GET", path, token=member).json()["server"]
    assert not EXTENDED_23 & mine.keys() and "locked" in mine
    # the list's details too
    detail = _at(stack, "2.3", "GET", "/v2.1/servers/detail", params={"all_tenants": "1"})
    assert all(s.keys() >= EXTENDED_23 for s in detail.json()["servers"])


def test_locked_comes_with_2_9(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    assert "locked" not in _at(stack, "2.8", "GET", path).json()["server"]
    assert _at(stack, "2.9", "GET", path).json()["server"]["locked"] is False
    # a reason comes with 2.73: before it nova neither checks nor keeps one
    lock = _at(stack, "2.9", "POST", path + "/action", json={"lock": {"locked_reason": 5}})
    assert lock.status_code == 202, lock.text
    try:
        assert _at(stack, "2.9", "GET", path).json()["server"]["locked"] is True
        update = {"server": {"name": server.server["name"]}}
        at8 = _at(stack, "2.8", "PUT", path, json=update).json()["server"]
        at9 = _at(stack, "2.9", "PUT", path, json=update).json()["server"]
        assert "locked" not in at8 and at9["locked"] is True
        detail = _at(stack, "2.9", "GET", "/v2.1/servers/detail", params={"all_tenants": "1"})
        locked = {s["id"]: s["locked"] for s in detail.json()["servers"]}
        assert locked[server.server_id] is True
        summary = _at(stack, "2.9", "GET", "/v2.1/servers", params={"all_tenants": "1"})
        assert all("locked" not in s for s in summary.json()["servers"])
    finally:
        assert _at(stack, "2.9", "POST", path + "/action", json={"unlock": None}).status_code == 202


def test_host_status_comes_with_2_16(stack: Running, server: FlowRecord) -> None:
    """The server's host's nova-compute, as the services list shows it: up, so UP."""
    path = f"/v2.1/servers/{server.server_id}"
    assert "host_status" not in _at(stack, "2.15", "GET", path).json()["server"]
    shown = _at(stack, "2.16", "GET", path).json()["server"]
    services = _at(stack, "2.16", "GET", "/v2.1/os-services").json()["services"]
    host = shown["OS-EXT-SRV-ATTR:host"]
    assert [s["state"] for s in services if s["host"] == host] == ["up"]
    assert shown["host_status"] == "UP"
    detail = _at(stack, "2.16", "GET", "/v2.1/servers/detail", params={"all_tenants": "1"})
    statuses = {s["id"]: s["host_status"] for s in detail.json()["servers"]}
    assert statuses[server.server_id] == "UP"
    # not in the update's answer, nor for the member
    update = {"server": {"name": server.server["name"]}}
    assert "host_status" not in _at(stack, "2.16", "PUT", path, json=update).json()["server"]
    member, _ = stack.target.run(stack.target.token(stack.target.member))
    assert "host_status" not in _at(stack, "2.16", "GET", path, token=member).json()["server"]


def test_trigger_crash_dump_comes_with_2_17(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    old = _at(stack, "2.16", "POST", path + "/action", json={"trigger_crash_dump": None})
    assert old.status_code == 400
    assert old.json()["badRequest"]["message"] == "There is no such action: trigger_crash_dump"
    lock = _at(stack, "2.17", "POST", path + "/action", json={"lock": None})
    assert lock.status_code == 202
    member, _ = stack.target.run(stack.target.token(stack.target.member))
    locked = _at(stack, "2.17", "POST", path + "/action", token=member,
                 json={"trigger_crash_dump": None})  # fmt: skip
    assert locked.status_code == 409 and "is locked" in locked.text
    assert _at(stack, "2.17", "POST", path + "/action", json={"unlock": None}).status_code == 202
    done = _at(stack, "2.17", "POST", path + "/action", token=member,
               json={"trigger_crash_dump": None})  # fmt: skip
    assert done.status_code == 202, done.text
    # recorded as nova records it, and the guest got its NMI (the compute host's event)
    request_id = done.headers["x-openstack-request-id"]
    shown = _at(stack, "2.17", "GET", f"{path}/os-instance-actions/{request_id}")
    for _ in range(50):
        action = shown.json()["instanceAction"]
        if action["events"] and action["events"][0]["finish_time"]:
            break
        time.sleep(0.1)
        shown = _at(stack, "2.17", "GET", f"{path}/os-instance-actions/{request_id}")
    assert action["action"] == "trigger_crash_dump"
    assert [(e["event"], e["result"]) for e in action["events"]] == [
        ("compute_trigger_crash_dump", "Success")
    ]
    console = _at(stack, "2.17", "POST", path + "/action", json={"os-getConsoleOutput": {}})
    assert "NMI received" in console.json()["output"]


def test_a_description_comes_with_2_19(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    assert "description" not in _at(stack, "2.18", "GET", path).json()["server"]
    assert _at(stack, "2.19", "GET", path).json()["server"]["description"] is None
    # update: an unknown attribute before 2.19, kept and shown from it
    old = _at(stack, "2.18", "PUT", path, json={"server": {"description": "web"}})
    assert old.status_code == 400 and "description" in old.text
    new = _at(stack, "2.19", "PUT", path, json={"server": {"description": "web"}})
    assert new.status_code == 200 and new.json()["server"]["description"] == "web"
    assert _at(stack, "2.19", "GET", path).json()["server"]["description"] == "web"
    assert (
        "description" not in _at(stack, "2.18", "PUT", path, json={"server": {}}).json()["server"]
    )
    bad = _at(stack, "2.19", "PUT", path, json={"server": {"description": "x" * 256}})
    assert bad.status_code == 400
    # create: refused before 2.19, checked and kept from it
    ids = stack.target.ids
    assert ids is not None
    body = {"name": "described", "imageRef": ids.image_id, "flavorRef": ids.flavor_id,
            "networks": [{"uuid": ids.network_id}], "description": "db"}  # fmt: skip
    refused = _at(stack, "2.18", "POST", "/v2.1/servers", json={"server": body})
    assert refused.status_code == 400
    assert refused.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute server. "
        "Additional properties are not allowed ('description' was unexpected)"
    )
    control = {**body, "description": "a\x01b"}
    assert _at(stack, "2.19", "POST", "/v2.1/servers", json={"server": control}).status_code == 400
    made = _at(stack, "2.19", "POST", "/v2.1/servers", json={"server": body})
    assert made.status_code == 202, made.text
    sid = made.json()["server"]["id"]
    try:
        assert (
            _at(stack, "2.19", "GET", f"/v2.1/servers/{sid}").json()["server"]["description"]
            == "db"
        )
    finally:
        assert _at(stack, "2.19", "DELETE", f"/v2.1/servers/{sid}").status_code == 204


def test_the_ip6_filter_is_every_callers_from_2_5(stack: Running, server: FlowRecord) -> None:
    """Before 2.5 nova drops ip6 for all but administrators (so a member's list is not
    filtered); from 2.5 it filters for everyone."""
    member, _ = stack.target.run(stack.target.token(stack.target.member))
    nowhere = {"ip6": "^fd00:dead:beef::1$"}

    def ids(version: str, token: str | None) -> list[str]:
        resp = _at(stack, version, "GET", "/v2.1/servers", token=token, params=nowhere)
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()["servers"]]

    assert server.server_id in ids("2.4", member)
    assert ids("2.5", member) == []
    assert ids("2.1", None) == []  # the administrator's filter applies at every version


def test_forced_down_comes_with_2_11(stack: Running) -> None:
    at10 = _at(stack, "2.10", "GET", "/v2.1/os-services").json()["services"]
    at11 = _at(stack, "2.11", "GET", "/v2.1/os-services").json()["services"]
    assert at10 and all("forced_down" not in s for s in at10)
    assert [s["forced_down"] for s in at11] == [False] * len(at10)


def test_server_group_owners_come_with_2_13_and_soft_policies_with_2_15(
    stack: Running,
) -> None:
    def make(version: str, policy: str) -> httpx.Response:
        body = {"server_group": {"name": f"g-{policy}", "policies": [policy]}}
        return _at(stack, version, "POST", "/v2.1/os-server-groups", json=body)

    soft = make("2.14", "soft-affinity")
    assert soft.status_code == 400
    assert soft.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute 0. Value: soft-affinity. "
        "'soft-affinity' is not one of ['anti-affinity', 'affinity']"
    )
    made12 = make("2.12", "affinity")
    assert made12.status_code == 200, made12.text
    group = made12.json()["server_group"]
    assert group.keys() == {"id", "name", "policies", "members", "metadata"}
    path = f"/v2.1/os-server-groups/{group['id']}"
    shown = _at(stack, "2.13", "GET", path).json()["server_group"]
    assert shown.keys() == group.keys() | {"project_id", "user_id"}
    assert shown["project_id"] == stack.project_id
    for policy in ("soft-affinity", "soft-anti-affinity"):
        made = make("2.15", policy)
        assert made.status_code == 200, made.text
        assert made.json()["server_group"]["policies"] == [policy]
        gone = _at(
            stack, "2.15", "DELETE", f"/v2.1/os-server-groups/{made.json()['server_group']['id']}"
        )
        assert gone.status_code == 204
    assert _at(stack, "2.15", "DELETE", path).status_code == 204


def test_another_users_key_pairs_from_2_10(stack: Running) -> None:
    member, _ = stack.target.run(stack.target.token(stack.target.member))
    mine = _at(stack, "2.10", "POST", "/v2.1/os-keypairs", token=member,
               json={"keypair": {"name": "demo-kp"}})  # fmt: skip
    assert mine.status_code == 201, mine.text
    demo = mine.json()["keypair"]["user_id"]
    try:
        # 2.9: user_id is not a parameter (ignored) nor an attribute (400)
        at9 = _at(stack, "2.9", "GET", "/v2.1/os-keypairs", params={"user_id": demo})
        assert "demo-kp" not in [k["keypair"]["name"] for k in at9.json()["keypairs"]]
        assert _at(stack, "2.9", "GET", "/v2.1/os-keypairs/demo-kp",
                   params={"user_id": demo}).status_code == 404  # fmt: skip
        refused = _at(stack, "2.9", "POST", "/v2.1/os-keypairs",
                      json={"keypair": {"name": "for-demo", "user_id": demo}})  # fmt: skip
        assert refused.status_code == 400 and "user_id" in refused.text
        # 2.10: the administrator lists, shows, creates and deletes the member's
        at10 = _at(stack, "2.10", "GET", "/v2.1/os-keypairs", params={"user_id": demo})
        assert [k["keypair"]["name"] for k in at10.json()["keypairs"]] == ["demo-kp"]
        shown = _at(stack, "2.10", "GET", "/v2.1/os-keypairs/demo-kp", params={"user_id": demo})
        assert shown.status_code == 200 and shown.json()["keypair"]["user_id"] == demo
        made = _at(stack, "2.10", "POST", "/v2.1/os-keypairs",
                   json={"keypair": {"name": "for-demo", "user_id": demo}})  # fmt: skip
        assert made.status_code == 201 and made.json()["keypair"]["user_id"] == demo
        listed = _at(stack, "2.10", "GET", "/v2.1/os-keypairs", token=member).json()["keypairs"]
        assert sorted(k["keypair"]["name"] for k in listed) == ["demo-kp", "for-demo"]
        assert _at(stack, "2.10", "DELETE", "/v2.1/os-keypairs/for-demo",
                   params={"user_id": demo}).status_code == 204  # fmt: skip
        # the member may name itself, not another user
        assert _at(stack, "2.10", "GET", "/v2.1/os-keypairs/demo-kp", token=member,
                   params={"user_id": demo}).status_code == 200  # fmt: skip
        other = _at(stack, "2.10", "GET", "/v2.1/os-keypairs", token=member,
                    params={"user_id": "someone-else"})  # fmt: skip
        assert other.status_code == 403
        assert other.json()["forbidden"]["message"] == (
            "Policy doesn't allow os_compute_api:os-keypairs:index to be performed."
        )
        stolen = _at(stack, "2.10", "POST", "/v2.1/os-keypairs", token=member,
                     json={"keypair": {"name": "x", "user_id": "someone-else"}})  # fmt: skip
        assert stolen.status_code == 403
        too_long = {"keypair": {"name": "x", "type": "x509", "user_id": "u" * 65}}
        assert _at(stack, "2.10", "POST", "/v2.1/os-keypairs", json=too_long).status_code == 400
        missing = _at(stack, "2.10", "GET", "/v2.1/os-keypairs/nope", params={"user_id": demo})
        assert missing.status_code == 404
        assert (
            missing.json()["itemNotFound"]["message"] == f"Keypair nope not found for user {demo}"
        )
    finally:
        _at(stack, "2.10", "DELETE", "/v2.1/os-keypairs/demo-kp", token=member)
