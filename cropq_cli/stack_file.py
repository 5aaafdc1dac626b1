"""The running ``cropq up`` stack's endpoints and development key, kept in its data folder.

``cropq up`` writes ``<CROPQ_DATA_DIR>/stack.json`` (mode 0600: it holds secrets) once everything is ready,
and removes it when it stops. A stack killed too hard to remove it leaves a stale file: the file names the
``cropq up`` process (pid and start time), and a file whose process is gone is ignored. The other commands
read it through :class:`cropq_cli.settings.CliSettings`, below the environment.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

STACK_FILE = "stack.json"


class StackEndpoints(BaseModel):
    """What a second shell needs to reach the stack; field names are Settings fields."""

    api_url: str
    redis_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_secure: bool
    queue_name: str
    secret_key: str
    access_keys: list[dict[str, Any]] = []
    access_key_id: str | None = None
    access_key_secret: str | None = None


class StackFile(BaseModel):
    pid: int
    started: int
    """The process's start time in clock ticks since boot (/proc/<pid>/stat): a reused pid differs."""
    endpoints: StackEndpoints


def stack_file_path(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (field 22 of /proc/<pid>/stat), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def write_stack_file(data_dir: Path, endpoints: StackEndpoints) -> Path:
    """Write the file for this process, readable by its owner only from the first byte."""
    pid = os.getpid()
    record = StackFile(pid=pid, started=process_start_ticks(pid) or 0, endpoints=endpoints)
    path = stack_file_path(data_dir)
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(record.model_dump_json(indent=2))
    tmp.replace(path)  # a reader sees the old file or the whole new one
    return path


def remove_stack_file(data_dir: Path) -> None:
    """Remove the file if it is this process's (another ``cropq up`` may have taken the folder since)."""
    path = stack_file_path(data_dir)
    found = read_stack_file(path)
    if found is not None and found.pid == os.getpid():
        path.unlink(missing_ok=True)


def read_stack_file(path: Path) -> StackFile | None:
    """The file's record if it is readable and well formed, whether or not its stack still runs."""
    try:
        return StackFile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def live_stack(data_dir: Path) -> StackFile | None:
    """The record of a ``cropq up`` that is still running with this data folder; None if none is or the
    file is stale (its process gone, or the pid now someone else's)."""
    found = read_stack_file(stack_file_path(data_dir))
    if found is None or process_start_ticks(found.pid) != found.started:
        return None
    return found
