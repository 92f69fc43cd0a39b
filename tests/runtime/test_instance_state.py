from __future__ import annotations

import pytest

from specstack_runtime.behaviours.instance_state import (
    Event,
    InstanceState,
    InvalidTransition,
    PowerState,
    TaskState,
    VmState,
    allowed_events,
    api_status,
    initial_state,
    transition,
)


def run(*events: str, start: InstanceState | None = None) -> InstanceState:
    state = start or initial_state()
    for event in events:
        state = transition(state, event)
    return state


def test_power_state_values_match_nova() -> None:
    assert [int(p) for p in PowerState] == [0, 1, 3, 4, 6, 7]


def test_string_values_match_nova() -> None:
    assert TaskState.POWERING_OFF.value == "powering-off"
    assert VmState.SOFT_DELETED.value == "soft-delete"
    assert TaskState.BLOCK_DEVICE_MAPPING.value == "block_device_mapping"


def test_boot_flow_statuses() -> None:
    state = initial_state()
    seen = [(state.task_state, state.status)]
    for event in ("schedule", "networking", "block_device_mapping", "spawn"):
        state = transition(state, event)
        seen.append((state.task_state, state.status))
    assert seen == [
        (None, "BUILD"),
        (TaskState.SCHEDULING, "BUILD"),
        (TaskState.NETWORKING, "BUILD"),
        (TaskState.BLOCK_DEVICE_MAPPING, "BUILD"),
        (TaskState.SPAWNING, "BUILD"),
    ]
    active = transition(state, Event.SPAWNED)
    assert active == InstanceState(VmState.ACTIVE, None, PowerState.RUNNING)
    assert active.status == "ACTIVE"


def test_bdm_before_networking_is_also_fine() -> None:
    state = run("schedule", "block_device_mapping", "networking", "spawn", "spawned")
    assert state.status == "ACTIVE"


def test_stop_and_start() -> None:
    active = run("schedule", "spawn", "spawned")
    stopping = transition(active, "stop")
    assert (stopping.task_state, stopping.status) == (TaskState.POWERING_OFF, "ACTIVE")
    stopped = transition(stopping, "stopped")
    assert stopped == InstanceState(VmState.STOPPED, None, PowerState.SHUTDOWN)
    assert stopped.status == "SHUTOFF"
    starting = transition(stopped, "start")
    assert (starting.task_state, starting.status) == (TaskState.POWERING_ON, "SHUTOFF")
    assert transition(starting, "started") == active


def test_delete_from_any_live_state() -> None:
    for start in (
        initial_state(),
        run("schedule"),
        run("schedule", "spawn"),
        run("schedule", "spawn", "spawned"),
        run("schedule", "spawn", "spawned", "stop", "stopped"),
        run("schedule", "error"),
    ):
        deleting = transition(start, "delete")
        assert deleting.task_state is TaskState.DELETING
        gone = transition(deleting, "deleted")
        assert gone == InstanceState(VmState.DELETED, None, PowerState.NOSTATE)
        assert gone.status == "DELETED"


def test_error_keeps_power_state_and_clears_task() -> None:
    failed = run("schedule", "spawn", "error")
    assert failed == InstanceState(VmState.ERROR, None, PowerState.NOSTATE)
    assert failed.status == "ERROR"
    running_then_error = run("schedule", "spawn", "spawned", "error")
    assert running_then_error.power_state is PowerState.RUNNING


@pytest.mark.parametrize(
    ("events", "bad"),
    [
        ((), "spawned"),  # not spawning yet
        (("schedule", "spawn", "spawned"), "start"),  # already running
        (("schedule", "spawn", "spawned"), "spawn"),
        (("schedule",), "stop"),  # still building
        (("schedule", "spawn", "spawned", "stop"), "stop"),  # already powering off
        (("schedule", "spawn", "spawned", "stop", "stopped"), "stopped"),
        (("schedule", "delete"), "delete"),  # already deleting
        (("schedule", "delete", "deleted"), "error"),  # nothing happens once deleted
        (("schedule", "delete", "deleted"), "delete"),
        (("schedule",), "schedule"),
        ((), "reboot"),  # unknown event
    ],
)
def test_invalid_transitions(events: tuple[str, ...], bad: str) -> None:
    state = run(*events)
    with pytest.raises(InvalidTransition) as caught:
        transition(state, bad)
    assert caught.value.state == state
    assert f"Cannot '{bad}' instance while it is in vm_state {state.vm_state.value}" in str(
        caught.value
    )


def test_api_status_mapping() -> None:
    assert api_status(VmState.BUILDING, TaskState.SCHEDULING) == "BUILD"
    assert api_status("active", None) == "ACTIVE"
    assert api_status("active", "rebooting") == "REBOOT"
    assert api_status("active", "powering-off") == "ACTIVE"
    assert api_status("stopped", "powering-on") == "SHUTOFF"
    assert api_status("error", None) == "ERROR"
    assert api_status("deleted") == "DELETED"
    assert api_status("soft-delete") == "SOFT_DELETED"
    assert api_status("resized") == "VERIFY_RESIZE"
    assert api_status("no-such-state") == "UNKNOWN"


def test_allowed_events() -> None:
    assert allowed_events(initial_state()) == [
        Event.SCHEDULE,
        Event.BLOCK_DEVICE_MAPPING,
        Event.NETWORKING,
        Event.SPAWN,
        Event.DELETE,
        Event.ERROR,
    ]
    assert allowed_events(run("schedule", "spawn", "spawned")) == [
        Event.STOP,
        Event.DELETE,
        Event.ERROR,
    ]
    assert allowed_events(run("schedule", "delete", "deleted")) == []


def test_parse_from_stored_values() -> None:
    state = InstanceState.parse("active", "powering-off", 1)
    assert state == InstanceState(VmState.ACTIVE, TaskState.POWERING_OFF, PowerState.RUNNING)
    assert InstanceState.parse("building", None) == initial_state()
    with pytest.raises(ValueError):
        InstanceState.parse("flying", None)
