"""API path templates as the dashboard fills them in."""

from __future__ import annotations

import re

#: Path parameters the dashboard fills from the token itself.
TOKEN_PARAMS = ("project_id", "tenant_id")
PARAM = re.compile(r"\{([^}]+)\}")


def fill(path: str, project_id: str | None, **params: str) -> str:
    """A path template with the token's project and the given parameters filled in."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in params:
            return params[name]
        if name in TOKEN_PARAMS and project_id:
            return project_id
        raise KeyError(name)

    return PARAM.sub(one, path)


def last_param(path: str) -> str:
    """The name of the last parameter of a path template (an item's id)."""
    names = PARAM.findall(path)
    return names[-1] if names else ""
