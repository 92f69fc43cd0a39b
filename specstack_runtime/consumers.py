"""Queue consumers: each message a component consumes runs its generated handler."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from specstack_runtime import logs, onfailure, registry
from specstack_runtime.bus import Envelope, Subscription
from specstack_runtime.context import Call, new_request_id
from specstack_runtime.errors import Dropped
from specstack_runtime.flow import Flow, HandlerSpec
from specstack_runtime.logs import LogContext
from specstack_runtime.messaging import InvalidMessage
from specstack_runtime.resources import records
from specstack_runtime.services import ServiceRuntime

log = logging.getLogger("specstack.worker")

#: Cast ids a dispatcher remembers to recognise a redelivered duplicate (at-least-once bus),
#: or twice the bus's `unacked_limit` if more: a broker redelivers what was unacked when a
#: connection dropped (RabbitMQ's prefetch, 16 by default; oslo.messaging remembers 16).
#: 10,000 held some 1.5 MB a busy queue.
SEEN_CASTS = 1024


@dataclass(frozen=True)
class Consumer:
    """A message a component consumes, with its generated handler and payload model."""

    message: str
    topic: str
    method: str
    pattern: str  # cast | call | fanout
    per_host: bool
    handler: HandlerSpec
    payload_model: type[BaseModel]
    reply_model: type[BaseModel] | None = None


class Dispatcher:
    """One queue (topic, maybe host-qualified) and the handlers of the methods sent on it."""

    def __init__(self, rt: ServiceRuntime, consumers: Sequence[Consumer]) -> None:
        self.rt = rt
        self.by_method = {c.method: c for c in consumers}
        self.rejected = 0
        self.duplicates = 0
        self.dropped = 0  # messages a behaviour found stale (errors.Dropped)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.remembers = max(SEEN_CASTS, 2 * rt.bus.unacked_limit)

    async def __call__(self, env: Envelope) -> dict[str, Any] | None:
        if env.pattern != "call":
            # A broker that lost our ack (e.g. restarted mid-handling) delivers the cast
            # again; handling it twice would build the same instance twice. Like
            # oslo.messaging's duplicate-message check, drop a cast already taken here.
            if env.msg_id in self._seen:
                self.duplicates += 1
                log.warning(
                    "%s dropped a duplicate delivery of %s (msg_id %s): already handled here",
                    self.rt.component,
                    env.method,
                    env.msg_id,
                )
                return None
            self._seen[env.msg_id] = None
            if len(self._seen) > self.remembers:
                self._seen.popitem(last=False)
        consumer = self.by_method.get(env.method)
        if consumer is None:
            self.rejected += 1
            raise InvalidMessage(f"{self.rt.component} does not handle {env.topic}.{env.method}")
        # a sender in this process that checked it against the same model: not twice
        checked_by = self.rt.bus.checked_by(env)
        try:
            if checked_by is None or checked_by.payload is not consumer.payload_model:
                consumer.payload_model.model_validate(env.payload)
        except ValidationError as exc:
            self.rejected += 1
            err = exc.errors()[0]
            where = "/".join(str(p) for p in err.get("loc", ())) or "(top level)"
            log.error(
                "%s rejected %s: payload at %s: %s",
                self.rt.component,
                env.method,
                where,
                err.get("msg"),
            )
            raise InvalidMessage(f"{env.method} payload at {where}: {err.get('msg')}") from None
        ctx = env.context
        sequence = ctx.get("sequence") or None
        call = Call(
            rt=self.rt,
            trigger=consumer.message,
            kind="message",
            request_id=new_request_id(),
            global_request_id=ctx.get("global_request_id") or ctx.get("request_id") or env.msg_id,
            sequence=sequence,
            trigger_label=ctx.get("step") if sequence else None,
            payload=env.payload,
            context=dict(ctx),
            token=ctx.get("auth_token"),
        )
        bound = logs.bind(LogContext(self.rt.component, call.request_id, call.global_request_id))
        started = time.perf_counter()
        begun = time.time()
        flow = Flow(call, consumer.handler)
        try:
            await consumer.handler.run(flow)
            await self.rt.settle()  # before the reply or the ack
            await records.handled(call, begun)
            log.log(
                logs.request_level(),
                "handled %s %s.%s in %.1f ms",
                consumer.pattern,
                env.topic,
                env.method,
                (time.perf_counter() - started) * 1000,
            )
        except Dropped as exc:
            self.dropped += 1
            log.warning("%s dropped %s.%s: %s", self.rt.component, env.topic, env.method, exc)
            return None
        except Exception as exc:
            await records.handled(call, begun, exc)
            log.warning(
                "%s %s.%s failed after %.1f ms: %s: %s",
                consumer.pattern,
                env.topic,
                env.method,
                (time.perf_counter() - started) * 1000,
                type(exc).__name__,
                exc,
            )
            if consumer.handler.on_failure is not None:
                await onfailure.run(flow, exc, consumer.handler.on_failure)
            result = None
            if consumer.handler.on_error:
                result = await registry.get(consumer.handler.on_error)(call, exc)
            await self.rt.settle()  # what the failure changed, before it is answered
            if consumer.pattern == "call" and isinstance(result, dict):
                return result
            raise
        finally:
            logs.unbind(bound)
        if consumer.pattern != "call":
            return None
        reply = call.result if isinstance(call.result, dict) else {}
        if consumer.reply_model is not None and (
            checked_by is None or checked_by.reply is not consumer.reply_model
        ):  # else the caller checks it against the same model
            consumer.reply_model.model_validate(reply)
        return reply


async def start_consumers(rt: ServiceRuntime, consumers: Sequence[Consumer]) -> list[Subscription]:
    """Subscribe the component instance `rt` to every queue its consumers listen on."""
    groups: dict[tuple[str, bool, bool], list[Consumer]] = {}
    for c in consumers:
        groups.setdefault((c.topic, c.per_host, c.pattern == "fanout"), []).append(c)
    subs: list[Subscription] = []
    for (topic, per_host, fanout), group in sorted(groups.items()):
        dispatcher = Dispatcher(rt, group)
        subs.append(
            await rt.bus.subscribe(
                # a fanout subscriber names its host too: fanouts concerning others skip it
                topic,
                dispatcher,
                host=rt.host if per_host or fanout else None,
                fanout=fanout,
            )
        )
    return subs
