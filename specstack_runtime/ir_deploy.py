"""The IR of where the stack runs and how it is observed: the topology's nodes, the
hypervisor drivers' contract, and the OSProfiler trace points of each transport."""

from __future__ import annotations

from typing import Literal

from specstack_runtime.ir_node import Node


def process_name(component: str, host: str) -> str:
    """The name of one component's process on a node (its ready file's, its log's).
    `host`: one host, or the label of several (`hosts_label`)."""
    return f"{component}.{host}"


class NodeCapacity(Node):
    vcpus: int
    memory_mb: int
    local_gb: int


class TopologyNode(Node):
    name: str
    role: Literal["controller", "network", "storage", "compute"]
    title: str
    count: int
    min: int
    max: int
    driver: str | None
    availability_zone: str | None
    resources: NodeCapacity | None
    components: tuple[str, ...]


class DriverParam(Node):
    name: str
    python_type: str
    model: str | None  # the driver type its values are checked against


class DriverMethod(Node):
    name: str
    summary: str
    params: tuple[DriverParam, ...]
    returns: str


class Driver(Node):
    name: str
    title: str
    summary: str
    virt_types: tuple[str, ...]
    requires: tuple[str, ...]
    module: str
    class_name: str
    implementation: str  # "module:Class" of the runtime hypervisor it adapts


class Hypervisors(Node):
    interface: str
    methods: tuple[DriverMethod, ...]
    drivers: tuple[Driver, ...]
    types: tuple[str, ...]


class TracePoint(Node):
    """How one transport's interactions show in OSProfiler traces (spec/traces.yaml)."""

    point: str
    side: Literal["source", "target"]
    method: str | None = None  # http: info paths of the method and the request path
    path: str | None = None
    function: str | None = None  # amqp, native: of the called function
    statement: str | None = None  # sql: of the statement
