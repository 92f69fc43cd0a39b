"""Writing rows: the request's attributes checked against the resource's fields.

Create: unknown and server-set attributes refused, values checked against their
schema (type, length, enum), defaults filled in (literals, then expressions),
required fields demanded, the owner stamped, references and uniqueness checked,
passwords hashed. Update: the same for what changes, immutable fields refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

from specstack_runtime import ir, patterns
from specstack_runtime.errors import Conflict
from specstack_runtime.expr import compile_expr
from specstack_runtime.resources import access, quotas
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall
from specstack_runtime.resources.hashing import bcrypt_hash
from specstack_runtime.resources.ids import stable_id

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}
_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def attributes(rc: ResourceCall) -> Doc:
    """The resource's attributes in the request body (inside its envelope, if it has one)."""
    body = rc.call.body
    key = rc.res.res.envelope_one
    if key:
        if not isinstance(body, dict) or not isinstance(body.get(key), dict):
            raise rc.res.fail("body", envelope=key)
        others = sorted(k for k in body if k != key)
        if others and rc.res.conventions.strict_body:
            raise rc.res.fail("unknown_field", field=", ".join(others))
        return dict(body[key])
    if not isinstance(body, dict):
        raise rc.res.fail("body", envelope=rc.res.name)
    return dict(body)


#: The spellings `coerce: bool` takes (neutron's convert_to_boolean).
_BOOLS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "t": True,
    "y": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
    "f": False,
    "n": False,
}


def _time(rc: ResourceCall, f: ir.ResourceField, value: Any) -> str:
    """An ISO 8601 time as OpenStack stores one: UTC (a time without a zone is), to the
    microsecond, without a zone (keystone's `2026-11-06T16:55:22.000000`)."""
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    except (ValueError, OverflowError):
        reason = f"'{str(value)[:64]}' is not an ISO 8601 time"
        raise rc.res.fail("invalid", field=f.name, value=_short(value), reason=reason) from None


def _coerce(rc: ResourceCall, f: ir.ResourceField, value: Any) -> Any:
    kind = f.coerce
    if kind == "datetime" and value is not None:
        return _time(rc, f, value)
    if kind == "bool" and not isinstance(value, bool) and value is not None:
        key = value.strip().lower() if isinstance(value, str) else value
        if isinstance(key, str | int) and not isinstance(key, bool) and str(key) in _BOOLS:
            return _BOOLS[str(key)]
        raise rc.res.fail(
            "invalid",
            field=f.name,
            value=_short(value),
            reason=f"'{_short(value)}' cannot be converted to boolean",
        )
    if kind is None or value is None or isinstance(value, bool):
        return value
    try:
        if kind == "int" and isinstance(value, str | float):
            if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float" and isinstance(value, str | int):
            return float(value)
        if kind == "string" and isinstance(value, int | float):
            return str(value)
    except (ValueError, OverflowError):
        raise rc.res.fail(
            "invalid",
            field=f.name,
            value=str(value)[:32],
            reason=f"expected {_TYPE_NAMES.get('integer' if kind == 'int' else 'number')}",
        ) from None
    return value


def check_value(rc: ResourceCall, f: ir.ResourceField, value: Any) -> Any:
    value = _coerce(rc, f, value)
    if value is None:
        if f.types and "null" not in f.types:
            raise rc.res.fail("invalid", field=f.name, value=value, reason="it may not be null")
        return None
    if f.types and not any(_is_type(value, t) for t in f.types):
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in f.types if t != "null")
        raise rc.res.fail("invalid", field=f.name, value=value, reason=f"expected {wanted}")
    if isinstance(value, str):
        if "\x00" in value:
            raise rc.res.fail("invalid", field=f.name, value="", reason="it contains a NUL")
        if f.max_length is not None and len(value) > f.max_length:
            raise rc.res.fail(
                "invalid",
                field=f.name,
                value=value[:32],
                reason=f"it is longer than {f.max_length} characters",
            )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if abs(value) > 2**63 - 1:
            raise rc.res.fail("invalid", field=f.name, value=value, reason="it is too large")
        if f.minimum is not None and value < f.minimum:
            raise rc.res.fail(
                "invalid", field=f.name, value=value, reason=f"it is less than {f.minimum:g}"
            )
        if f.maximum is not None and value > f.maximum:
            raise rc.res.fail(
                "invalid", field=f.name, value=value, reason=f"it is more than {f.maximum:g}"
            )
    if f.pattern and isinstance(value, str) and not patterns.search(f.pattern, value):
        raise rc.res.fail(
            "invalid", field=f.name, value=value[:32], reason=f"it does not match {f.pattern}"
        )
    validator = rc.res.validators.get(f.name)
    if validator is not None:
        err = next(iter(validator.iter_errors(value)), None)
        if err is not None:
            raise rc.res.fail("invalid", field=f.name, value=_short(value), reason=err.message)
    if f.enum is not None and value not in f.enum:
        allowed = ", ".join(str(v) for v in f.enum)
        raise rc.res.fail(
            "invalid", field=f.name, value=value, reason=f"'{value}' is not one of {allowed}"
        )
    return value


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _is_type(value: Any, json_type: str) -> bool:
    if json_type == "null":
        return value is None
    if isinstance(value, bool):
        return json_type == "boolean"
    return isinstance(value, _PYTHON_TYPES.get(json_type, (object,)))


def _checked(rc: ResourceCall, attrs: Doc, *, old: Doc | None, server: bool = False) -> Doc:
    """Every attribute checked: known, writable now (`server`: the server's own write may
    set server-set fields), of the right shape."""
    res = rc.res
    out: Doc = {}
    unknown: list[str] = []
    attrs = dict(attrs)
    for key in [k for k in attrs if k in res.aliases]:  # an old name: the new one wins
        value = attrs.pop(key)
        attrs.setdefault(res.aliases[key], value)
    for key, value in attrs.items():
        f = res.fields.get(key)
        if (
            f is None
            or (f.computed and not f.in_schema)
            or res.not_at(key, rc.call.microversion)
            or (key == res.owner_field and res.res.acts_for and not rc.acts_for_at())
        ):
            if res.res.extra and f is None:
                out[key] = _extra(rc, key, value)
            else:
                unknown.append(key)
            continue
        if f.computed and res.conventions.strict_body:  # server-set, as neutron answers
            raise res.fail("read_only" if old is None else "immutable", field=key, value=value)
        if f.computed:
            continue  # a computed field sent back (a client's round trip): nothing to store
        held = f.stored or key
        if (
            old is not None
            and held in old
            and old.get(held) == value
            and f.write != "always"
            and not res.conventions.strict_body
        ):
            continue  # unchanged: clients send back what they read
        if f.write == "never" and not server:
            raise res.fail("read_only" if old is None else "immutable", field=key, value=value)
        if f.write == "create" and old is not None:
            raise res.fail("immutable", field=key, value=value)
        checked = check_value(rc, f, value)
        out[f.stored or key] = checked
        if f.set_by and not _may_set(rc, f, checked, old):
            raise res.fail(
                "field_forbidden", field=key, action="create" if old is None else "update"
            )
    if unknown:
        raise res.fail("unknown_field", field=", ".join(sorted(unknown)))
    return out


def _extra(rc: ResourceCall, key: str, value: Any) -> Any:
    """An attribute the schema does not name, checked against what the request's schema
    says of such attributes; null (a JSON Patch's remove) takes it away."""
    check = rc.res.extra_validator
    if value is not None and check is not None:
        err = next(iter(check.iter_errors(value)), None)
        if err is not None:
            raise rc.res.fail("invalid", field=key, value=_short(value), reason=err.message)
    return value


def _may_set(rc: ResourceCall, f: ir.ResourceField, value: Any, old: Doc | None) -> bool:
    """Giving a value other than the default (or changing the stored one) needs `set_by`."""
    unchanged = value == (f.default if old is None else old.get(f.stored or f.name, f.default))
    return unchanged or rc.allows(f.set_by)


def new_id(rc: ResourceCall, doc: Doc) -> str:
    style = rc.res.res.id_style
    if style == "hex":
        return uuid.uuid4().hex
    if style.startswith("fields:"):
        return stable_id(rc.res.name, (doc.get(f) for f in style[7:].split(",")))
    if style.startswith("path:"):
        return str(rc.call.path_params.get(style[5:], ""))
    if style.startswith("expr:"):
        return str(compile_expr(style[5:]).evaluate(**rc.variables(doc=doc)))
    return str(uuid.uuid4())


async def for_create(
    rc: ResourceCall, attrs: Doc, id_: str | None = None, *, server: bool = False
) -> Doc:
    """The new row, from the request's attributes (not yet stored); `id_` when the path
    names it (an upsert); `server`: a row the server makes (an effect's), whose attributes
    may be server-set ones, and need not give what a request must."""
    res = rc.res
    doc = _checked(rc, attrs, old=None, server=server)
    doc.update(rc.parents())
    access.stamp_owner(rc, doc)
    for f in res.res.fields:
        if res.key(f.name) not in doc and f.has_default and not f.computed:
            doc[res.key(f.name)] = _copy(f.default)
    for name, expr in res.default_exprs:
        if doc.get(res.key(name)) is None:
            doc[res.key(name)] = expr.evaluate(**rc.variables(doc=doc))
    for f in res.res.fields:
        if f.required and not server and doc.get(res.key(f.name)) is None:
            raise res.fail("required", field=f.name)
    given = doc.get("id") if "id" in res.fields and res.fields["id"].write != "never" else None
    doc["id"] = str(id_ or (given if given not in (None, "") else None) or new_id(rc, doc))
    if res.res.revision:
        doc[res.res.revision] = 1
    await check_refs(rc, doc, doc.keys())
    await check_unique(rc, doc, None)
    await _hash(rc, doc)
    return doc


async def for_update(rc: ResourceCall, old: Doc, attrs: Doc) -> Doc:
    """The changes to `old` the request asks for, checked."""
    res = rc.res
    changes = _checked(rc, attrs, old=old)
    for f in res.res.fields:
        if f.required and f.name in changes and changes[f.name] is None:
            raise res.fail("required", field=f.name)
        if f.merge and isinstance(changes.get(f.name), dict):
            changes[f.name] = {**(old.get(f.name) or {}), **changes[f.name]}
    await check_refs(rc, changes, changes.keys())
    await check_unique(rc, {**old, **changes}, old, changed=set(changes))
    await _hash(rc, changes)
    if res.res.revision and changes:
        changes[res.res.revision] = int(old.get(res.res.revision) or 0) + 1
    return changes


async def check_refs(rc: ResourceCall, doc: Doc, names: Iterable[str]) -> None:
    for name in list(names):
        f = rc.res.fields.get(name)
        value = doc.get(name)
        if f is None or f.ref is None or value is None:
            continue
        if f.ref.when and not compile_expr(f.ref.when).evaluate(**rc.variables(doc=doc)):
            continue
        if isinstance(value, list):
            for item in value:
                await _check_ref(rc, f.ref, name, item)
        else:  # the row it names: `refs` in `refuse` rules (cinder: a clone's source volume)
            rc.refs[name] = await _check_ref(rc, f.ref, name, value)


async def _check_ref(rc: ResourceCall, ref: ir.FieldRef, name: str, value: Any) -> Doc:
    """One value of a `ref` field (each item of a list field) names a row the caller sees;
    that row, completed."""
    target = rc.of(ref.resource)
    row = await target.store.get(target.res.res.table, str(value))
    values = {"field": name, "value": value}
    if row is None or not await access.sees(target, row):
        err = rc.res.fail("ref_missing", field=name, value=value, ref=target.res.res.title.lower())
        if ref.status != 400 or ref.message or ref.kind:
            message = fill(ref.message or err.message, values)
            err = error(ref.status, message, ref.kind or err.kind)
        raise err
    if ref.modify is not None and not access.may_modify(target, row):
        raise error(ref.modify.status or 403, fill(ref.modify.message, values), ref.modify.kind)
    return target.res.complete(row)


async def check_unique(
    rc: ResourceCall, doc: Doc, old: Doc | None, *, changed: set[str] | None = None
) -> None:
    """409 when another row has the same values of a unique field set."""
    for names in rc.res.unique_sets:
        if changed is not None and not changed & set(names):
            continue
        if doc.get(names[0]) is None:
            continue
        where = {n: doc.get(n) for n in names}
        rows = await rc.store.list(rc.res.res.table, where)
        rivals = [r for r in rows if old is None or r["id"] != old["id"]]
        if rivals:
            raise rc.res.fail(
                "conflict",
                field=names[0],
                value=doc.get(names[0]),
                **plain(doc),
                existing=rivals[0]["id"],
            )


async def settle_unique(rc: ResourceCall, doc: Doc) -> None:
    """After an insert: if a concurrent create took the same unique values, the later row
    goes (the primary key cannot guard a field set; this keeps exactly one)."""
    for names in rc.res.unique_sets:
        if doc.get(names[0]) is None:
            continue
        rivals = await rc.store.list(rc.res.res.table, {n: doc.get(n) for n in names})
        if len(rivals) > 1:
            winner = min(rivals, key=lambda d: (d.get("created_at", ""), d["id"]))
            if winner["id"] != doc["id"]:
                await rc.store.delete(rc.res.res.table, doc["id"])
                raise rc.res.fail("conflict", field=names[0], value=doc.get(names[0]), **plain(doc))


async def _hash(rc: ResourceCall, doc: Doc) -> None:
    for f in rc.res.res.fields:
        if f.hash and f.name in doc:
            secret = doc.pop(f.name)
            if f.shown_once and secret is not None:
                rc.revealed[f.name] = secret
            target = f.store_as or f"{f.name}_hash"
            doc[target] = None if secret is None else await hash_secret(rc, str(secret))


async def hash_secret(rc: ResourceCall, secret: str) -> str:
    return await bcrypt_hash(rc.call.rt.config.bcrypt_rounds, secret)


def plain(doc: Doc) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if isinstance(v, str | int | float) and k != "id"}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


async def store_new(rc: ResourceCall, doc: dict[str, Any]) -> dict[str, Any]:
    """Insert the new row: counted against its quotas, unique values settled (a create's,
    and an effect's `counted` one)."""
    counted = quotas.of_resource(rc) if quotas.quota_of(rc) is not None else []
    if not counted:
        created = await insert(rc, doc)
        await settle_unique(rc, created)
        return created
    owner = str(doc.get(rc.res.owner_field or "project_id"))
    async with AsyncExitStack() as held:
        for quota in sorted(counted, key=lambda q: q.name):  # one order: no lock cycle
            await held.enter_async_context(quotas.lock(quota, owner))
        for quota in counted:
            await quotas.check(rc, quota, doc, inserted=False)
        created = await insert(rc, doc)
        for quota in counted:
            await quotas.check(rc, quota, created, inserted=True)
        await settle_unique(rc, created)
        return created


async def insert(rc: ResourceCall, doc: dict[str, Any]) -> dict[str, Any]:
    try:
        return await rc.store.create(rc.res.res.table, doc)
    except Conflict:  # the primary key: a row with this id exists
        raise rc.res.fail("conflict", field="id", value=doc["id"], **plain(doc)) from None
