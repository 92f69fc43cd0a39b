"""At-least-once delivery: a cast the broker delivers again (its ack was lost in a broker
restart) is not handled twice by the worker that took it; a new cast is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel

from specstack_runtime.bus import Envelope
from specstack_runtime.bus.memory import InProcessBus
from specstack_runtime.consumers import Consumer, Dispatcher
from specstack_runtime.flow import Flow
from tests.runtime.test_consumers import worker


class Payload(BaseModel):
    n: int


def test_a_redelivered_cast_is_handled_once(tmp_path: Path) -> None:
    handled: list[int] = []

    async def count(flow: Flow) -> None:
        handled.append(flow.call.payload["n"])

    # no sender's check known: the payload is checked, as off the wire
    rt, spec = worker(tmp_path, InProcessBus(), "build", count)
    consumer = Consumer("build", "t", "build", "cast", True, spec, Payload)
    dispatch = Dispatcher(rt, [consumer])
    first = Envelope(topic="t", method="build", payload={"n": 1}, pattern="cast", host="h")
    again = first.model_copy()  # what the broker redelivers: the same message id
    other = Envelope(topic="t", method="build", payload={"n": 2}, pattern="cast", host="h")

    async def go() -> None:
        for env in (first, again, other):
            await dispatch(env)

    asyncio.run(go())
    assert handled == [1, 2]
    assert dispatch.duplicates == 1
