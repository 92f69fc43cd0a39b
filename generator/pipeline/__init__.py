"""load -> validate -> IR -> render -> write: the `generate` and `validate` commands' core."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import generator
import specstack_runtime
from generator.pipeline.cache import dist_version
from generator.pipeline.diagnostics import Diagnostic

if TYPE_CHECKING:
    from collections.abc import Callable

    from generator.pipeline.render.base import OutputFile

REPO_ROOT = Path(generator.__file__).resolve().parent.parent
DEFAULT_TEMPLATES = REPO_ROOT / "templates"


@dataclass
class GenerateResult:
    diagnostics: list[Diagnostic] = field(default_factory=list)
    status: str = "written"  # written | unchanged | invalid | drift | clean
    files: int = 0
    drift: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def generator_id() -> str:
    return f"specstack {generator.__version__}"


#: The runtime's modules and data that generation imports or reads (the IR's models, the
#: policy and CEL checks validation runs, the behaviour catalog): a change elsewhere in the
#: runtime never changes generated/. tests/test_generate.py checks the list is whole.
RUNTIME_INPUTS = (
    "__init__.py",
    "behaviours/catalog.json",
    "celcalls.py",
    "celops.py",
    "celpython.py",
    "celwire.py",
    "context.py",
    "errors.py",
    "expr.py",
    "exprcache.py",
    "exprreads.py",
    "ir.py",
    "ir_deploy.py",
    "ir_fields.py",
    "ir_node.py",
    "ir_queries.py",
    "ir_records.py",
    "patterns.py",
    "policy.py",
    "registry.py",
    "resources/__init__.py",
    "resources/headerfields.py",
)


def fingerprint(spec_dir: Path, templates: Path, spec_label: str) -> str:
    """A hash of everything the output depends on: spec, templates, the generator's pipeline
    and the runtime modules it reads, tool versions (not the CLI, bench or other commands)."""
    h = hashlib.sha256()
    h.update(generator_id().encode())
    h.update(spec_label.encode())
    for dist in ("datamodel-code-generator", "ruff", "pydantic"):
        h.update(f"{dist}={dist_version(dist)}".encode())
    pipeline = Path(__file__).resolve().parent
    runtime = Path(specstack_runtime.__file__).resolve().parent
    groups = (
        ("spec", spec_dir, sorted(p for p in spec_dir.rglob("*.yaml") if p.is_file())),
        ("templates", templates, sorted(p for p in templates.rglob("*") if p.is_file())),
        ("generator", pipeline, sorted({*pipeline.rglob("*.py"), *pipeline.rglob("*.json")})),
        ("specstack_runtime", runtime, [runtime / rel for rel in RUNTIME_INPUTS]),
    )
    for label, base, paths in groups:
        for p in paths:
            rel = p.relative_to(base).as_posix()
            if "__pycache__" in rel:
                continue
            h.update(f"\0{label}/{rel}\0".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def render_all(
    spec_dir: Path,
    templates: Path,
    spec_label: str,
    emit: Callable[[list[OutputFile]], None],
) -> list[Diagnostic]:
    """Validate and render the spec, handing `emit` each target's files.

    The files are only meant to be used when no diagnostics come back.
    """
    from generator.pipeline.build_ir import build_ir
    from generator.pipeline.render import TARGETS, RenderContext, template_env
    from generator.pipeline.validate import load_and_validate

    spec, diags = load_and_validate(spec_dir)
    if diags:
        return diags
    ir = build_ir(spec)
    ctx = RenderContext(spec=spec, spec_label=spec_label, templates=template_env(templates))
    for target in TARGETS:
        emit(target.render(ir, ctx))
    return []


def generate(
    spec_dir: Path,
    out: Path,
    *,
    templates: Path = DEFAULT_TEMPLATES,
    check: bool = False,
    force: bool = False,
    spec_label: str = "spec",
) -> GenerateResult:
    """Generate `out` from `spec_dir`, or with `check` report how `out` differs."""
    from generator.pipeline import output

    output.recover(out)
    inputs = fingerprint(spec_dir, templates, spec_label)
    if not force and _up_to_date(out, inputs, check):
        return GenerateResult(
            status="clean" if check else "unchanged", files=len(output.tree_files(out))
        )
    return _generate(spec_dir, out, templates, check, spec_label, inputs)


def _up_to_date(out: Path, inputs: str, check: bool) -> bool:
    """Nothing to do: `out` was made from these inputs, or from these inputs on a machine
    without PlantUML, as this one is (`--check` still reports the SVGs it could not draw)."""
    from generator.pipeline import output

    if output.up_to_date(out, inputs):
        return True
    from generator.pipeline.render.plantuml import NO_PLANTUML, plantuml_command

    return not check and plantuml_command() is None and output.up_to_date(out, inputs + NO_PLANTUML)


def _generate(
    spec_dir: Path,
    out: Path,
    templates: Path,
    check: bool,
    spec_label: str,
    inputs: str,
) -> GenerateResult:
    from generator.pipeline import output

    staging = output.Staging(out)
    try:
        diags = render_all(spec_dir, templates, spec_label, staging.add)
        if diags:
            return GenerateResult(diagnostics=diags, status="invalid")
        from generator.pipeline.render.plantuml import NO_PLANTUML, svg_outputs

        # SVGs are rendered only when their PlantUML source changed (and compared by source).
        svgs = svg_outputs(staging.files, out, check=check, source=f"{spec_label}/")
        staging.add(svgs.files)
        if svgs.stale:  # not rendered: the next run draws them, once it can
            inputs += NO_PLANTUML if svgs.no_plantuml else ":svgs-stale"
        count = staging.seal(inputs, generator_id(), f"{spec_label}/")
        if check:
            drift = output.compare_trees(staging.dir, out)
            return GenerateResult(
                status="clean" if drift.clean else "drift", files=count, drift=drift.lines()
            )
        output.swap_in(staging.dir, out)
        return GenerateResult(status="written", files=count, warnings=svgs.warnings)
    finally:
        staging.discard()
