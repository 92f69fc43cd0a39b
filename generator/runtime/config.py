"""Stack configuration: defaults for embedded mode, overridable per run."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
    bus_url: str = "memory://"
    # "local": calls between this process's own APIs skip the socket (embedded);
    # "tcp": every call goes over the network, as between processes.
    internal_http: str = "local"
    database_urls: dict[str, str] = field(default_factory=dict)  # database component -> URL
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
    quota_instances: int = 100  # instances a project may have (nova's default is 10)

    def apply_environment(self, environ: dict[str, str] | None = None) -> StackConfig:
        """Override numeric and text settings from SPECSTACK_<NAME> variables."""
        import os
        from dataclasses import fields

        env = os.environ if environ is None else environ
        for f in fields(self):
            raw = env.get(f"SPECSTACK_{f.name.upper()}")
            if raw is None:
                continue
            current = getattr(self, f.name)
            try:
                if isinstance(current, bool):
                    value: object = raw.lower() in ("1", "true", "yes", "on")
                elif isinstance(current, int) or f.type in ("int", "int | None"):
                    value = int(raw)
                elif isinstance(current, float):
                    value = float(raw)
                elif isinstance(current, str) or f.type in ("str", "str | None"):
                    value = raw
                else:
                    continue
            except ValueError:
                raise ValueError(
                    f"SPECSTACK_{f.name.upper()}={raw!r} is not a valid {f.type}"
                ) from None
            setattr(self, f.name, value)
        return self

    def database_url(self, database: str) -> str:
        if database in self.database_urls:
            return self.database_urls[database]
        path = self.data_dir / "db" / f"{database}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.as_posix()}"

    def ensure_secrets(self) -> None:
        """Generate the service users' password once and keep it in the data directory."""
        path = self.data_dir / "secrets.json"
        if path.exists():
            self.service_password = json.loads(path.read_text())["service_password"]
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.service_password = self.service_password or secrets.token_urlsafe(18)
        path.write_text(json.dumps({"service_password": self.service_password}))
        path.chmod(0o600)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        d.pop("service_password")
        return d
