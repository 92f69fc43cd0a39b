"""Things specific to the in-process bus and to make_bus (the contract is in test_bus_contract)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from specstack_runtime.bus import Envelope, InProcessBus, MessagingTimeout, RemoteError, make_bus


def test_make_bus_memory_returns_in_process_bus() -> None:
    assert isinstance(make_bus("memory://"), InProcessBus)


@pytest.mark.parametrize("url", ["amqp://guest:guest@localhost:5672/", "amqps://h/"])
def test_make_bus_amqp_gives_the_rabbitmq_bus(url: str) -> None:
    assert type(make_bus(url)).__name__ == "AmqpBus"


def test_make_bus_unknown_scheme() -> None:
    with pytest.raises(ValueError, match=r"unknown scheme 'kafka'.*memory://"):
        make_bus("kafka://broker")


def test_queue_depth_counts_undelivered_casts() -> None:
    async def main() -> None:
        async with InProcessBus() as bus:
            await bus.cast("t", "m", {}, host="h")
            await bus.cast("t", "m", {}, host="h")
            assert bus.queue_depth("t", host="h") == 2
            assert bus.queue_depth("t") == 0

    asyncio.run(main())


def test_call_answered_after_the_caller_gave_up_does_not_run_the_handler() -> None:
    async def main() -> None:
        ran: list[Envelope] = []

        async def handler(envelope: Envelope) -> dict[str, Any]:
            ran.append(envelope)
            return {}

        async with InProcessBus() as bus:
            with pytest.raises(MessagingTimeout):
                await bus.call("late", "m", {}, timeout=0.01)
            await bus.subscribe("late", handler)
            await asyncio.sleep(0.02)
            assert ran == []

    asyncio.run(main())


def test_unserialisable_reply_becomes_remote_error() -> None:
    async def main() -> None:
        async def handler(envelope: Envelope) -> dict[str, Any]:
            return {"when": object()}

        async with InProcessBus() as bus:
            await bus.subscribe("svc", handler)
            with pytest.raises(RemoteError, match="TypeError"):
                await bus.call("svc", "m", {}, timeout=1)

    asyncio.run(main())


def test_handler_can_cancel_its_own_subscription() -> None:
    async def main() -> None:
        seen: list[Envelope] = []
        async with InProcessBus() as bus:
            holder: dict[str, Any] = {}

            async def once(envelope: Envelope) -> None:
                seen.append(envelope)
                await holder["sub"].cancel()

            holder["sub"] = await bus.subscribe("q", once)
            await bus.cast("q", "m", {})
            await bus.cast("q", "m", {})
            await asyncio.sleep(0.02)
            assert len(seen) == 1
            assert bus.queue_depth("q") == 1

    asyncio.run(main())


def test_a_fanout_naming_its_hosts_reaches_only_their_subscribers() -> None:
    async def main() -> None:
        got: dict[str | None, list[str]] = {}

        def recorder(host: str | None) -> Any:
            async def handle(env: Envelope) -> None:
                got.setdefault(host, []).append(str(env.payload["port"]))

            return handle

        async with InProcessBus() as bus:
            for i in range(200):
                await bus.subscribe("agents", recorder(f"h-{i}"), host=f"h-{i}", fanout=True)
            await bus.subscribe("agents", recorder(None), fanout=True)  # no host: gets all
            await bus.fanout("agents", "port_update", {"port": "p1"}, hosts=["h-3", "h-77"])
            await bus.fanout("agents", "port_update", {"port": "p2"})
            for _ in range(20):
                await asyncio.sleep(0)
            assert sorted(h or "" for h, ports in got.items() if "p1" in ports) == [
                "",
                "h-3",
                "h-77",
            ]
            # without hosts, every subscriber: 200 hosts and the host-less one
            assert sum("p2" in ports for ports in got.values()) == 201

    asyncio.run(main())
