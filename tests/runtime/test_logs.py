"""The level of per-request log lines: DEBUG by default, INFO when the operator asks."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from specstack_runtime import logs


@pytest.fixture
def restore() -> Iterator[None]:
    roots = [logging.getLogger(name) for name in ("specstack", "specstack_runtime")]
    saved = [(r.level, r.propagate) for r in roots]
    yield None
    logs.configure()  # no handler again, the default request level
    for root, (level, propagate) in zip(roots, saved, strict=True):
        root.setLevel(level)
        root.propagate = propagate


def _access_line(buf: io.StringIO) -> str:
    logging.getLogger("specstack.api").log(logs.request_level(), '"GET /v2.1/servers" status: 200')
    logging.getLogger("specstack.api").warning("a warning")
    return buf.getvalue()


def test_per_request_lines_are_debug_by_default(restore: None) -> None:
    buf = io.StringIO()
    logs.configure(stream=buf, level=logging.INFO)
    text = _access_line(buf)
    assert "status: 200" not in text
    assert " WARNING specstack [-] a warning" in text  # warnings are kept

    buf = io.StringIO()
    logs.configure(stream=buf, level=logging.DEBUG)
    assert ' DEBUG specstack [-] "GET /v2.1/servers" status: 200' in _access_line(buf)


def test_the_request_level_is_configurable(
    restore: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(logs.REQUEST_LOG_ENV, "info")
    buf = io.StringIO()
    logs.configure(stream=buf, level=logging.INFO, request_level=logs.request_level_from_env())
    assert ' INFO specstack [-] "GET /v2.1/servers" status: 200' in _access_line(buf)


def test_a_bad_request_level_falls_back_to_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(logs.REQUEST_LOG_ENV, "chatty")
    assert logs.request_level_from_env() == "DEBUG"
    assert "SPECSTACK_REQUEST_LOG_LEVEL='CHATTY' is not a logging level" in capsys.readouterr().err
