"""Queue consumers: a bad message gets a clear error and the consumer keeps working."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from specstack_runtime.bus import CheckedBy, Envelope, InProcessBus, RemoteError
from specstack_runtime.config import StackConfig
from specstack_runtime.consumers import SEEN_CASTS, Consumer, Dispatcher, start_consumers
from specstack_runtime.flow import Flow, HandlerSpec
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.trace import TraceRecorder

from ..conftest import REPO


class Payload(BaseModel):
    n: int


class ReplyModel(BaseModel):
    doubled: int


async def double(flow: Flow) -> None:
    flow.call.result = {"doubled": flow.call.payload["n"] * 2}


def worker(
    tmp_path: Path, bus: InProcessBus, trigger: str, run: Callable[[Flow], Awaitable[None]]
) -> tuple[ServiceRuntime, HandlerSpec]:
    """A worker's runtime on `bus` and its handler of the message `trigger` (`run`)."""
    info = StackInfo(json.loads((REPO / "generated" / "ir.json").read_text()))
    rt = ServiceRuntime(
        component="worker",
        project="p",
        host="h",
        info=info,
        config=StackConfig(data_dir=tmp_path),
        bus=bus,
        trace=TraceRecorder(None),
        clients=None,  # type: ignore[arg-type]
    )
    spec = HandlerSpec(
        component="worker",
        kind="message",
        trigger=trigger,
        behaviour=None,
        on_error=None,
        run=run,
    )
    return rt, spec


def doubling(tmp_path: Path, bus: InProcessBus) -> tuple[ServiceRuntime, Consumer]:
    """A worker's runtime on `bus` and its consumer of `t.double` (a call, replying `double`)."""
    rt, spec = worker(tmp_path, bus, "double", double)
    consumer = Consumer(
        message="double",
        topic="t",
        method="double",
        pattern="call",
        per_host=False,
        handler=spec,
        payload_model=Payload,
        reply_model=ReplyModel,
    )
    return rt, consumer


def test_invalid_payloads_are_refused_and_the_consumer_survives(tmp_path: Path) -> None:
    async def go() -> None:
        bus = InProcessBus()
        await bus.start()
        rt, consumer = doubling(tmp_path, bus)
        await start_consumers(rt, [consumer])
        with pytest.raises(RemoteError, match="double payload at n"):
            await bus.call("t", "double", {"n": "not a number"}, timeout=2)
        with pytest.raises(RemoteError, match=r"does not handle t\.other"):
            await bus.call("t", "other", {"n": 1}, timeout=2)
        reply: dict[str, Any] = await bus.call("t", "double", {"n": 21}, timeout=2)
        assert reply == {"doubled": 42}
        await bus.close()

    asyncio.run(go())


class OtherPayload(BaseModel):
    n: str  # not the consumer's model: its check says nothing for the consumer


def test_a_payload_and_reply_the_sender_checked_with_the_same_models_are_not_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one process the consumer relies on the sender's check (CheckedBy) when the models
    are its own; a check by other models, or none, and the consumer checks itself."""
    checked: list[str] = []

    def counting(model: type[BaseModel]) -> Any:
        real = model.model_validate

        def validate(value: Any, **kw: Any) -> BaseModel:
            checked.append(model.__name__)
            return real(value, **kw)

        return validate

    monkeypatch.setattr(Payload, "model_validate", counting(Payload))
    monkeypatch.setattr(ReplyModel, "model_validate", counting(ReplyModel))

    async def go() -> None:
        bus = InProcessBus()
        await bus.start()
        rt, consumer = doubling(tmp_path, bus)
        await start_consumers(rt, [consumer])
        same = CheckedBy(Payload, ReplyModel)
        assert await bus.call("t", "double", {"n": 4}, timeout=2, checked_by=same) == {"doubled": 8}
        assert checked == []
        assert await bus.call("t", "double", {"n": 5}, timeout=2) == {"doubled": 10}
        assert checked == ["Payload", "ReplyModel"]
        other = CheckedBy(OtherPayload, None)
        with pytest.raises(RemoteError, match="double payload at n"):
            await bus.call("t", "double", {"n": "six"}, timeout=2, checked_by=other)
        assert bus._checks == {}  # each forgotten once its message is handled
        await bus.close()

    asyncio.run(go())


@pytest.mark.parametrize(("unacked", "window"), [(0, SEEN_CASTS), (16, SEEN_CASTS), (3000, 6000)])
def test_a_dispatcher_remembers_what_its_bus_may_redeliver_and_forgets_the_rest(
    tmp_path: Path, unacked: int, window: int
) -> None:
    """A cast delivered again is dropped while its id is among the last `window` handled
    (at least twice what a broker may redeliver: its consumers' prefetch); an older one is
    handled again, so what a busy queue remembers stays bounded."""
    handled: list[int] = []

    async def count(flow: Flow) -> None:
        handled.append(flow.call.payload["n"])

    bus = InProcessBus()
    bus.unacked_limit = unacked
    rt, spec = worker(tmp_path, bus, "build", count)
    dispatch = Dispatcher(rt, [Consumer("build", "t", "build", "cast", True, spec, Payload)])
    casts = [
        Envelope(topic="t", method="build", payload={"n": n}, pattern="cast", host="h")
        for n in range(window + 1)
    ]

    async def go() -> None:
        for env in casts[:window]:
            await dispatch(env)
        await dispatch(casts[0].model_copy())  # the oldest still remembered: dropped
        assert (len(handled), dispatch.duplicates) == (window, 1)
        await dispatch(casts[window])  # one more: the oldest is forgotten
        await dispatch(casts[0].model_copy())
        assert (len(handled), dispatch.duplicates) == (window + 2, 1)
        assert handled[-1] == 0

    asyncio.run(go())
