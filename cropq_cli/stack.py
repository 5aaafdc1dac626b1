"""``cropq up``: the whole service in the foreground, with embedded servers unless told otherwise.

Unless ``CROPQ_REDIS_URL`` / ``CROPQ_S3_ENDPOINT`` point at running servers, it starts an embedded Valkey
(append-only, so accepted jobs survive a restart) and SeaweedFS with data under ``CROPQ_DATA_DIR``, then the
API and N workers; Ctrl-C (or SIGTERM) stops everything cleanly, workers first finishing their job.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cropq_cli.errors import CliError
from cropq_cli.localstack import (
    ManagedProcess,
    free_port,
    start_api,
    start_seaweedfs,
    start_valkey,
    start_worker,
)
from cropq_cli.stack_file import StackEndpoints, live_stack, remove_stack_file, write_stack_file
from worker.settings import Settings

DEMO_PROJECT = "demo"
DEMO_BUCKET = "demo"
DEMO_THUMBS = "demo-thumbs"
"""Where the demo project may write rendered crops (its WritableBuckets)."""


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _persisted(path: Path, make: Any) -> Any:
    """A value generated once and kept in the data folder, so restarts reuse keys and secrets."""
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    path.chmod(0o600)
    return value


def _sample_jpeg() -> bytes:
    """A small synthetic photo-like picture for the printed example (no data files shipped)."""
    import cv2
    import numpy as np

    h, w = 600, 900
    y, x = np.mgrid[0:h, 0:w]
    img = np.dstack([120 + 60 * y / h, 160 + 40 * x / w, 200 - 50 * y / h]).astype(np.uint8)
    cv2.circle(img, (660, 260), 110, (40, 90, 230), -1)
    cv2.rectangle(img, (120, 380), (300, 560), (60, 160, 60), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def run_up(port: int | None, workers: int | None) -> int:
    env_given = dict(os.environ)
    base = Settings()
    data = base.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    _refuse_a_busy_start(data, base.api_host, port or base.api_port)
    try:
        return _run_stack(env_given, data, port, workers)
    except (RuntimeError, TimeoutError) as e:  # a server that did not start: its log says why
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"{first.rstrip(':')}; see the logs under {data}") from None


def _refuse_a_busy_start(data: Path, host: str, port: int) -> None:
    """Fail before starting anything when the data folder or the API port is in use."""
    running = live_stack(data)
    if running is not None:
        raise CliError(
            f"`cropq up` (pid {running.pid}) is already running with the data folder {data} "
            f"({running.endpoints.api_url}): use it, stop it, or set CROPQ_DATA_DIR to another folder"
        )
    if not _bindable(host, port):
        raise CliError(
            f"port {port} on {host} is taken: stop what listens there, or choose another port with "
            "--port or CROPQ_API_PORT"
        )


def _bindable(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _run_stack(env_given: dict[str, str], data: Path, port: int | None, workers: int | None) -> int:
    procs: list[ManagedProcess] = []
    restarts: dict[str, Callable[[], ManagedProcess]] = {}
    env: dict[str, str] = {**env_given, "PYTHONUNBUFFERED": "1"}
    try:
        if "CROPQ_REDIS_URL" not in env_given:
            rport = 6390 if _port_free(6390) else free_port()
            restarts["valkey"] = lambda: start_valkey(data / "valkey", rport, durable=True)
            procs.append(restarts["valkey"]())
            env["CROPQ_REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
        if "CROPQ_S3_ENDPOINT" not in env_given:
            creds = _persisted(
                data / "s3-credentials.json",
                lambda: {"AccessKey": "cropq" + secrets.token_hex(4), "SecretKey": secrets.token_urlsafe(24)},
            )
            sport = 8333 if _port_free(8333) else free_port()
            restarts["seaweedfs"] = lambda: start_seaweedfs(
                data / "s3", sport, creds["AccessKey"], creds["SecretKey"]
            )
            procs.append(restarts["seaweedfs"]())
            env.update(
                CROPQ_S3_ENDPOINT=f"127.0.0.1:{sport}",
                CROPQ_S3_ACCESS_KEY=creds["AccessKey"],
                CROPQ_S3_SECRET_KEY=creds["SecretKey"],
                CROPQ_S3_SECURE="false",
            )
        if not env_given.get("CROPQ_SECRET_KEY"):
            env["CROPQ_SECRET_KEY"] = _persisted(data / "secret-key.json", lambda: secrets.token_urlsafe(32))
        dev_key: dict[str, Any] | None = None
        if not env_given.get("CROPQ_ACCESS_KEYS"):
            dev_key = _persisted(
                data / "dev-access-key.json",
                lambda: {
                    "AccessKeyId": "LTAIdev" + secrets.token_hex(8),
                    "AccessKeySecret": secrets.token_urlsafe(24),
                    "Projects": ["*"],
                },
            )
            env["CROPQ_ACCESS_KEYS"] = json.dumps([dev_key])
        if port is not None:
            env["CROPQ_API_PORT"] = str(port)
        settings = Settings(_env_file=None, **_settings_kwargs(env))
        n = workers or settings.workers
        for i in range(n):
            worker = start_worker(
                env,
                f"w{i + 1}",
                settings.worker_concurrency,
                settings.queue_name,
                data / "logs" / f"worker-{i + 1}.log",
            )
            # Each crop worker comes with a callback worker on the webhook queue; both are supervised.
            procs.extend(p for p in (worker, worker.webhooks) if p is not None)
        procs.append(start_api(env, settings.api_host, settings.api_port, data / "logs" / "api.log"))
        url = f"http://{settings.api_host}:{settings.api_port}"
        if dev_key is not None:
            _prepare_demo(url, dev_key, settings)
        write_stack_file(data, _endpoints(url, settings, dev_key))
        _banner(url, settings, dev_key, n, data)
        return _supervise(procs, restarts)
    finally:
        remove_stack_file(data)  # before the stop: no second shell picks a stack that is going away
        for p in reversed(procs):
            p.stop()


def _endpoints(url: str, s: Settings, key: dict[str, Any] | None) -> StackEndpoints:
    """What the other commands need, as this stack runs (its generated ports and keys included)."""
    if s.api_host in ("0.0.0.0", "::"):  # listens everywhere; a client on this host uses loopback
        url = f"http://127.0.0.1:{s.api_port}"
    return StackEndpoints(
        api_url=url,
        redis_url=s.redis_url,
        s3_endpoint=s.s3_endpoint,
        s3_access_key=s.s3_access_key,
        s3_secret_key=s.s3_secret_key.get_secret_value(),
        s3_secure=s.s3_secure,
        queue_name=s.queue_name,
        secret_key=s.secret_key.get_secret_value(),
        access_keys=[key] if key is not None else [],
        access_key_id=key["AccessKeyId"] if key is not None else None,
        access_key_secret=key["AccessKeySecret"] if key is not None else None,
    )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _settings_kwargs(env: dict[str, str]) -> dict[str, Any]:
    prefix = "CROPQ_"
    out: dict[str, Any] = {}
    for k, v in env.items():
        name = k[len(prefix) :].lower()
        if k.startswith(prefix) and name in Settings.model_fields:
            out[name] = v
    return out


def _prepare_demo(url: str, key: dict[str, Any], settings: Settings) -> None:
    """Create the demo project and bucket and put a sample image in it, so the printed curl works."""
    from minio import Minio

    s3 = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=settings.s3_secure,
    )
    for bucket in (DEMO_BUCKET, DEMO_THUMBS):
        if not s3.bucket_exists(bucket):
            s3.make_bucket(bucket)
    import io

    data = _sample_jpeg()
    s3.put_object(DEMO_BUCKET, "sample.jpg", io.BytesIO(data), len(data), content_type="image/jpeg")
    auth = {"Authorization": f"Bearer {key['AccessKeyId']}:{key['AccessKeySecret']}"}
    httpx.put(
        f"{url}/v1/projects/{DEMO_PROJECT}",
        json={"Buckets": [DEMO_BUCKET], "WritableBuckets": [DEMO_THUMBS]},
        headers=auth,
        timeout=10,
    ).raise_for_status()


def _banner(url: str, s: Settings, key: dict[str, Any] | None, workers: int, data: Path) -> None:
    _say(f"cropq is up: API {url}  (docs {url}/docs), {workers} worker(s), data in {data}")
    _say(f"  Redis: {s.redis_url}")
    _say(
        f"  S3:    http{'s' if s.s3_secure else ''}://{s.s3_endpoint}  access key {s.s3_access_key}  "
        f"secret {s.s3_secret_key.get_secret_value()}"
    )
    if key is not None:
        auth = f"{key['AccessKeyId']}:{key['AccessKeySecret']}"
        _say(
            f"  Dev access key (all projects): AccessKeyId {key['AccessKeyId']}  "
            f"AccessKeySecret {key['AccessKeySecret']}"
        )
        _say("Try it:")
        _say(
            f"  curl -s -X POST {url}/v1/projects/{DEMO_PROJECT}/crop-jobs \\\n"
            f"    -H 'Authorization: Bearer {auth}' -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"SourceURI": "oss://{DEMO_BUCKET}/sample.jpg", "AspectRatios": ["1:1", "16:9"]}}\''
        )
        _say(
            f"  curl -s '{url}/v1/projects/{DEMO_PROJECT}/crop-jobs/<RequestId>?wait=10' "
            f"-H 'Authorization: Bearer {auth}'"
        )
        _say(f"  Upload your own: cropq upload photo.jpg --bucket {DEMO_BUCKET}")
        _say(
            f"  From another shell in this folder (no variables needed): "
            f"cropq submit photo.jpg --project {DEMO_PROJECT}"
        )
        _say(
            f"  Or open {url}/ui (project {DEMO_PROJECT}; render target "
            f"oss://{DEMO_THUMBS}/{{Stem}}/{{Ratio}}.webp)"
        )
    _say("Press Ctrl-C to stop.")


RESTARTS_PER_MINUTE = 5
"""An embedded server that exits more often than this is failing, not faulting: the stack stops."""


def _supervise(procs: list[ManagedProcess], restarts: dict[str, Callable[[], ManagedProcess]]) -> int:
    """Watch every process. An embedded server (Valkey, SeaweedFS) that exits is started again on its port
    and data (the workers and the API reconnect by themselves, and nothing accepted is lost: README
    "Reliability"); any other exit stops the stack, as a bug should."""
    stop = threading.Event()
    started: dict[str, list[float]] = {}

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop.is_set():
        for i, p in enumerate(procs):
            if p.alive():
                continue
            now = time.monotonic()
            recent = [t for t in started.get(p.name, []) if now - t < 60]
            again = restarts.get(p.name)
            if again is None or len(recent) >= RESTARTS_PER_MINUTE:
                _say(f"{p.name} exited with {p.proc.returncode}; stopping. Last log lines:\n{p.tail(20)}")
                return 1
            _say(f"{p.name} exited with {p.proc.returncode}; starting it again")
            p.stop()
            try:
                procs[i] = again()
            except (RuntimeError, TimeoutError) as e:
                _say(f"{p.name} did not start again: {e}; stopping.")
                return 1
            started[p.name] = [*recent, now]
        stop.wait(0.5)
    _say("Stopping: workers finish their current job first...")
    return 0
