""" "Launch instance": the form, its choices read from the APIs, and the boot it starts.

The dashboard carries out the client's steps of the sequence whose API request is
`createServer` (boot-vm's 1-3) as the spec declares them, each recorded for the live
view: the user's request (the form, checked), the token (keystone, `issueToken`, from
the session's token), and the API request (nova, `createServer`, as the openstack CLI
sends it). Every request carries the flow's id, so the stack's own steps join the flow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from specstack_runtime.bindings import bind
from specstack_runtime.dashboard import flows, identity
from specstack_runtime.dashboard.forms import form_of
from specstack_runtime.dashboard.listings import Listing
from specstack_runtime.dashboard.sessions import Session, logged_in
from specstack_runtime.http import error_message

if TYPE_CHECKING:
    from specstack_runtime.dashboard.app import Dashboard

#: The operation a launch asks for; the sequence it starts is the one whose client
#: step sends it.
OPERATION = "createServer"


@dataclass(frozen=True)
class Choice:
    """A field of the form chosen from a listing: the request key, its label, where from."""

    key: str
    label: str
    collection: str
    value: str  # the item's field the request carries
    required: bool


CHOICES = (
    Choice("image_id", "Image", "images", "id", True),
    Choice("flavor_id", "Flavor", "flavors", "id", True),
    Choice("network_id", "Network", "networks", "id", True),
    Choice("key_name", "Key pair", "keypairs", "name", False),
    Choice("volume_id", "Volume to attach", "volumes", "id", False),
)


def client_request(seq: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The body and headers the sequence's client step sends for `request` (its `with:`)."""
    steps = [it for st in seq["steps"] for it in (st["main"], *st["then"])]
    spec = next(it for it in steps if it.get("operation") == OPERATION)
    bindings = spec.get("bindings") or {}
    return dict(bind({k: bindings[k] for k in ("body", "headers") if k in bindings},
                     {"request": request}))  # fmt: skip


class Launcher:
    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash

    def sequence(self) -> dict[str, Any] | None:
        """The declared sequence whose client step sends `createServer`."""
        kinds = {n: c["kind"] for n, c in self.dash.info.components.items()}
        for seq in self.dash.info.sequences.values():
            rows = flows.client_rows(flows.rows(seq, self.dash.component), kinds)
            if any(r.name == OPERATION for r in rows):
                return seq
        return None

    def collection(self) -> Listing | None:
        """The listing of the collection `createServer` adds to."""
        for api in self.dash.info.apis.values():
            for op in api["operations"]:
                if op["operation_id"] != OPERATION:
                    continue
                for x in self.dash.catalogue.listings:
                    if x.api == api["name"] and x.item_path == op["path"]:
                        return x
        return None

    def session(self, request: Request) -> Session | None:
        return self.dash.session(request)

    async def choices(self, session: Session) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for choice in CHOICES:
            listing = next(
                (x for x in self.dash.catalogue.listings if x.collection == choice.collection),
                None,
            )
            items: list[dict[str, Any]] = []
            if listing is not None and session.endpoint(listing.catalog_type):
                try:
                    items = await self.dash.items(session, listing)
                except Exception:  # a service that refuses: the field offers nothing
                    items = []
            if choice.key == "volume_id":
                items = [v for v in items if v.get("status") == "available"]
            out[choice.key] = items
        return out

    @logged_in
    async def form(self, request: Request, session: Session) -> Response:
        return await self._render(request, session, {}, {}, None)

    async def _render(
        self,
        request: Request,
        session: Session,
        values: dict[str, str],
        errors: dict[str, str],
        error: str | None,
        status: int = 200,
    ) -> Response:
        return self.dash.render(
            request,
            "launch.html",
            status,
            choices=CHOICES,
            options=await self.choices(session),
            values=values,
            errors=errors,
            error=error,
        )

    @logged_in
    async def submit(self, request: Request, session: Session) -> Response:
        seq = self.sequence()
        if seq is None:
            return self.dash.render(
                request, "error.html", 404, message=f"No sequence sends {OPERATION}."
            )
        form = await form_of(request)
        values = {k: str(form.get(k, "")).strip() for k in ("name", *(c.key for c in CHOICES))}
        kinds = {n: c["kind"] for n, c in self.dash.info.components.items()}
        steps = flows.client_rows(flows.rows(seq, self.dash.component), kinds)
        watch = self.dash.new_flow(session, seq["name"])

        # the user's request: everything the API request needs
        started = time.time()
        errors = {"name": "Give the instance a name."} if not values["name"] else {}
        errors.update(
            {
                c.key: f"Choose a {c.label.lower()}."
                for c in CHOICES
                if c.required and not values[c.key]
            }
        )
        if errors:
            session.flows.pop(watch.flow_id, None)
            return await self._render(
                request, session, values, errors, "The form is not complete.", 400
            )
        watch.record(_source(steps[0], self.dash.component), started)
        flow_headers = {
            "X-OpenStack-Request-ID": watch.flow_id,
            "X-Specstack-Sequence": seq["name"],
        }

        # the token: a new one from the session's, for this request
        auth_row = next((r for r in steps if r.via == "http" and r.name != OPERATION), None)
        token = session.token
        if auth_row is not None:
            started = time.time()
            try:
                token, _body = await identity.issue(
                    self.dash.http,
                    self.dash.identity_url,
                    identity.token_auth(session.token, str(session.project.get("id"))),
                    {**flow_headers, "X-Specstack-Step": auth_row.label},
                )
            except identity.LoginFailed as exc:
                watch.record(_source(auth_row, self.dash.component), started, "error", exc.message)
                return await self._render(request, session, values, {}, exc.message, exc.status)
            watch.record(_source(auth_row, self.dash.component), started)

        # the API request, as the openstack CLI sends it
        api_row = next(r for r in steps if r.name == OPERATION)
        started = time.time()
        listing = self.collection()
        if listing is None:
            return self.dash.render(
                request, "error.html", 404, message=f"No listing has {OPERATION}."
            )
        sent = client_request(seq, {k: v or None for k, v in values.items()})
        resp = await self.dash.http.post(
            self.dash.url(session, listing, listing.item_path),
            json=sent.get("body"),
            headers={
                "X-Auth-Token": token,
                "X-OpenStack-Request-ID": watch.flow_id,
                **(sent.get("headers") or {}),
            },
        )
        if resp.status_code >= 400:
            message = error_message(resp)
            watch.record(_source(api_row, self.dash.component), started, "error", message)
            return await self._render(request, session, values, {}, message, resp.status_code)
        watch.record(_source(api_row, self.dash.component), started)
        watch.server_id = str((resp.json().get("server") or {}).get("id") or "") or None
        return RedirectResponse(f"/flows/{watch.flow_id}", status_code=303)


def _source(row: flows.Row, dashboard: str) -> flows.Row:
    """The row as this dashboard carries it out (the spec names the client it stands for)."""
    if row.via == "user":
        return flows.Row(row.label, row.title, row.source, dashboard, row.via, row.name, row.main)
    return flows.Row(row.label, row.title, dashboard, row.target, row.via, row.name, row.main)
