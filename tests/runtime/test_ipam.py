from __future__ import annotations

import random

import pytest

from specstack_runtime.behaviours.ipam import (
    InvalidAllocationPool,
    InvalidIpRequest,
    IpAddressInUse,
    IpamError,
    IpExhausted,
    MacExhausted,
    allocate_ip,
    default_allocation_pools,
    default_gateway,
    generate_mac,
)


def test_default_gateway() -> None:
    assert default_gateway("10.0.0.0/24") == "10.0.0.1"
    assert default_gateway("2001:db8::/64") == "2001:db8::1"
    with pytest.raises(InvalidIpRequest):
        default_gateway("10.0.0.5/32")


def test_default_pools_skip_network_broadcast_and_gateway() -> None:
    assert default_allocation_pools("10.0.0.0/24", "10.0.0.1") == [
        {"start": "10.0.0.2", "end": "10.0.0.254"}
    ]
    assert default_allocation_pools("10.0.0.0/24", "10.0.0.100") == [
        {"start": "10.0.0.1", "end": "10.0.0.99"},
        {"start": "10.0.0.101", "end": "10.0.0.254"},
    ]
    assert default_allocation_pools("10.0.0.0/24", None) == [
        {"start": "10.0.0.1", "end": "10.0.0.254"}
    ]
    # IPv6 has no broadcast address: the last one is usable.
    assert default_allocation_pools("2001:db8::/64", "2001:db8::1") == [
        {"start": "2001:db8::2", "end": "2001:db8::ffff:ffff:ffff:ffff"}
    ]
    assert default_allocation_pools("10.0.0.0/31", None) == []


def test_first_free_address_in_default_pool() -> None:
    assert allocate_ip("10.0.0.0/24", None, "10.0.0.1", []) == "10.0.0.2"
    assert allocate_ip("10.0.0.0/24", None, "10.0.0.1", ["10.0.0.2", "10.0.0.3"]) == "10.0.0.4"


def test_gateway_is_never_handed_out_even_inside_a_custom_pool() -> None:
    pools = [{"start": "10.0.0.1", "end": "10.0.0.3"}]
    assert allocate_ip("10.0.0.0/24", pools, "10.0.0.1", []) == "10.0.0.2"


def test_pools_are_searched_in_order() -> None:
    pools = [{"start": "10.0.0.50", "end": "10.0.0.51"}, {"start": "10.0.0.10", "end": "10.0.0.20"}]
    assert allocate_ip("10.0.0.0/24", pools, None, []) == "10.0.0.50"
    assert allocate_ip("10.0.0.0/24", pools, None, ["10.0.0.50", "10.0.0.51"]) == "10.0.0.10"


def test_a_window_picks_among_the_first_free_addresses_at_random() -> None:
    used = ["10.0.0.2", "10.0.0.4"]
    got = {allocate_ip("10.0.0.0/24", None, "10.0.0.1", used, window=3) for _ in range(200)}
    assert got == {"10.0.0.3", "10.0.0.5", "10.0.0.6"}  # the first three free, each drawn
    pools = [{"start": "10.0.0.50", "end": "10.0.0.51"}, {"start": "10.0.0.10", "end": "10.0.0.20"}]
    across = {allocate_ip("10.0.0.0/24", pools, None, [], window=3) for _ in range(200)}
    assert across == {"10.0.0.50", "10.0.0.51", "10.0.0.10"}  # in the pools' order
    small = [allocate_ip("192.168.1.0/30", None, "192.168.1.1", [], window=1000)]
    assert small == ["192.168.1.2"]  # a window wider than what is free: what is free
    with pytest.raises(IpExhausted):
        allocate_ip("192.168.1.0/30", None, "192.168.1.1", small, window=1000)


def test_exhaustion_of_a_slash_30() -> None:
    in_use: list[str] = []
    # /30: .0 network, .1 gateway, .2 usable, .3 broadcast.
    in_use.append(allocate_ip("192.168.1.0/30", None, "192.168.1.1", in_use))
    assert in_use == ["192.168.1.2"]
    with pytest.raises(
        IpExhausted, match=r"No more IP addresses available on subnet 192\.168\.1\.0/30"
    ):
        allocate_ip("192.168.1.0/30", None, "192.168.1.1", in_use)


def test_exhaustion_without_gateway_uses_both_hosts() -> None:
    got = [
        allocate_ip("192.168.1.0/30", None, None, []),
        allocate_ip("192.168.1.0/30", None, None, ["192.168.1.1"]),
    ]
    assert got == ["192.168.1.1", "192.168.1.2"]
    with pytest.raises(IpExhausted):
        allocate_ip("192.168.1.0/30", None, None, got)


def test_ipv6_is_lazy_and_respects_in_use() -> None:
    cidr = "2001:db8:1::/64"
    assert allocate_ip(cidr, None, "2001:db8:1::1", []) == "2001:db8:1::2"
    in_use = ["2001:db8:1:0::2", "2001:DB8:1::3"]  # non-canonical spellings still count
    assert allocate_ip(cidr, None, "2001:db8:1::1", in_use) == "2001:db8:1::4"


def test_ipv6_small_subnet_exhaustion() -> None:
    cidr = "2001:db8::/126"  # ::0 reserved, ::1 gateway, ::2 and ::3 usable
    in_use: list[str] = []
    for _ in range(2):
        in_use.append(allocate_ip(cidr, None, "2001:db8::1", in_use))
    assert in_use == ["2001:db8::2", "2001:db8::3"]
    with pytest.raises(IpExhausted):
        allocate_ip(cidr, None, "2001:db8::1", in_use)


def test_requested_address_is_validated() -> None:
    cidr, gw = "10.0.0.0/24", "10.0.0.1"
    pools = [{"start": "10.0.0.10", "end": "10.0.0.20"}]
    assert allocate_ip(cidr, pools, gw, [], requested="10.0.0.15") == "10.0.0.15"
    with pytest.raises(InvalidIpRequest, match="not a valid IP for subnet"):
        allocate_ip(cidr, pools, gw, [], requested="10.0.1.15")
    with pytest.raises(InvalidIpRequest, match="gateway"):
        allocate_ip(cidr, pools, gw, [], requested=gw)
    with pytest.raises(InvalidIpRequest, match="outside the allocation pools"):
        allocate_ip(cidr, pools, gw, [], requested="10.0.0.30")
    with pytest.raises(IpAddressInUse, match="in use"):
        allocate_ip(cidr, pools, gw, ["10.0.0.15"], requested="10.0.0.15")
    with pytest.raises(InvalidIpRequest, match="not an IP address"):
        allocate_ip(cidr, pools, gw, [], requested="banana")
    with pytest.raises(InvalidIpRequest, match="IPv4"):
        allocate_ip(cidr, pools, gw, [], requested="2001:db8::5")


def test_requested_ipv6_address() -> None:
    got = allocate_ip("2001:db8::/64", None, "2001:db8::1", [], requested="2001:db8:0::abcd")
    assert got == "2001:db8::abcd"


def test_bad_pools_and_cidrs_are_rejected() -> None:
    cidr = "10.0.0.0/24"
    bad_pools = [
        [{"start": "10.0.0.20", "end": "10.0.0.10"}],  # reversed
        [{"start": "10.0.0.0", "end": "10.0.0.10"}],  # includes the network address
        [{"start": "10.0.0.250", "end": "10.0.0.255"}],  # includes broadcast
        [{"start": "10.0.1.1", "end": "10.0.1.5"}],  # other subnet
        [{"start": "10.0.0.2", "end": "10.0.0.9"}, {"start": "10.0.0.9", "end": "10.0.0.12"}],
        [{"start": "10.0.0.2"}],
    ]
    for pools in bad_pools:
        with pytest.raises(InvalidAllocationPool):
            allocate_ip(cidr, pools, None, [])
    with pytest.raises(IpamError, match="invalid CIDR"):
        allocate_ip("10.0.0.0/33", None, None, [])
    assert issubclass(IpamError, ValueError)


def test_other_version_addresses_in_use_are_ignored() -> None:
    assert allocate_ip("10.0.0.0/29", None, "10.0.0.1", ["2001:db8::2"]) == "10.0.0.2"


def test_generate_mac_format_and_prefix() -> None:
    mac = generate_mac(rng=random.Random(1))
    parts = mac.split(":")
    assert len(parts) == 6 and mac.startswith("fa:16:3e:")
    assert all(len(p) == 2 and int(p, 16) >= 0 for p in parts)
    assert generate_mac(rng=random.Random(1)) == mac  # seeded: reproducible
    assert generate_mac("02:00:00:00", rng=random.Random(2)).startswith("02:00:00:00:")


def test_generate_mac_avoids_collisions() -> None:
    seeded = generate_mac(rng=random.Random(7))
    other = generate_mac(rng=random.Random(7), in_use=[seeded.upper()])
    assert other != seeded
    # A nearly full space still yields its one free address.
    prefix = "fa:16:3e:00:00"
    used = [f"{prefix}:{n:02x}" for n in range(256) if n != 0x42]
    assert generate_mac(prefix, rng=random.Random(3), in_use=used) == f"{prefix}:42"
    with pytest.raises(MacExhausted):
        generate_mac(prefix, in_use=[*used, f"{prefix}:42"])


@pytest.mark.parametrize("prefix", ["", "zz:16", "fa:16:3e:00:00:00", "01:00:5e", "fa16"])
def test_generate_mac_rejects_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError):
        generate_mac(prefix)
