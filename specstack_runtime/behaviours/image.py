"""Image behaviours (glance v2 semantics): image records and their data.

Records live in the image component's `images` table. The data lives in the
object store: container `glance` of the account of the image service's own
project (`AUTH_<service project id>`), one object per image named by its id,
written and read with the image service's own token through
`rt.clients.call(<object-store API>, ...)`.

Visibility (as this stack defines it): public, community and shared images are
visible to every caller; private ones to their owner and to admins. Only the
owner or an admin may change, upload to or delete an image; making an image
public needs the admin role (glance's publicize_image rule).

`image.show_image` leaves the shown image in `call.vars["image"]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import operator
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)
from specstack_runtime.http import error_message
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store

Doc = dict[str, Any]

TABLE = "images"
CONTAINER = "glance"
DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
DEFAULT_VISIBILITY = "shared"
READ_ONLY = frozenset(
    {
        "id",
        "status",
        "checksum",
        "size",
        "virtual_size",
        "os_hash_algo",
        "os_hash_value",
        "created_at",
        "updated_at",
        "self",
        "file",
        "schema",
        "direct_url",
    }
)
RESERVED = frozenset({"location", "locations", "deleted", "deleted_at", "stores"})
MUTABLE = (
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "container_format",
    "disk_format",
    "min_disk",
    "min_ram",
    "tags",
    "owner",
)
SORT_KEYS = frozenset(
    {
        "name",
        "status",
        "container_format",
        "disk_format",
        "size",
        "id",
        "created_at",
        "updated_at",
        "visibility",
        "owner",
        "min_disk",
        "min_ram",
        "virtual_size",
        "protected",
        "os_hidden",
    }
)
LIST_LIMIT_DEFAULT = 25
LIST_LIMIT_MAX = 1000
PROPERTY_KEY_MAX = 255
PROPERTY_VALUE_MAX = 65535
TAG_MAX = 255
HASH_ALGO = "sha512"
THREAD_HASH_BYTES = 1 << 20  # hash larger bodies in a worker thread


class Gone(ApiError):
    status = 410
    title = "Gone"


class UnsupportedMediaType(ApiError):
    status = 415
    title = "Unsupported Media Type"


class RangeNotSatisfiable(ApiError):
    status = 416
    title = "Requested Range Not Satisfiable"


# -- helpers -------------------------------------------------------------------------


def _store(rt: ServiceRuntime) -> Store:
    return rt.require_store()


def _api(rt: ServiceRuntime) -> str:
    comp = rt.info.components.get(rt.component) or {}
    return str(comp.get("api") or rt.info.api_of_type("image"))


def _utf8(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"Invalid value for {what}: not valid UTF-8.") from None
    return value


def _image_id(raw: Any) -> str | None:
    """The canonical form of an image id, or None if it is not a UUID."""
    if not isinstance(raw, str):
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def _is_owner(auth: AuthContext, image: Doc) -> bool:
    return image.get("owner") is not None and image.get("owner") == auth.project_id


def _visible(auth: AuthContext, image: Doc) -> bool:
    return auth.is_admin or image.get("visibility") != "private" or _is_owner(auth, image)


def _can_modify(auth: AuthContext, image: Doc) -> bool:
    return auth.is_admin or _is_owner(auth, image)


def render(image: Doc) -> Doc:
    """The image as glance shows it: every base property, then custom ones."""
    iid = image["id"]
    out: Doc = {k: v for k, v in (image.get("properties") or {}).items()}
    out.update(
        {
            "id": iid,
            "name": image.get("name"),
            "status": image["status"],
            "visibility": image["visibility"],
            "protected": bool(image.get("protected", False)),
            "os_hidden": bool(image.get("os_hidden", False)),
            "checksum": image.get("checksum"),
            "os_hash_algo": image.get("os_hash_algo"),
            "os_hash_value": image.get("os_hash_value"),
            "owner": image.get("owner"),
            "size": image.get("size"),
            "virtual_size": image.get("virtual_size"),
            "container_format": image.get("container_format"),
            "disk_format": image.get("disk_format"),
            "min_disk": int(image.get("min_disk") or 0),
            "min_ram": int(image.get("min_ram") or 0),
            "tags": list(image.get("tags") or []),
            "created_at": image["created_at"],
            "updated_at": image["updated_at"],
            "self": f"/v2/images/{iid}",
            "file": f"/v2/images/{iid}/file",
            "schema": "/v2/schemas/image",
        }
    )
    loc = image.get("location")
    if image["status"] == "active" and isinstance(loc, dict):
        out["direct_url"] = f"swift://{loc['account']}/{loc['container']}/{loc['object']}"
    return out


async def _find(call: Call) -> tuple[AuthContext, Doc]:
    """The caller and the image of the path, 404 unless it exists and the caller sees it."""
    auth = call.require_auth()
    raw = call.path_params.get("image_id", "")
    iid = _image_id(raw)
    image = await _store(call.rt).get(TABLE, iid) if iid else None
    if image is None or not _visible(auth, image):
        raise NotFound(f"No image found with ID {raw}")
    return auth, image


async def _modifiable(call: Call, action: str) -> tuple[AuthContext, Doc]:
    auth, image = await _find(call)
    if not _can_modify(auth, image):
        raise Forbidden(f"You are not permitted to {action} image {image['id']}.")
    return auth, image


# -- property validation -------------------------------------------------------------


def _v_name(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise BadRequest("Invalid value for name: expected a string of at most 255 characters.")
    return _utf8(value, "name")


def _v_visibility(value: Any) -> Any:
    if value not in VISIBILITIES:
        raise BadRequest(
            f"Invalid visibility value: {value!r}; expected one of {', '.join(VISIBILITIES)}."
        )
    return value


def _v_bool(what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, bool):
            raise BadRequest(f"Invalid value for {what}: expected true or false.")
        return value

    return check


def _v_size(what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**53:
            raise BadRequest(f"Invalid value for {what}: expected a non-negative integer.")
        return value

    return check


def _v_format(what: str, allowed: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None and value not in allowed:
            raise BadRequest(
                f"Invalid value {value!r} for {what}: expected one of {', '.join(allowed)}."
            )
        return value

    return check


def _v_tags(value: Any) -> Any:
    if not isinstance(value, list):
        raise BadRequest("Invalid value for tags: expected a list of strings.")
    return list(dict.fromkeys(_v_tag(t) for t in value))


def _v_tag(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > TAG_MAX:
        raise BadRequest(
            f"Invalid tag: expected a non-empty string of at most {TAG_MAX} characters."
        )
    return _utf8(value, "tags")


def _v_owner(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise BadRequest("Invalid value for owner: expected a project id.")
    return _utf8(value, "owner")


VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "name": _v_name,
    "visibility": _v_visibility,
    "protected": _v_bool("protected"),
    "os_hidden": _v_bool("os_hidden"),
    "min_disk": _v_size("min_disk"),
    "min_ram": _v_size("min_ram"),
    "container_format": _v_format("container_format", CONTAINER_FORMATS),
    "disk_format": _v_format("disk_format", DISK_FORMATS),
    "tags": _v_tags,
    "owner": _v_owner,
}


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > PROPERTY_KEY_MAX:
        raise BadRequest(f"Invalid property name: expected 1 to {PROPERTY_KEY_MAX} characters.")
    if key in READ_ONLY:
        raise Forbidden(f"Attribute '{key}' is read-only.")
    if key in RESERVED:
        raise Forbidden(f"Attribute '{key}' is reserved.")
    return _utf8(key, "property name")


def _custom_value(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > PROPERTY_VALUE_MAX:
        raise BadRequest(
            f"Invalid value for property {key}: expected a string of at most {PROPERTY_VALUE_MAX} characters."
        )
    return _utf8(value, key)


def _check_base(auth: AuthContext, key: str, value: Any) -> Any:
    value = VALIDATORS[key](value)
    if key == "visibility" and value == "public" and not auth.is_admin:
        raise Forbidden("You are not authorized to complete publicize_image action.")
    if key == "owner" and not auth.is_admin:
        raise Forbidden("Only an administrator may set the owner of an image.")
    return value


# -- versions ------------------------------------------------------------------------


@behaviour("image.get_image_versions", needs=("image",))
async def get_image_versions(call: Call) -> Reply:
    rt = call.rt
    version = str(rt.info.apis[_api(rt)].get("version") or "2.0")
    major, _, minor = version.partition(".")
    href = rt.info.endpoint(_api(rt), rt.config) + f"/v{major}/"
    try:
        top = int(minor or 0)
    except ValueError:
        top = 0
    versions = [
        {
            "id": f"v{major}.{m}",
            "status": "CURRENT" if m == top else "SUPPORTED",
            "links": [{"rel": "self", "href": href}],
        }
        for m in range(top, -1, -1)
    ]
    return Reply(300, {"versions": versions})


# -- records -------------------------------------------------------------------------


@behaviour("image.create_image", needs=("image",))
async def create_image(call: Call) -> Reply:
    auth = call.require_auth()
    body = call.body
    if not isinstance(body, dict):
        raise BadRequest("The image to create must be a JSON object.")
    doc: Doc = {
        "name": None,
        "status": "queued",
        "visibility": DEFAULT_VISIBILITY,
        "protected": False,
        "os_hidden": False,
        "checksum": None,
        "os_hash_algo": None,
        "os_hash_value": None,
        "owner": auth.project_id,
        "size": None,
        "virtual_size": None,
        "container_format": None,
        "disk_format": None,
        "min_disk": 0,
        "min_ram": 0,
        "tags": [],
        "properties": {},
        "location": None,
    }
    image_id: str | None = None
    for key, value in body.items():
        if key == "id":
            image_id = _image_id(value)
            if image_id is None:
                raise BadRequest(f"Invalid image id {value!r}: expected a UUID.")
            continue
        key = _check_key(key)
        if key in VALIDATORS:
            doc[key] = _check_base(auth, key, value)
        else:
            doc["properties"][key] = _custom_value(key, value)
    doc["id"] = image_id or str(uuid.uuid4())
    store = _store(call.rt)
    if image_id is not None and await store.get(TABLE, image_id) is not None:
        raise Conflict(f"Image with identifier {image_id} already exists!")
    try:
        created = await store.create(TABLE, doc)
    except Conflict:
        raise Conflict(f"Image with identifier {doc['id']} already exists!") from None
    location = call.rt.info.endpoint(_api(call.rt), call.rt.config) + f"/v2/images/{created['id']}"
    return Reply(201, render(created), headers={"Location": location})


@behaviour("image.show_image")
async def show_image(call: Call) -> Reply:
    _, image = await _find(call)
    shown = render(image)
    call.vars["image"] = shown
    return Reply(200, shown)


def _in_values(raw: str, what: str) -> list[str]:
    """A filter value: "a" or glance's "in:a,b,\"c,d\"" form."""
    if not raw.startswith("in:"):
        return [_utf8(raw, what)]
    try:
        values = next(csv.reader([raw[3:]], skipinitialspace=True), [])
    except csv.Error:
        raise BadRequest(f"Invalid 'in:' filter for {what}: {raw!r}.") from None
    return [_utf8(v, what) for v in values]


def _q_int(call: Call, name: str) -> int | None:
    raw = call.q(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Invalid value {raw!r} for {name}: expected an integer.") from None
    if value < 0:
        raise BadRequest(f"Invalid value for {name}: must not be negative.")
    return value


def _q_bool(call: Call, name: str) -> bool | None:
    raw = call.q(name)
    if raw is None:
        return None
    low = raw.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"Invalid value {raw!r} for {name}: expected true or false.")


_TIME_OPS: dict[str, Callable[[datetime, datetime], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _when(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time_filter(call: Call, name: str) -> Callable[[Doc], bool] | None:
    raw = call.q(name)
    if raw is None:
        return None
    op, sep, stamp = raw.partition(":")
    if not sep:
        op, stamp = "eq", raw
    if op not in _TIME_OPS:
        raise BadRequest(
            f"Invalid operator {op!r} for {name}: expected one of {', '.join(_TIME_OPS)}."
        )
    try:
        wanted = _when(stamp)
    except ValueError:
        raise BadRequest(f"Invalid timestamp {stamp!r} for {name}.") from None
    compare = _TIME_OPS[op]
    return lambda image: compare(_when(image[name]), wanted)


def _sort_spec(call: Call) -> list[tuple[str, bool]]:
    """[(key, descending)] from sort=... or sort_key/sort_dir (default created_at desc)."""
    sort = call.q("sort")
    keys = call.query.get("sort_key") or []
    dirs = call.query.get("sort_dir") or []
    if sort is not None and (keys or dirs):
        raise BadRequest("The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'.")
    spec: list[tuple[str, bool]] = []
    if sort is not None:
        for part in sort.split(","):
            key, _, direction = part.strip().partition(":")
            if direction not in ("", "asc", "desc"):
                raise BadRequest(f"Invalid sort direction {direction!r}: expected asc or desc.")
            spec.append((key, (direction or "desc") == "desc"))
    else:
        if len(dirs) > max(len(keys), 1):
            raise BadRequest("There are more sort_dir values than sort_key values.")
        for d in dirs:
            if d not in ("asc", "desc"):
                raise BadRequest(f"Invalid sort direction {d!r}: expected asc or desc.")
        keys = keys or ["created_at"]
        for i, key in enumerate(keys):
            direction = dirs[i] if i < len(dirs) else (dirs[0] if len(dirs) == 1 else "desc")
            spec.append((key, direction == "desc"))
    for key, _ in spec:
        if key not in SORT_KEYS:
            raise BadRequest(
                f"Invalid sort key {key!r}: expected one of {', '.join(sorted(SORT_KEYS))}."
            )
    first_desc = spec[0][1]
    for tie in ("created_at", "id"):
        if tie not in [k for k, _ in spec]:
            spec.append((tie, first_desc))
    return spec


def _sorted(images: list[Doc], spec: list[tuple[str, bool]]) -> list[Doc]:
    out = list(images)
    for key, desc in reversed(spec):
        present = [i for i in out if i.get(key) is not None]
        missing = [i for i in out if i.get(key) is None]
        present.sort(key=operator.itemgetter(key), reverse=desc)
        out = missing + present if desc else present + missing
    return out


def _one_of(key: str, values: list[str]) -> Callable[[Doc], bool]:
    return lambda image: image.get(key) in values


def _tagged(tag: str) -> Callable[[Doc], bool]:
    return lambda image: tag in (image.get("tags") or [])


@behaviour("image.list_images")
async def list_images(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call.rt)
    where: Doc = {}
    filters: list[Callable[[Doc], bool]] = []
    for key in ("id", "name", "status", "container_format", "disk_format"):
        raw = call.q(key)
        if raw is None:
            continue
        values = _in_values(raw, key)
        if key == "id":
            values = [v for v in (_image_id(v) for v in values) if v is not None]
        if key in ("name", "status"):
            where[key] = values
        else:
            filters.append(_one_of(key, values))
    if (owner := call.q("owner")) is not None:
        where["owner"] = _utf8(owner, "owner")
    visibility = call.q("visibility")
    if visibility is not None and visibility not in (*VISIBILITIES, "all"):
        raise BadRequest(f"Invalid visibility value: {visibility!r}.")
    if visibility in VISIBILITIES:
        where["visibility"] = visibility
    member_status = call.q("member_status")
    if member_status is not None and member_status not in (
        "accepted",
        "pending",
        "rejected",
        "all",
    ):
        raise BadRequest(
            f"Invalid member_status {member_status!r}: expected accepted, pending, rejected or all."
        )
    if (protected := _q_bool(call, "protected")) is not None:
        filters.append(lambda i: bool(i.get("protected")) == protected)
    hidden = bool(_q_bool(call, "os_hidden"))
    filters.append(lambda i: bool(i.get("os_hidden")) == hidden)
    for tag in call.query.get("tag") or []:
        filters.append(_tagged(tag))
    size_min, size_max = _q_int(call, "size_min"), _q_int(call, "size_max")
    if size_min is not None:
        filters.append(lambda i: i.get("size") is not None and i["size"] >= size_min)
    if size_max is not None:
        filters.append(lambda i: i.get("size") is not None and i["size"] <= size_max)
    for stamp in ("created_at", "updated_at"):
        if (check := _time_filter(call, stamp)) is not None:
            filters.append(check)
    limit = _q_int(call, "limit")
    limit = LIST_LIMIT_DEFAULT if limit is None else min(limit, LIST_LIMIT_MAX)
    spec = _sort_spec(call)
    marker = call.q("marker")

    images = [i for i in await store.list(TABLE, where) if _visible(auth, i)]
    if visibility is None and not auth.is_admin:
        # Community images of others are listed only when asked for.
        images = [i for i in images if i.get("visibility") != "community" or _is_owner(auth, i)]
    images = _sorted([i for i in images if all(f(i) for f in filters)], spec)
    if marker is not None:
        ids = [i["id"] for i in images]
        if marker not in ids:
            raise BadRequest(f"Invalid marker. Image {marker} could not be found.")
        images = images[ids.index(marker) + 1 :]
    page = images[:limit]
    body: Doc = {
        "images": [render(i) for i in page],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }
    if len(images) > len(page) and page:
        query = [(k, v) for k, vs in call.query.items() if k not in ("marker", "limit") for v in vs]
        query += [("limit", str(limit)), ("marker", page[-1]["id"])]
        body["next"] = "/v2/images?" + urlencode(query)
    return Reply(200, body)


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise BadRequest(f"Invalid JSON pointer for this resource: {path!r}.")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _patch_tags(tags: list[str], op: str, index: str, value: Any) -> list[str]:
    tags = list(tags)
    if op == "add":
        tag = _v_tag(value)
        if index == "-":
            tags.append(tag)
        else:
            pos = _tag_index(index, len(tags) + 1)
            tags.insert(pos, tag)
        return list(dict.fromkeys(tags))
    pos = _tag_index(index, len(tags))
    if op == "remove":
        del tags[pos]
    else:
        tags[pos] = _v_tag(value)
    return list(dict.fromkeys(tags))


def _tag_index(raw: str, bound: int) -> int:
    if not raw.isdigit() or int(raw) >= bound:
        raise Conflict(f"Tag index {raw!r} is out of range.")
    return int(raw)


@behaviour("image.update_image")
async def update_image(call: Call) -> Reply:
    ops = call.body
    if ops is None and call.raw_body:
        try:
            ops = json.loads(call.raw_body)
        except ValueError:
            raise BadRequest("The JSON patch is not valid JSON.") from None
    if not isinstance(ops, list):
        raise BadRequest("The JSON patch must be a list of operations.")
    auth, image = await _modifiable(call, "modify")
    changes: Doc = {}
    props: Doc = dict(image.get("properties") or {})
    current: Doc = {k: image.get(k) for k in MUTABLE}
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("add", "remove", "replace"):
            raise BadRequest("Each patch operation needs an op of add, remove or replace.")
        kind = op["op"]
        parts = _pointer(op.get("path"))
        if kind != "remove" and "value" not in op:
            raise BadRequest(f"The {kind} operation on {op['path']} needs a value.")
        value = op.get("value")
        key = _check_key(parts[0])
        if len(parts) == 2 and key == "tags":
            current["tags"] = changes["tags"] = _patch_tags(
                current["tags"] or [], kind, parts[1], value
            )
            continue
        if len(parts) != 1:
            raise BadRequest(f"Invalid JSON pointer for this resource: {op['path']!r}.")
        if key in VALIDATORS:
            if kind == "remove":
                raise Forbidden(f"Attribute '{key}' cannot be removed.")
            if key in ("container_format", "disk_format") and image["status"] != "queued":
                raise Forbidden(f"Attribute {key} can be only replaced for a queued image.")
            current[key] = changes[key] = _check_base(auth, key, value)
        elif kind == "add":
            props[key] = _custom_value(key, value)
        elif key not in props:
            raise Conflict(f"Property {key} does not exist.")
        elif kind == "replace":
            props[key] = _custom_value(key, value)
        else:
            del props[key]
    if props != (image.get("properties") or {}):
        changes["properties"] = props
    expect = {"status": "queued"} if {"container_format", "disk_format"} & set(changes) else None
    updated = (
        await _store(call.rt).update(TABLE, image["id"], changes, expect=expect)
        if changes
        else image
    )
    if updated is None:
        if await _store(call.rt).get(TABLE, image["id"]) is None:
            raise NotFound(f"No image found with ID {image['id']}")
        raise Conflict("The image's status changed while it was being updated; try again.")
    return Reply(200, render(updated))


# -- data ----------------------------------------------------------------------------


async def _object_store(call: Call) -> tuple[str, str, str]:
    """(object-store API, account of this service's project, this service's token)."""
    rt = call.rt
    if rt.auth is None:
        raise ServiceUnavailable(
            "The image service has no identity client to reach the object store."
        )
    auth = await rt.auth.service_auth()
    if not auth.project_id:
        raise ServiceUnavailable("The image service's own token has no project.")
    return rt.info.api_of_type("object-store"), f"AUTH_{auth.project_id}", await rt.service_token()


async def _swift(
    call: Call, operation: str, params: dict[str, str], **kwargs: Any
) -> httpx.Response:
    api = call.rt.info.api_of_type("object-store")
    try:
        return await call.rt.clients.call(
            api, operation, params, context=call.flow_context(), **kwargs
        )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"The object store is unreachable: {exc}") from exc


def _store_failed(resp: httpx.Response, what: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The object store could not {what} ({resp.status_code}: {error_message(resp)})."
    )


async def _ensure_container(call: Call, account: str, token: str) -> None:
    resp = await _swift(
        call, "createContainer", {"account": account, "container": CONTAINER}, token=token
    )
    if resp.status_code not in (201, 202, 204):
        raise _store_failed(resp, f"create container {CONTAINER}")
    call.rt.local.setdefault("image.containers", set()).add(account)


async def _put_data(call: Call, image_id: str, data: bytes, md5: str) -> Doc:
    _, account, token = await _object_store(call)
    if account not in call.rt.local.get("image.containers", ()):
        await _ensure_container(call, account, token)
    params = {"account": account, "container": CONTAINER, "object": image_id}
    headers = {"ETag": md5, "Content-Type": "application/octet-stream"}
    resp = await _swift(call, "putObject", params, body=data, headers=headers, token=token)
    if resp.status_code == 404:  # the container went away meanwhile
        await _ensure_container(call, account, token)
        resp = await _swift(call, "putObject", params, body=data, headers=headers, token=token)
    if resp.status_code != 201:
        raise _store_failed(resp, "store the image data")
    return {"account": account, "container": CONTAINER, "object": image_id}


async def _delete_data(call: Call, location: Doc) -> None:
    _, _, token = await _object_store(call)
    params = {k: str(location[k]) for k in ("account", "container", "object")}
    resp = await _swift(call, "deleteObject", params, token=token)
    if resp.status_code not in (204, 404):
        raise _store_failed(resp, "delete the image data")


def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.sha512(data).hexdigest()


@behaviour("image.upload_image_data", needs=("object-store",))
async def upload_image_data(call: Call) -> Reply:
    _, image = await _modifiable(call, "upload data to")
    content_type = call.header("Content-Type")
    if content_type and content_type.split(";")[0].strip().lower() != "application/octet-stream":
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported: use application/octet-stream."
        )
    if image["status"] != "queued":
        raise Conflict(f"Image status transition from {image['status']} to saving is not allowed")
    if image.get("disk_format") is None or image.get("container_format") is None:
        raise BadRequest(
            "Properties disk_format, container_format must be set prior to saving data."
        )
    store = _store(call.rt)
    iid = image["id"]
    if await store.update(TABLE, iid, {"status": "saving"}, expect={"status": "queued"}) is None:
        raise Conflict(
            f"Image {iid} is not queued any more: its data is being or has been uploaded."
        )
    data = bytes(call.raw_body or b"")
    try:
        if len(data) > THREAD_HASH_BYTES:
            md5, sha = await asyncio.to_thread(_digests, data)
        else:
            md5, sha = _digests(data)
        location = await _put_data(call, iid, data, md5)
    except BaseException:
        await store.update(TABLE, iid, {"status": "queued"}, expect={"status": "saving"})
        raise
    done = await store.update(
        TABLE,
        iid,
        {
            "status": "active",
            "size": len(data),
            "checksum": md5,
            "os_hash_algo": HASH_ALGO,
            "os_hash_value": sha,
            "location": location,
        },
        expect={"status": "saving"},
    )
    if done is None:
        with contextlib.suppress(ServiceUnavailable):  # else the object stays behind
            await _delete_data(call, location)
        raise Gone(
            f"Image {iid} could not be found after upload. The image may have been deleted during the upload."
        )
    return Reply(204)


def _byte_range(spec: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) of a single "bytes=" range; None when there is none to honour."""
    if not spec or not spec.strip().lower().startswith("bytes="):
        return None
    ranges = spec.strip()[6:].split(",")
    if len(ranges) != 1:
        return None
    first_s, sep, last_s = ranges[0].strip().partition("-")
    if not sep:
        return None
    try:
        if first_s == "":
            suffix = int(last_s)
            if suffix <= 0:
                raise RangeNotSatisfiable(f"The range {spec!r} cannot be satisfied.")
            return max(size - suffix, 0), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first > last or first >= size:
        raise RangeNotSatisfiable(f"The range {spec!r} cannot be satisfied for {size} bytes.")
    return first, min(last, size - 1)


@behaviour("image.download_image_data", needs=("object-store",))
async def download_image_data(call: Call) -> Reply:
    auth, image = await _find(call)
    if image["status"] == "deactivated" and not auth.is_admin:
        raise Forbidden(
            "The requested image has been deactivated. Image data download is forbidden."
        )
    location = image.get("location")
    if image["status"] != "active" or not isinstance(location, dict):
        return Reply(204)
    _, _, token = await _object_store(call)
    params = {k: str(location[k]) for k in ("account", "container", "object")}
    resp = await _swift(call, "getObject", params, token=token)
    if resp.status_code == 404:
        raise NotFound(f"Image data for {image['id']} could not be found in the store.")
    if resp.status_code != 200:
        raise _store_failed(resp, "read the image data")
    data = resp.content
    headers = {"Content-MD5": str(image.get("checksum") or "")}
    if data and (rng := _byte_range(call.header("Range"), len(data))) is not None:
        first, last = rng
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        return Reply(206, data[first : last + 1], headers, content_type="application/octet-stream")
    return Reply(200, data, headers, content_type="application/octet-stream")


@behaviour("image.delete_image", needs=("object-store",))
async def delete_image(call: Call) -> Reply:
    _, image = await _modifiable(call, "delete")
    if image.get("protected"):
        raise Forbidden(f"Image {image['id']} is protected and cannot be deleted.")
    location = image.get("location")
    if isinstance(location, dict):
        await _delete_data(call, location)
    if not await _store(call.rt).delete(TABLE, image["id"]):
        raise NotFound(f"No image found with ID {image['id']}")
    return Reply(204)
