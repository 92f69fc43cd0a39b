"""generated/deploy: Kubernetes manifests and a Compose file rendered from the topology,
valid against their published schemas (offline) and saying what the spec says."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, cast

import jsonschema
import kubernetes_validate
import pytest
import yaml

from generator.pipeline.render.base import RenderContext, template_env
from generator.pipeline.render.deploy import (
    DATA_DIR,
    SECRET,
    SECRET_KEYS,
    DeployError,
    DeployTarget,
    dns_name,
    runs,
)
from specstack_runtime.config import StackConfig, load_config
from specstack_runtime.embedded import load_generated
from specstack_runtime.ir import IR
from specstack_runtime.process import parse_args, ready_file
from specstack_runtime.supervisor import layout

from .conftest import REPO

#: The Kubernetes release the manifests are checked against (its schemas ship with
#: kubernetes-validate); StatefulSet `ordinals` is GA from 1.31.
K8S_VERSION = "1.33.0"
DEPLOY = REPO / "generated" / "deploy"
KUBE = DEPLOY / "kubernetes"
COMPOSE_SCHEMA = REPO / "tests" / "data" / "compose-spec" / "compose-spec.json"
#: Settings that hold a secret (or a URL that may carry one): never in the ConfigMap.
SECRET_SETTINGS = {
    "service_password",
    "admin_password",
    "demo_password",
    "bus_url",
    "database_server",
    "database_urls",
    "osprofiler_hmac_keys",
}


@pytest.fixture(autouse=True)
def _repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the generated package is imported from the working directory


def _ir() -> IR:
    return IR.model_validate_json((REPO / "generated" / "ir.json").read_text())


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kube() -> list[dict[str, Any]]:
    return [
        d for f in sorted(KUBE.glob("*.yaml")) if f.name != "kustomization.yaml" for d in _docs(f)
    ]


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _render(ir: IR) -> dict[str, str]:
    ctx = RenderContext(
        spec=cast(Any, None), spec_label="spec", templates=template_env(REPO / "templates")
    )
    return {f.path: f.content for f in DeployTarget().render(ir, ctx)}


def _with_node(ir: IR, name: str, **update: Any) -> IR:
    nodes = tuple(n.model_copy(update=update) if n.name == name else n for n in ir.topology)
    return ir.model_copy(update={"topology": nodes})


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], doc["spec"]["template"]["spec"]["containers"])


def _arg(container: dict[str, Any], flag: str) -> str:
    command = container["command"]
    return str(command[command.index(flag) + 1])


# -- validity ---------------------------------------------------------------------------------


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    docs = _kube()
    assert {d["kind"] for d in docs} == {"ConfigMap", "Job", "Service", "Deployment", "StatefulSet"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_validator_refuses_a_broken_manifest() -> None:
    sts = _of_kind(_kube(), "StatefulSet")[0]
    broken = json.loads(json.dumps(sts))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    unknown = json.loads(json.dumps(sts))
    unknown["spec"]["template"]["spec"]["containers"][0]["comand"] = ["python"]
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: no unknown field
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)


def _compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    return jsonschema.Draft7Validator(schema)


def test_the_compose_file_validates_against_the_compose_spec_schema() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    errors = [e.message for e in _compose_validator().iter_errors(compose)]
    assert errors == []
    compose["services"]["migrate"]["restart"] = 3
    compose["services"]["migrate"]["depends_on"] = {"postgresql": {"condition": "soon"}}
    assert len(list(_compose_validator().iter_errors(compose))) == 2


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = sorted(f.name for f in KUBE.glob("*.yaml") if f.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    assert set(kustomization) == {"apiVersion", "kind", "resources"}  # the overlay sets the rest


# -- content ----------------------------------------------------------------------------------


def test_every_listening_component_has_a_service_on_its_spec_port() -> None:
    ir = _ir()
    docs = _kube()
    services = {s["metadata"]["name"]: s for s in _of_kind(docs, "Service")}
    listening = [c for c in ir.components if runs(c) and c.port is not None]
    assert {c.name for c in listening} >= {c.name for c in ir.components if c.api}
    for c in listening:
        svc = services[dns_name(c.name)]
        assert svc["spec"]["ports"] == [
            {"name": "http", "protocol": "TCP", "port": c.port, "targetPort": c.port}
        ]
        selector = svc["spec"]["selector"]
        chosen = [
            w
            for w in _workloads(docs)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert chosen, f"no pod carries {selector}"
        for w in chosen:  # each pod it selects runs the component on that port
            (ct,) = [x for x in _containers(w) if _arg(x, "--component") == c.name]
            assert ct["ports"] == [{"name": "http", "containerPort": c.port, "protocol": "TCP"}]


def test_the_workloads_run_the_supervisors_layout() -> None:
    """The processes the manifests start are those `specstack run --mode distributed` starts."""
    info, services, _ = load_generated(package="generated")
    config = load_config(environ={}, mode="distributed")
    expected = {(p.component, p.node) for p in layout(info, services, config)}
    docs = _workloads(_kube())
    found = {
        (_arg(ct, "--component"), d["metadata"]["labels"]["specstack/node"])
        for d in docs
        for ct in _containers(d)
    }
    assert found == expected
    for d in docs:
        for ct in _containers(d):
            args = parse_args(ct["command"][3:])
            assert ct["command"][:3] == ["python", "-m", "specstack_runtime.process"]
            assert args.config == "/etc/specstack/specstack.toml"
            assert ct["envFrom"] == [{"secretRef": {"name": SECRET}}]


def test_compute_nodes_are_a_scaled_set_of_the_topologys_count() -> None:
    ir = _ir()
    compute = next(n for n in ir.topology if n.role == "compute")
    (sts,) = _of_kind(_kube(), "StatefulSet")
    assert sts["metadata"]["name"] == compute.name
    assert sts["spec"]["replicas"] == compute.count
    assert sts["spec"]["ordinals"] == {"start": 1}  # pods compute-1..N: the hosts' names
    on_compute = [c.name for c in ir.components if compute.name in c.nodes and runs(c)]
    assert [_arg(ct, "--component") for ct in _containers(sts)] == on_compute
    for ct in _containers(sts):
        assert _arg(ct, "--node") == "$(POD_NAME)"
        assert ct["env"] == [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ]
    config = tomllib.loads((DEPLOY / "specstack.toml").read_text())
    assert config["computes"] == compute.max  # any replica count up to max names a host


def test_a_changed_topology_changes_the_manifests() -> None:
    ir = _ir()
    compute = next(n for n in ir.topology if n.role == "compute")
    out = _render(_with_node(ir, compute.name, count=5, max=9))
    (sts,) = [
        d
        for d in yaml.safe_load_all(out["deploy/kubernetes/workloads.yaml"])
        if d and d["kind"] == "StatefulSet"
    ]
    assert sts["spec"]["replicas"] == 5
    assert tomllib.loads(out["deploy/specstack.toml"])["computes"] == 9
    compose = yaml.safe_load(out["deploy/compose.yaml"])
    hosts = sorted({s["hostname"] for s in compose["services"].values() if "hostname" in s})
    assert [h for h in hosts if h.startswith(f"{compute.name}-")] == [
        f"{compute.name}-{i}" for i in range(1, 6)
    ]
    # a storage node of two hosts becomes a scaled set of its own
    storage = next(n for n in ir.topology if n.role == "storage")
    out = _render(_with_node(ir, storage.name, count=2))
    kinds = {
        d["metadata"]["name"]: d["kind"]
        for d in yaml.safe_load_all(out["deploy/kubernetes/workloads.yaml"])
        if d
    }
    assert kinds[storage.name] == "StatefulSet"
    assert not any(n.startswith(f"{storage.name}-") for n in kinds)


def test_probes_ask_health_or_the_ready_file() -> None:
    ir = _ir()
    ports = {c.name: c.port for c in ir.components}
    for w in _workloads(_kube()):
        for ct in _containers(w):
            component = _arg(ct, "--component")
            probe = ct["readinessProbe"]
            if ports[component] is not None:
                assert probe["httpGet"] == {"path": "/specstack/health", "port": ports[component]}
                continue
            host = _arg(ct, "--node").replace("$(POD_NAME)", "$POD_NAME")
            path = ready_file(Path(DATA_DIR), component, host)  # what process.py writes
            assert probe["exec"]["command"] == ["sh", "-c", f"test -f {path}"]


def test_the_migration_job_prepares_the_databases() -> None:
    (job,) = _of_kind(_kube(), "Job")
    (ct,) = job["spec"]["template"]["spec"]["containers"]
    assert ct["command"][:3] == ["python", "-m", "specstack_runtime.prepare"]
    assert ct["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    mounts = {m["mountPath"] for m in ct["volumeMounts"]}
    assert "/etc/specstack" in mounts
    # the README applies these two before the workloads
    first = [d for d in _kube() if d["metadata"]["labels"].get("specstack/apply-first") == "true"]
    assert sorted(d["kind"] for d in first) == ["ConfigMap", "Job"]


def test_the_configmap_holds_the_config_and_no_secret(tmp_path: Path) -> None:
    (cm,) = _of_kind(_kube(), "ConfigMap")
    text = cm["data"]["specstack.toml"]
    assert text == (DEPLOY / "specstack.toml").read_text()
    settings = tomllib.loads(text)
    assert not SECRET_SETTINGS & settings.keys()
    assert "password" not in text.replace("_PASSWORD", "").lower()
    assert settings["mode"] == "distributed" and settings["listen_address"] == "0.0.0.0"
    # the processes load it as it is, and reach each API at its Service
    (tmp_path / "specstack.toml").write_text(text)
    config = load_config(tmp_path / "specstack.toml", environ={})
    services = {s["metadata"]["name"] for s in _of_kind(_kube(), "Service")}
    assert set(config.endpoint_hosts.values()) <= services
    info, _, _ = load_generated(package="generated")
    assert info.endpoint("identity", config) == "http://keystone:5000"
    # each Secret key is the variable of a real setting
    fields = set(StackConfig.model_fields)
    assert {k.removeprefix("SPECSTACK_").lower() for k in SECRET_KEYS} <= fields & SECRET_SETTINGS


def test_compose_runs_every_process_with_its_health_check() -> None:
    ir = _ir()
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    identity = next(c.name for c in ir.components if c.catalog and c.catalog.type == "identity")
    for svc in services.values():
        if "hostname" not in svc:
            continue  # RabbitMQ, PostgreSQL, the migration
        command = svc["command"]
        component = command[command.index("--component") + 1]
        assert command[command.index("--node") + 1] == svc["hostname"]
        assert svc["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        port = next(c.port for c in ir.components if c.name == component)
        if port is not None:
            assert svc["ports"] == [f"{port}:{port}"]
            assert svc["networks"]["default"]["aliases"] == [dns_name(component)]
            assert f"127.0.0.1:{port}/specstack/health" in svc["healthcheck"]["test"][-1]
        if component != identity:
            assert svc["depends_on"][f"controller-{identity}"] == {"condition": "service_healthy"}
    assert services["migrate"]["command"] == ["python", "-m", "specstack_runtime.prepare"]
    env = services["migrate"]["environment"]
    assert {k for k in env if k != "SPECSTACK_CONFIG"} == set(SECRET_KEYS)
    assert all("${" in v for k, v in env.items() if k != "SPECSTACK_CONFIG")  # none written here


def test_a_name_kubernetes_cannot_carry_is_refused() -> None:
    assert dns_name("compute", "nova_compute") == "compute-nova-compute"
    for bad in (("x" * 64,), ("9lives",)):
        with pytest.raises(DeployError, match="not a Kubernetes name"):
            dns_name(*bad)
    ir = _ir()
    clash = tuple(
        c.model_copy(update={"name": "compute"}) if c.name == "keystone" else c
        for c in ir.components
    )
    with pytest.raises(DeployError, match="two Services would be named 'compute'"):
        _render(ir.model_copy(update={"components": clash}))
