"""`specstack bench`: the figures it prints (generation only; the stack figures have their
own modules and are measured by `nox -s bench`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from generator.bench.stack import traced_boot_latencies, tree_cpu_s
from generator.cli import main
from specstack_runtime.config import StackConfig
from specstack_runtime.trace import TraceEvent, TraceRecorder


def test_generation_only_prints_one_json_object_of_named_figures(
    mini_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--json", "--runs", "1", "--generation-only"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {"python_loop_s", "generate_s", "generate_cpu_s", "noop_generate_s"}
    assert all(isinstance(v, float) and v > 0 for v in figures.values())
    # a no-op run reads hashes; a full run renders everything
    assert figures["noop_generate_s"] < figures["generate_s"]


def test_a_failing_generation_is_reported(
    mini_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (mini_spec / "stack.yaml").write_text("name: [\n")
    assert main(["bench", "--json", "--runs", "1", "--generation-only"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("bench failed: generate failed:\n")
    assert "spec/stack.yaml:" in captured.err


def test_host_counts_of_the_sweep_must_be_positive_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for bad in ("0,100", "ten"):
        with pytest.raises(SystemExit) as exited:
            main(["bench", "--hosts", bad])
        assert exited.value.code == 2
        assert "--hosts" in capsys.readouterr().err


def test_scale_figures_are_named_by_host_count() -> None:
    from generator.bench.scale import suffix

    assert [suffix(n) for n in (100, 1000, 3000, 10000, 2500)] == ["100", "1k", "3k", "10k", "2500"]


def test_profile_counts_what_a_boot_is_made_of(capsys: pytest.CaptureFixture[str]) -> None:
    """`--profile N`: counts per boot of the embedded stack, not times (repeatable under load)."""
    assert main(["bench", "--profile", "2", "--top", "40"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["boots"] == 2
    assert "sql_ms_per_boot" not in figures  # times only without the profiler
    assert figures["calls_per_boot"] > 1000
    # a boot goes through several APIs, messages and traced steps (spec/sequences/boot-vm)
    assert figures["http_requests_per_boot"] >= 4
    assert figures["messages_sent_per_boot"] >= 3
    assert figures["trace_events_per_boot"] >= 15
    assert figures["cel_evaluations_per_boot"] > 0
    # the boot's rows written and read, its requests routed and its bodies validated
    assert figures["sql_statements_per_boot"] >= 10
    assert figures["route_matches_per_boot"] >= figures["http_requests_per_boot"]
    assert figures["validations_per_boot"] > 0
    assert len(figures["top_cumulative"]) == 40
    assert all(" calls=" in line for line in figures["top_cumulative"])
    # nothing of the unprofiled run's timers is profiled (they wrap no method here)
    assert not [
        line for line in figures["top_cumulative"] if "profile.py" in line and " timed " in line
    ]


def test_profile_unprofiled_gives_the_cpu_of_a_boot(capsys: pytest.CaptureFixture[str]) -> None:
    """`--profile N --unprofiled`: the same boots without the profiler, their CPU, and of
    it the time in the stores' transactions and in CEL programs; the methods timed are
    put back afterwards."""
    from specstack_runtime.expr import Expr
    from specstack_runtime.store import Store

    methods = (Store._transaction, Expr._run)
    assert main(["bench", "--profile", "2", "--unprofiled"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {"boots", "cpu_ms_per_boot", "sql_ms_per_boot", "cel_ms_per_boot"}
    assert figures["boots"] == 2
    # a boot writes rows and evaluates expressions: neither time can be nothing
    assert figures["cpu_ms_per_boot"] > 0
    assert figures["sql_ms_per_boot"] > 0 and figures["cel_ms_per_boot"] > 0
    assert (Store._transaction, Expr._run) == methods


def test_rounds_give_the_stacks_memory_after_each_round_of_boots(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--rounds R --boots N`: the embedded stack's RSS when serving and after each round of
    N boots and deletes, and its growth a round from the second on; each round's boot
    median and server list time (the list checked to hold the servers kept alive)."""
    assert main(["bench", "--rounds", "3", "--boots", "2"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {
        "boots_a_round",
        "rss_mb_started",
        "rss_mb_after_rounds",
        "rss_mb_growth_a_round",
        "boot_p50_ms_rounds",
        "list_servers_p50_ms_rounds",
    }
    after = figures["rss_mb_after_rounds"]
    assert figures["boots_a_round"] == 2 and len(after) == 3
    assert len(figures["boot_p50_ms_rounds"]) == len(figures["list_servers_p50_ms_rounds"]) == 3
    assert all(
        ms > 0 for ms in figures["boot_p50_ms_rounds"] + figures["list_servers_p50_ms_rounds"]
    )
    # the stack's process, not this one's or nothing: tens of MB at least
    assert figures["rss_mb_started"] > 30 and min(after) > 30
    assert figures["rss_mb_growth_a_round"] == pytest.approx((after[2] - after[0]) / 2, abs=0.06)


def test_profile_runs_more_boots_than_the_hosts_hold(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--profile N` deletes the servers it booted every few boots (uncounted): hosts that
    hold 8 servers in all run 12 boots (without the deletes the 9th finds no host)."""
    import generator.bench.profile as profile

    def small_hosts(**kwargs: Any) -> StackConfig:  # 2 m1.tiny (512 MB) a host, 4 hosts
        return StackConfig(**kwargs, driver_options={"fake": {"memory_mb": "700"}})

    monkeypatch.setattr(profile, "StackConfig", small_hosts)
    monkeypatch.setattr(profile, "_BATCH", 4)
    assert main(["bench", "--profile", "12", "--unprofiled"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["boots"] == 12 and figures["cpu_ms_per_boot"] > 0
    monkeypatch.setattr(profile, "_BATCH", 12)
    assert main(["bench", "--profile", "12", "--unprofiled"]) != 0
    assert "boot prof-5: ERROR No valid host" in capsys.readouterr().err


def _event(flow: str, name: str | None, start: float, end: float, status: str = "ok") -> TraceEvent:
    return TraceEvent(
        flow_id=flow,
        sequence="boot-vm",
        step="x",
        title="",
        source="a",
        target="b",
        via="http",
        name=name,
        status=status,
        started_at=start,
        ended_at=end,
        request_id="r",
        host="h",
    )


def test_traced_boot_latency_is_post_to_active_from_the_stacks_trace(tmp_path: Path) -> None:
    trace = TraceRecorder(tmp_path / "trace.sqlite")
    for event in (
        _event("early", "createServer", 5.0, 5.1),  # begun before the window: not counted
        _event("early", "instance_update", 5.2, 5.3),
        _event("straddles", "validateToken", 8.99, 8.995),  # begun just before the window
        _event("straddles", "instance_update", 9.01, 9.02),
        _event("f1", "validateToken", 10.0, 10.001),
        _event("f1", "instance_update", 10.004, 10.012),
        _event("f2", "validateToken", 11.0, 11.001),
        _event("f2", "instance_update", 11.002, 11.006, status="error"),  # not ACTIVE
        _event("f2", "instance_update", 11.007, 11.020),
        _event("f3", "validateToken", 12.0, 12.001),  # never ACTIVE: not counted
        _event("late", "validateToken", 30.0, 30.001),  # begun after the window
        _event("late", "instance_update", 30.002, 30.003),
    ):
        trace.record(event)
    trace.flush()
    got = traced_boot_latencies(tmp_path / "trace.sqlite", 9.0, 20.0)
    assert [round(x, 3) for x in got] == [0.012, 0.020]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--runs", "abc"], "argument --runs: 'abc' is not a whole number"),
        (["bench", "--runs", "0"], "argument --runs: 0 is not a positive number"),
        (["bench", "--rounds", "0"], "argument --rounds: 0 is not a positive number"),
        (["bench", "--profile", "2", "--top", "-5"], "--top: -5 is not a whole number at least 0"),
        (["run", "--port", "80x"], "argument --port: '80x' is not a whole number"),
        (["run", "--computes", "two"], "argument --computes: 'two' is not a whole number"),
        (["conform", "--timeout", "nan"], "--timeout: nan is not a number of seconds at least 0"),
        (["conform", "--timeout", "soon"], "--timeout: 'soon' is not a number of seconds"),
    ],
)
def test_bad_numbers_on_the_command_line_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each refused with exit 2 and what is wrong, in words (not argparse's 'invalid
    _positive value', which named the function that parsed it)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "_positive" not in err and "invalid" not in err


def test_the_stacks_cpu_counts_every_process_it_started() -> None:
    """`served_cpu_ms_per_boot` is the CPU of the stack's whole process tree (distributed mode: the
    supervisor's components): a grandchild's busy loop is counted, a sleeping parent adds
    almost nothing."""
    burn = "import time; t = time.process_time(); exec('while time.process_time() - t < 0.5: pass'); time.sleep(30)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {burn!r}]); time.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_s(parent.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        total = tree_cpu_s(parent.pid)
        own = tree_cpu_s(parent.pid) - sum(tree_cpu_s(c) for c in _children(parent.pid))
        assert 0.5 <= total < 5, total
        assert own < 0.4, own  # the parent's start-up only: the burn is the grandchild's
    finally:
        for pid in _children(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]
