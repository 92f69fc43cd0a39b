"""What the dashboard lists, read from the spec: every API's collection operations.

A listing is a GET operation of an API document whose 200 answer holds one array of
objects (nova's `{"servers": [...]}`, glance's `{"images": [...]}`) and whose path
needs nothing but the caller's project. Where an API has a detailed variant of a
collection (`/servers/detail`) the table uses it. A listing's columns are the item
schema's scalar properties; the show, delete and action operations of one item are
the operations on `{collection}/{id}` and `{collection}/{id}/action`. A new API or
collection in the spec appears here with no dashboard code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from specstack_runtime.dashboard.creating import CreateForm, create_form
from specstack_runtime.dashboard.paths import PARAM, TOKEN_PARAMS, last_param
from specstack_runtime.dashboard.schemas import deref
from specstack_runtime.stackinfo import StackInfo

#: Columns shown first when an item has them; then the other scalar properties.
FIRST_COLUMNS = ("name", "status")
MAX_COLUMNS = 7


@dataclass(frozen=True)
class Action:
    """One key of an item's action operation (`{"os-stop": null}`), with the body it sends."""

    key: str
    description: str
    body: Any
    title: str = ""  # the resource model's name for it (spec/resources), else the key

    @property
    def label(self) -> str:
        return self.title.capitalize() if self.title else self.key


@dataclass(frozen=True)
class Part:
    """A collection inside one item (a server's volume attachments, its interfaces)."""

    collection: str
    path: str  # its path template, the item's id parameter in it
    columns: tuple[str, ...]
    unwrap: str | None = None
    envelope: str | None = None  # POST on `path` adds one: {envelope: {field: ...}}
    fields: tuple[tuple[str, str], ...] = ()  # (required field, the collection it names)
    remove: str | None = None  # DELETE on `{path}/{id}` removes one
    remove_key: str | None = None  # the row's field that fills that id

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        return self.collection.replace("_", " ")


@dataclass(frozen=True)
class Upload:
    """A PUT of raw data on `{item}/NAME` (an image's data), sent from a file input."""

    path: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Listing:
    api: str  # the API document's name
    title: str  # the API's title
    catalog_type: str
    collection: str  # the array's property: "servers"
    path: str  # the list operation's path template
    item_path: str  # the collection's path without /detail
    operation_id: str
    policy: str | None
    columns: tuple[str, ...]
    unwrap: str | None = None  # each item's one property holding the resource (keypairs)
    show: str | None = None  # path template of one item, its id parameter last
    delete: str | None = None
    delete_policy: str | None = None  # the delete operation's rule (who is offered Delete)
    action: str | None = None
    actions: tuple[Action, ...] = field(default_factory=tuple)
    parts: tuple[Part, ...] = field(default_factory=tuple)
    create: CreateForm | None = None  # the form of a POST on the collection
    uploads: tuple[Upload, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return self.collection.replace("os-", "").replace("_", " ")

    @property
    def href(self) -> str:
        return f"/r/{self.api}/{self.collection}"


class Catalogue:
    """Every listing of the stack, from the IR and the bundled API documents."""

    def __init__(self, info: StackInfo, openapi_dir: Path) -> None:
        self.info = info
        self.openapi_dir = openapi_dir

    def document(self, api: str) -> dict[str, Any]:
        path = self.openapi_dir / f"{api}.json"
        doc: dict[str, Any] = json.loads(path.read_text("utf-8")) if path.is_file() else {}
        return doc

    @cached_property
    def listings(self) -> list[Listing]:
        out: list[Listing] = []
        for comp in self.info.components.values():
            if not comp.get("api") or not comp.get("catalog"):
                continue
            api = self.info.apis[comp["api"]]
            out += self._of_api(api, comp["catalog"]["type"], self.document(api["name"]))
        return out

    def find(self, api: str, collection: str) -> Listing | None:
        return next((x for x in self.listings if x.api == api and x.collection == collection), None)

    def _titles(self, api: str, op: dict[str, Any] | None) -> dict[str, str]:
        """The titles the resource model gives the actions of `op` (its state machine)."""
        if op is None:
            return {}
        for res in self.info.model.resources:
            if res.api == api and op["operation_id"] in res.operations and res.states:
                return {a.name: a.title for a in res.states.actions if a.title}
        return {}

    def _of_api(self, api: dict[str, Any], catalog_type: str, doc: dict[str, Any]) -> list[Listing]:
        schemas = doc.get("components", {}).get("schemas", {})
        ops = {(o["method"], o["path"]): o for o in api["operations"]}
        found: dict[str, Listing] = {}
        for op in api["operations"]:
            if op["method"] != "GET":
                continue
            if not op.get("requires_token") or not op.get("policy"):
                continue  # version documents: not the cloud's resources
            params = PARAM.findall(op["path"])
            if any(p not in TOKEN_PARAMS for p in params):
                continue
            array = _answer_array(op, schemas)
            if array is None:
                continue
            collection, item, unwrap = array
            if "id" not in item["properties"] and unwrap is None:
                continue  # not resources with an identity (extensions, assignments)
            base = op["path"].removesuffix("/detail")
            detailed = op["path"].endswith("/detail")
            if collection in found and not detailed:
                continue
            one = _item_path(ops, base)
            action = (
                f"{one}/action" if one is not None and ("POST", f"{one}/action") in ops else None
            )
            found[collection] = Listing(
                api=api["name"],
                title=api["title"],
                catalog_type=catalog_type,
                collection=collection,
                path=op["path"],
                item_path=base,
                operation_id=op["operation_id"],
                policy=op.get("policy"),
                columns=_columns(item),
                unwrap=unwrap,
                show=one if one is not None and ("GET", one) in ops else None,
                delete=one if one is not None and ("DELETE", one) in ops else None,
                delete_policy=(ops.get(("DELETE", one)) or {}).get("policy") if one else None,
                action=action,
                actions=_titled(
                    _actions(ops.get(("POST", action)) if action else None, schemas),
                    self._titles(api["name"], ops.get(("POST", action)) if action else None),
                ),
                parts=_parts(api["operations"], one, schemas) if one else (),
                create=create_form(ops.get(("POST", base)), schemas),
                uploads=_uploads(api["operations"], one) if one else (),
            )
        return list(found.values())


def _uploads(operations: list[dict[str, Any]], one: str) -> tuple[Upload, ...]:
    """The PUT operations on `{one}/NAME` that take raw data (application/octet-stream)."""
    return tuple(
        Upload(op["path"])
        for op in operations
        if op["method"] == "PUT"
        and op.get("request_content_type") == "application/octet-stream"
        and re.fullmatch(r"[A-Za-z0-9_.-]+", op["path"].removeprefix(one + "/"))
    )


def _titled(actions: tuple[Action, ...], titles: dict[str, str]) -> tuple[Action, ...]:
    return tuple(Action(a.key, a.description, a.body, titles.get(a.key, "")) for a in actions)


def _parts(operations: list[dict[str, Any]], one: str, schemas: dict[str, Any]) -> tuple[Part, ...]:
    """The GET operations on `{one}/NAME` answering one array: an item's own collections."""
    out = []
    for op in operations:
        rest = op["path"].removeprefix(one + "/")
        if (
            op["method"] != "GET"
            or rest == op["path"]
            or not re.fullmatch(r"[A-Za-z0-9_.-]+", rest)
        ):
            continue
        array = _answer_array(op, schemas)
        if array is None:
            continue
        collection, item, unwrap = array
        ops = {(o["method"], o["path"]): o for o in operations}
        create = ops.get(("POST", op["path"]))
        envelope, fields = _create_fields(create, schemas) if create else (None, ())
        remove = _item_path(ops, op["path"])
        remove = remove if remove is not None and ("DELETE", remove) in ops else None
        key = None
        if remove is not None:
            param = last_param(remove)
            camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), param)
            props = item.get("properties") or {}
            key = next((k for k in (param, camel, "id") if k in props), None)
        out.append(
            Part(
                collection,
                op["path"],
                _columns(item),
                unwrap,
                envelope=envelope if fields else None,
                fields=fields,
                remove=remove if key else None,
                remove_key=key,
            )
        )
    return tuple(out)


def _create_fields(
    op: dict[str, Any], schemas: dict[str, Any]
) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The body's envelope and its required fields that name an item of a collection
    (`volumeId` and `volume_id` name one of `volumes`); nothing when another is required."""
    body = deref(schemas.get(op.get("request_model") or "", {}), schemas)
    props = body.get("properties") or {}
    if len(props) != 1:
        return None, ()
    ((envelope, inner),) = props.items()
    inner = deref(inner, schemas)
    fields = []
    for name in inner.get("required") or ():
        m = re.fullmatch(r"([a-z]+)(?:Id|_id)", name)
        if m is None:
            return None, ()
        fields.append((name, m.group(1) + "s"))
    return envelope, tuple(fields)


def _answer_array(
    op: dict[str, Any], schemas: dict[str, Any]
) -> tuple[str, dict[str, Any], str | None] | None:
    """The one array of the operation's 200 answer (see `_one_array`), or None."""
    ok = next((r for r in op["responses"] if r["status"] == "200"), None)
    model = schemas.get(ok["model"]) if ok and ok.get("model") else None
    return _one_array(model or {}, schemas)


def _one_array(
    model: dict[str, Any], schemas: dict[str, Any]
) -> tuple[str, dict[str, Any], str | None] | None:
    """The (property, item schema, wrapping key) of the one array of objects an answer
    holds; nova wraps each key pair as `{"keypair": {...}}`."""
    arrays = []
    for name, prop in (model.get("properties") or {}).items():
        prop = deref(prop, schemas)
        if prop.get("type") != "array" or name.endswith("_links"):
            continue
        item = deref(prop.get("items") or {}, schemas)
        if item.get("type") == "object" and item.get("properties"):
            arrays.append((name, item))
    if len(arrays) != 1:
        return None
    name, item = arrays[0]
    props = {k: deref(v, schemas) for k, v in item["properties"].items()}
    unwrap = None
    if len(props) == 1:
        ((key, inner),) = props.items()
        if inner.get("type") == "object" and inner.get("properties"):
            unwrap = key
            props = {k: deref(v, schemas) for k, v in inner["properties"].items()}
    return name, {**item, "properties": props}, unwrap


def _columns(item: dict[str, Any]) -> tuple[str, ...]:
    props: dict[str, Any] = item.get("properties") or {}
    scalar = [
        k
        for k, v in props.items()
        if v.get("type") in ("string", "integer", "number", "boolean")
        or (isinstance(v.get("type"), list) and "object" not in v["type"])
    ]
    first = [c for c in FIRST_COLUMNS if c in scalar]
    rest = [c for c in scalar if c not in first and c != "id"]
    cols = first + rest[: MAX_COLUMNS - len(first) - 1]
    return (*cols, "id") if "id" in props else tuple(cols)


def _item_path(ops: dict[tuple[str, str], dict[str, Any]], base: str) -> str | None:
    """The path of one item of the collection at `base`: `{base}/{some_id}`."""
    for _method, path in ops:
        rest = path.removeprefix(base + "/")
        if path.startswith(base + "/") and re.fullmatch(r"\{[^}/]+\}", rest):
            return path
    return None


def _actions(op: dict[str, Any] | None, schemas: dict[str, Any]) -> tuple[Action, ...]:
    """Each key of an action operation's body, with the body a button sends: null, or
    each required field at its first allowed value (reboot: `{"type": "SOFT"}`)."""
    if op is None or not op.get("request_model"):
        return ()
    body = deref(schemas.get(op["request_model"], {}), schemas)
    out = []
    for key, prop in (body.get("properties") or {}).items():
        target = deref(prop, schemas)
        value: Any = None
        if target.get("type") == "object":
            value = {}
            for req in target.get("required") or ():
                field_schema = deref((target.get("properties") or {}).get(req, {}), schemas)
                if "default" in field_schema:
                    value[req] = field_schema["default"]
                elif field_schema.get("enum"):
                    value[req] = field_schema["enum"][0]
                else:
                    break  # a value only a person can give: no one-click button
            else:
                value = value or None if not target.get("properties") else value
            if len(value or {}) < len(target.get("required") or ()):
                continue
        description = prop.get("description") or target.get("description") or key
        out.append(Action(key, str(description), value))
    return tuple(out)
