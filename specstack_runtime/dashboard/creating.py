"""Create forms: one per listing whose collection takes a POST, its fields read from the
API document's request schema (so a resource the spec adds gets its form with no
dashboard code), the answer shown once (a key pair's private key is in no later answer).

A field is on the form when the form can give it: a string (a password input for
`format: password`), a number, a boolean, or one of an `enum`; a field named `xxx_id`,
`xxxId` or `xxxRef` offers the items of the `xxxs` listing. A collection whose request
requires anything else (an object, a list) has no form.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from specstack_runtime.dashboard.forms import form_of
from specstack_runtime.dashboard.paths import last_param
from specstack_runtime.dashboard.schemas import deref
from specstack_runtime.dashboard.sessions import Session, logged_in
from specstack_runtime.http import error_message

if TYPE_CHECKING:
    from specstack_runtime.dashboard.app import Dashboard
    from specstack_runtime.dashboard.listings import Listing

#: The largest file the dashboard passes on (the stack's own default data limit).
MAX_UPLOAD_BYTES = 1024 * 1024 * 1024
_CHUNK = 1024 * 1024
_NAMES_ONE = re.compile(r"([a-z][a-z_]*?)(?:_id|Id|Ref)$")
_KINDS = {"string": "text", "integer": "number", "number": "number", "boolean": "boolean"}


@dataclass(frozen=True)
class FormField:
    name: str
    kind: str  # text | password | number | boolean | choice
    required: bool
    description: str = ""
    options: tuple[str, ...] = ()  # an enum's values
    collection: str | None = None  # the listing whose items it names
    integer: bool = False
    max_length: int | None = None

    @property
    def label(self) -> str:
        spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", self.name).replace("_", " ")
        return spaced[:1].upper() + spaced[1:]


@dataclass(frozen=True)
class CreateForm:
    path: str  # the POST's path template
    envelope: str | None  # the body's one key ({"volume": {...}}), or None for a flat body
    fields: tuple[FormField, ...]
    policy: str | None = None  # the create operation's rule (who is offered the form)


def create_form(op: dict[str, Any] | None, schemas: dict[str, Any]) -> CreateForm | None:
    """The form of a create operation, or None when a person cannot fill its body in."""
    if op is None or not op.get("request_model"):
        return None
    body = deref(schemas.get(op["request_model"], {}), schemas)
    props = body.get("properties") or {}
    envelope, inner = None, body
    # the body's one key ({"volume": {...}}), other keys optional (cinder's scheduler hints)
    wrapped = list(body.get("required") or ()) if len(props) > 1 else list(props)
    if len(wrapped) == 1 and wrapped[0] in props:
        sub = deref(props[wrapped[0]], schemas)
        if sub.get("properties"):
            envelope, inner = wrapped[0], sub
    required = set(inner.get("required") or ())
    fields = []
    for name, raw in (inner.get("properties") or {}).items():
        field = _field(name, deref(raw, schemas), name in required)
        if field is None:
            if name in required:
                return None
            continue
        fields.append(field)
    if not fields:
        return None
    return CreateForm(op["path"], envelope, tuple(fields), op.get("policy"))


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and schema.get("anyOf"):
        kinds = [s.get("type") for s in schema["anyOf"] if isinstance(s, dict)]
        kind = next((k for k in kinds if k not in (None, "null")), None)
    return kind if isinstance(kind, str) else None


def _field(name: str, schema: dict[str, Any], required: bool) -> FormField | None:
    if schema.get("readOnly"):
        return None
    kind = _KINDS.get(_type(schema) or "")
    if kind is None:
        return None
    description = str(schema.get("description") or "")
    if schema.get("enum"):
        options = tuple(str(v) for v in schema["enum"] if v is not None)
        return FormField(name, "choice", required, description, options=options)
    if kind == "text" and schema.get("format") == "password":
        kind = "password"
    named = _NAMES_ONE.fullmatch(name) if kind == "text" else None
    return FormField(
        name,
        kind,
        required,
        description,
        collection=f"{named.group(1)}s" if named else None,
        integer=_type(schema) == "integer",
        max_length=schema.get("maxLength") if isinstance(schema.get("maxLength"), int) else None,
    )


def body_of(form: CreateForm, values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The request body the filled-in form asks for, and what is wrong with the form."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in form.fields:
        value = values.get(f.name, "").strip()
        if not value:
            if f.required:
                errors[f.name] = f"Give the {f.label.lower()}."
            continue
        if f.kind == "number":
            try:
                out[f.name] = int(value) if f.integer else float(value)
            except ValueError:
                errors[f.name] = "A whole number." if f.integer else "A number."
        elif f.kind == "boolean":
            out[f.name] = value == "true"
        else:
            out[f.name] = value
    body = {form.envelope: out} if form.envelope else out
    return body, errors


class Creator:
    """GET and POST of `/r/{api}/{collection}/create`, and an item's uploads."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash

    def _found(self, request: Request) -> Listing | None:
        listing = self.dash.listing_of(request)
        return listing if listing is not None and listing.create is not None else None

    def _launches(self, listing: Listing) -> bool:
        """Whether "Launch instance" makes this collection's items (and shows the flow)."""
        launched = self.dash.launcher.collection()
        return launched is not None and launched.href == listing.href

    async def _render(
        self,
        request: Request,
        session: Session,
        listing: Listing,
        values: dict[str, str],
        errors: dict[str, str],
        error: str | None,
        status: int = 200,
    ) -> Response:
        assert listing.create is not None
        options = {
            f.name: await self.dash.choices(session, f.collection, available=False)
            for f in listing.create.fields
            if f.collection
        }
        return self.dash.render(
            request,
            "create.html",
            status,
            listing=listing,
            form=listing.create,
            options=options,
            values=values,
            errors=errors,
            error=error,
        )

    def session(self, request: Request) -> Session | None:
        return self.dash.session(request)

    def _opened(self, request: Request) -> tuple[Listing, CreateForm] | Response:
        """The listing and form a create request is for, or the answer to give."""
        listing = self._found(request)
        if listing is None or listing.create is None:
            return self.dash.render(request, "error.html", 404, message="Nothing to create here.")
        return listing, listing.create

    @logged_in
    async def form(self, request: Request, session: Session) -> Response:
        opened = self._opened(request)
        if isinstance(opened, Response):
            return opened
        listing, form = opened
        if not self.dash.may(session, form.policy):
            message = f"Your roles may not create {listing.label} here (policy: {form.policy})."
            return self.dash.render(request, "error.html", 403, message=message)
        if self._launches(listing):
            return RedirectResponse("/launch", status_code=303)
        return await self._render(request, session, listing, {}, {}, None)

    @logged_in
    async def submit(self, request: Request, session: Session) -> Response:
        opened = self._opened(request)
        if isinstance(opened, Response):
            return opened
        listing, form = opened
        values = await form_of(request)
        body, errors = body_of(form, values)
        if errors:
            return await self._render(
                request, session, listing, values, errors, "The form is not complete.", 400
            )
        url = self.dash.url(session, listing, form.path)
        resp = await self.dash.call(session, "POST", url, body)
        if resp.status_code >= 400:  # the API's own words, on the form
            return await self._render(
                request, session, listing, values, {}, error_message(resp), resp.status_code
            )
        try:
            answer = resp.json()
        except ValueError:
            answer = {}
        item = next((v for v in answer.values() if isinstance(v, dict)), answer)
        return self.dash.render(
            request,
            "created.html",
            201,
            listing=listing,
            item=item if isinstance(item, dict) else {},
        )

    @logged_in
    async def upload(self, request: Request, session: Session) -> Response:
        """A file from the item's upload form, passed on as the PUT's raw body."""
        listing = self.dash.listing_of(request)
        name, item_id = request.path_params["name"], request.path_params["item_id"]
        found = next((u for u in listing.uploads if u.name == name), None) if listing else None
        if listing is None or found is None or listing.show is None:
            return self.dash.render(request, "error.html", 404, message="Nothing to upload there.")
        size = request.headers.get("content-length", "")
        if not size.isdigit():
            return self.dash.render(request, "error.html", 411, message="The upload has no length.")
        if int(size) > MAX_UPLOAD_BYTES:
            limit = MAX_UPLOAD_BYTES // 2**20
            return self.dash.render(request, "error.html", 413, message=f"More than {limit} MiB.")
        async with request.form(max_files=1, max_fields=1) as form:
            data = form.get("data")
            if not isinstance(data, UploadFile):
                return self.dash.render(request, "error.html", 400, message="Choose a file.")

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await data.read(_CHUNK):
                    yield chunk

            url = self.dash.url(session, listing, found.path, **{last_param(found.path): item_id})
            resp = await self.dash.http.put(
                url,
                content=chunks(),
                headers={
                    "X-Auth-Token": session.token,
                    "Content-Type": "application/octet-stream",
                },
            )
        if resp.status_code >= 400:
            return self.dash.render(
                request, "error.html", resp.status_code, message=error_message(resp)
            )
        return RedirectResponse(f"{listing.href}/{item_id}", status_code=303)
