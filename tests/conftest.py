"""Real servers for the suite: a Valkey and a SeaweedFS started on free loopback ports (or external ones
named by CROPQ_TEST_REDIS_URL / CROPQ_TEST_S3_ENDPOINT + CROPQ_TEST_S3_ACCESS_KEY + CROPQ_TEST_S3_SECRET_KEY),
and a factory for whole stacks (API + Celery worker processes) on them."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import structlog
from minio import Minio

from cropq_cli.localstack import (
    ManagedProcess,
    free_port,
    start_api,
    start_seaweedfs,
    start_valkey,
    start_worker,
    wait_for_workers,
)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """In-process apps configure logging (level filters included); later tests start from the defaults."""
    yield
    structlog.reset_defaults()


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: ManagedProcess | None = None

    def client(self) -> Minio:
        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CROPQ_TEST_REDIS_URL")
    if external:
        yield external
        return
    port = free_port()
    proc = start_valkey(tmp_path_factory.mktemp("valkey"), port, durable=False)
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    external = os.environ.get("CROPQ_TEST_S3_ENDPOINT")
    if external:
        yield S3Server(
            external, os.environ["CROPQ_TEST_S3_ACCESS_KEY"], os.environ["CROPQ_TEST_S3_SECRET_KEY"]
        )
        return
    port = free_port()
    key, secret = "testkey" + secrets.token_hex(3), secrets.token_urlsafe(18)
    proc = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), port, key, secret)
    yield S3Server(f"127.0.0.1:{port}", key, secret, proc)
    proc.stop()


ADMIN_KEY = {
    "AccessKeyId": "LTAItestadmin0001",
    "AccessKeySecret": "admin-secret-for-tests-0001",
    "Projects": ["*"],
}


@dataclass
class Stack:
    """A running cropq: API + worker processes on the session's Valkey and SeaweedFS."""

    url: str
    env: dict[str, str]
    redis_url: str
    s3: S3Server
    workdir: Path
    api: ManagedProcess
    workers: list[ManagedProcess] = field(default_factory=list)
    concurrency: int = 1

    @property
    def admin_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY['AccessKeyId']}:{ADMIN_KEY['AccessKeySecret']}"}

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.admin_auth, timeout=60)

    def add_worker(self) -> ManagedProcess:
        n = len(self.workers) + 1
        name = f"{self.env['CROPQ_QUEUE_NAME']}-w{n}"
        w = start_worker(
            self.env, name, self.concurrency, self.env["CROPQ_QUEUE_NAME"], self.workdir / f"worker-{n}.log"
        )
        self.workers.append(w)
        return w

    def project(self, name: str | None = None) -> tuple[str, str]:
        """A fresh project with its own fresh bucket: (project, bucket)."""
        project = name or f"p{uuid.uuid4().hex[:10]}"
        bucket = f"b{uuid.uuid4().hex[:12]}"
        self.s3.client().make_bucket(bucket)
        with self.http() as c:
            c.put(f"/v1/projects/{project}", json={"Buckets": [bucket]}).raise_for_status()
        return project, bucket

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.s3.client().put_object(bucket, key, io.BytesIO(data), len(data))
        return f"oss://{bucket}/{key}"

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.api.stop()


def service_env(redis_url: str, s3_server: S3Server, queue: str, **extra: str) -> dict[str, str]:
    """The environment of a test stack's API and workers: this process's, without its CROPQ_ variables, and
    the test servers, a queue of its own and the admin key."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CROPQ_")},
        "PYTHONUNBUFFERED": "1",
        "CROPQ_REDIS_URL": redis_url,
        "CROPQ_S3_ENDPOINT": s3_server.endpoint,
        "CROPQ_S3_ACCESS_KEY": s3_server.access_key,
        "CROPQ_S3_SECRET_KEY": s3_server.secret_key,
        "CROPQ_S3_SECURE": "false",
        "CROPQ_QUEUE_NAME": queue,
        "CROPQ_SECRET_KEY": "test-secret-key-for-encryption-0123456789",
        "CROPQ_ACCESS_KEYS": json.dumps([ADMIN_KEY]),
        "CROPQ_WEBHOOK_ALLOWED_CIDRS": '["127.0.0.0/8"]',
        "CROPQ_LOG_JSON": "true",
        # Every stack of the session shares one Redis, one admin key and one client address: limits are off
        # unless a test sets them, so one test's spent budget cannot throttle the next one.
        "CROPQ_RATE_LIMIT_PER_MINUTE": "0",
        "CROPQ_AUTH_FAILURES_PER_MINUTE": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def make_stack(
    redis_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """Factory: make_stack(workers=2, **settings) starts a stack on its own queue; its stacks stop when the
    test module ends (each stack holds several hundred MB of worker processes: kept for the whole session,
    the suite's stacks together would outgrow the machine)."""
    stacks: list[Stack] = []

    def make(workers: int = 2, concurrency: int = 1, **settings: str) -> Stack:
        workdir = tmp_path_factory.mktemp("stack")
        queue = f"q{uuid.uuid4().hex[:8]}"
        port = free_port()
        env = service_env(redis_url, s3_server, queue, CROPQ_API_PORT=str(port))
        env |= {f"CROPQ_{k.upper()}": v for k, v in settings.items()}
        api = start_api(env, "127.0.0.1", port, workdir / "api.log")
        stack = Stack(
            url=f"http://127.0.0.1:{port}",
            env=env,
            redis_url=env["CROPQ_REDIS_URL"],
            s3=s3_server,
            workdir=workdir,
            api=api,
            concurrency=concurrency,
        )
        stacks.append(stack)
        for _ in range(workers):
            stack.add_worker()
        wait_for_workers_on(stack, workers)
        return stack

    yield make
    # Every process is asked to stop at once (warm shutdowns overlap), then each is waited for.
    for s in stacks:
        for proc in (*s.workers, *(getattr(w, "webhooks", None) for w in s.workers), s.api):
            if proc is not None:
                proc.signal_group(signal.SIGTERM)
    for s in stacks:
        s.stop()


def wait_for_workers_on(stack: Stack, count: int) -> None:
    """Wait for the heartbeats of this stack's workers (their node names carry the queue name)."""
    wait_for_workers(
        stack.redis_url,
        count,
        timeout=90,
        node_prefix=f"{stack.env['CROPQ_QUEUE_NAME']}-",
        procs=stack.workers,
    )


__all__ = ["ADMIN_KEY", "S3Server", "Stack", "wait_for_workers_on"]
