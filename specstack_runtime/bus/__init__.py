"""Message bus: one interface, bindings chosen by URL."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from specstack_runtime.bus.base import (
    Bus,
    BusError,
    CheckedBy,
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
from specstack_runtime.bus.memory import InProcessBus

if TYPE_CHECKING:
    from specstack_runtime.bus.amqp import AmqpBus

__all__ = [
    "AmqpBus",
    "Bus",
    "BusError",
    "CheckedBy",
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

_SUPPORTED = ("memory://", "amqp://", "amqps://")


def make_bus(url: str) -> Bus:
    """Return an unstarted bus for url.

    "memory://" is the in-process bus; "amqp://user:pass@host:port/vhost?prefix=P"
    is RabbitMQ, with every queue and exchange name prefixed by P (see bus.amqp).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return InProcessBus()
    if scheme in ("amqp", "amqps"):
        # Imported here so that embedded mode never loads aio-pika.
        from specstack_runtime.bus.amqp import AmqpBus

        return AmqpBus(url)
    raise ValueError(
        f"bus URL {url!r}: unknown scheme {scheme!r}; supported: {', '.join(_SUPPORTED)}"
    )


def __getattr__(name: str) -> object:
    if name == "AmqpBus":
        from specstack_runtime.bus.amqp import AmqpBus

        return AmqpBus
    raise AttributeError(name)
