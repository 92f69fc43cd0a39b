"""Target `deploy`: Kubernetes manifests, a Compose file and the stack's TOML config.

Everything comes from the topology and the components: which processes run (the
supervisor's layout: every component with code to serve, on each node the spec places
it), their ports, and how many hosts a numbered node has. A node of one host gives a
Deployment per component; a numbered node (compute, or a count above one) gives one
StatefulSet whose pods are the hosts `<node>-1..N`, a container per component, as the
components of one compute host share it. RabbitMQ and PostgreSQL are reached by URL
(the Secret); the config names no secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from generator.pipeline.render.base import OutputFile, RenderContext
from specstack_runtime.ir import CODED_KINDS
from specstack_runtime.ir_deploy import process_name

if TYPE_CHECKING:
    from specstack_runtime.ir import IR, Component
    from specstack_runtime.ir_deploy import TopologyNode

#: Where every container keeps its data and finds its config.
DATA_DIR = "/var/lib/specstack"
CONFIG_DIR = "/etc/specstack"
CONFIG_FILE = "specstack.toml"
#: The Kubernetes objects every workload refers to.
CONFIG_MAP = "specstack-config"
SECRET = "specstack-secrets"
IMAGE = "specstack"
#: What the operator puts in the Secret: SPECSTACK_* variables, read as settings.
SECRET_KEYS = (
    "SPECSTACK_SERVICE_PASSWORD",
    "SPECSTACK_ADMIN_PASSWORD",
    "SPECSTACK_DEMO_PASSWORD",
    "SPECSTACK_BUS_URL",
    "SPECSTACK_DATABASE_SERVER",
)
#: The env variable holding a pod's own name (a numbered host's name: compute-2).
POD_NAME_ENV = "POD_NAME"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class DeployError(ValueError):
    """A spec name no Kubernetes object can carry."""


def dns_name(*parts: str) -> str:
    """A Kubernetes object name (an RFC 1035 label) of spec names joined with `-`."""
    name = "-".join(parts).replace("_", "-")
    if not _DNS_LABEL.match(name):
        raise DeployError(
            f"{name!r}: not a Kubernetes name (at most 63 of a-z, 0-9 and '-', "
            "starting with a letter); rename the component or node in the spec"
        )
    return name


@dataclass(frozen=True)
class Container:
    """One process: a component on a node's host(s)."""

    component: str
    port: int | None  # a listening component's port (its health is served there)
    node_arg: str  # --node: the host, or $(POD_NAME) in a numbered node's pods
    ready_file: str  # a worker's readiness: the file the process writes once it serves

    @property
    def name(self) -> str:
        return dns_name(self.component)


@dataclass(frozen=True)
class Workload:
    kind: str  # Deployment | StatefulSet
    name: str
    node: str
    replicas: int
    containers: tuple[Container, ...]


@dataclass(frozen=True)
class ComposeService:
    name: str
    host: str
    container: Container
    alias: str | None  # the endpoint host a listening component is reached at


@dataclass(frozen=True)
class Plan:
    workloads: tuple[Workload, ...]
    listening: tuple[Container, ...]  # a Service each
    endpoint_hosts: tuple[tuple[str, str], ...]  # component, host name
    computes: int | None  # the host names a compute node's pods may take: 1..max
    compose: tuple[ComposeService, ...]
    identity: str | None  # the Compose service of the identity API (the others log in to it)


def runs(c: Component) -> bool:
    """A process of the layout: code to serve (routes, consumers, startup), or a web client."""
    if c.kind == "client":
        return c.port is not None
    return c.kind in CODED_KINDS and bool(c.api or c.consumes or c.startup)


def numbered(node: TopologyNode) -> bool:
    """Hosts `<node>-1..N` (as `StackInfo.node_hosts` names them), not the node's name."""
    return node.role == "compute" or node.count > 1


def plan(ir: IR) -> Plan:
    workloads: list[Workload] = []
    compose: list[ComposeService] = []
    listening: list[Container] = []
    computes = None
    identity_api = next(
        (c.name for c in ir.components if c.catalog and c.catalog.type == "identity"), None
    )
    for node in ir.topology:
        comps = [c for c in ir.components if node.name in c.nodes and runs(c)]
        if not comps:
            continue
        if numbered(node):
            if node.role == "compute":
                computes = node.max
            containers = tuple(
                Container(
                    c.name,
                    c.port,
                    f"$({POD_NAME_ENV})",
                    f"{DATA_DIR}/run/{process_name(c.name, '$' + POD_NAME_ENV)}.ready",
                )
                for c in comps
            )
            workloads.append(
                Workload("StatefulSet", dns_name(node.name), node.name, node.count, containers)
            )
            hosts = [f"{node.name}-{i}" for i in range(1, node.count + 1)]
        else:
            containers = tuple(
                Container(
                    c.name,
                    c.port,
                    node.name,
                    f"{DATA_DIR}/run/{process_name(c.name, node.name)}.ready",
                )
                for c in comps
            )
            for ct in containers:
                workloads.append(
                    Workload("Deployment", dns_name(node.name, ct.component), node.name, 1, (ct,))
                )
            hosts = [node.name]
        for host in hosts:
            for c in comps:
                ready = f"{DATA_DIR}/run/{process_name(c.name, host)}.ready"
                ct = Container(c.name, c.port, host, ready)
                alias = dns_name(c.name) if c.port is not None else None
                compose.append(ComposeService(dns_name(host, c.name), host, ct, alias))
        listening += [ct for ct in containers if ct.port is not None]
    # the APIs' Services and the StatefulSets' headless ones share one namespace
    services = [ct.name for ct in listening]
    services += [w.name for w in workloads if w.kind == "StatefulSet"]
    for name in services:
        if services.count(name) > 1:
            raise DeployError(f"two Services would be named {name!r}: rename a component or node")
    return Plan(
        workloads=tuple(workloads),
        listening=tuple(listening),
        endpoint_hosts=tuple((ct.component, ct.name) for ct in listening),
        computes=computes,
        compose=tuple(compose),
        identity=next((s.name for s in compose if s.container.component == identity_api), None),
    )


class DeployTarget:
    name = "deploy"

    def render(self, ir: IR, ctx: RenderContext) -> list[OutputFile]:
        p = plan(ir)
        sources = f"{ctx.source('topology.yaml')}, {ctx.source('components.yaml')}"
        common = {
            "plan": p,
            "sources": sources,
            "data_dir": DATA_DIR,
            "config_dir": CONFIG_DIR,
            "config_file": CONFIG_FILE,
            "config_map": CONFIG_MAP,
            "secret": SECRET,
            "secret_keys": SECRET_KEYS,
            "image": IMAGE,
            "pod_name_env": POD_NAME_ENV,
        }
        toml = ctx.templates.get_template("deploy/specstack.toml.j2").render(**common)
        out = [OutputFile("deploy/specstack.toml", toml)]
        kube = {
            "configmap.yaml": "deploy/kubernetes/configmap.yaml.j2",
            "migrate-job.yaml": "deploy/kubernetes/migrate-job.yaml.j2",
            "services.yaml": "deploy/kubernetes/services.yaml.j2",
            "workloads.yaml": "deploy/kubernetes/workloads.yaml.j2",
        }
        for file, template in kube.items():
            text = ctx.templates.get_template(template).render(toml=toml, **common)
            out.append(OutputFile(f"deploy/kubernetes/{file}", text))
        kustomization = ctx.templates.get_template("deploy/kubernetes/kustomization.yaml.j2")
        out.append(
            OutputFile(
                "deploy/kubernetes/kustomization.yaml",
                kustomization.render(resources=list(kube), **common),
            )
        )
        compose = ctx.templates.get_template("deploy/compose.yaml.j2").render(**common)
        out.append(OutputFile("deploy/compose.yaml", compose))
        return out
