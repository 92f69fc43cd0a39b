"""HTML forms as the dashboard posts them."""

from __future__ import annotations

import urllib.parse

from starlette.requests import Request


async def form_of(request: Request) -> dict[str, str]:
    """A form's fields (application/x-www-form-urlencoded, the only kind it posts)."""
    fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    return {k: v[-1] for k, v in fields.items()}
