"""Swift through the real `openstack` CLI: glance's image data in the service project's
`glance` container, and swift's error answers and transaction ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Stack, endpoint


@pytest.fixture(scope="module")
def catalog(stack: Stack) -> list[dict[str, Any]]:
    """`openstack catalog list` of the demo cloud."""
    entries: list[dict[str, Any]] = stack.json("catalog", "list")
    return entries


def test_object_list_glance(stack: Stack) -> None:
    """Glance keeps image data in the `glance` container of the service project's account.

    `clouds.yaml` has a `specstack-service` cloud (the operator scoped to the service
    project), whose object-store endpoint is that account: `object list glance` there
    lists every image's data, named by image id, with the image's size. The admin
    project's own account has no such container, as with a real swift-backed glance.
    """
    image = stack.json("image", "show", "demo-image", cloud="specstack-admin")
    service_project = stack.json("token", "issue", cloud="specstack-service")["project_id"]
    location = image["properties"]["direct_url"]
    assert location == f"swift://AUTH_{service_project}/glance/{image['id']}"
    objects = {
        o["Name"]: o
        for o in stack.json("object", "list", "glance", "--long", cloud="specstack-service")
    }
    assert image["id"] in objects
    assert objects[image["id"]]["Bytes"] == image["size"]
    listed = stack.run("object", "list", "glance", cloud="specstack-admin", check=False)
    assert listed.returncode != 0 and "Not Found" in listed.stderr


def test_container_errors_and_transaction_ids(stack: Stack, catalog: list[dict[str, Any]]) -> None:
    """swift's answers over the wire: X-Trans-Id repeats the request id on every answer,
    errors are short HTML pages, and a HEAD's error carries none."""
    auth = {"X-Auth-Token": stack.json("token", "issue")["id"]}
    account = endpoint(catalog, "object-store")
    stack.run("container", "create", "wire-box")
    stack.run("object", "create", "wire-box", str(Path(__file__)), "--name", "f.py")
    shown = stack.json("container", "show", "wire-box")
    assert shown["object_count"] == "1" and shown["container"] == "wire-box"
    full = stack.run("container", "delete", "wire-box", check=False)
    assert full.returncode != 0 and "Conflict" in full.stderr
    listed = httpx.get(f"{account}/wire-box", headers=auth)
    assert listed.status_code == 200 and listed.text == "f.py\n"
    assert listed.headers["x-trans-id"] == listed.headers["x-openstack-request-id"]
    missing = httpx.get(f"{account}/no-such-box", headers=auth)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert missing.text == "<html><h1>Not Found</h1><p>The resource could not be found.</p></html>"
    assert missing.headers["x-trans-id"] == missing.headers["x-openstack-request-id"]
    head = httpx.head(f"{account}/no-such-box", headers=auth)
    assert head.status_code == 404 and head.content == b"" and head.headers["x-trans-id"]
    bad = httpx.get(f"{account}/wire-box/f.py", headers={**auth, "Range": "bytes=99999-"})
    assert bad.status_code == 416 and "Requested Range Not Satisfiable" in bad.text
    stack.run("object", "delete", "wire-box", "f.py")
    stack.run("container", "delete", "wire-box")


# -- openstacksdk --------------------------------------------------------------------------
