"""The message bus contract shared by every bus implementation.

Semantics follow oslo.messaging over RabbitMQ so that an AMQP bus can be added
behind the same interface: casts and calls go to durable, competing-consumer
queues; fanouts go to every live subscriber; calls get exactly one reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field

from specstack_runtime.context import random_uuid

logger = logging.getLogger(__name__)

Pattern = Literal["cast", "call", "fanout"]

# Kept bounded so a misbehaving consumer cannot grow memory without limit.
MAX_RECORDED_FAILURES = 1000


class BusError(Exception):
    """Base class of every bus failure."""


class MessagingTimeout(BusError, TimeoutError):
    """No reply arrived for a call within its timeout."""


class RemoteError(BusError):
    """The consumer of a call raised; carries the remote exception's type and text."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


@dataclass(frozen=True)
class CheckedBy:
    """The models a sender checked a message's payload with, and checks its reply with.

    An in-process bus hands them to the consumer with the message, so a consumer with
    the same models need not check the payload, or its reply, a second time. A network
    bus never does: what arrives off the wire is always checked.
    """

    payload: type[BaseModel]
    reply: type[BaseModel] | None = None


class Envelope(BaseModel):
    """One message on the bus; everything in it must be JSON-serialisable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    msg_id: str = Field(default_factory=random_uuid)
    topic: str
    method: str
    payload: dict[str, Any] = Field(default_factory=dict)
    pattern: Pattern
    host: str | None = None
    reply_to: str | None = None
    # request_id, global_request_id and trace ids travel here, never in payload.
    context: dict[str, str] = Field(default_factory=dict)
    sent_at: float = Field(default_factory=time.time)

    @property
    def queue(self) -> str:
        """Name of the queue this envelope is delivered to."""
        return qualified_topic(self.topic, self.host)


class Failure(BaseModel):
    """What a failed handler reports back to a caller."""

    model_config = ConfigDict(frozen=True)

    exc_type: str
    message: str


class Reply(BaseModel):
    """The answer to a call, correlated by the call's msg_id."""

    model_config = ConfigDict(frozen=True)

    msg_id: str
    result: dict[str, Any] | None = None
    failure: Failure | None = None

    def unwrap(self) -> dict[str, Any]:
        """Return the result or raise the remote failure as RemoteError."""
        if self.failure is not None:
            raise RemoteError(self.failure.exc_type, self.failure.message)
        return self.result or {}


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A handler failure kept for observability (casts would otherwise vanish)."""

    msg_id: str
    queue: str
    method: str
    pattern: Pattern
    exc_type: str
    message: str
    at: float


Handler = Callable[[Envelope], Awaitable[dict[str, Any] | None]]


def wire_copy(obj: dict[str, Any]) -> dict[str, Any]:
    """Copy through JSON, as a network bus would, so non-serialisable payloads fail at the sender."""
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise BusError(f"payload is not JSON-serialisable: {exc}") from exc
    return copied


def qualified_topic(topic: str, host: str | None) -> str:
    """Queue name for host-qualified delivery: nova's ``<topic>.<host>`` convention."""
    return topic if host is None else f"{topic}.{host}"


class Subscription(ABC):
    """A live consumer; cancel() stops it after its in-flight message."""

    queue: str
    fanout: bool

    @abstractmethod
    async def cancel(self) -> None: ...


class Bus(ABC):
    """Abstract bus. Implementations must pass tests/runtime/test_bus_contract.py."""

    #: Whether casts and calls not yet handled outlive a crash of the processes (a broker
    #: redelivers them); start-up recovery (spec/resources `states.recover`) reads it.
    durable: bool = False
    #: How many messages one consumer may hold unacked: what a broker redelivers at most
    #: when a connection drops (0: this bus never redelivers).
    unacked_limit: int = 0
    #: What senders checked, by msg_id, for consumers in this process (see CheckedBy):
    #: None on a network bus, where what arrives off the wire is always checked.
    _checks: dict[str, CheckedBy] | None = None

    def __init__(self, reply_queue: str | None = None) -> None:
        self._failures: deque[DeliveryFailure] = deque(maxlen=MAX_RECORDED_FAILURES)
        self._failure_count = 0
        self._state: Literal["new", "started", "closed"] = "new"
        # Calls waiting for their reply, by msg_id; replies come back to `_reply_queue`.
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._reply_queue = reply_queue or f"reply_{uuid.uuid4().hex}"
        self._consumers: set[Subscription] = set()  # the live ones, cancelled by close()

    def _check_open(self) -> None:
        if self._state == "new":
            raise BusError("bus is not started")
        if self._state == "closed":
            raise BusError("bus is closed")

    def _envelope(
        self,
        pattern: Pattern,
        topic: str,
        method: str,
        payload: dict[str, Any],
        host: str | None,
        context: dict[str, str] | None,
        *,
        reply_to: str | None = None,
        checked_by: CheckedBy | None = None,
    ) -> Envelope:
        """An outgoing message, its payload copied as a network bus would carry it."""
        self._check_open()
        if not topic or not method:
            raise ValueError("topic and method must be non-empty")
        envelope = Envelope(
            topic=topic,
            method=method,
            payload=wire_copy(payload),
            pattern=pattern,
            host=host,
            reply_to=reply_to,
            context=dict(context or {}),
        )
        if checked_by is not None and self._checks is not None:
            self._checks[envelope.msg_id] = checked_by
        return envelope

    def checked_by(self, envelope: Envelope) -> CheckedBy | None:
        """What the sender of a message being handled checked it with, if it is known."""
        return None if self._checks is None else self._checks.get(envelope.msg_id)

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Get ready to carry messages; a started bus stays as it is."""
        if self._state == "closed":
            raise BusError("a closed bus cannot be restarted")
        if self._state == "new":
            await self._open()
            self._state = "started"

    @abstractmethod
    async def _open(self) -> None:
        """What the bus needs before it carries messages (a network bus: its connection)."""

    async def close(self) -> None:
        """Cancel every subscription, fail the calls still waiting, then `_shut`."""
        if self._state == "closed":
            return
        was, self._state = self._state, "closed"
        await asyncio.gather(*(c.cancel() for c in list(self._consumers)))
        self._fail_pending()
        await self._shut(started=was == "started")

    @abstractmethod
    async def _shut(self, *, started: bool) -> None:
        """Let go of what the bus holds once its subscriptions are cancelled."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- messaging -------------------------------------------------------

    async def cast(
        self,
        topic: str,
        method: str,
        payload: dict[str, Any],
        *,
        host: str | None = None,
        context: dict[str, str] | None = None,
        checked_by: CheckedBy | None = None,
    ) -> None:
        """Deliver to exactly one consumer of the (host-qualified) topic; no reply."""
        envelope = self._envelope(
            "cast", topic, method, payload, host, context, checked_by=checked_by
        )
        await self._send_cast(envelope)

    @abstractmethod
    async def _send_cast(self, envelope: Envelope) -> None:
        """Put a cast's envelope on its queue (`envelope.queue`)."""

    async def call(
        self,
        topic: str,
        method: str,
        payload: dict[str, Any],
        *,
        host: str | None = None,
        context: dict[str, str] | None = None,
        timeout: float = 30.0,
        checked_by: CheckedBy | None = None,
    ) -> dict[str, Any]:
        """Deliver to one consumer and wait for its reply.

        Raises MessagingTimeout when no reply arrives in time (sending included) and
        RemoteError when the consumer's handler raised.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        envelope = self._envelope(
            "call",
            topic,
            method,
            payload,
            host,
            context,
            reply_to=self._reply_queue,
            checked_by=checked_by,
        )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[envelope.msg_id] = future

        async def send_and_wait() -> Reply:
            await self._send_call(envelope, timeout)
            return await future

        try:
            reply = await asyncio.wait_for(send_and_wait(), timeout)
        except TimeoutError:
            raise MessagingTimeout(
                f"timed out after {timeout}s waiting for a reply to {method!r} "
                f"on {envelope.queue!r} (msg_id {envelope.msg_id})"
            ) from None
        finally:
            self._pending.pop(envelope.msg_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # failed by close() while still sending: seen here
        return reply.unwrap()

    @abstractmethod
    async def _send_call(self, envelope: Envelope, timeout: float) -> None:
        """Put a call's envelope on its way; its reply comes to `_reply_received`."""

    async def fanout(
        self,
        topic: str,
        method: str,
        payload: dict[str, Any],
        *,
        hosts: Collection[str] | None = None,
        context: dict[str, str] | None = None,
    ) -> None:
        """Deliver to every fanout subscriber of topic; dropped if there are none.

        `hosts`, when given, are the hosts the message concerns (e.g. a port's old and new
        binding): a bus may leave out subscribers that subscribed for another host, whose
        handlers would find nothing to do; subscribers without a host always get it.
        """
        envelope = self._envelope("fanout", topic, method, payload, None, context)
        await self._send_fanout(envelope, hosts)

    @abstractmethod
    async def _send_fanout(self, envelope: Envelope, hosts: Collection[str] | None) -> None:
        """Put a fanout's envelope before the subscribers of `envelope.topic`."""

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        host: str | None = None,
        fanout: bool = False,
    ) -> Subscription:
        """Consume the (host-qualified) topic queue, or the topic's fanout (`host` then
        names the subscriber's host, for fanouts that say which hosts they concern)."""
        self._check_open()
        if not topic:
            raise ValueError("topic must be non-empty")
        return await self._subscribe(topic, handler, host, fanout)

    @abstractmethod
    async def _subscribe(
        self, topic: str, handler: Handler, host: str | None, fanout: bool
    ) -> Subscription:
        """Start the consumer `subscribe` asked for, on this open bus."""

    # -- observability ---------------------------------------------------

    @property
    def failed_deliveries(self) -> tuple[DeliveryFailure, ...]:
        """The most recent handler failures, oldest first."""
        return tuple(self._failures)

    @property
    def failure_count(self) -> int:
        """How many handler failures happened since the bus was created."""
        return self._failure_count

    # -- helpers for implementations -------------------------------------

    async def _invoke(self, handler: Handler, envelope: Envelope) -> Reply:
        """Run a handler, turning any exception into a recorded Failure reply.

        Shared so every implementation has the same failure semantics; it never
        raises (except cancellation), which keeps consumer loops alive.
        """
        try:
            result = await handler(envelope)
            if result is not None and not isinstance(result, dict):
                raise TypeError(f"handler returned {type(result).__name__}, expected dict or None")
        except Exception as exc:
            self._record_failure(envelope, exc)
            return Reply(
                msg_id=envelope.msg_id,
                failure=Failure(exc_type=type(exc).__name__, message=str(exc)),
            )
        return Reply(msg_id=envelope.msg_id, result=result or {})

    def _record_failure(self, envelope: Envelope, exc: BaseException) -> None:
        self._failure_count += 1
        self._failures.append(
            DeliveryFailure(
                msg_id=envelope.msg_id,
                queue=envelope.queue,
                method=envelope.method,
                pattern=envelope.pattern,
                exc_type=type(exc).__name__,
                message=str(exc),
                at=time.time(),
            )
        )
        logger.error(
            "handler for %s %s on %s failed (msg_id=%s)",
            envelope.pattern,
            envelope.method,
            envelope.queue,
            envelope.msg_id,
            exc_info=exc,
        )

    # -- replies -----------------------------------------------------------

    def _reply_received(self, reply: Reply) -> None:
        """Hand a reply to the call waiting for it (none: the caller gave up)."""
        future = self._pending.get(reply.msg_id)
        if future is not None and not future.done():
            future.set_result(reply)

    def _waiting(self, msg_id: str) -> bool:
        """Whether a call of this bus still waits for the reply to `msg_id`."""
        future = self._pending.get(msg_id)
        return future is not None and not future.done()

    def _fail_pending(self) -> None:
        """Closing: every call still waiting fails."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BusError("bus closed before the reply arrived"))
        self._pending.clear()


def wire_reply(reply: Reply) -> Reply:
    """The reply as the wire carries it: a result that is not JSON becomes a failure."""
    if reply.result is None:
        return reply
    try:
        return Reply(msg_id=reply.msg_id, result=wire_copy(reply.result))
    except BusError as exc:
        return Reply(msg_id=reply.msg_id, failure=Failure(exc_type="TypeError", message=str(exc)))
