"""`python -m specstack_runtime.prepare`: a cluster's migration job creates and migrates the
stack's databases on the machine's PostgreSQL, and names a bad configuration."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from specstack_runtime import migrate
from specstack_runtime.config import load_config
from specstack_runtime.embedded import load_generated
from specstack_runtime.prepare import EXIT_CONFIG, main
from specstack_runtime.supervisor import drop_stack_resources, project_databases

from ..conftest import REPO


@pytest.fixture(autouse=True)
def _repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the generated package is imported from the working directory


def test_a_bad_configuration_is_named_and_nothing_is_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "specstack.toml"
    path.write_text('mode = "distributed"\ncomputes = "many"\n')
    assert main(["--config", str(path)]) == EXIT_CONFIG
    assert "specstack.toml:computes: 'many' is not an integer" in caplog.text


def test_the_databases_are_created_and_migrated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"st_prep_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "specstack.toml"
    path.write_text(
        f'mode = "distributed"\nstack_name = "{name}"\ndata_dir = "{tmp_path / "data"}"\n'
        'bus_url = "memory://"\n'
    )
    monkeypatch.setenv("SPECSTACK_SERVICE_PASSWORD", "from-the-secret")
    config = load_config(path).for_mode()
    info = load_generated()[0]
    try:
        caplog.set_level("INFO", logger="specstack.prepare")
        assert main(["--config", str(path)]) == 0
        databases = project_databases(info)
        assert databases
        for db in databases:
            assert f"{db}: created and migrated" in caplog.text
            url = config.database_url(db)
            assert url.endswith(f"/{name}_{db.replace('-', '_')}")
            assert migrate.current(url, db) == migrate.head(db)
        caplog.clear()
        assert main(["--config", str(path)]) == 0  # a job run again changes nothing
        assert all(f"{db}: migrated" in caplog.text for db in databases)
        assert "created" not in caplog.text
        assert not (tmp_path / "data" / "secrets.json").exists()  # the password is never written
    finally:
        drop_stack_resources(config, info)
