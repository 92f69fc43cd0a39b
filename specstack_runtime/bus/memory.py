"""In-process bus on asyncio queues: the embedded-mode binding of the Bus contract."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from specstack_runtime.bus.base import (
    Bus,
    CheckedBy,
    Envelope,
    Handler,
    Subscription,
    qualified_topic,
    wire_copy,
    wire_reply,
)

logger = logging.getLogger(__name__)


class _Consumer(Subscription):
    """One consumer task reading one queue (shared for direct topics, private for fanout)."""

    def __init__(
        self,
        bus: InProcessBus,
        queue_name: str,
        queue: asyncio.Queue[Envelope],
        handler: Handler,
        *,
        fanout: bool,
        host: str | None = None,
    ) -> None:
        self.queue = queue_name
        self.fanout = fanout
        self.host = host
        self.inbox = queue
        self._bus = bus
        self._handler = handler
        self._busy = False
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"bus-consumer:{queue_name}")

    async def _run(self) -> None:
        while not self._stopping:
            envelope = await self.inbox.get()
            self._busy = True
            try:
                await self._bus._handle(envelope, self._handler)
            except Exception:
                # _handle never raises by design; this guard keeps the consumer alive regardless.
                logger.exception("bus internal error while handling %s", envelope.msg_id)
            finally:
                self._busy = False
            # Yield so competing consumers of one queue take turns (round robin); with the
            # queue empty, the wait for the next message queues this consumer last anyway.
            if not self.inbox.empty():
                await asyncio.sleep(0)

    async def cancel(self) -> None:
        self._bus._forget(self)
        task = self._task
        if task.done():
            return
        self._stopping = True
        if task is asyncio.current_task():
            return  # a handler cancelling its own subscription: the loop ends after it
        if not self._busy:
            # Waiting in get(): cancelling there leaves any message in the queue.
            task.cancel()
        _, pending = await asyncio.wait({task}, timeout=self._bus.drain_timeout)
        if pending:
            logger.warning("abandoning in-flight message on %s at shutdown", self.queue)
            task.cancel()
            await asyncio.wait({task})


class InProcessBus(Bus):
    """A Bus for one event loop; queues are durable for the lifetime of the bus."""

    def __init__(self, *, drain_timeout: float = 5.0) -> None:
        super().__init__()
        self.drain_timeout = drain_timeout
        self._queues: dict[str, asyncio.Queue[Envelope]] = {}
        # fanout subscribers by topic, then by the host they subscribed for (None: any)
        self._fanout: dict[str, dict[str | None, set[_Consumer]]] = {}
        # a consumer here gets the very copy the sender's models checked (see CheckedBy)
        self._checks: dict[str, CheckedBy] = {}

    # -- lifecycle -------------------------------------------------------

    async def _open(self) -> None:
        """Nothing to connect to: the queues are this process's own."""

    async def _shut(self, *, started: bool) -> None:
        undelivered = sum(q.qsize() for q in self._queues.values())
        if undelivered:
            logger.warning("in-process bus closed with %d undelivered messages", undelivered)
        self._queues.clear()
        self._checks = {}

    # -- messaging -------------------------------------------------------

    async def _send_cast(self, envelope: Envelope) -> None:
        self._queue(envelope.queue).put_nowait(envelope)

    async def _send_call(self, envelope: Envelope, timeout: float) -> None:
        self._queue(envelope.queue).put_nowait(envelope)

    async def _send_fanout(self, envelope: Envelope, hosts: Collection[str] | None) -> None:
        by_host = self._fanout.get(envelope.topic, {})
        if hosts is None:
            targets = [c for group in by_host.values() for c in group]
        else:
            # only the hosts concerned: ten thousand agents need not each look and drop it
            keys: list[str | None] = [None, *dict.fromkeys(hosts)]
            targets = [c for key in keys for c in by_host.get(key, ())]
        for consumer in targets:
            # Each subscriber owns its copy, as each would get its own AMQP message.
            copy = {"payload": wire_copy(envelope.payload), "context": dict(envelope.context)}
            consumer.inbox.put_nowait(envelope.model_copy(update=copy))

    async def _subscribe(
        self, topic: str, handler: Handler, host: str | None, fanout: bool
    ) -> Subscription:
        consumer: _Consumer
        if fanout:
            consumer = _Consumer(self, topic, asyncio.Queue(), handler, fanout=True, host=host)
            self._fanout.setdefault(topic, {}).setdefault(host, set()).add(consumer)
        else:
            name = qualified_topic(topic, host)
            consumer = _Consumer(self, name, self._queue(name), handler, fanout=False)
        self._consumers.add(consumer)
        return consumer

    # -- observability ---------------------------------------------------

    def queue_depth(self, topic: str, *, host: str | None = None) -> int:
        """Messages waiting in a direct queue (not yet taken by a consumer)."""
        queue = self._queues.get(qualified_topic(topic, host))
        return 0 if queue is None else queue.qsize()

    # -- internals -------------------------------------------------------

    def _queue(self, name: str) -> asyncio.Queue[Envelope]:
        # Created on first use by either side, so casts before any subscriber are kept.
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = asyncio.Queue()
        return queue

    def _forget(self, consumer: _Consumer) -> None:
        self._consumers.discard(consumer)
        if consumer.fanout:
            subscribers = self._fanout.get(consumer.queue, {}).get(consumer.host)
            if subscribers is not None:
                subscribers.discard(consumer)

    async def _handle(self, envelope: Envelope, handler: Handler) -> None:
        if envelope.pattern == "call" and not self._waiting(envelope.msg_id):
            # The caller gave up; like an expired AMQP call message, skip it.
            logger.warning("dropping call %s: its caller stopped waiting", envelope.msg_id)
            self._checks.pop(envelope.msg_id, None)
            return
        try:
            reply = await self._invoke(handler, envelope)
        finally:
            self._checks.pop(envelope.msg_id, None)
        if envelope.pattern == "call":
            self._reply_received(wire_reply(reply))
