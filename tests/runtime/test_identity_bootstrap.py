"""Keystone's bootstrap through the stack: the spec's rows, grants and configured passwords."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from specstack_runtime.behaviours import identity_bootstrap
from specstack_runtime.errors import Unauthorized
from specstack_runtime.stackinfo import StackInfo
from tests.aio import arun
from tests.runtime.fakes import Stack, ir_json

HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def _snapshot(stack: Stack) -> dict[str, list[str]]:
    store = stack.keystone.require_store()
    return {
        t: sorted(d["id"] for d in await store.list(t))
        for t in ("domains", "projects", "users", "roles", "role_assignments")
    }


@arun
async def test_bootstrap_is_idempotent_and_spec_driven(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    first = await _snapshot(stack)
    await identity_bootstrap.bootstrap(stack.keystone)
    assert await _snapshot(stack) == first
    store = stack.keystone.require_store()
    users = {u["name"] for u in await store.list("users")}
    services = {
        c["project"]
        for c in stack.info.components.values()
        if c["kind"] in ("api", "worker", "agent") and c["project"] != "keystone"
    }
    assert services == {"nova", "glance", "swift", "neutron", "cinder"}
    assert users == {"admin", "demo"} | services
    assert {r["name"] for r in await store.list("roles")} == {
        "admin",
        "member",
        "reader",
        "service",
    }
    assert {p["name"] for p in await store.list("projects")} == {"admin", "service", "demo"}
    (domain,) = await store.list("domains")
    assert (domain["id"], domain["name"]) == ("default", "Default")
    admin = next(u for u in await store.list("users") if u["name"] == "admin")
    assert admin["id"] == "20fe25ca878354ec9b98312ac4194b3c"  # kept from earlier releases
    for user in await store.list("users"):
        assert HEX32.match(user["id"])
        assert user["password_hash"].startswith("$2b$04$")  # bcrypt, rounds from the config
    for name in services:
        ctx = await stack.login(name, "x", "service")
        assert set(ctx.roles) >= {"admin", "service"}
    demo = await stack.login("demo", project="demo")
    assert demo.roles == ("member", "reader") and not demo.is_admin


@arun
async def test_bootstrap_follows_the_spec_and_the_configured_passwords(tmp_path: Path) -> None:
    ir = json.loads(ir_json())
    extra = copy.deepcopy(next(c for c in ir["components"] if c["name"] == "glance-api"))
    extra.update(
        name="heat-api", project="heat", api=None, catalog=None, database=None, kind="worker"
    )
    ir["components"].append(extra)
    stack = await Stack(tmp_path, info=StackInfo(ir)).start()
    ctx = await stack.login("heat", "x", "service")
    assert ctx.user_name == "heat"
    stack.config.admin_password = "changed"
    await identity_bootstrap.bootstrap(stack.keystone)
    with pytest.raises(Unauthorized):
        await stack.login("admin", "admin")
    assert (await stack.login("admin", "changed")).is_admin


@arun
async def test_bootstrap_seeds_the_spec_rows(tmp_path: Path) -> None:
    """The roles and projects seeded are the spec's `rows:`: a row added there is created."""
    ir = json.loads(ir_json())
    role = next(r for r in ir["resources"] if r["name"] == "role")
    role["rows"].append({**role["rows"][0], "id": "f" * 32, "name": "auditor"})
    stack = await Stack(tmp_path, info=StackInfo(ir)).start()
    store = stack.keystone.require_store()
    assert (await store.require("roles", "f" * 32))["name"] == "auditor"
    admin = next(p for p in await store.list("projects") if p["name"] == "admin")
    assert admin["parent_id"] == "default" and admin["is_domain"] is False


@arun
async def test_a_seed_sets_again_only_the_fields_it_names(tmp_path: Path) -> None:
    """A user the seed made keeps what was changed since, but for a password that no longer
    matches the configured one; a matching one is not hashed again."""
    stack = await Stack(tmp_path).start()
    store = stack.keystone.require_store()
    demo = next(u for u in await store.list("users") if u["name"] == "demo")
    await store.update("users", demo["id"], {"enabled": False, "description": "kept"})
    await identity_bootstrap.bootstrap(stack.keystone)
    again = await store.require("users", demo["id"])
    assert (again["enabled"], again["description"]) == (False, "kept")
    assert again["password_hash"] == demo["password_hash"]
    await store.update("users", demo["id"], {"password_hash": "$2b$04$" + "x" * 53})
    await identity_bootstrap.bootstrap(stack.keystone)
    rehashed = (await store.require("users", demo["id"]))["password_hash"]
    assert rehashed.startswith("$2b$04$") and rehashed != "$2b$04$" + "x" * 53


@arun
async def test_the_grants_seeded_are_the_spec_data(tmp_path: Path) -> None:
    """role_grant's seed: the grants its `data` names, each row with its `fields:` id."""
    ir = json.loads(ir_json())
    grant = next(r for r in ir["resources"] if r["name"] == "role_grant")
    grant["data"]["bootstrap"]["demo"] = {"demo": ["member"], "admin": ["reader"]}
    stack = await Stack(tmp_path, info=StackInfo(ir)).start()
    ctx = await stack.login("demo", project="admin")
    assert ctx.roles == ("reader",) and not ctx.is_admin
    store = stack.keystone.require_store()
    assert len(await store.list("role_assignments", {"user_id": ctx.user_id})) == 2
