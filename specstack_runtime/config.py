"""Stack configuration: defaults, then a TOML config file, then SPECSTACK_* variables.

Every process of a stack (the embedded one, or each process of a distributed stack)
builds its StackConfig the same way with `load_config`, so one file configures them all.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

#: Where `load_config` looks when neither --config nor SPECSTACK_CONFIG names a file.
DEFAULT_CONFIG_FILE = Path("specstack.toml")
CONFIG_ENV = "SPECSTACK_CONFIG"
MODES = ("embedded", "distributed")
INTERNAL_HTTP = ("local", "tcp")
#: Distributed-mode defaults (the machine's RabbitMQ and PostgreSQL).
DEFAULT_AMQP_SERVER = "amqp://guest:guest@127.0.0.1:5672"
DEFAULT_DATABASE_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


class ConfigError(ValueError):
    """A bad setting, named by where it came from: `FILE:key` or `SPECSTACK_KEY`."""


def _from_text(text: str) -> Any:
    """A list or table setting's variable: JSON, `key=value,key=value` or `a,b,c`."""
    text = text.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError:
            return text  # the setting's check names the problem
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if any("=" in p for p in parts):
        return {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in parts)}
    return parts


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise PydanticCustomError("config", what)


class StackConfig(BaseSettings):
    """Every setting of a stack; `SPECSTACK_<NAME>` is the variable of setting `name`.

    Built directly, a StackConfig holds its defaults and the arguments given;
    `load_config` adds the config file and the environment.
    """

    model_config = SettingsConfigDict(env_prefix="SPECSTACK_", extra="forbid")

    data_dir: Path = Path(".specstack")
    mode: str = "embedded"
    host_address: str = "127.0.0.1"  # where this host's APIs listen
    # where the APIs bind: empty is host_address; "0.0.0.0" in a container, whose own
    # address is not the one other processes reach it at
    listen_address: str = ""
    # component -> the host name its API is reached at (a Kubernetes Service, a Compose
    # service); one not named is reached at host_address
    endpoint_hosts: dict[str, str] = {}
    # topology node or host (compute-3) -> the address of the host it runs on, for the
    # catalog and the calls between hosts; a node not named is on host_address
    node_addresses: dict[str, str] = {}
    # where every process writes its trace events: a database URL; empty: trace.sqlite in
    # the data directory (embedded), database "<stack_name>_trace" on database_server
    # (distributed: the processes of every host write to it)
    trace_url: str = ""
    base_port: int | None = None  # None: each API listens on the port the spec gives it
    computes: int | None = None  # None: the topology's compute count
    driver: str | None = None  # None: the topology's driver for compute nodes
    # driver name -> extra keyword arguments of its hypervisor (e.g. libvirt: uri, virt_type)
    driver_options: dict[str, dict[str, str]] = {}
    bus_url: str = "memory://"  # distributed mode's default: DEFAULT_AMQP_SERVER/<stack_name>
    # "local": calls between this process's own APIs skip the socket (embedded);
    # "tcp": every call goes over the network, as between processes.
    internal_http: str = "local"
    # database component -> URL
    database_urls: dict[str, str] = {}
    # Server URL for every database not in database_urls: database "<stack_name>_<db>" on it.
    # Empty: SQLite files in embedded mode, DEFAULT_DATABASE_SERVER in distributed mode.
    database_server: str = ""
    stack_name: str = ""  # names this stack's vhost and databases; generated once per data dir
    token_ttl_s: int = 3600
    token_cache_s: float = 5.0  # how long services trust a validated token
    bcrypt_rounds: int = 12
    region: str = "RegionOne"
    admin_password: str = "admin"
    demo_password: str = "demo"
    # the service users' password: generated once per data directory unless set (a
    # cluster's processes share it through SPECSTACK_SERVICE_PASSWORD, a host without
    # the identity API is given its identity host's; never written then)
    service_password: str = Field(default="", repr=False)
    call_timeout_s: float = 30.0
    # HTTP servers: how long an idle keep-alive connection stays open (longer than the
    # clients' pools keep theirs, so a client never reuses one the server is closing)
    http_keep_alive_s: int = 75
    # request bodies: JSON and other small bodies, and data streams (image data, objects)
    max_body_bytes: int = 1024 * 1024
    max_data_body_bytes: int = 1024 * 1024 * 1024
    # OpenTelemetry: the OTLP/HTTP traces URL each step's span goes to; empty: no export
    otlp_endpoint: str = ""
    # OSProfiler: the collector each step is written to as a trace point (e.g.
    # redis://127.0.0.1:6379); empty: none. A request whose X-Trace-Info is signed with one
    # of the HMAC keys joins the client's trace (secrets: never logged or written).
    osprofiler_connection: str = ""
    osprofiler_hmac_keys: tuple[str, ...] = Field(default=(), repr=False)
    scheduler_filters: tuple[str, ...] = (
        "ComputeFilter",
        "AvailabilityZoneFilter",
        "RamFilter",
        "DiskFilter",
        "CoreFilter",
        "ServerGroupAntiAffinityFilter",
        "ServerGroupAffinityFilter",
    )
    # weigher = multiplier
    scheduler_weighers: tuple[tuple[str, float], ...] = (("RAMWeigher", 1.0),)
    max_build_attempts: int = 3
    # nova's option: a resize may keep the server on its host (a cold migration never does)
    allow_resize_to_same_host: bool = False
    guest_boot_timeout_s: float = 300.0  # a real guest must run by then, or its build fails
    # per-project limits of the spec's quotas (spec/resources `quotas`), overriding their defaults
    quotas: dict[str, int] = {}
    # distributed mode: the supervisor
    start_timeout_s: float = 120.0  # for every process to answer its health check
    stop_grace_s: float = 10.0  # how long a stop may take (SIGTERM to SIGKILL; embedded: to exit)
    restart_limit: int = 3  # restarts in a row of a crashing process before it is left down
    restart_backoff_s: float = 1.0  # the pause before a restart, doubled at each one in a row
    restart_backoff_max_s: float = 60.0  # at most; a process up this long has its count reset
    # the most processes of one component across a scaled node's hosts (compute-1..N): each
    # serves its share of the hosts, as nova's fake-driver scale tests ran many hosts per
    # process. None: the machine's cores, at least 4 (so a few hosts keep one process each)
    node_processes: int | None = None
    # Which settings were set explicitly (file, environment, command line), not defaulted.
    explicit: frozenset[str] = Field(default=frozenset(), exclude=True, repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Built directly: defaults and arguments; load_config gathers the other sources.
        return (init_settings,)

    # -- what each kind of setting accepts (the messages name the value) ------------
    @field_validator(
        "base_port",
        "computes",
        "token_ttl_s",
        "bcrypt_rounds",
        "max_build_attempts",
        "restart_limit",
        "node_processes",
        mode="before",
    )
    @classmethod
    def _integer(cls, value: Any) -> Any:
        if value == "":
            return None
        _require(not isinstance(value, bool | float), "is not an integer")
        return value

    @field_validator(
        "token_cache_s",
        "call_timeout_s",
        "guest_boot_timeout_s",
        "start_timeout_s",
        "stop_grace_s",
        "restart_backoff_s",
        "restart_backoff_max_s",
        mode="before",
    )
    @classmethod
    def _number(cls, value: Any) -> Any:
        _require(not isinstance(value, bool), "is not a number")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        _require(isinstance(value, str | Path) and str(value) != "", "is not a path")
        return value

    @field_validator("driver", mode="before")
    @classmethod
    def _optional_text(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("scheduler_filters", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        _require(
            isinstance(value, list | tuple) and all(isinstance(x, str) for x in value),
            "is not a list of names",
        )
        return value

    @field_validator("scheduler_weighers", mode="before")
    @classmethod
    def _weighers(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return value
        _require(isinstance(value, dict), "is not a table of weigher = multiplier")
        return tuple(value.items())

    @field_validator("database_urls", "node_addresses", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        _require(
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
            'is not a table of name = "URL"',
        )
        return value

    @field_validator("endpoint_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        _require(
            isinstance(value, dict)
            and all(isinstance(v, str) and v and "/" not in v for v in value.values()),
            'is not a table of component = "host name"',
        )
        return value

    @field_validator("quotas", mode="before")
    @classmethod
    def _quotas(cls, value: Any) -> Any:
        _require(
            isinstance(value, dict) and not any(isinstance(v, bool) for v in value.values()),
            "is not a table of quota = integer limit",
        )
        return value

    @field_validator("driver_options", mode="before")
    @classmethod
    def _driver_options(cls, value: Any) -> Any:
        _require(
            isinstance(value, dict)
            and all(
                isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
                for v in value.values()
            ),
            'is not a table of driver tables of key = "value"',
        )
        return value

    # -- sources ----------------------------------------------------------------
    def apply_overrides(self, **values: Any) -> StackConfig:
        """Command-line options: each one given (not None) wins over file and environment."""
        given = {k: v for k, v in values.items() if v is not None}
        for key, value in given.items():
            setattr(self, key, value)
        self.explicit = self.explicit | set(given)
        return self

    def check(self, where: str = "configuration") -> StackConfig:
        """Values that are well-typed but not allowed."""
        if self.mode not in MODES:
            raise ConfigError(f"{where}:mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.internal_http not in INTERNAL_HTTP:
            raise ConfigError(
                f"{where}:internal_http: {self.internal_http!r} is not one of "
                + ", ".join(INTERNAL_HTTP)
            )
        for name in (
            "max_build_attempts",
            "token_ttl_s",
            "http_keep_alive_s",
            "max_body_bytes",
            "max_data_body_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}:{name}: must be at least 1")
        for name in (
            "call_timeout_s",
            "start_timeout_s",
            "stop_grace_s",
            "restart_backoff_s",
            "restart_backoff_max_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}:{name}: must be positive")
        if self.restart_limit < 0:
            raise ConfigError(f"{where}:restart_limit: must not be negative")
        if self.node_processes is not None and self.node_processes < 1:
            raise ConfigError(f"{where}:node_processes: must be at least 1")
        if self.stack_name and not all(c.isalnum() or c == "_" for c in self.stack_name):
            raise ConfigError(f"{where}:stack_name: only letters, digits and _ are allowed")
        return self

    def bind_address(self) -> str:
        """The address the stack's servers listen on."""
        return self.listen_address or self.host_address

    def processes_per_component(self) -> int:
        """How many processes one component's instances on a scaled node share at most."""
        if self.node_processes is not None:
            return self.node_processes
        return max(4, os.cpu_count() or 1)

    # -- mode defaults ----------------------------------------------------------
    def for_mode(self) -> StackConfig:
        """Fill in the bindings the mode implies for what was not set explicitly.

        Distributed mode: the RabbitMQ bus (one vhost per stack), PostgreSQL
        databases, HTTP over TCP between the processes.
        """
        if self.mode != "distributed":
            return self
        if "internal_http" not in self.explicit:
            self.internal_http = "tcp"
        if "bus_url" not in self.explicit:
            self.bus_url = f"{DEFAULT_AMQP_SERVER}/{self.stack_name or 'specstack'}"
        if not self.database_server:
            self.database_server = DEFAULT_DATABASE_SERVER
        return self

    # -- derived ----------------------------------------------------------------
    def database_name(self, database: str) -> str:
        """The server-side name of a project database: `<stack_name>_<db>`, e.g. st_nova_db."""
        prefix = self.stack_name or "specstack"
        return f"{prefix}_{database}".replace("-", "_").lower()

    def address(self, host: str, node: str) -> str:
        """The address of the host a node instance runs on (node_addresses, else this host's)."""
        return self.node_addresses.get(host) or self.node_addresses.get(node) or self.host_address

    def trace_store_url(self) -> str | None:
        """The trace store's database URL; None: the SQLite file in the data directory."""
        if self.trace_url:
            return self.trace_url
        if self.mode == "distributed" and self.database_server:
            return f"{self.database_server.rstrip('/')}/{self.database_name('trace')}"
        return None

    def database_url(self, database: str) -> str:
        if database in self.database_urls:
            return self.database_urls[database]
        if self.database_server:
            return f"{self.database_server.rstrip('/')}/{self.database_name(database)}"
        path = self.data_dir / "db" / f"{database}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.as_posix()}"

    def ensure_secrets(self) -> None:
        """Generate the service users' password (and the stack's name) once per data directory.

        A password set in the configuration (a cluster's Secret, the identity host's given to
        another host) is used as it is and never written; a stack name set there is kept.
        """
        given = "service_password" in self.explicit and bool(self.service_password)
        if given and self.stack_name:
            return
        path = self.data_dir / "secrets.json"
        saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        before = dict(saved)
        if not given:
            saved.setdefault("service_password", self.service_password or secrets.token_urlsafe(18))
            self.service_password = saved["service_password"]
        saved.setdefault("stack_name", self.stack_name or f"specstack_{uuid.uuid4().hex[:10]}")
        self.stack_name = self.stack_name or saved["stack_name"]
        if saved != before:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(saved))
            path.chmod(0o600)

    def as_dict(self) -> dict[str, object]:
        return self.model_dump(
            mode="json",
            exclude={"service_password", "osprofiler_hmac_keys", "explicit", "trace_url"},
        )


#: Settings no file or variable sets.
_INTERNAL = frozenset({"explicit"})
#: pydantic's error types, as what the value is not.
_NOT = {"int": "an integer", "float": "a number", "string": "a string", "path": "a path"}


class _Environment(PydanticBaseSettingsSource):
    """`SPECSTACK_<NAME>` variables of `environ`, as the text they hold."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def variable(self, name: str) -> str:
        return f"{self.config.get('env_prefix', '')}{name}".upper()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value = self.environ.get(self.variable(field_name))
        complex_ = self.field_is_complex(field)
        if value is not None and complex_:
            return _from_text(value), field_name, True
        return value, field_name, complex_

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if name not in _INTERNAL:
                value, _, _ = self.get_field_value(field, name)
                if value is not None:
                    found[name] = value
        return found


def _config_error(
    exc: ValidationError, values: Mapping[str, Any], origin: Mapping[str, str]
) -> ConfigError:
    """The first problem of `exc`, named by where its value came from."""
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    where = origin.get(key, key)
    raw = values.get(key)
    if err["type"] == "config":
        return ConfigError(f"{where}: {raw!r} {err['msg']}")
    kind = err["type"].split("_")[0]
    if kind in _NOT:
        return ConfigError(f"{where}: {raw!r} is not {_NOT[kind]}")
    return ConfigError(f"{where}: {raw!r}: {err['msg']}")


def config_file(path: Path | str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: --config, else SPECSTACK_CONFIG, else ./specstack.toml if any."""
    env = os.environ if environ is None else environ
    if path:
        return Path(path)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> StackConfig:
    """Defaults < config file < SPECSTACK_* variables < `overrides` (command-line options)."""
    env = os.environ if environ is None else environ
    found = config_file(path, env)
    where = str(found) if found else "configuration"
    from_file = read_config_file(found) if found is not None else {}
    known = sorted(n for n in StackConfig.model_fields if n not in _INTERNAL)
    for key in from_file:
        if key not in known:
            raise ConfigError(f"{where}:{key}: unknown setting; known settings: {', '.join(known)}")
    source = _Environment(StackConfig, env)
    from_env = source()
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {**from_file, **from_env, **given}
    origin = {k: f"{where}:{k}" for k in from_file}
    origin |= {k: source.variable(k) for k in from_env}
    origin |= {k: f"option {k}" for k in given}
    try:
        config = StackConfig(**values)
    except ValidationError as exc:
        raise _config_error(exc, values, origin) from None
    config.explicit = frozenset(values)
    return config.check(where)
