"""The diagrams in generated/ come from the spec: every step, grouped by node, drift-checked."""

from __future__ import annotations

import hashlib
import html
import json
import shutil
from pathlib import Path

from generator.diagram_cmd import load_ir
from generator.render.diagrams import mmd_escape

from ..conftest import REPO
from .conftest import need_plantuml, specstack

DIAGRAMS = REPO / "generated" / "diagrams"

NEW_STEP = """    - number: 16
      title: Report the new server to the dashboard
      from: nova-api
      to: nova-db
      via: sql
      tables: [instances]
      summary: The dashboard reads the ACTIVE instance.
"""
FINAL = "  final: Instance ACTIVE and running.\n"


def test_every_declared_step_is_in_both_languages_and_the_svg() -> None:
    ir = load_ir(REPO / "generated" / "ir.json")
    assert ir.sequences
    for seq in ir.sequences:
        mmd = (DIAGRAMS / f"{seq.name}.mmd").read_text()
        puml = (DIAGRAMS / f"{seq.name}.puml").read_text()
        svg = (DIAGRAMS / f"{seq.name}.svg").read_text()
        for st in seq.steps:
            assert f"{st.number}. {mmd_escape(st.title)}" in mmd, st.title
            assert f"**{st.number}. {st.title}**" in puml, st.title
            assert html.escape(f"{st.number}. {st.title}", quote=False) in svg, st.title
            for i, _ in enumerate(st.then, 1):
                assert f": {st.number}.{i} " in mmd and f": {st.number}.{i} " in puml
        # participants sit in a box per topology node they run on
        for node in ir.topology:
            used = [
                c
                for c in node.components
                if any(
                    c in (it.source_component, it.target_component)
                    for st in seq.steps
                    for it in (st.main, *st.then)
                )
            ]
            if used:
                assert "box rgb(" in mmd and f" {node.title}\n" in mmd
                assert f'box "{node.title}"' in puml


def test_arrows_are_styled_by_communication_type() -> None:
    mmd = (DIAGRAMS / "boot-vm.mmd").read_text()
    puml = (DIAGRAMS / "boot-vm.puml").read_text()
    assert "cli->>keystone: 2. Validate auth data" in mmd  # HTTP: solid, filled head
    assert "nova_api--)nova_scheduler: 6." in mmd  # AMQP cast: dotted, open head
    assert "nova_compute-->>nova_conductor: 8." in mmd  # AMQP call: dotted, filled head
    assert "nova_api -[#1f6fb4]> keystone" in puml
    assert "nova_api -[#d9730d]->> nova_scheduler" in puml
    assert "nova_compute -[#c0392b]-> nova_conductor" in puml
    assert "nova_api -[#2e8b57]>> nova_db" in puml
    assert "nova_compute -[#7d3c98]>> hypervisor" in puml
    assert "legend" in puml and "AMQP cast" in mmd.split("Note over", 1)[1]


def test_topology_shows_nodes_components_and_communication_types() -> None:
    ir = load_ir(REPO / "generated" / "ir.json")
    puml = (DIAGRAMS / "topology.puml").read_text()
    svg = (DIAGRAMS / "topology.svg").read_text()
    for node in ir.topology:
        assert f'node "{node.title}' in puml
        for comp in node.components:
            assert f'"{comp}"' in puml and f">{comp}<" in svg
    for label in ("HTTP", "AMQP cast", "AMQP call", "SQL", "native API"):
        assert label in puml and label in svg


def test_svgs_are_recorded_by_the_hash_of_their_source() -> None:
    record = json.loads((DIAGRAMS / "svg-sources.json").read_text())["svgs"]
    assert set(record) == {f"diagrams/{p.stem}.svg" for p in DIAGRAMS.glob("*.puml")}
    for svg, digest in record.items():
        source = (REPO / "generated" / svg).with_suffix(".puml").read_bytes()
        assert hashlib.sha256(source).hexdigest() == digest


def _copy_repo(tmp_path: Path) -> Path:
    for d in ("spec", "templates", "generated"):
        shutil.copytree(REPO / d, tmp_path / d)
    return tmp_path


def test_a_new_step_appears_in_the_diagrams(tmp_path: Path) -> None:
    need_plantuml()
    root = _copy_repo(tmp_path)
    boot = root / "spec" / "sequences" / "boot-vm.yaml"
    boot.write_text(boot.read_text().replace(FINAL, NEW_STEP + FINAL))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    gen = specstack("generate", "--templates", "templates", cwd=root, env=env)
    assert gen.returncode == 0, gen.stderr
    assert "warning" not in gen.stderr
    out = root / "generated" / "diagrams"
    assert (
        "nova_api-)nova_db: 16. Report the new server to the dashboard"
        in (out / "boot-vm.mmd").read_text()
    )
    assert "**16. Report the new server to the dashboard**" in (out / "boot-vm.puml").read_text()
    svg = (out / "boot-vm.svg").read_text()
    assert "16. Report the new server to the dashboard" in svg
    assert svg != (DIAGRAMS / "boot-vm.svg").read_text()
    # the other SVGs did not change, so they were kept as they were
    assert (out / "delete-vm.svg").read_bytes() == (DIAGRAMS / "delete-vm.svg").read_bytes()
    check = specstack(
        "generate", "--templates", "templates", "--check", "--force", cwd=root, env=env
    )
    assert check.returncode == 0, check.stderr


def test_a_hand_edited_svg_is_drift_and_generate_restores_it(tmp_path: Path) -> None:
    root = _copy_repo(tmp_path)
    svg = root / "generated" / "diagrams" / "topology.svg"
    svg.write_text(svg.read_text().replace("Controller node", "Edited node"))
    check = specstack("generate", "--templates", "templates", "--check", cwd=root)
    assert check.returncode == 1
    assert "changed: diagrams/topology.svg" in check.stderr
    # the cache (or plantuml) gives back the picture of the unchanged source
    need_plantuml()
    gen = specstack(
        "generate",
        "--templates",
        "templates",
        cwd=root,
        env={"XDG_CACHE_HOME": str(tmp_path / "c")},
    )
    assert gen.returncode == 0, gen.stderr
    assert "Controller node" in svg.read_text()
    assert specstack("generate", "--templates", "templates", "--check", cwd=root).returncode == 0


def test_without_plantuml_generate_writes_the_rest_and_says_so(tmp_path: Path) -> None:
    root = _copy_repo(tmp_path)
    boot = root / "spec" / "sequences" / "boot-vm.yaml"
    boot.write_text(boot.read_text().replace(FINAL, NEW_STEP + FINAL))
    env = {"SPECSTACK_PLANTUML": "", "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    gen = specstack("generate", "--templates", "templates", cwd=root, env=env)
    assert gen.returncode == 0, gen.stderr
    assert "diagrams/boot-vm.svg" in gen.stderr and "plantuml is not installed" in gen.stderr
    assert (
        "16. Report the new server" in (root / "generated" / "diagrams" / "boot-vm.mmd").read_text()
    )
    # the stale SVG is not taken for current: the no-op path is off and --check reports it
    check = specstack("generate", "--templates", "templates", "--check", cwd=root, env=env)
    assert check.returncode == 1
    assert "changed: diagrams/boot-vm.svg" in check.stderr


def test_mermaid_text_is_escaped() -> None:
    assert mmd_escape("a; b <host> #1") == "a#59; b #lt;host#gt; #35;1"
    assert mmd_escape("x<br/>y") == "x<br/>y"
