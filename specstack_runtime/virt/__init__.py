"""Hypervisor drivers: implementations of the driver interface of spec/hypervisors.yaml.

Every method takes and returns plain dicts shaped like the `types` of that file.
The errors below are what any driver raises, so that callers (nova-compute's
behaviours) can tell "no such guest" from a real failure whatever the driver.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class PowerState(IntEnum):
    """nova's power_state codes, as every driver reports a guest's state."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


# the same as plain ints (literal types: the contract's PowerState), for records and replies
NOSTATE: Final = 0
RUNNING: Final = 1
PAUSED: Final = 3
SHUTDOWN: Final = 4
CRASHED: Final = 6
SUSPENDED: Final = 7


class VirtError(Exception):
    """A hypervisor driver could not do what it was asked."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InstanceNotFound(VirtError):
    """The hypervisor has no guest for this instance."""

    def __init__(self, instance_uuid: str) -> None:
        super().__init__(f"Instance {instance_uuid} could not be found.")
        self.instance_uuid = instance_uuid


class InstanceExists(VirtError):
    """A guest for this instance already exists."""

    def __init__(self, instance_uuid: str) -> None:
        super().__init__(f"Instance {instance_uuid} already exists.")
        self.instance_uuid = instance_uuid


class DeviceBusy(VirtError):
    """The requested mountpoint is already used by another disk of the guest."""


class DiskNotFound(VirtError):
    """No disk of the guest is attached at the given mountpoint."""


__all__ = [
    "CRASHED",
    "NOSTATE",
    "PAUSED",
    "RUNNING",
    "SHUTDOWN",
    "SUSPENDED",
    "DeviceBusy",
    "DiskNotFound",
    "InstanceExists",
    "InstanceNotFound",
    "PowerState",
    "VirtError",
]
