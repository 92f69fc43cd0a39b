"""A message's payload checked against the spec's schema: valid ones pass (decided by
jsonschema-rs), invalid ones are refused with jsonschema's own words and path."""

from __future__ import annotations

from typing import Any

import pytest

from specstack_runtime import messaging
from specstack_runtime.embedded import load_generated

INFO, _, _ = load_generated()
OK: dict[str, Any] = {
    "instance_uuid": "0b2c7e6e-1d2c-4b5e-9c1f-0123456789ab",
    "updates": {"vm_state": "active", "task_state": None, "power_state": 1},
}


def test_a_valid_payload_passes() -> None:
    messaging.check(INFO, "instance_update", "payload", OK)
    messaging.check(INFO, "instance_update", "payload", {**OK, "expected_task_state": None})


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        ({"updates": {}}, "at (top level): 'instance_uuid' is a required property"),
        ({**OK, "x": 1}, "at (top level): Additional properties are not allowed ('x' was"),
        ({**OK, "updates": {"power_state": "one"}}, "at updates/power_state: 'one' is not of"),
        # a tuple is no JSON array (jsonschema-rs would take it for one)
        ({**OK, "updates": ("a",)}, "at updates: ('a',) is not of type 'object'"),
        ({**OK, "updates": {"vm_state": ("a",)}}, "at updates/vm_state: ('a',) is not of"),
        ({**OK, "instance_uuid": object()}, "at instance_uuid: <object object at"),
    ],
)
def test_an_invalid_payload_is_refused_in_jsonschemas_words(payload: Any, said: str) -> None:
    with pytest.raises(messaging.InvalidMessage) as caught:
        messaging.check(INFO, "instance_update", "payload", payload)
    assert str(caught.value).startswith(f"instance_update payload {said}")
