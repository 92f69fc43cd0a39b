"""The runtime's view of the stack, read from `generated/ir.json`.

The IR is the contract between the generator and the runtime: components,
topology, catalog types, messages and sequences come from here, never from code.
`generated/ir.json` is loaded as the typed model (`ir.IR`) the generator wrote it from;
`model` is that model. The name-keyed dict views (`components`, `apis`, ...) are the
same data as JSON values, for the code that still reads it that way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from specstack_runtime import ir
from specstack_runtime.config import StackConfig
from specstack_runtime.policy import Enforcer
from specstack_runtime.redact import Redactor, secret_names_in
from specstack_runtime.resources.compiled import Catalog, build_catalog


@functools.lru_cache(maxsize=16)
def _document(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return doc


@dataclass(frozen=True)
class Instance:
    """One running copy of a component on one node instance (compute nodes repeat)."""

    component: str
    host: str  # node instance name: "controller", "compute-1", ...
    node: str  # topology node name: "controller", "compute", ...


class StackInfo:
    def __init__(self, model: ir.IR | Mapping[str, Any], directory: Path | None = None) -> None:
        """`model`: the IR, or its JSON value (as tests build and change it)."""
        self.model = model if isinstance(model, ir.IR) else ir.IR.model_validate(model)
        # The generated package the IR came from (its openapi/ has the API documents).
        self.directory = directory
        self._known_urls: dict[int, tuple[StackConfig, dict[str, str], dict[str, str]]] = {}

    @classmethod
    def load(cls, path: Path) -> StackInfo:
        return cls(ir.IR.model_validate_json(path.read_bytes()), path.parent)

    @cached_property
    def redactor(self) -> Redactor:
        """What takes the secrets out of recorded payloads: the names the API documents
        mark secret (`format: password`, apiKey headers)."""
        if self.directory is None:
            return Redactor()
        return Redactor(*secret_names_in(self.directory / "openapi", self.apis))

    def api_document(self, api: str) -> dict[str, Any]:
        """The bundled OpenAPI document of `api` (`openapi/<api>.json` beside the IR)."""
        if self.directory is None:
            raise LookupError(f"no generated directory holds the document of API {api!r}")
        return _document(self.directory / "openapi" / f"{api}.json")

    @cached_property
    def ir(self) -> dict[str, Any]:
        """The IR as its JSON value (what `generated/ir.json` holds), but its resource
        model, which the runtime reads typed (`model.resources`, `resources`): half the
        IR, not held twice."""
        return self.model.model_dump(mode="json", by_alias=True, exclude={"generated", "resources"})

    @cached_property
    def resources(self) -> Catalog:
        """The resource model (spec/resources), compiled for serving."""
        return build_catalog(self.model)

    @cached_property
    def policy(self) -> Enforcer:
        """The stack's one policy enforcer, holding the spec's named rules."""
        return Enforcer({p.name: p.rule for p in self.model.policy})

    @cached_property
    def components(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.ir["components"]}

    @cached_property
    def apis(self) -> dict[str, dict[str, Any]]:
        return {a["name"]: a for a in self.ir["apis"]}

    @cached_property
    def messages(self) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in self.ir["messages"]}

    @cached_property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.ir["topology"]}

    @cached_property
    def sequences(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.ir["sequences"]}

    def api_component(self, api: str) -> dict[str, Any]:
        return self.components[self.apis[api]["component"]]

    def api_of_type(self, catalog_type: str) -> str:
        for c in self.model.components:
            if c.catalog and c.catalog.type == catalog_type and c.api:
                return c.api
        raise KeyError(f"no API with catalog type {catalog_type!r}")

    def node_hosts(self, node: str, config: StackConfig) -> list[str]:
        """Host names of a topology node's instances: `compute-1..N`, or the node's name."""
        n = next(t for t in self.model.topology if t.name == node)
        count = n.count
        if n.role == "compute" and config.computes is not None:
            count = config.computes
        if count == 1 and n.role != "compute":
            return [node]
        return [f"{node}-{i}" for i in range(1, count + 1)]

    def node_of(self, host: str, config: StackConfig) -> str | None:
        """The topology node whose `node_hosts` hold `host` (`compute-7` -> `compute`), or None.

        A lookup, not a scan of every node's hosts: a compute host asks at each report.
        """
        prefix, _, number = host.rpartition("-")
        for n in self.model.topology:
            count = n.count
            if n.role == "compute" and config.computes is not None:
                count = config.computes
            if count == 1 and n.role != "compute":
                if host == n.name:
                    return n.name
            elif prefix == n.name and number.isdigit() and str(int(number)) == number:
                return n.name if 1 <= int(number) <= count else None  # not `compute-07`
        return None

    def instances(self, config: StackConfig) -> list[Instance]:
        out: list[Instance] = []
        for c in self.model.components:
            for node in c.nodes:
                out += [Instance(c.name, host, node) for host in self.node_hosts(node, config)]
        return out

    @cached_property
    def web_clients(self) -> list[dict[str, Any]]:
        """Clients that listen on a port: web dashboards, served by `specstack_runtime.dashboard`."""
        return [c for c in self.components.values() if c["kind"] == "client" and c.get("port")]

    def port(self, component: str, config: StackConfig) -> int:
        """The listening port: the spec's, or `base_port` plus the index among the APIs and
        then the web clients."""
        if config.base_port is None:
            port = self.model.component(component).port
            if port is None:
                raise KeyError(f"{component} has no port: it listens on none")
            return port
        return config.base_port + self.listening.index(component)

    @cached_property
    def listening(self) -> list[str]:
        """The components that listen, in the order `base_port` numbers them: the APIs,
        then the web clients."""
        apis = [c.name for c in self.model.components if c.api]
        return apis + [c["name"] for c in self.web_clients]

    def urls(self, config: StackConfig) -> dict[str, str]:
        """Where each listening component is reached (its base URL), by name."""
        urls = self._memo(config)[0]
        if not urls:
            urls.update(
                (c, f"http://{self.endpoint_host(c, config)}:{self.port(c, config)}")
                for c in self.listening
            )
        return dict(urls)

    def endpoint(self, api: str, config: StackConfig) -> str:
        """Base URL of an API, without the catalog path."""
        apis = self._memo(config)[1]
        url = apis.get(api)
        if url is None:
            component = self.model.api(api).component
            url = f"http://{self.endpoint_host(component, config)}:{self.port(component, config)}"
            apis[api] = url
        return url

    def _memo(self, config: StackConfig) -> tuple[dict[str, str], dict[str, str]]:
        """The base URLs worked out so far for `config`, of components and of APIs by name:
        every request asks, and a stack's config does not change while it runs."""
        known = self._known_urls.get(id(config))
        if known is None or known[0] is not config:
            known = self._known_urls[id(config)] = (config, {}, {})
        return known[1], known[2]

    def endpoint_host(self, component: str, config: StackConfig) -> str:
        """The host name or address a listening component is reached at."""
        named = config.endpoint_hosts.get(component)
        if named is not None:  # a Kubernetes Service, a Compose service
            return named
        if config.node_addresses:  # hosts of their own: where the API's node runs
            node = self.model.component(component).nodes[0]
            return config.address(self.node_hosts(node, config)[0], node)
        return config.host_address

    def catalog(self, config: StackConfig, project_id: str) -> list[dict[str, Any]]:
        """The service catalog, in keystone's v3 format, for a token scoped to `project_id`."""
        entries: list[dict[str, Any]] = []
        for c in self.model.components:
            cat = c.catalog
            if cat is None or not c.api:
                continue
            url = self.endpoint(c.api, config) + cat.path.format(project_id=project_id)
            endpoints = [
                {
                    "id": f"{c.name}-{iface}",
                    "interface": iface,
                    "region": config.region,
                    "region_id": config.region,
                    "url": url,
                }
                for iface in ("public", "internal", "admin")
            ]
            entries.append(
                {"type": cat.type, "name": cat.name, "id": c.name, "endpoints": endpoints}
            )
        return entries
