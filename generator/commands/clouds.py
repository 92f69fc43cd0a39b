"""`specstack clouds --identity URL`: a clouds.yaml for a stack whose identity API runs
elsewhere (another host of a distributed stack), with the configured passwords."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

from specstack_runtime.config import ConfigError, load_config


def identity_root(url: str) -> str:
    """The identity API's root (`http://HOST:PORT`) from the URL given, `/v3` or not."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--identity {url!r} is not an http(s)://HOST[:PORT] URL")
    try:
        parts.port  # noqa: B018  # a bad port raises here
    except ValueError:
        raise ValueError(f"--identity {url!r} has a bad port") from None
    path = parts.path.rstrip("/").removesuffix("/v3")
    return f"{parts.scheme}://{parts.netloc}{path}"


def main(identity: str, output: Path, config_path: str | None) -> int:
    from generator.commands.run import write_clouds

    try:
        root = identity_root(identity)
        config = load_config(config_path)
    except (ValueError, ConfigError) as exc:
        print(f"specstack clouds: {exc}", file=sys.stderr)
        return 2
    try:
        written = write_clouds(config, root, output)
    except OSError as exc:
        print(f"specstack clouds: cannot write {output}: {exc}", file=sys.stderr)
        return 2
    print(f"{written}: clouds specstack, specstack-admin, specstack-service at {root}/v3")
    print(f"export OS_CLIENT_CONFIG_FILE={written}\nexport OS_CLOUD=specstack")
    return 0
