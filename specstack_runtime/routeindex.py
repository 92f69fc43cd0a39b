"""Route matching that does not try every route: routes indexed by their literal prefix.

Starlette's router tries its routes in order, a regular expression each, until one
matches: an API of a hundred operations tried tens of them per request. Here a request
tries only the routes of its method whose leading literal path segments (up to `DEPTH`)
it starts with, in the router's order, so the first full match is the one Starlette would
find (a route of another method only ever matches partly).
Anything else (no full match among them: a 405, a redirect of a trailing slash, a 404;
a lifespan or a scope with a root path) is Starlette's own routing, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send

#: Literal segments a route is indexed by: /v2.1/servers/... is found by ("v2.1", "servers").
DEPTH = 2
#: (method, prefix) candidate lists kept: every route's method and prefix, a few times over.
MAX_FILTERED = 4096


def _prefix(path: str) -> tuple[str, ...]:
    """The leading segments of a route's path before its first parameter (up to DEPTH)."""
    out: list[str] = []
    for segment in path.split("/")[1 : DEPTH + 1]:
        if "{" in segment:
            break
        out.append(segment)
    return tuple(out)


class IndexedRouter(Router):
    """A Starlette router whose routes are found by their literal prefix (see above)."""

    def __init__(self, routes: Sequence[BaseRoute] = ()) -> None:
        super().__init__(routes=list(routes))
        # prefix -> the routes a path starting with it may match, in the router's order
        self._by_prefix: dict[tuple[str, ...], list[BaseRoute]] = {}
        # (method, prefix) -> those of the prefix's routes a request of that method may match
        self._by_method: dict[tuple[str, tuple[str, ...]], list[BaseRoute]] = {}
        self._indexed = -1  # how many routes the index holds (routes may be added later)

    def _build(self) -> dict[tuple[str, ...], list[BaseRoute]]:
        index: dict[tuple[str, ...], list[tuple[int, BaseRoute]]] = {(): []}
        for order, route in enumerate(self.routes):
            # only plain routes have a path to index; any other kind is tried by every request
            key = _prefix(route.path) if isinstance(route, Route) else ()
            index.setdefault(key, []).append((order, route))
        # a prefix's own routes and those of its shorter prefixes, merged in order
        return {
            key: [
                r for _, r in sorted(p for n in range(len(key) + 1) for p in index.get(key[:n], ()))
            ]
            for key in index
        }

    def _candidates(self, method: str, path: str) -> list[BaseRoute]:
        if self._indexed != len(self.routes):  # built at the first request
            self._by_prefix, self._indexed = self._build(), len(self.routes)
            self._by_method = {}
        by_prefix = self._by_prefix
        segments = tuple(path.split("/", DEPTH + 1)[1 : DEPTH + 1])
        key: tuple[str, ...] = ()
        for depth in range(len(segments), 0, -1):
            if segments[:depth] in by_prefix:
                key = segments[:depth]
                break
        found = self._by_method.get((method, key))
        if found is None:
            found = [
                r
                for r in by_prefix[key]
                if not isinstance(r, Route) or r.methods is None or method in r.methods
            ]
            if len(self._by_method) < MAX_FILTERED:  # a client's methods are its own to name
                self._by_method[(method, key)] = found
        return found

    def find(self, scope: Scope) -> BaseRoute | None:
        """The route that fully matches the request of `scope` (its path parameters and the
        route then in `scope`, as Starlette puts them), or None: Starlette's own routing."""
        if scope["type"] == "http" and not scope.get("root_path"):
            for route in self._candidates(scope["method"], scope["path"]):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    return route
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.find(scope)
        if route is not None:
            await route.handle(scope, receive, send)
            return
        await super().app(scope, receive, send)
