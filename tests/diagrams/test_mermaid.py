"""The Mermaid diagrams parse and render in Mermaid 11 itself (in headless chromium), with
every step title shown as written; the README embeds boot-vm's diagram as generated."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from generator.commands.flow_diagrams import compare, env, load_ir, observed
from generator.pipeline.render.diagrams import render_sequence

from ..conftest import REPO
from .conftest import MERMAID_JS, Run, browser, need

DIAGRAMS = REPO / "generated" / "diagrams"
README_BLOCK = re.compile(
    r"<!-- diagram: generated/diagrams/boot-vm.mmd -->\n```mermaid\n(.*?)```", re.S
)


def _render_all(sources: dict[str, str], tmp_path: Path) -> dict[str, dict[str, Any]]:
    need("mermaid.min.js", MERMAID_JS.is_file(), f"{MERMAID_JS}: bash .ci/diagrams.sh fetches it")
    page_file = tmp_path / "mermaid.html"
    page_file.write_text(
        f'<!DOCTYPE html><html><body><script src="{MERMAID_JS.as_uri()}"></script></body></html>'
    )
    errors: list[str] = []
    out: dict[str, dict[str, Any]] = {}
    with browser(tmp_path / "profile") as ctx:
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_file.as_uri())
        page.evaluate("mermaid.initialize({startOnLoad: false, securityLevel: 'strict'})")
        for i, (name, text) in enumerate(sources.items()):
            out[name] = page.evaluate(
                """async ([id, text]) => {
                    try {
                        const {svg} = await mermaid.render(id, text);
                        const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
                        const texts = [...doc.querySelectorAll('text')].map(t => t.textContent);
                        return {ok: true, texts};
                    } catch (e) { return {ok: false, error: String(e)}; }
                }""",
                [f"d{i}", text],
            )
    assert errors == []
    return out


def test_generated_mermaid_renders_in_mermaid(stack_run: Run, tmp_path: Path) -> None:
    ir = load_ir(REPO / "generated" / "ir.json")
    sources = {p.name: p.read_text() for p in sorted(DIAGRAMS.glob("*.mmd"))}
    events = stack_run.events()
    sources["observed"] = render_sequence(env(), observed(ir, events), "mermaid")
    broken = [e for e in events if e["step"] not in ("9", "10")]
    sources["diff"] = render_sequence(env(), compare(ir, broken).diagram, "mermaid")
    rendered = _render_all(sources, tmp_path)
    for name, result in rendered.items():
        assert result["ok"], f"{name}: {result.get('error')}"
    for seq in ir.sequences:
        texts = " ".join(rendered[f"{seq.name}.mmd"]["texts"])
        for st in seq.steps:
            assert (
                f"{st.number}. {st.title}".replace("<", "\u2039")
                .replace(">", "\u203a")
                .replace(";", "\u037e")
                in texts
            ), st.title
    diff = " ".join(rendered["diff"]["texts"])
    assert "MISSING: no trace event" in diff and "9. Start VM rendering via hypervisor" in diff
    assert "ms)" in " ".join(rendered["observed"]["texts"])


def test_readme_embeds_the_generated_boot_vm_diagram() -> None:
    readme = (REPO / "README.md").read_text()
    m = README_BLOCK.search(readme)
    assert m, "README.md has no boot-vm mermaid block"
    assert m.group(1) == (DIAGRAMS / "boot-vm.mmd").read_text(), (
        "README.md's boot-vm diagram is stale: copy generated/diagrams/boot-vm.mmd into it"
    )
    for svg in ("boot-vm.svg", "delete-vm.svg", "topology.svg"):
        assert f"generated/diagrams/{svg}" in readme
