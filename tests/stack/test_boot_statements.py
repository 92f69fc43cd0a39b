"""What one boot costs the databases: the SQL statements its flow makes, counted (a count is
deterministic, a time is not). A change that adds round trips to every boot fails here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from specstack_conformance.harness import Target
from specstack_runtime import logs

#: Statements of one boot-vm flow (token issued in step 2, no volume) on a warm stack: 35
#: when this was written (37 before a port's create reused the network it had checked and
#: its port_update step the same row), 39 since a build takes its instance by
#: compare-and-set and the scheduler records the host it claims on before the claim, 41
#: since nova and neutron read the project's own quota limits (once per create), 49 since
#: the boot's instance action is recorded (os-instance-actions: the API's row, then the
#: scheduler's and the compute host's events merged into it, each read and written), 47
#: since each of those three rows is read (locked) and written in one transaction.
MOST_PER_BOOT = 47


@pytest.fixture(scope="module")
def stack() -> Iterator[Target]:
    target = Target.embedded()
    try:
        yield target
    finally:
        target.close()


def test_a_boot_makes_a_bounded_number_of_sql_statements(stack: Target) -> None:
    by_flow: Counter[str] = Counter()
    kinds: Counter[tuple[str, str]] = Counter()

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        ctx = logs.current()
        flow = ctx.global_request_id if ctx is not None else "-"
        by_flow[flow] += 1
        kinds[(flow, statement.split()[0])] += 1

    stack.boot(volume=False)  # first use of the project (its default security group) not counted
    event.listen(Engine, "before_cursor_execute", count)
    try:
        first = stack.boot(volume=False)
        second = stack.boot(volume=False)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert first.server["status"] == second.server["status"] == "ACTIVE"
    # the same work each time, every statement attributed to the flow that made it
    assert by_flow[first.flow_id] == by_flow[second.flow_id]
    assert 0 < by_flow[first.flow_id] <= MOST_PER_BOOT, dict(kinds)
    # the instance, its port and the port's address written (the flow did its work)
    assert kinds[(first.flow_id, "INSERT")] >= 3
