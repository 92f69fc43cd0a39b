"""The conformance checks' view of steps a flow's `when` or `each` left out (recorded as
`skipped`): a follow-on interaction may be, a main step may not; an operation only ever left
out is not counted as unanswered."""

from __future__ import annotations

from typing import Any

import pytest

from specstack_conformance import checks
from specstack_conformance.harness import FlowRecord
from tests.runtime.test_compute_kit import stack_info


def _event(step: str, status: str, name: str, source: str, target: str, via: str) -> dict[str, Any]:
    return {"step": step, "status": status, "name": name, "source": source, "target": target,
            "via": via, "started_at": 0.0, "detail": {}}  # fmt: skip


STEP = {
    "number": 12,
    "source_component": "nova-compute",
    "target_component": "swift-proxy",
    "via": "http",
    "operation": "getObject",
    "then": [
        {"source_component": "nova-compute", "target_component": "cinder-api", "via": "http",
         "operation": "createVolume"},
    ],
}  # fmt: skip


def _record(main: str, then: str) -> FlowRecord:
    return FlowRecord("boot-vm", "req-1", "s1", {}, events=[
        _event("12", main, "getObject", "nova-compute", "swift-proxy", "http"),
        _event("12.1", then, "createVolume", "nova-compute", "cinder-api", "http"),
    ])  # fmt: skip


def test_a_follow_on_left_out_passes_a_main_step_left_out_fails() -> None:
    info = stack_info()
    checks.step(_record("ok", "skipped"), STEP, info)
    with pytest.raises(checks.ConformanceError, match="status skipped"):
        checks.step(_record("skipped", "ok"), STEP, info)
    assert checks.left_out((_record("ok", "skipped"),), "createVolume")
    assert not checks.left_out((_record("ok", "ok"),), "createVolume")
    assert not checks.left_out((_record("ok", "ok"),), "deleteVolume")  # never reached
