"""Work many callers ask for at once, done once for all of them.

Ten thousand compute hosts of one process report at start-up and at every heartbeat in the
same turn of the event loop; a `Batch` takes what they submit in that turn and sends it
as one message (one transaction at the receiver) instead of one round trip each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

#: Items per flush: a message of reports stays well under any broker's frame size.
MAX_ITEMS = 1000


class Batch:
    """Collects items submitted in one turn of the event loop; `flush` sends them together.

    `flush(items)` runs once per MAX_ITEMS items; every submitter waits for its batch and
    gets its exception if the flush fails.
    """

    def __init__(
        self, flush: Callable[[list[Any]], Awaitable[Any]], max_items: int = MAX_ITEMS
    ) -> None:
        self._flush = flush
        self._max = max_items
        self._items: list[Any] = []
        self._done: asyncio.Future[Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.flushes = 0

    async def submit(self, item: Any) -> Any:
        """Add `item` to the batch of this turn; the flush's result once it is sent."""
        loop = asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
            loop.call_soon(self._send)
        done = self._done
        self._items.append(item)
        if len(self._items) >= self._max:
            self._send()
        return await asyncio.shield(done)

    def _send(self) -> None:
        items, done = self._items, self._done
        if done is None or not items:
            return
        self._items, self._done = [], None
        task = asyncio.get_running_loop().create_task(self._run(items, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[Any], done: asyncio.Future[Any]) -> None:
        self.flushes += 1
        try:
            result = await self._flush(items)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            done.exception()  # retrieved here: a submitter that stopped waiting logs nothing
            return
        if not done.done():
            done.set_result(result)


def batch_of(
    shared: MutableMapping[str, Any], key: str, flush: Callable[[list[Any]], Awaitable[Any]]
) -> Batch:
    """The process's batch under `key` (in a runtime's `shared`), made on first use."""
    found = shared.get(key)
    if not isinstance(found, Batch):
        found = shared[key] = Batch(flush)
    return found
