"""Things specific to the RabbitMQ bus (the shared contract is in test_bus_contract).

`test_broker_restart_loses_nothing` restarts the machine's RabbitMQ (stop_app/start_app):
it disturbs every other user of that broker for a few seconds. It is marked
`broker_restart`; leave it out with `-m "not broker_restart"`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from pydantic import BaseModel

from specstack_runtime.bus import AmqpBus, BusError, CheckedBy, Envelope, make_bus
from specstack_runtime.bus.amqp import AmqpOptions, redact
from tests.runtime import rabbit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def url() -> str:
    return rabbit.session_url()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


# -- URL and options ---------------------------------------------------------


def test_url_options_are_taken_out_and_the_rest_passed_on() -> None:
    opts = AmqpOptions.from_url(
        "amqp://u:secret@h:5673/v1?prefix=run-1&prefetch=4&heartbeat=30&publish_timeout=9"
    )
    assert (opts.prefix, opts.prefetch, opts.publish_timeout) == ("run-1", 4, 9.0)
    assert opts.broker_url == "amqp://u:secret@h:5673/v1?heartbeat=30"
    bus = make_bus("amqp://guest:guest@127.0.0.1/?prefix=p1")
    assert isinstance(bus, AmqpBus) and bus.options.prefix == "p1"
    assert AmqpBus("amqp://h/", prefix="x", prefetch=2).options.prefetch == 2
    # what a dropped connection can make the broker redeliver: its dispatchers remember as much
    assert AmqpBus("amqp://h/?prefetch=3000").unacked_limit == 3000
    assert AmqpBus("amqp://h/").unacked_limit == 16


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("prefix=a/b", "use letters"),
        ("prefetch=0", "at least 1"),
        ("prefetch=many", "invalid literal"),
        ("publish_timeout=-1", "must be positive"),
    ],
)
def test_bad_url_options_are_refused_clearly(query: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        make_bus(f"amqp://guest:hunter2@h/?{query}")
    assert "hunter2" not in str(caught.value)


def test_password_is_redacted() -> None:
    assert redact("amqp://guest:pw@h:1/v") == "amqp://guest:***@h:1/v"
    assert redact("amqp://h/") == "amqp://h/"


def test_unreachable_broker_is_a_bus_error() -> None:
    async def main() -> None:
        from specstack_conformance.harness import free_port_block

        port = free_port_block(1)
        bus = AmqpBus(f"amqp://guest:secretpw@127.0.0.1:{port}/")
        with pytest.raises(BusError, match=r"cannot connect to RabbitMQ at .*\*\*\*") as caught:
            await bus.start()
        assert "secretpw" not in str(caught.value)
        await bus.close()

    run(main)


# -- on the broker -----------------------------------------------------------


def test_messages_are_persistent_on_durable_queues_and_carry_the_request_id(url: str) -> None:
    async def main() -> None:
        prefix = rabbit.unique_prefix()
        async with AmqpBus(url, prefix=prefix) as bus:
            await bus.cast("work", "do", {"n": 1}, host="h1", context={"request_id": "req-9"})
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            # passive: fails unless the bus declared it; durable=True must match the declaration
            queue = await channel.declare_queue(f"{prefix}.work.h1", durable=True, passive=True)
            message = await queue.get(timeout=5)
            assert message is not None
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert message.content_type == "application/json"
            assert (message.headers or {}).get("request_id") == "req-9"
            envelope = Envelope.model_validate_json(message.body)
            assert (envelope.topic, envelope.host, envelope.payload) == ("work", "h1", {"n": 1})
            assert envelope.context == {"request_id": "req-9"}
            await message.ack()

    run(main)


def test_prefetch_limits_unacked_messages_per_consumer(url: str) -> None:
    async def main() -> None:
        prefix = rabbit.unique_prefix()
        release = asyncio.Event()
        held: list[Envelope] = []
        other: list[Envelope] = []

        async def blocked(envelope: Envelope) -> None:
            held.append(envelope)
            await release.wait()

        async def quick(envelope: Envelope) -> None:
            other.append(envelope)

        async with (
            AmqpBus(url, prefix=prefix, prefetch=2) as first,
            AmqpBus(url, prefix=prefix) as second,
        ):
            await first.subscribe("work", blocked)
            for n in range(5):
                await first.cast("work", "do", {"n": n})
            await eventually(lambda: len(held) == 2)
            # The first consumer has used its prefetch: the other three wait for someone else.
            await second.subscribe("work", quick)
            await eventually(lambda: len(other) == 3)
            assert len(held) == 2
            release.set()
            seen = sorted(e.payload["n"] for e in held + other)
            assert seen == [0, 1, 2, 3, 4]

    run(main)


def test_malformed_message_is_rejected_recorded_and_consumer_survives(url: str) -> None:
    async def main() -> None:
        prefix = rabbit.unique_prefix()
        handled: list[Envelope] = []

        async def handler(envelope: Envelope) -> None:
            handled.append(envelope)

        async with AmqpBus(url, prefix=prefix) as bus:
            await bus.subscribe("svc", handler)
            connection = await aio_pika.connect(url)
            async with connection:
                channel = await connection.channel()
                await channel.default_exchange.publish(
                    aio_pika.Message(b"{not json", message_id="junk"), f"{prefix}.svc"
                )
            await bus.cast("svc", "ok", {})
            await eventually(lambda: len(handled) == 1 and bus.failure_count == 1)
            (failure,) = bus.failed_deliveries
            assert (failure.msg_id, failure.queue, failure.exc_type) == (
                "junk",
                "svc",
                "MalformedMessage",
            )

    run(main)


CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from specstack_runtime.bus import AmqpBus

    async def main(url, prefix):
        async with AmqpBus(url, prefix=prefix) as bus:
            async def handler(envelope):
                print("handling", envelope.msg_id, flush=True)
                await asyncio.Event().wait()  # never finishes: killed before it acks
            await bus.subscribe("build", handler, host="node1")
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_message_is_redelivered_when_its_consumer_dies_before_ack(url: str) -> None:
    async def main() -> None:
        prefix = rabbit.unique_prefix()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CONSUMER,
            url,
            prefix,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdout is not None
        try:
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
            async with AmqpBus(url, prefix=prefix) as bus:
                await bus.cast("build", "build_instance", {"uuid": "i-1"}, host="node1")
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
                assert line[0] == "handling"
                proc.send_signal(signal.SIGKILL)  # dies mid-handling, before the ack
                await proc.wait()
                again: list[Envelope] = []

                async def survivor(envelope: Envelope) -> None:
                    again.append(envelope)

                await bus.subscribe("build", survivor, host="node1")
                await eventually(lambda: len(again) == 1, timeout=30)
                assert again[0].msg_id == line[1]
                assert again[0].payload == {"uuid": "i-1"}
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    run(main)


@pytest.mark.broker_restart
def test_broker_restart_loses_nothing(url: str) -> None:
    """50 casts and 50 calls sent while RabbitMQ restarts: every one is handled and answered."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("restarting the broker needs rabbitmqctl on this machine")

    async def main() -> None:
        prefix = rabbit.unique_prefix()
        handled: set[int] = set()
        enough = asyncio.Event()

        async def handler(envelope: Envelope) -> dict[str, Any]:
            handled.add(envelope.payload["n"])
            if len(handled) >= 10:
                enough.set()
            return {"n": envelope.payload["n"]}

        async with (
            AmqpBus(url, prefix=prefix) as server,
            AmqpBus(url, prefix=prefix) as client,
        ):
            await server.subscribe("burst", handler)

            async def send(n: int) -> int | None:
                await asyncio.sleep(0.05 * n)  # spread the burst over the restart
                if n % 2:
                    reply = await client.call("burst", "do", {"n": n}, timeout=120)
                    return int(reply["n"])
                await client.cast("burst", "do", {"n": n})
                return None

            async def restart() -> None:
                await enough.wait()
                await asyncio.to_thread(rabbit.rabbitmqctl, "stop_app")
                await asyncio.to_thread(rabbit.rabbitmqctl, "start_app")

            restarting = asyncio.create_task(restart())
            try:
                replies = await asyncio.gather(*(send(n) for n in range(100)))
                await restarting
            finally:
                if not restarting.done():
                    restarting.cancel()
                    # never leave the shared broker stopped
                    subprocess.run(["rabbitmqctl", "-q", "start_app"], check=False, timeout=120)
            assert sorted(r for r in replies if r is not None) == list(range(1, 100, 2))
            await eventually(lambda: len(handled) == 100, timeout=120)
            assert handled == set(range(100))

    run(main)


def test_what_a_sender_checked_does_not_travel_over_the_wire(url: str) -> None:
    """A consumer off the broker always checks the payload itself: the sender's CheckedBy
    (an in-process shortcut) never reaches it."""

    class Model(BaseModel):
        n: int

    async def main() -> None:
        got: list[tuple[Envelope, CheckedBy | None]] = []

        async with AmqpBus(url, prefix=rabbit.unique_prefix()) as bus:

            async def handler(env: Envelope) -> dict[str, Any]:
                got.append((env, bus.checked_by(env)))
                return {"ok": True}

            await bus.subscribe("checks", handler)
            reply = await bus.call(
                "checks", "do", {"n": 1}, timeout=10, checked_by=CheckedBy(Model, Model)
            )
            assert reply == {"ok": True}
            await bus.cast("checks", "do", {"n": 2}, checked_by=CheckedBy(Model))
            await eventually(lambda: len(got) == 2)
        assert [(e.payload, checked) for e, checked in got] == [({"n": 1}, None), ({"n": 2}, None)]

    run(main)


class _StalledExchange:
    """Stands in for the publisher's exchange: a publish that waits until `fail` is set,
    then fails the way aiormq fails the futures of a connection closing under it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.fail = asyncio.Event()

    async def publish(self, *args: object, **kwargs: object) -> None:
        self.entered.set()
        await self.fail.wait()
        raise Exception()  # what FutureStore.reject_all(None) sets on a pending future


def test_a_publish_failed_by_the_closing_connection_is_a_bus_error(url: str) -> None:
    """A call whose publish is cut short by close() gets BusError, whatever the library
    raised; the same error while the bus is open is not disguised."""

    async def attempt(closing: bool) -> BaseException | None:
        bus = AmqpBus(url, prefix=rabbit.unique_prefix(), drain_timeout=1.0)
        await bus.start()
        stalled = _StalledExchange()

        async def target(queue: str | None, fanout: str | None) -> _StalledExchange:
            return stalled

        bus._target = target  # type: ignore[assignment,method-assign]
        waiting = asyncio.create_task(bus.call("nobody", "ping", {}, timeout=5))
        await stalled.entered.wait()
        closed = asyncio.create_task(bus.close()) if closing else None
        await asyncio.sleep(0)
        stalled.fail.set()
        try:
            await waiting
        except BaseException as exc:  # what the caller got is the result here
            outcome: BaseException | None = exc
        else:
            outcome = None
        await (closed or bus.close())
        return outcome

    async def main() -> None:
        on_close = await attempt(closing=True)
        assert isinstance(on_close, BusError), repr(on_close)
        assert str(on_close) == "bus closed while publishing"
        while_open = await attempt(closing=False)
        assert type(while_open) is Exception

    run(main)
