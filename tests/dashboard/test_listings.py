"""The dashboard's tables come from the spec: each API's collection operations, their
columns from the answer's schema, their item and action operations; a collection added
to the spec appears with no dashboard code."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from specstack_runtime.dashboard.listings import Catalogue
from specstack_runtime.dashboard.paths import fill
from specstack_runtime.stackinfo import StackInfo

from ..conftest import REPO

GENERATED = REPO / "generated"


def catalogue() -> Catalogue:
    return Catalogue(StackInfo.load(GENERATED / "ir.json"), GENERATED / "openapi")


def test_the_cloud_s_collections_with_their_operations() -> None:
    found = {x.collection: x for x in catalogue().listings}
    for name in ("servers", "images", "flavors", "networks", "subnets", "ports", "volumes"):
        assert name in found, name
    servers = found["servers"]
    assert (servers.api, servers.catalog_type) == ("compute", "compute")
    assert servers.path == "/v2.1/servers/detail"  # the detailed variant
    assert servers.columns[:2] == ("name", "status") and servers.columns[-1] == "id"
    assert servers.show == servers.delete == "/v2.1/servers/{server_id}"
    assert [a.key for a in servers.actions] == [
        "os-start",
        "os-stop",
        "reboot",
        "os-getConsoleOutput",
        "pause",
        "unpause",
        "suspend",
        "resume",
        "lock",
        "unlock",
        "shelve",
        "shelveOffload",
        "unshelve",
        "confirmResize",
        "revertResize",
        "migrate",
    ]
    assert next(a for a in servers.actions if a.key == "os-stop").body is None
    # buttons named as the resource model's state machine names the actions
    labels = [a.label for a in servers.actions]
    assert labels == [
        "Start",
        "Stop",
        "Reboot",
        "Get console output",
        "Pause",
        "Unpause",
        "Suspend",
        "Resume",
        "Lock",
        "Unlock",
        "Shelve",
        "Shelve_offload",
        "Unshelve",
        "Confirmresize",
        "Revertresize",
        "Migrate",
    ]
    # a server's own collections: its volume attachments, its actions, its interfaces (ports)
    # and its security groups (an API the spec added shows with no dashboard code)
    assert [(p.collection, p.path) for p in servers.parts] == [
        ("volumeAttachments", "/v2.1/servers/{server_id}/os-volume_attachments"),
        ("instanceActions", "/v2.1/servers/{server_id}/os-instance-actions"),
        ("interfaceAttachments", "/v2.1/servers/{server_id}/os-interface"),
        ("security_groups", "/v2.1/servers/{server_id}/os-security-groups"),
    ]
    actions = servers.parts[1]  # the columns: the schema's first properties (no POST)
    assert actions.columns[:4] == ("action", "request_id", "start_time", "message")
    assert (actions.envelope, actions.remove) == (None, None)
    attachments = servers.parts[0]  # POST adds one ({"volumeAttachment": {"volumeId"}})
    assert (attachments.envelope, attachments.fields) == (
        "volumeAttachment",
        (("volumeId", "volumes"),),
    )
    assert attachments.remove == "/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}"
    assert attachments.remove_key == "volumeId"
    assert servers.parts[1].envelope is None and servers.parts[1].remove is None
    volumes = found["volumes"]
    assert fill(volumes.path, "p1") == "/v3/p1/volumes/detail"
    assert found["keypairs"].unwrap == "keypair"  # nova wraps each key pair
    assert "versions" not in found and "extensions" not in found  # not the cloud's resources


def test_a_collection_added_to_the_spec_appears(tmp_path: Path) -> None:
    ir = json.loads((GENERATED / "ir.json").read_text())
    shutil.copytree(GENERATED / "openapi", tmp_path / "openapi")
    doc_path = tmp_path / "openapi" / "compute.json"
    doc = json.loads(doc_path.read_text())
    doc["components"]["schemas"]["Widget"] = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "size": {"type": "integer"},
        },
    }
    doc["components"]["schemas"]["WidgetList"] = {
        "type": "object",
        "properties": {
            "widgets": {"type": "array", "items": {"$ref": "#/components/schemas/Widget"}}
        },
    }
    doc_path.write_text(json.dumps(doc))
    compute = next(a for a in ir["apis"] if a["name"] == "compute")
    op = copy.deepcopy(next(o for o in compute["operations"] if o["operation_id"] == "listFlavors"))
    op.update(operation_id="listWidgets", path="/v2.1/widgets", resource=None)
    op["responses"] = [
        {
            "status": "200",
            "description": "",
            "content_type": "application/json",
            "model": "WidgetList",
        }
    ]
    compute["operations"].append(op)
    (tmp_path / "ir.json").write_text(json.dumps(ir))

    found = Catalogue(StackInfo.load(tmp_path / "ir.json"), tmp_path / "openapi")
    widgets = next(x for x in found.listings if x.collection == "widgets")
    assert widgets.href == "/r/compute/widgets"
    assert widgets.columns == ("name", "size", "id")
    assert widgets.show is None and widgets.actions == ()
