from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from specstack_runtime.behaviours.scheduling import (
    FILTERS,
    WEIGHERS,
    FilterContext,
    HostState,
    NoValidHost,
    RequestSpec,
    UnknownPlugin,
    normalize,
    select_destinations,
)

ALL_FILTERS = [
    "ComputeFilter",
    "AvailabilityZoneFilter",
    "RamFilter",
    "DiskFilter",
    "CoreFilter",
]
NOW = 1_000_000.0
CTX = FilterContext(now=NOW)
SMALL = RequestSpec(memory_mb=512, vcpus=1, root_gb=1)


def host(name: str = "h1", **kw: object) -> HostState:
    base: dict[str, object] = {
        "total_ram_mb": 4096,
        "total_disk_gb": 100,
        "total_vcpus": 4,
        "updated_at": NOW,
    }
    base.update(kw)
    return HostState(host=name, **base)  # type: ignore[arg-type]


def passes(filter_name: str, h: HostState, spec: RequestSpec = SMALL) -> bool:
    return FILTERS[filter_name](h, spec, CTX)


def test_defaults_match_nova_allocation_ratios() -> None:
    h = HostState(host="x")
    assert (h.ram_allocation_ratio, h.cpu_allocation_ratio, h.disk_allocation_ratio) == (
        1.5,
        16.0,
        1.0,
    )


def test_compute_filter() -> None:
    assert passes("ComputeFilter", host())
    assert not passes("ComputeFilter", host(enabled=False))
    assert not passes("ComputeFilter", host(updated_at=NOW - 61))
    assert passes("ComputeFilter", host(updated_at=NOW - 59))
    assert passes("ComputeFilter", host(updated_at=None))


def test_availability_zone_filter() -> None:
    in_az1 = host(availability_zone="az1")
    assert passes("AvailabilityZoneFilter", in_az1)  # no AZ requested
    assert passes("AvailabilityZoneFilter", in_az1, RequestSpec(1, 1, 1, availability_zone="az1"))
    assert not passes(
        "AvailabilityZoneFilter", in_az1, RequestSpec(1, 1, 1, availability_zone="az2")
    )


def test_ram_filter_applies_overcommit() -> None:
    h = host(total_ram_mb=1000, used_ram_mb=1000)  # usable 1000*1.5-1000 = 500
    assert passes("RamFilter", h, RequestSpec(memory_mb=500, vcpus=1, root_gb=0))
    assert not passes("RamFilter", h, RequestSpec(memory_mb=501, vcpus=1, root_gb=0))
    strict = host(total_ram_mb=1000, used_ram_mb=600, ram_allocation_ratio=1.0)
    assert not passes("RamFilter", strict, RequestSpec(memory_mb=401, vcpus=1, root_gb=0))


def test_disk_filter_counts_root_and_ephemeral() -> None:
    h = host(total_disk_gb=20, used_disk_gb=10)
    assert passes("DiskFilter", h, RequestSpec(1, 1, root_gb=5, ephemeral_gb=5))
    assert not passes("DiskFilter", h, RequestSpec(1, 1, root_gb=5, ephemeral_gb=6))


def test_core_filter() -> None:
    h = host(total_vcpus=2, used_vcpus=31)  # usable 2*16-31 = 1
    assert passes("CoreFilter", h, RequestSpec(1, vcpus=1, root_gb=0))
    assert not passes("CoreFilter", h, RequestSpec(1, vcpus=2, root_gb=0))
    # An instance may never be bigger than the host, whatever the ratio.
    assert not passes("CoreFilter", host(total_vcpus=2), RequestSpec(1, vcpus=3, root_gb=0))
    # Unknown vCPU count does not block.
    assert passes("CoreFilter", host(total_vcpus=0), RequestSpec(1, vcpus=64, root_gb=0))


def test_normalize_is_min_max_and_flat_for_equal_values() -> None:
    assert normalize([]) == []
    assert normalize([5, 5, 5]) == [0.0, 0.0, 0.0]
    assert normalize([0, 5, 10]) == [0.0, 0.5, 1.0]


def test_ram_weigher_prefers_most_free_ram() -> None:
    hosts = [host("a", used_ram_mb=3000), host("b", used_ram_mb=0), host("c", used_ram_mb=1000)]
    ordered = select_destinations(hosts, SMALL, ALL_FILTERS, [("RAMWeigher", 1.0)], now=NOW)
    assert [h.host for h in ordered] == ["b", "c", "a"]
    stacked = select_destinations(hosts, SMALL, ALL_FILTERS, [("RAMWeigher", -1.0)], now=NOW)
    assert [h.host for h in stacked] == ["a", "c", "b"]


def test_weights_are_normalised_before_multipliers_are_applied() -> None:
    # Raw RAM differences are in the thousands and vCPU ones tiny; after
    # normalisation a bigger multiplier on CPUWeigher decides.
    a = host("a", used_ram_mb=0, used_vcpus=60)
    b = host("b", used_ram_mb=4000, used_vcpus=0)
    weighers = [("RAMWeigher", 1.0), ("CPUWeigher", 2.0)]
    ordered = select_destinations([a, b], SMALL, [], weighers, now=NOW)
    assert [h.host for h in ordered] == ["b", "a"]


def test_num_instances_weigher_negative_spreads() -> None:
    busy = host("busy", num_instances=5)
    idle = host("idle", num_instances=0)
    ordered = select_destinations([busy, idle], SMALL, [], [("NumInstancesWeigher", -1.0)])
    assert ordered[0].host == "idle"


def test_disk_weigher() -> None:
    ordered = select_destinations(
        [host("a", used_disk_gb=50), host("b")], SMALL, [], [("DiskWeigher", 1.0)]
    )
    assert ordered[0].host == "b"


def test_claims_spread_a_burst_over_equal_hosts() -> None:
    hosts = {name: host(name) for name in ("a", "b", "c")}
    picks: Counter[str] = Counter()
    for _ in range(9):
        best = select_destinations(
            hosts.values(), SMALL, ALL_FILTERS, [("RAMWeigher", 1.0)], now=NOW
        )[0]
        hosts[best.host] = dataclasses.replace(  # the claim the scheduler's store makes
            best, used_ram_mb=best.used_ram_mb + 512, num_instances=best.num_instances + 1
        )
        picks[best.host] += 1
    assert picks == {"a": 3, "b": 3, "c": 3}
    assert hosts["a"].used_ram_mb == 3 * 512
    assert hosts["a"].num_instances == 3


def test_no_valid_host_message_and_reasons() -> None:
    full = host("a", total_ram_mb=100, ram_allocation_ratio=1.0)
    with pytest.raises(NoValidHost) as caught:
        select_destinations([full], SMALL, ALL_FILTERS, [("RAMWeigher", 1.0)], now=NOW)
    assert str(caught.value).startswith("No valid host was found")
    assert str(caught.value) == "No valid host was found. There are not enough hosts available."
    assert caught.value.eliminated["RamFilter"] == 1
    with pytest.raises(NoValidHost):
        select_destinations([], SMALL, ALL_FILTERS, [])


def test_ignore_hosts() -> None:
    spec = RequestSpec(memory_mb=1, vcpus=1, root_gb=0, ignore_hosts=frozenset({"a"}))
    assert [h.host for h in select_destinations([host("a"), host("b")], spec, [], [])] == ["b"]
    with pytest.raises(NoValidHost) as caught:
        select_destinations([host("a")], spec, [], [])
    assert caught.value.eliminated == {"ignore_hosts": 1}


def test_az_filter_in_selection() -> None:
    hosts = [host("a", availability_zone="az1"), host("b", availability_zone="az2")]
    spec = RequestSpec(memory_mb=1, vcpus=1, root_gb=0, availability_zone="az2")
    assert [h.host for h in select_destinations(hosts, spec, ALL_FILTERS, [], now=NOW)] == ["b"]
    missing = RequestSpec(memory_mb=1, vcpus=1, root_gb=0, availability_zone="az9")
    with pytest.raises(NoValidHost):
        select_destinations(hosts, missing, ALL_FILTERS, [], now=NOW)


def test_unknown_names_are_clear_key_errors() -> None:
    with pytest.raises(KeyError) as caught:
        select_destinations([host()], SMALL, ["NoSuchFilter"], [])
    assert isinstance(caught.value, UnknownPlugin)
    assert "NoSuchFilter" in str(caught.value) and "RamFilter" in str(caught.value)
    with pytest.raises(UnknownPlugin, match="known: CPUWeigher, DiskWeigher"):
        select_destinations([host()], SMALL, [], [("Nope", 1.0)])


def test_registries_hold_the_named_plugins() -> None:
    assert set(ALL_FILTERS) <= set(FILTERS)
    assert {"RAMWeigher", "DiskWeigher", "CPUWeigher", "NumInstancesWeigher"} <= set(WEIGHERS)


def test_server_group_filters_and_soft_weighers() -> None:
    a, b, c = host("a"), host("b"), host("c")
    anti = RequestSpec(
        memory_mb=512, vcpus=1, root_gb=1, group_policy="anti-affinity", group_hosts={"a": 1}
    )
    assert not passes("ServerGroupAntiAffinityFilter", a, anti)
    assert passes("ServerGroupAntiAffinityFilter", b, anti)
    assert passes("ServerGroupAffinityFilter", a, anti)  # not its policy
    same = RequestSpec(
        memory_mb=512, vcpus=1, root_gb=1, group_policy="affinity", group_hosts={"b": 2}
    )
    assert passes("ServerGroupAffinityFilter", b, same)
    assert not passes("ServerGroupAffinityFilter", a, same)
    assert passes("ServerGroupAntiAffinityFilter", b, same)
    first = RequestSpec(memory_mb=512, vcpus=1, root_gb=1, group_policy="affinity")
    assert passes("ServerGroupAffinityFilter", c, first)  # no member placed yet: any host
    group_filters = ["ServerGroupAntiAffinityFilter", "ServerGroupAffinityFilter"]
    assert [h.host for h in select_destinations([a, b, c], anti, group_filters, [], now=NOW)] == [
        "b",
        "c",
    ]
    assert [h.host for h in select_destinations([a, b, c], same, group_filters, [], now=NOW)] == [
        "b"
    ]
    with pytest.raises(NoValidHost) as caught:
        select_destinations([a], anti, group_filters, [], now=NOW)
    assert caught.value.eliminated["ServerGroupAntiAffinityFilter"] == 1

    # the soft policies refuse no host: they weigh by the members on each
    counts = {"a": 2, "b": 1}
    soft = RequestSpec(
        memory_mb=512, vcpus=1, root_gb=1, group_policy="soft-affinity", group_hosts=counts
    )
    assert [h.host for h in select_destinations([c, b, a], soft, group_filters, [], now=NOW)] == [
        "a",
        "b",
        "c",
    ]
    spread = RequestSpec(
        memory_mb=512, vcpus=1, root_gb=1, group_policy="soft-anti-affinity", group_hosts=counts
    )
    assert [h.host for h in select_destinations([a, b, c], spread, group_filters, [], now=NOW)] == [
        "c",
        "b",
        "a",
    ]
    assert WEIGHERS["ServerGroupSoftAffinityWeigher"](a, spread) == 0.0
