from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# every CEL expression the tests evaluate runs both as Python (celpython) and on the CEL
# runtime, and any difference fails (the stacks the tests start inherit it)
os.environ.setdefault("SPECSTACK_CEL_CHECK", "1")

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "spec"
MINI = Path(__file__).resolve().parent / "fixtures" / "mini-spec"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test starts with an empty generator cache of its own (never the user's)."""
    from generator.pipeline.cache import ENV

    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(ENV, str(path))
    return path


@pytest.fixture
def mini_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the mini spec at tmp_path/spec, with tmp_path as the working dir."""
    dest = tmp_path / "spec"
    shutil.copytree(MINI, dest)
    monkeypatch.chdir(tmp_path)
    return dest


@pytest.fixture
def repo_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the real spec and templates under tmp_path."""
    shutil.copytree(SPEC, tmp_path / "spec")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "spec"
