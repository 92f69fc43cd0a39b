"""`openstack availability zone list` through the real CLI: nova's zones (of its compute
hosts) and cinder's (of its volume back ends), each "available"; `--long` as an
administrator shows nova's hosts and their nova-compute service."""

from __future__ import annotations

from .conftest import Stack


def test_availability_zone_list_names_compute_and_volume_zones(stack: Stack) -> None:
    compute = stack.json("availability", "zone", "list", "--compute")
    assert compute == [{"Zone Name": "nova", "Zone Status": "available"}]
    volume = stack.run("availability", "zone", "list", "--volume", "-f", "json")
    assert "not supported" not in volume.stderr  # cinder answers os-availability-zone
    assert stack.json("availability", "zone", "list", "--volume") == [
        {"Zone Name": "nova", "Zone Status": "available"}
    ]
    detailed = stack.json(
        "availability", "zone", "list", "--long", "--compute", cloud="specstack-admin"
    )
    services = stack.json("compute", "service", "list", cloud="specstack-admin")
    computes = sorted(r["Host"] for r in services if r["Binary"] == "nova-compute")
    assert computes and sorted(r["Host Name"] for r in detailed) == computes
    for row in detailed:
        assert row["Zone Name"] == "nova" and row["Service Name"] == "nova-compute"
        assert row["Service Status"].startswith("enabled :-) ")
