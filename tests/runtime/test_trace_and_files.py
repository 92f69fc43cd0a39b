"""Trace recording and reading back; write-behind state files; `with:` bindings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from specstack_runtime import trace
from specstack_runtime.errors import StepFailed
from specstack_runtime.flowsteps import bind
from specstack_runtime.statefile import DELAY_S, flush_all, state_file
from specstack_runtime.trace import TraceEvent, TraceRecorder


def event(flow: str, step: str, t: float, **detail: object) -> TraceEvent:
    return TraceEvent(
        flow,
        "boot-vm",
        step,
        "T",
        "a",
        "b",
        "http",
        "op",
        "ok",
        t,
        t + 0.001,
        "req-x",
        "controller",
        dict(detail),
    )


def test_events_are_read_back_from_memory_and_from_the_file(tmp_path: Path) -> None:
    rec = TraceRecorder(tmp_path / "trace.sqlite")
    seen: list[str] = []
    stop = rec.listen(lambda e: seen.append(e.step))
    rec.record(event("f1", "2", 2.0))
    rec.record(event("f1", "1", 1.0, received=b'{"a": 1}'))
    rec.alias("req-nova", "f1")
    stop()
    rec.record(event("f1", "3", 3.0))
    assert seen == ["2", "1"]
    assert [e["step"] for e in rec.events("f1")] == ["1", "2", "3"]
    assert rec.events("req-nova")[0]["detail"]["received"] == {"a": 1}
    rec.flush()
    again = TraceRecorder(tmp_path / "trace.sqlite")  # another process reading the file
    assert [e["step"] for e in again.events("req-nova")] == ["1", "2", "3"]
    assert again.events("unknown") == []


def test_a_long_running_trace_keeps_memory_bounded_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A persistent trace keeps no flow in memory and only its latest aliases and owners:
    every flow still reads back whole from its file, and a flow's owner is the first
    project that claimed it even once memory forgot it."""
    monkeypatch.setattr(trace, "MAX_NAMES_IN_MEMORY", 8)
    rec = TraceRecorder(tmp_path / "trace.sqlite")
    for n in range(20):
        rec.record(event(f"f{n}", "1", float(n), n=n))
        rec.alias(f"req-{n}", f"f{n}")
        rec.own(f"f{n}", f"project-{n}")
        rec.record(event(f"f{n}", "2", n + 0.5))
    assert not rec._flows
    assert len(rec._aliases) == len(rec._owners) == 8
    rec.own("f0", "intruder")  # forgotten by memory, claimed again: the first one stays
    assert rec.owner("req-0") == "project-0"
    assert [e["step"] for e in rec.events("req-0")] == ["1", "2"]
    assert rec.events("req-0")[0]["detail"] == {"n": 0}
    assert rec.events("req-19")[0]["detail"] == {"n": 19}
    # without a file the memory is the trace: its last flows, its latest names
    monkeypatch.setattr(trace, "MAX_FLOWS_IN_MEMORY", 5)
    mem = TraceRecorder(None)
    for n in range(20):
        mem.record(event(f"f{n}", "1", float(n)))
        mem.alias(f"req-{n}", f"f{n}")
    assert list(mem._flows) == [f"f{n}" for n in range(15, 20)]
    assert len(mem._aliases) == 8
    assert [e["step"] for e in mem.events("req-19")] == ["1"]
    assert mem.events("f0") == []


def test_flushes_from_any_thread_share_one_writer_and_lose_nothing(tmp_path: Path) -> None:
    """The trace file's writer stays open between flushes (the flusher's threads and the
    loop's own flush share it); closed, the next flush opens the file again."""
    rec = TraceRecorder(tmp_path / "trace.sqlite")

    async def go() -> None:
        for n in range(3):
            rec.record(event("f2", str(n), float(n)))
            await asyncio.to_thread(rec.flush)  # a worker thread's flush
        rec.record(event("f2", "3", 3.0))
        rec.flush()  # the loop's own
        rec.close()
        rec.record(event("f2", "4", 4.0))
        rec.flush()

    asyncio.run(go())
    rec.close()
    again = TraceRecorder(tmp_path / "trace.sqlite")
    assert [e["step"] for e in again.events("f2")] == ["0", "1", "2", "3", "4"]


def test_state_files_are_written_behind_and_flushed(tmp_path: Path) -> None:
    async def go() -> None:
        shared: dict[str, object] = {}
        f = state_file(shared, tmp_path / "ports.json")
        f.also_write(tmp_path / "host", lambda d: "".join(f"{k}\n" for k in sorted(d)))
        f.data["p1"] = {"mac": "x"}
        f.changed()
        assert not (tmp_path / "ports.json").exists()  # not yet: one write per burst
        await asyncio.sleep(DELAY_S + 0.2)
        assert json.loads((tmp_path / "ports.json").read_text()) == {"p1": {"mac": "x"}}
        f.data["p2"] = {}
        f.changed()
        flush_all(shared)
        assert (tmp_path / "host").read_text() == "p1\np2\n"
        assert state_file(shared, tmp_path / "ports.json") is f

    asyncio.run(go())


def test_bindings_fill_placeholders_and_keep_types() -> None:
    scope = {"instance": {"uuid": "u1", "ports": [{"id": "p"}], "n": 3}, "host": "compute-1"}
    assert bind({"id": "{instance.uuid}", "n": "{instance.n}"}, scope) == {"id": "u1", "n": 3}
    assert bind("AUTH_{host}/{instance.ports.0.id}", scope) == "AUTH_compute-1/p"
    assert bind(["{host}", 1, None], scope) == ["compute-1", 1, None]
    with pytest.raises(StepFailed, match=r"\{instance.missing\} is not set"):
        bind("{instance.missing}", scope)
