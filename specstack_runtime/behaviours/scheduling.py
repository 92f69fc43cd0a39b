"""Filter-and-weigh host selection in the manner of nova's FilterScheduler.

Pure functions over data: callers load host states, pick filters and weighers
by name (the spec names them), and persist the claims they make.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

# The zone name OpenStack clients expect when none is configured (a value, not a component).
DEFAULT_AVAILABILITY_ZONE = "nova"


@dataclass(frozen=True, slots=True)
class HostState:
    """What the scheduler knows about one compute host."""

    host: str
    availability_zone: str = DEFAULT_AVAILABILITY_ZONE
    total_ram_mb: int = 0
    used_ram_mb: int = 0
    total_disk_gb: int = 0
    used_disk_gb: int = 0
    total_vcpus: int = 0
    used_vcpus: int = 0
    ram_allocation_ratio: float = 1.5
    cpu_allocation_ratio: float = 16.0
    disk_allocation_ratio: float = 1.0
    enabled: bool = True
    # Epoch seconds of the last heartbeat; None means liveness is not tracked.
    updated_at: float | None = None
    num_instances: int = 0

    @property
    def free_ram_mb(self) -> int:
        return self.total_ram_mb - self.used_ram_mb

    @property
    def free_disk_gb(self) -> int:
        return self.total_disk_gb - self.used_disk_gb

    @property
    def usable_ram_mb(self) -> float:
        """RAM still available once overcommit is applied."""
        return self.total_ram_mb * self.ram_allocation_ratio - self.used_ram_mb

    @property
    def usable_disk_gb(self) -> float:
        return self.total_disk_gb * self.disk_allocation_ratio - self.used_disk_gb

    @property
    def usable_vcpus(self) -> float:
        return self.total_vcpus * self.cpu_allocation_ratio - self.used_vcpus


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """The resources one instance asks for, and where it may go."""

    memory_mb: int
    vcpus: int
    root_gb: int
    ephemeral_gb: int = 0
    availability_zone: str | None = None
    ignore_hosts: Collection[str] = ()
    num_instances: int = 1
    # The hosts another service found able to take the instance (the spec's `with: hosts:`
    # of the scheduling step, e.g. a placement service's candidates); None: any host.
    only_hosts: Collection[str] | None = None
    # The instance's server group: its policy and how many of its other members each host
    # holds (nova's RequestSpec.instance_group with its hosts).
    group_policy: str | None = None
    group_hosts: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def disk_gb(self) -> int:
        return self.root_gb + self.ephemeral_gb


@dataclass(frozen=True, slots=True)
class FilterContext:
    """Inputs a filter may need besides host and request, passed in to keep filters pure."""

    now: float
    service_down_time: float = 60.0


HostFilter = Callable[[HostState, RequestSpec, FilterContext], bool]
Weigher = Callable[[HostState, RequestSpec], float]

FILTERS: dict[str, HostFilter] = {}
WEIGHERS: dict[str, Weigher] = {}

NOT_ENOUGH_HOSTS = "There are not enough hosts available."


class NoValidHost(Exception):
    """No host passed the filters; the message matches nova's fault message."""

    def __init__(
        self, reason: str = NOT_ENOUGH_HOSTS, eliminated: Mapping[str, int] | None = None
    ) -> None:
        super().__init__(f"No valid host was found. {reason}")
        # Which filter removed how many hosts, for logs (nova logs the same per filter).
        self.eliminated: dict[str, int] = dict(eliminated or {})


class UnknownPlugin(KeyError):
    """A filter or weigher name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.message = f"unknown scheduler {kind} {name!r}; known: {', '.join(sorted(known))}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError would otherwise print the message quoted.
        return self.message


_P = TypeVar("_P")


def _registry(table: dict[str, _P]) -> Callable[[str], Callable[[_P], _P]]:
    def register(name: str) -> Callable[[_P], _P]:
        """Register a plug-in under the name a spec uses for it."""

        def decorate(func: _P) -> _P:
            table[name] = func
            return func

        return decorate

    return register


register_filter = _registry(FILTERS)
register_weigher = _registry(WEIGHERS)


# -- filters -------------------------------------------------------------------


@register_filter("ComputeFilter")
def compute_filter(host: HostState, spec: RequestSpec, ctx: FilterContext) -> bool:
    """Host service enabled and heard from recently."""
    if not host.enabled:
        return False
    if host.updated_at is None:
        return True
    return abs(ctx.now - host.updated_at) <= ctx.service_down_time


@register_filter("AvailabilityZoneFilter")
def availability_zone_filter(host: HostState, spec: RequestSpec, ctx: FilterContext) -> bool:
    return spec.availability_zone is None or host.availability_zone == spec.availability_zone


@register_filter("RamFilter")
def ram_filter(host: HostState, spec: RequestSpec, ctx: FilterContext) -> bool:
    return host.usable_ram_mb >= spec.memory_mb


@register_filter("DiskFilter")
def disk_filter(host: HostState, spec: RequestSpec, ctx: FilterContext) -> bool:
    return host.usable_disk_gb >= spec.disk_gb


@register_filter("CoreFilter")
def core_filter(host: HostState, spec: RequestSpec, ctx: FilterContext) -> bool:
    if host.total_vcpus <= 0:
        return True  # nova's fail-safe: an unreported vCPU count does not block scheduling
    if spec.vcpus > host.total_vcpus:
        return False  # an instance may not overcommit against itself
    return host.usable_vcpus >= spec.vcpus


@register_filter("ServerGroupAffinityFilter")
def server_group_affinity_filter(host: HostState, spec: RequestSpec, ctx: FilterContext) -> bool:
    """affinity: the host of the group's members (any host while none is placed)."""
    return spec.group_policy != "affinity" or not spec.group_hosts or host.host in spec.group_hosts


@register_filter("ServerGroupAntiAffinityFilter")
def server_group_anti_affinity_filter(
    host: HostState, spec: RequestSpec, ctx: FilterContext
) -> bool:
    """anti-affinity: a host none of the group's members is on."""
    return spec.group_policy != "anti-affinity" or host.host not in spec.group_hosts


# -- weighers ------------------------------------------------------------------


@register_weigher("RAMWeigher")
def ram_weigher(host: HostState, spec: RequestSpec) -> float:
    return float(host.free_ram_mb)


@register_weigher("DiskWeigher")
def disk_weigher(host: HostState, spec: RequestSpec) -> float:
    return float(host.free_disk_gb)


@register_weigher("CPUWeigher")
def cpu_weigher(host: HostState, spec: RequestSpec) -> float:
    return host.usable_vcpus


@register_weigher("NumInstancesWeigher")
def num_instances_weigher(host: HostState, spec: RequestSpec) -> float:
    # Use a negative multiplier to prefer emptier hosts, as in nova.
    return float(host.num_instances)


@register_weigher("ServerGroupSoftAffinityWeigher")
def soft_affinity_weigher(host: HostState, spec: RequestSpec) -> float:
    return (
        float(spec.group_hosts.get(host.host, 0)) if spec.group_policy == "soft-affinity" else 0.0
    )


@register_weigher("ServerGroupSoftAntiAffinityWeigher")
def soft_anti_affinity_weigher(host: HostState, spec: RequestSpec) -> float:
    if spec.group_policy != "soft-anti-affinity":
        return 0.0
    return -float(spec.group_hosts.get(host.host, 0))


#: The weighers a soft policy adds to the configured ones, with nova's default multipliers
#: (soft_affinity_weight_multiplier, soft_anti_affinity_weight_multiplier): the soft
#: policies weigh hosts where the hard ones filter them.
GROUP_WEIGHERS = {
    "soft-affinity": ("ServerGroupSoftAffinityWeigher", 1.0),
    "soft-anti-affinity": ("ServerGroupSoftAntiAffinityWeigher", 1.0),
}


# -- selection -----------------------------------------------------------------


def normalize(values: Sequence[float]) -> list[float]:
    """Min-max scale to 0..1; all-equal values all become 0 (nova's weights.normalize)."""
    if not values:
        return []
    low, high = min(values), max(values)
    if low == high:
        return [0.0] * len(values)
    span = high - low
    return [(v - low) / span for v in values]


def resolve_filters(names: Sequence[str]) -> list[tuple[str, HostFilter]]:
    try:
        return [(name, FILTERS[name]) for name in names]
    except KeyError as exc:
        raise UnknownPlugin("filter", str(exc.args[0]), FILTERS) from None


def resolve_weighers(pairs: Sequence[tuple[str, float]]) -> list[tuple[Weigher, float]]:
    try:
        return [(WEIGHERS[name], multiplier) for name, multiplier in pairs]
    except KeyError as exc:
        raise UnknownPlugin("weigher", str(exc.args[0]), WEIGHERS) from None


def weigh(
    hosts: Sequence[HostState], spec: RequestSpec, weighers: Sequence[tuple[str, float]]
) -> list[HostState]:
    """Order hosts best first; ties keep input order, so results are deterministic."""
    totals = [0.0] * len(hosts)
    soft = GROUP_WEIGHERS.get(spec.group_policy or "")
    for weigher, multiplier in resolve_weighers([*weighers, *([soft] if soft else [])]):
        raw = [weigher(host, spec) for host in hosts]
        for i, value in enumerate(normalize(raw)):
            totals[i] += multiplier * value
    order = sorted(range(len(hosts)), key=lambda i: -totals[i])
    return [hosts[i] for i in order]


def select_destinations(
    hosts: Iterable[HostState],
    spec: RequestSpec,
    filters: Sequence[str],
    weighers: Sequence[tuple[str, float]],
    *,
    now: float | None = None,
    service_down_time: float = 60.0,
) -> list[HostState]:
    """Hosts that pass every filter, best first; NoValidHost when none does."""
    resolved = resolve_filters(filters)
    resolve_weighers(weighers)  # fail on a bad name even when no host survives
    ctx = FilterContext(time.time() if now is None else now, service_down_time)
    candidates = list(hosts)
    eliminated: dict[str, int] = {}
    if spec.only_hosts is not None:
        allowed = set(spec.only_hosts)
        kept = [h for h in candidates if h.host in allowed]
        eliminated["candidates"] = len(candidates) - len(kept)
        candidates = kept
    ignored = set(spec.ignore_hosts)
    if ignored:
        kept = [h for h in candidates if h.host not in ignored]
        eliminated["ignore_hosts"] = len(candidates) - len(kept)
        candidates = kept
    for name, host_filter in resolved:
        if not candidates:
            break
        kept = [h for h in candidates if host_filter(h, spec, ctx)]
        eliminated[name] = len(candidates) - len(kept)
        candidates = kept
    if not candidates:
        raise NoValidHost(eliminated=eliminated)
    return weigh(candidates, spec, weighers)
