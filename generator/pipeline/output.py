"""Write `generated/` atomically, with a manifest of hashes, or report drift against it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing render would pull in jinja2 and pydantic for a no-op run
    from generator.pipeline.cache import DigestCache
    from generator.pipeline.render.base import OutputFile

MANIFEST = "manifest.json"
#: Left alone by the drift check and by the swap (caches that tools write inside).
IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
RUFF_ARGS = (
    "--isolated",
    "--no-cache",
    "--line-length",
    "100",
    "--target-version",
    "py311",
    "--quiet",
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ruff_binary() -> str:
    from ruff.__main__ import find_ruff_bin

    return str(find_ruff_bin())


def format_python(paths: Sequence[Path]) -> Callable[[], None]:
    """Start formatting `paths` with ruff, as one process; the callable waits for it."""
    if not paths:
        return lambda: None
    proc = subprocess.Popen(
        [ruff_binary(), "format", *RUFF_ARGS, *map(str, paths)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wait() -> None:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"ruff format failed:\n{stderr or stdout}")

    return wait


def _format_key(text: str) -> str:
    from generator.pipeline.cache import digest, dist_version

    return digest(dist_version("ruff"), RUFF_ARGS, text)


def _format_and_keep(files: Sequence[tuple[Path, str]], cache: DigestCache) -> Callable[[], None]:
    """Format `files` (path, key of its text) in the background; once done, keep each
    result under its key, so text rendered again the same is not formatted again."""
    wait_for_ruff = format_python([path for path, _ in files])

    def wait() -> None:
        wait_for_ruff()
        for path, key in files:
            cache.put(key, path.read_text("utf-8"))

    return wait


def tree_files(root: Path) -> dict[str, Path]:
    """Every file under `root` by relative posix path, skipping tool caches."""
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        for name in filenames:
            p = Path(dirpath) / name
            found[p.relative_to(root).as_posix()] = p
    return found


@dataclass(frozen=True)
class Drift:
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not (self.changed or self.missing or self.extra)

    def lines(self) -> list[str]:
        return (
            [f"changed: {p}" for p in self.changed]
            + [f"missing: {p}" for p in self.missing]
            + [f"extra:   {p}" for p in self.extra]
        )


def _same(rel: str, a: Path, b: Path) -> bool:
    if rel != MANIFEST:
        return a.read_bytes() == b.read_bytes()
    # The manifest's input fingerprint names tool versions; only its file list is output.
    try:
        return bool(json.loads(a.read_text())["files"] == json.loads(b.read_text())["files"])
    except (ValueError, KeyError):
        return False


def compare_trees(expected: Path, actual: Path) -> Drift:
    want, have = tree_files(expected), tree_files(actual)
    changed = [p for p in sorted(want) if p in have and not _same(p, want[p], have[p])]
    return Drift(
        changed=tuple(changed),
        missing=tuple(sorted(set(want) - set(have))),
        extra=tuple(sorted(set(have) - set(want))),
    )


class Staging:
    """The next `generated/`, built in a fresh directory beside it, in batches.

    Each batch is written as soon as it is rendered and its Python is formatted
    in the background, so the files rendered first are on disk while later ones
    are still being made; Python text formatted before is taken from the digest
    cache instead. Nothing reaches `out` until `swap_in`.
    """

    def __init__(self, out: Path) -> None:
        self.dir = staging_dir(out)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.files: list[OutputFile] = []
        self._paths: set[str] = set()
        self._formatting: list[Callable[[], None]] = []

    def add(self, files: Iterable[OutputFile]) -> None:
        from generator.pipeline.cache import DigestCache

        formatted = DigestCache("ruff-format")
        unformatted: list[tuple[Path, str]] = []
        for f in files:
            if f.path in self._paths:
                raise RuntimeError(f"two targets write {f.path}")
            self._paths.add(f.path)
            self.files.append(f)
            target = self.dir / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            content = f.content
            if target.suffix == ".py":
                key = _format_key(content)
                known = formatted.get(key)
                if known is None:
                    unformatted.append((target, key))
                else:
                    content = known
            target.write_text(content, encoding="utf-8", newline="\n")
        self._formatting.append(_format_and_keep(unformatted, formatted))

    def seal(self, inputs: str, generator: str, source: str = "spec/") -> int:
        """Wait for the formatting, write the manifest; the number of files."""
        for wait in self._formatting:
            wait()
        self._formatting.clear()
        tree = tree_files(self.dir)
        hashes = {rel: sha256(p.read_bytes()) for rel, p in sorted(tree.items())}
        manifest = {"generator": generator, "from": source, "inputs": inputs, "files": hashes}
        (self.dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return len(tree) + 1

    def discard(self) -> None:
        for wait in self._formatting:
            with contextlib.suppress(RuntimeError):
                wait()
        if self.dir.exists():
            shutil.rmtree(self.dir)


def swap_in(staging: Path, out: Path) -> None:
    """Replace `out` with `staging` by two renames; a crash in between is recovered next run."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    if old.exists():
        shutil.rmtree(old)


def recover(out: Path) -> None:
    """Undo an interrupted swap: the previous output is put back if the new one never landed."""
    old = out.with_name(f".{out.name}.old")
    if old.exists() and not out.exists():
        os.replace(old, out)
    elif old.exists():
        shutil.rmtree(old)


def read_manifest(out: Path) -> dict[str, object] | None:
    try:
        data = json.loads((out / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def up_to_date(out: Path, inputs: str) -> bool:
    """True when `out` was generated from exactly these inputs and nobody touched it since."""
    manifest = read_manifest(out)
    if manifest is None or manifest.get("inputs") != inputs:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict):
        return False
    present = tree_files(out)
    if set(present) != {*files, MANIFEST}:
        return False
    return all(sha256(present[rel].read_bytes()) == digest for rel, digest in files.items())


def staging_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.staging-{os.getpid()}")


def python_version_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"
