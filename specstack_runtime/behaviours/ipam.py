"""IP address and MAC allocation in the manner of neutron's built-in IPAM.

Pools use neutron's API shape, ``[{"start": ip, "end": ip}]``. Addresses are
handled as integers and candidates generated lazily, so an IPv6 /64 is never
enumerated.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import socket
from collections.abc import Collection, Iterable, Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAC_PREFIX = "fa:16:3e"
# The free addresses an allocator that lost a race picks among (neutron's MAX_WIN).
MAX_WINDOW = 1000
# Random tries before falling back to a scan, which only a nearly full space needs.
_MAC_RANDOM_TRIES = 64


class IpamError(ValueError):
    """Base class of allocation failures."""


class IpExhausted(IpamError):
    """No free address is left in the allocation pools."""


class InvalidIpRequest(IpamError):
    """A requested address (or the inputs) cannot be used on this subnet."""


class IpAddressInUse(InvalidIpRequest):
    """The requested address is already allocated (neutron answers 409 for this)."""


class InvalidAllocationPool(IpamError):
    """An allocation pool is malformed, outside the subnet or overlapping another."""


class MacExhausted(IpamError):
    """Every MAC address under the prefix is in use."""


def _network(cidr: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise InvalidIpRequest(f"invalid CIDR {cidr!r}: {exc}") from None


def _address(text: str, net: IPNetwork, what: str) -> IPAddress:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidIpRequest(f"{what} {text!r} is not an IP address") from None
    if address.version != net.version:
        raise InvalidIpRequest(f"{what} {text} is not an IPv{net.version} address")
    return address


def _from_int(value: int, version: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _usable_bounds(net: IPNetwork) -> tuple[int, int]:
    """First and last addresses a pool may hold: not the network address, not v4 broadcast."""
    first = int(net.network_address)
    last = int(net.broadcast_address)
    if first == last:
        return first, last  # single-address subnet
    return first + 1, last - (1 if net.version == 4 else 0)


def _pool_dict(start: int, end: int, version: int) -> dict[str, str]:
    return {"start": str(_from_int(start, version)), "end": str(_from_int(end, version))}


def default_gateway(cidr: str) -> str:
    """The first address after the network address, neutron's default gateway_ip."""
    net = _network(cidr)
    if net.num_addresses < 2:
        raise InvalidIpRequest(f"subnet {net} has no room for a gateway")
    return str(net.network_address + 1)


def default_allocation_pools(cidr: str, gateway_ip: str | None) -> list[dict[str, str]]:
    """Every usable address of the subnet, split around the gateway (neutron's generate_pools)."""
    net = _network(cidr)
    first, last = _usable_bounds(net)
    if net.num_addresses > 1 and first >= last:
        return []  # /31 and /127: nothing left once the reserved addresses go
    if gateway_ip is None:
        return [_pool_dict(first, last, net.version)]
    gateway = int(_address(gateway_ip, net, "gateway"))
    if not first <= gateway <= last:
        return [_pool_dict(first, last, net.version)]
    ranges = [(first, gateway - 1), (gateway + 1, last)]
    return [_pool_dict(s, e, net.version) for s, e in ranges if s <= e]


def _parse_pools(net: IPNetwork, pools: Iterable[dict[str, str]]) -> list[tuple[int, int]]:
    low, high = _usable_bounds(net)
    parsed: list[tuple[int, int]] = []
    for pool in pools:
        try:
            start_text, end_text = pool["start"], pool["end"]
        except KeyError:
            message = f"allocation pool {pool!r} needs 'start' and 'end'"
            raise InvalidAllocationPool(message) from None
        try:
            start = int(_address(start_text, net, "pool start"))
            end = int(_address(end_text, net, "pool end"))
        except InvalidIpRequest as exc:
            raise InvalidAllocationPool(str(exc)) from None
        if start > end:
            raise InvalidAllocationPool(f"allocation pool {start_text}-{end_text} is reversed")
        if start < low or end > high:
            raise InvalidAllocationPool(
                f"allocation pool {start_text}-{end_text} is outside the usable range of {net}"
            )
        parsed.append((start, end))
    ordered = sorted(parsed)
    for (_, prev_end), (start, _) in itertools.pairwise(ordered):
        if start <= prev_end:
            raise InvalidAllocationPool(f"allocation pools overlap in {net}")
    return parsed


def _candidates(pools: Iterable[tuple[int, int]]) -> Iterator[int]:
    for start, end in pools:
        current = start
        while current <= end:
            yield current
            current += 1


def allocate_ip(
    cidr: str,
    allocation_pools: list[dict[str, str]] | None,
    gateway_ip: str | None,
    in_use: Collection[str],
    requested: str | None = None,
    window: int = 1,
) -> str:
    """Return a free address: the requested one after checks, else the first free in the
    pools, or with `window` one of the first `window` free at random (neutron's IPAM takes
    one of the first 1,000: allocators that raced for one address then spread out).

    Pools are searched in the order given; allocation_pools None means the
    default pools for cidr and gateway_ip.
    """
    net = _network(cidr)
    gateway = int(_address(gateway_ip, net, "gateway")) if gateway_ip is not None else None
    if allocation_pools is None:
        allocation_pools = default_allocation_pools(cidr, gateway_ip)
    pools = _parse_pools(net, allocation_pools)
    used = _used_set(net, in_use)
    if requested is not None:
        return _check_requested(net, pools, gateway, used, requested)
    free = (c for c in _candidates(pools) if c not in used and c != gateway)
    first = list(itertools.islice(free, window))
    if first:
        return str(_from_int(random.choice(first), net.version))
    raise IpExhausted(f"No more IP addresses available on subnet {net}.")


def _used_set(net: IPNetwork, in_use: Iterable[str]) -> set[int]:
    used: set[int] = set()
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    for text in in_use:
        # inet_pton is the fast path (allocation reads every address in use).
        try:
            used.add(int.from_bytes(socket.inet_pton(family, text), "big"))
            continue
        except (OSError, ValueError, TypeError):
            pass
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise InvalidIpRequest(f"in-use address {text!r} is not an IP address") from None
        # Other-version addresses (a dual-stack port's) cannot collide here.
        if address.version == net.version:
            used.add(int(address))
    return used


def _check_requested(
    net: IPNetwork,
    pools: list[tuple[int, int]],
    gateway: int | None,
    used: set[int],
    requested: str,
) -> str:
    address = _address(requested, net, "requested address")
    value = int(address)
    if address not in net:
        raise InvalidIpRequest(f"IP address {address} is not a valid IP for subnet {net}.")
    if value == gateway:
        raise InvalidIpRequest(f"IP address {address} is the gateway of subnet {net}.")
    if not any(start <= value <= end for start, end in pools):
        raise InvalidIpRequest(
            f"IP address {address} is outside the allocation pools of subnet {net}."
        )
    if value in used:
        raise IpAddressInUse(f"The IP address {address} is in use on subnet {net}.")
    return str(address)


def generate_mac(
    prefix: str = MAC_PREFIX,
    rng: random.Random | None = None,
    in_use: Collection[str] = (),
) -> str:
    """A random MAC under prefix (neutron's base_mac) that is not in in_use."""
    octets = [o.lower() for o in prefix.split(":")]
    if not 1 <= len(octets) <= 5 or any(
        len(o) != 2 or any(c not in "0123456789abcdef" for c in o) for o in octets
    ):
        raise ValueError(f"MAC prefix {prefix!r} must be 1 to 5 hex octets like 'fa:16:3e'")
    if int(octets[0], 16) & 1:
        raise ValueError(f"MAC prefix {prefix!r} is a multicast prefix")
    rng = rng if rng is not None else random.SystemRandom()
    free_octets = 6 - len(octets)
    space = 1 << (8 * free_octets)
    used = {mac.lower() for mac in in_use}
    head = ":".join(octets)

    def render(n: int) -> str:
        tail = n.to_bytes(free_octets, "big")
        return head + "".join(f":{b:02x}" for b in tail)

    for _ in range(min(space, _MAC_RANDOM_TRIES)):
        mac = render(rng.randrange(space))
        if mac not in used:
            return mac
    # Crowded space: walk it once from a random point, so any free address is found.
    start = rng.randrange(space)
    for offset in range(space):
        mac = render((start + offset) % space)
        if mac not in used:
            return mac
    raise MacExhausted(f"No free MAC address left under prefix {prefix}")
