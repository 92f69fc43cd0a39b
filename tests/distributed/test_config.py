"""The config file every process reads: TOML, then SPECSTACK_* variables, then options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specstack_runtime.config import (
    DEFAULT_DATABASE_SERVER,
    ConfigError,
    StackConfig,
    load_config,
)

from ..conftest import REPO


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "specstack.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_options(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'mode = "distributed"\ncomputes = 3\nmax_build_attempts = 5\n'
        'scheduler_filters = ["RamFilter", "ComputeFilter"]\n'
        "scheduler_weighers = { RAMWeigher = -1.0 }\n"
        '[database_urls]\nnova-db = "postgresql+psycopg://postgres@127.0.0.1:5432/mine"\n',
    )
    env = {"SPECSTACK_COMPUTES": "4", "SPECSTACK_TOKEN_CACHE_S": "2.5"}
    config = load_config(path, environ=env, computes=None, base_port=9100)
    assert config.mode == "distributed"
    assert config.computes == 4  # the environment overrides the file
    assert config.base_port == 9100  # an option overrides both
    assert config.max_build_attempts == 5
    assert config.token_cache_s == 2.5
    assert config.scheduler_filters == ("RamFilter", "ComputeFilter")
    assert config.scheduler_weighers == (("RAMWeigher", -1.0),)
    config.stack_name = "st_x"
    config.for_mode()
    assert config.internal_http == "tcp"
    assert config.bus_url == "amqp://guest:guest@127.0.0.1:5672/st_x"
    assert config.database_url("nova-db").endswith("/mine")
    assert config.database_url("glance-db") == f"{DEFAULT_DATABASE_SERVER}/st_x_glance_db"


def test_explicit_bindings_win_over_the_mode_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, 'bus_url = "amqp://u:p@mq:5672/other"\ninternal_http = "local"\n')
    config = load_config(path, environ={}, mode="distributed").for_mode()
    assert config.bus_url == "amqp://u:p@mq:5672/other"
    assert config.internal_http == "local"


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "restart_limit = 0\n")
    config = load_config(environ={"SPECSTACK_CONFIG": str(path)})
    assert config.restart_limit == 0


def test_embedded_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={}).for_mode()
    assert config == StackConfig()
    assert config.database_url("nova-db").startswith("sqlite:///")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("computes = 'three'\n", {}, "specstack.toml:computes: 'three' is not an integer"),
        ("colour = 'blue'\n", {}, "specstack.toml:colour: unknown setting; known settings: "),
        ("mode = 'cloud'\n", {}, "specstack.toml:mode: 'cloud' is not one of"),
        ("max_build_attempts = 0\n", {}, "specstack.toml:max_build_attempts: must be at least 1"),
        ("scheduler_filters = 'RamFilter'\n", {}, "scheduler_filters: 'RamFilter' is not a list"),
        ("database_urls = 3\n", {}, "specstack.toml:database_urls: 3 is not a table"),
        ("computes = [\n", {}, "specstack.toml: not valid TOML"),
        ("", {"SPECSTACK_CALL_TIMEOUT_S": "soon"}, "SPECSTACK_CALL_TIMEOUT_S: 'soon' is not a"),
        ("stop_grace_s = true\n", {}, "specstack.toml:stop_grace_s: True is not a number"),
    ],
)
def test_bad_settings_are_named_with_where_they_came_from(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=env)
    assert message in str(err.value)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_driver_options_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, '[driver_options.libvirt]\nuri = "qemu:///session"\n')
    assert load_config(path, environ={}).driver_options == {"libvirt": {"uri": "qemu:///session"}}
    env = {"SPECSTACK_DRIVER_OPTIONS": '{"libvirt": {"uri": "test:///default"}}'}
    assert load_config(path, environ=env).driver_options == {"libvirt": {"uri": "test:///default"}}
    bad = _write(tmp_path, "[driver_options]\nlibvirt = 3\n")
    with pytest.raises(ConfigError, match=r"specstack.toml:driver_options: .* is not a table"):
        load_config(bad, environ={})


def test_a_deployed_stacks_addresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a container the APIs listen on every address; the others reach each at its name."""
    from specstack_runtime.embedded import load_generated

    monkeypatch.chdir(REPO)  # the generated package is imported from the working directory
    path = _write(tmp_path, 'listen_address = "0.0.0.0"\n[endpoint_hosts]\nkeystone = "keystone"\n')
    config = load_config(path, environ={})
    assert config.bind_address() == "0.0.0.0"
    info = load_generated()[0]
    assert info.endpoint("identity", config) == "http://keystone:5000"
    assert info.endpoint("compute", config) == "http://127.0.0.1:8774"  # not named: host_address
    assert load_config(environ={}).bind_address() == "127.0.0.1"
    bad = _write(tmp_path, '[endpoint_hosts]\nkeystone = "http://keystone/"\n')
    with pytest.raises(ConfigError, match=r"endpoint_hosts: .* is not a table of component"):
        load_config(bad, environ={})


def test_a_service_password_from_the_environment_is_never_written(tmp_path: Path) -> None:
    env = {"SPECSTACK_SERVICE_PASSWORD": "from-the-secret", "SPECSTACK_STACK_NAME": "st_k8s"}
    config = load_config(environ=env, data_dir=tmp_path / "a")
    config.ensure_secrets()
    assert config.service_password == "from-the-secret" and config.stack_name == "st_k8s"
    assert not (tmp_path / "a").exists()  # nothing to keep: no file at all
    # no stack name given: it is generated and kept, the password still not written
    config = load_config(environ={"SPECSTACK_SERVICE_PASSWORD": "pw2"}, data_dir=tmp_path / "b")
    config.ensure_secrets()
    saved = json.loads((tmp_path / "b" / "secrets.json").read_text())
    assert saved == {"stack_name": config.stack_name} and config.service_password == "pw2"
    # without one, the password is generated once per data directory, as before
    first = load_config(environ={}, data_dir=tmp_path / "b")
    first.ensure_secrets()
    again = load_config(environ={}, data_dir=tmp_path / "b")
    again.ensure_secrets()
    assert first.service_password and again.service_password == first.service_password
    assert again.stack_name == config.stack_name
    assert "pw2" not in (tmp_path / "b" / "secrets.json").read_text()
