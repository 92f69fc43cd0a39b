"""Carrying out a handler's steps: each one traced, each through its bound transport.

Generated handlers are straight-line code: one `await flow.step(...)` per
interaction the spec gives the component, in the spec's order. This module is
what each of those lines does: pick the behaviour the spec names, bind the
transport, time it, and record the trace event under the flow's step label.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from specstack_runtime import logs, registry
from specstack_runtime.apiresponse import ApiResponse
from specstack_runtime.bindings import bind, call_scope
from specstack_runtime.context import AuthContext, Call, Interaction, Invoke, Reply
from specstack_runtime.errors import Dropped, StepFailed, Unauthorized
from specstack_runtime.messaging import send
from specstack_runtime.redact import REDACTED
from specstack_runtime.trace import TraceEvent

log = logging.getLogger("specstack.flow")


@dataclass(frozen=True)
class HandlerSpec:
    """A generated handler and what the spec says about it."""

    component: str
    kind: str  # operation | message | user
    trigger: str
    behaviour: str | None
    on_error: str | None
    run: Callable[[Flow], Awaitable[None]]
    occurrences: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    entry: tuple[str, str] | None = None  # (sequence, label) a request from outside starts
    auth_in_steps: bool = False
    args: Mapping[str, Any] = field(default_factory=dict)  # the spec's x-specstack-args
    # a consumer's on_failure steps, generated as their own handler (onfailure.run)
    on_failure: Callable[[Flow], Awaitable[None]] | None = None


@dataclass
class _Capture:
    """What a step's transport was given and gave back, for the trace."""

    calls: int = 0
    sent: Any = None
    status: int | None = None
    received: Any = None


class Flow:
    """One handler run: the call it serves and the step labels it carries in its flow."""

    def __init__(self, call: Call, spec: HandlerSpec) -> None:
        self.call = call
        self.spec = spec
        self.rt = call.rt
        if spec.args and not call.args:
            call.args = dict(spec.args)
        key = (call.sequence or "", call.trigger_label or "")
        labels = spec.occurrences.get(key) if call.sequence else None
        if labels is None and call.sequence is None and spec.entry is not None:
            # A request from outside (e.g. the openstack CLI) starts the flow here.
            call.sequence, call.trigger_label = spec.entry
            labels = spec.occurrences.get(spec.entry)
        self.labels: tuple[str, ...] | None = labels
        self.current_label: str | None = None
        # Set by the HTTP app: the policy check (after the token is validated) and the
        # request's parsing (after that, or before the first step that is not the
        # token's validation), so that a caller without a valid token or the role the
        # operation needs is refused before its body is looked at.
        self.authorize: Callable[[AuthContext], None] | None = None
        self.prepare: Callable[[], None] | None = None
        self._prepared = False

    # what generated code calls ---------------------------------------------
    async def step(
        self,
        index: int,
        title: str,
        target: str,
        via: str,
        name: str | None,
        behaviour: str | None,
        invoke: Invoke,
        *,
        bindings: dict[str, Any] | None = None,
        save_as: str | None = None,
        source: str | None = None,
    ) -> None:
        if invoke != self.authenticate:
            self.ready()
        label = self.labels[index] if self.labels and index < len(self.labels) else None
        capture = _Capture()
        wrapped = self._capturing(invoke, capture)
        ix = Interaction(
            call=self.call,
            label=label,
            source=source or self.spec.component,
            target=target,
            via=via,
            name=name,
            invoke=wrapped,
            bindings=bindings or {},
            save_as=save_as,
        )
        fn = registry.get(behaviour or f"flow.{via}")
        await self._traced(label, title, target, via, name, capture, fn(ix), source=ix.source)

    async def trigger(
        self,
        index: int | None,
        title: str = "",
        target: str = "",
        *,
        bindings: dict[str, Any] | None = None,
    ) -> None:
        """Run the trigger's own behaviour (as the sql step `index`, if the spec has one).

        The step's `with:` (its `{var.path}` placeholders filled from the flow's variables,
        such as what an earlier interaction kept `as:`) reaches the behaviour in `call.args`:
        that is how a result feeds a later decision (the candidates a scheduler chooses from).
        """
        self.ready()
        if bindings:
            self.call.args = {**self.call.args, **bind(bindings, call_scope(self.call))}
        label = (
            self.labels[index]
            if index is not None and self.labels and index < len(self.labels)
            else None
        )
        capture = _Capture(calls=1)
        await self._traced(label, title, target, "sql", None, capture, self._run_behaviour())

    async def authenticate(self) -> AuthContext:
        """Validate the caller's token with the identity service (cached)."""
        call = self.call
        if call.auth is not None:
            return call.auth
        token = call.token
        if not token:
            raise Unauthorized("The request you have made requires authentication.")
        if self.rt.auth is None:
            raise RuntimeError(f"{self.rt.component} has no token validator")
        auth = await self.rt.auth.validate(token)
        call.auth = auth
        if self.authorize is not None:
            self.authorize(auth)
        self.ready()
        return auth

    def ready(self) -> None:
        """Parse the request (once), if the app asked for that to wait until now."""
        # Not before the app has set `prepare` (it reads the body after the token).
        if not self._prepared and self.prepare is not None:
            self._prepared = True
            self.prepare()

    def context(self) -> dict[str, str]:
        """Flow context for the interaction being carried out now."""
        return self.call.flow_context(self.current_label)

    def sender(
        self, message: str, payload_model: type[BaseModel], reply_model: type[BaseModel] | None
    ) -> Invoke:
        """The transport of an amqp step: check the payload against its model, then send."""

        async def invoke(payload: dict[str, Any], host: str | None = None) -> Any:
            try:
                payload_model.model_validate(payload)
            except ValidationError as exc:
                raise StepFailed(
                    f"{message} payload does not match the spec: {_first(exc)}"
                ) from exc
            reply = await send(
                self.call, message, payload, host=host, context=self.context(), checked=True
            )
            if reply is not None and reply_model is not None:
                try:
                    reply_model.model_validate(reply)
                except ValidationError as exc:
                    raise StepFailed(
                        f"{message} reply does not match the spec: {_first(exc)}"
                    ) from exc
            return reply

        return invoke

    async def noop(self) -> None:
        return None

    # internals -------------------------------------------------------------
    async def _run_behaviour(self) -> None:
        if not self.spec.behaviour:
            return
        result = await registry.get(self.spec.behaviour)(self.call)
        if isinstance(result, Reply):
            self.call.reply = result
        else:
            self.call.result = result

    def _capturing(self, invoke: Invoke, capture: _Capture) -> Invoke:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            capture.calls += 1
            if capture.sent is None:
                capture.sent = args[0] if args else kwargs.get("body", _traced_kwargs(kwargs))
            result = await invoke(*args, **kwargs)
            if isinstance(result, ApiResponse):  # a step's behaviour reads the HTTP answer
                result = result.response
            status = getattr(result, "status_code", None)
            if isinstance(status, int):
                capture.status = status
                ctype = result.headers.get("content-type", "")
                if ctype.startswith("application/json") and len(result.content) <= 16384:
                    capture.received = result.content  # decoded only if the trace is read
            elif isinstance(result, dict):
                capture.received = result
            return result

        return wrapped

    async def _traced(
        self,
        label: str | None,
        title: str,
        target: str,
        via: str,
        name: str | None,
        capture: _Capture,
        work: Awaitable[Any],
        source: str | None = None,
    ) -> None:
        previous, self.current_label = self.current_label, label
        started = time.time()
        status: str = "ok"
        detail: dict[str, Any] = {}
        try:
            await work
        except Dropped as exc:  # not carried out: the message was stale
            status, detail = "skipped", {"dropped": str(exc)}
            raise
        except BaseException as exc:
            status, detail = "error", {"error": f"{type(exc).__name__}: {exc}"}
            raise
        finally:
            self.current_label = previous
            if label is not None and log.isEnabledFor(logs.request_level()):
                log.log(
                    logs.request_level(),
                    "step %s %s -> %s via %s %s: %s%s in %.1f ms",
                    label,
                    source or self.spec.component,
                    target,
                    via,
                    name or "-",
                    status,
                    f" ({capture.status})" if capture.status is not None else "",
                    (time.time() - started) * 1000,
                )
            if label is not None and self.call.sequence:
                if status == "ok" and capture.calls == 0:
                    status = "skipped"
                if capture.sent is not None and not isinstance(capture.sent, bytes | bytearray):
                    detail["sent"] = capture.sent
                if capture.status is not None:
                    detail["http_status"] = capture.status
                if capture.received is not None:
                    detail["received"] = capture.received
                # Secrets (the spec's `format: password`, token headers) never reach the trace.
                redact = self.rt.info.redactor
                detail = {k: redact(v) for k, v in detail.items()}
                self.rt.trace.record(
                    TraceEvent(
                        flow_id=self.call.global_request_id,
                        sequence=self.call.sequence,
                        step=label,
                        title=title,
                        source=source or self.spec.component,
                        target=target,
                        via=via,
                        name=name,
                        status=status,
                        started_at=started,
                        ended_at=time.time(),
                        request_id=self.call.request_id,
                        host=self.rt.host,
                        detail=detail,
                    )
                )


def _traced_kwargs(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """A client call's keyword arguments as the trace keeps them: the caller's token
    (the generated clients' `token`, sent as X-Auth-Token) is never kept."""
    if not kwargs:
        return None
    if kwargs.get("token") is not None:
        return {**kwargs, "token": REDACTED}
    return kwargs


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = "/".join(str(p) for p in err.get("loc", ())) or "(top level)"
    return f"{where}: {err.get('msg', 'invalid')}"
