"""Job records in Redis, as the workers read and write them (synchronous redis-py).

A job record is one JSON string under ``cropq:job:<RequestId>`` with the result TTL. Updates use
optimistic locking (WATCH/MULTI) so a webhook update and a state change never overwrite each other, and
the listing's per-status indexes (worker/job_index.py) move in the same MULTI as the record. Finishing a
job publishes on its channel so long-polls wake at once.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker import keys
from worker.contracts import Job
from worker.job_index import index_status_change
from worker.redis_clients import sync_client


class JobNotFound(LookupError):
    pass


class JobStore:
    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.r = client
        self.ttl = ttl_seconds

    def get(self, request_id: str) -> Job:
        raw = self.r.get(keys.job(request_id))
        if raw is None:
            raise JobNotFound(request_id)
        return Job.model_validate_json(raw)

    def update(self, request_id: str, change: Callable[[Job], Job | None]) -> Job:
        """Apply ``change`` atomically; returning None from it leaves the record untouched."""
        key = keys.job(request_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFound(request_id)
                    job = Job.model_validate_json(raw)
                    new = change(job)
                    if new is None:
                        pipe.unwatch()
                        return job
                    pipe.multi()
                    pipe.set(key, new.model_dump_json(exclude_none=True), ex=self.ttl)
                    index_status_change(pipe, new, job.Status, self.ttl)
                    if new.Status.finished and not job.Status.finished:
                        pipe.publish(keys.job_done_channel(request_id), new.Status.value)
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue

    def start_run(self, request_id: str) -> tuple[int, int]:
        """Count this run before doing any work, so a run that kills its worker still counts. Returns
        (this run's attempt number, runs that ended before it without dying)."""
        started, ended = keys.job_attempts(request_id), keys.job_ended_runs(request_id)
        with self.r.pipeline() as pipe:
            pipe.incr(started)
            pipe.expire(started, self.ttl)
            pipe.get(ended)
            n, _, done = pipe.execute()
        return int(n), int(done or 0)

    def end_run(self, request_id: str) -> None:
        """A run ended with its process alive (whatever its outcome)."""
        key = keys.job_ended_runs(request_id)
        with self.r.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, self.ttl)
            pipe.execute()

    def mark_callback_queued(self, request_id: str) -> None:
        self.r.set(keys.job_callback_queued(request_id), 1, ex=self.ttl)

    def callback_queued(self, request_id: str) -> bool:
        return bool(self.r.exists(keys.job_callback_queued(request_id)))


RIDE_THROUGH_RETRIES = 10
"""Retries of a Redis command on a connection error: 0.2, 0.4 ... 2 s apart, about 15 s in all."""


def connect(url: str) -> redis.Redis:
    # A pooled connection that died with a Redis restart is replaced instead of failing the job, and a
    # restart (or a Sentinel failover) of up to about 15 s is ridden through inside the same run.
    return sync_client(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), RIDE_THROUGH_RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
