"""Read the spec's YAML files, keeping the line and column of every node."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from generator.diagnostics import Diagnostic, Location

#: File kinds by their place in the spec directory.
SINGLE_FILES: dict[str, str] = {
    "stack.yaml": "stack",
    "components.yaml": "components",
    "topology.yaml": "topology",
    "messages.yaml": "messages",
    "hypervisors.yaml": "hypervisors",
}
GROUP_DIRS: dict[str, str] = {"sequences": "sequence", "apis": "openapi"}

PathElem = str | int


@dataclass(frozen=True)
class SpecFile:
    """One parsed file: `rel` is its path inside the spec, `shown` as reported."""

    rel: str
    shown: str
    kind: str
    data: Any
    raw: bytes

    @property
    def stem(self) -> str:
        return Path(self.rel).stem

    def locate(self, path: Sequence[PathElem], *, key: bool = False) -> Location:
        """Where the node at `path` starts; the deepest existing ancestor if it is absent.

        With `key=True` and a mapping key as the last element, point at the key
        rather than its value (used for "unknown property" style problems).
        """
        line, col = _position(self.data, path, key=key)
        return Location(self.shown, line + 1, col + 1)

    def at(self, path: Sequence[PathElem], message: str, *, key: bool = False) -> Diagnostic:
        return Diagnostic(self.locate(path, key=key), message)


def _position(node: Any, path: Sequence[PathElem], *, key: bool) -> tuple[int, int]:
    pos = (getattr(node.lc, "line", 0), getattr(node.lc, "col", 0)) if _has_lc(node) else (0, 0)
    for i, elem in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, CommentedMap) and elem in node:
            pos = node.lc.key(elem) if (last and key) else node.lc.value(elem)
            node = node[elem]
        elif isinstance(node, CommentedSeq) and isinstance(elem, int) and 0 <= elem < len(node):
            pos = node.lc.item(elem)
            node = node[elem]
        else:
            break
    return int(pos[0]), int(pos[1])


def _has_lc(node: Any) -> bool:
    return isinstance(node, CommentedMap | CommentedSeq)


@dataclass(frozen=True)
class LoadedSpec:
    root: Path
    files: tuple[SpecFile, ...]

    def of_kind(self, kind: str) -> Iterator[SpecFile]:
        return (f for f in self.files if f.kind == kind)

    def one(self, kind: str) -> SpecFile | None:
        return next(self.of_kind(kind), None)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def shown_path(root: Path, rel: str) -> str:
    """How a spec file is named in messages: the spec directory as given, then the file."""
    return (root / rel).as_posix()


def parse_file(root: Path, rel: str, kind: str) -> tuple[SpecFile | None, list[Diagnostic]]:
    shown = shown_path(root, rel)
    raw = (root / rel).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Diagnostic(Location(shown), f"not UTF-8 text: {exc.reason}")]
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        return None, [_yaml_problem(shown, exc)]
    if data is None:
        return None, [Diagnostic(Location(shown), "file is empty")]
    if not isinstance(data, CommentedMap):
        return None, [Diagnostic(Location(shown), "expected a mapping at the top of the file")]
    return SpecFile(rel=rel, shown=shown, kind=kind, data=data, raw=raw), []


def _yaml_problem(shown: str, exc: MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or "invalid YAML").strip()
    if "duplicate key" in (exc.problem or "") or type(exc).__name__ == "DuplicateKeyError":
        problem = _duplicate_key_message(exc)
    return Diagnostic(Location(shown, line, col), f"YAML: {problem}")


def _duplicate_key_message(exc: MarkedYAMLError) -> str:
    # ruamel phrases it as 'found duplicate key "x" with value ...'; keep the key only.
    text = exc.problem or ""
    start = text.find('"')
    end = text.find('"', start + 1)
    if start >= 0 and end > start:
        return f"duplicate key {text[start : end + 1]}"
    return "duplicate key"


def discover(root: Path) -> tuple[list[tuple[str, str]], list[Diagnostic]]:
    """The spec's files as (relative path, kind), and problems with the layout itself."""
    found: list[tuple[str, str]] = []
    diags: list[Diagnostic] = []
    if not root.is_dir():
        return [], [Diagnostic(Location(root.as_posix()), "spec directory not found")]
    for name, kind in SINGLE_FILES.items():
        if (root / name).is_file():
            found.append((name, kind))
        else:
            diags.append(Diagnostic(Location(shown_path(root, name)), "required file is missing"))
    for dirname, kind in GROUP_DIRS.items():
        files = sorted((root / dirname).glob("*.yaml")) if (root / dirname).is_dir() else []
        if not files:
            diags.append(
                Diagnostic(Location(shown_path(root, dirname)), f"no {dirname}: add {dirname}/*.yaml")
            )
        found.extend((f"{dirname}/{f.name}", kind) for f in files)
    known = {rel for rel, _ in found}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and path.suffix in (".yaml", ".yml") and rel not in known:
            diags.append(
                Diagnostic(
                    Location(shown_path(root, rel)),
                    "unexpected file: spec files are stack, components, topology, messages, "
                    "hypervisors (.yaml), sequences/*.yaml and apis/*.yaml",
                )
            )
    return found, diags


def load_spec(root: Path) -> tuple[LoadedSpec, list[Diagnostic]]:
    """Parse every file of the spec; problems are returned, never raised."""
    layout, diags = discover(root)
    files: list[SpecFile] = []
    for rel, kind in layout:
        parsed, problems = parse_file(root, rel, kind)
        diags.extend(problems)
        if parsed is not None:
            files.append(parsed)
    return LoadedSpec(root=root, files=tuple(files)), diags


def to_plain(node: Any) -> Any:
    """ruamel's round-trip types as plain JSON-compatible Python values."""
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node
