"""A server's instance actions (nova's os-instance-actions) through the real `openstack`
CLI: `server event list` and `server event show`, recorded from the requests nova-api
answered and from what the scheduler and the compute host did of them (issue 15)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from specstack_conformance.clouds import Credentials

from .conftest import Stack

VM = "wire-events-vm"
FAILED = "wire-events-fail"
HUGE = "wire-events-huge"
MANY = "wire-events-many"
CREATE = ("server", "create", "--image", "demo-image", "--network", "private")
# keystoneauth's debug log of each request: the request id the answer carried
POSTED = re.compile(r"POST call to compute for \S+/servers used request id (req-[0-9a-f-]+)")


def _created(stack: Stack, *args: str) -> tuple[dict[str, Any], str]:
    """`openstack server create ARGS`, and the request id the POST was answered with."""
    proc = stack.run("--debug", *CREATE, *args, "-f", "json")
    found = POSTED.search(proc.stderr)
    assert found, proc.stderr[-2000:]
    server: dict[str, Any] = stack.json("server", "show", args[-1])
    return server, found.group(1)


def _events(stack: Stack, server: str, request_id: str) -> list[dict[str, Any]]:
    """The events as the administrator sees them (a server of another project: by id)."""
    shown = stack.json("server", "event", "show", server, request_id, cloud="specstack-admin")
    events: list[dict[str, Any]] = shown["events"]
    return events


def test_actions_of_a_server_its_requests_and_their_events(stack: Stack) -> None:
    """The create's action carries the POST's request id; a stop adds its action; the
    scheduler's and the compute host's events are there, each with its result."""
    server, posted = _created(stack, "--flavor", "m1.tiny", "--wait", VM)
    try:
        actions = stack.json("server", "event", "list", VM)
        assert [(a["Action"], a["Request ID"]) for a in actions] == [("create", posted)]
        shown = stack.json("server", "event", "show", VM, posted)
        assert shown["action"] == "create" and shown["request_id"] == posted
        assert shown["message"] is None and shown["user_id"] == server["user_id"]
        assert shown["project_id"] == server["project_id"]
        assert sorted(e["result"] for e in shown["events"]) == ["Success", "Success"]
        events = {e["event"]: e for e in _events(stack, server["id"], posted)}
        assert set(events) == {
            "conductor_schedule_and_build_instances",
            "compute__do_build_and_run_instance",
        }
        build = events["compute__do_build_and_run_instance"]
        assert build["result"] == "Success" and build["traceback"] is None
        assert build["start_time"] <= build["finish_time"]
        stack.run("server", "stop", VM)
        stack.wait_for("server", VM, "status", "SHUTOFF")
        actions = stack.json("server", "event", "list", VM)
        assert [a["Action"] for a in actions] == ["stop", "create"]  # newest first
        stop_id = actions[0]["Request ID"]
        assert stop_id.startswith("req-") and stop_id != posted
        (stopped,) = _events(stack, server["id"], stop_id)
        assert (stopped["event"], stopped["result"]) == ("compute_stop_instance", "Success")
        missing = stack.run("server", "event", "show", VM, "req-" + "0" * 36, check=False)
        assert missing.returncode != 0 and "not found" in missing.stderr.lower()
        # deleted, its actions remain (nova's read the deleted instance): the delete's too
        stack.run("server", "delete", "--wait", VM)
        actions = stack.json("server", "event", "list", server["id"])
        assert [a["Action"] for a in actions] == ["delete", "stop", "create"]
        (ended,) = _events(stack, server["id"], actions[0]["Request ID"])
        assert (ended["event"], ended["result"]) == ("compute_terminate_instance", "Success")
    finally:
        stack.run("server", "delete", "--wait", VM, check=False)


def test_a_multiple_create_records_the_create_of_each_server(stack: Stack) -> None:
    """`server create --min 2 --max 2`: each server has its create action with the POST's
    request id, and its own scheduler and compute host events (nova's conductor starts
    the action of each instance it makes)."""
    proc = stack.run("--debug", *CREATE, "--flavor", "m1.tiny", "--min", "2", "--max", "2", MANY)
    found = POSTED.search(proc.stderr)
    assert found, proc.stderr[-2000:]
    names = [f"{MANY}-1", f"{MANY}-2"]
    try:
        for name in names:
            stack.wait_for("server", name, "status", "ACTIVE")
            actions = stack.json("server", "event", "list", name)
            assert [(a["Action"], a["Request ID"]) for a in actions] == [("create", found[1])]
            shown = stack.json("server", "event", "show", name, found[1])
            assert sorted((e["event"], e["result"]) for e in shown["events"]) == [
                ("compute__do_build_and_run_instance", "Success"),
                ("conductor_schedule_and_build_instances", "Success"),
            ]
    finally:
        for name in names:
            stack.run("server", "delete", "--wait", name, check=False)


def test_a_failed_build_shows_its_failing_event(stack: Stack) -> None:
    """No host has the memory the flavor asks: the build's action holds the scheduler's
    event with result Error and its failure, and the action's message says Error."""
    admin = "specstack-admin"
    stack.run("flavor", "create", "--ram", "100000000", "--disk", "1", "--vcpus", "1", HUGE,
              cloud=admin)  # fmt: skip
    try:
        server, posted = _created(stack, "--flavor", HUGE, FAILED)
        stack.wait_for("server", FAILED, "status", "ERROR")
        (action,) = stack.json("server", "event", "list", FAILED)
        assert (action["Action"], action["Request ID"]) == ("create", posted)
        shown = stack.json("server", "event", "show", server["id"], posted, cloud=admin)
        assert shown["message"] == "Error" and shown["project_id"] == server["project_id"]
        (event,) = shown["events"]
        assert event["event"] == "conductor_schedule_and_build_instances"
        assert event["result"] == "Error" and "NoValidHost" in event["traceback"]
        # the owner sees the event and its result, not the failure's text (policy: events)
        (own,) = stack.json("server", "event", "show", FAILED, posted)["events"]
        assert (own["result"], own["traceback"]) == ("Error", None)
    finally:
        stack.run("server", "delete", "--wait", FAILED, check=False)
        stack.run("flavor", "delete", HUGE, cloud=admin, check=False)


#: httpx's default (5 s) is shorter than a password check can take on a loaded CI machine
TIMEOUT_S = 60


def test_another_projects_server_has_no_actions_to_show(stack: Stack) -> None:
    """A member of another project gets nova's 404 for the server, as for one that does
    not exist; so do the server's actions."""
    admin = "specstack-admin"
    target = stack.json(*CREATE, "--flavor", "m1.tiny", "wire-events-target")["id"]
    stack.run("project", "create", "wire-events-other", cloud=admin)
    stack.run("user", "create", "--project", "wire-events-other", "--password", "pw-other-1",
              "wire-events-user", cloud=admin)  # fmt: skip
    stack.run("role", "add", "--project", "wire-events-other", "--user", "wire-events-user",
              "member", cloud=admin)  # fmt: skip
    try:
        token = _token(stack, "wire-events-user", "pw-other-1", "wire-events-other")
        compute = _compute_url(stack)
        for path in ("os-instance-actions", "os-instance-actions/req-x"):
            resp = httpx.get(
                f"{compute}/servers/{target}/{path}",
                headers={"X-Auth-Token": token},
                timeout=TIMEOUT_S,
            )
            assert resp.status_code == 404, resp.text
            assert (
                resp.json()["itemNotFound"]["message"] == f"Instance {target} could not be found."
            )
        # the owner sees them (its create), as nova answers
        mine = {"X-Auth-Token": stack.json("token", "issue")["id"]}
        own = httpx.get(
            f"{compute}/servers/{target}/os-instance-actions", headers=mine, timeout=TIMEOUT_S
        )
        (action,) = own.json()["instanceActions"]
        assert (action["action"], action["instance_uuid"]) == ("create", target)
        assert set(action) == {
            "action", "instance_uuid", "request_id", "user_id", "project_id", "start_time",
            "message",
        }  # fmt: skip
        url = f"{compute}/servers/{target}/os-instance-actions/{action['request_id']}"
        one = httpx.get(url, headers=mine, timeout=TIMEOUT_S).json()["instanceAction"]
        # its events: before 2.51 only for those the events policy allows (administrators)
        assert one["request_id"] == action["request_id"] and "events" not in one
        late = {**mine, "OpenStack-API-Version": "compute 2.51"}
        events = httpx.get(url, headers=late, timeout=TIMEOUT_S).json()["instanceAction"]["events"]
        assert "compute__do_build_and_run_instance" in [e["event"] for e in events]
    finally:
        stack.run("user", "delete", "wire-events-user", cloud=admin, check=False)
        stack.run("project", "delete", "wire-events-other", cloud=admin, check=False)
        stack.run("server", "delete", "--wait", "wire-events-target", check=False)


def _token(stack: Stack, user: str, password: str, project: str) -> str:
    domain = ("id", "default")
    who = Credentials(stack.identity_url, user, password, project, domain, domain)
    body = who.auth_body()
    resp = httpx.post(f"{stack.identity_url}/auth/tokens", json=body, timeout=TIMEOUT_S)
    assert resp.status_code == 201, resp.text
    return resp.headers["X-Subject-Token"]


def _compute_url(stack: Stack) -> str:
    (entry,) = [e for e in stack.json("catalog", "list") if e["Type"] == "compute"]
    (public,) = [ep for ep in entry["Endpoints"] if ep["interface"] == "public"]
    return str(public["url"])
