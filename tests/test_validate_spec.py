"""The real spec is valid and says what the issue requires of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from generator.cli import main
from generator.pipeline.validate import load_and_validate

from .conftest import REPO, SPEC


def test_real_spec_is_valid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["validate"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("spec/ is valid: ")
    for word in ("components", "operations", "messages", "steps"):
        assert word in out[0]


def _index() -> tuple[object, list[object]]:
    spec, diags = load_and_validate(SPEC)
    return spec, list(diags)


def test_no_diagnostics_on_real_spec() -> None:
    _, diags = _index()
    assert diags == []


REQUIRED_COMPONENTS = {
    "keystone",
    "nova-api",
    "nova-scheduler",
    "nova-conductor",
    "nova-compute",
    "glance-api",
    "swift-proxy",
    "neutron-server",
    "neutron-dhcp-agent",
    "neutron-l2-agent",
    "cinder-api",
    "cinder-scheduler",
    "cinder-volume",
    "dashboard",
    "cli",
    "queue",
    "keystone-db",
    "nova-db",
    "glance-db",
    "neutron-db",
    "cinder-db",
}


def test_spec_declares_every_component_the_deck_has() -> None:
    from generator.pipeline.build_ir import build_ir
    from generator.pipeline.load import load_spec

    spec, _ = load_spec(Path(SPEC))
    ir = build_ir(spec)
    names = {c.name for c in ir.components}
    assert names >= REQUIRED_COMPONENTS
    for c in ir.components:
        if c.kind != "actor":
            assert c.nodes, c.name
    apis = {a.name for a in ir.apis}
    assert apis == {"identity", "compute", "image", "object-store", "network", "block-storage"}
    drivers = {d.name: d for d in ir.hypervisors.drivers}
    assert set(drivers) >= {"fake", "libvirt", "qemu"}
    assert set(drivers["libvirt"].virt_types) == {"kvm", "qemu", "xen", "lxc"}
    methods = {m.name for m in ir.hypervisors.methods}
    assert methods >= {
        "spawn",
        "destroy",
        "get_power_state",
        "get_console_output",
        "attach_volume",
        "detach_volume",
        "plug_vifs",
        "get_available_resource",
        "list_instances",
    }
    roles = {n.role for n in ir.topology}
    assert roles == {"controller", "network", "storage", "compute"}


DECK_TITLES = [
    "Request VM provisioning via UI/CLI",
    "Validate auth data",
    "Send API request to nova-api",
    "Validate API token",
    "Process API request",
    "Publish provisioning request to queue; pick up provisioning request",
    "Schedule provisioning",
    "Start VM provisioning on compute node",
    "Start VM rendering via hypervisor",
    "Request VM image from Glance",
    "Get image URI from Glance",
    "Download image from Swift",
    "Configure network",
    "Allocate and associate network",
    "Request volume attachment",
]


def test_boot_vm_has_the_decks_fifteen_steps() -> None:
    from generator.pipeline.build_ir import build_ir
    from generator.pipeline.load import load_spec

    spec, _ = load_spec(Path(SPEC))
    ir = build_ir(spec)
    boot = next(s for s in ir.sequences if s.name == "boot-vm")
    assert [s.number for s in boot.steps] == list(range(1, 16))
    assert [s.title for s in boot.steps] == DECK_TITLES
    via = {s.number: s.main.via for s in boot.steps}
    assert via[1] == "user" and via[2] == "http" and via[5] == "sql"
    assert via[6] == "amqp-cast" and via[8] == "amqp-call" and via[9] == "native"
    assert {s.name for s in ir.sequences} >= {"boot-vm", "delete-vm"}


def test_resource_quota_and_query_names_are_one_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPECSTACK_QUOTAS and the engine name quotas and queries without their API: a name
    declared by two APIs' resource files is refused where the second one is."""
    import shutil

    shutil.copytree(SPEC, tmp_path / "spec")
    volumes = tmp_path / "spec" / "resources" / "block-storage.yaml"
    volumes.write_text(volumes.read_text().replace("  volume_limits:\n", "  limits:\n"))
    monkeypatch.chdir(tmp_path)
    assert main(["validate"]) == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    lines = volumes.read_text().splitlines()
    line = next(n for n, t in enumerate(lines, 1) if t == "  limits:") + 1  # its declaration
    where = f"spec/resources/block-storage.yaml:{line}:5"
    said = rf"spec/resources/compute\.yaml:\d+:5: query 'limits' is declared at {where} already"
    assert re.search(said, out), out


def test_glance_data_hooks_need_the_object_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Glance's records are the resource model's, its data stream is hooks: a spec whose
    object store is gone is refused where those hooks are named."""
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    comps = spec / "components.yaml"
    text = comps.read_text("utf-8")
    assert text.count("catalog: {type: object-store,") == 1
    comps.write_text(text.replace("catalog: {type: object-store,", "catalog: {type: objects,"))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    for hook in ("image.store_data", "image.delete_data"):
        assert f"behaviour '{hook}' needs an API of catalog type 'object-store'" in err
    assert err.count("resources/image.yaml:") == 2


def test_a_recovery_rule_needs_a_component_of_the_resources_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`states.recover` rules run by a component on the resource's table: one of another
    project, or an unknown one, is refused where it is named (with the known names), and
    so is an `of_host` that is not a field of the resource."""
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    compute = spec / "resources" / "compute.yaml"
    text = compute.read_text("utf-8")
    assert "        - by: nova-conductor\n" in text
    text = text.replace("        - by: nova-conductor\n", "        - by: neutron-server\n", 1)
    text = text.replace(
        "          hook: compute.discard_build\n", "          hook: compute.discard_builds\n"
    )
    assert "          of_host: host\n" in text
    text = text.replace("          of_host: host\n", "          of_host: hots\n", 1)
    compute.write_text(text.replace("send: stop_instance,", "send: stop_instances,"))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    lines = compute.read_text("utf-8").splitlines()

    def at(text: str) -> str:
        n = next(i for i, t in enumerate(lines, 1) if text in t)
        return f"resources/compute.yaml:{n}:"

    assert (
        f"{at('- by: neutron-server')}"
        in err.split("component 'neutron-server' cannot recover rows of this resource")[0]
    )
    assert "its database is neutron-db, the resource's nova-db" in err
    assert f"{at('compute.discard_builds')}" in err
    assert "unknown behaviour 'compute.discard_builds'; did you mean 'compute.discard_build'" in err
    assert "unknown message 'stop_instances'; did you mean 'stop_instance'" in err
    assert f"{at('of_host: hots')}" in err.split("'hots' is not a field; did you mean 'host'")[0]


def test_cinder_resource_keys_are_checked_where_they_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A field alias, an action's policy rule and quota, a list's all_rule: each name they
    use must be declared, and a wrong one is reported at its FILE:LINE:COL."""
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    volumes = spec / "resources" / "block-storage.yaml"
    text = volumes.read_text("utf-8")
    edits = {
        "display_name: {alias: name}": "display_name: {alias: nom}",
        "quotas: [gigabytes]": "quotas: [gigabites]",
        "policy: 'rule:volume_extension:volume_admin_actions:reset_status'": (
            "policy: 'rule:reset_anything'"
        ),
        "all_rule: 'rule:admin'": "all_rule: 'rule:admins'",
    }
    for old, new in edits.items():  # the first (the volume's) of each
        assert old in text, old
        text = text.replace(old, new, 1)
    volumes.write_text(text, "utf-8")
    lines = text.splitlines()

    def at(snippet: str) -> str:
        line = next(n for n, t in enumerate(lines, 1) if snippet in t)
        return f"resources/block-storage.yaml:{line}:"

    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{at('alias: nom')}" in err and "alias: 'nom' is not another field of volume" in err
    assert f"{at('quotas: [gigabites]')}" in err
    assert "unknown quota 'gigabites'; did you mean 'gigabytes'?" in err
    assert f"{at('rule:reset_anything')}" in err
    assert "rule:reset_anything is not a rule of spec/policy.yaml" in err
    assert f"{at('rule:admins')}" in err and "rule:admins is not a rule" in err

    # an operator the engine does not know is the schema's error, at the filter
    text = volumes.read_text("utf-8").replace("metadata: subset", "metadata: superset")
    volumes.write_text(text, "utf-8")
    lines = text.splitlines()
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert at("metadata: superset") in err and "subset" in err


def test_network_model_mistakes_are_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engine's neutron features are checked at validate time with FILE:LINE:COL: a
    `parent` without a `ref`, a delete rule's `key` that is no field, an `items` filter
    without keys."""
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    res = spec / "resources" / "network.yaml"
    text = res.read_text("utf-8")
    for old, new in (
        (
            '    parent: network_id\n    shared: "parent.shared',
            '    parent: name\n    shared: "parent.shared',
        ),
        ("          key: network_id\n", "          key: network\n"),
        ("          op: items\n          keys:", "          op: items\n          nokeys:"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    res.write_text(text.replace("          nokeys:", "          # no keys:"), "utf-8")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    lines = res.read_text("utf-8").splitlines()

    def where(snippet: str) -> str:
        line = next(n for n, t in enumerate(lines, 1) if snippet in t)
        return f"resources/network.yaml:{line}:"

    assert where("parent: name") + "13: parent: 'name' is not a field with a `ref`" in err
    assert where("key: network") + "16: 'network' is not a field of subnet" in err
    assert re.search(
        r"resources/network\.yaml:\d+:\d+: filter 'fixed_ips': op items needs `keys`", err
    )


def test_templates_and_relations_are_checked_where_they_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A template that is not CEL, a relation to an unknown resource and a relation's
    expression that does not compile are refused at their lines."""
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    compute = spec / "resources" / "compute.yaml"
    text = compute.read_text("utf-8")
    for old in ("      keypair: {resource: keypair,", "        id: doc.flavor_id\n"):
        assert text.count(old) == 1
    text = text.replace("      keypair: {resource: keypair,", "      keypair: {resource: keypairs,")
    text = text.replace("        id: doc.flavor_id\n", "        id: doc.flavor_id +\n")
    identity = spec / "resources" / "identity.yaml"
    itext = identity.read_text("utf-8")
    assert itext.count("        merge(doc, {'user_id': refs.user.id,") == 1
    itext = itext.replace(
        "        merge(doc, {'user_id': refs.user.id,",
        "        merge(doc, {'user_id' refs.user.id,",
    )
    compute.write_text(text)
    identity.write_text(itext)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err

    def at(path: Path, needle: str) -> str:
        lines = path.read_text("utf-8").splitlines()
        n = next(i for i, t in enumerate(lines, 1) if needle in t)
        return f"resources/{path.name}:{n}:"

    assert f"{at(compute, 'keypair: {resource: keypairs,')}" in err
    assert "unknown resource 'keypairs'" in err
    assert f"{at(compute, 'id: doc.flavor_id +')}" in err
    assert f"{at(identity, '      row: >-')}12: CEL expression (line 1, column 24)" in err
    assert err.count("CEL expression") == 2


def test_a_many_relation_finds_rows_by_match_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`many` lists every row that matches: a relation by `id` cannot be `many`."""
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    network = spec / "resources" / "network.yaml"
    text = network.read_text("utf-8")
    old = "      subnets: {resource: subnet, many: true, match: {network_id: doc.network_id}}"
    assert text.count(old) == 1
    network.write_text(
        text.replace(old, "      subnets: {resource: subnet, many: true, id: doc.id}")
    )
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"resources/network\.yaml:\d+:\d+: .*missing required property 'match'", err)


def test_a_refusal_given_a_request_key_is_checked_where_it_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule's `given` is a key of the request (a name), and its condition need not test
    `has(changes.KEY)` again: both are reported at their FILE:LINE:COL."""
    import shutil

    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    image = spec / "resources" / "image.yaml"
    text = image.read_text("utf-8")
    old = "        given: visibility\n        when: \"changes.visibility == 'public'\""
    assert text.count(old) == 1
    twice = '        given: visibility\n        when: "has(changes.visibility) && true"'
    image.write_text(text.replace(old, twice), "utf-8")

    def at(path: Path, snippet: str) -> str:
        lines = path.read_text("utf-8").splitlines()
        line = next(n for n, t in enumerate(lines, 1) if snippet in t)
        return f"resources/{path.name}:{line}:"

    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert at(image, "given: visibility") + "16: `given: visibility` already applies" in err
    assert "when has(changes.visibility); the condition need not test it again" in err

    # not a name: the schema's error, at the key
    block = spec / "resources" / "block-storage.yaml"
    text = block.read_text("utf-8")
    assert "given: multiattach\n" in text
    block.write_text(text.replace("given: multiattach\n", "given: multi-attach\n", 1), "utf-8")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert at(block, "given: multi-attach") + "16: " in err
    assert 'refuse[16].given: "multi-attach" does not match ^[A-Za-z_][A-Za-z0-9_]*$' in err
