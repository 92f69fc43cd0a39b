"""The web dashboard (the spec's client component with a port): Starlette routes and
Jinja2 templates, htmx (vendored under static/) for refreshing tables and the live flow.

It talks to the stack only through the public APIs, with the logged-in user's token
and the service catalog that token carries, as horizon does. What it lists comes from
the spec (`listings.py`); the boot it starts is the spec's sequence, its steps shown
as their trace events arrive (`flows.py`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from specstack_runtime.auth import password_auth
from specstack_runtime.dashboard import flows, identity
from specstack_runtime.dashboard.creating import Creator
from specstack_runtime.dashboard.forms import form_of
from specstack_runtime.dashboard.launch import Launcher
from specstack_runtime.dashboard.listings import Catalogue, Listing, Part
from specstack_runtime.dashboard.paths import fill, last_param
from specstack_runtime.dashboard.sessions import (
    COOKIE,
    Session,
    Sessions,
    logged_in,
    logged_in_fetch,
    to_login,
)
from specstack_runtime.http import error_message
from specstack_runtime.stackinfo import StackInfo

HERE = Path(__file__).parent
#: How often the live flow view asks the trace endpoint, and for how long at most.
POLL_S = 0.25
WATCH_LIMIT_S = 180.0
#: Table refresh while watching (htmx polling), in seconds.
REFRESH_S = 2


class Dashboard:
    def __init__(
        self,
        info: StackInfo,
        identity_url: str,
        openapi_dir: Path,
        *,
        component: str,
        secure_cookie: bool = False,
        report: Path | None = None,
    ) -> None:
        self.info = info
        self.identity_url = identity_url.rstrip("/")
        self.component = component
        self.title = str(info.components[component].get("title") or component)
        self.catalogue = Catalogue(info, openapi_dir)
        self.diagrams_dir = openapi_dir.parent / "diagrams"
        self.report = report
        self.sessions = Sessions()
        self.secure_cookie = secure_cookie
        self.http = httpx.AsyncClient(timeout=30.0)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["refresh_s"] = REFRESH_S
        self.launcher = Launcher(self)
        self.creator = Creator(self)

    def build(self) -> Starlette:
        routes = [
            Route("/", self.home),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/project", self.switch_project, methods=["POST"]),
            Route("/launch", self.launcher.form, methods=["GET"]),
            Route("/launch", self.launcher.submit, methods=["POST"]),
            Route("/flows", self.flow_lookup, methods=["GET"]),
            Route("/flows/{flow_id}", self.flow_page, methods=["GET"]),
            Route("/flows/{flow_id}/events", self.flow_events, methods=["GET"]),
            Route("/r/{api}/{collection}", self.table, methods=["GET"]),
            Route("/r/{api}/{collection}/create", self.creator.form, methods=["GET"]),
            Route("/r/{api}/{collection}/create", self.creator.submit, methods=["POST"]),
            Route("/r/{api}/{collection}/{item_id}", self.detail, methods=["GET"]),
            Route("/r/{api}/{collection}/{item_id}/action", self.action, methods=["POST"]),
            Route(
                "/r/{api}/{collection}/{item_id}/upload/{name}",
                self.creator.upload,
                methods=["POST"],
            ),
            Route("/r/{api}/{collection}/{item_id}/delete", self.delete, methods=["POST"]),
            Route("/r/{api}/{collection}/{item_id}/{part}/add", self.part_add, methods=["POST"]),
            Route(
                "/r/{api}/{collection}/{item_id}/{part}/{sub_id}/remove",
                self.part_remove,
                methods=["POST"],
            ),
            Route("/diagrams", self.diagrams, methods=["GET"]),
            Route("/diagrams/{name}.svg", self.diagram, methods=["GET"]),
            Route("/report", self.conformance_report, methods=["GET"]),
            Route("/specstack/health", self.health, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        app = Starlette(routes=routes)
        app.state.close = self.http.aclose  # the stack calls it when it stops
        return app

    # diagrams and the conformance report ------------------------------------
    def diagram_names(self) -> list[tuple[str, str]]:
        """(file name, title) of the drawn diagrams: the topology, then each sequence."""
        names = [("topology", "Deployment topology")]
        names += [(n, f"{n}: {s['title']}") for n, s in self.info.sequences.items()]
        return [(n, t) for n, t in names if (self.diagrams_dir / f"{n}.svg").is_file()]

    @logged_in
    async def diagrams(self, request: Request, _session: Session) -> Response:
        report = self.report is not None and self.report.is_file()
        return self.render(request, "diagrams.html", diagrams=self.diagram_names(), report=report)

    @logged_in_fetch
    async def diagram(self, request: Request, _session: Session) -> Response:
        name = request.path_params["name"]
        if name not in dict(self.diagram_names()):  # only the spec's own, by name
            return Response("no such diagram", 404)
        return FileResponse(self.diagrams_dir / f"{name}.svg", media_type="image/svg+xml")

    @logged_in
    async def conformance_report(self, request: Request, _session: Session) -> Response:
        if self.report is None or not self.report.is_file():
            return self.render(
                request,
                "error.html",
                404,
                message="No conformance report yet: run `specstack conform` with this data directory.",
            )
        return FileResponse(self.report, media_type="text/html")

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', 200, media_type="application/json")

    # sessions ---------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        session = self.session(request)
        base = {
            "title": self.title,
            "session": session,
            "nav": self.navigation(session) if session else [],
            "projects": session.projects if session else [],
        }
        return self.templates.TemplateResponse(
            request, name, {**base, **context}, status_code=status
        )

    def may(self, session: Session, rule: str | None) -> bool:
        """Whether the spec's rule allows the session's token on its own project's
        resources (what to offer; the API still decides each request), as horizon reads
        the services' policy files."""
        if not rule:
            return True
        auth = session.auth()
        target = {"project_id": auth.project_id, "user_id": auth.user_id}
        return self.info.policy.allows(rule, auth, target)

    def navigation(self, session: Session) -> list[tuple[str, list[Listing]]]:
        """The listings the token's catalog has a service for and its roles may read,
        grouped by API."""
        groups: dict[str, list[Listing]] = {}
        for listing in self.catalogue.listings:
            if session.endpoint(listing.catalog_type) is None:
                continue
            if not self.may(session, listing.policy):
                continue
            groups.setdefault(listing.title, []).append(listing)
        return list(groups.items())

    @logged_in
    async def home(self, request: Request, session: Session) -> Response:
        nav = self.navigation(session)
        first = next((x for _, group in nav for x in group if x.actions), None)
        target = first or (nav[0][1][0] if nav else None)
        return RedirectResponse(target.href if target else "/launch", status_code=303)

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", form={})

    async def login(self, request: Request) -> Response:
        form = await form_of(request)
        user, project = str(form.get("username", "")), str(form.get("project", ""))
        password = str(form.get("password", ""))
        shown = {"username": user, "project": project}
        if not user or not password or not project:
            return self.render(
                request,
                "login.html",
                400,
                form=shown,
                error="User name, password and project are all needed.",
            )
        try:
            token, body = await identity.issue(
                self.http, self.identity_url, password_auth(user, password, project)
            )
        except identity.LoginFailed as exc:
            status = exc.status if 400 <= exc.status < 500 else 502
            why = "Wrong user name, password or project" if status == 401 else "Cannot log in"
            return self.render(
                request, "login.html", status, form=shown, error=f"{why}: {exc.message}"
            )
        session = Session(token, body)
        session.projects = await self.projects(session)
        sid = self.sessions.add(session)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            sid,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookie,
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = self.sessions.drop(request.cookies.get(COOKIE))
        if session is not None:
            await identity.revoke(self.http, self.identity_url, session.token)
        response = to_login()
        response.delete_cookie(COOKIE, path="/")
        return response

    @logged_in
    async def switch_project(self, request: Request, session: Session) -> Response:
        project_id = str((await form_of(request)).get("project_id", ""))
        try:
            token, body = await identity.issue(
                self.http, self.identity_url, identity.token_auth(session.token, project_id)
            )
        except identity.LoginFailed as exc:
            return self.render(request, "error.html", 403, message=exc.message)
        old = session.token
        session.token, session.body = token, body
        await identity.revoke(self.http, self.identity_url, old)
        return RedirectResponse("/", status_code=303)

    async def projects(self, session: Session) -> list[dict[str, Any]]:
        return await identity.projects(self.http, self.identity_url, session.token)

    # calls to the APIs ------------------------------------------------------
    def url(self, session: Session, listing: Listing, path: str, **params: str) -> str:
        base = session.endpoint(listing.catalog_type) or ""
        root = base.split("/", 3)
        origin = "/".join(root[:3])  # scheme://host:port
        return origin + fill(path, session.project.get("id"), **params)

    async def call(
        self,
        session: Session,
        method: str,
        url: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.http.request(
            method,
            url,
            json=body,
            headers={"X-Auth-Token": session.token, **(headers or {})},
        )

    async def items(self, session: Session, listing: Listing) -> list[dict[str, Any]]:
        resp = await self.call(session, "GET", self.url(session, listing, listing.path))
        if resp.status_code != 200:
            raise ApiFailed(resp)
        found = resp.json().get(listing.collection) or []
        if listing.unwrap:
            found = [x.get(listing.unwrap) or {} for x in found]
        return [x for x in found if isinstance(x, dict)]

    # tables -----------------------------------------------------------------
    def listing_of(self, request: Request) -> Listing | None:
        p = request.path_params
        return self.catalogue.find(p["api"], p["collection"])

    @logged_in
    async def table(self, request: Request, session: Session) -> Response:
        listing = self.listing_of(request)
        if listing is None:
            return self.render(request, "error.html", 404, message="No such listing.")
        try:
            rows = await self.items(session, listing)
            error = None
        except ApiFailed as exc:
            rows, error = [], exc.message
        partial = request.headers.get("hx-request") == "true"
        return self.render(
            request,
            "rows.html" if partial else "table.html",
            listing=listing,
            rows=rows,
            error=error,
            id_key="id" if "id" in listing.columns else listing.columns[0],
            can_create=listing.create is not None and self.may(session, listing.create.policy),
        )

    @logged_in
    async def detail(self, request: Request, session: Session) -> Response:
        listing = self.listing_of(request)
        if listing is None or listing.show is None:
            return self.render(request, "error.html", 404, message="No such resource.")
        item_id = request.path_params["item_id"]
        url = self.url(session, listing, listing.show, **{last_param(listing.show): item_id})
        resp = await self.call(session, "GET", url)
        if resp.status_code != 200:
            return self.render(request, "error.html", resp.status_code, message=error_message(resp))
        body = resp.json()
        item = next((v for v in body.values() if isinstance(v, dict)), body)
        if request.headers.get("hx-request") == "true":
            return self.render(request, "fields.html", listing=listing, item=item, item_id=item_id)
        parts: list[tuple[Part, list[dict[str, Any]], str | None, dict[str, Any]]] = []
        for part in listing.parts:  # the item's own collections: attachments, interfaces
            got = await self.call(
                session,
                "GET",
                self.url(session, listing, part.path, **{last_param(listing.show): item_id}),
            )
            if got.status_code != 200:
                parts.append((part, [], f"{got.status_code}: {error_message(got)}", {}))
                continue
            rows = got.json().get(part.collection) or []
            if part.unwrap:
                rows = [x.get(part.unwrap) or {} for x in rows]
            options = {name: await self.choices(session, of) for name, of in part.fields}
            parts.append((part, [x for x in rows if isinstance(x, dict)], None, options))
        return self.render(
            request,
            "detail.html",
            listing=listing,
            item=item,
            item_id=item_id,
            parts=parts,
            can_delete=listing.delete is not None and self.may(session, listing.delete_policy),
        )

    @logged_in
    async def action(self, request: Request, session: Session) -> Response:
        listing = self.listing_of(request)
        key = str((await form_of(request)).get("action", ""))
        act = next((a for a in listing.actions if a.key == key), None) if listing else None
        if listing is None or listing.action is None or act is None:
            return self.render(request, "error.html", 404, message="No such action.")
        item_id = request.path_params["item_id"]
        url = self.url(session, listing, listing.action, **{last_param(listing.action): item_id})
        resp = await self.call(session, "POST", url, {act.key: act.body})
        result: dict[str, Any] = {"action": act.key, "status": resp.status_code}
        if resp.status_code >= 400:
            result["error"] = error_message(resp)
        elif resp.content:
            try:
                result["body"] = resp.json()
            except ValueError:
                result["text"] = resp.text
        return self.render(request, "result.html", result=result, listing=listing)

    async def choices(
        self, session: Session, collection: str, *, available: bool = True
    ) -> list[dict[str, Any]]:
        """The items a field may name: those of `collection`, only those free to use
        (status `available` where the items have a status) if `available`."""
        listing = next((x for x in self.catalogue.listings if x.collection == collection), None)
        if listing is None or session.endpoint(listing.catalog_type) is None:
            return []
        try:
            items = await self.items(session, listing)
        except ApiFailed:
            return []
        if available and any("status" in x for x in items):
            items = [x for x in items if x.get("status") == "available"]
        return items

    def part_of(self, request: Request) -> tuple[Listing, Part] | None:
        listing = self.listing_of(request)
        name = request.path_params["part"]
        part = next((p for p in listing.parts if p.name == name), None) if listing else None
        return (listing, part) if listing is not None and part is not None else None

    @logged_in
    async def part_add(self, request: Request, session: Session) -> Response:
        """POST on an item's collection (attach a volume to a server), from the form."""
        found = self.part_of(request)
        if found is None or found[1].envelope is None or found[0].show is None:
            return self.render(request, "error.html", 404, message="Nothing to add there.")
        listing, part = found
        form = await form_of(request)
        body = {name: form.get(name, "") for name, _ in part.fields}
        item_id = request.path_params["item_id"]
        show = listing.show or ""
        url = self.url(session, listing, part.path, **{last_param(show): item_id})
        resp = await self.call(session, "POST", url, {part.envelope: body})
        if resp.status_code >= 400:
            return self.render(request, "error.html", resp.status_code, message=error_message(resp))
        return RedirectResponse(f"{listing.href}/{item_id}", status_code=303)

    @logged_in
    async def part_remove(self, request: Request, session: Session) -> Response:
        """DELETE one of an item's collection (detach a volume)."""
        found = self.part_of(request)
        if found is None or found[1].remove is None or found[0].show is None:
            return self.render(request, "error.html", 404, message="Nothing to remove there.")
        listing, part = found
        item_id, sub_id = request.path_params["item_id"], request.path_params["sub_id"]
        assert part.remove is not None and listing.show is not None
        url = self.url(
            session,
            listing,
            part.remove,
            **{last_param(listing.show): item_id, last_param(part.remove): sub_id},
        )
        resp = await self.call(session, "DELETE", url)
        if resp.status_code >= 400:
            return self.render(request, "error.html", resp.status_code, message=error_message(resp))
        return RedirectResponse(f"{listing.href}/{item_id}", status_code=303)

    @logged_in
    async def delete(self, request: Request, session: Session) -> Response:
        listing = self.listing_of(request)
        if listing is None or listing.delete is None:
            return self.render(request, "error.html", 404, message="Nothing to delete.")
        item_id = request.path_params["item_id"]
        url = self.url(session, listing, listing.delete, **{last_param(listing.delete): item_id})
        resp = await self.call(session, "DELETE", url)
        if resp.status_code >= 400:
            return self.render(request, "error.html", resp.status_code, message=error_message(resp))
        return RedirectResponse(listing.href, status_code=303)

    # flows ------------------------------------------------------------------
    def trace_url(self, flow_id: str) -> str:
        root = self.identity_url.rsplit("/", 1)[0]
        return f"{root}/specstack/trace/{flow_id}"

    async def observed(self, session: Session, flow_id: str) -> tuple[int, dict[str, Any]]:
        resp = await self.http.get(self.trace_url(flow_id), headers={"X-Auth-Token": session.token})
        if resp.status_code != 200:
            return resp.status_code, {"error": error_message(resp)}
        body: dict[str, Any] = resp.json()
        return 200, body

    def watch_of(self, session: Session, flow_id: str) -> flows.Watch:
        watch = session.flows.get(flow_id)
        if watch is None:
            watch = flows.Watch(flow_id=flow_id, sequence="")
        return watch

    async def shown(
        self, session: Session, watch: flows.Watch
    ) -> tuple[list[flows.Shown], dict[str, Any], str | None]:
        status, body = await self.observed(session, watch.flow_id)
        if status != 200 and watch.local:
            # a flow this session started: in distributed mode its owner reaches the shared
            # trace file a moment after nova answered; show our own steps and ask again
            status, body = 200, {}
        events = list(watch.local) + list(body.get("events") or ())
        sequence = watch.sequence or next((str(e["sequence"]) for e in events), "")
        declared = self.info.sequences.get(sequence)
        if declared is None:
            return [], {}, body.get("error") or "No steps recorded for this request id."
        watch.sequence = sequence
        rows = flows.rows(declared, self.component)
        watch.extra = flows.extra(rows, events)  # observed, not declared
        clients = [n for n, c in self.info.components.items() if c["kind"] == "client"]
        watch.settled = flows.settled(events, time.time())
        shown = flows.show(rows, events, clients, watch.settled)
        return shown, declared, body.get("error") if status != 200 else None

    async def flow_lookup(self, request: Request) -> Response:
        flow_id = str(request.query_params.get("id", "")).strip()
        if not flow_id:
            return self.render(request, "error.html", 400, message="Give a request id.")
        return RedirectResponse(f"/flows/{flow_id}", status_code=303)

    @logged_in
    async def flow_page(self, request: Request, session: Session) -> Response:
        watch = self.watch_of(session, request.path_params["flow_id"])
        shown, declared, error = await self.shown(session, watch)
        return self.render(
            request,
            "flow.html",
            404 if not shown and error else 200,
            watch=watch,
            shown=shown,
            sequence=declared,
            error=error,
            live=bool(shown) and not flows.finished(shown, watch.settled),
            summary=flows.summary(shown, len(watch.extra), watch.settled) if shown else "",
        )

    @logged_in_fetch
    async def flow_events(self, request: Request, session: Session) -> Response:
        """Server-sent events: each row as it changes (`step-7`), then `done`."""
        watch = self.watch_of(session, request.path_params["flow_id"])
        row_template = self.templates.get_template("step.html")
        body_template = self.templates.get_template("flow_body.html")

        async def stream() -> AsyncIterator[str]:
            sent: dict[str, tuple[str, float | None, str | None, str]] = {}
            deadline = time.monotonic() + WATCH_LIMIT_S
            while True:
                shown, _declared, _error = await self.shown(session, watch)
                for s in shown:
                    if sent.get(s.row.label) != s.key():
                        sent[s.row.label] = s.key()
                        yield sse_event(s.row.anchor, row_template.render(s=s))
                if not shown or flows.finished(shown, watch.settled) or time.monotonic() > deadline:
                    # the whole block once more: a row update the browser dropped (two
                    # updates of one row in a burst) cannot outlive the flow's end
                    summary = flows.summary(shown, len(watch.extra), watch.settled)
                    final = dict(watch=watch, shown=shown, live=False, summary=summary)
                    yield sse_event("done", body_template.render(**final))
                    return
                await asyncio.sleep(POLL_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def new_flow(self, session: Session, sequence: str) -> flows.Watch:
        watch = flows.Watch(flow_id=f"req-{uuid.uuid4()}", sequence=sequence)
        session.flows[watch.flow_id] = watch
        return watch


def sse_event(event: str, html: str) -> str:
    """One server-sent event; a line of the data field each (the browser joins them)."""
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n"


class ApiFailed(Exception):
    def __init__(self, resp: httpx.Response) -> None:
        self.message = f"{resp.status_code}: {error_message(resp)}"
        super().__init__(self.message)
