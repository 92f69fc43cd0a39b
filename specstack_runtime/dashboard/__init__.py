"""The web dashboard: the spec's client component that listens on a port (horizon).

`build_app` gives its ASGI app; `specstack run` serves it beside the APIs. See
`app.py` for what it does and `listings.py` for how the spec drives it.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette

from specstack_runtime.config import StackConfig
from specstack_runtime.stackinfo import StackInfo


def build_app(info: StackInfo, config: StackConfig, component: str, openapi_dir: Path) -> Starlette:
    """The dashboard of `component`, talking to the identity API this stack serves."""
    from specstack_runtime.dashboard.app import Dashboard

    identity = info.api_of_type("identity")
    comp = info.api_component(identity)
    url = info.endpoint(identity, config) + (comp.get("catalog") or {}).get("path", "")
    report = config.data_dir / "conform-report.html"  # `specstack conform`'s default
    return Dashboard(info, url, openapi_dir, component=component, report=report).build()
