"""Networking (neutron v2.0) behaviours: networks, subnets, ports, and the agents' side.

Operation behaviours keep every resource in the project's database (tables
`networks`, `subnets`, `ports`, `ipallocations`) in the shape the API returns,
so that showing a resource is rendering its row. Addresses come from
`ipam.allocate_ip`; every allocation is also a row of `ipallocations` whose id
is `<subnet_id>:<ip>`, so two servers that pick the same address at the same
time collide on the primary key and the loser takes the next one.

Flow variables:
- `createPort`, `updatePort` and `deletePort` leave `call.vars["port"]` (the port
  as stored) for the steps that tell the agents about it. updatePort, which no
  sequence gives agent steps, fans out `port_update` itself (as neutron does on
  every port update), so a port bound by PUT is wired too.

Agents (fanout and casts reach them; they keep their state in files):
- the DHCP agent keeps, per network, a dnsmasq hosts file
  `<data_dir>/dhcp/<network_id>/host` (`MAC,host-<ip with dashes>,IP`, IPv6
  addresses in brackets as dnsmasq wants them) and its own record of which
  port owns which lines, `ports.json`, beside it; both are rewritten atomically.
- the L2 agent of host H keeps `<data_dir>/l2/H.json`,
  `{"host": H, "ports": {port_id: {...}}}`, with the ports bound to H (wired);
  updates of ports bound elsewhere are ignored (and unwire a port that moved).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from specstack_runtime.behaviours import ipam
from specstack_runtime.behaviours.cas import update_cas
from specstack_runtime.bus import BusError
from specstack_runtime.context import AuthContext, Call, Interaction, Reply
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound, StepFailed
from specstack_runtime.messaging import InvalidMessage, send
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.statefile import StateFile, state_file
from specstack_runtime.store import Store, utcnow

logger = logging.getLogger(__name__)

Doc = dict[str, Any]

API_VERSION = "v2.0"
DEFAULT_MTU = 1450  # a 1500-byte underlay minus the VXLAN overhead
MIN_MTU = 68
DEFAULT_NETWORK_TYPE = "vxlan"
VXLAN_VNI_RANGE = (1, 16_777_215)
VLAN_RANGE = (1, 4094)
NETWORK_TYPES = ("vxlan", "vlan", "flat", "geneve", "local")
VNIC_TYPES = (
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "remote-managed",
)
BOUND_VIF_TYPE = "ovs"
UNBOUND_VIF_TYPE = "unbound"
BOUND_VIF_DETAILS: Doc = {
    "port_filter": True,
    "ovs_hybrid_plug": False,
    "datapath_type": "system",
    "bridge_name": "br-int",
    "connectivity": "l2",
}
DHCP_OWNER_PREFIX = "network:dhcp"

# The extensions whose attributes and behaviour this module really provides.
EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network", "Adds external network attribute to networks."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("net-mtu-writable", "Network MTU (writable)", "Provides a writable MTU attribute."),
    ("port-security", "Port Security", "Provides port security"),
    ("security-group", "security-group", "The security groups extension."),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    (
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources.",
    ),
    ("project-id", "project_id field enabled", "Indicates that the project_id field is enabled."),
    (
        "ip-substring-filtering",
        "IP address substring filtering",
        "Provides IP address substring filtering when listing ports",
    ),
    ("pagination", "Pagination support", "Indicates that pagination is enabled."),
    ("sorting", "Sorting support", "Indicates that sorting is enabled."),
)
EXTENSIONS_UPDATED = "2024-01-01T00:00:00-00:00"

RESERVED_QUERY = frozenset({"fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir"})

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$", re.IGNORECASE)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


# -- input checks (neutron's attribute validators) -----------------------------------------------

Validator = Callable[[str, Any], Any]


def _invalid(name: str, reason: str) -> BadRequest:
    return BadRequest(f"Invalid input for {name}. Reason: {reason}.", kind="InvalidInput")


def _to_bool(name: str, value: Any) -> bool:
    """neutron_lib's convert_to_boolean: booleans, 0/1, and their usual spellings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on", "t", "y"):
            return True
        if low in ("false", "0", "no", "off", "f", "n"):
            return False
    raise _invalid(name, f"'{value}' cannot be converted to boolean")


def _v_bool(name: str, value: Any) -> bool:
    return _to_bool(name, value)


def _v_str(max_len: int = 255) -> Validator:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _invalid(name, f"'{value}' is not a valid string")
        if len(value) > max_len:
            raise _invalid(name, f"'{value[:40]}...' exceeds maximum length of {max_len}")
        return value

    return check


def _v_opt_str(name: str, value: Any) -> str | None:
    return None if value is None else _v_str(255)(name, value)


def _v_int(low: int, high: int) -> Validator:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool):
            raise _invalid(name, f"'{value}' is not an integer")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _invalid(name, f"'{value}' is not an integer") from None
        if not isinstance(value, int):
            raise _invalid(name, f"'{value}' is not an integer")
        if not low <= value <= high:
            raise _invalid(name, f"'{value}' is not in range {low} through {high}")
        return value

    return check


def _v_str_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(name, f"'{value}' is not a list of strings")
    return list(value)


def _v_dict(name: str, value: Any) -> Doc:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(name, f"'{value}' is not a dictionary")
    return dict(value)


def _v_any(_name: str, value: Any) -> Any:
    return value


def _v_ip(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid(name, f"'{value}' is not a valid IP address")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise _invalid(name, f"'{value}' is not a valid IP address") from None


def _v_mac(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _MAC_RE.match(value.strip()):
        raise _invalid(name, f"'{value}' is not a valid MAC address")
    mac = value.strip().lower().replace("-", ":")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise _invalid(name, f"'{value}' is not a valid unicast MAC address")
    return mac


def _v_network_type(name: str, value: Any) -> str:
    if value not in NETWORK_TYPES:
        raise _invalid(name, f"'{value}' is not one of {', '.join(NETWORK_TYPES)}")
    return str(value)


def _v_vnic_type(name: str, value: Any) -> str:
    if value not in VNIC_TYPES:
        raise _invalid(name, f"'{value}' is not in {list(VNIC_TYPES)}")
    return str(value)


def _v_address_pairs(name: str, value: Any) -> list[Doc]:
    if not isinstance(value, list):
        raise _invalid(name, f"'{value}' is not a list")
    pairs: list[Doc] = []
    for pair in value:
        if not isinstance(pair, dict) or "ip_address" not in pair:
            raise BadRequest(
                "Allowed address pairs must be a list of dictionaries with an ip_address.",
                kind="AllowedAddressPairsMissingIP",
            )
        ip = pair["ip_address"]
        try:
            ipaddress.ip_network(ip, strict=False)
        except (TypeError, ValueError):
            raise _invalid(name, f"'{ip}' is not a valid IP address or CIDR") from None
        entry: Doc = {"ip_address": ip}
        if pair.get("mac_address") is not None:
            entry["mac_address"] = _v_mac(name, pair["mac_address"])
        pairs.append(entry)
    return pairs


def _v_dhcp_opts(name: str, value: Any) -> list[Doc]:
    if not isinstance(value, list) or not all(
        isinstance(o, dict) and isinstance(o.get("opt_name"), str) and "opt_value" in o
        for o in value
    ):
        raise _invalid(name, f"'{value}' is not a list of {{opt_name, opt_value}} options")
    return [dict(o) for o in value]


def _v_fixed_ips(name: str, value: Any) -> list[Doc]:
    if not isinstance(value, list):
        raise _invalid(name, f"'{value}' is not a list")
    out: list[Doc] = []
    for item in value:
        if not isinstance(item, dict) or not item or set(item) - {"subnet_id", "ip_address"}:
            raise _invalid(name, f"'{item}' must have only subnet_id and/or ip_address")
        entry: Doc = {}
        if item.get("subnet_id") is not None:
            entry["subnet_id"] = _v_str(64)(name, item["subnet_id"])
        if item.get("ip_address") is not None:
            entry["ip_address"] = _v_ip(name, item["ip_address"])
        if not entry:
            raise _invalid(name, f"'{item}' names neither a subnet_id nor an ip_address")
        if entry in out:
            raise _invalid(name, f"duplicate fixed_ips entry '{item}'")
        out.append(entry)
    return out


def _v_nameservers(name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _invalid(name, f"'{value}' is not a list")
    seen: list[str] = []
    for item in value:
        ip = _v_ip(name, item)
        if ip in seen:
            raise _invalid(name, f"Duplicate nameserver '{item}'")
        seen.append(ip)
    return seen


def _v_host_routes(name: str, value: Any) -> list[Doc]:
    if not isinstance(value, list):
        raise _invalid(name, f"'{value}' is not a list")
    routes: list[Doc] = []
    for route in value:
        if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
            raise _invalid(name, f"'{route}' must have exactly destination and nexthop")
        try:
            dest = str(ipaddress.ip_network(route["destination"], strict=True))
        except (TypeError, ValueError):
            raise _invalid(name, f"'{route['destination']}' is not a valid CIDR") from None
        entry = {"destination": dest, "nexthop": _v_ip(name, route["nexthop"])}
        if entry in routes:
            raise _invalid(name, f"Duplicate hostroute '{route}'")
        routes.append(entry)
    return routes


def _v_pools(name: str, value: Any) -> list[Doc]:
    if not isinstance(value, list):
        raise _invalid(name, f"'{value}' is not a list")
    pools: list[Doc] = []
    for pool in value:
        if not isinstance(pool, dict) or set(pool) != {"start", "end"}:
            raise BadRequest(
                f"The allocation pool {pool} needs exactly a start and an end.",
                kind="InvalidAllocationPool",
            )
        pools.append({"start": _v_ip(name, pool["start"]), "end": _v_ip(name, pool["end"])})
    return pools


def _v_ipv6_mode(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if value not in ("slaac", "dhcpv6-stateful", "dhcpv6-stateless"):
        raise _invalid(
            name, f"'{value}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac']"
        )
    return str(value)


# attribute -> (validator, settable on create, settable on update)
Attrs = Mapping[str, tuple[Validator, bool, bool]]

NETWORK_ATTRS: Attrs = {
    "name": (_v_str(255), True, True),
    "admin_state_up": (_v_bool, True, True),
    "shared": (_v_bool, True, True),
    "description": (_v_str(255), True, True),
    "tenant_id": (_v_str(255), True, False),
    "project_id": (_v_str(255), True, False),
    "mtu": (_v_int(MIN_MTU, DEFAULT_MTU), True, True),
    "router:external": (_v_bool, True, True),
    "port_security_enabled": (_v_bool, True, True),
    "availability_zone_hints": (_v_str_list, True, False),
    "dns_domain": (_v_str(255), True, True),
    "qos_policy_id": (_v_opt_str, True, True),
    "is_default": (_v_bool, True, True),
    "vlan_transparent": (_v_bool, True, False),
    "provider:network_type": (_v_network_type, True, False),
    "provider:physical_network": (_v_opt_str, True, False),
    "provider:segmentation_id": (_v_int(0, VXLAN_VNI_RANGE[1]), True, False),
}
NETWORK_READ_ONLY = (
    "id",
    "status",
    "subnets",
    "availability_zones",
    "revision_number",
    "created_at",
    "updated_at",
    "l2_adjacency",
)

SUBNET_ATTRS: Attrs = {
    "network_id": (_v_str(64), True, False),
    "ip_version": (_v_int(4, 6), True, False),
    "cidr": (_v_str(64), True, False),
    "name": (_v_str(255), True, True),
    "gateway_ip": (_v_any, True, True),
    "allocation_pools": (_v_pools, True, True),
    "enable_dhcp": (_v_bool, True, True),
    "dns_nameservers": (_v_nameservers, True, True),
    "host_routes": (_v_host_routes, True, True),
    "ipv6_ra_mode": (_v_ipv6_mode, True, False),
    "ipv6_address_mode": (_v_ipv6_mode, True, False),
    "subnetpool_id": (_v_opt_str, True, False),
    "use_default_subnetpool": (_v_bool, True, False),
    "prefixlen": (_v_int(0, 128), True, False),
    "description": (_v_str(255), True, True),
    "tenant_id": (_v_str(255), True, False),
    "project_id": (_v_str(255), True, False),
    "segment_id": (_v_opt_str, True, True),
    "service_types": (_v_str_list, True, True),
    "dns_publish_fixed_ip": (_v_bool, True, True),
}
SUBNET_READ_ONLY = ("id", "revision_number", "created_at", "updated_at")

PORT_ATTRS: Attrs = {
    "network_id": (_v_str(64), True, False),
    "name": (_v_str(255), True, True),
    "admin_state_up": (_v_bool, True, True),
    "mac_address": (_v_mac, True, True),
    "fixed_ips": (_v_fixed_ips, True, True),
    "device_id": (_v_str(255), True, True),
    "device_owner": (_v_str(255), True, True),
    "tenant_id": (_v_str(255), True, False),
    "project_id": (_v_str(255), True, False),
    "binding:host_id": (_v_str(255), True, True),
    "binding:vnic_type": (_v_vnic_type, True, True),
    "binding:profile": (_v_dict, True, True),
    "security_groups": (_v_str_list, True, True),
    "allowed_address_pairs": (_v_address_pairs, True, True),
    "extra_dhcp_opts": (_v_dhcp_opts, True, True),
    "description": (_v_str(255), True, True),
    "port_security_enabled": (_v_bool, True, True),
    "dns_name": (_v_str(255), True, True),
    "dns_domain": (_v_str(255), True, True),
    "qos_policy_id": (_v_opt_str, True, True),
    "propagate_uplink_status": (_v_bool, True, True),
}
PORT_READ_ONLY = (
    "id",
    "status",
    "binding:vif_type",
    "binding:vif_details",
    "revision_number",
    "created_at",
    "updated_at",
)


def _parse_body(
    call: Call, resource: str, attrs: Attrs, read_only: Iterable[str], *, create: bool
) -> Doc:
    """The request's `{resource: {...}}`, each attribute checked and converted."""
    body = call.body
    if not isinstance(body, dict) or resource not in body:
        raise BadRequest("Resource body required", kind="HTTPBadRequest")
    if len(body) != 1:
        extra = ", ".join(sorted(k for k in body if k != resource))
        raise BadRequest(f"Unrecognized attribute(s) '{extra}'", kind="HTTPBadRequest")
    data = body[resource]
    if not isinstance(data, dict):
        raise BadRequest(
            f"Body contains invalid data: {resource} must be an object", kind="HTTPBadRequest"
        )
    unknown = sorted(k for k in data if k not in attrs and k not in read_only)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'", kind="HTTPBadRequest")
    out: Doc = {}
    for key, value in data.items():
        spec = attrs.get(key)
        if spec is None or not (spec[1] if create else spec[2]):
            if create:
                raise BadRequest(f"Attribute '{key}' not allowed in POST", kind="HTTPBadRequest")
            raise BadRequest(f"Cannot update read-only attribute {key}", kind="HTTPBadRequest")
        out[key] = spec[0](key, value)
    return out


# -- small helpers ---------------------------------------------------------------------------------


def _store(call: Call) -> Store:
    return call.rt.require_store()


def _privileged(auth: AuthContext) -> bool:
    """Administrators and service users (nova) see and manage every project's resources."""
    return auth.is_admin or auth.has_role("service")


def _base_url(call: Call) -> str:
    """Where the caller reached this API (links are built from it)."""
    host = call.header("host")
    if host:
        return f"{call.header('x-forwarded-proto') or 'http'}://{host}"
    api = call.rt.info.components.get(call.rt.component, {}).get("api")
    return call.rt.info.endpoint(api, call.rt.config) if api else ""


def _owner(auth: AuthContext, attrs: Doc) -> str:
    """The project a new resource belongs to (another project's only for administrators)."""
    tenant = attrs.pop("tenant_id", None)
    project = attrs.pop("project_id", None)
    if tenant is not None and project is not None and tenant != project:
        raise BadRequest("'project_id' and 'tenant_id' do not match", kind="HTTPBadRequest")
    wanted = project or tenant
    if wanted and wanted != auth.project_id and not _privileged(auth):
        raise BadRequest(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project "
            "in request requires admin privileges",
            kind="HTTPBadRequest",
        )
    owner = wanted or auth.project_id
    if not owner:
        raise BadRequest(
            "A project-scoped token (or project_id) is required to create a resource.",
            kind="HTTPBadRequest",
        )
    return owner


def _policy_denied(action: str) -> Forbidden:
    return Forbidden(f"({action}) is disallowed by policy", kind="PolicyNotAuthorized")


def _fields(call: Call) -> list[str]:
    wanted: list[str] = []
    for value in call.query.get("fields", []):
        wanted += [f.strip() for f in value.split(",") if f.strip()]
    return wanted


def _only(doc: Doc, fields: list[str]) -> Doc:
    return {k: v for k, v in doc.items() if k in fields} if fields else doc


async def _update_cas(
    store: Store,
    table: str,
    id_: str,
    change: Callable[[Doc], Doc | None],
) -> Doc | None:
    """Apply `change(doc)` (the changes, or None for none) with compare-and-set retries."""
    return await update_cas(
        store, table, id_, change, revision="revision_number", conflict=Conflict
    )


# -- listing: filters, sorting, paging, fields --------------------------------------------------


def _matches(actual: Any, wanted: str, key: str) -> bool:
    if isinstance(actual, bool):
        return actual == _to_bool(key, wanted)
    if isinstance(actual, int):
        try:
            return actual == int(wanted)
        except ValueError:
            raise _invalid(key, f"'{wanted}' is not an integer") from None
    if isinstance(actual, list):
        return any(_matches(a, wanted, key) for a in actual if not isinstance(a, dict | list))
    if actual is None:
        return wanted in ("", "None", "null")
    return str(actual) == wanted


def _fixed_ips_filter(values: list[str]) -> Callable[[Doc], bool]:
    wanted: dict[str, list[str]] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or key not in ("ip_address", "subnet_id", "ip_address_substr"):
            raise _invalid(
                "fixed_ips", f"'{value}' is not ip_address=, subnet_id= or ip_address_substr="
            )
        wanted.setdefault(key, []).append(text)

    def one(fixed: Doc) -> bool:
        for key, options in wanted.items():
            if key == "ip_address_substr":
                if not any(o in str(fixed.get("ip_address", "")) for o in options):
                    return False
            elif str(fixed.get(key)) not in options:
                return False
        return True

    return lambda port: any(one(f) for f in port.get("fixed_ips") or [])


def _sort_key(key: str) -> Callable[[Doc], tuple[bool, str]]:
    return lambda doc: (doc.get(key) is None, str(doc.get(key)))


def _sorted(call: Call, items: list[Doc], known: set[str]) -> list[Doc]:
    keys = call.query.get("sort_key", [])
    dirs = call.query.get("sort_dir", [])
    if len(dirs) > len(keys):
        raise BadRequest(
            "The number of sort_keys and sort_dirs must be same", kind="HTTPBadRequest"
        )
    for key in keys:
        if key not in known:
            raise BadRequest(f"{key} is an invalid attribute for sort_key", kind="HTTPBadRequest")
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise BadRequest(
                f"{direction} is an invalid value for sort_dir, valid values are 'asc' and 'desc'",
                kind="HTTPBadRequest",
            )
    dirs = dirs + ["asc"] * (len(keys) - len(dirs))
    out = list(items)
    for key, direction in reversed(list(zip(keys, dirs, strict=True))):
        out.sort(key=_sort_key(key), reverse=direction == "desc")
    return out


def _list_reply(call: Call, collection: str, items: list[Doc], attrs: Iterable[str]) -> Reply:
    known = {k for item in items for k in item} | set(attrs) | {"id"}
    for key, values in call.query.items():
        if key in RESERVED_QUERY or not values:
            continue
        if key == "fixed_ips":
            keep = _fixed_ips_filter(values)
            items = [i for i in items if keep(i)]
        elif key == "tags":
            wanted = {t for v in values for t in v.split(",") if t}
            items = [i for i in items if wanted <= set(i.get("tags") or [])]
        elif key in known:
            items = [i for i in items if key in i and any(_matches(i[key], v, key) for v in values)]
        # Other names are not attributes of the resource: neutron ignores them.
    items = _sorted(call, items, known)
    limit_text = call.q("limit")
    limit: int | None = None
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            limit = -1
        if limit < 0:
            raise BadRequest(
                f"Bad limit request: Limit must be an integer 0 or greater and not '{limit_text}'",
                kind="BadRequest",
            )
        limit = limit or None  # 0 means no limit
    marker = call.q("marker")
    reverse = _to_bool("page_reverse", call.q("page_reverse") or "false")
    if marker is not None:
        ids = [i["id"] for i in items]
        if marker not in ids:
            raise NotFound(f"Marker {marker} could not be found.", kind="MarkerNotFound")
        at = ids.index(marker)
        items = items[:at] if reverse else items[at + 1 :]
    more = limit is not None and len(items) > limit
    if limit is not None:
        items = items[-limit:] if reverse else items[:limit]
    body: Doc = {collection: [_only(i, _fields(call)) for i in items]}
    if more and items:
        query = [(k, v) for k, vs in call.query.items() if k != "marker" for v in vs]
        query.append(("marker", items[0]["id"] if reverse else items[-1]["id"]))
        href = f"{_base_url(call)}/{API_VERSION}/{collection}?{urlencode(query)}"
        body[f"{collection}_links"] = [{"rel": "previous" if reverse else "next", "href": href}]
    return Reply(200, body)


# -- discovery -----------------------------------------------------------------------------------


@behaviour("network.list_network_versions")
async def list_network_versions(call: Call) -> Reply:
    """GET /: the only API version, v2.0."""
    href = f"{_base_url(call)}/{API_VERSION}/"
    return Reply(
        200,
        {
            "versions": [
                {"id": API_VERSION, "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}
            ]
        },
    )


@behaviour("network.get_network_v20")
async def get_network_v20(call: Call) -> Reply:
    """GET /v2.0/: the resource collections served."""
    call.require_auth()
    base = f"{_base_url(call)}/{API_VERSION}"
    resources = [
        {
            "name": name,
            "collection": f"{name}s",
            "links": [{"href": f"{base}/{name}s", "rel": "self"}],
        }
        for name in ("network", "subnet", "port")
    ]
    return Reply(200, {"resources": resources})


@behaviour("network.list_extensions")
async def list_extensions(call: Call) -> Reply:
    call.require_auth()
    return Reply(
        200,
        {
            "extensions": [
                {
                    "alias": alias,
                    "name": name,
                    "description": description,
                    "updated": EXTENSIONS_UPDATED,
                    "links": [],
                }
                for alias, name, description in EXTENSIONS
            ]
        },
    )


# -- networks ------------------------------------------------------------------------------------


def _network_visible(net: Doc, auth: AuthContext) -> bool:
    return (
        _privileged(auth)
        or net.get("project_id") == auth.project_id
        or bool(net.get("shared"))
        or bool(net.get("router:external"))
    )


def _network_view(net: Doc, auth: AuthContext) -> Doc:
    if auth.is_admin:
        return dict(net)
    return {k: v for k, v in net.items() if not k.startswith("provider:")}


async def _visible_network(call: Call, auth: AuthContext, network_id: str) -> Doc:
    net = await _store(call).get("networks", network_id)
    if net is None or not _network_visible(net, auth):
        raise NotFound(f"Network {network_id} could not be found.", kind="NetworkNotFound")
    return net


def _require_owner(doc: Doc, auth: AuthContext, action: str) -> None:
    if not _privileged(auth) and doc.get("project_id") != auth.project_id:
        raise _policy_denied(action)


@behaviour("network.list_networks")
async def list_networks(call: Call) -> Reply:
    auth = call.require_auth()
    nets = await _store(call).list("networks")
    items = [_network_view(n, auth) for n in nets if _network_visible(n, auth)]
    return _list_reply(call, "networks", items, NETWORK_ATTRS)


@behaviour("network.show_network")
async def show_network(call: Call) -> Reply:
    auth = call.require_auth()
    net = await _visible_network(call, auth, call.path_params.get("network_id", ""))
    return Reply(200, {"network": _only(_network_view(net, auth), _fields(call))})


async def _segmentation_id(store: Store, network_type: str) -> int | None:
    """The lowest free segment id of this type (VNI for vxlan/geneve, VLAN id for vlan)."""
    if network_type not in ("vxlan", "geneve", "vlan"):
        return None
    used = {
        n.get("provider:segmentation_id")
        for n in await store.list("networks")
        if n.get("provider:network_type") == network_type
    }
    low, high = VLAN_RANGE if network_type == "vlan" else VXLAN_VNI_RANGE
    for candidate in range(low, high + 1):
        if candidate not in used:
            return candidate
    raise Conflict(
        f"Unable to create the network. No {network_type} segment is available.",
        kind="NoNetworkAvailable",
    )


@behaviour("network.create_network")
async def create_network(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call)
    attrs = _parse_body(call, "network", NETWORK_ATTRS, NETWORK_READ_ONLY, create=True)
    project = _owner(auth, attrs)
    for key in ("shared", "router:external", "is_default"):
        if attrs.get(key) and not auth.is_admin:
            raise _policy_denied(f"rule:create_network and rule:create_network:{key}")
    provider = {k: attrs.pop(k) for k in list(attrs) if k.startswith("provider:")}
    if provider and not auth.is_admin:
        raise _policy_denied("rule:create_network and rule:create_network:provider:network_type")
    network_type = provider.get("provider:network_type", DEFAULT_NETWORK_TYPE)
    segment = provider.get("provider:segmentation_id")
    physnet = provider.get("provider:physical_network")
    if network_type in ("vxlan", "geneve", "local") and physnet:
        raise _invalid(
            "provider:physical_network", f"{network_type} networks have no physical network"
        )
    if network_type == "flat":
        if segment is not None:
            raise _invalid("provider:segmentation_id", "flat networks have no segmentation id")
        if not physnet:
            raise _invalid("provider:physical_network", "flat networks need a physical network")
    if network_type == "vlan":
        if not physnet:
            raise _invalid("provider:physical_network", "vlan networks need a physical network")
        if segment is not None and not VLAN_RANGE[0] <= segment <= VLAN_RANGE[1]:
            raise _invalid("provider:segmentation_id", f"{segment} is not a valid VLAN id (1-4094)")
    if network_type == "local" and segment is not None:
        raise _invalid("provider:segmentation_id", "local networks have no segmentation id")
    if segment is None:
        segment = await _segmentation_id(store, network_type)
    elif segment < 1:
        raise _invalid("provider:segmentation_id", f"{segment} is not a valid segment id")
    else:
        for other in await store.list("networks"):
            if (
                other.get("provider:network_type"),
                other.get("provider:segmentation_id"),
                other.get("provider:physical_network"),
            ) == (network_type, segment, physnet):
                raise Conflict(
                    f"Unable to create the network. The segmentation ID {segment} is in use.",
                    kind="SegmentationIdInUse",
                )
    now = utcnow()
    net: Doc = {
        "id": str(uuid.uuid4()),
        "name": "",
        "tenant_id": project,
        "project_id": project,
        "admin_state_up": True,
        "status": "ACTIVE",
        "subnets": [],
        "shared": False,
        "description": "",
        "mtu": DEFAULT_MTU,
        "router:external": False,
        "port_security_enabled": True,
        "availability_zone_hints": [],
        "availability_zones": [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "provider:network_type": network_type,
        "provider:physical_network": physnet,
        "provider:segmentation_id": segment,
        "revision_number": 1,
        "created_at": now,
        "updated_at": now,
    }
    net.update(attrs)
    net = await store.create("networks", net)
    call.vars["network"] = net
    return Reply(201, {"network": _network_view(net, auth)})


@behaviour("network.update_network")
async def update_network(call: Call) -> Reply:
    auth = call.require_auth()
    network_id = call.path_params.get("network_id", "")
    net = await _visible_network(call, auth, network_id)
    attrs = _parse_body(call, "network", NETWORK_ATTRS, NETWORK_READ_ONLY, create=False)
    _require_owner(net, auth, "rule:update_network")
    for key in ("shared", "router:external", "is_default"):
        if key in attrs and attrs[key] != net.get(key) and not auth.is_admin:
            raise _policy_denied(f"rule:update_network and rule:update_network:{key}")
    new = await _update_cas(_store(call), "networks", network_id, lambda _doc: attrs)
    if new is None:
        raise NotFound(f"Network {network_id} could not be found.", kind="NetworkNotFound")
    return Reply(200, {"network": _network_view(new, auth)})


@behaviour("network.delete_network")
async def delete_network(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call)
    network_id = call.path_params.get("network_id", "")
    net = await _visible_network(call, auth, network_id)
    _require_owner(net, auth, "rule:delete_network")
    ports = await store.list("ports", {"network_id": network_id})
    if any(not str(p.get("device_owner", "")).startswith(DHCP_OWNER_PREFIX) for p in ports):
        raise Conflict(
            f"Unable to complete operation on network {network_id}. There are one or more "
            "ports still in use on the network.",
            kind="NetworkInUse",
        )
    for port in ports:  # only the network's own DHCP ports are left
        await _release_port(store, port)
    for subnet in await store.list("subnets", {"network_id": network_id}):
        for alloc in await store.list("ipallocations", {"subnet_id": subnet["id"]}):
            await store.delete("ipallocations", alloc["id"])
        await store.delete("subnets", subnet["id"])
    await store.delete("networks", network_id)
    call.vars["network"] = net
    return Reply(204, None)


# -- subnets -------------------------------------------------------------------------------------


async def _subnet_visible(
    store: Store, subnet: Doc, auth: AuthContext, nets: dict[str, Doc] | None = None
) -> bool:
    if _privileged(auth) or subnet.get("project_id") == auth.project_id:
        return True
    if nets is not None:
        net = nets.get(subnet["network_id"])
    else:
        net = await store.get("networks", subnet["network_id"])
    return net is not None and bool(net.get("shared") or net.get("router:external"))


async def _visible_subnet(call: Call, auth: AuthContext, subnet_id: str) -> Doc:
    store = _store(call)
    subnet = await store.get("subnets", subnet_id)
    if subnet is None or not await _subnet_visible(store, subnet, auth):
        raise NotFound(f"Subnet {subnet_id} could not be found.", kind="SubnetNotFound")
    return subnet


def _parse_cidr(cidr: str, ip_version: int) -> ipam.IPNetwork:
    text = cidr.strip()
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _invalid("cidr", f"'{cidr}' is not a valid IP subnet") from None
    try:
        if "/" not in text:
            raise ValueError(text)
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise _invalid(
            "cidr", f"'{cidr}' isn't a recognized IP subnet cidr, '{loose}' is recommended"
        ) from None
    if net.version != ip_version:
        raise _invalid(
            "cidr", f"'{cidr}' is not an IPv{ip_version} subnet (ip_version {ip_version} was asked)"
        )
    if net.prefixlen == 0:
        raise _invalid("cidr", "0 is not allowed as a CIDR prefix length")
    return net


def _check_gateway(net: ipam.IPNetwork, gateway: Any) -> str | None:
    if gateway is None:
        return None
    ip = ipaddress.ip_address(_v_ip("gateway_ip", gateway))
    if ip.version != net.version:
        raise _invalid("gateway_ip", f"'{gateway}' is not an IPv{net.version} address")
    if ip not in net:
        raise BadRequest(
            f"Invalid input for operation: Gateway IP {ip} is not in subnet {net}.",
            kind="InvalidInput",
        )
    if net.num_addresses > 2 and (
        ip == net.network_address or (net.version == 4 and ip == net.broadcast_address)
    ):
        raise BadRequest(
            f"Gateway is not valid on subnet: {ip} is the network or broadcast address of {net}.",
            kind="GatewayNotValidOnSubnet",
        )
    return str(ip)


def _pool_bounds(pool: Doc) -> tuple[int, int]:
    return int(ipaddress.ip_address(pool["start"])), int(ipaddress.ip_address(pool["end"]))


def _check_pools(net: ipam.IPNetwork, pools: list[Doc], gateway: str | None) -> list[Doc]:
    first = int(net.network_address) + (1 if net.num_addresses > 2 else 0)
    last = int(net.broadcast_address) - (1 if net.version == 4 and net.num_addresses > 2 else 0)
    ranges: list[tuple[int, int]] = []
    for pool in pools:
        start, end = _pool_bounds(pool)
        text = f"{pool['start']}-{pool['end']}"
        if ipaddress.ip_address(pool["start"]).version != net.version or (
            ipaddress.ip_address(pool["end"]).version != net.version
        ):
            raise BadRequest(
                f"The allocation pool {text} is not IPv{net.version}.", kind="InvalidAllocationPool"
            )
        if start > end:
            raise BadRequest(
                f"The allocation pool {text} spanning is invalid.", kind="InvalidAllocationPool"
            )
        if start < first or end > last:
            raise BadRequest(
                f"The allocation pool {text} spanning is beyond the subnet cidr {net}.",
                kind="OutOfBoundsAllocationPool",
            )
        ranges.append((start, end))
    ordered = sorted(ranges)
    for (_start, prev_end), (start, _end) in itertools.pairwise(ordered):
        if start <= prev_end:
            raise Conflict(
                f"Found overlapping allocation pools in subnet {net}.",
                kind="OverlappingAllocationPools",
            )
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        for pool, (start, end) in zip(pools, ranges, strict=True):
            if start <= gw <= end:
                raise Conflict(
                    f"Gateway ip {gateway} conflicts with allocation pool "
                    f"{pool['start']}-{pool['end']}.",
                    kind="GatewayConflictWithAllocationPools",
                )
    return pools


@behaviour("network.list_subnets")
async def list_subnets(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call)
    nets = {n["id"]: n for n in await store.list("networks")}
    items = [s for s in await store.list("subnets") if await _subnet_visible(store, s, auth, nets)]
    return _list_reply(call, "subnets", items, SUBNET_ATTRS)


@behaviour("network.show_subnet")
async def show_subnet(call: Call) -> Reply:
    auth = call.require_auth()
    subnet = await _visible_subnet(call, auth, call.path_params.get("subnet_id", ""))
    return Reply(200, {"subnet": _only(subnet, _fields(call))})


@behaviour("network.create_subnet")
async def create_subnet(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call)
    attrs = _parse_body(call, "subnet", SUBNET_ATTRS, SUBNET_READ_ONLY, create=True)
    for key in ("network_id", "ip_version"):
        if key not in attrs:
            raise BadRequest(
                f"Failed to parse request. Required attribute '{key}' not specified",
                kind="HTTPBadRequest",
            )
    if attrs["ip_version"] not in (4, 6):
        raise _invalid("ip_version", f"{attrs['ip_version']} is not in [4, 6]")
    network = await _visible_network(call, auth, attrs.pop("network_id"))
    project = _owner(auth, attrs)
    if not _privileged(auth) and network["project_id"] != auth.project_id:
        raise _policy_denied("rule:create_subnet and rule:create_subnet:network_owner")
    subnetpool = attrs.pop("subnetpool_id", None)
    attrs.pop("use_default_subnetpool", None)
    attrs.pop("prefixlen", None)
    if attrs.get("cidr") is None:
        raise BadRequest(
            "Bad subnets request: a subnetpool must be specified in the absence of a cidr.",
            kind="BadRequest",
        )
    if subnetpool is not None:
        raise NotFound(f"Subnet pool {subnetpool} could not be found.", kind="SubnetPoolNotFound")
    version = attrs["ip_version"]
    cidr = _parse_cidr(attrs.pop("cidr"), version)
    for key in ("ipv6_ra_mode", "ipv6_address_mode"):
        if version == 4 and attrs.get(key) is not None:
            raise _invalid(key, f"{key} is not valid when ip_version is 4")
    for other in await store.list("subnets", {"network_id": network["id"]}):
        if ipaddress.ip_network(other["cidr"]).overlaps(cidr):
            raise BadRequest(
                f"Invalid input for operation: Requested subnet with cidr: {cidr} for network: "
                f"{network['id']} overlaps with another subnet.",
                kind="InvalidInput",
            )
    if "gateway_ip" in attrs:
        gateway = _check_gateway(cidr, attrs.pop("gateway_ip"))
    else:
        try:
            gateway = ipam.default_gateway(str(cidr)) if cidr.num_addresses > 2 else None
        except ipam.IpamError:
            gateway = None
    if "allocation_pools" in attrs:
        pools = _check_pools(cidr, attrs.pop("allocation_pools"), gateway)
    else:
        pools = ipam.default_allocation_pools(str(cidr), gateway)
    for route in attrs.get("host_routes", []):
        if ipaddress.ip_network(route["destination"]).version != version:
            raise _invalid("host_routes", f"destination {route['destination']} is not IPv{version}")
    now = utcnow()
    subnet: Doc = {
        "id": str(uuid.uuid4()),
        "name": "",
        "network_id": network["id"],
        "tenant_id": project,
        "project_id": project,
        "ip_version": version,
        "cidr": str(cidr),
        "gateway_ip": gateway,
        "allocation_pools": pools,
        "dns_nameservers": [],
        "host_routes": [],
        "enable_dhcp": True,
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "subnetpool_id": None,
        "description": "",
        "segment_id": None,
        "service_types": [],
        "revision_number": 1,
        "created_at": now,
        "updated_at": now,
    }
    subnet.update(attrs)
    subnet = await store.create("subnets", subnet)
    sid = subnet["id"]

    def add(net: Doc) -> Doc | None:
        subnets = list(net.get("subnets") or [])
        return None if sid in subnets else {"subnets": [*subnets, sid]}

    if await _update_cas(store, "networks", network["id"], add) is None:
        await store.delete("subnets", sid)  # the network went away meanwhile
        raise NotFound(f"Network {network['id']} could not be found.", kind="NetworkNotFound")
    call.vars["subnet"] = subnet
    return Reply(201, {"subnet": subnet})


@behaviour("network.update_subnet")
async def update_subnet(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call)
    subnet_id = call.path_params.get("subnet_id", "")
    subnet = await _visible_subnet(call, auth, subnet_id)
    attrs = _parse_body(call, "subnet", SUBNET_ATTRS, SUBNET_READ_ONLY, create=False)
    _require_owner(subnet, auth, "rule:update_subnet")
    cidr = ipaddress.ip_network(subnet["cidr"])
    gateway = subnet.get("gateway_ip")
    if "gateway_ip" in attrs:
        gateway = _check_gateway(cidr, attrs["gateway_ip"])
        attrs["gateway_ip"] = gateway
        if gateway is not None and await store.get("ipallocations", f"{subnet_id}:{gateway}"):
            raise Conflict(
                f"Gateway ip {gateway} conflicts with an address in use on subnet {subnet_id}.",
                kind="GatewayIpInUse",
            )
    if "allocation_pools" in attrs:
        pools: list[Doc] = attrs["allocation_pools"]
    else:
        pools = list(subnet.get("allocation_pools") or [])
    if "allocation_pools" in attrs or "gateway_ip" in attrs:
        attrs["allocation_pools"] = _check_pools(cidr, pools, gateway)
    for route in attrs.get("host_routes", []):
        if ipaddress.ip_network(route["destination"]).version != cidr.version:
            raise _invalid(
                "host_routes", f"destination {route['destination']} is not IPv{cidr.version}"
            )
    new = await _update_cas(store, "subnets", subnet_id, lambda _doc: attrs)
    if new is None:
        raise NotFound(f"Subnet {subnet_id} could not be found.", kind="SubnetNotFound")
    return Reply(200, {"subnet": new})


@behaviour("network.delete_subnet")
async def delete_subnet(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call)
    subnet_id = call.path_params.get("subnet_id", "")
    subnet = await _visible_subnet(call, auth, subnet_id)
    _require_owner(subnet, auth, "rule:delete_subnet")
    allocations = await store.list("ipallocations", {"subnet_id": subnet_id})
    holders = {a["port_id"] for a in allocations}
    for port_id in holders:
        port = await store.get("ports", port_id)
        if port is not None and not str(port.get("device_owner", "")).startswith(DHCP_OWNER_PREFIX):
            raise Conflict(
                f"Unable to complete operation on subnet {subnet_id}: One or more "
                "ports have an IP allocation from this subnet.",
                kind="SubnetInUse",
            )

    def drop(port: Doc) -> Doc:
        return {"fixed_ips": [f for f in port["fixed_ips"] if f["subnet_id"] != subnet_id]}

    for port_id in holders:  # only DHCP ports are left: they lose their address here
        await _update_cas(store, "ports", port_id, drop)
    for alloc in allocations:
        await store.delete("ipallocations", alloc["id"])
    await store.delete("subnets", subnet_id)

    def remove(net: Doc) -> Doc | None:
        subnets = list(net.get("subnets") or [])
        return {"subnets": [s for s in subnets if s != subnet_id]} if subnet_id in subnets else None

    await _update_cas(store, "networks", subnet["network_id"], remove)
    return Reply(204, None)


# -- ports ---------------------------------------------------------------------------------------


async def _port_visible(
    store: Store, port: Doc, auth: AuthContext, nets: dict[str, Doc] | None = None
) -> bool:
    if _privileged(auth) or port.get("project_id") == auth.project_id:
        return True
    if nets is not None:
        net = nets.get(port["network_id"])
    else:
        net = await store.get("networks", port["network_id"])
    return net is not None and net.get("project_id") == auth.project_id


async def _visible_port(call: Call, auth: AuthContext, port_id: str) -> Doc:
    store = _store(call)
    port = await store.get("ports", port_id)
    if port is None or not await _port_visible(store, port, auth):
        raise NotFound(f"Port {port_id} could not be found.", kind="PortNotFound")
    return port


def _binding_state(port: Doc) -> Doc:
    """vif_type, vif_details and status follow from the binding host and admin state."""
    bound = bool(port.get("binding:host_id"))
    return {
        "binding:vif_type": BOUND_VIF_TYPE if bound else UNBOUND_VIF_TYPE,
        "binding:vif_details": dict(BOUND_VIF_DETAILS) if bound else {},
        "status": "ACTIVE" if bound and port.get("admin_state_up", True) else "DOWN",
    }


async def _allocate_one(
    store: Store, network_id: str, subnet: Doc, port_id: str, requested: str | None
) -> str:
    """One address on `subnet` for `port_id`, claimed by inserting its ipallocations row."""
    sid = subnet["id"]
    # Allocation ids are "<subnet>:<ip>": read them without decoding every row.
    in_use = {i.split(":", 1)[1] for i in await store.ids("ipallocations", {"subnet_id": sid})}
    while True:
        try:
            ip = ipam.allocate_ip(
                subnet["cidr"],
                subnet.get("allocation_pools") or [],
                subnet.get("gateway_ip"),
                in_use,
                requested,
            )
        except ipam.IpAddressInUse:
            raise Conflict(
                f"IP address {requested} already allocated in subnet {sid}",
                kind="IpAddressAlreadyAllocated",
            ) from None
        except ipam.IpExhausted:
            raise Conflict(
                f"No more IP addresses available on network {network_id}.",
                kind="IpAddressGenerationFailure",
            ) from None
        except ipam.IpamError as exc:
            raise BadRequest(
                f"Invalid input for operation: {exc}", kind="InvalidIpForSubnet"
            ) from None
        row = {
            "id": f"{sid}:{ip}",
            "subnet_id": sid,
            "port_id": port_id,
            "ip_address": ip,
            "network_id": network_id,
        }
        try:
            await store.create("ipallocations", row)
            return ip
        except Conflict:
            if requested is not None:
                raise Conflict(
                    f"IP address {ip} already allocated in subnet {sid}",
                    kind="IpAddressAlreadyAllocated",
                ) from None
            # Another server took it between our read and our insert: take the next one.
            in_use.add(ip)
            in_use |= {
                a["ip_address"] for a in await store.list("ipallocations", {"subnet_id": sid})
            }


async def _release(store: Store, port_id: str, fixed_ips: Iterable[Doc]) -> None:
    for fixed in fixed_ips:
        row_id = f"{fixed['subnet_id']}:{fixed['ip_address']}"
        row = await store.get("ipallocations", row_id)
        if row is not None and row.get("port_id") == port_id:
            await store.delete("ipallocations", row_id)


async def _release_port(store: Store, port: Doc) -> None:
    await _release(store, port["id"], port.get("fixed_ips") or [])
    for alloc in await store.list("ipallocations", {"port_id": port["id"]}):
        await store.delete("ipallocations", alloc["id"])
    await store.delete("ports", port["id"])


def _resolve_fixed_ips(network: Doc, subnets: list[Doc], wanted: list[Doc] | None) -> list[Doc]:
    """Each request as {subnet, ip_address|None}; without fixed_ips, the first IPv4 subnet."""
    if wanted is None:
        if not subnets:
            return []
        v4 = [s for s in subnets if s["ip_version"] == 4]
        return [{"subnet": (v4 or subnets)[0], "ip_address": None}]
    by_id = {s["id"]: s for s in subnets}
    resolved: list[Doc] = []
    for entry in wanted:
        ip = entry.get("ip_address")
        if "subnet_id" in entry:
            subnet = by_id.get(entry["subnet_id"])
            if subnet is None:
                raise BadRequest(
                    f"Invalid input for operation: Failed to create port on network "
                    f"{network['id']}, because fixed_ips included invalid subnet "
                    f"{entry['subnet_id']}.",
                    kind="InvalidInput",
                )
            if ip is not None and ipaddress.ip_address(ip) not in ipaddress.ip_network(
                subnet["cidr"]
            ):
                raise BadRequest(
                    f"IP address {ip} is not a valid IP for the specified subnet.",
                    kind="InvalidIpForSubnet",
                )
        else:
            address = ipaddress.ip_address(str(ip))
            matching = [s for s in subnets if address in ipaddress.ip_network(s["cidr"])]
            if not matching:
                raise BadRequest(
                    f"IP address {ip} is not a valid IP for any of the subnets on "
                    "the specified network.",
                    kind="InvalidIpForNetwork",
                )
            subnet = matching[0]
        resolved.append({"subnet": subnet, "ip_address": ip})
    return resolved


async def _allocate_all(store: Store, network: Doc, port_id: str, requests: list[Doc]) -> list[Doc]:
    done: list[Doc] = []
    try:
        for req in requests:
            subnet = req["subnet"]
            ip = await _allocate_one(store, network["id"], subnet, port_id, req["ip_address"])
            done.append({"subnet_id": subnet["id"], "ip_address": ip})
    except BaseException:
        await _release(store, port_id, done)
        raise
    return done


async def _check_mac(store: Store, network_id: str, mac: str, port_id: str | None) -> None:
    for other in await store.list("ports", {"network_id": network_id, "mac_address": mac}):
        if other["id"] != port_id:
            raise Conflict(
                f"Unable to complete operation for network {network_id}. The mac "
                f"address {mac} is in use.",
                kind="MacAddressInUse",
            )


@behaviour("network.list_ports")
async def list_ports(call: Call) -> Reply:
    auth = call.require_auth()
    store = _store(call)
    where: Doc = {}
    for key in ("network_id", "device_id"):  # indexed: narrow the read early
        values = call.query.get(key)
        if values:
            where[key] = list(values)
    nets = {n["id"]: n for n in await store.list("networks")}
    items = [
        p for p in await store.list("ports", where) if await _port_visible(store, p, auth, nets)
    ]
    return _list_reply(call, "ports", items, PORT_ATTRS)


@behaviour("network.show_port")
async def show_port(call: Call) -> Reply:
    auth = call.require_auth()
    port = await _visible_port(call, auth, call.path_params.get("port_id", ""))
    return Reply(200, {"port": _only(port, _fields(call))})


@behaviour("network.create_port")
async def create_port(call: Call) -> Reply:
    """POST /v2.0/ports; leaves `call.vars["port"]`."""
    auth = call.require_auth()
    store = _store(call)
    attrs = _parse_body(call, "port", PORT_ATTRS, PORT_READ_ONLY, create=True)
    if "network_id" not in attrs:
        raise BadRequest(
            "Failed to parse request. Required attribute 'network_id' not specified",
            kind="HTTPBadRequest",
        )
    network = await _visible_network(call, auth, attrs.pop("network_id"))
    project = _owner(auth, attrs)
    port_security = attrs.get("port_security_enabled", network.get("port_security_enabled", True))
    groups = attrs.get("security_groups", [])
    if groups and not port_security:
        raise Conflict(
            "Port has security group associated. Cannot disable port security or "
            "ip address until security group is removed",
            kind="PortSecurityAndIPRequiredForSecurityGroups",
        )
    port_id = str(uuid.uuid4())
    if "mac_address" in attrs:
        mac = attrs.pop("mac_address")
        await _check_mac(store, network["id"], mac, None)
    else:
        # A random MAC rarely collides; the indexed lookup confirms it (neutron retries too).
        for _ in range(16):
            mac = ipam.generate_mac()
            if not await store.ids("ports", {"network_id": network["id"], "mac_address": mac}):
                break
        else:
            raise Conflict(
                f"Unable to generate a unique mac on network {network['id']}.",
                kind="MacAddressGenerationFailure",
            )
    subnets = await store.list("subnets", {"network_id": network["id"]})
    requests = _resolve_fixed_ips(network, subnets, attrs.pop("fixed_ips", None))
    fixed_ips = await _allocate_all(store, network, port_id, requests)
    now = utcnow()
    port: Doc = {
        "id": port_id,
        "name": "",
        "network_id": network["id"],
        "tenant_id": project,
        "project_id": project,
        "mac_address": mac,
        "admin_state_up": True,
        "fixed_ips": fixed_ips,
        "device_id": "",
        "device_owner": "",
        "binding:host_id": "",
        "binding:vnic_type": "normal",
        "binding:profile": {},
        "security_groups": [],
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "description": "",
        "port_security_enabled": port_security,
        "ip_allocation": "immediate",
        "revision_number": 1,
        "created_at": now,
        "updated_at": now,
    }
    port.update(attrs)
    port.update(_binding_state(port))
    try:
        port = await store.create("ports", port)
    except BaseException:
        await _release(store, port_id, fixed_ips)
        raise
    call.vars["port"] = port
    return Reply(201, {"port": port})


@behaviour("network.update_port")
async def update_port(call: Call) -> Reply:
    """PUT /v2.0/ports/{id} (nova binds a port here); leaves `call.vars["port"]`."""
    auth = call.require_auth()
    store = _store(call)
    port_id = call.path_params.get("port_id", "")
    port = await _visible_port(call, auth, port_id)
    attrs = _parse_body(call, "port", PORT_ATTRS, PORT_READ_ONLY, create=False)
    _require_owner(port, auth, "rule:update_port")
    if "mac_address" in attrs and attrs["mac_address"] != port["mac_address"]:
        if not auth.is_admin:
            raise _policy_denied("rule:update_port and rule:update_port:mac_address")
        if port.get("binding:host_id") and attrs.get("binding:host_id", "x"):
            raise Conflict(
                f"Unable to complete operation on port {port_id}, port is already "
                "bound, port type: ovs, old_mac "
                f"{port['mac_address']}, new_mac {attrs['mac_address']}.",
                kind="PortBound",
            )
        await _check_mac(store, port["network_id"], attrs["mac_address"], port_id)
    security = attrs.get("port_security_enabled", port.get("port_security_enabled", True))
    if attrs.get("security_groups", port.get("security_groups")) and not security:
        raise Conflict(
            "Port has security group associated. Cannot disable port security or "
            "ip address until security group is removed",
            kind="PortSecurityAndIPRequiredForSecurityGroups",
        )
    added: list[Doc] = []
    removed: list[Doc] = []
    if "fixed_ips" in attrs:
        network = await store.require("networks", port["network_id"], "Network")
        subnets = await store.list("subnets", {"network_id": network["id"]})
        current = list(port.get("fixed_ips") or [])
        kept: list[Doc] = []
        to_allocate: list[Doc] = []
        for req in _resolve_fixed_ips(network, subnets, attrs["fixed_ips"]):
            have = [
                f
                for f in current
                if f["subnet_id"] == req["subnet"]["id"]
                and (req["ip_address"] is None or f["ip_address"] == req["ip_address"])
                and f not in kept
            ]
            if have:  # an address the port already holds on that subnet stays
                kept.append(have[0])
            else:
                to_allocate.append(req)
        added = await _allocate_all(store, network, port_id, to_allocate)
        removed = [f for f in current if f not in kept]
        attrs["fixed_ips"] = kept + added

    def change(doc: Doc) -> Doc:
        merged = {**doc, **attrs}
        return {**attrs, **_binding_state(merged)}

    try:
        new = await _update_cas(store, "ports", port_id, change)
    except BaseException:
        await _release(store, port_id, added)
        raise
    if new is None:
        await _release(store, port_id, added)
        raise NotFound(f"Port {port_id} could not be found.", kind="PortNotFound")
    await _release(store, port_id, removed)
    call.vars["port"] = new
    # No sequence gives updatePort agent steps, but agents must hear of a (re)binding, as
    # neutron's notifier tells them of every port update.
    try:
        await send(call, "port_update", await _port_update_payload(store, new))
    except (BusError, InvalidMessage) as exc:
        logger.error("could not tell the L2 agents about port %s: %s", port_id, exc)
    return Reply(200, {"port": new})


@behaviour("network.delete_port")
async def delete_port(call: Call) -> Reply:
    """DELETE /v2.0/ports/{id}: frees the addresses; leaves `call.vars["port"]`."""
    auth = call.require_auth()
    store = _store(call)
    port_id = call.path_params.get("port_id", "")
    port = await _visible_port(call, auth, port_id)
    _require_owner(port, auth, "rule:delete_port")
    await _release_port(store, port)
    call.vars["port"] = port
    return Reply(204, None)


# -- steps: neutron-server tells its agents ------------------------------------------------------

_PORT_MESSAGE_FIELDS = (
    "id",
    "network_id",
    "mac_address",
    "device_id",
    "device_owner",
    "binding:host_id",
)


def _port_payload(port: Doc) -> Doc:
    """The port as the messages' `Port` type carries it (no nulls, only its fields)."""
    out: Doc = {k: port[k] for k in _PORT_MESSAGE_FIELDS if isinstance(port.get(k), str)}
    out["fixed_ips"] = [
        {"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]}
        for f in port.get("fixed_ips") or []
    ]
    return out


def _flow_port(ix: Interaction) -> Doc:
    port = ix.vars.get("port")
    if not isinstance(port, dict) or "id" not in port:
        raise StepFailed("no port in this flow: the port operation did not leave one", code=500)
    return port


@behaviour("network.notify_dhcp_port_create", via=("amqp-cast",))
async def notify_dhcp_port_create(ix: Interaction) -> None:
    await ix.invoke({"port": _port_payload(_flow_port(ix))})


async def _port_update_payload(store: Store, port: Doc) -> Doc:
    net = await store.get("networks", port["network_id"]) or {}
    segment = net.get("provider:segmentation_id")
    return {
        "port": _port_payload(port),
        "network_type": str(net.get("provider:network_type") or DEFAULT_NETWORK_TYPE),
        "segmentation_id": segment if isinstance(segment, int) else None,
    }


@behaviour("network.notify_port_update", via=("amqp-cast",))
async def notify_port_update(ix: Interaction) -> None:
    await ix.invoke(await _port_update_payload(ix.rt.require_store(), _flow_port(ix)))


@behaviour("network.notify_dhcp_port_delete", via=("amqp-cast",))
async def notify_dhcp_port_delete(ix: Interaction) -> None:
    port = _flow_port(ix)
    await ix.invoke({"port_id": port["id"], "network_id": port["network_id"]})


@behaviour("network.notify_port_delete", via=("amqp-cast",))
async def notify_port_delete(ix: Interaction) -> None:
    await ix.invoke({"port_id": _flow_port(ix)["id"]})


# -- agents ----------------------------------------------------------------------------------------


def _read_json(path: Path) -> Doc:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        logger.warning("ignoring unreadable agent state %s", path)
        return {}
    return data if isinstance(data, dict) else {}


def _safe_component(value: Any, what: str) -> str:
    text = str(value)
    if not _SAFE_ID.match(text) or text in (".", ".."):
        raise ValueError(f"{what} {text!r} cannot name a directory")
    return text


def dhcp_host_line(mac: str, ip: str) -> str:
    """One dnsmasq dhcp-hostsfile line: `MAC,host-<ip with dashes>,IP` ([IP] for IPv6)."""
    name = "host-" + ip.replace(".", "-").replace(":", "-")
    shown = f"[{ip}]" if ":" in ip else ip
    return f"{mac},{name},{shown}"


def _dhcp_dir(call: Call, network_id: Any) -> Path:
    return call.rt.data_dir / "dhcp" / _safe_component(network_id, "network id")


def _hosts_text(ports: Doc) -> str:
    lines = [
        dhcp_host_line(p["mac_address"], f["ip_address"])
        for p in ports.values()
        for f in p.get("fixed_ips", [])
    ]
    return "".join(line + "\n" for line in lines)


def _dhcp_state(call: Call, network_id: Any) -> StateFile:
    directory = _dhcp_dir(call, network_id)
    state = state_file(call.rt.shared, directory / "ports.json")
    state.also_write(directory / "host", _hosts_text)
    return state


@behaviour("network.dhcp_port_create")
async def dhcp_port_create(call: Call) -> None:
    port = call.payload["port"]
    state = _dhcp_state(call, port["network_id"])
    state.data[port["id"]] = {
        "mac_address": port["mac_address"],
        "fixed_ips": list(port.get("fixed_ips") or []),
    }
    state.changed()


@behaviour("network.dhcp_port_delete")
async def dhcp_port_delete(call: Call) -> None:
    state = _dhcp_state(call, call.payload["network_id"])
    state.data.pop(call.payload["port_id"], None)
    state.changed()


def _l2_file(call: Call) -> Path:
    return call.rt.data_dir / "l2" / f"{_safe_component(call.rt.host, 'host')}.json"


def _l2_state(call: Call) -> tuple[StateFile, Doc]:
    state = state_file(call.rt.shared, _l2_file(call))
    state.data["host"] = call.rt.host
    ports = state.data.get("ports")
    if not isinstance(ports, dict):
        ports = state.data["ports"] = {}
    return state, ports


@behaviour("network.l2_port_update")
async def l2_port_update(call: Call) -> None:
    port = call.payload["port"]
    state, ports = _l2_state(call)
    if port.get("binding:host_id") != call.rt.host:
        if port["id"] in ports:  # bound elsewhere now: unwire it here
            del ports[port["id"]]
            state.changed()
        return
    ports[port["id"]] = {
        "network_id": port["network_id"],
        "mac_address": port["mac_address"],
        "device_id": port.get("device_id", ""),
        "fixed_ips": list(port.get("fixed_ips") or []),
        "network_type": call.payload.get("network_type"),
        "segmentation_id": call.payload.get("segmentation_id"),
        "status": "wired",
        "wired_at": utcnow(),
    }
    state.changed()


@behaviour("network.l2_port_delete")
async def l2_port_delete(call: Call) -> None:
    state, ports = _l2_state(call)
    if ports.pop(call.payload["port_id"], None) is not None:
        state.changed()


# -- agents' resync (start-up): their state from neutron's database ---------------------------------


@behaviour("network.agent_ports")
async def agent_ports(call: Call) -> Doc:
    """get_agent_ports: every port (or those bound to `host`) as the agents' messages carry it."""
    store = _store(call)
    host = call.payload.get("host")
    networks = {n["id"]: n for n in await store.list("networks")}
    out = []
    for port in await store.list("ports"):
        if host is not None and port.get("binding:host_id") != host:
            continue
        net = networks.get(port.get("network_id")) or {}
        segment = net.get("provider:segmentation_id")
        out.append(
            {
                "port": _port_payload(port),
                "network_type": str(net.get("provider:network_type") or DEFAULT_NETWORK_TYPE),
                "segmentation_id": segment if isinstance(segment, int) else None,
            }
        )
    return {"ports": out}


async def _resync(
    rt: ServiceRuntime, host: str | None, apply: Callable[[Call, list[Doc]], Any], what: str
) -> None:
    """Ask neutron-server for the ports, then apply them; retried in the background (with
    backoff) while neutron-server is not answering yet (another process starting)."""

    async def once() -> None:
        call = Call(rt, "resync", "startup", f"req-{uuid.uuid4()}", f"req-{uuid.uuid4()}")
        reply = await send(call, "get_agent_ports", {"host": host} if host else {})
        await apply(call, list((reply or {}).get("ports") or []))

    try:
        await once()
        return
    except Exception as exc:
        logger.warning("%s resync failed (%s); retrying in the background", what, exc)

    async def retry() -> None:
        pause = 1.0
        while True:
            await asyncio.sleep(pause)
            try:
                await once()
                return
            except Exception as exc:
                logger.warning("%s resync failed again: %s", what, exc)
                pause = min(pause * 2, 30.0)

    rt.local[f"{what}.resync"] = asyncio.create_task(retry(), name=f"{what}-resync:{rt.host}")


def _dhcp_known(rt: ServiceRuntime) -> dict[str, str]:
    """Port -> network of the DHCP agent's files as they are (before the resync)."""
    known: dict[str, str] = {}
    for path in (rt.data_dir / "dhcp").glob("*/ports.json"):
        for port_id in _read_json(path):
            known[port_id] = path.parent.name
    return known


@behaviour("network.dhcp_resync")
async def dhcp_resync(rt: ServiceRuntime) -> None:
    """Startup: the DHCP agent's hosts files hold every port neutron has, and no other."""

    async def apply(call: Call, items: list[Doc]) -> None:
        stale = _dhcp_known(rt)
        for item in items:
            stale.pop(item["port"]["id"], None)
            await dhcp_port_create(replace(call, payload={"port": item["port"]}))
        for port_id, network_id in stale.items():
            await dhcp_port_delete(
                replace(call, payload={"port_id": port_id, "network_id": network_id})
            )

    await _resync(rt, None, apply, "dhcp-agent")


@behaviour("network.l2_resync")
async def l2_resync(rt: ServiceRuntime) -> None:
    """Startup: the L2 agent has wired every port bound to its host, and no other."""

    async def apply(call: Call, items: list[Doc]) -> None:
        _, wired = _l2_state(call)
        stale = set(wired)
        for item in items:
            stale.discard(item["port"]["id"])
            await l2_port_update(replace(call, payload=item))
        for port_id in stale:
            await l2_port_delete(replace(call, payload={"port_id": port_id}))

    await _resync(rt, rt.host, apply, "l2-agent")
