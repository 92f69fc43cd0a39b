"""Log in, change project, log out, against a recording stand-in for keystone: the
token stays on the server (the browser gets an opaque id), changing project asks for a
token scoped to the new project, logging out revokes the token (DELETE /v3/auth/tokens)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from specstack_runtime.dashboard.app import Dashboard
from specstack_runtime.stackinfo import StackInfo

from ..conftest import REPO

IDENTITY = "http://keystone.test:5000/v3"


class Keystone:
    """Answers issueToken, revokeToken and getAuthProjects; records every request."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/v3/auth/tokens":
            body = json.loads(request.content)
            identity = body["auth"]["identity"]
            if identity["methods"] == ["password"]:
                if identity["password"]["user"]["password"] != "secret":
                    return httpx.Response(
                        401, json={"error": {"code": 401, "message": "Bad credentials."}}
                    )
                project = {"id": "p-demo", "name": "demo"}
            else:
                project = {"id": body["auth"]["scope"]["project"]["id"], "name": "other"}
            self.issued += 1
            token = {
                "user": {"id": "u1", "name": "demo", "domain": {"id": "default"}},
                "project": project,
                "roles": [{"name": "member"}, {"name": "reader"}],
                "catalog": [],
            }
            return httpx.Response(
                201, json={"token": token}, headers={"X-Subject-Token": f"tok-{self.issued}"}
            )
        if request.method == "DELETE" and path == "/v3/auth/tokens":
            return httpx.Response(204)
        if path == "/v3/auth/projects":
            return httpx.Response(
                200,
                json={
                    "projects": [{"id": "p-demo", "name": "demo"}, {"id": "p-2", "name": "other"}]
                },
            )
        return httpx.Response(404)


def run(keystone: Keystone, steps: Any) -> Any:
    info = StackInfo.load(REPO / "generated" / "ir.json")
    dash = Dashboard(info, IDENTITY, REPO / "generated" / "openapi", component="dashboard")

    async def go() -> Any:
        dash.http = httpx.AsyncClient(transport=httpx.MockTransport(keystone))
        app = dash.build()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dash.test"
        ) as browser:
            return await steps(browser, dash)

    return asyncio.run(go())


def test_log_in_switch_project_log_out_revokes() -> None:
    keystone = Keystone()

    async def steps(browser: httpx.AsyncClient, dash: Dashboard) -> None:
        form = {"username": "demo", "password": "secret", "project": "demo"}
        resp = await browser.post("/login", data=form)
        assert resp.status_code == 303
        cookie = resp.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "tok-1" not in cookie
        (session,) = dash.sessions._by_id.values()
        assert session.token == "tok-1" and [p["name"] for p in session.projects] == [
            "demo",
            "other",
        ]

        resp = await browser.post("/project", data={"project_id": "p-2"})
        assert resp.status_code == 303
        assert session.token == "tok-2" and session.project["id"] == "p-2"
        rescope = json.loads(keystone.seen[-2].content)["auth"]
        assert rescope == {
            "identity": {"methods": ["token"], "token": {"id": "tok-1"}},
            "scope": {"project": {"id": "p-2"}},
        }
        old = keystone.seen[-1]  # the token it replaced is revoked
        assert (old.method, old.headers["X-Subject-Token"]) == ("DELETE", "tok-1")

        resp = await browser.post("/logout")
        assert resp.status_code == 303 and resp.headers["location"] == "/login"
        revoked = keystone.seen[-1]
        assert (revoked.method, revoked.url.path) == ("DELETE", "/v3/auth/tokens")
        assert revoked.headers["X-Subject-Token"] == "tok-2"
        assert dash.sessions._by_id == {}
        resp = await browser.get("/r/compute/servers")
        assert (resp.status_code, resp.headers["location"]) == (303, "/login")

    run(keystone, steps)


def test_a_wrong_password_keeps_no_session() -> None:
    keystone = Keystone()

    async def steps(browser: httpx.AsyncClient, dash: Dashboard) -> None:
        form = {"username": "demo", "password": "wrong", "project": "demo"}
        resp = await browser.post("/login", data=form)
        assert resp.status_code == 401
        assert "Wrong user name, password or project: Bad credentials." in resp.text
        assert "set-cookie" not in resp.headers and dash.sessions._by_id == {}
        resp = await browser.post(
            "/login", data={"username": "demo", "password": "", "project": ""}
        )
        assert resp.status_code == 400
        assert "User name, password and project are all needed." in resp.text
        assert len(keystone.seen) == 1  # the incomplete form never reached keystone

    run(keystone, steps)


def test_a_flow_the_session_started_stays_live_while_the_trace_cannot_tell_yet() -> None:
    """Distributed mode: the flow's owner reaches the shared trace file a moment after nova
    answered, so the first reads are refused; the view shows the dashboard's own steps and
    keeps asking. A flow of someone else's, refused, says why."""
    from specstack_runtime.dashboard import flows
    from specstack_runtime.dashboard.sessions import Session

    def refuse(request: httpx.Request) -> httpx.Response:
        message = "Policy doesn't allow specstack:trace to be performed."
        return httpx.Response(403, json={"error": {"code": 403, "message": message}})

    info = StackInfo.load(REPO / "generated" / "ir.json")
    dash = Dashboard(info, IDENTITY, REPO / "generated" / "openapi", component="dashboard")
    session = Session("tok-1", {"project": {"id": "p-demo"}})
    mine = flows.Watch(flow_id="req-mine", sequence="boot-vm")
    first = flows.rows(info.sequences["boot-vm"], "dashboard")[0]
    mine.record(first, 1.0)

    async def go() -> tuple[Any, Any]:
        dash.http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
        return await dash.shown(session, mine), await dash.shown(
            session, flows.Watch(flow_id="req-other", sequence="")
        )

    (shown, _declared, error), (other, _, other_error) = asyncio.run(go())
    assert error is None and not flows.finished(shown)
    assert [(s.row.label, s.status) for s in shown[:3]] == [
        ("1", "ok"),
        ("2", "pending"),
        ("2.1", "pending"),
    ]
    assert other == [] and other_error == "Policy doesn't allow specstack:trace to be performed."


def test_every_page_without_a_session_goes_to_login_and_fetches_answer_401() -> None:
    """Each route but the login form, the health check, the request-id lookup and the
    static files needs a session: pages send the browser to /login, what a page fetches
    (a diagram, the flow's event stream) answers 401. Nothing reaches the stack."""
    keystone = Keystone()
    filled = {
        "api": "compute",
        "collection": "servers",
        "item_id": "s1",
        "part": "volumes",
        "sub_id": "v1",
        "flow_id": "req-1",
        "name": "topology",
    }
    open_routes = {"/login", "/specstack/health", "/flows", "/static"}
    fetches = {"/diagrams/{name}.svg", "/flows/{flow_id}/events"}

    async def steps(browser: httpx.AsyncClient, dash: Dashboard) -> list[tuple[str, str, int]]:
        answers = []
        for route in dash.build().routes:
            path = getattr(route, "path", "")
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if path in open_routes or method == "HEAD":
                    continue
                resp = await browser.request(method, path.format(**filled))
                where = resp.headers.get("location", "")
                answers.append((f"{method} {path}", where, resp.status_code))
        return answers

    answers = run(keystone, steps)
    assert len(answers) == 19
    for name, where, status in answers:
        if name.split(" ", 1)[1] in fetches:
            assert (name, status) == (name, 401)
        else:
            assert (name, status, where) == (name, 303, "/login")
    assert keystone.seen == []
