"""Read the spec's YAML files, keeping the line and column of every node.

libyaml (through PyYAML's C composer) parses; scalars are resolved with the
YAML 1.2 core schema (yamlcore's resolver), and positions come from node marks.
A file parsed before is read back from the digest cache (`generator.pipeline.cache`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator.pipeline.diagnostics import Diagnostic, Location

if TYPE_CHECKING:  # parsing imports them; a spec read back from the cache does not
    import yaml

#: File kinds by their place in the spec directory.
SINGLE_FILES: dict[str, str] = {
    "stack.yaml": "stack",
    "components.yaml": "components",
    "topology.yaml": "topology",
    "messages.yaml": "messages",
    "hypervisors.yaml": "hypervisors",
}
#: Files a spec may have: without policy.yaml the stack has no named policy rules, without
#: traces.yaml its steps have no OSProfiler trace points, without steps.yaml its sequences
#: share no steps.
OPTIONAL_FILES: dict[str, str] = {
    "policy.yaml": "policy",
    "traces.yaml": "traces",
    "steps.yaml": "steps",
}
GROUP_DIRS: dict[str, str] = {"sequences": "sequence", "apis": "openapi"}
#: Directories a spec may have: the resource model of each API (see docs/resources.md).
OPTIONAL_GROUP_DIRS: dict[str, str] = {"resources": "resources"}

PathElem = str | int
Position = tuple[int, int]  # 0-based line, column
Positions = dict[tuple[PathElem, ...], Position]


@dataclass(frozen=True)
class SpecFile:
    """One parsed file: `rel` is its path inside the spec, `shown` as reported.

    `data` is plain JSON-like Python data; `values` and `keys` map the path of
    every node (a tuple of keys and indexes) to where its value, and for mapping
    entries its key, starts in the file.
    """

    rel: str
    shown: str
    kind: str
    data: Any
    raw: bytes
    values: dict[tuple[PathElem, ...], Position]
    keys: dict[tuple[PathElem, ...], Position]

    @property
    def stem(self) -> str:
        return Path(self.rel).stem

    def locate(self, path: Sequence[PathElem], *, key: bool = False) -> Location:
        """Where the node at `path` starts; the deepest existing ancestor if it is absent.

        With `key=True` and a mapping key as the last element, point at the key
        rather than its value (used for "unknown property" style problems).
        """
        full = tuple(path)
        if key and full in self.keys:
            line, col = self.keys[full]
            return Location(self.shown, line + 1, col + 1)
        for n in range(len(full), -1, -1):
            pos = self.values.get(full[:n])
            if pos is not None:
                return Location(self.shown, pos[0] + 1, pos[1] + 1)
        return Location(self.shown)

    def at(self, path: Sequence[PathElem], message: str, *, key: bool = False) -> Diagnostic:
        return Diagnostic(self.locate(path, key=key), message)


@dataclass(frozen=True)
class LoadedSpec:
    root: Path
    files: tuple[SpecFile, ...]

    def of_kind(self, kind: str) -> Iterator[SpecFile]:
        return (f for f in self.files if f.kind == kind)

    def one(self, kind: str) -> SpecFile | None:
        return next(self.of_kind(kind), None)


def shown_path(root: Path, rel: str) -> str:
    """How a spec file is named in messages: the spec directory as given, then the file."""
    return (root / rel).as_posix()


class DuplicateKey(Exception):
    def __init__(self, key: str, mark: Any, first: Position) -> None:
        super().__init__(key)
        self.key = key
        self.mark = mark
        self.first = first  # 0-based line and column of the key's first use


class BadYaml(Exception):
    """Not YAML: libyaml's complaint (a yaml.MarkedYAMLError) is `error`."""

    def __init__(self, error: yaml.MarkedYAMLError) -> None:
        super().__init__(str(error))
        self.error = error


#: The most nodes one file may expand to once aliases are followed; the largest
#: spec file has a few thousand. Past it the file is refused before it is built
#: (a few hundred bytes of nested aliases can expand to billions of nodes).
MAX_NODES = 200_000


class Unexpandable(Exception):
    """The file's aliases expand too far, or an anchored node contains itself."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


def check_expansion(root: yaml.Node, limit: int = MAX_NODES) -> None:
    """Refuse a composed document whose aliases would expand past `limit` nodes,
    or loop. Each distinct node is sized once, so this is linear in the file."""
    import yaml

    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        nid = id(node)
        if nid in sizes:
            return sizes[nid]
        if nid in open_:
            raise Unexpandable("an anchored node contains an alias to itself", node.start_mark)
        open_.add(nid)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise Unexpandable(
                    f"this node expands through aliases to more than {limit:,} nodes "
                    "(an alias bomb?)",
                    node.start_mark,
                )
        open_.discard(nid)
        sizes[nid] = total
        return total

    size(root)


#: Where each node starts, in document order: every value's line and column, then
#: (a separate list) every mapping key's; flat, as they are kept in the cache.
Marks = tuple[list[int], list[int]]


def parse_text(text: str) -> tuple[Any, Marks]:
    """YAML text to plain data, and where its nodes start.

    libyaml (PyYAML's C composer) parses, yamlcore resolves scalars by the YAML 1.2
    core schema (so `on`, `yes`, `no` and `1_000` stay strings, unlike YAML 1.1).
    Raises BadYaml, DuplicateKey, Unexpandable.
    """
    import yaml
    import yamlcore

    marks: Marks = ([], [])
    values, keys = marks

    def build(node: yaml.Node) -> Any:
        values.extend((node.start_mark.line, node.start_mark.column))
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            seen: dict[str, Position] = {}
            for knode, vnode in node.value:
                scalar = isinstance(knode, yaml.ScalarNode)
                k = loader.construct_object(knode) if scalar else knode.value
                key = str(k).lower() if isinstance(k, bool) else ("null" if k is None else str(k))
                at = (knode.start_mark.line, knode.start_mark.column)
                if key in seen:
                    raise DuplicateKey(key, knode.start_mark, seen[key])
                seen[key] = at
                keys.extend(at)
                out[key] = build(vnode)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item) for item in node.value]
        return loader.construct_object(node)

    loader = getattr(yamlcore, "CCoreLoader", yamlcore.CoreLoader)(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, marks
        check_expansion(root)
        return build(root), marks
    except yaml.MarkedYAMLError as exc:
        raise BadYaml(exc) from exc
    finally:
        loader.dispose()


def index_marks(data: Any, marks: Marks) -> tuple[Positions, Positions]:
    """`marks` by the path of the node they belong to: (values, keys) as SpecFile has them."""
    values: Positions = {}
    keys: Positions = {}
    at_value, at_key = iter(marks[0]), iter(marks[1])

    def walk(node: Any, path: tuple[PathElem, ...]) -> None:
        values[path] = (next(at_value), next(at_value))
        if isinstance(node, dict):
            for key, child in node.items():
                keys[(*path, key)] = (next(at_key), next(at_key))
                walk(child, (*path, key))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, (*path, i))

    walk(data, ())
    return values, keys


def _cache_key(raw: bytes) -> str:
    from generator.pipeline.cache import digest, dist_version, source_digest

    return digest(source_digest(__file__), dist_version("PyYAML"), dist_version("yamlcore"), raw)


def _parse_cached(raw: bytes, text: str) -> tuple[Any, Marks]:
    """`parse_text(text)`, from the cache when these bytes were parsed before: reading
    the parsed JSON back is several times faster than parsing YAML. Raises as parse_text."""
    from generator.pipeline.cache import DigestCache

    cache = DigestCache("spec-yaml")
    key = _cache_key(raw)
    entry = cache.get(key)
    if entry is not None:
        try:
            found = json.loads(entry)
            return found["data"], (found["values"], found["keys"])
        except (ValueError, KeyError, TypeError):
            pass  # not an entry this code wrote: parse again
    data, marks = parse_text(text)
    # a value JSON cannot hold (an explicit !!binary, say) leaves the file uncached
    with contextlib.suppress(TypeError, ValueError):
        cache.put(key, json.dumps({"data": data, "values": marks[0], "keys": marks[1]}))
    return data, marks


def parse_file(root: Path, rel: str, kind: str) -> tuple[SpecFile | None, list[Diagnostic]]:
    shown = shown_path(root, rel)
    raw = (root / rel).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [_not_utf8(shown, raw, exc)]
    try:
        data, marks = _parse_cached(raw, text)
    except DuplicateKey as exc:
        loc = Location(shown, exc.mark.line + 1, exc.mark.column + 1)
        line, col = exc.first
        first = f"first at line {line + 1}, column {col + 1}"
        return None, [Diagnostic(loc, f'YAML: duplicate key "{exc.key}" ({first})')]
    except Unexpandable as exc:
        loc = Location(shown, exc.mark.line + 1, exc.mark.column + 1)
        return None, [Diagnostic(loc, f"YAML: {exc.problem}")]
    except BadYaml as exc:
        return None, [_yaml_problem(shown, exc.error, text)]
    if data is None:
        return None, [Diagnostic(Location(shown), "file is empty")]
    if not isinstance(data, dict):
        return None, [Diagnostic(Location(shown), "expected a mapping at the top of the file")]
    values, keys = index_marks(data, marks)
    return SpecFile(rel, shown, kind, data, raw, values, keys), []


def _not_utf8(shown: str, raw: bytes, exc: UnicodeDecodeError) -> Diagnostic:
    """Where the first byte that is not UTF-8 is: its line, and its column in characters."""
    start = raw.rfind(b"\n", 0, exc.start) + 1
    line = raw.count(b"\n", 0, exc.start) + 1
    col = len(raw[start : exc.start].decode("utf-8", errors="replace")) + 1
    byte = raw[exc.start]
    return Diagnostic(
        Location(shown, line, col), f"not UTF-8 text: byte 0x{byte:02X} ({exc.reason})"
    )


def _yaml_problem(shown: str, exc: yaml.MarkedYAMLError, text: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or "invalid YAML").strip()
    if mark is not None and "cannot start any token" in problem:
        lines = text.splitlines()
        row = lines[mark.line] if mark.line < len(lines) else ""
        char = row[mark.column] if mark.column < len(row) else ""
        if char == "\t":
            problem = "found a tab; YAML indents with spaces only"
        elif char:
            problem = f"found {char!r}, which cannot start any token"
    if (
        exc.context
        and exc.context_mark is not None
        and exc.problem_mark is not None
        and exc.context_mark.line != exc.problem_mark.line
    ):
        problem += f" ({exc.context.strip()} started on line {exc.context_mark.line + 1})"
    return Diagnostic(Location(shown, line, col), f"YAML: {problem}")


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
    found.extend((name, kind) for name, kind in OPTIONAL_FILES.items() if (root / name).is_file())
    for dirname, kind in {**GROUP_DIRS, **OPTIONAL_GROUP_DIRS}.items():
        files = sorted((root / dirname).glob("*.yaml")) if (root / dirname).is_dir() else []
        if not files and dirname in GROUP_DIRS:
            diags.append(
                Diagnostic(
                    Location(shown_path(root, dirname)), f"no {dirname}: add {dirname}/*.yaml"
                )
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
                    "hypervisors, policy, traces, steps (.yaml), sequences/*.yaml, apis/*.yaml "
                    "and resources/*.yaml",
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
    files, problems = use_shared_steps(files)
    return LoadedSpec(root=root, files=tuple(files)), diags + problems


def use_shared_steps(files: list[SpecFile]) -> tuple[list[SpecFile], list[Diagnostic]]:
    """Each sequence step written `{use: NAME, ...}` as the step NAME of steps.yaml, with
    the keys the step gives itself (its `number`, say) over the shared step's.

    The steps are checked where they are used: a problem in a shared step is reported at
    the `use:` of each step that takes it. A sequence that uses a step steps.yaml lacks is
    reported and left out, as a file that does not parse is.
    """
    source = next((f for f in files if f.kind == "steps"), None)
    shared = source.data.get("steps") if source is not None else None
    shared = shared if isinstance(shared, dict) else {}
    out: list[SpecFile] = []
    diags: list[Diagnostic] = []
    for f in files:
        seq: Any = f.data.get("sequence") if f.kind == "sequence" else None
        steps = seq.get("steps") if isinstance(seq, dict) else None
        if not isinstance(steps, list):
            out.append(f)
            continue
        expanded: list[Any] = []
        problems: list[Diagnostic] = []
        for i, step in enumerate(steps):
            name = step.get("use") if isinstance(step, dict) else None
            if not isinstance(name, str):
                expanded.append(step)
            elif isinstance(shared.get(name), dict):
                own = {k: v for k, v in step.items() if k != "use"}
                expanded.append({**copy.deepcopy(shared[name]), **own})
            else:
                from generator.pipeline.validate.names import hint

                where: list[PathElem] = ["sequence", "steps", i, "use"]
                problems.append(
                    f.at(
                        where,
                        f"sequence.steps[{i}].use: steps.yaml has no step '{name}'"
                        + hint(name, shared, "shared steps"),
                    )
                )
        diags += problems
        if not problems:
            data = {**f.data, "sequence": {**seq, "steps": expanded}}
            out.append(dataclasses.replace(f, data=data))
    return out, diags


def to_plain(node: Any) -> Any:
    """Spec data is already plain JSON-like data; kept as the one place to convert if that changes."""
    return node
