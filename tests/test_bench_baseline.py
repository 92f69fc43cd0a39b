"""`specstack bench --baseline REV`: this tree's embedded-stack figures beside another
revision's, each side measured by its own bench, alternating, medians compared."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from generator.bench.baseline import checkout, measure, side_by_side
from generator.cli import main

# A tree's own bench, as a revision holds it: its figures name the tree they ran in, and
# every run adds one to the boot time (so medians, not first runs, must be reported).
_FAKE_BENCH = """
from pathlib import Path

def stack_figures(sequential):
    runs = Path("runs.count")
    n = int(runs.read_text()) + 1 if runs.exists() else 1
    runs.write_text(str(n))
    fast = Path("FAST").exists()
    return {
        "boot_p50_ms": (5.0 if fast else 10.0) + n,
        "boots_per_s": 200.0 if fast else 100.0,
        "rss_mb": float(sequential),
        "unknown_figure": 1.0,
    }
"""


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with a bench: its first commit slow, the working tree fast."""
    root = tmp_path / "repo"
    bench = root / "generator" / "bench"
    bench.mkdir(parents=True)
    for pkg in (root / "generator", bench):
        (pkg / "__init__.py").write_text("")
    (bench / "stack.py").write_text(_FAKE_BENCH)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "slow")
    (root / "FAST").write_text("")  # uncommitted: only the working tree is fast
    return root


def test_this_tree_and_a_revision_are_measured_alternately_and_their_medians_compared(
    repo: Path,
) -> None:
    order: list[str] = []

    def measured(tree: Path, boots: int) -> dict[str, float]:
        order.append("this" if tree == repo.resolve() else "baseline")
        return measure(tree, boots)

    got = side_by_side("HEAD", pairs=3, boots=7, repo=repo, measure_tree=measured)
    assert order == ["this", "baseline", "baseline", "this", "this", "baseline"]
    assert got["baseline"] == _git(repo, "rev-parse", "HEAD")
    assert got["pairs"] == 3
    # each side in its own tree: the working tree's FAST file, not the commit's; runs 1..3
    # of each side, their median the second; figures the bench does not know left out
    assert got["this"] == {"boot_p50_ms": 7.0, "boots_per_s": 200.0, "rss_mb": 7.0}
    assert got["baseline_figures"] == {"boot_p50_ms": 12.0, "boots_per_s": 100.0, "rss_mb": 7.0}
    assert got["ratio"] == {"boot_p50_ms": 0.58, "boots_per_s": 2.0, "rss_mb": 1.0}


def test_the_revision_is_taken_out_of_git_without_a_worktree(repo: Path, tmp_path: Path) -> None:
    into = tmp_path / "out"
    into.mkdir()
    sha = checkout(repo, "HEAD", into)
    assert sha == _git(repo, "rev-parse", "HEAD")
    assert (into / "generator" / "bench" / "stack.py").read_text() == _FAKE_BENCH
    assert not (into / "FAST").exists()  # committed files only
    assert _git(repo, "worktree", "list").count("\n") == 0  # the repository's one worktree


def test_an_unknown_revision_or_a_tree_outside_git_is_named(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    assert main(["bench", "--baseline", "no-such-rev"]) == 3
    assert "'no-such-rev' is no commit of the repository at" in capsys.readouterr().err
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert main(["bench", "--baseline", "HEAD"]) == 3
    assert f"{outside} is not a git checkout" in capsys.readouterr().err


def test_a_revision_whose_bench_fails_is_reported_with_its_error(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "generator" / "bench" / "stack.py").write_text("raise ImportError('no cel here')\n")
    monkeypatch.chdir(repo)
    assert main(["bench", "--baseline", "HEAD", "--pairs", "1", "--boots", "3"]) == 3
    err = capsys.readouterr().err
    assert "measuring the stack of" in err and "ImportError: no cel here" in err


def test_the_comparison_is_one_json_object(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    assert main(["bench", "--baseline", "HEAD", "--pairs", "1", "--boots", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["this"]["boots_per_s"] == 200.0 and out["baseline_figures"]["rss_mb"] == 4.0


def test_pairs_without_a_baseline_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--pairs", "2"]) == 2
    assert "--pairs needs --baseline REV" in capsys.readouterr().err
