"""Behaviour every Bus implementation must have: each test runs on every bus in `factory`.

The RabbitMQ bus runs on a throwaway vhost of this session, with a fresh name prefix per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from specstack_runtime.bus import (
    AmqpBus,
    Bus,
    BusError,
    Envelope,
    InProcessBus,
    MessagingTimeout,
    RemoteError,
)
from tests.runtime import rabbit

BusFactory = Callable[[], Bus]
Scenario = Callable[[Bus], Awaitable[None]]


@pytest.fixture(params=["memory", "amqp"])
def factory(request: pytest.FixtureRequest) -> BusFactory:
    """Makes unstarted buses; every bus it makes within one test shares one namespace."""
    if request.param == "memory":
        return lambda: InProcessBus(drain_timeout=1.0)
    url = rabbit.session_url()
    prefix = rabbit.unique_prefix()
    return lambda: AmqpBus(url, prefix=prefix, drain_timeout=1.0)


def run(factory: BusFactory, scenario: Scenario) -> None:
    """Run a scenario on a fresh started bus, close it, and check nothing is left running."""

    async def main() -> None:
        bus = factory()
        await bus.start()
        try:
            await scenario(bus)
        finally:
            await bus.close()
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks left after close(): {leftover}"

    asyncio.run(main())


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def settle() -> None:
    """Give stray duplicate deliveries a chance to show up."""
    await asyncio.sleep(0.05)


def recorder(sink: list[Envelope], reply: dict[str, Any] | None = None) -> Any:
    async def handler(envelope: Envelope) -> dict[str, Any] | None:
        sink.append(envelope)
        return reply

    return handler


def test_cast_is_delivered_exactly_once(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        first: list[Envelope] = []
        second: list[Envelope] = []
        await bus.subscribe("work", recorder(first))
        await bus.subscribe("work", recorder(second))
        await bus.cast("work", "do", {"n": 1})
        await eventually(lambda: len(first) + len(second) == 1)
        await settle()
        assert len(first) + len(second) == 1
        (envelope,) = first + second
        assert (envelope.topic, envelope.method, envelope.payload) == ("work", "do", {"n": 1})
        assert envelope.pattern == "cast"

    run(factory, scenario)


def test_competing_consumers_split_the_load(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        sinks: list[list[Envelope]] = [[], [], []]
        for sink in sinks:
            await bus.subscribe("work", recorder(sink))
        for n in range(30):
            await bus.cast("work", "do", {"n": n})
        await eventually(lambda: sum(map(len, sinks)) == 30)
        await settle()
        seen = sorted(e.payload["n"] for sink in sinks for e in sink)
        assert seen == list(range(30))
        assert all(sink for sink in sinks), [len(s) for s in sinks]

    run(factory, scenario)


def test_call_returns_the_reply(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        async def add(envelope: Envelope) -> dict[str, Any]:
            return {"sum": envelope.payload["a"] + envelope.payload["b"]}

        await bus.subscribe("math", add)
        assert await bus.call("math", "add", {"a": 2, "b": 3}, timeout=2) == {"sum": 5}

    run(factory, scenario)


def test_call_with_a_none_reply_returns_empty_dict(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        await bus.subscribe("svc", recorder([]))
        assert await bus.call("svc", "ping", {}, timeout=2) == {}

    run(factory, scenario)


def test_call_timeout_raises_messaging_timeout(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        with pytest.raises(MessagingTimeout):
            await bus.call("nobody-listens", "ping", {}, timeout=0.05)

        async def slow(envelope: Envelope) -> dict[str, Any]:
            await asyncio.sleep(0.2)
            return {}

        await bus.subscribe("slow", slow)
        with pytest.raises(MessagingTimeout):
            await bus.call("slow", "ping", {}, timeout=0.05)

    run(factory, scenario)


def test_handler_exception_becomes_remote_error_and_consumer_survives(
    factory: BusFactory,
) -> None:
    async def scenario(bus: Bus) -> None:
        async def flaky(envelope: Envelope) -> dict[str, Any]:
            if envelope.payload.get("fail"):
                raise ValueError("bad flavor")
            return {"ok": True}

        await bus.subscribe("svc", flaky)
        with pytest.raises(RemoteError) as caught:
            await bus.call("svc", "build", {"fail": True}, timeout=2)
        assert caught.value.exc_type == "ValueError"
        assert caught.value.message == "bad flavor"
        assert await bus.call("svc", "build", {}, timeout=2) == {"ok": True}

    run(factory, scenario)


def test_failed_cast_is_recorded_and_consumer_survives(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        handled: list[Envelope] = []

        async def handler(envelope: Envelope) -> None:
            if envelope.payload.get("fail"):
                raise RuntimeError("disk full")
            handled.append(envelope)

        await bus.subscribe("svc", handler)
        await bus.cast("svc", "store", {"fail": True})
        await bus.cast("svc", "store", {})
        await eventually(lambda: len(handled) == 1 and bus.failure_count == 1)
        (failure,) = bus.failed_deliveries
        assert (failure.method, failure.pattern, failure.exc_type) == (
            "store",
            "cast",
            "RuntimeError",
        )
        assert failure.message == "disk full"
        assert failure.queue == "svc"

    run(factory, scenario)


def test_host_qualified_topics_reach_only_that_host(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        on_a: list[Envelope] = []
        on_b: list[Envelope] = []
        unqualified: list[Envelope] = []
        await bus.subscribe("worker", recorder(on_a), host="a")
        await bus.subscribe("worker", recorder(on_b), host="b")
        await bus.subscribe("worker", recorder(unqualified))
        for _ in range(3):
            await bus.cast("worker", "build", {}, host="b")
        await eventually(lambda: len(on_b) == 3)
        await settle()
        assert on_a == [] and unqualified == []
        assert {(e.host, e.topic) for e in on_b} == {("b", "worker")}
        reply_handler = recorder([], reply={"host": "a"})
        await bus.subscribe("echo", reply_handler, host="a")
        assert await bus.call("echo", "who", {}, host="a", timeout=2) == {"host": "a"}

    run(factory, scenario)


def test_fanout_reaches_every_subscriber(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        sinks: list[list[Envelope]] = [[], [], []]
        direct: list[Envelope] = []
        for sink in sinks:
            await bus.subscribe("agents", recorder(sink), fanout=True)
        await bus.subscribe("agents", recorder(direct))
        await bus.fanout("agents", "port_update", {"port": "p1"})
        await eventually(lambda: all(len(sink) == 1 for sink in sinks))
        await settle()
        assert direct == []
        assert all(sink[0].payload == {"port": "p1"} for sink in sinks)
        assert all(sink[0].pattern == "fanout" for sink in sinks)

    run(factory, scenario)


def test_cast_before_subscribe_is_delivered_later(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        await bus.cast("late", "do", {"n": 1})
        await bus.cast("late", "do", {"n": 2}, host="h1")
        plain: list[Envelope] = []
        qualified: list[Envelope] = []
        await bus.subscribe("late", recorder(plain))
        await bus.subscribe("late", recorder(qualified), host="h1")
        await eventually(lambda: len(plain) == 1 and len(qualified) == 1)
        assert plain[0].payload == {"n": 1}
        assert qualified[0].payload == {"n": 2}

    run(factory, scenario)


def test_cancelled_subscription_leaves_messages_for_the_next_consumer(
    factory: BusFactory,
) -> None:
    async def scenario(bus: Bus) -> None:
        first: list[Envelope] = []
        subscription = await bus.subscribe("q", recorder(first))
        await bus.cast("q", "do", {"n": 1})
        await eventually(lambda: len(first) == 1)
        await subscription.cancel()
        await bus.cast("q", "do", {"n": 2})
        await settle()
        assert len(first) == 1
        second: list[Envelope] = []
        await bus.subscribe("q", recorder(second))
        await eventually(lambda: len(second) == 1)
        assert second[0].payload == {"n": 2}

    run(factory, scenario)


def test_context_round_trips(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        context = {"request_id": "req-1", "global_request_id": "req-0", "trace_id": "t"}
        seen: list[Envelope] = []

        async def echo(envelope: Envelope) -> dict[str, Any]:
            seen.append(envelope)
            return {"context": envelope.context}

        await bus.subscribe("ctx", echo)
        reply = await bus.call("ctx", "echo", {}, context=context, timeout=2)
        assert reply == {"context": context}
        await bus.cast("ctx", "echo", {}, context=context)
        await eventually(lambda: len(seen) == 2)
        assert seen[1].context == context
        assert seen[0].msg_id != seen[1].msg_id

    run(factory, scenario)


def test_payload_is_isolated_from_the_sender(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        seen: list[Envelope] = []
        payload: dict[str, Any] = {"items": [1]}
        await bus.cast("iso", "do", payload)
        payload["items"].append(2)
        await bus.subscribe("iso", recorder(seen))
        await eventually(lambda: len(seen) == 1)
        assert seen[0].payload == {"items": [1]}

    run(factory, scenario)


def test_non_json_payload_is_refused(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        with pytest.raises(BusError):
            await bus.cast("q", "do", {"bad": object()})

    run(factory, scenario)


def test_close_leaves_no_pending_tasks(factory: BusFactory) -> None:
    async def scenario(bus: Bus) -> None:
        started = asyncio.Event()

        async def busy(envelope: Envelope) -> None:
            started.set()
            await asyncio.sleep(0.05)

        await bus.subscribe("a", recorder([]))
        await bus.subscribe("b", recorder([]), fanout=True)
        await bus.subscribe("c", busy, host="h")
        await bus.cast("c", "work", {}, host="h")
        await started.wait()
        # run() closes the bus with that handler in flight and checks for leftover tasks.

    run(factory, scenario)


def test_pending_call_fails_when_the_bus_closes(factory: BusFactory) -> None:
    async def main() -> None:
        bus = factory()
        await bus.start()
        waiting = asyncio.create_task(bus.call("nobody", "ping", {}, timeout=5))
        await asyncio.sleep(0.01)
        await bus.close()
        with pytest.raises(BusError):
            await waiting

    asyncio.run(main())


def test_bus_must_be_started_and_is_not_reusable_after_close(factory: BusFactory) -> None:
    async def main() -> None:
        bus = factory()
        with pytest.raises(BusError):
            await bus.cast("q", "do", {})
        async with bus:
            await bus.cast("q", "do", {})
        with pytest.raises(BusError):
            await bus.cast("q", "do", {})
        await bus.close()  # idempotent

    asyncio.run(main())
