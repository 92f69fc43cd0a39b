"""Logged-in sessions: the keystone token kept in this process's memory, never on disk.

The browser holds only an opaque random session id in an HttpOnly, SameSite=Strict
cookie; the token, its project, roles and service catalog stay here, keyed by that id.
Nothing here is logged or written anywhere (a restart logs everybody out).
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from specstack_runtime.context import AuthContext

COOKIE = "specstack_session"
#: Sessions unused this long are forgotten (their token expires on its own).
IDLE_S = 8 * 3600.0


@dataclass
class Session:
    token: str
    body: dict[str, Any]  # the token body keystone returned
    last_used: float = field(default_factory=time.monotonic)
    flows: dict[str, Any] = field(default_factory=dict)  # flow id -> flows.Watch
    projects: list[dict[str, Any]] = field(default_factory=list)  # those it may switch to

    @property
    def user(self) -> dict[str, Any]:
        user: dict[str, Any] = self.body.get("user") or {}
        return user

    @property
    def project(self) -> dict[str, Any]:
        project: dict[str, Any] = self.body.get("project") or {}
        return project

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r["name"] for r in self.body.get("roles") or ())

    @property
    def catalog(self) -> list[dict[str, Any]]:
        catalog: list[dict[str, Any]] = self.body.get("catalog") or []
        return catalog

    def auth(self) -> AuthContext:
        """The token as the policy enforcer reads it (which listings to offer)."""
        return AuthContext(
            token="",
            user_id=str(self.user.get("id", "")),
            user_name=str(self.user.get("name", "")),
            project_id=self.project.get("id"),
            project_name=self.project.get("name"),
            domain_id=str((self.user.get("domain") or {}).get("id", "default")),
            roles=self.roles,
            expires_at=str(self.body.get("expires_at", "")),
        )

    def endpoint(self, catalog_type: str, interface: str = "public") -> str | None:
        """The URL of a service from the token's catalog, as horizon finds it."""
        for entry in self.catalog:
            if entry.get("type") != catalog_type:
                continue
            for ep in entry.get("endpoints") or ():
                if ep.get("interface") == interface:
                    return str(ep["url"]).rstrip("/")
        return None


class Sessions:
    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def add(self, session: Session) -> str:
        self._expire()
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = session
        return sid

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is not None:
            session.last_used = time.monotonic()
        return session

    def drop(self, sid: str | None) -> Session | None:
        return self._by_id.pop(sid, None) if sid else None

    def _expire(self) -> None:
        cutoff = time.monotonic() - IDLE_S
        for sid in [k for k, s in self._by_id.items() if s.last_used < cutoff]:
            del self._by_id[sid]


class Pages(Protocol):
    """What serves pages: finds the request's session (the dashboard, its form handlers)."""

    def session(self, request: Request) -> Session | None: ...


P = TypeVar("P", bound=Pages)
Page = Callable[[P, Request, Session], Awaitable[Response]]
Handler = Callable[[P, Request], Awaitable[Response]]


def _requiring_session(
    otherwise: Callable[[], Response],
) -> Callable[[Page[P]], Handler[P]]:
    def decorate(page: Page[P]) -> Handler[P]:
        @functools.wraps(page)
        async def handler(self: P, request: Request) -> Response:
            session = self.session(request)
            if session is None:
                return otherwise()
            return await page(self, request, session)

        return handler

    return decorate


def to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


#: A page for a logged-in user, called with the request's session; without one, the
#: browser is sent to the login form.
logged_in = _requiring_session(to_login)
#: The same for what a page fetches (an image, an event stream): 401, not a redirect.
logged_in_fetch = _requiring_session(lambda: Response("not logged in", 401))
