"""Credentials for the suite from a `clouds.yaml`, as the openstack CLI and openstacksdk read
it: the file named by OS_CLIENT_CONFIG_FILE, else ./clouds.yaml,
~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml (the first that exists)."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml


class CloudError(ValueError):
    """A cloud that cannot be used: no file, no such cloud, or credentials missing."""


def identity_root(url: str) -> str:
    """The identity service's root, whether given as clients write it (`.../v3`) or not."""
    root = url.strip().rstrip("/")
    for suffix in ("/v3", "/v2.0"):
        if root.endswith(suffix):
            return root[: -len(suffix)]
    return root


def api_root(url: str, catalog_path: str) -> str:
    """The base an API's operation paths go after, from its catalog URL: the URL without
    the API's own catalog path (`/v2.1`, `/v1/AUTH_{project_id}`), any prefix kept (a
    cloud behind one web server publishes `http://HOST/compute/v2.1`)."""
    parsed = urlsplit(url.strip())
    pattern = re.escape(catalog_path.rstrip("/")).replace(re.escape("{project_id}"), "[^/]+")
    path = parsed.path.rstrip("/")
    found = re.search(f"{pattern}(?=/|$)", path) if pattern else None
    kept = path[: found.start()] if found else path
    return f"{parsed.scheme}://{parsed.netloc}{kept}"


@dataclass(frozen=True)
class Credentials:
    """A user, its password and the project its token is scoped to."""

    identity_url: str  # the identity root (no /v3)
    username: str
    password: str
    project_name: str
    # keystone names a domain by name or by id: ("name", "Default") or ("id", "default")
    user_domain: tuple[str, str] = ("name", "Default")
    project_domain: tuple[str, str] = ("name", "Default")
    source: str = "specstack's defaults"  # where they came from, for messages

    def __repr__(self) -> str:  # never the password
        return f"Credentials({self.username}@{self.project_name} from {self.source})"

    def auth_body(self) -> dict[str, Any]:
        """keystone's password authentication, scoped to the project."""
        user = {
            "name": self.username,
            "domain": dict([self.user_domain]),
            "password": self.password,
        }
        return {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {
                    "project": {"name": self.project_name, "domain": dict([self.project_domain])}
                },
            }
        }


def search_paths() -> list[Path]:
    named = os.environ.get("OS_CLIENT_CONFIG_FILE")
    if named:
        return [Path(named)]
    return [
        Path("clouds.yaml"),
        Path.home() / ".config" / "openstack" / "clouds.yaml",
        Path("/etc/openstack/clouds.yaml"),
    ]


def _clouds_file(path: Path | None) -> Path:
    candidates = [path] if path is not None else search_paths()
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise CloudError(f"no clouds.yaml found (looked at {tried}); set OS_CLIENT_CONFIG_FILE")


def load_cloud(name: str, path: Path | None = None) -> Credentials:
    """The password credentials of cloud `name` in the clouds.yaml found (or `path`)."""
    found = _clouds_file(path)
    try:
        data = yaml.safe_load(found.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CloudError(f"{found}: not a readable clouds.yaml: {exc}") from exc
    clouds = data.get("clouds") if isinstance(data, dict) else None
    if not isinstance(clouds, dict) or not clouds:
        raise CloudError(f"{found}: no `clouds:` mapping")
    cloud = clouds.get(name)
    if not isinstance(cloud, dict):
        close = difflib.get_close_matches(name, [str(c) for c in clouds], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = ", ".join(sorted(str(c) for c in clouds))
        raise CloudError(f"{found}: no cloud '{name}'{hint} (clouds: {known})")
    raw = cloud.get("auth")
    auth: dict[str, Any] = raw if isinstance(raw, dict) else {}
    missing = [k for k in ("auth_url", "username", "password", "project_name") if not auth.get(k)]
    if missing:
        raise CloudError(
            f"{found}: cloud '{name}' lacks {', '.join(missing)} under auth: "
            "the suite logs in with a password, scoped to a project"
        )
    return Credentials(
        identity_url=identity_root(str(auth["auth_url"])),
        username=str(auth["username"]),
        password=str(auth["password"]),
        project_name=str(auth["project_name"]),
        user_domain=_domain(auth, "user"),
        project_domain=_domain(auth, "project"),
        source=f"cloud '{name}' of {found}",
    )


def _domain(auth: dict[str, Any], whose: str) -> tuple[str, str]:
    if auth.get(f"{whose}_domain_id"):
        return ("id", str(auth[f"{whose}_domain_id"]))
    return ("name", str(auth.get(f"{whose}_domain_name") or "Default"))
