"""Compute microversions 2.53 to 2.79 over HTTP, against a running (embedded) stack: what each
version brings to the operations this stack serves, asked for at the version before it and at
it (tests/runtime/test_compute_microversions.py has 2.1 to 2.19)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from specstack_conformance.harness import FlowRecord
from tests.runtime.compute_mv_kit import at as _at
from tests.runtime.test_hardening import Running, _start

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def stack() -> Iterator[Running]:
    yield from _start("sqlite")


@pytest.fixture(scope="module")
def server(stack: Running) -> FlowRecord:
    return stack.target.boot(volume=True)


def _member(stack: Running) -> str:
    token, _ = stack.target.run(stack.target.token(stack.target.member))
    return str(token)


def test_services_and_hypervisors_are_named_by_uuid_from_2_53(stack: Running) -> None:
    old = _at(stack, "2.52", "GET", "/v2.1/os-services").json()["services"]
    new = _at(stack, "2.53", "GET", "/v2.1/os-services").json()["services"]
    assert old and all(isinstance(s["id"], int) for s in old)
    assert [s["host"] for s in new] == [s["host"] for s in old]
    assert all(UUID.match(s["id"]) for s in new)
    assert len({s["id"] for s in new}) == len(new)
    # the same ids at every request
    again = _at(stack, "2.53", "GET", "/v2.1/os-services").json()["services"]
    assert [s["id"] for s in again] == [s["id"] for s in new]
    # a hypervisor's id is its own UUID; its service's is the one the services list gives
    hyps = _at(stack, "2.53", "GET", "/v2.1/os-hypervisors/detail").json()["hypervisors"]
    by_host = {s["host"]: s["id"] for s in new}
    assert hyps and all(UUID.match(h["id"]) for h in hyps)
    assert all(h["service"]["id"] == by_host[h["service"]["host"]] for h in hyps)
    assert not {h["id"] for h in hyps} & set(by_host.values())
    summary = _at(stack, "2.53", "GET", "/v2.1/os-hypervisors").json()["hypervisors"]
    assert sorted(h["id"] for h in summary) == sorted(h["id"] for h in hyps)
    old_hyps = _at(stack, "2.52", "GET", "/v2.1/os-hypervisors/detail").json()["hypervisors"]
    assert all(isinstance(h["id"], int) for h in old_hyps)
    assert all(isinstance(h["service"]["id"], int) for h in old_hyps)


def _flavor(stack: Running, version: str, name: str, **more: Any) -> httpx.Response:
    body = {"flavor": {"name": name, "ram": 64, "vcpus": 1, "disk": 1, **more}}
    return _at(stack, version, "POST", "/v2.1/flavors", json=body)


def test_a_flavor_description_comes_with_2_55(stack: Running) -> None:
    refused = _flavor(stack, "2.54", "described-54", description="small")
    assert refused.status_code == 400 and "description" in refused.text
    made = _flavor(stack, "2.55", "described-55", description="small one")
    assert made.status_code == 200, made.text
    flavor = made.json()["flavor"]
    assert flavor["description"] == "small one"
    path = f"/v2.1/flavors/{flavor['id']}"
    try:
        assert _at(stack, "2.55", "GET", path).json()["flavor"]["description"] == "small one"
        assert "description" not in _at(stack, "2.54", "GET", path).json()["flavor"]
        listed = _at(stack, "2.55", "GET", "/v2.1/flavors").json()["flavors"]
        assert {f["id"]: f["description"] for f in listed}[flavor["id"]] == "small one"
        assert all(
            "description" not in f
            for f in _at(stack, "2.54", "GET", "/v2.1/flavors").json()["flavors"]
        )
        plain = _flavor(stack, "2.55", "plain-55")
        assert plain.status_code == 200 and plain.json()["flavor"]["description"] is None
        _at(stack, "2.55", "DELETE", f"/v2.1/flavors/{plain.json()['flavor']['id']}")
        control = _flavor(stack, "2.55", "bad-55", description="a\x01b")
        assert control.status_code == 400
    finally:
        assert _at(stack, "2.55", "DELETE", path).status_code == 202


def test_flavor_extra_specs_come_with_2_61_and_swap_0_with_2_75(stack: Running) -> None:
    made = _flavor(stack, "2.61", "specs-61")
    assert made.status_code == 200, made.text
    flavor = made.json()["flavor"]
    path = f"/v2.1/flavors/{flavor['id']}"
    try:
        assert flavor["extra_specs"] == {}
        specs = _at(stack, "2.61", "GET", path + "/os-extra_specs").json()["extra_specs"]
        assert _at(stack, "2.61", "GET", path).json()["flavor"]["extra_specs"] == specs
        assert "extra_specs" not in _at(stack, "2.60", "GET", path).json()["flavor"]
        detail = _at(stack, "2.61", "GET", "/v2.1/flavors/detail").json()["flavors"]
        assert all(f["extra_specs"] == {} for f in detail)
        # the list's summary has none
        assert all(
            "extra_specs" not in f
            for f in _at(stack, "2.61", "GET", "/v2.1/flavors").json()["flavors"]
        )
        # no swap: "" before 2.75, 0 from it
        assert _at(stack, "2.74", "GET", path).json()["flavor"]["swap"] == ""
        assert _at(stack, "2.75", "GET", path).json()["flavor"]["swap"] == 0
        swapped = _flavor(stack, "2.74", "swap-74", swap=512)
        assert swapped.status_code == 200 and swapped.json()["flavor"]["swap"] == 512
        _at(stack, "2.74", "DELETE", f"/v2.1/flavors/{swapped.json()['flavor']['id']}")
    finally:
        assert _at(stack, "2.61", "DELETE", path).status_code == 202


def test_action_events_say_where_they_ran_from_2_62(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    shown = _at(stack, "2.62", "GET", path).json()["server"]
    actions = _at(stack, "2.62", "GET", path + "/os-instance-actions").json()["instanceActions"]
    create = next(a for a in actions if a["action"] == "create")
    one = f"{path}/os-instance-actions/{create['request_id']}"
    old = _at(stack, "2.61", "GET", one).json()["instanceAction"]["events"]
    assert old and all("host" not in e and "hostId" not in e for e in old)
    events = _at(stack, "2.62", "GET", one).json()["instanceAction"]["events"]
    build = next(e for e in events if e["event"] == "compute__do_build_and_run_instance")
    host = shown["OS-EXT-SRV-ATTR:host"]
    assert build["host"] == host
    # the host hashed with the project: the server's own hostId
    assert build["hostId"] == shown["hostId"]
    assert build["hostId"] == hashlib.sha224((shown["tenant_id"] + host).encode()).hexdigest()
    # the member sees where (hostId), not the host's name
    mine = _at(stack, "2.62", "GET", one, token=_member(stack)).json()["instanceAction"]["events"]
    assert mine and all("host" not in e and e["hostId"] for e in mine)


def test_a_servers_groups_come_with_2_71(stack: Running) -> None:
    body = {"server_group": {"name": "g71", "policies": ["anti-affinity"]}}
    group = _at(stack, "2.63", "POST", "/v2.1/os-server-groups", json=body).json()["server_group"]
    ids = stack.target.ids
    assert ids is not None
    made = _at(
        stack,
        "2.71",
        "POST",
        "/v2.1/servers",
        json={
            "server": {"name": "grouped", "imageRef": ids.image_id, "flavorRef": ids.flavor_id,
                       "networks": [{"uuid": ids.network_id}]},
            "os:scheduler_hints": {"group": group["id"]},
        },
    )  # fmt: skip
    assert made.status_code == 202, made.text
    sid = made.json()["server"]["id"]
    path = f"/v2.1/servers/{sid}"
    try:
        assert "server_groups" not in _at(stack, "2.70", "GET", path).json()["server"]
        assert _at(stack, "2.71", "GET", path).json()["server"]["server_groups"] == [group["id"]]
        update = {"server": {"name": "grouped-2"}}
        assert _at(stack, "2.71", "PUT", path, json=update).json()["server"]["server_groups"] == [
            group["id"]
        ]
        assert "server_groups" not in _at(stack, "2.70", "PUT", path, json=update).json()["server"]
        # not in lists
        detail = _at(stack, "2.71", "GET", "/v2.1/servers/detail").json()["servers"]
        assert [s["id"] for s in detail if s["id"] == sid] == [sid]
        assert all("server_groups" not in s for s in detail)
    finally:
        assert _at(stack, "2.71", "DELETE", path).status_code == 204
        _at(stack, "2.71", "DELETE", f"/v2.1/os-server-groups/{group['id']}")


def test_a_servers_lock_reason_comes_with_2_73(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    assert _at(stack, "2.73", "GET", path).json()["server"]["locked_reason"] is None
    bad = _at(stack, "2.73", "POST", path + "/action", json={"lock": {"locked_reason": 5}})
    assert bad.status_code == 400
    lock = {"lock": {"locked_reason": "maintenance"}}
    assert _at(stack, "2.73", "POST", path + "/action", json=lock).status_code == 202
    try:
        shown = _at(stack, "2.73", "GET", path).json()["server"]
        assert (shown["locked"], shown["locked_reason"]) == (True, "maintenance")
        assert "locked_reason" not in _at(stack, "2.72", "GET", path).json()["server"]
        detail = _at(stack, "2.73", "GET", "/v2.1/servers/detail", params={"all_tenants": "1"})
        reasons = {s["id"]: s["locked_reason"] for s in detail.json()["servers"]}
        assert reasons[server.server_id] == "maintenance"
        update = {"server": {"name": server.server["name"]}}
        assert _at(stack, "2.73", "PUT", path, json=update).json()["server"]["locked_reason"] == (
            "maintenance"
        )
    finally:
        assert (
            _at(stack, "2.73", "POST", path + "/action", json={"unlock": None}).status_code == 202
        )
    assert _at(stack, "2.73", "GET", path).json()["server"]["locked_reason"] is None


def test_the_range_reaches_2_79(stack: Running) -> None:
    doc = stack.http("compute", "GET", "/v2.1", auth=False).json()["version"]
    assert (doc["min_version"], doc["version"]) == ("2.1", "2.79")
    assert _at(stack, "latest", "GET", "/v2.1/flavors").headers["OpenStack-API-Version"] == (
        "compute 2.79"
    )
    assert _at(stack, "2.80", "GET", "/v2.1/flavors").status_code == 406


def test_a_server_group_has_one_policy_and_its_rules_from_2_64(stack: Running) -> None:
    groups = "/v2.1/os-server-groups"

    def make(version: str, **group: Any) -> httpx.Response:
        return _at(stack, version, "POST", groups, json={"server_group": {"name": "g64", **group}})

    # 2.63: policies (a list), and metadata; policy and rules are unknown attributes
    old = make("2.63", policies=["anti-affinity"])
    assert old.status_code == 200, old.text
    shown = old.json()["server_group"]
    assert (shown["policies"], shown["metadata"]) == (["anti-affinity"], {})
    assert not {"policy", "rules"} & shown.keys()
    assert make("2.63", policy="affinity").status_code == 400
    assert make("2.63").json()["badRequest"]["message"] == (
        "Invalid input for field/attribute server_group. 'policies' is a required property."
    )
    # 2.64: the policy's name and its rules instead; the same group seen either way
    path = f"{groups}/{shown['id']}"
    seen = _at(stack, "2.64", "GET", path).json()["server_group"]
    assert (seen["policy"], seen["rules"]) == ("anti-affinity", {})
    assert not {"policies", "metadata"} & seen.keys()
    new = make("2.64", policy="anti-affinity", rules={"max_server_per_host": 2})
    assert new.status_code == 200, new.text
    made = new.json()["server_group"]
    assert (made["policy"], made["rules"]) == ("anti-affinity", {"max_server_per_host": 2})
    assert _at(stack, "2.63", "GET", f"{groups}/{made['id']}").json()["server_group"][
        "policies"
    ] == ["anti-affinity"]
    listed = _at(stack, "2.64", "GET", groups).json()["server_groups"]
    assert {g["id"]: g["policy"] for g in listed} == {
        shown["id"]: "anti-affinity",
        made["id"]: "anti-affinity",
    }
    # refused: the old list, no policy, rules of another policy, a bad rule
    assert make("2.64", policies=["affinity"]).status_code == 400
    assert make("2.64").json()["badRequest"]["message"] == (
        "Invalid input for field/attribute server_group. 'policy' is a required property."
    )
    other = make("2.64", policy="affinity", rules={"max_server_per_host": 2})
    assert other.status_code == 400
    assert other.json()["badRequest"]["message"] == "Only anti-affinity policy supports rules."
    assert make("2.64", policy="anti-affinity", rules={"max_server_per_host": 0}).status_code == 400
    assert make("2.64", policy="anti-affinity", rules={"other": 1}).status_code == 400
    assert make("2.64", policy="colocate").status_code == 400
    for gid in (shown["id"], made["id"]):
        assert _at(stack, "2.64", "DELETE", f"{groups}/{gid}").status_code == 204


PAST, FUTURE = "2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z"


def test_server_list_filters_of_2_66_and_2_73_and_strict_2_75(
    stack: Running, server: FlowRecord
) -> None:
    def ids(version: str, **params: str) -> list[str]:
        resp = _at(stack, version, "GET", "/v2.1/servers/detail",
                   params={"all_tenants": "1", **params})  # fmt: skip
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()["servers"]]

    sid = server.server_id
    # changes-before: ignored before 2.66, from it only servers changed by then
    assert sid in ids("2.65", **{"changes-before": PAST})
    assert sid not in ids("2.66", **{"changes-before": PAST})
    assert sid in ids("2.66", **{"changes-before": FUTURE})
    bad = _at(stack, "2.66", "GET", "/v2.1/servers", params={"changes-before": "soon"})
    assert bad.status_code == 400
    # locked: ignored before 2.73
    path = f"/v2.1/servers/{sid}"
    assert _at(stack, "2.73", "POST", path + "/action", json={"lock": None}).status_code == 202
    try:
        assert sid in ids("2.72", locked="false")
        assert sid in ids("2.73", locked="true")
        assert sid not in ids("2.73", locked="false")
        wrong = _at(stack, "2.73", "GET", "/v2.1/servers", params={"locked": "perhaps"})
        assert wrong.status_code == 400
    finally:
        assert (
            _at(stack, "2.73", "POST", path + "/action", json={"unlock": None}).status_code == 202
        )
    assert sid in ids("2.73", locked="false")
    # 2.75: a parameter the list does not know is refused (ignored before)
    assert sid in ids("2.74", colour="blue")
    strict = _at(stack, "2.75", "GET", "/v2.1/servers", params={"colour": "blue"})
    assert strict.status_code == 400
    assert strict.json()["badRequest"]["message"] == (
        "Invalid input for query parameters colour. Value: blue. "
        "Additional properties are not allowed ('colour' was unexpected)"
    )
    assert sid in ids("2.75", **{"changes-since": PAST, "limit": "1000"})


def test_instance_actions_are_paged_from_2_58(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    for action in ({"lock": None}, {"unlock": None}):
        assert _at(stack, "2.58", "POST", path + "/action", json=action).status_code == 202
    listed = path + "/os-instance-actions"

    def actions(version: str, **params: str) -> list[dict[str, Any]]:
        resp = _at(stack, version, "GET", listed, params=params)
        assert resp.status_code == 200, resp.text
        found: list[dict[str, Any]] = resp.json()["instanceActions"]
        return found

    every = actions("2.58")
    assert [a["action"] for a in every][:2] == ["unlock", "lock"] and len(every) >= 3
    assert all(a["updated_at"] for a in every)
    assert all("updated_at" not in a for a in actions("2.57"))
    # limit and marker (a request id): ignored before 2.58
    assert len(actions("2.57", limit="1")) == len(every)
    first = actions("2.58", limit="1")
    assert [a["request_id"] for a in first] == [every[0]["request_id"]]
    rest = actions("2.58", marker=every[0]["request_id"])
    assert [a["request_id"] for a in rest] == [a["request_id"] for a in every[1:]]
    unknown = _at(stack, "2.58", "GET", listed, params={"marker": "req-nope"})
    assert unknown.status_code == 400
    # changes-since (2.58) and changes-before (2.66)
    assert actions("2.58", **{"changes-since": FUTURE}) == []
    assert len(actions("2.57", **{"changes-since": FUTURE})) == len(every)
    assert actions("2.66", **{"changes-before": PAST}) == []
    assert len(actions("2.65", **{"changes-before": PAST})) == len(every)


def _settled(stack: Running, path: str) -> dict[str, Any]:
    """The server once its rebuild is over (its task cleared)."""
    shown: dict[str, Any] = {}
    for _ in range(300):
        shown = _at(stack, "2.57", "GET", path).json()["server"]
        if shown["OS-EXT-STS:task_state"] is None:
            break
        time.sleep(0.1)
    assert shown["OS-EXT-STS:task_state"] is None and shown["status"] == "ACTIVE", shown
    return shown


def test_rebuild_takes_a_key_pair_from_2_54_and_user_data_from_2_57(
    stack: Running, server: FlowRecord
) -> None:
    ids = stack.target.ids
    assert ids is not None
    member = _member(stack)
    path = f"/v2.1/servers/{server.server_id}"
    made = _at(stack, "2.54", "POST", "/v2.1/os-keypairs", token=member,
               json={"keypair": {"name": "kp54"}})  # fmt: skip
    assert made.status_code == 201, made.text

    def rebuild(version: str, **more: Any) -> httpx.Response:
        body = {"rebuild": {"imageRef": ids.image_id, **more}}
        return _at(stack, version, "POST", path + "/action", token=member, json=body)

    try:
        old = rebuild("2.53", key_name="kp54")
        assert old.status_code == 400 and "Additional properties" in old.text
        missing = rebuild("2.54", key_name="nope")
        assert missing.status_code == 400
        assert missing.json()["badRequest"]["message"] == "Invalid key_name provided."
        shown = _at(stack, "2.54", "GET", path).json()["server"]
        assert shown["key_name"] != "nope" and shown["OS-EXT-STS:task_state"] is None
        done = rebuild("2.54", key_name="kp54")
        assert done.status_code == 202, done.text
        assert _at(stack, "2.54", "GET", path).json()["server"]["key_name"] == "kp54"
        _settled(stack, path)
        # user data: refused before 2.57, replaced from it (administrators see it)
        assert rebuild("2.56", user_data="aGVsbG8=").status_code == 400
        assert rebuild("2.57", user_data="not base64!").status_code == 400
        assert rebuild("2.57", user_data="aGVsbG8=").status_code == 202
        shown = _settled(stack, path)
        assert shown["OS-EXT-SRV-ATTR:user_data"] == "aGVsbG8=" and shown["key_name"] == "kp54"
        # a description: refused before 2.19, set from it
        assert rebuild("2.18", description="d").status_code == 400
        described = rebuild("2.57", description="rebuilt 2.19")
        assert described.status_code == 202
        assert described.json()["server"]["description"] == "rebuilt 2.19"
        assert _settled(stack, path)["description"] == "rebuilt 2.19"
    finally:
        _at(stack, "2.54", "DELETE", "/v2.1/os-keypairs/kp54", token=member)


def test_personality_goes_with_2_57(stack: Running) -> None:
    ids = stack.target.ids
    assert ids is not None
    files = [{"path": "/etc/motd", "contents": "aGk="}]
    body = {"name": "p57", "imageRef": ids.image_id, "flavorRef": "no-such-flavor",
            "networks": [{"uuid": ids.network_id}], "personality": files}  # fmt: skip
    new = _at(stack, "2.57", "POST", "/v2.1/servers", json={"server": body})
    assert new.status_code == 400
    assert new.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute server. "
        "Additional properties are not allowed ('personality' was unexpected)"
    )
    # before 2.57 it is taken (this request fails on its flavor instead)
    old = _at(stack, "2.56", "POST", "/v2.1/servers", json={"server": body})
    assert old.status_code == 400
    assert old.json()["badRequest"]["message"] == "Flavor no-such-flavor could not be found."


def test_an_attachment_says_whether_its_volume_goes_with_the_server_from_2_79(
    stack: Running, server: FlowRecord
) -> None:
    token, project = stack.target.run(stack.target.token(stack.target.member))
    mine = {"X-Auth-Token": token}
    volumes = f"/v3/{project}/volumes"
    made = stack.http("block-storage", "POST", volumes, headers=mine,
                      json={"volume": {"size": 1, "name": "v79"}})  # fmt: skip
    assert made.status_code == 202, made.text
    vid = made.json()["volume"]["id"]
    for _ in range(300):
        shown = stack.http("block-storage", "GET", f"{volumes}/{vid}", headers=mine)
        if shown.json()["volume"]["status"] == "available":
            break
        time.sleep(0.1)
    path = f"/v2.1/servers/{server.server_id}/os-volume_attachments"
    body = {"volumeAttachment": {"volumeId": vid, "delete_on_termination": True}}
    old = _at(stack, "2.78", "POST", path, token=token, json=body)
    assert old.status_code == 400 and "delete_on_termination" in old.text
    bad = {"volumeAttachment": {"volumeId": vid, "delete_on_termination": "yes"}}
    assert _at(stack, "2.79", "POST", path, token=token, json=bad).status_code == 400
    attached = _at(stack, "2.79", "POST", path, token=token, json=body)
    assert attached.status_code == 200, attached.text
    assert attached.json()["volumeAttachment"]["delete_on_termination"] is True
    try:
        listed = _at(stack, "2.79", "GET", path, token=token).json()["volumeAttachments"]
        flags = {a["volumeId"]: a["delete_on_termination"] for a in listed}
        assert flags[vid] is True and list(flags.values()).count(True) >= 1
        one = _at(stack, "2.79", "GET", f"{path}/{vid}", token=token).json()["volumeAttachment"]
        assert (one["volumeId"], one["delete_on_termination"]) == (vid, True)
        older = _at(stack, "2.78", "GET", path, token=token).json()["volumeAttachments"]
        assert vid in [a["volumeId"] for a in older]
        assert all("delete_on_termination" not in a for a in older)
        shown = _at(stack, "2.79", "GET", f"/v2.1/servers/{server.server_id}").json()["server"]
        attached_flags = {
            v["id"]: v["delete_on_termination"]
            for v in shown["os-extended-volumes:volumes_attached"]
        }
        assert attached_flags[vid] is True
    finally:
        gone = _at(stack, "2.79", "DELETE", f"{path}/{vid}", token=token)
        assert gone.status_code == 202, gone.text


def test_a_flavors_description_is_updated_from_2_55(stack: Running) -> None:
    made = _flavor(stack, "2.55", "updated-55", description="before")
    assert made.status_code == 200, made.text
    path = f"/v2.1/flavors/{made.json()['flavor']['id']}"
    try:
        old = _at(stack, "2.54", "PUT", path, json={"flavor": {"description": "after"}})
        assert old.status_code == 404
        new = _at(stack, "2.55", "PUT", path, json={"flavor": {"description": "after"}})
        assert new.status_code == 200, new.text
        assert new.json()["flavor"]["description"] == "after"
        assert _at(stack, "2.55", "GET", path).json()["flavor"]["description"] == "after"
        # nothing else changes, and the description must be given
        sized = _at(stack, "2.55", "PUT", path, json={"flavor": {"description": "x", "ram": 1}})
        assert sized.status_code == 400
        none = _at(stack, "2.55", "PUT", path, json={"flavor": {}})
        assert none.status_code == 400
        assert none.json()["badRequest"]["message"] == (
            "Invalid input for field/attribute flavor/description: Field required"
        )
        shown = _at(stack, "2.55", "GET", path).json()["flavor"]
        assert (shown["ram"], shown["description"]) == (64, "after")
        member = _at(stack, "2.55", "PUT", path, token=_member(stack),
                     json={"flavor": {"description": "mine"}})  # fmt: skip
        assert member.status_code == 403
    finally:
        assert _at(stack, "2.55", "DELETE", path).status_code == 202


def test_the_update_answers_the_whole_server_from_2_75(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    update = {"server": {"name": server.server["name"]}}
    old = _at(stack, "2.74", "PUT", path, json=update).json()["server"]
    assert "OS-EXT-STS:vm_state" not in old and "key_name" not in old
    new = _at(stack, "2.75", "PUT", path, json=update).json()["server"]
    shown = _at(stack, "2.75", "GET", path).json()["server"]
    assert new.keys() == shown.keys()
    assert (new["OS-EXT-STS:vm_state"], new["key_name"]) == ("active", shown["key_name"])
