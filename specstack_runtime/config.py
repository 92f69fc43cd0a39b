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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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


@dataclass
class StackConfig:
    data_dir: Path = Path(".specstack")
    mode: str = "embedded"
    host_address: str = "127.0.0.1"
    base_port: int | None = None  # None: each API listens on the port the spec gives it
    computes: int | None = None  # None: the topology's compute count
    driver: str | None = None  # None: the topology's driver for compute nodes
    # driver name -> extra keyword arguments of its hypervisor (e.g. libvirt: uri, virt_type)
    driver_options: dict[str, dict[str, str]] = field(default_factory=dict)
    bus_url: str = "memory://"  # distributed mode's default: DEFAULT_AMQP_SERVER/<stack_name>
    # "local": calls between this process's own APIs skip the socket (embedded);
    # "tcp": every call goes over the network, as between processes.
    internal_http: str = "local"
    database_urls: dict[str, str] = field(default_factory=dict)  # database component -> URL
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
    service_password: str = ""  # generated once per data directory
    call_timeout_s: float = 30.0
    scheduler_filters: tuple[str, ...] = (
        "ComputeFilter",
        "AvailabilityZoneFilter",
        "RamFilter",
        "DiskFilter",
        "CoreFilter",
    )
    scheduler_weighers: tuple[tuple[str, float], ...] = (("RAMWeigher", 1.0),)
    max_build_attempts: int = 3
    guest_boot_timeout_s: float = 300.0  # a real guest must run by then, or its build fails
    # per-project limits of the spec's quotas (spec/resources `quotas`), overriding their defaults
    quotas: dict[str, int] = field(default_factory=dict)
    # distributed mode: the supervisor
    start_timeout_s: float = 120.0  # for every process to answer its health check
    stop_grace_s: float = 10.0  # between SIGTERM and SIGKILL
    restart_limit: int = 3  # restarts of one crashed process before the stack gives up
    # Which settings were set explicitly (file, environment, command line), not defaulted.
    explicit: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    # -- sources ----------------------------------------------------------------
    def apply_mapping(self, values: Mapping[str, Any], where: str) -> StackConfig:
        """Set the settings in `values` (a parsed config file); `where` names it in errors."""
        known = {f.name: f for f in fields(self) if f.name not in _INTERNAL}
        for key, raw in values.items():
            f = known.get(key)
            if f is None:
                raise ConfigError(
                    f"{where}:{key}: unknown setting; known settings: {', '.join(sorted(known))}"
                )
            setattr(self, key, _coerce(key, str(f.type), raw, f"{where}:{key}"))
        self.explicit = self.explicit | set(values)
        return self

    def apply_environment(self, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Override settings from SPECSTACK_<NAME> variables (lists as JSON or a,b,c)."""
        env = os.environ if environ is None else environ
        seen: set[str] = set()
        for f in fields(self):
            if f.name in _INTERNAL:
                continue
            var = f"SPECSTACK_{f.name.upper()}"
            raw = env.get(var)
            if raw is None:
                continue
            setattr(self, f.name, _coerce(f.name, str(f.type), _from_text(str(f.type), raw), var))
            seen.add(f.name)
        self.explicit = self.explicit | seen
        return self

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
        for name in ("max_build_attempts", "token_ttl_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}:{name}: must be at least 1")
        for name in ("call_timeout_s", "start_timeout_s", "stop_grace_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}:{name}: must be positive")
        if self.restart_limit < 0:
            raise ConfigError(f"{where}:restart_limit: must not be negative")
        if self.stack_name and not all(c.isalnum() or c == "_" for c in self.stack_name):
            raise ConfigError(f"{where}:stack_name: only letters, digits and _ are allowed")
        return self

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

    def database_url(self, database: str) -> str:
        if database in self.database_urls:
            return self.database_urls[database]
        if self.database_server:
            return f"{self.database_server.rstrip('/')}/{self.database_name(database)}"
        path = self.data_dir / "db" / f"{database}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.as_posix()}"

    def ensure_secrets(self) -> None:
        """Generate the service users' password (and the stack's name) once per data directory."""
        path = self.data_dir / "secrets.json"
        if path.exists():
            saved = json.loads(path.read_text())
            self.service_password = saved["service_password"]
            if not self.stack_name:
                self.stack_name = saved.get("stack_name", "")
            if self.stack_name and self.stack_name != saved.get("stack_name"):
                saved["stack_name"] = saved.get("stack_name") or self.stack_name
                path.write_text(json.dumps(saved))
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.service_password = self.service_password or secrets.token_urlsafe(18)
        self.stack_name = self.stack_name or f"specstack_{uuid.uuid4().hex[:10]}"
        path.write_text(
            json.dumps({"service_password": self.service_password, "stack_name": self.stack_name})
        )
        path.chmod(0o600)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        d.pop("service_password")
        d.pop("explicit")
        return d


_INTERNAL = frozenset({"explicit", "service_password"})


def _from_text(type_name: str, raw: str) -> Any:
    """An environment variable's text as the value a config file would hold."""
    if "tuple" in type_name or "dict" in type_name:
        text = raw.strip()
        if text.startswith(("[", "{")):
            try:
                return json.loads(text)
            except ValueError:
                return raw  # _coerce names the problem
        if "dict" in type_name and "tuple[tuple" not in type_name:
            return dict(p.split("=", 1) for p in text.split(",") if "=" in p)
        if "tuple[tuple" in type_name:
            return {k: v for k, _, v in (p.partition("=") for p in text.split(",") if p.strip())}
        return [p.strip() for p in text.split(",") if p.strip()]
    return raw


def _coerce(name: str, type_name: str, raw: Any, where: str) -> Any:
    """`raw` as the type of setting `name`, or ConfigError naming `where`."""
    optional = "None" in type_name
    if raw is None or (optional and raw == ""):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required")

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: {raw!r} is not {what}")

    if type_name.startswith("Path"):
        if not isinstance(raw, str) or not raw:
            raise bad("a path")
        return Path(raw)
    if type_name.startswith("int"):
        if isinstance(raw, bool):
            raise bad("an integer")
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw))
        except ValueError:
            raise bad("an integer") from None
    if type_name.startswith("float"):
        if isinstance(raw, bool):
            raise bad("a number")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if type_name.startswith("str"):
        if not isinstance(raw, str):
            raise bad("a string")
        return raw
    if type_name.startswith("dict[str, dict"):  # driver_options: [driver_options.libvirt]
        if not isinstance(raw, dict) or not all(
            isinstance(k, str)
            and isinstance(v, dict)
            and all(isinstance(x, str) and isinstance(y, str) for x, y in v.items())
            for k, v in raw.items()
        ):
            raise bad('a table of driver tables of key = "value"')
        return {k: dict(v) for k, v in raw.items()}
    if type_name.startswith("dict[str, int]"):  # quotas: name = limit
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in raw.items()
        ):
            raise bad("a table of quota = integer limit")
        return dict(raw)
    if type_name.startswith("dict"):  # database_urls
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise bad('a table of name = "URL"')
        return dict(raw)
    if type_name.startswith("tuple[tuple"):  # weighers: name = multiplier
        if not isinstance(raw, dict):
            raise bad("a table of weigher = multiplier")
        out = []
        for k, v in raw.items():
            try:
                out.append((str(k), float(v)))
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{k}: {v!r} is not a number") from None
        return tuple(out)
    if type_name.startswith("tuple"):
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise bad("a list of names")
        return tuple(raw)
    raise ConfigError(f"{where}: settings of type {type_name} cannot be configured")


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
    config = StackConfig()
    found = config_file(path, environ)
    where = str(found) if found else "configuration"
    if found is not None:
        config.apply_mapping(read_config_file(found), where)
    config.apply_environment(environ)
    config.apply_overrides(**overrides)
    return config.check(where)
