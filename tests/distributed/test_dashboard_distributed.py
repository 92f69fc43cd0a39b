"""The dashboard of a distributed stack (a process of its own beside one per component per
node, RabbitMQ, PostgreSQL): log in, launch, and the 15 steps, gathered from every process's
trace, lit in the declared order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ..dashboard.conftest import Served, browser
from ..dashboard.test_dashboard import BOOT, log_in_as, watch_launch
from ..wire.conftest import running_stack


def test_launch_on_a_distributed_stack(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with running_stack(tmp_path_factory, "dashboard-dist", mode="distributed") as stack:
        out = "\n".join(stack.output)
        m = re.search(r"^dashboard: (http://\S+)", out, re.M)
        assert m, out
        clouds = yaml.safe_load(stack.clouds.read_text())["clouds"]
        served = Served(
            stack.data_dir, m.group(1).rstrip("/"), clouds["specstack"]["auth"]["auth_url"], clouds
        )
        assert (stack.data_dir / "logs" / "dashboard.controller.log").is_file()
        with browser(tmp_path / "profile") as ctx:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            log_in_as(page, served)
            statuses, _live = watch_launch(page, "dist-web-1", volume=None)
            assert statuses == ["ok"] * 14 + ["skipped"]  # no volume asked for: 15 skipped
            assert len(BOOT["steps"]) == 15
            assert errors == []
