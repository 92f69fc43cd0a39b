"""Message bus: one interface, bindings chosen by URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from generator.runtime.bus.base import (
    Bus,
    BusError,
    DeliveryFailure,
    Envelope,
    Failure,
    Handler,
    MessagingTimeout,
    Pattern,
    RemoteError,
    Reply,
    Subscription,
    qualified_topic,
)
from generator.runtime.bus.memory import InProcessBus

__all__ = [
    "Bus",
    "BusError",
    "DeliveryFailure",
    "Envelope",
    "Failure",
    "Handler",
    "InProcessBus",
    "MessagingTimeout",
    "Pattern",
    "RemoteError",
    "Reply",
    "Subscription",
    "make_bus",
    "qualified_topic",
]

_SUPPORTED = ("memory://",)


def make_bus(url: str) -> Bus:
    """Return an unstarted bus for url; "memory://" is the in-process bus."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return InProcessBus()
    if scheme in ("amqp", "amqps"):
        raise ValueError(f"bus URL {url!r}: the RabbitMQ (amqp) bus is not available yet")
    raise ValueError(
        f"bus URL {url!r}: unknown scheme {scheme!r}; supported: {', '.join(_SUPPORTED)}"
    )
