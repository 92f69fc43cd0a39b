"""RabbitMQ binding of the Bus contract (aio-pika), laid out the way oslo.messaging does it.

- casts and calls: persistent messages on durable queues named ``<topic>`` or
  ``<topic>.<host>``, published through the default exchange with publisher
  confirms; consumers compete for them.
- fanout: a fanout exchange ``<topic>_fanout``; each subscriber binds its own
  exclusive, auto-deleted queue, so a fanout with no subscriber is dropped.
- calls: the reply goes to the caller's exclusive reply queue, correlated by
  msg_id; the call message expires in the broker when the caller's timeout ends.
- a message is acked only after its handler finished (and a call's reply was
  published), so a consumer that dies mid-handling gets it redelivered.
- the connection is robust: queues, bindings and consumers come back after a
  broker restart, and a publish that fails meanwhile is retried until it is
  confirmed (or until `publish_timeout`). Delivery is at-least-once.

Every broker-side name starts with the bus's prefix, so stacks and test runs that
share a broker (and vhost) stay apart; the prefix never shows in Envelope or
Subscription names.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, PublishError
from pydantic import ValidationError

from specstack_runtime.bus.base import (
    Bus,
    BusError,
    DeliveryFailure,
    Envelope,
    Handler,
    Reply,
    Subscription,
    qualified_topic,
    wire_reply,
)

logger = logging.getLogger(__name__)

# Errors after which a publish or an ack is worth retrying once the connection is back.
_RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)
_DEADLINE_HEADER = "x-specstack-deadline"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class AmqpOptions:
    """What an ``amqp://`` bus URL says; our own options ride in its query string.

    ``amqp://user:pass@host:5672/vhost?prefix=run1&prefetch=20&publish_timeout=60``
    Other query parameters (heartbeat, ...) are passed on to aio-pika.
    """

    broker_url: str  # the URL without our own options
    prefix: str = ""
    prefetch: int = 16
    publish_timeout: float = 60.0
    reconnect_interval: float = 1.0

    @classmethod
    def from_url(cls, url: str) -> AmqpOptions:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("amqp", "amqps"):
            raise ValueError(f"bus URL {url!r}: not an amqp:// or amqps:// URL")
        ours: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in ("prefix", "prefetch", "publish_timeout", "reconnect_interval"):
                ours[key] = value
            else:
                rest.append((key, value))
        broker = urlunsplit(parts._replace(query=urlencode(rest)))
        try:
            opts = cls(
                broker_url=broker,
                prefix=ours.get("prefix", ""),
                prefetch=int(ours.get("prefetch", cls.prefetch)),
                publish_timeout=float(ours.get("publish_timeout", cls.publish_timeout)),
                reconnect_interval=float(ours.get("reconnect_interval", cls.reconnect_interval)),
            )
        except ValueError as exc:
            raise ValueError(f"bus URL {redact(url)!r}: {exc}") from None
        opts.check()
        return opts

    def check(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"bus prefix {self.prefix!r}: use letters, digits, '_', '.', '-'")
        if self.prefetch < 1:
            raise ValueError(f"bus prefetch must be at least 1, not {self.prefetch}")
        if self.publish_timeout <= 0 or self.reconnect_interval <= 0:
            raise ValueError("bus publish_timeout and reconnect_interval must be positive")


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _AmqpConsumer(Subscription):
    """One basic.consume on its own channel (so its prefetch and cancel are its own)."""

    def __init__(
        self,
        bus: AmqpBus,
        name: str,
        handler: Handler,
        channel: AbstractRobustChannel,
        queue: AbstractQueue,
        *,
        fanout: bool,
    ) -> None:
        self.queue = name
        self.fanout = fanout
        self._bus = bus
        self._handler = handler
        self._channel = channel
        self._amqp_queue = queue
        self._tag: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._close_when_idle = False

    async def start(self) -> None:
        self._tag = await self._amqp_queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Runs in a task of aiormq's channel, which is cancelled when the channel closes;
        # the handler runs in a task of our own so a connection loss cannot cut it short.
        if self._stopping:
            return  # left unacked: the broker requeues it when this channel closes
        task = asyncio.create_task(self._deliver(message), name=f"bus-handler:{self.queue}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._bus._deliver(message, self._handler, self.queue)
        except Exception:
            logger.exception("bus internal error while handling a message on %s", self.queue)
        finally:
            if self._close_when_idle and len(self._tasks) <= 1:
                await self._close_channel()

    async def cancel(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._bus._forget(self)
        if self._tag is not None:
            try:
                # Bounded: with the broker away the cancel would wait for it to come back.
                await asyncio.wait_for(self._amqp_queue.cancel(self._tag), self._bus.drain_timeout)
            except _RETRYABLE as exc:
                logger.debug("cancel of %s: %s (the channel close ends it anyway)", self.queue, exc)
        me = asyncio.current_task()
        others = {t for t in self._tasks if t is not me}
        if others:
            _, pending = await asyncio.wait(others, timeout=self._bus.drain_timeout)
            if pending:
                logger.warning("abandoning %d in-flight message(s) on %s", len(pending), self.queue)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        if me in self._tasks:
            # A handler cancelling its own subscription: close after it acked.
            self._close_when_idle = True
            return
        await self._close_channel()

    async def _close_channel(self) -> None:
        if not self._channel.is_closed:
            try:
                await asyncio.wait_for(self._channel.close(), self._bus.drain_timeout)
            except _RETRYABLE as exc:
                logger.debug("closing the channel of %s: %s", self.queue, exc)


class AmqpBus(Bus):
    """A Bus over RabbitMQ; one robust connection per bus."""

    durable = True  # persistent messages on durable queues, acknowledged once handled

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        prefetch: int | None = None,
        publish_timeout: float | None = None,
        drain_timeout: float = 5.0,
    ) -> None:
        opts = AmqpOptions.from_url(url)
        changes: dict[str, Any] = {}
        if prefix is not None:
            changes["prefix"] = prefix
        if prefetch is not None:
            changes["prefetch"] = prefetch
        if publish_timeout is not None:
            changes["publish_timeout"] = publish_timeout
        if changes:
            opts = AmqpOptions(**{**opts.__dict__, **changes})
            opts.check()
        self.options = opts
        self.unacked_limit = opts.prefetch
        super().__init__(reply_queue=self._name(f"reply_{uuid.uuid4().hex}"))
        self.drain_timeout = drain_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._reply_channel: AbstractRobustChannel | None = None
        self._declared: dict[str, asyncio.Future[AbstractExchange | None]] = {}

    # -- names -----------------------------------------------------------

    def _name(self, queue: str) -> str:
        """The broker-side name of a queue or exchange."""
        return f"{self.options.prefix}.{queue}" if self.options.prefix else queue

    # -- lifecycle -------------------------------------------------------

    async def _open(self) -> None:
        try:
            connection = await aio_pika.connect_robust(
                self.options.broker_url,
                reconnect_interval=self.options.reconnect_interval,
                timeout=self.options.publish_timeout,
                client_properties={"connection_name": f"specstack {self._reply_queue}"},
            )
        except _RETRYABLE as exc:
            raise BusError(
                f"cannot connect to RabbitMQ at {redact(self.options.broker_url)}: {exc}"
            ) from exc
        self._connection = connection
        self._publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._reply_channel = await connection.channel(publisher_confirms=False)
        replies = await self._reply_channel.declare_queue(
            self._reply_queue, exclusive=True, auto_delete=True
        )
        await replies.consume(self._on_reply, no_ack=True)

    async def _shut(self, *, started: bool) -> None:
        for declared in self._declared.values():
            declared.cancel()
        if started and self._connection is not None:
            await self._connection.close()
            await _library_tasks_done()

    # -- messaging -------------------------------------------------------

    async def _send_cast(self, envelope: Envelope) -> None:
        await self._publish(self._message(envelope), queue=envelope.queue)

    async def _send_call(self, envelope: Envelope, timeout: float) -> None:
        deadline = time.time() + timeout
        message = self._message(envelope, deadline=deadline, expiration=timeout)
        await self._publish(message, queue=envelope.queue, deadline=deadline)

    async def _send_fanout(self, envelope: Envelope, hosts: Collection[str] | None) -> None:
        # the fanout exchange reaches every subscriber, as neutron's does: each handler
        # checks whether the message concerns its host (`hosts` spares the in-process bus)
        await self._publish(self._message(envelope), fanout=envelope.topic)

    async def _subscribe(
        self, topic: str, handler: Handler, host: str | None, fanout: bool
    ) -> Subscription:
        try:
            return await asyncio.wait_for(
                self._consume(topic, handler, host, fanout), self.options.publish_timeout
            )
        except _RETRYABLE as exc:
            raise BusError(
                f"could not subscribe to {topic!r}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _consume(
        self, topic: str, handler: Handler, host: str | None, fanout: bool
    ) -> Subscription:
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.options.prefetch)
        if fanout:
            exchange = await channel.declare_exchange(
                self._name(f"{topic}_fanout"), ExchangeType.FANOUT, durable=True
            )
            queue = await channel.declare_queue(
                self._name(f"{topic}_fanout_{uuid.uuid4().hex}"), exclusive=True, auto_delete=True
            )
            await queue.bind(exchange)
            name = topic
        else:
            name = qualified_topic(topic, host)
            queue = await channel.declare_queue(self._name(name), durable=True)
        consumer = _AmqpConsumer(self, name, handler, channel, queue, fanout=fanout)
        await consumer.start()
        self._consumers.add(consumer)
        return consumer

    # -- internals: sending ----------------------------------------------

    @staticmethod
    def _message(
        envelope: Envelope, *, deadline: float | None = None, expiration: float | None = None
    ) -> Message:
        headers: dict[str, Any] = {}
        if deadline is not None:
            # As text: AMQP tables carry floats in single precision, too coarse for epoch times.
            headers[_DEADLINE_HEADER] = f"{deadline:.3f}"
        # The request id also goes in a header, so broker tools show which request a message is.
        if "request_id" in envelope.context:
            headers["request_id"] = envelope.context["request_id"]
        return Message(
            envelope.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=envelope.msg_id,
            correlation_id=envelope.msg_id,
            reply_to=envelope.reply_to,
            expiration=expiration,
            headers=headers,
        )

    async def _declare(self, key: str, declare: Callable[[], Awaitable[Any]]) -> Any:
        """Declare a queue or exchange once per bus (the robust channel redeclares on reconnect)."""
        future = self._declared.get(key)
        if future is None:
            future = self._declared[key] = asyncio.get_running_loop().create_future()
            try:
                declared = await declare()
            except BaseException as exc:
                del self._declared[key]
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved here; the waiters below re-raise it
                raise
            if future.done():  # close() cancelled it meanwhile
                raise BusError("bus closed while declaring " + key)
            future.set_result(declared)
        return await asyncio.shield(future)

    async def _target(self, queue: str | None, fanout: str | None) -> AbstractExchange:
        channel = self._publisher
        assert channel is not None
        if fanout is not None:
            name = self._name(f"{fanout}_fanout")
            exchange: AbstractExchange = await self._declare(
                f"exchange:{name}",
                lambda: channel.declare_exchange(name, ExchangeType.FANOUT, durable=True),
            )
            return exchange
        if queue is not None:
            name = self._name(queue)
            await self._declare(f"queue:{name}", lambda: channel.declare_queue(name, durable=True))
        return channel.default_exchange

    async def _publish(
        self,
        message: Message,
        *,
        queue: str | None = None,
        fanout: str | None = None,
        reply_to: str | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Publish until the broker confirms it; retried across connection losses.

        Returns False only for a reply whose caller's queue never came back before
        the deadline. Raises BusError when the bus closes or the time is up.
        """
        loop = asyncio.get_running_loop()
        budget = self.options.publish_timeout if deadline is None else deadline - time.time()
        give_up = loop.time() + max(budget, 0.0)
        routing_key = "" if fanout is not None else (reply_to or self._name(queue or ""))
        delay = 0.05
        while True:
            self._check_open()
            problem: BaseException
            try:
                exchange = await self._target(queue, fanout)
                remaining = max(give_up - loop.time(), 0.01)
                await asyncio.wait_for(
                    exchange.publish(message, routing_key, mandatory=fanout is None),
                    remaining,
                )
                return True
            except PublishError as exc:
                # Unroutable: the queue was deleted under us, or a caller's reply
                # queue is not there (it is reconnecting, or gone).
                problem = exc
                if queue is not None:
                    self._declared.pop(f"queue:{self._name(queue)}", None)
            except asyncio.CancelledError as exc:
                # aiormq cancels a pending confirmation when its connection drops; only
                # a cancellation of this task itself may propagate.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                problem = exc
            except _RETRYABLE as exc:
                problem = exc
            except Exception as exc:
                # A connection closing under a publish rejects its pending futures
                # with a bare Exception; only then is it ours to translate.
                if self._state != "closed":
                    raise
                problem = exc
            if self._state == "closed":
                raise BusError("bus closed while publishing") from problem
            if loop.time() + delay > give_up:
                if reply_to is not None:
                    return False
                raise BusError(
                    f"could not publish to {queue or fanout!r} within {budget:.1f}s: "
                    f"{type(problem).__name__}: {problem}"
                ) from problem
            logger.info("publish to %s failed (%s); retrying", routing_key, problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # -- internals: receiving --------------------------------------------

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            reply = Reply.model_validate_json(message.body)
        except ValidationError:
            logger.error("ignoring a malformed reply on %s", self._reply_queue)
            return
        self._reply_received(reply)

    async def _deliver(
        self, message: AbstractIncomingMessage, handler: Handler, queue: str
    ) -> None:
        """Handle one delivery; ack only once the handler (and a call's reply) is done."""
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError as exc:
            self._record_malformed(message, queue, exc)
            await _settle(message.reject(requeue=False), queue)
            return
        deadline = _deadline((message.headers or {}).get(_DEADLINE_HEADER))
        if envelope.pattern == "call" and deadline is not None and time.time() > deadline:
            logger.warning("dropping call %s: its caller stopped waiting", envelope.msg_id)
            await _settle(message.ack(), queue)
            return
        reply = await self._invoke(handler, envelope)
        if envelope.pattern == "call" and envelope.reply_to:
            await self._send_reply(envelope, reply, deadline)
        await _settle(message.ack(), queue)

    async def _send_reply(self, envelope: Envelope, reply: Reply, deadline: float | None) -> None:
        assert envelope.reply_to is not None
        reply = wire_reply(reply)
        message = Message(
            reply.model_dump_json().encode(),
            content_type="application/json",
            correlation_id=envelope.msg_id,
        )
        # The caller may be reconnecting: keep trying until its timeout ends.
        until = deadline if deadline is not None else time.time() + self.options.publish_timeout
        try:
            sent = await self._publish(message, reply_to=envelope.reply_to, deadline=until)
        except BusError as exc:
            logger.warning("reply to %s not sent: %s", envelope.msg_id, exc)
            return
        if not sent:
            logger.warning("reply to %s dropped: its caller is gone", envelope.msg_id)

    def _record_malformed(
        self, message: AbstractIncomingMessage, queue: str, exc: ValidationError
    ) -> None:
        self._failure_count += 1
        self._failures.append(
            DeliveryFailure(
                msg_id=message.message_id or "",
                queue=queue,
                method="",
                pattern="cast",
                exc_type="MalformedMessage",
                message=f"not a specstack envelope: {exc.error_count()} error(s)",
                at=time.time(),
            )
        )
        logger.error("rejected a malformed message on %s: %s", queue, exc)

    def _forget(self, consumer: _AmqpConsumer) -> None:
        self._consumers.discard(consumer)


def _deadline(raw: object) -> float | None:
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    try:
        return float(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


async def _library_tasks_done(timeout: float = 2.0) -> None:
    """Wait for the close callbacks aio-pika runs as tasks, so close() leaves nothing behind.

    Only those one-shot callbacks: other buses of this loop keep their own tasks.
    """
    me = asyncio.current_task()
    stray = {
        t
        for t in asyncio.all_tasks()
        if t is not me and "OneShotCallback" in getattr(t.get_coro(), "__qualname__", "")
    }
    if stray:
        await asyncio.wait(stray, timeout=timeout)


async def _settle(outcome: Awaitable[None], queue: str) -> None:
    """Ack or reject; if the channel is gone the broker redelivers the message instead."""
    try:
        await outcome
    except _RETRYABLE as exc:
        logger.info("could not settle a message on %s (%s); it will be redelivered", queue, exc)
