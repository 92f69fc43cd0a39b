"""What one boot costs the databases: the SQL statements its flow makes, counted (a count is
deterministic, a time is not). A change that adds round trips to every boot fails here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from specstack_conformance.harness import Target
from specstack_runtime import logs
from specstack_runtime.behaviours import identity
from specstack_runtime.virt import journal
from specstack_runtime.virt.fake import FakeHypervisor

#: Statements of one boot-vm flow (token issued in step 2, no volume) on a warm stack: 35
#: when this was written (37 before a port's create reused the network it had checked and
#: its port_update step the same row), 39 since a build takes its instance by
#: compare-and-set and the scheduler records the host it claims on before the claim, 41
#: since nova and neutron read the project's own quota limits (once per create), 49 since
#: the boot's instance action is recorded (os-instance-actions: the API's row, then the
#: scheduler's and the compute host's events merged into it, each read and written), 47
#: since each of those three rows is read (locked) and written in one transaction, 44 since
#: the scheduler's two writes of the instance and its claim on the node are each one UPDATE
#: conditioned on the row it read (no read again), 39 measured then; 29 since an embedded
#: stack's store, its database's only writer, answers a read by id of a row it remembers
#: (as it last wrote or read it, or its absence) without a statement; 27 since the project's
#: default security group is looked up by its id first (a row the store remembers).
MOST_PER_BOOT = 27


@pytest.fixture(scope="module")
def stack() -> Iterator[Target]:
    # a user's dead tokens are pruned at most once a minute, at a token's issue: on a slow
    # machine one prune fell into one counted boot and not the other; here only the first
    # issue prunes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(identity, "PRUNE_EVERY_S", 1e9)
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

    # not counted: the project's first use (its default security group) and each compute
    # host's first boot (its image cache filled); the scheduler spreads boots over the two
    for _ in range(2):
        stack.boot(volume=False)
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


def test_a_boot_writes_its_guest_once_and_it_is_on_disk_when_active(
    stack: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake hypervisor writes a boot's changes (spawn, then its vifs) in one append to
    its journal, on disk once the server is ACTIVE with the stack still running (no stop, no
    flush): a new reader of the files sees the guest as it is."""
    writes: list[tuple[Path, int]] = []
    real = journal.Journal.append

    def counted(self: journal.Journal, changes: Iterable[tuple[str, Any]]) -> None:
        listed = list(changes)
        if self.path.parent.name == "hypervisors":
            writes.append((self.path, len(listed)))
        real(self, listed)

    monkeypatch.setattr(journal.Journal, "append", counted)
    record = stack.boot(volume=False)
    assert record.server["status"] == "ACTIVE"
    assert [n for _, n in writes] == [1], writes
    guest = FakeHypervisor(writes[0][0]).guests[record.server_id]
    assert guest["power_state"] == 1 and len(guest["vifs"]) == 1, guest
    addresses = [a["addr"] for net in record.server["addresses"].values() for a in net]
    assert guest["vifs"][0]["ip_addresses"] == addresses


def test_a_flow_without_volumes_is_read_once_when_it_has_recorded_all(
    stack: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness reads a boot's and a delete's trace until every step that will be recorded
    is: without volumes, the attachment steps cinder-api would have run are not waited for
    (they were, 50 reads of the trace a flow, until the harness gave up)."""
    reads: list[str] = []
    real = Target.events

    async def counted(self: Target, flow_id: str, token: str | None = None) -> list[Any]:
        reads.append(flow_id)
        return await real(self, flow_id, token)

    monkeypatch.setattr(Target, "events", counted)
    booted = stack.boot(volume=False)
    deleted = stack.delete(booted.server_id)
    # the last steps of each flow are all there (the delete's: the instance row destroyed)
    assert {"15.5", "15.6"} <= {e["step"] for e in booted.events}
    assert {"11", "11.1"} <= {e["step"] for e in deleted.events}
    # the flows' last events come just after the client sees their result: a read or two
    assert len(reads) <= 4 and set(reads) == {booted.flow_id, deleted.flow_id}, reads
