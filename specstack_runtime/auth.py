"""How services check user tokens (step 4 of the flow) and obtain their own.

A `TokenValidator` asks the identity API (`validateToken`) about a user token,
caches the answer for `config.token_cache_s` seconds (so a revocation is honoured
within that time) and shares one request between concurrent validations of the
same token. It also keeps the service's own project-scoped token (`issueToken`
as the service user on project `service`), renewed shortly before it expires.

The identity service cannot call itself for either: it is given `local` (a
validation that reads its own database) and, for its own token, a local issuer
(`local_issue`, or bound later with `bind_local_issuer`). A local validation is not
cached: the identity API sees a revocation (a revoked token, a deleted application
credential, a role taken away) at once, as keystone's does, at a fraction of a
millisecond a request; the cache saves the other services a round trip to it.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx

from specstack_runtime.clock import SYSTEM_CLOCK, Clock
from specstack_runtime.config import StackConfig
from specstack_runtime.context import AuthContext
from specstack_runtime.errors import ApiError, ServiceUnavailable, Unauthorized
from specstack_runtime.http import ClientSet, error_message
from specstack_runtime.stackinfo import StackInfo

UNAUTHORIZED = "The request you have made requires authentication."
SERVICE_PROJECT = "service"
SERVICE_DOMAIN = "Default"
#: Most tokens kept in the validation cache (least recently used ones go first).
CACHE_MAX_ENTRIES = 10_000

LocalValidate = Callable[[str], Awaitable[AuthContext]]
#: (user name, password, project name) -> (token, its AuthContext)
LocalIssue = Callable[[str, str, str], Awaitable[tuple[str, AuthContext]]]

T = TypeVar("T")


def password_auth(
    user: str, password: str, project: str, domain: str = "Default"
) -> dict[str, Any]:
    """The body of `POST /v3/auth/tokens` as the openstack CLI sends it: a password, and a
    project by name, user and project both of `domain`."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": domain}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"name": domain}}},
        }
    }


def auth_context(body: Mapping[str, Any], token: str) -> AuthContext:
    """The AuthContext of a keystone token body (`{"token": {...}}`).

    `domain_id` is the caller's working domain: the scoped domain of a
    domain-scoped token, the project's domain of a project-scoped one, and the
    user's own domain of an unscoped one.
    """
    t = body.get("token") if isinstance(body, Mapping) else None
    if not isinstance(t, Mapping):
        raise Unauthorized("The identity service answered a token body without a token.")
    user = t.get("user") or {}
    project = t.get("project") or None
    domain = t.get("domain") or None
    user_domain = (user.get("domain") or {}).get("id") or ""
    if isinstance(domain, Mapping):
        domain_id = str(domain.get("id") or user_domain)
    elif isinstance(project, Mapping):
        domain_id = str((project.get("domain") or {}).get("id") or user_domain)
    else:
        domain_id = str(user_domain)
    roles = tuple(str(r.get("name")) for r in t.get("roles") or () if isinstance(r, Mapping))
    catalog = tuple(dict(c) for c in t.get("catalog") or () if isinstance(c, Mapping))
    return AuthContext(
        token=token,
        user_id=str(user.get("id") or ""),
        user_name=str(user.get("name") or ""),
        project_id=str(project["id"]) if isinstance(project, Mapping) else None,
        project_name=str(project.get("name")) if isinstance(project, Mapping) else None,
        domain_id=domain_id,
        roles=roles,
        expires_at=str(t.get("expires_at") or ""),
        catalog=catalog,
        body=body,
    )


def expires_epoch(expires_at: str) -> float | None:
    """The UNIX time of a keystone `expires_at`, or None if it cannot be read."""
    try:
        return datetime.fromisoformat(expires_at).timestamp()
    except (TypeError, ValueError):
        return None


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as retrieved (its waiters may all be gone)."""
    if not fut.cancelled():
        fut.exception()


class TokenValidator:
    """Token validation with a short cache, and this service's own token."""

    def __init__(
        self,
        rt_info: StackInfo,
        config: StackConfig,
        clients: ClientSet,
        *,
        service_user: str,
        local: LocalValidate | None = None,
        local_issue: LocalIssue | None = None,
        max_entries: int = CACHE_MAX_ENTRIES,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.info = rt_info
        self.config = config
        self.clients = clients
        self.service_user = service_user
        self.local = local
        self.local_issue = local_issue
        self.max_entries = max_entries
        self.clock = clock
        # token -> (monotonic deadline, context or None for a token known to be invalid)
        self._cache: OrderedDict[str, tuple[float, AuthContext | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[AuthContext]] = {}
        self._service: tuple[AuthContext, float] | None = None  # (context, renew at, monotonic)
        self._service_pending: asyncio.Future[AuthContext] | None = None

    @property
    def identity_api(self) -> str:
        return self.info.api_of_type("identity")

    def bind_local_issuer(self, issue: LocalIssue) -> None:
        """Give a local validator the way to mint its own token (the identity service)."""
        self.local_issue = issue

    # -- validation ------------------------------------------------------------------

    async def validate(self, token: str) -> AuthContext:
        """The AuthContext of a user token; Unauthorized if it is invalid, expired or revoked."""
        if not token or not isinstance(token, str):
            raise Unauthorized(UNAUTHORIZED)
        hit = self._cache.get(token)
        if hit is not None:
            deadline, ctx = hit
            if deadline > self.clock.monotonic():
                self._cache.move_to_end(token)
                if ctx is None:
                    raise Unauthorized(UNAUTHORIZED)
                return ctx
            self._cache.pop(token, None)
        fut = self._inflight.get(token)
        if fut is None:
            fut = asyncio.ensure_future(self._validate_uncached(token))
            self._inflight[token] = fut
            fut.add_done_callback(_consume)
            fut.add_done_callback(functools.partial(self._forget_inflight, token))
        return await asyncio.shield(fut)

    def _forget_inflight(self, token: str, fut: asyncio.Future[AuthContext]) -> None:
        if self._inflight.get(token) is fut:
            del self._inflight[token]

    def _remember(self, token: str, ctx: AuthContext | None) -> None:
        ttl = float(self.config.token_cache_s)
        if ctx is not None:
            expiry = expires_epoch(ctx.expires_at)
            if expiry is not None:
                ttl = min(ttl, expiry - self.clock.time())
        if ttl <= 0:
            return
        self._cache[token] = (self.clock.monotonic() + ttl, ctx)
        self._cache.move_to_end(token)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _validate_uncached(self, token: str) -> AuthContext:
        if self.local is not None:  # (not cached: see the module's docstring)
            return await self.local(token)
        resp = await self._ask_identity(token)
        if resp.status_code == 401:
            # Our own token may have been revoked or expired early: renew it once.
            self._service = None
            resp = await self._ask_identity(token)
        if resp.status_code == 200:
            try:
                body = resp.json()
            except ValueError:
                raise ServiceUnavailable(
                    "The identity service answered token validation with a body that is not JSON."
                ) from None
            ctx = auth_context(body, token)
            self._remember(token, ctx)
            return ctx
        if resp.status_code in (401, 404):
            self._remember(token, None)
            raise Unauthorized(UNAUTHORIZED)
        raise ServiceUnavailable(
            f"The identity service could not validate the token "
            f"({resp.status_code}: {error_message(resp)})."
        )

    async def _ask_identity(self, token: str) -> httpx.Response:
        service_token = await self.service_token()
        try:
            return await self.clients.call(
                self.identity_api,
                "validateToken",
                headers={"X-Subject-Token": token},
                token=service_token,
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"The identity service is unreachable: {exc}") from exc

    # -- this service's own token ----------------------------------------------------

    async def service_token(self) -> str:
        """This service's project-scoped token (user `service_user`, project `service`)."""
        return (await self.service_auth()).token

    async def service_auth(self) -> AuthContext:
        cur = self._service
        if cur is not None and cur[1] > self.clock.monotonic():
            return cur[0]
        fut = self._service_pending
        if fut is None:
            fut = asyncio.ensure_future(self._obtain_service_token())
            self._service_pending = fut
            fut.add_done_callback(_consume)
            fut.add_done_callback(self._forget_service_pending)
        return await asyncio.shield(fut)

    def _forget_service_pending(self, fut: asyncio.Future[AuthContext]) -> None:
        if self._service_pending is fut:
            self._service_pending = None

    def _renew_at(self, ctx: AuthContext) -> float:
        """When (monotonic) to renew: shortly before expiry, leaving time for calls in flight."""
        now = self.clock.time()
        expiry = expires_epoch(ctx.expires_at)
        lifetime = (expiry - now) if expiry is not None else float(self.config.token_ttl_s)
        margin = min(max(60.0, 2 * float(self.config.call_timeout_s)), lifetime / 2)
        return self.clock.monotonic() + max(lifetime - margin, 0.0)

    async def _obtain_service_token(self) -> AuthContext:
        password = self.config.service_password
        if self.local is not None:
            if self.local_issue is None:
                raise ServiceUnavailable(
                    "The identity service has no local token issuer bound "
                    "(TokenValidator.bind_local_issuer)."
                )
            try:
                _, ctx = await self.local_issue(self.service_user, password, SERVICE_PROJECT)
            except ApiError as exc:
                raise ServiceUnavailable(
                    f"Service user {self.service_user!r} could not obtain a token "
                    f"({exc.status}: {exc.message})"
                ) from None
        else:
            ctx = await self._issue_over_http(password)
        self._service = (ctx, self._renew_at(ctx))
        self._remember(ctx.token, ctx)
        return ctx

    async def _issue_over_http(self, password: str) -> AuthContext:
        body = password_auth(self.service_user, password, SERVICE_PROJECT, SERVICE_DOMAIN)
        try:
            resp = await self.clients.call(self.identity_api, "issueToken", body=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"The identity service is unreachable: {exc}") from exc
        token = resp.headers.get("X-Subject-Token")
        if resp.status_code != 201 or not token:
            raise ServiceUnavailable(
                f"Service user {self.service_user!r} could not obtain a token "
                f"({resp.status_code}: {error_message(resp)})."
            )
        try:
            data = resp.json()
        except ValueError:
            raise ServiceUnavailable(
                "The identity service answered a token that is not JSON."
            ) from None
        try:
            return auth_context(data, token)
        except ApiError as exc:
            raise ServiceUnavailable(exc.message) from None
