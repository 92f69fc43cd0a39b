"""`specstack bench --baseline REV`: the embedded stack's figures of this tree and of another
revision of it, side by side in one run.

A figure quoted from another day says little: this machine's speed changes over a day
(twofold, seen here). Both stacks are measured here, now, one after the other, alternating
(this tree, REV, REV, this tree, ...), each in a fresh process, and the medians of each
side are compared. REV's tree is taken out of git (`git archive`: its committed files,
generated/ included; no worktree is left behind) into a temporary directory, and its stack
is measured by its own `generator.bench.stack.stack_figures`, the revision's own bench
(the client that boots and polls has been the same since that bench was written), with this
interpreter and the packages it has.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

#: The figures compared; a revision whose bench lacks one leaves it out.
FIGURES = (
    "boot_p50_ms",
    "boot_p50_ms_traced",
    "boot_p95_ms",
    "boots_per_s",
    "served_cpu_ms_per_boot",
    "rss_mb",
    "startup_s",
)
#: Run in a tree's own directory, with that tree first on the import path.
_MEASURE = (
    "import json\n"
    "from generator.bench.stack import stack_figures\n"
    "print(json.dumps(stack_figures(sequential={boots})))\n"
)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("--baseline needs git, which is not installed") from None


def checkout(repo: Path, rev: str, into: Path) -> str:
    """The committed files of `rev` (a commit, tag or branch of the git repository at
    `repo`) written into `into`; its commit id."""
    found = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        if _git(repo, "rev-parse", "--git-dir").returncode != 0:
            raise RuntimeError(f"--baseline: {repo} is not a git checkout")
        raise RuntimeError(f"--baseline: {rev!r} is no commit of the repository at {repo}")
    sha = found.stdout.decode().strip()
    archive = _git(repo, "archive", "--format=tar", sha)
    if archive.returncode != 0:
        raise RuntimeError(f"--baseline: git archive {sha}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        # the extraction filter (Python 3.11.4 on): no path outside `into`, no device files
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # pragma: no cover - older 3.11
            tar.extractall(into)  # this repository's own commit
    return sha


def measure(tree: Path, boots: int) -> dict[str, float]:
    """`stack_figures` of the stack of `tree`, by that tree's own bench, in a new process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = _MEASURE.format(boots=boots)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"measuring the stack of {tree} failed:\n{tail}")
    figures = json.loads(lines[-1])
    return {k: float(v) for k, v in figures.items() if k in FIGURES}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in FIGURES if all(k in run for run in runs)]
    return {k: round(statistics.median(run[k] for run in runs), 2) for k in keys}


def side_by_side(
    rev: str,
    *,
    pairs: int,
    boots: int,
    repo: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
    measure_tree: Callable[[Path, int], dict[str, float]] = measure,
) -> dict[str, object]:
    """The medians of `pairs` measurements of this tree (`repo`, default: the current
    directory) and of `rev`, alternating, and each figure's ratio (this / baseline)."""
    here = (repo or Path.cwd()).resolve()
    with tempfile.TemporaryDirectory(prefix="specstack-baseline-") as tmp:
        there = Path(tmp)
        sha = checkout(here, rev, there)
        runs: dict[str, list[dict[str, float]]] = {"this": [], "baseline": []}
        for n in range(pairs):
            order = [("this", here), ("baseline", there)]
            for side, tree in order if n % 2 == 0 else order[::-1]:
                say(f"pair {n + 1}/{pairs}: measuring {side} ({boots} sequential boots)...")
                runs[side].append(measure_tree(tree, boots))
    this, base = _medians(runs["this"]), _medians(runs["baseline"])
    return {
        "baseline": sha,
        "pairs": pairs,
        "this": this,
        "baseline_figures": base,
        # above 1: this tree's figure is the larger (slower for times, faster for boots_per_s)
        "ratio": {k: round(this[k] / base[k], 2) for k in this if base.get(k)},
    }
