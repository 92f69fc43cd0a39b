"""The ASGI app factory: one Starlette app per API component, routes from generated code."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope

from specstack_runtime import jsoncodec, logs, registry
from specstack_runtime.context import AuthContext, Call, Reply, new_request_id
from specstack_runtime.errorformat import render
from specstack_runtime.errors import (
    ApiError,
    BadRequest,
    NotFound,
    StepFailed,
    Unauthorized,
)
from specstack_runtime.flow import Flow, HandlerSpec
from specstack_runtime.logs import LogContext
from specstack_runtime.microversions import Microversions
from specstack_runtime.osprofiler_export import signed_base_id
from specstack_runtime.requestlimits import (
    body_limit,
    check_body_strings,
    check_parameters,
    read_body,
)
from specstack_runtime.resources import records
from specstack_runtime.routeindex import IndexedRouter
from specstack_runtime.services import ServiceRuntime

log = logging.getLogger("specstack.api")

_REQUEST_ID = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JSON_TYPES = ("application/json", "application/openstack-images-v2.1-json-patch")
TRACE_RULE = "specstack:trace"  # spec/policy.yaml: who may read flows


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation_id: str
    handler: HandlerSpec
    request_model: type[BaseModel] | None = None
    request_content_type: str | None = None
    requires_token: bool = True
    match_path: tuple[str, ...] = ()
    policy: str | None = None  # the spec's rule (oslo.policy language); None: any valid token
    policy_target: Mapping[str, str] = field(default_factory=dict)  # path param -> template
    since: tuple[int, int] | None = None  # the API microversion that brings the operation
    until: tuple[int, int] | None = None  # the last API microversion that has it


def _route_path(route: Route) -> str:
    path = route.path
    for name in route.match_path:
        path = path.replace("{" + name + "}", "{" + name + ":path}")
    return path


def _order(route: Route) -> tuple[int, int, str, int]:
    # Literal segments before parameters (/servers/detail before /servers/{id}),
    # path-matching parameters last, HEAD before GET on one path.
    return (
        len(route.match_path),
        route.path.count("{"),
        route.path,
        0 if route.method == "HEAD" else 1,
    )


class ApiApp:
    """Turns HTTP requests into calls of generated handlers, and replies into responses."""

    def __init__(self, rt: ServiceRuntime, *, error_format: str, identity_url: str) -> None:
        self.rt = rt
        self.error_format = error_format
        self.identity_url = identity_url
        api = _api_of(rt)
        mv = api.get("microversion") if api else None
        self.request_id_headers: tuple[str, ...] = tuple(
            (api or {}).get("request_id_headers") or ()
        )
        self.versions = Microversions.of(mv) if isinstance(mv, dict) else None

    def build(self, routes: Sequence[Route], *, title: str) -> Starlette:
        # Plain Starlette: requests are parsed and checked against the spec's models here,
        # so FastAPI's layers (dependency solving, telemetry, its body limit and exit
        # stack, four more calls deep on every request, internal ones too) only cost time.
        app = ApiStarlette(self)
        app.state.title = title
        table = [
            StarletteRoute(
                _route_path(route),
                self._endpoint(route),
                methods=[route.method],
                name=route.operation_id,
                include_in_schema=False,
            )
            for route in sorted(routes, key=_order)
        ]
        table.append(StarletteRoute("/specstack/health", self._health))
        table.append(StarletteRoute("/specstack/trace/{flow_id}", self._trace))
        # a request tries the routes of its path's literal prefix, not all of them
        app.router = IndexedRouter(table)
        app.add_exception_handler(StarletteHTTPException, self._unrouted)
        return app

    async def _unrouted(self, request: Request, exc: Exception) -> Response:
        """No route for the path (404) or the method (405): in the service's error format."""
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        headers = dict(exc.headers or {}) if isinstance(exc, StarletteHTTPException) else {}
        if status == 404:
            err: ApiError = NotFound("The resource could not be found.", kind="HTTPNotFound")
        elif status == 405:
            err = ApiError(
                f"The method {request.method} is not allowed for this resource.",
                status=405,
                kind="HTTPMethodNotAllowed",
            )
            err.title = "Method Not Allowed"
        else:
            err = ApiError(str(getattr(exc, "detail", "") or "Error"), status=status)
        err.headers.update(headers)
        call = Call(
            rt=self.rt,
            trigger="unrouted",
            kind="operation",
            request_id=new_request_id(),
            global_request_id="",
        )
        return self._error(call, err)

    def _endpoint(self, route: Route) -> Any:
        async def endpoint(request: Request) -> Response:
            return await self.handle(route, request)

        endpoint.__name__ = route.operation_id
        return endpoint

    async def handle(self, route: Route, request: Request) -> Response:
        # The body is not read here: the token comes first, then the body, with a limit.
        call = self._call(route, request)
        bound = logs.bind(LogContext(self.rt.component, call.request_id, call.global_request_id))
        started = time.perf_counter()
        response: Response | None = None
        try:
            response = await self._serve(route, call, request)
            return response
        finally:
            if log.isEnabledFor(logs.request_level()):
                self._access_log(call, response, time.perf_counter() - started)
            logs.unbind(bound)

    def _access_log(self, call: Call, response: Response | None, elapsed: float) -> None:
        auth = call.auth
        ctx = LogContext(
            self.rt.component,
            call.request_id,
            call.global_request_id,
            auth.user_id if auth else "-",
            (auth.project_id or "-") if auth else "-",
        )
        status = response.status_code if response is not None else 500
        length = response.headers.get("content-length", "0") if response is not None else "0"
        with logs.bound(ctx):
            log.log(
                logs.request_level(),
                '"%s %s" status: %s len: %s time: %.7f',
                call.method,
                call.path,
                status,
                length,
                elapsed,
            )

    async def _serve(self, route: Route, call: Call, request: Request) -> Response:
        try:
            flow = Flow(call, route.handler)
            # The token and the policy come first: a caller without them is refused
            # before the request's body is read (or its resources looked up); the body
            # is then read up to the operation's limit, and parsed.
            if route.requires_token:
                flow.authorize = lambda auth: self._authorize(route, call, auth)
                if not call.token:
                    raise Unauthorized("The request you have made requires authentication.")
                if not route.handler.auth_in_steps:
                    await flow.authenticate()
                if self.versions is not None:
                    call.microversion = self.versions.negotiate(call.headers)
                if call.microversion and (
                    (route.since and call.microversion < route.since)
                    or (route.until and call.microversion > route.until)
                ):
                    raise NotFound("The resource could not be found.")
            call.raw_body = await read_body(request, self._body_limit(route))
            flow.prepare = lambda: self._parse_body(route, call)
            if not (route.requires_token and route.handler.auth_in_steps):
                flow.ready()
            entry = (
                bool(route.handler.entry)
                and (
                    call.sequence,
                    call.trigger_label,
                )
                == route.handler.entry
            )
            if entry:
                self.rt.trace.alias(call.request_id, call.global_request_id)
            started = time.time()
            try:
                await route.handler.run(flow)
            finally:
                if entry and call.auth is not None and call.auth.project_id:
                    # whose flow it is: that project may read its trace (the dashboard's view)
                    self.rt.trace.own(call.global_request_id, call.auth.project_id)
            reply: Reply | None = call.reply or Reply(status=204)
            await records.handled(call, started)  # rows the spec records of an answer
        except ApiError as err:
            return self._error(call, err)
        except StepFailed as err:
            status = err.code if 400 <= err.code < 500 else 500
            return self._error(call, ApiError(err.message, status=status))
        except Exception as err:
            reply = await self._on_error(route, call, err)
            if reply is None:
                log.exception("%s %s failed [%s]", route.method, route.path, call.request_id)
                return self._error(
                    call,
                    ApiError(
                        "The server has either erred or is incapable "
                        "of performing the requested operation."
                    ),
                )
        return self._response(call, reply or Reply(status=204))

    def _body_limit(self, route: Route) -> int:
        config = self.rt.config
        return body_limit(
            route.request_content_type,
            json_limit=config.max_body_bytes,
            data_limit=config.max_data_body_bytes,
        )

    def _call(self, route: Route, request: Request) -> Call:
        # The few headers read here, from the scope's list (ASGI names are lower case; the
        # first of a repeated one counts, as in Headers): Headers.get scans it per name.
        raw: dict[bytes, bytes] = dict(reversed(request.scope["headers"]))
        request_id = new_request_id()
        inbound = _text(raw.get(b"x-openstack-request-id")) or ""
        traced = signed_base_id(
            _text(raw.get(b"x-trace-info")),
            _text(raw.get(b"x-trace-hmac")),
            self.rt.config.osprofiler_hmac_keys,
        )
        if traced:  # a client's OSProfiler trace: its base id names the flow
            inbound = f"req-{traced}"
        sequence = _text(raw.get(b"x-specstack-sequence")) or None
        return Call(
            rt=self.rt,
            trigger=route.operation_id,
            kind="operation",
            request_id=request_id,
            global_request_id=inbound if _REQUEST_ID.fullmatch(inbound) else request_id,
            sequence=sequence,
            trigger_label=_text(raw.get(b"x-specstack-step")) if sequence else None,
            method=route.method,
            path=_path(request),
            path_params={k: str(v) for k, v in request.path_params.items()},
            query=_multi(request),
            headers=request.headers,
            token=_text(raw.get(b"x-auth-token")),
            policy=route.policy,
        )

    def _parse_body(self, route: Route, call: Call) -> None:
        check_parameters(call.path_params, call.query)
        ctype = (call.headers.get("content-type") or "").split(";")[0].strip().lower()
        raw = call.raw_body
        if not raw:
            if route.request_model is not None and route.request_content_type in _JSON_TYPES:
                raise BadRequest("The request body is missing.")
            return
        if route.request_content_type == "application/octet-stream":
            return
        if ctype and ctype not in _JSON_TYPES and not ctype.endswith("+json"):
            if route.request_content_type in _JSON_TYPES:
                raise ApiError(f"Unsupported Content-Type {ctype}", status=415)
            return
        try:
            call.body = jsoncodec.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"Malformed request body: {exc}") from None
        check_body_strings(call.body)
        if route.request_model is not None:
            try:
                route.request_model.model_validate(call.body)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = "/".join(str(p) for p in err.get("loc", ())) or "body"
                raise BadRequest(
                    f"Invalid input for field/attribute {where}: {err.get('msg', 'invalid')}"
                ) from None

    def _authorize(self, route: Route, call: Call, auth: AuthContext) -> None:
        """The operation's policy rule (from the spec) against the caller and the path."""
        self.rt.info.policy.authorize(
            route.operation_id, route.policy, auth, call.path_params, route.policy_target
        )

    async def _on_error(self, route: Route, call: Call, err: BaseException) -> Reply | None:
        name = route.handler.on_error
        if not name:
            return None
        result = await registry.get(name)(call, err)
        return result if isinstance(result, Reply) else None

    def _headers(self, call: Call) -> dict[str, str]:
        headers = {"x-openstack-request-id": call.request_id}
        for name in self.request_id_headers:
            headers[name] = call.request_id
        if self.versions is not None:
            headers.update(self.versions.answer_headers(call.microversion))
        return headers

    def _response(self, call: Call, reply: Reply) -> Response:
        headers = {**self._headers(call), **reply.headers}
        body = reply.body
        if body is None:
            return Response(
                status_code=reply.status, headers=headers, media_type=reply.content_type
            )
        if isinstance(body, bytes | bytearray):
            return Response(
                bytes(body), reply.status, headers, reply.content_type or "application/octet-stream"
            )
        if isinstance(body, str):
            return Response(body, reply.status, headers, reply.content_type or "text/plain")
        content = jsoncodec.dumps(body)
        return Response(content, reply.status, headers, reply.content_type or "application/json")

    def _error(self, call: Call, err: ApiError) -> Response:
        content, ctype = render(self.error_format, err)
        headers = {**self._headers(call), **err.headers}
        if err.status == 401:
            headers.setdefault("WWW-Authenticate", f'Keystone uri="{self.identity_url}"')
        if call.method == "HEAD":  # what GET would answer, without its body
            return Response(status_code=err.status, headers=headers, media_type=ctype)
        return Response(content, err.status, headers, ctype)

    async def _health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', 200, media_type="application/json")

    async def _trace(self, request: Request) -> Response:
        """The recorded steps of one flow (by flow id or nova's request id): for an admin,
        or for the project whose token started it."""
        call = Call(
            rt=self.rt,
            trigger="trace",
            kind="operation",
            request_id=new_request_id(),
            global_request_id="",
            token=request.headers.get("x-auth-token"),
        )
        try:
            if not call.token or self.rt.auth is None:
                raise Unauthorized("The request you have made requires authentication.")
            auth = await self.rt.auth.validate(call.token)
            flow_id = request.path_params["flow_id"]
            # the toolkit's own endpoint: its rule is spec/policy.yaml's `specstack:trace`,
            # its target the flow's owner (the project whose token started it, if known)
            self.rt.info.policy.authorize(
                TRACE_RULE,
                f"rule:{TRACE_RULE}",
                auth,
                {},
                target={"project_id": self.rt.trace.owner(flow_id)},
            )
        except ApiError as err:
            return self._error(call, err)
        events = self.rt.trace.events(flow_id)
        body = {"flow_id": self.rt.trace.resolve(flow_id), "events": events}
        return Response(json.dumps(body).encode(), 200, media_type="application/json")


class ApiStarlette(Starlette):
    """An API's Starlette app, which also answers a request of this process directly."""

    def __init__(self, api: ApiApp) -> None:
        super().__init__()
        self.api = api

    async def answer(self, scope: Scope, receive: Receive) -> Response | None:
        """The response to an in-process request (`localhttp.call_app`), not sent: the
        matched route's endpoint called as the app's layers would call it, without them
        (the server-error layer re-raises what it catches, so a caller in this process sees
        the same exception either way; an HTTP exception is the app's handler's answer).
        None: no route matches outright (a 404, a 405), for the whole app to answer."""
        scope["app"] = self
        router = self.router
        route = router.find(scope) if isinstance(router, IndexedRouter) else None
        if not isinstance(route, StarletteRoute):
            return None
        request = Request(scope, receive)
        try:
            response: Response = await route.endpoint(request)
        except StarletteHTTPException as exc:
            return await self.api._unrouted(request, exc)
        return response


def _api_of(rt: ServiceRuntime) -> dict[str, Any] | None:
    """The IR entry of the API this component serves (None when it serves none)."""
    try:
        name = rt.info.components[rt.component].get("api")
        api = rt.info.apis.get(name) if name else None
    except (AttributeError, KeyError, TypeError):
        return None
    return api if isinstance(api, dict) else None


# What `request.url.path` makes of the scope's path (it builds and parses the whole URL):
# what would end a URL's path escaped, the tabs and line ends a URL parser drops dropped.
_URL_PATH = str.maketrans({"?": "%3F", "#": "%23", "\\": "%5C", "\t": None, "\r": None, "\n": None})


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _path(request: Request) -> str:
    path: str = request.scope["path"]
    return path.translate(_URL_PATH)


def _multi(request: Request) -> dict[str, list[str]]:
    if not request.scope.get("query_string"):
        return {}  # most requests have none: no parse
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out
