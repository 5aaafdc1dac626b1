"""Every process logs one JSON object per line, the server's own lines included."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from worker.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


def test_uvicorn_lines_become_json_with_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    # As uvicorn leaves it before loading the app: a plain-text handler that does not propagate.
    plain = logging.getLogger("uvicorn.error")
    plain.handlers[:] = [logging.StreamHandler()]
    plain.propagate = False
    configure_logging("INFO", json=True)
    structlog.contextvars.bind_contextvars(request_id="R-1")
    try:
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        structlog.get_logger().info("job_queued", project="demo")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["Started server process [42]", "job_queued"]
    assert all(line["request_id"] == "R-1" for line in lines)
    assert lines[0]["logger"] == "uvicorn.error" and lines[0]["level"] == "info"
