from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from specstack_runtime.auth import TokenValidator, auth_context
from specstack_runtime.config import StackConfig
from specstack_runtime.context import AuthContext
from specstack_runtime.errors import ServiceUnavailable, Unauthorized
from tests.aio import arun
from tests.clock import FakeClock
from tests.runtime.fakes import Stack, stack_info


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token_body(
    user: str = "u1",
    project: str | None = "p1",
    *,
    expires_in: float = 3600,
    now: float | None = None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    t: dict[str, Any] = {
        "methods": ["password"],
        "user": {
            "id": user,
            "name": f"name-{user}",
            "domain": {"id": "default", "name": "Default"},
            "password_expires_at": None,
        },
        "audit_ids": ["a"],
        "issued_at": _iso(now),
        "expires_at": _iso(now + expires_in),
    }
    if project:
        t["project"] = {
            "id": project,
            "name": f"name-{project}",
            "domain": {"id": "dom", "name": "Dom"},
        }
        t["roles"] = [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}]
        t["catalog"] = [{"id": "x", "type": "compute", "name": "nova", "endpoints": []}]
    return {"token": t}


Handler = Callable[[str, dict[str, Any]], Awaitable[httpx.Response]]


class ScriptedClients:
    """Answers identity calls with a handler; counts them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(
        self, api: str, operation_id: str, path_params: Any = None, **kw: Any
    ) -> httpx.Response:
        assert api == "identity"
        self.calls.append((operation_id, kw))
        return await self.handler(operation_id, kw)

    def count(self, operation_id: str) -> int:
        return sum(1 for op, _ in self.calls if op == operation_id)


def response(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status, json=body, headers=headers or {}, request=httpx.Request("GET", "http://x/")
    )


def keystone(
    valid: dict[str, dict[str, Any]], *, delay: float = 0.0, service_expires_in: float = 3600
) -> Handler:
    """A fake identity service: `valid` maps user tokens to their bodies."""
    issued = {"n": 0}

    async def handle(op: str, kw: dict[str, Any]) -> httpx.Response:
        await asyncio.sleep(delay)
        if op == "issueToken":
            issued["n"] += 1
            tok = f"svc-{issued['n']}"
            valid[tok] = token_body("svc", "service", expires_in=service_expires_in)
            return response(201, valid[tok], {"X-Subject-Token": tok})
        assert op == "validateToken"
        if kw["token"] not in valid:
            return response(401, {"error": {"code": 401, "message": "no", "title": "Unauthorized"}})
        subject = kw["headers"]["X-Subject-Token"]
        if subject in valid:
            return response(200, valid[subject], {"X-Subject-Token": subject})
        return response(404, {"error": {"code": 404, "message": "gone", "title": "Not Found"}})

    return handle


def validator(clients: Any, clock: FakeClock | None = None, **config: Any) -> TokenValidator:
    cfg = StackConfig(data_dir=Path("/nonexistent"), service_password="pw", **config)
    return TokenValidator(
        stack_info(), cfg, clients, service_user="nova", clock=clock or FakeClock()
    )


def test_auth_context_of_project_token() -> None:
    body = token_body()
    ctx = auth_context(body, "tok")
    assert (ctx.token, ctx.user_id, ctx.user_name) == ("tok", "u1", "name-u1")
    assert (ctx.project_id, ctx.project_name, ctx.domain_id) == ("p1", "name-p1", "dom")
    assert ctx.roles == ("member", "reader")
    assert ctx.expires_at == body["token"]["expires_at"]
    assert ctx.catalog[0]["type"] == "compute"
    assert ctx.body is body
    assert not ctx.is_admin


def test_auth_context_of_unscoped_and_domain_tokens() -> None:
    ctx = auth_context(token_body(project=None), "t")
    assert ctx.project_id is None and ctx.project_name is None
    assert ctx.domain_id == "default"  # the user's own domain
    assert ctx.roles == () and ctx.catalog == ()
    body = token_body(project=None)
    body["token"]["domain"] = {"id": "d2", "name": "D2"}
    assert auth_context(body, "t").domain_id == "d2"
    with pytest.raises(Unauthorized):
        auth_context({"nope": 1}, "t")


@arun
async def test_validate_caches_and_uses_the_service_token() -> None:
    valid = {"user-tok": token_body()}
    clients = ScriptedClients(keystone(valid))
    v = validator(clients)
    ctx = await v.validate("user-tok")
    assert ctx.user_id == "u1" and ctx.project_id == "p1"
    (_, issue), (_, check) = clients.calls
    scope = issue["body"]["auth"]["scope"]["project"]
    user = issue["body"]["auth"]["identity"]["password"]["user"]
    assert scope == {"name": "service", "domain": {"name": "Default"}}
    assert (user["name"], user["password"], user["domain"]) == ("nova", "pw", {"name": "Default"})
    assert check["headers"] == {"X-Subject-Token": "user-tok"} and check["token"] == "svc-1"
    assert await v.validate("user-tok") == ctx
    assert clients.count("validateToken") == 1


@arun
async def test_invalid_token_is_unauthorized_and_remembered_briefly() -> None:
    clients = ScriptedClients(keystone({}))
    v = validator(clients)
    for _ in range(3):
        with pytest.raises(Unauthorized, match="requires authentication"):
            await v.validate("bogus")
    assert clients.count("validateToken") == 1
    with pytest.raises(Unauthorized):
        await v.validate("")
    assert clients.count("validateToken") == 1


@arun
async def test_revocation_is_honoured_after_the_cache_time() -> None:
    valid = {"user-tok": token_body()}
    clients = ScriptedClients(keystone(valid))
    clock = FakeClock()
    v = validator(clients, clock, token_cache_s=5)
    await v.validate("user-tok")
    del valid["user-tok"]  # revoked at the identity service
    clock.advance(4.9)
    await v.validate("user-tok")  # still cached
    clock.advance(0.2)
    with pytest.raises(Unauthorized):
        await v.validate("user-tok")


@arun
async def test_cache_never_outlives_the_token() -> None:
    clock = FakeClock()
    valid = {"short": token_body(expires_in=5, now=clock.time())}
    clients = ScriptedClients(keystone(valid))
    v = validator(clients, clock, token_cache_s=60)
    await v.validate("short")
    clock.advance(6)
    await v.validate("short")
    assert clients.count("validateToken") == 2


@arun
async def test_concurrent_validations_share_one_request() -> None:
    clients = ScriptedClients(keystone({"t": token_body()}, delay=0.02))
    v = validator(clients)
    results = await asyncio.gather(*(v.validate("t") for _ in range(20)))
    assert {r.user_id for r in results} == {"u1"}
    assert clients.count("validateToken") == 1
    assert clients.count("issueToken") == 1


@arun
async def test_concurrent_failures_are_shared_too() -> None:
    clients = ScriptedClients(keystone({}, delay=0.01))
    v = validator(clients)
    results = await asyncio.gather(*(v.validate("bad") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results)
    assert clients.count("validateToken") == 1


@arun
async def test_cache_is_bounded() -> None:
    valid = {f"t{i}": token_body(f"u{i}") for i in range(5)}
    clients = ScriptedClients(keystone(valid))
    v = validator(clients)
    v.max_entries = 3
    for i in range(5):
        await v.validate(f"t{i}")
    assert len(v._cache) <= 3
    await v.validate("t0")  # evicted, asked again
    assert clients.count("validateToken") == 6


@arun
async def test_a_rejected_service_token_is_renewed_once() -> None:
    valid = {"user-tok": token_body()}
    clients = ScriptedClients(keystone(valid))
    v = validator(clients)
    await v.service_token()
    del valid["svc-1"]  # our own token revoked
    ctx = await v.validate("user-tok")
    assert ctx.user_id == "u1"
    assert clients.count("issueToken") == 2
    assert await v.service_token() == "svc-2"


@arun
async def test_identity_failures_are_service_unavailable() -> None:
    async def broken(op: str, kw: dict[str, Any]) -> httpx.Response:
        if op == "issueToken":
            return response(201, token_body("svc", "service"), {"X-Subject-Token": "svc"})
        return response(500, {"error": {"code": 500, "message": "boom", "title": "x"}})

    v = validator(ScriptedClients(broken))
    with pytest.raises(ServiceUnavailable, match="boom"):
        await v.validate("t")

    async def unreachable(op: str, kw: dict[str, Any]) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ServiceUnavailable, match="unreachable"):
        await validator(ScriptedClients(unreachable)).validate("t")

    async def wrong_password(op: str, kw: dict[str, Any]) -> httpx.Response:
        return response(401, {"error": {"code": 401, "message": "bad creds", "title": "x"}})

    with pytest.raises(ServiceUnavailable, match="nova"):
        await validator(ScriptedClients(wrong_password)).service_token()


@arun
async def test_service_token_is_shared_and_renewed_before_expiry() -> None:
    clients = ScriptedClients(keystone({}, delay=0.01, service_expires_in=3600))
    v = validator(clients)
    tokens = await asyncio.gather(*(v.service_token() for _ in range(10)))
    assert set(tokens) == {"svc-1"}
    assert clients.count("issueToken") == 1
    auth = await v.service_auth()
    assert auth.project_id == "service" and auth.token == "svc-1"

    # A token about to expire is replaced before it does.
    clients2 = ScriptedClients(keystone({}, service_expires_in=100))
    clock = FakeClock()
    v2 = validator(clients2, clock)
    first = await v2.service_token()
    clock.advance(49)
    assert await v2.service_token() == first
    clock.advance(11)  # past half its life: renewed, though not expired yet
    assert await v2.service_token() != first
    assert clients2.count("issueToken") == 2


@arun
async def test_local_validation_makes_no_http_call_and_is_not_cached(tmp_path: Path) -> None:
    """The identity service validates by reading its own database, each time: a token
    revoked a moment ago is refused by its next request (keystone's API does the same)."""
    seen: list[str] = []

    async def local(token: str) -> AuthContext:
        seen.append(token)
        if token != "good":
            raise Unauthorized("The request you have made requires authentication.")
        return auth_context(token_body(), token)

    async def no_http(op: str, kw: dict[str, Any]) -> httpx.Response:
        raise AssertionError("the identity service must not call itself")

    cfg = StackConfig(data_dir=tmp_path, service_password="pw")
    v = TokenValidator(
        stack_info(),
        cfg,
        ScriptedClients(no_http),  # type: ignore[arg-type]
        service_user="nova",
        local=local,
    )
    assert (await v.validate("good")).user_id == "u1"
    await v.validate("good")
    with pytest.raises(Unauthorized):
        await v.validate("bad")
    with pytest.raises(Unauthorized):
        await v.validate("bad")
    assert seen == ["good", "good", "bad", "bad"]
    with pytest.raises(ServiceUnavailable, match="local token issuer"):
        await v.service_token()


@arun
async def test_identity_service_gets_its_own_token_locally(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    krt = stack.keystone
    assert krt.auth is not None and krt.auth.local_issue is not None  # bound by bootstrap
    krt.auth.service_user = "glance"  # any service user: the identity service's project has none
    before = len(stack.clients.calls)
    ctx = await krt.auth.service_auth()
    assert ctx.user_name == "glance" and ctx.project_name == "service" and ctx.is_admin
    assert await krt.service_token() == ctx.token
    assert len(stack.clients.calls) == before


@arun
async def test_services_validate_real_tokens_through_identity(tmp_path: Path) -> None:
    stack = await Stack(tmp_path, token_cache_s=0.05).start()
    demo = await stack.login("demo", project="demo")
    assert stack.glance.auth is not None
    clock = FakeClock()
    stack.glance.auth.clock = clock
    ctx = await stack.glance.auth.validate(demo.token)
    assert (ctx.user_name, ctx.project_name) == ("demo", "demo")
    assert ctx.roles == ("member", "reader")
    ops = [op for _, op, _ in stack.clients.calls]
    assert ops == ["issueToken", "validateToken"]  # glance's own token, then the check
    # Revoke it; glance notices once its cache time has passed.
    admin = await stack.login()
    await stack.invoke(
        "identity", "revokeToken", auth=admin, headers={"X-Subject-Token": demo.token}
    )
    clock.advance(0.06)
    with pytest.raises(Unauthorized):
        await stack.glance.auth.validate(demo.token)
