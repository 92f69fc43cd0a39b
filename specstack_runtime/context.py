"""What a behaviour is given: the call it serves, the runtime of its component, its step."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers

from specstack_runtime.errors import Unauthorized

if TYPE_CHECKING:
    from specstack_runtime.services import ServiceRuntime


def random_uuid() -> str:
    """`str(uuid.uuid4())`, made without a UUID object (its checks and conversions cost
    a dozen calls; every request and message takes one or two), from random bytes read
    from the OS many ids at a time (one system call each, which lets go of the GIL: the
    event loop then waited for the stores' threads, per id)."""
    try:
        h = _RANDOM.pop()  # atomic: no two threads take the same bytes
    except IndexError:
        h = _refill()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_BATCH = 256  # ids' worth of random bytes read at once
_RANDOM: list[str] = []  # 16 random bytes each, as hex, not handed out yet


def _refill() -> str:
    data = os.urandom(16 * _BATCH).hex()
    _RANDOM.extend(data[i : i + 32] for i in range(32, len(data), 32))
    return data[:32]


# a forked child must not hand out the ids its parent still holds
os.register_at_fork(after_in_child=_RANDOM.clear)


# RFC 4122's variant: the top two bits of the clock sequence are 10.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_request_id() -> str:
    return f"req-{random_uuid()}"


@dataclass(frozen=True)
class AuthContext:
    """A validated keystone token: who is calling, in which project, with which roles."""

    token: str
    user_id: str
    user_name: str
    project_id: str | None
    project_name: str | None
    domain_id: str
    roles: tuple[str, ...]
    expires_at: str
    catalog: tuple[dict[str, Any], ...] = ()
    body: Mapping[str, Any] = field(default_factory=dict)  # the token body as keystone returned it

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def has_role(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)


@dataclass
class Reply:
    """An HTTP answer from an operation behaviour. `body` is JSON-able data, bytes, or None."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None  # default: application/json for data, octet-stream for bytes


@dataclass
class Call:
    """One handling of a trigger (an HTTP operation or a queue message) by a component.

    `vars` is the flow's working memory: what earlier steps of this handler stored
    for later ones. `args` are the static arguments the spec gives the behaviour.
    """

    rt: ServiceRuntime
    trigger: str  # operationId or message name
    kind: str  # "operation" | "message" | "flow"
    request_id: str
    global_request_id: str
    sequence: str | None = None
    trigger_label: str | None = None  # the step that triggered this handler, e.g. "10"
    vars: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    auth: AuthContext | None = None
    # HTTP operations
    method: str = ""
    path: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    raw_body: bytes = b""
    microversion: tuple[int, int] | None = None  # the one negotiated, for an API that has them
    # queue messages
    payload: dict[str, Any] = field(default_factory=dict)
    context: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # the user token the flow carries (HTTP header or bus context)
    reply: Reply | None = None  # an operation's answer, once its behaviour has run
    result: Any = None  # a message handler's reply (calls)
    policy: str | None = None  # the operation's policy rule (spec), for `authorize`

    def header(self, name: str) -> str | None:
        """A request header, whatever the case of its name (test calls pass plain dicts)."""
        value = self.headers.get(name)
        if value is not None:
            return str(value)
        if isinstance(self.headers, Headers):  # a request's: its names are already any case
            return None
        low = name.lower()
        return next((str(v) for k, v in self.headers.items() if k.lower() == low), None)

    def q(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def require_auth(self) -> AuthContext:
        if self.auth is None:
            raise Unauthorized("The request you have made requires authentication.")
        return self.auth

    def enforce(self, arg: str, target: Mapping[str, Any] | None = None) -> AuthContext:
        """A further rule the spec gives this operation in `x-specstack-args` under `arg`
        (e.g. who may force a host): Forbidden if it does not allow the caller."""
        auth = self.require_auth()
        rule = self.args.get(arg)
        if not isinstance(rule, str):
            raise RuntimeError(f"{self.trigger}: the spec gives no rule {arg!r} (x-specstack-args)")
        name = rule.removeprefix("rule:")
        self.rt.info.policy.authorize(name, rule, auth, {}, None, target=dict(target or {}))
        return auth

    def authorize(self, target: Mapping[str, Any]) -> AuthContext:
        """The operation's own policy rule again, with `target` (the object the behaviour
        found, such as the token being checked) as its target: Forbidden if it does not allow.
        The HTTP app has checked it already against what the path names."""
        auth = self.require_auth()
        self.rt.info.policy.authorize(self.trigger, self.policy, auth, {}, None, target=target)
        return auth

    def flow_context(self, label: str | None = None) -> dict[str, str]:
        """What travels with outgoing calls and messages so the callee joins this flow."""
        ctx = {"request_id": self.request_id, "global_request_id": self.global_request_id}
        if self.sequence:
            ctx["sequence"] = self.sequence
        if label:
            ctx["step"] = label
        if self.token:
            ctx["auth_token"] = self.token
        return ctx


Invoke = Callable[..., Awaitable[Any]]


@dataclass
class Interaction:
    """One interaction a step behaviour carries out, with its transport already bound.

    `invoke` performs the interaction itself (an HTTP call to the operation, a cast or
    call of the message, a driver method, or the trigger's own behaviour for sql);
    the behaviour prepares its arguments and keeps what it needs of the result.
    """

    call: Call
    label: str | None  # step label in the current flow, None outside a flow
    source: str
    target: str
    via: str
    name: str | None  # operation, message or driver method
    invoke: Invoke
    bindings: dict[str, Any] = field(default_factory=dict)  # the spec's `with:`
    save_as: str | None = None  # the spec's `as:`

    @property
    def vars(self) -> dict[str, Any]:
        return self.call.vars

    @property
    def rt(self) -> ServiceRuntime:
        return self.call.rt
