"""The pieces of a stack on several hosts, without starting one: `--nodes` and the layout it
keeps, node_addresses in the catalog, the trace store on a database server, and
`specstack clouds --identity`."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from generator.cli import main as cli_main
from generator.commands.clouds import identity_root
from specstack_runtime.config import StackConfig
from specstack_runtime.embedded import load_generated
from specstack_runtime.supervisor import SupervisorError, layout, this_hosts
from specstack_runtime.trace import TraceEvent, TraceRecorder

ADDRESSES = {"controller": "10.0.0.2", "storage": "10.0.0.5", "compute-3": "10.0.0.9"}


def config(**kw: object) -> StackConfig:
    return StackConfig(mode="distributed", computes=4, node_processes=1, **kw)  # type: ignore[arg-type]


def test_nodes_name_hosts_and_whole_topology_nodes() -> None:
    info = load_generated()[0]
    assert this_hosts(info, config(), "controller,compute-2..compute-3") == {
        "controller",
        "compute-2",
        "compute-3",
    }
    assert this_hosts(info, config(), "compute") == {f"compute-{i}" for i in range(1, 5)}


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            "compute-9",
            "no node instance 'compute-9'; the topology has controller, network, "
            "storage, compute-1..compute-4",
        ),
        ("gateway", "no node instance 'gateway'"),
        ("compute-3..compute-1", "a range of hosts is NAME-M..NAME-N with M <= N"),
        ("compute-1,compute-1", "a host is named twice"),
    ],
)
def test_bad_nodes_are_refused_by_name(nodes: str, message: str) -> None:
    info = load_generated()[0]
    with pytest.raises(SupervisorError, match="--nodes") as err:
        this_hosts(info, config(), nodes)
    assert message in str(err.value)


def test_a_node_placed_elsewhere_is_not_started_here() -> None:
    info = load_generated()[0]
    here = config(host_address="10.0.0.9", node_addresses=ADDRESSES)
    assert this_hosts(info, here, "compute-3") == {"compute-3"}
    with pytest.raises(SupervisorError) as err:
        this_hosts(info, here, "storage")
    assert str(err.value) == (
        "--nodes: storage is at 10.0.0.5 by node_addresses, but this host's host_address "
        "is 10.0.0.9"
    )


def test_the_layout_of_some_nodes_has_only_their_processes() -> None:
    info, services, _ = load_generated()
    cfg = config()
    whole = layout(info, services, cfg)
    mine = layout(info, services, cfg, frozenset({"compute-2", "compute-3"}))
    assert {(p.component, p.host) for p in mine} == {
        ("nova-compute", "compute-2..compute-3"),
        ("neutron-l2-agent", "compute-2..compute-3"),
    }
    storage = layout(info, services, cfg, frozenset({"storage"}))
    assert {p.component for p in storage} == {"swift-proxy", "cinder-volume"}
    assert {p.component for p in whole} >= {p.component for p in mine + storage} | {"keystone"}


def test_the_catalog_places_each_api_on_its_nodes_address() -> None:
    info = load_generated()[0]
    cfg = config(host_address="10.0.0.9", node_addresses=ADDRESSES, base_port=7000)
    urls = {e["name"]: e["endpoints"][0]["url"].split("/")[2] for e in info.catalog(cfg, "p1")}
    assert urls["keystone"] == "10.0.0.2:7000"
    assert urls["swift"].startswith("10.0.0.5:")
    assert urls["nova"].startswith("10.0.0.2:")
    # without node_addresses every API is on this host's address, as before
    plain = config(host_address="127.0.0.7", base_port=7000)
    assert {
        e["endpoints"][0]["url"].split("/")[2].split(":")[0] for e in info.catalog(plain, "p")
    } == {"127.0.0.7"}


def test_the_distributed_trace_store_is_a_database_on_the_server() -> None:
    cfg = config(stack_name="st1", database_server="postgresql://u@db:5432")
    assert cfg.trace_store_url() == "postgresql://u@db:5432/st1_trace"
    assert StackConfig(stack_name="st1").trace_store_url() is None  # embedded: trace.sqlite
    assert config(trace_url="mysql://x@h/t").trace_store_url() == "mysql://x@h/t"


def _event(flow: str, step: str, at: float, host: str) -> TraceEvent:
    return TraceEvent(
        flow,
        "boot-vm",
        step,
        f"step {step}",
        "a",
        "b",
        "http",
        None,
        "ok",
        at,
        at + 0.5,
        "req-x",
        host,
        {"sent": {"auth": {"password": "[REDACTED]"}}},
    )


def _round_trip(url: str) -> None:
    """Two processes (two recorders) write to the store; a third reads the merged flow."""
    flow = f"req-{uuid.uuid4()}"
    one = TraceRecorder(None, shared=True, url=url)
    two = TraceRecorder(None, shared=True, url=url)
    reader = TraceRecorder(None, shared=True, url=url)
    try:
        one.record(_event(flow, "2", 10.0, "controller"))
        two.record(_event(flow, "12", 11.0, "compute-3"))
        one.record(_event(flow, "1", 9.0, "controller"))
        one.alias("req-answer", flow)
        one.alias("req-answer", flow)  # twice in one batch: replaced, not an error
        two.own(flow, "proj-1")
        one.own(flow, "proj-2")  # the first owner stays
        two.flush()
        one.flush()
        events = reader.events("req-answer")
        assert [(e["step"], e["host"]) for e in events] == [
            ("1", "controller"),
            ("2", "controller"),
            ("12", "compute-3"),
        ]
        assert events[0]["detail"]["sent"]["auth"]["password"] == "[REDACTED]"
        assert events[0]["duration_ms"] == 500.0
        assert reader.resolve("req-answer") == flow
        assert reader.owner(flow) == "proj-1"
        assert reader.events("req-none") == []
        # the bench's read: every event of a sequence's flows begun since a time
        from specstack_runtime.trace_sql import SqlTraceStore

        store = SqlTraceStore(url)
        try:
            since = store.sequence_events("boot-vm", 10.0)
            assert sorted((e["step"], e["flow_id"]) for e in since) == [("12", flow), ("2", flow)]
            assert store.sequence_events("delete-vm", 0.0) == []
        finally:
            store.close()
    finally:
        for r in (one, two, reader):
            r.close()


def test_the_trace_store_on_a_database_through_sqlalchemy(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'store.db'}")


@pytest.mark.skipif(
    os.environ.get("SPECSTACK_TEST_MODE") != "distributed", reason="needs the PostgreSQL server"
)
def test_the_trace_store_on_postgresql() -> None:
    from specstack_runtime import migrate, trace_sql

    url = f"postgresql://postgres@127.0.0.1:5432/tracetest_{uuid.uuid4().hex[:10]}"
    assert migrate.ensure_database(url)
    try:
        trace_sql.create_schema(url)
        _round_trip(url)
    finally:
        migrate.drop_database(url)


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://10.0.0.2:5000", "http://10.0.0.2:5000"),
        ("http://10.0.0.2:5000/v3/", "http://10.0.0.2:5000"),
        ("https://keystone.example/identity/v3", "https://keystone.example/identity"),
    ],
)
def test_the_identity_root(given: str, root: str) -> None:
    assert identity_root(given) == root


@pytest.mark.parametrize("bad", ["10.0.0.2:5000", "ftp://h/", "http://h:99999", "http:///v3"])
def test_a_bad_identity_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--identity"):
        identity_root(bad)


def test_clouds_writes_a_private_clouds_yaml_anywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "s.toml"
    conf.write_text('admin_password = "adm1n"\nregion = "RegionTwo"\n')
    out = tmp_path / "elsewhere" / "clouds.yaml"
    out.parent.mkdir()
    code = cli_main(
        [
            "clouds",
            "--identity",
            "http://10.0.0.2:5000/v3",
            "--config",
            str(conf),
            "--output",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text()
    assert "auth_url: http://10.0.0.2:5000/v3" in text
    assert "password: adm1n" in text and "region_name: RegionTwo" in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert f"OS_CLIENT_CONFIG_FILE={out}" in capsys.readouterr().out


def test_clouds_refuses_a_bad_url_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clouds.yaml"
    assert cli_main(["clouds", "--identity", "keystone:5000", "--output", str(out)]) == 2
    assert "is not an http(s)://HOST[:PORT] URL" in capsys.readouterr().err
    assert not out.exists()


def test_run_nodes_needs_distributed_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(
        ["run", "--no-generate", "--nodes", "controller", "--data-dir", str(tmp_path / "d")]
    )
    assert code == 2
    assert "use it with --mode distributed" in capsys.readouterr().out


def test_a_host_without_the_identity_api_needs_the_shared_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('host_address = "127.0.0.4"\ncomputes = 3\n')
    args = ["run", "--no-generate", "--mode", "distributed", "--config", str(conf)]
    code = cli_main([*args, "--nodes", "compute-3", "--data-dir", str(tmp_path / "d")])
    assert code == 2
    assert (
        "--nodes compute-3: this host does not run the identity API; set stack_name and "
        "service_password to those of the host that does" in capsys.readouterr().out
    )
    assert not (tmp_path / "d" / "logs").exists()  # nothing started
    code = cli_main([*args, "--nodes", "compute-7", "--data-dir", str(tmp_path / "e")])
    assert code == 2
    assert "no node instance 'compute-7'" in capsys.readouterr().out


def test_a_stopped_distributed_stacks_trace_is_read_from_its_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from generator.commands.flow_events import redact_url, server_store

    for name in [n for n in os.environ if n.startswith("SPECSTACK_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./specstack.toml
    data = tmp_path / "d"
    data.mkdir()
    assert server_store(data) is None  # no stack ran here
    (data / "secrets.json").write_text('{"service_password": "x", "stack_name": "st9"}')
    assert server_store(data) == "postgresql+psycopg://postgres@127.0.0.1:5432/st9_trace"
    monkeypatch.setenv("SPECSTACK_DATABASE_SERVER", "postgresql://u:pw@db:5432")
    assert server_store(data) == "postgresql://u:pw@db:5432/st9_trace"
    assert "pw" not in redact_url(str(server_store(data)))
    (data / "trace.sqlite").touch()  # an embedded stack's
    assert server_store(data) is None
