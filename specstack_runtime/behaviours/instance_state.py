"""Nova's instance state machine: vm_state, task_state, power_state and the API status.

Values are nova's, so rows and API bodies look like nova's to clients. The
transition table covers the events a boot/stop/start/delete flow needs; any
other (event, state) pair raises InvalidTransition (nova answers 409 for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from specstack_runtime.virt import PowerState


class VmState(StrEnum):
    ACTIVE = "active"
    BUILDING = "building"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    RESCUED = "rescued"
    RESIZED = "resized"
    SOFT_DELETED = "soft-delete"
    DELETED = "deleted"
    ERROR = "error"
    SHELVED = "shelved"
    SHELVED_OFFLOADED = "shelved_offloaded"


class TaskState(StrEnum):
    """A task in progress; "no task" is None, as in nova."""

    SCHEDULING = "scheduling"
    BLOCK_DEVICE_MAPPING = "block_device_mapping"
    NETWORKING = "networking"
    SPAWNING = "spawning"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    DELETING = "deleting"
    REBOOTING = "rebooting"
    REBUILDING = "rebuilding"
    MIGRATING = "migrating"
    RESIZE_PREP = "resize_prep"


class Event(StrEnum):
    SCHEDULE = "schedule"
    BLOCK_DEVICE_MAPPING = "block_device_mapping"
    NETWORKING = "networking"
    SPAWN = "spawn"
    SPAWNED = "spawned"
    STOP = "stop"
    STOPPED = "stopped"
    START = "start"
    STARTED = "started"
    DELETE = "delete"
    DELETED = "deleted"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class InstanceState:
    vm_state: VmState
    task_state: TaskState | None = None
    power_state: PowerState = PowerState.NOSTATE

    @property
    def status(self) -> str:
        return api_status(self.vm_state, self.task_state)

    @classmethod
    def parse(cls, vm_state: str, task_state: str | None, power_state: int = 0) -> InstanceState:
        """From stored column values; ValueError for values nova does not define."""
        task = None if task_state is None else TaskState(task_state)
        return cls(VmState(vm_state), task, PowerState(power_state))


class InvalidTransition(Exception):
    """The event is not allowed in the instance's current state."""

    def __init__(self, event: str, state: InstanceState) -> None:
        task = state.task_state.value if state.task_state else None
        super().__init__(
            f"Cannot '{event}' instance while it is in vm_state {state.vm_state.value}, "
            f"task_state {task}"
        )
        self.event = event
        self.state = state


# -- API status (nova/api/openstack/common.py's state map) -------------------------

_DEFAULT = "default"
_STATUS: Mapping[VmState, Mapping[TaskState | str, str]] = {
    VmState.ACTIVE: {
        _DEFAULT: "ACTIVE",
        TaskState.REBOOTING: "REBOOT",
        TaskState.REBUILDING: "REBUILD",
        TaskState.MIGRATING: "MIGRATING",
        TaskState.RESIZE_PREP: "RESIZE",
    },
    VmState.BUILDING: {_DEFAULT: "BUILD"},
    VmState.STOPPED: {
        _DEFAULT: "SHUTOFF",
        TaskState.REBUILDING: "REBUILD",
        TaskState.RESIZE_PREP: "RESIZE",
    },
    VmState.RESIZED: {_DEFAULT: "VERIFY_RESIZE"},
    VmState.PAUSED: {_DEFAULT: "PAUSED", TaskState.MIGRATING: "MIGRATING"},
    VmState.SUSPENDED: {_DEFAULT: "SUSPENDED"},
    VmState.RESCUED: {_DEFAULT: "RESCUE"},
    VmState.ERROR: {_DEFAULT: "ERROR", TaskState.REBUILDING: "REBUILD"},
    VmState.DELETED: {_DEFAULT: "DELETED"},
    VmState.SOFT_DELETED: {_DEFAULT: "SOFT_DELETED"},
    VmState.SHELVED: {_DEFAULT: "SHELVED"},
    VmState.SHELVED_OFFLOADED: {_DEFAULT: "SHELVED_OFFLOADED"},
}


def api_status(vm_state: VmState | str, task_state: TaskState | str | None = None) -> str:
    """The server "status" nova's API shows; "UNKNOWN" for an unmapped vm_state."""
    try:
        task_map = _STATUS[VmState(vm_state)]
    except ValueError:
        return "UNKNOWN"
    if task_state is None:
        return task_map[_DEFAULT]
    return task_map.get(task_state, task_map[_DEFAULT])


# -- transitions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    from_vm: frozenset[VmState] | None  # None: any vm_state except deleted
    from_task: frozenset[TaskState | None] | None  # None: any task_state
    to_vm: VmState | None  # None: unchanged
    to_task: TaskState | None
    to_power: PowerState | None  # None: unchanged


_BUILDING = frozenset({VmState.BUILDING})
# Block devices and networks may be prepared in either order before the spawn.
_BUILD_STEPS: frozenset[TaskState | None] = frozenset(
    {None, TaskState.SCHEDULING, TaskState.BLOCK_DEVICE_MAPPING, TaskState.NETWORKING}
)
_IDLE: frozenset[TaskState | None] = frozenset({None})

_RULES: Mapping[Event, _Rule] = {
    Event.SCHEDULE: _Rule(_BUILDING, frozenset({None}), None, TaskState.SCHEDULING, None),
    Event.BLOCK_DEVICE_MAPPING: _Rule(
        _BUILDING, _BUILD_STEPS, None, TaskState.BLOCK_DEVICE_MAPPING, None
    ),
    Event.NETWORKING: _Rule(_BUILDING, _BUILD_STEPS, None, TaskState.NETWORKING, None),
    Event.SPAWN: _Rule(_BUILDING, _BUILD_STEPS, None, TaskState.SPAWNING, None),
    Event.SPAWNED: _Rule(
        _BUILDING, frozenset({TaskState.SPAWNING}), VmState.ACTIVE, None, PowerState.RUNNING
    ),
    # nova allows stopping an instance in error (its power state may still be running).
    Event.STOP: _Rule(
        frozenset({VmState.ACTIVE, VmState.ERROR}), _IDLE, None, TaskState.POWERING_OFF, None
    ),
    Event.STOPPED: _Rule(
        frozenset({VmState.ACTIVE, VmState.ERROR}),
        frozenset({TaskState.POWERING_OFF}),
        VmState.STOPPED,
        None,
        PowerState.SHUTDOWN,
    ),
    Event.START: _Rule(frozenset({VmState.STOPPED}), _IDLE, None, TaskState.POWERING_ON, None),
    Event.STARTED: _Rule(
        frozenset({VmState.STOPPED}),
        frozenset({TaskState.POWERING_ON}),
        VmState.ACTIVE,
        None,
        PowerState.RUNNING,
    ),
    Event.DELETE: _Rule(
        None,
        frozenset(set(TaskState) - {TaskState.DELETING} | {None}),
        None,
        TaskState.DELETING,
        None,
    ),
    Event.DELETED: _Rule(
        None, frozenset({TaskState.DELETING}), VmState.DELETED, None, PowerState.NOSTATE
    ),
    Event.ERROR: _Rule(None, None, VmState.ERROR, None, None),
}


def initial_state() -> InstanceState:
    """A fresh instance row before the schedule event: building, no task, no power."""
    return InstanceState(VmState.BUILDING)


def _allows(rule: _Rule, state: InstanceState) -> bool:
    if state.vm_state is VmState.DELETED:
        return False  # nothing happens to a deleted instance
    if rule.from_vm is not None and state.vm_state not in rule.from_vm:
        return False
    return rule.from_task is None or state.task_state in rule.from_task


def transition(state: InstanceState, event: Event | str) -> InstanceState:
    """The state after event, or InvalidTransition when it is not allowed now."""
    try:
        rule = _RULES[Event(event)]
    except ValueError:
        raise InvalidTransition(str(event), state) from None
    if not _allows(rule, state):
        raise InvalidTransition(Event(event).value, state)
    return InstanceState(
        vm_state=state.vm_state if rule.to_vm is None else rule.to_vm,
        task_state=rule.to_task,
        power_state=state.power_state if rule.to_power is None else rule.to_power,
    )


def allowed_events(state: InstanceState) -> list[Event]:
    """Events that transition() accepts in state, in declaration order."""
    return [event for event, rule in _RULES.items() if _allows(rule, state)]
