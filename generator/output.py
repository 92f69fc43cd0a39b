"""Write `generated/` atomically, with a manifest of hashes, or report drift against it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing render would pull in jinja2 and pydantic for a no-op run
    from generator.render.base import OutputFile

MANIFEST = "manifest.json"
#: Left alone by the drift check and by the swap (caches that tools write inside).
IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
RUFF_ARGS = ("--isolated", "--line-length", "100", "--target-version", "py311", "--quiet")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ruff_binary() -> str:
    from ruff.__main__ import find_ruff_bin

    return str(find_ruff_bin())


def format_python(directory: Path) -> None:
    """Format every Python file under `directory` with ruff, as one process."""
    proc = subprocess.run(
        [ruff_binary(), "format", *RUFF_ARGS, str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ruff format failed:\n{proc.stderr or proc.stdout}")


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


def stage(
    files: Iterable[OutputFile], staging: Path, inputs: str, generator: str, source: str = "spec/"
) -> None:
    """Write `files` into a fresh `staging` directory, formatted, with the manifest."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for f in files:
        target = staging / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content, encoding="utf-8", newline="\n")
    format_python(staging)
    hashes = {rel: sha256(p.read_bytes()) for rel, p in sorted(tree_files(staging).items())}
    manifest = {"generator": generator, "from": source, "inputs": inputs, "files": hashes}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


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
