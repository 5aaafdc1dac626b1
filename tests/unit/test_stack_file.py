"""The ``cropq up`` stack file as the other commands read it: below the environment, only while its process
runs, private to its owner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cropq_cli.settings import cli_settings
from cropq_cli.stack_file import (
    StackEndpoints,
    live_stack,
    read_stack_file,
    remove_stack_file,
    stack_file_path,
    write_stack_file,
)

ENDPOINTS = StackEndpoints(
    api_url="http://127.0.0.1:18000",
    redis_url="redis://127.0.0.1:16390/0",
    s3_endpoint="127.0.0.1:18333",
    s3_access_key="cropqabcd",
    s3_secret_key="s3-secret-from-the-stack",
    s3_secure=False,
    queue_name="cropq",
    secret_key="k" * 40,
    access_keys=[{"AccessKeyId": "LTAIdev0123", "AccessKeySecret": "x" * 24, "Projects": ["*"]}],
    access_key_id="LTAIdev0123",
    access_key_secret="x" * 24,
)


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in list(os.environ):
        if var.startswith("CROPQ_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("CROPQ_DATA_DIR", str(tmp_path))
    return tmp_path


def test_the_commands_read_a_live_stack_below_the_environment(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_settings().api_url is None  # no stack: the defaults
    write_stack_file(data, ENDPOINTS)
    s = cli_settings()
    assert (s.api_url, s.redis_url, s.s3_endpoint) == (
        ENDPOINTS.api_url,
        ENDPOINTS.redis_url,
        "127.0.0.1:18333",
    )
    assert s.access_key_secret is not None and s.access_key_secret.get_secret_value() == "x" * 24
    assert [k.AccessKeyId for k in s.access_keys] == ["LTAIdev0123"]
    monkeypatch.setenv("CROPQ_REDIS_URL", "redis://elsewhere:6379/0")
    s = cli_settings()
    assert (
        s.redis_url == "redis://elsewhere:6379/0" and s.api_url == ENDPOINTS.api_url
    )  # env wins, per variable


def test_the_data_folder_is_the_one_the_environment_names(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_stack_file(data, ENDPOINTS)
    monkeypatch.setenv("CROPQ_DATA_DIR", str(data / "other"))
    assert cli_settings().api_url is None


def test_the_file_is_private_and_removed_by_its_stack_only(data: Path) -> None:
    path = write_stack_file(data, ENDPOINTS)
    assert path == stack_file_path(data) and path.stat().st_mode & 0o777 == 0o600
    record = read_stack_file(path)
    assert record is not None and record.pid == os.getpid()
    theirs = record.model_copy(update={"pid": record.pid + 1})
    path.write_text(theirs.model_dump_json())
    remove_stack_file(data)  # another `cropq up` took the folder: its file stays
    assert path.exists()
    write_stack_file(data, ENDPOINTS)
    remove_stack_file(data)
    assert not path.exists()


def test_a_file_whose_process_is_gone_is_stale(data: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    write_stack_file(data, ENDPOINTS)
    record = read_stack_file(stack_file_path(data))
    assert record is not None
    stack_file_path(data).write_text(record.model_copy(update={"pid": int(gone.stdout)}).model_dump_json())
    assert live_stack(data) is None and cli_settings().api_url is None
    # The same pid with another start time is another process (a reused pid), not the stack.
    stack_file_path(data).write_text(
        record.model_copy(update={"started": record.started + 1}).model_dump_json()
    )
    assert live_stack(data) is None
