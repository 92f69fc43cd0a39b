"""When the conformance harness has all of a flow's events: every item of the sequence
recorded, but those behind an item that did not run (they run where it would have called)."""

from __future__ import annotations

from typing import Any

from specstack_conformance.harness import Items, settled

#: delete-vm's step 7 (`specstack_conformance.harness.Target._steps`): the guest destroyed,
#: then its volumes' attachments deleted through cinder-api, which writes its database and
#: tells cinder-volume, then the attachments completed
DETACH: Items = [
    [
        ("7", "nova-compute", "hypervisor"),
        ("7.1", "nova-compute", "cinder-api"),
        ("7.2", "cinder-api", "cinder-db"),
        ("7.3", "cinder-api", "cinder-volume"),
        ("7.4", "nova-compute", "cinder-api"),
    ],
    [("8", "nova-compute", "neutron-server")],
]


def _events(**statuses: str) -> list[dict[str, Any]]:
    return [{"step": label.replace("_", "."), "status": s} for label, s in statuses.items()]


def test_every_item_recorded_is_settled() -> None:
    assert settled(
        DETACH,
        _events(**{"7": "ok", "7_1": "ok", "7_2": "ok", "7_3": "ok"}, **{"7_4": "ok", "8": "ok"}),
    )


def test_an_item_not_yet_recorded_is_not_settled() -> None:
    assert not settled(
        DETACH, _events(**{"7": "ok", "7_1": "ok", "7_2": "ok", "7_4": "ok", "8": "ok"})
    )
    assert not settled(
        DETACH, _events(**{"7": "ok", "7_1": "ok", "7_2": "ok", "7_3": "ok", "7_4": "ok"})
    )


def test_the_items_behind_a_skipped_call_are_not_waited_for() -> None:
    # no volume: 7.1 skipped, so cinder-api never writes (7.2) nor tells cinder-volume (7.3)
    events = _events(**{"7": "skipped", "7_1": "skipped", "7_4": "skipped", "8": "ok"})
    assert settled(DETACH, events)


def test_a_call_that_ran_after_a_skipped_one_is_waited_for_again() -> None:
    # 7.4 ran: what cinder-api does after it is expected, though 7.1 was skipped
    steps: Items = [[*DETACH[0], ("7.5", "cinder-api", "cinder-db")]]
    events = _events(**{"7": "ok", "7_1": "skipped", "7_4": "ok"})
    assert not settled(steps, events)
    assert settled(steps, [*events, {"step": "7.5", "status": "ok"}])


def test_an_item_recorded_both_skipped_and_run_ran() -> None:
    # an `each` records one event per item: one run is enough for what is behind it
    events = _events(**{"7": "ok", "7_1": "ok", "7_4": "ok", "8": "ok"})
    events.append({"step": "7.1", "status": "skipped"})
    assert not settled(DETACH, events)  # 7.1 ran: cinder-api's 7.2 and 7.3 are to come
