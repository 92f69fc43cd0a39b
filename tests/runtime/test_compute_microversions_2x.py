"""Compute microversions 2.20 and later over HTTP, against the running (embedded) stack of
test_compute_microversions.py: what each version brings to the operations this stack serves,
asked for at both sides of it."""

from __future__ import annotations

import time
from typing import Any

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


def test_a_deleted_servers_actions_from_2_21(stack: Running) -> None:
    gone = stack.target.boot(volume=False)
    stack.target.delete(gone.server_id)
    path = f"/v2.1/servers/{gone.server_id}/os-instance-actions"
    old = _at(stack, "2.20", "GET", path)
    assert old.status_code == 404
    assert old.json()["itemNotFound"]["message"] == f"Instance {gone.server_id} could not be found."
    new = _at(stack, "2.21", "GET", path)
    assert new.status_code == 200, new.text
    actions = new.json()["instanceActions"]
    assert sorted(a["action"] for a in actions) == ["create", "delete"]
    assert {a["instance_uuid"] for a in actions} == {gone.server_id}
    deleted = next(a for a in actions if a["action"] == "delete")
    one = f"{path}/{deleted['request_id']}"
    assert _at(stack, "2.20", "GET", one).status_code == 404
    shown = _at(stack, "2.21", "GET", one)
    assert shown.status_code == 200 and shown.json()["instanceAction"]["action"] == "delete"


def test_server_tags_come_with_2_26(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    assert _at(stack, "2.25", "GET", path + "/tags").status_code == 404
    assert "tags" not in _at(stack, "2.25", "GET", path).json()["server"]
    assert _at(stack, "2.26", "GET", path).json()["server"]["tags"] == []
    added = _at(stack, "2.26", "PUT", path + "/tags/web")
    assert added.status_code == 201, added.text
    assert added.headers["Location"].endswith(f"/v2.1/servers/{server.server_id}/tags/web")
    assert _at(stack, "2.26", "PUT", path + "/tags/web").status_code == 204
    assert _at(stack, "2.26", "GET", path + "/tags/web").status_code == 204
    missing = _at(stack, "2.26", "GET", path + "/tags/db")
    assert missing.status_code == 404
    assert missing.json()["itemNotFound"]["message"] == (
        f"Server {server.server_id} has no tag 'db'"
    )
    replaced = _at(stack, "2.26", "PUT", path + "/tags", json={"tags": ["red", "blue"]})
    assert replaced.status_code == 200 and replaced.json() == {"tags": ["red", "blue"]}
    assert _at(stack, "2.26", "GET", path + "/tags").json() == {"tags": ["red", "blue"]}
    assert _at(stack, "2.26", "GET", path).json()["server"]["tags"] == ["red", "blue"]

    def listed(version: str, **params: str) -> bool:
        query = {"all_tenants": "1", **params}
        resp = _at(stack, version, "GET", "/v2.1/servers/detail", params=query)
        assert resp.status_code == 200, resp.text
        return server.server_id in [s["id"] for s in resp.json()["servers"]]

    assert listed("2.26", tags="red,blue") and not listed("2.26", tags="red,green")
    assert listed("2.26", **{"tags-any": "green,blue"})
    assert not listed("2.26", **{"tags-any": "green"})
    assert listed("2.26", **{"not-tags": "red,green"})
    assert not listed("2.26", **{"not-tags": "red,blue"})
    assert not listed("2.26", **{"not-tags-any": "green,red"})
    assert listed("2.26", **{"not-tags-any": "green"})
    assert listed("2.25", tags="green")  # not a filter before 2.26
    # bad tags and too many change nothing
    bad = _at(stack, "2.26", "PUT", path + "/tags", json={"tags": ["a,b"]})
    assert bad.status_code == 400
    many = _at(stack, "2.26", "PUT", path + "/tags", json={"tags": [f"t{i}" for i in range(51)]})
    assert many.status_code == 400
    assert many.json()["badRequest"]["message"] == (
        "The number of tags exceeded the per-server limit 50"
    )
    assert _at(stack, "2.26", "PUT", path + "/tags/a,b").status_code == 400
    assert _at(stack, "2.26", "GET", path + "/tags").json() == {"tags": ["red", "blue"]}
    # removed one by one, then all
    assert _at(stack, "2.26", "DELETE", path + "/tags/red").status_code == 204
    assert _at(stack, "2.26", "DELETE", path + "/tags/red").status_code == 404
    assert _at(stack, "2.26", "GET", path + "/tags").json() == {"tags": ["blue"]}
    assert _at(stack, "2.26", "DELETE", path + "/tags").status_code == 204
    assert _at(stack, "2.26", "GET", path + "/tags").json() == {"tags": []}
    assert _at(stack, "2.25", "DELETE", path + "/tags").status_code == 404


def test_cpu_info_is_an_object_from_2_28(stack: Running) -> None:
    old = _at(stack, "2.27", "GET", "/v2.1/os-hypervisors/detail").json()["hypervisors"]
    new = _at(stack, "2.28", "GET", "/v2.1/os-hypervisors/detail").json()["hypervisors"]
    assert old and [h["cpu_info"] for h in old] == ["{}"] * len(old)
    assert [h["cpu_info"] for h in new] == [{}] * len(old)


def _server_body(stack: Running, name: str, **more: object) -> dict[str, object]:
    ids = stack.target.ids
    assert ids is not None
    body = {"name": name, "imageRef": ids.image_id, "flavorRef": ids.flavor_id,
            "networks": [{"uuid": ids.network_id}]}  # fmt: skip
    return {"server": {**body, **more}}


def test_device_tags_at_create_from_2_32(stack: Running) -> None:
    ids = stack.target.ids
    assert ids is not None
    tagged = [{"uuid": ids.network_id, "tag": "nic1"}]
    bdm = [{"uuid": ids.image_id, "source_type": "image", "destination_type": "local",
            "boot_index": 0, "tag": "root"}]  # fmt: skip
    old = _at(stack, "2.31", "POST", "/v2.1/servers",
              json=_server_body(stack, "tagged", networks=tagged))  # fmt: skip
    assert old.status_code == 400
    assert old.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute networks. "
        "Additional properties are not allowed ('tag' was unexpected)"
    )
    # block devices are tagged at 2.32 only (until 2.42); a tag is checked
    no_bdm = _at(stack, "2.33", "POST", "/v2.1/servers",
                 json=_server_body(stack, "tagged", block_device_mapping_v2=bdm))  # fmt: skip
    assert no_bdm.status_code == 400 and "block_device_mapping_v2" in no_bdm.text
    bad = [{"uuid": ids.network_id, "tag": "a/b"}]
    assert _at(stack, "2.32", "POST", "/v2.1/servers",
               json=_server_body(stack, "tagged", networks=bad)).status_code == 400  # fmt: skip
    made = _at(stack, "2.32", "POST", "/v2.1/servers",
               json=_server_body(stack, "tagged", networks=tagged, block_device_mapping_v2=bdm))  # fmt: skip
    assert made.status_code == 202, made.text
    gone = _at(stack, "2.32", "DELETE", f"/v2.1/servers/{made.json()['server']['id']}")
    assert gone.status_code == 204


def test_hypervisors_are_paged_from_2_33(stack: Running) -> None:
    every = _at(stack, "2.33", "GET", "/v2.1/os-hypervisors").json()["hypervisors"]
    assert every
    first = str(every[0]["id"])
    after = _at(stack, "2.33", "GET", "/v2.1/os-hypervisors", params={"marker": first})
    assert [h["id"] for h in after.json()["hypervisors"]] == [h["id"] for h in every[1:]]
    one = _at(stack, "2.33", "GET", "/v2.1/os-hypervisors/detail", params={"limit": "1"}).json()
    assert [h["id"] for h in one["hypervisors"]] == [every[0]["id"]]
    assert one["hypervisors_links"][0]["rel"] == "next"
    assert f"marker={first}" in one["hypervisors_links"][0]["href"]
    bad = _at(stack, "2.33", "GET", "/v2.1/os-hypervisors", params={"marker": "999999"})
    assert bad.status_code == 400
    assert bad.json()["badRequest"]["message"] == "marker [999999] not found"
    # 2.32: no paging parameters (ignored)
    old = _at(stack, "2.32", "GET", "/v2.1/os-hypervisors", params={"marker": first})
    assert old.json() == {"hypervisors": every}
    old = _at(stack, "2.32", "GET", "/v2.1/os-hypervisors", params={"marker": "999999"})
    assert old.status_code == 200


def test_key_pairs_are_paged_by_name_from_2_35(stack: Running) -> None:
    names = ["page-a", "page-b", "page-c"]
    for name in names:
        made = _at(stack, "2.35", "POST", "/v2.1/os-keypairs", json={"keypair": {"name": name}})
        assert made.status_code == 201, made.text
    try:

        def listed(version: str, **params: str) -> tuple[list[str], object]:
            body = _at(stack, version, "GET", "/v2.1/os-keypairs", params=params).json()
            got = [k["keypair"]["name"] for k in body["keypairs"]]
            return [n for n in got if n.startswith("page-")], body.get("keypairs_links")

        every = [k["keypair"]["name"] for k in
                 _at(stack, "2.35", "GET", "/v2.1/os-keypairs").json()["keypairs"]]  # fmt: skip
        assert every == sorted(every)  # by name
        before = every[: every.index("page-a")]
        start = {"marker": before[-1]} if before else {}
        first, links = listed("2.35", limit="2", **start)
        assert first == ["page-a", "page-b"]
        assert isinstance(links, list) and "marker=page-b" in links[0]["href"]
        assert listed("2.35", marker="page-b")[0] == ["page-c"]
        missing = _at(stack, "2.35", "GET", "/v2.1/os-keypairs", params={"marker": "nope"})
        assert missing.status_code == 400
        # 2.34: every key pair, whatever the parameters
        assert listed("2.34", marker="page-b", limit="1") == (names, None)
    finally:
        for name in names:
            _at(stack, "2.35", "DELETE", f"/v2.1/os-keypairs/{name}")


def test_proxies_and_network_limits_go_with_2_36(stack: Running) -> None:
    assert _at(stack, "2.35", "GET", "/v2.1/os-floating-ip-pools").status_code == 200
    gone = _at(stack, "2.36", "GET", "/v2.1/os-floating-ip-pools")
    assert gone.status_code == 404
    network = {"maxTotalFloatingIps", "maxSecurityGroups", "maxSecurityGroupRules",
               "totalFloatingIpsUsed", "totalSecurityGroupsUsed"}  # fmt: skip
    old = _at(stack, "2.35", "GET", "/v2.1/limits").json()["limits"]["absolute"]
    new = _at(stack, "2.36", "GET", "/v2.1/limits").json()["limits"]["absolute"]
    assert old.keys() >= network and old["maxSecurityGroups"] == -1
    assert old.keys() - network == new.keys()
    assert new["maxTotalInstances"] == old["maxTotalInstances"]
    quota = {"fixed_ips", "floating_ips", "security_groups", "security_group_rules"}
    path = f"/v2.1/os-quota-sets/{stack.project_id}"
    for suffix in ("", "/defaults", "/detail"):
        at35 = _at(stack, "2.35", "GET", path + suffix).json()["quota_set"]
        at36 = _at(stack, "2.36", "GET", path + suffix).json()["quota_set"]
        assert at35.keys() >= quota and at35.keys() - quota == at36.keys(), suffix
    refused = _at(stack, "2.36", "PUT", path, json={"quota_set": {"floating_ips": 5}})
    assert refused.status_code == 400
    assert (
        _at(stack, "2.36", "GET", path).json()["quota_set"]["instances"] == new["maxTotalInstances"]
    )


def test_networks_are_required_from_2_37(stack: Running) -> None:
    no_nets = _server_body(stack, "netless")
    del no_nets["server"]["networks"]  # type: ignore[attr-defined]
    refused = _at(stack, "2.37", "POST", "/v2.1/servers", json=no_nets)
    assert refused.status_code == 400
    assert refused.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute server. 'networks' is a required property"
    )
    for version, value in (("2.36", "none"), ("2.37", "some")):
        bad = _at(stack, version, "POST", "/v2.1/servers",
                  json=_server_body(stack, "netless", networks=value))  # fmt: skip
        assert bad.status_code == 400, (version, value)
    ids = stack.target.ids
    assert ids is not None
    dashless = [{"uuid": ids.network_id.replace("-", "")}]
    assert _at(stack, "2.37", "POST", "/v2.1/servers",
               json=_server_body(stack, "netless", networks=dashless)).status_code == 400  # fmt: skip
    member, _ = stack.target.run(stack.target.token(stack.target.member))
    # none: no NIC; auto: the one network the project may use (the member's project has
    # one, the administrator's none: that build fails)
    for value, token, status, nets in (
        ("none", None, "ACTIVE", 0),
        ("auto", member, "ACTIVE", 1),
        ("auto", None, "ERROR", 0),
    ):
        made = _at(stack, "2.37", "POST", "/v2.1/servers", token=token,
                   json=_server_body(stack, f"net-{value}", networks=value))  # fmt: skip
        assert made.status_code == 202, made.text
        sid = made.json()["server"]["id"]
        try:
            for _ in range(100):
                shown = _at(stack, "2.37", "GET", f"/v2.1/servers/{sid}").json()["server"]
                if shown["status"] in ("ACTIVE", "ERROR"):
                    break
                time.sleep(0.1)
            assert shown["status"] == status, shown
            assert len(shown["addresses"]) == nets, shown["addresses"]
            if status == "ERROR":
                assert shown["fault"]["message"] == (
                    "No network is available to allocate automatically."
                )
        finally:
            assert _at(stack, "2.37", "DELETE", f"/v2.1/servers/{sid}").status_code == 204


def test_an_unknown_status_filter_is_refused_from_2_38(stack: Running, server: FlowRecord) -> None:
    def listed(version: str, status: str) -> httpx.Response:
        query = {"all_tenants": "1", "status": status}
        return _at(stack, version, "GET", "/v2.1/servers", params=query)

    assert listed("2.37", "bogus").json() == {"servers": []}
    refused = listed("2.38", "bogus")
    assert refused.status_code == 400
    assert refused.json()["badRequest"]["message"] == "Invalid status value"
    for status in ("ACTIVE", "active"):
        found = listed("2.38", status)
        assert server.server_id in [s["id"] for s in found.json()["servers"]], status
    assert listed("2.38", "SHELVED").json() == {"servers": []}


def test_max_image_meta_leaves_the_limits_with_2_39(stack: Running) -> None:
    old = _at(stack, "2.38", "GET", "/v2.1/limits").json()["limits"]["absolute"]
    new = _at(stack, "2.39", "GET", "/v2.1/limits").json()["limits"]["absolute"]
    assert old["maxImageMeta"] == 128 and old.keys() - {"maxImageMeta"} == new.keys()


def test_usage_is_paged_from_2_40(stack: Running, server: FlowRecord) -> None:
    def usage(version: str, **params: str) -> dict[str, Any]:
        query = {"start": "2000-01-01T00:00:00", "end": "2100-01-01T00:00:00", "detailed": "1"}
        query.update(params)
        resp = _at(stack, version, "GET", "/v2.1/os-simple-tenant-usage", params=query)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def ids(body: dict[str, Any]) -> list[str]:
        return [u["instance_id"] for t in body["tenant_usages"] for u in t["server_usages"]]

    other = stack.target.boot(volume=False)  # two servers at least
    full = usage("2.39", limit="1")  # no paging before 2.40
    every = ids(full)
    (tenant,) = {t["tenant_id"] for t in full["tenant_usages"]
                 if server.server_id in [u["instance_id"] for u in t["server_usages"]]}  # fmt: skip
    assert {server.server_id, other.server_id} <= set(every)
    seen: list[str] = []
    page = usage("2.40", limit="1")
    for _ in range(len(every)):
        assert len(ids(page)) == 1
        seen += ids(page)
        links = page.get("tenant_usages_links")
        if not links:
            break
        marker = links[0]["href"].split("marker=")[1].split("&")[0]
        assert marker == seen[-1]
        page = usage("2.40", limit="1", marker=marker)
    assert sorted(seen) == sorted(every) and len(set(seen)) == len(seen)
    # one project's, paged the same way
    one = _at(stack, "2.40", "GET", f"/v2.1/os-simple-tenant-usage/{tenant}",
              params={"start": "2000-01-01T00:00:00", "end": "2100-01-01T00:00:00",
                      "limit": "1"}).json()  # fmt: skip
    assert len(one["tenant_usage"]["server_usages"]) == 1
    assert "marker=" in one["tenant_usage_links"][0]["href"]
    stack.target.delete(other.server_id)


def test_device_tags_come_back_with_2_42(stack: Running) -> None:
    ids = stack.target.ids
    assert ids is not None
    tagged = [{"uuid": ids.network_id, "tag": "nic1"}]
    for version in ("2.37", "2.41"):
        old = _at(stack, version, "POST", "/v2.1/servers",
                  json=_server_body(stack, "tagged", networks=tagged))  # fmt: skip
        assert old.status_code == 400 and "'tag' was unexpected" in old.text, version
    bdm = [{"uuid": ids.image_id, "source_type": "image", "destination_type": "local",
            "boot_index": 0, "tag": "root"}]  # fmt: skip
    made = _at(stack, "2.42", "POST", "/v2.1/servers",
               json=_server_body(stack, "tagged", networks=tagged, block_device_mapping_v2=bdm))  # fmt: skip
    assert made.status_code == 202, made.text
    assert (
        _at(stack, "2.42", "DELETE", f"/v2.1/servers/{made.json()['server']['id']}").status_code
        == 204
    )


def _idle(stack: Running, server_id: str) -> None:
    for _ in range(200):
        shown = _at(stack, "2.45", "GET", f"/v2.1/servers/{server_id}").json()["server"]
        if shown["OS-EXT-STS:task_state"] is None:
            return
        time.sleep(0.1)
    raise AssertionError(f"server {server_id} stays in task state {shown['OS-EXT-STS:task_state']}")


def test_create_image_answers_the_image_id_from_2_45(stack: Running, server: FlowRecord) -> None:
    action = f"/v2.1/servers/{server.server_id}/action"
    old = _at(stack, "2.44", "POST", action, json={"createImage": {"name": "snap-244"}})
    assert old.status_code == 202 and old.content == b""
    old_id = old.headers["Location"].rsplit("/images/", 1)[1]
    _idle(stack, server.server_id)
    new = _at(stack, "2.45", "POST", action, json={"createImage": {"name": "snap-245"}})
    assert new.status_code == 202 and "Location" not in new.headers
    new_id = new.json()["image_id"]
    _idle(stack, server.server_id)
    for image_id, name in ((old_id, "snap-244"), (new_id, "snap-245")):
        image = stack.http("image", "GET", f"/v2/images/{image_id}")
        assert image.status_code == 200 and image.json()["name"] == name
        assert stack.http("image", "DELETE", f"/v2/images/{image_id}").status_code == 204


def test_a_servers_flavor_is_embedded_from_2_47(stack: Running, server: FlowRecord) -> None:
    path = f"/v2.1/servers/{server.server_id}"
    old = _at(stack, "2.46", "GET", path).json()["server"]["flavor"]
    assert old.keys() == {"id", "links"}
    flavor = _at(stack, "2.46", "GET", f"/v2.1/flavors/{old['id']}").json()["flavor"]
    new = _at(stack, "2.47", "GET", path).json()["server"]["flavor"]
    assert new == {
        "original_name": flavor["name"],
        "vcpus": flavor["vcpus"],
        "ram": flavor["ram"],
        "disk": flavor["disk"],
        "ephemeral": flavor["OS-FLV-EXT-DATA:ephemeral"],
        "swap": flavor["swap"] or 0,
        "extra_specs": {},
    }
    detail = _at(stack, "2.47", "GET", "/v2.1/servers/detail", params={"all_tenants": "1"})
    assert {s["id"]: s["flavor"] for s in detail.json()["servers"]}[server.server_id] == new


def test_a_volume_attachment_tag_from_2_49(stack: Running, server: FlowRecord) -> None:
    """Refused before 2.49 and checked from it, before anything is attached."""
    path = f"/v2.1/servers/{server.server_id}/os-volume_attachments"
    nothing = "00000000-0000-4000-8000-000000000000"
    old = _at(stack, "2.48", "POST", path,
              json={"volumeAttachment": {"volumeId": nothing, "tag": "data"}})  # fmt: skip
    assert old.status_code == 400
    assert old.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute volumeAttachment. "
        "Additional properties are not allowed ('tag' was unexpected)"
    )
    bad = _at(stack, "2.49", "POST", path,
              json={"volumeAttachment": {"volumeId": nothing, "tag": "a/b"}})  # fmt: skip
    assert bad.status_code == 400 and "tag" in bad.json()["badRequest"]["message"]
    # a good tag gets as far as the volume (there is none)
    missing = _at(stack, "2.49", "POST", path,
                  json={"volumeAttachment": {"volumeId": nothing, "tag": "data"}})  # fmt: skip
    assert missing.status_code == 404, missing.text


def test_volume_extended_and_events_for_everyone_from_2_51(
    stack: Running, server: FlowRecord
) -> None:
    event = {"events": [{"name": "volume-extended", "server_uuid": server.server_id,
                         "tag": "00000000-0000-4000-8000-000000000000"}]}  # fmt: skip
    old = _at(stack, "2.50", "POST", "/v2.1/os-server-external-events", json=event)
    assert old.status_code == 400 and "volume-extended" in old.text
    new = _at(stack, "2.51", "POST", "/v2.1/os-server-external-events", json=event)
    assert new.status_code == 200, new.text
    assert [(e["name"], e["code"]) for e in new.json()["events"]] == [("volume-extended", 200)]
    # the member sees the create's events from 2.51 only; the administrator always
    actions = f"/v2.1/servers/{server.server_id}/os-instance-actions"
    listed = _at(stack, "2.51", "GET", actions).json()["instanceActions"]
    path = actions + "/" + next(a["request_id"] for a in listed if a["action"] == "create")
    member, _ = stack.target.run(stack.target.token(stack.target.member))
    admin50 = _at(stack, "2.50", "GET", path).json()["instanceAction"]
    assert admin50["events"] and "traceback" in admin50["events"][0]
    mine50 = _at(stack, "2.50", "GET", path, token=member)
    assert mine50.status_code == 200 and "events" not in mine50.json()["instanceAction"]
    mine51 = _at(stack, "2.51", "GET", path, token=member).json()["instanceAction"]
    assert [e["event"] for e in mine51["events"]] == [e["event"] for e in admin50["events"]]
    assert all("traceback" not in e for e in mine51["events"])


def test_tags_at_create_from_2_52(stack: Running) -> None:
    old = _at(stack, "2.51", "POST", "/v2.1/servers",
              json=_server_body(stack, "tagged-at-create", tags=["web"]))  # fmt: skip
    assert old.status_code == 400
    assert old.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute server. "
        "Additional properties are not allowed ('tags' was unexpected)"
    )
    too_many = [f"t{i}" for i in range(51)]
    for bad in (too_many, ["a,b"], "web"):
        refused = _at(stack, "2.52", "POST", "/v2.1/servers",
                      json=_server_body(stack, "tagged-at-create", tags=bad))  # fmt: skip
        assert refused.status_code == 400, bad
    made = _at(stack, "2.52", "POST", "/v2.1/servers",
               json=_server_body(stack, "tagged-at-create", tags=["web", "db"]))  # fmt: skip
    assert made.status_code == 202, made.text
    sid = made.json()["server"]["id"]
    try:
        assert _at(stack, "2.52", "GET", f"/v2.1/servers/{sid}/tags").json() == {
            "tags": ["web", "db"]
        }
        found = _at(stack, "2.52", "GET", "/v2.1/servers", params={"tags": "web,db"})
        assert sid in [s["id"] for s in found.json()["servers"]]
    finally:
        assert _at(stack, "2.52", "DELETE", f"/v2.1/servers/{sid}").status_code == 204


def test_server_metadata_items(stack: Running, server: FlowRecord) -> None:
    """One metadata item (GET, PUT, DELETE .../metadata/{key}): nova's `meta` body, the
    body naming exactly the path's item, 404 for one the server lacks, the limit kept."""
    path = f"/v2.1/servers/{server.server_id}/metadata"
    put = _at(stack, "2.1", "PUT", path + "/role", json={"meta": {"role": "web"}})
    assert put.status_code == 200 and put.json() == {"meta": {"role": "web"}}
    assert _at(stack, "2.1", "GET", path + "/role").json() == {"meta": {"role": "web"}}
    assert _at(stack, "2.1", "GET", path).json()["metadata"]["role"] == "web"
    for body, message in (
        ({"meta": {"role": "db", "tier": "1"}}, "Request body contains too many items"),
        ({"meta": {"tier": "1"}}, "Request body and URI mismatch"),
    ):
        refused = _at(stack, "2.1", "PUT", path + "/role", json=body)
        assert refused.status_code == 400 and refused.json()["badRequest"]["message"] == message
    many = {f"k{i}": "v" for i in range(127)}  # with "role": the 128 nova allows
    assert _at(stack, "2.1", "POST", path, json={"metadata": many}).status_code == 200
    over = _at(stack, "2.1", "PUT", path + "/one-more", json={"meta": {"one-more": "v"}})
    assert over.status_code == 403
    assert over.json()["forbidden"]["message"] == "Maximum number of metadata items exceeds 128"
    assert _at(stack, "2.1", "DELETE", path + "/role").status_code == 204
    missing = _at(stack, "2.1", "GET", path + "/role")
    assert missing.status_code == 404
    assert missing.json()["itemNotFound"]["message"] == "Metadata item was not found"
    assert _at(stack, "2.1", "DELETE", path + "/role").status_code == 404
    assert _at(stack, "2.1", "PUT", path, json={"metadata": {}}).json() == {"metadata": {}}
    other = "00000000-0000-4000-8000-000000000000"
    gone = _at(stack, "2.1", "GET", f"/v2.1/servers/{other}/metadata/a")
    assert gone.json()["itemNotFound"]["message"] == f"Instance {other} could not be found."


def test_volume_and_interface_actions_are_not_server_actions(
    stack: Running, server: FlowRecord
) -> None:
    """attach_volume and the like are the state machine's, run only by their own operations."""
    path = f"/v2.1/servers/{server.server_id}/action"
    nothing = "00000000-0000-4000-8000-000000000000"
    for name, arg in (("attach_volume", {"volumeId": nothing}), ("detach_volume", {})):
        refused = _at(stack, "2.1", "POST", path, json={name: arg})
        assert refused.status_code == 400, refused.text
        assert name in refused.json()["badRequest"]["message"]
