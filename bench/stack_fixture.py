"""A whole cropq on loopback for the benchmarks: Valkey, SeaweedFS, API and crop workers as child processes
in one temporary folder, with the faults the chaos script needs (stop and restart Valkey or SeaweedFS on
the same port and data, SIGKILL a worker child) and the readings the soak needs (process-tree RSS, Redis
memory, queue backlog, job records).

Nothing outside the folder and the loopback ports it picks is touched.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cropq_cli.localstack import (  # noqa: E402
    ManagedProcess,
    WorkerProcess,
    child_pids,
    free_port,
    start_api,
    start_seaweedfs,
    start_valkey,
    start_worker,
    wait_for_workers,
)
from worker import keys  # noqa: E402
from worker.redis_clients import sync_client  # noqa: E402

BENCH_KEY = {
    "AccessKeyId": "LTAIbenchadmin0001",
    "AccessKeySecret": "bench-secret-0123456789",
    "Projects": ["*"],
}
S3_ACCESS_KEY = "benchkey"
S3_SECRET_KEY = "bench-secret-key-123"
KOMBU_PRIORITY_SEP = "\x06\x16"  # kombu's redis transport: <queue><sep><priority> for priorities 3, 6, 9


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant alive now (prefork children and their decode servers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(child_pids(p))
    return out


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of ``pids`` summed (a process gone meanwhile counts 0)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total


@dataclass
class BenchStack:
    """A running stack; ``stop()`` ends every process it started."""

    work: Path
    env: dict[str, str]
    redis_port: int
    s3_port: int
    api_port: int
    durable: bool
    valkey: ManagedProcess
    seaweedfs: ManagedProcess
    api: ManagedProcess | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        return self.env["CROPQ_REDIS_URL"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def queue(self) -> str:
        return self.env.get("CROPQ_QUEUE_NAME", "cropq")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {BENCH_KEY['AccessKeyId']}:{BENCH_KEY['AccessKeySecret']}"}

    def http(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth, timeout=timeout)

    def redis(self, timeout: float = 5) -> redis.Redis:
        return sync_client(self.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def s3(self) -> Any:
        from minio import Minio

        return Minio(
            f"127.0.0.1:{self.s3_port}", access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False
        )

    # ------------------------------------------------------------ processes
    def start_api(self) -> None:
        self.api = start_api(self.env, "127.0.0.1", self.api_port, self.work / "api.log")

    def add_worker(self, concurrency: int = 1) -> WorkerProcess:
        n = len(self.workers) + 1
        worker = start_worker(self.env, f"bench{n}", concurrency, self.queue, self.work / f"worker-{n}.log")
        self.workers.append(worker)
        n = len(self.workers)
        wait_for_workers(self.redis_url, n, timeout=90, node_prefix="bench", procs=self.workers)
        hooks = [w.webhooks for w in self.workers if w.webhooks is not None]
        wait_for_workers(self.redis_url, n, timeout=90, node_prefix="webhooks-bench", procs=hooks)
        return worker

    def stop_valkey(self, crash: bool = False) -> None:
        """Graceful: SIGTERM (Valkey flushes its append-only file and exits). Crash: SIGKILL of its process
        group (what the append-only file holds is what survives)."""
        if crash:
            self.valkey.signal_group(signal.SIGKILL)
            self.valkey.proc.wait(10)
        self.valkey.stop()

    def start_valkey(self) -> None:
        self.valkey = start_valkey(self.work / "valkey", self.redis_port, durable=self.durable)

    def stop_seaweedfs(self) -> None:
        self.seaweedfs.stop()

    def start_seaweedfs(self) -> None:
        self.seaweedfs = start_seaweedfs(self.work / "s3", self.s3_port, S3_ACCESS_KEY, S3_SECRET_KEY)

    def kill_random_worker_child(self, rng: random.Random) -> int | None:
        """SIGKILL one prefork child of a random crop worker; its pid, or None when none was running."""
        children = [c for w in self.workers if w.alive() for c in child_pids(w.pid)]
        if not children:
            return None
        victim = rng.choice(children)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        for proc in (self.api, self.seaweedfs, self.valkey):
            if proc is not None:
                proc.stop()

    # ------------------------------------------------------------ readings
    def worker_rss(self) -> int:
        """Resident memory of the crop workers: main processes, prefork children and decode servers."""
        return rss_bytes([p for w in self.workers if w.alive() for p in process_tree(w.pid)])

    def worker_logs(self) -> list[Path]:
        return [w.log_path for w in self.workers]

    def backlog(self, client: redis.Redis) -> int:
        """Crop messages waiting in the queue (kombu keeps one list per priority step)."""
        names = [self.queue, *(f"{self.queue}{KOMBU_PRIORITY_SEP}{p}" for p in (3, 6, 9))]
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(name)
            return sum(int(n) for n in pipe.execute())

    # ------------------------------------------------------------ data
    def project(self, name: str, bucket: str) -> None:
        s3 = self.s3()
        if not s3.bucket_exists(bucket):
            s3.make_bucket(bucket)
        with self.http() as c:
            c.put(f"/v1/projects/{name}", json={"Buckets": [bucket]}).raise_for_status()

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.s3().put_object(bucket, key, io.BytesIO(data), len(data))
        return f"oss://{bucket}/{key}"


def start_stack(
    work: Path,
    *,
    workers: int = 0,
    concurrency: int = 1,
    durable: bool = True,
    api: bool = True,
    **settings: str,
) -> BenchStack:
    """Valkey + SeaweedFS (+ the API, + ``workers`` crop workers) on free loopback ports under ``work``;
    ``settings`` become ``CROPQ_<NAME>`` variables of the API and workers."""
    rport, sport, aport = free_port(), free_port(), free_port()
    valkey = start_valkey(work / "valkey", rport, durable=durable)
    try:
        seaweedfs = start_seaweedfs(work / "s3", sport, S3_ACCESS_KEY, S3_SECRET_KEY)
    except BaseException:
        valkey.stop()
        raise
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")},
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed child must not take unwritten log lines with it
        "CROPQ_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
        "CROPQ_S3_ENDPOINT": f"127.0.0.1:{sport}",
        "CROPQ_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "CROPQ_S3_SECRET_KEY": S3_SECRET_KEY,
        "CROPQ_SECRET_KEY": "bench-secret-key-0123456789abcdef0123",
        "CROPQ_ACCESS_KEYS": json.dumps([BENCH_KEY]),
        "CROPQ_API_PORT": str(aport),
        "CROPQ_RATE_LIMIT_PER_MINUTE": "0",
        "CROPQ_AUTH_FAILURES_PER_MINUTE": "0",
        **{f"CROPQ_{k.upper()}": v for k, v in settings.items()},
    }
    stack = BenchStack(work, env, rport, sport, aport, durable, valkey, seaweedfs)
    try:
        if api:
            stack.start_api()
        for _ in range(workers):
            stack.add_worker(concurrency)
    except BaseException:
        stack.stop()
        raise
    return stack


def photo_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """``count`` photo-like JPEGs (real photos with faces, animals and objects, resized, with noise) from
    1200x900 to 4000x3000: an engine run of about 0.03-0.1 s each, a job of about 0.1-0.3 s."""
    import cv2
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    sizes = [(1200, 900), (1600, 1200), (2400, 1800), (3200, 1800), (1800, 2400), (4000, 3000)]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        img = cv2.resize(sources[i % len(sources)], (w, h), interpolation=cv2.INTER_AREA)
        noisy = np.clip(img.astype(np.float32) + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
        assert ok
        out.append(bytes(buf))
    return out


def job_records(client: redis.Redis, request_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """The stored records of ``request_ids`` (None where a record is missing), read in batches."""
    out: dict[str, dict[str, Any] | None] = {}
    for i in range(0, len(request_ids), 500):
        batch = request_ids[i : i + 500]
        for rid, raw in zip(batch, client.mget([keys.job(r) for r in batch]), strict=True):
            out[rid] = None if raw is None else json.loads(raw)
    return out


def log_events(paths: list[Path], *names: str) -> list[dict[str, Any]]:
    """The JSON log events called one of ``names`` in ``paths`` (other lines are skipped)."""
    wanted = {f'"{n}"' for n in names}
    out = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if not any(w in line for w in wanted):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") in names:
                out.append(event)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")
