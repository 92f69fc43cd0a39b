"""SVGs of the PlantUML diagrams, rendered only when their source changed.

An SVG's bytes depend on the PlantUML version and the fonts of the machine that
rendered it, so the drift check compares each SVG by its source: the SHA-256 of
the `.puml` it was rendered from is recorded in `diagrams/svg-sources.json`.
An SVG is reused (from the output directory, or from a cache keyed by that hash)
when its source is unchanged; all the others are rendered in one PlantUML run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from generator.pipeline.render.base import OutputFile
from generator.pipeline.render.diagrams import sources_of

RECORD = "diagrams/svg-sources.json"
PLANTUML_ENV = "SPECSTACK_PLANTUML"  # the command to run PlantUML, e.g. "java -jar plantuml.jar"
#: What PlantUML draws instead of a diagram when it cannot lay one out.
_BROKEN = ("Cannot find Graphviz", "Dot Executable:", "Syntax Error?")


class RenderError(Exception):
    pass


@dataclass
class SvgOutcome:
    files: list[OutputFile] = field(default_factory=list)
    rendered: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # kept from before: their source changed
    warnings: list[str] = field(default_factory=list)
    no_plantuml: bool = False  # the stale ones were not tried: PlantUML is not installed


#: Ends the manifest's inputs when SVGs were left stale because PlantUML is not installed:
#: the next run on a machine still without it is a no-op (it could not draw them either),
#: while once PlantUML is there the inputs no longer match and the SVGs are drawn.
NO_PLANTUML = ":svgs-stale:no-plantuml"


#: Raised when what is done to PlantUML's output changes, so that every SVG is drawn again.
SVG_FORMAT = 2


def source_digest(text: str) -> str:
    """What an SVG is recorded by: its PlantUML source (and how its output is kept)."""
    import hashlib

    return hashlib.sha256(f"svg-format {SVG_FORMAT}\n{text}".encode()).hexdigest()


def plantuml_command() -> list[str] | None:
    """How to run PlantUML here, or None when it is not installed."""
    configured = os.environ.get(PLANTUML_ENV)
    if configured is not None:
        return configured.split() or None
    found = shutil.which("plantuml")
    return [found] if found else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specstack" / "svg"


def _cache_get(digest: str) -> str | None:
    try:
        return (cache_dir() / f"{digest}.svg").read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _cache_put(digest: str, svg: str) -> None:
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{digest}.{os.getpid()}.tmp"
        tmp.write_bytes(svg.encode("utf-8"))
        os.replace(tmp, d / f"{digest}.svg")
    except OSError:
        pass  # a cache that cannot be written only costs a render next time


def render(sources: dict[str, str], command: list[str] | None = None) -> dict[str, str]:
    """Render PlantUML `sources` (by SVG name) to SVG text, in one PlantUML process."""
    cmd = command or plantuml_command()
    if cmd is None:
        raise RenderError(
            "plantuml is not installed (Debian: apt-get install plantuml graphviz), "
            f"or set {PLANTUML_ENV}"
        )
    if not sources:
        return {}
    with tempfile.TemporaryDirectory(prefix="specstack-plantuml-") as tmp:
        names: dict[str, Path] = {}
        for i, (svg, text) in enumerate(sorted(sources.items())):
            p = Path(tmp) / f"d{i}.puml"  # flat names: PlantUML writes d{i}.svg beside it
            p.write_text(text, encoding="utf-8")
            names[svg] = p
        proc = subprocess.run(
            [*cmd, "-tsvg", "-nometadata", "-charset", "UTF-8", *map(str, names.values())],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        out: dict[str, str] = {}
        for svg, p in names.items():
            made = p.with_suffix(".svg")
            if not made.is_file():
                raise RenderError(
                    f"plantuml made no SVG for {svg} (exit {proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[:500]}"
                )
            text = made.read_bytes().decode("utf-8")
            broken = next((b for b in _BROKEN if b in text), None)
            if broken:
                raise RenderError(
                    f"plantuml could not draw {svg}: {broken!r} (is graphviz installed?)"
                )
            out[svg] = _with_header(text, sources[svg])
        if proc.returncode != 0:
            raise RenderError(
                f"plantuml failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}"
            )
        return out


def _with_header(svg: str, source: str) -> str:
    """The SVG with the source's "Generated by" lines as a comment after the XML prolog."""
    lines = [ln[1:].strip() for ln in source.splitlines()[:2] if ln.startswith("'")]
    if not lines:
        return svg
    comment = "<!-- " + " ".join(lines).replace("--", "-") + " -->"
    end = svg.find("?>") + 2 if svg.startswith("<?xml") else 0
    return svg[:end] + comment + svg[end:]


def _recorded(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / RECORD).read_text("utf-8"))
        svgs = data["svgs"]
        return {str(k): str(v) for k, v in svgs.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _untouched(out: Path, rel: str, manifest: dict[str, object] | None) -> str | None:
    """The SVG as `generate` last wrote it, or None if it is gone or was edited since."""
    from generator.pipeline.output import sha256

    files = manifest.get("files") if manifest else None
    try:
        data = (out / rel).read_bytes()
    except OSError:
        return None
    if not isinstance(files, dict) or files.get(rel) != sha256(data):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def svg_outputs(
    files: Iterable[OutputFile], out: Path, *, check: bool, source: str = "spec/"
) -> SvgOutcome:
    """The SVG files for the PlantUML sources among `files`, and the record of their sources.

    With `check`, nothing is rendered: an SVG whose source changed stands in as a
    placeholder, so the comparison reports it.
    """
    from generator.pipeline.output import read_manifest

    sources = sources_of(files)
    want = {svg: source_digest(text) for svg, text in sources.items()}
    recorded = _recorded(out)
    manifest = read_manifest(out)
    result = SvgOutcome()
    svgs: dict[str, str] = {}
    record: dict[str, str] = {}
    todo: dict[str, str] = {}
    for svg, digest in want.items():
        have = _untouched(out, svg, manifest) if recorded.get(svg) == digest else None
        if have is None and not check:
            have = _cache_get(digest)
        if have is not None:
            svgs[svg], record[svg] = have, digest
            if not check:
                _cache_put(digest, have)
        else:
            todo[svg] = sources[svg]
    if todo and check:
        for svg in todo:
            svgs[svg] = f"<!-- {svg}: its source changed; run `specstack generate` -->\n"
            record[svg] = want[svg]
    elif todo:
        result.no_plantuml = plantuml_command() is None
        try:
            made = render(todo)
        except RenderError as exc:
            made = {}
            result.warnings.append(
                f"diagrams: {len(todo)} SVG(s) not rendered ({', '.join(sorted(todo))}): {exc}; "
                "everything else was generated; `specstack generate --check` reports them "
                "until they are rendered"
            )
        for svg, text in made.items():
            svgs[svg], record[svg] = text, want[svg]
            _cache_put(want[svg], text)
            result.rendered.append(svg)
        for svg in todo:
            if svg in made:
                continue
            result.stale.append(svg)
            old = _untouched(out, svg, manifest)
            if old is not None:  # keep the old picture, recorded as drawn from its old source
                svgs[svg], record[svg] = old, recorded.get(svg, "")
    result.files = [OutputFile(svg, text) for svg, text in sorted(svgs.items())]
    body = {
        "$generated": {"by": "specstack", "from": source},
        "about": "the digest of the PlantUML source each SVG was rendered from "
        "(generator.pipeline.render.plantuml.source_digest); the drift check compares SVGs by these",
        "svgs": dict(sorted(record.items())),
    }
    result.files.append(OutputFile(RECORD, json.dumps(body, indent=2) + "\n"))
    return result
