"""Job listing at catalogue scale: one project with 10^6 jobs, pages read through the API's own code.

    python bench/listing_bench.py [--jobs 1000000] [--page 20] [--repeat 30]

Starts a throwaway Valkey on loopback (no persistence), writes ``--jobs`` job records and their index entries
(worker/job_index.py, as submit does: 98 % Succeeded, 1 % Failed, 1 % Cancelled) with pipelines, then times
``api.job_lifecycle.list_jobs`` for the first page, a page half-way down via its NextToken, a Status=Failed
page (first and deep) and a BatchId page. Prints the median and worst of ``--repeat`` reads of each, and
Redis memory per job. No assertions: the figures are the result.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio as aioredis

from api.job_lifecycle import Cursor, ListingScope, encode_token, list_jobs
from bench.hostile_bench import machine
from cropq_cli.localstack import free_port, start_valkey
from worker import keys
from worker.contracts import Boundary, Cropping, Job, JobStatus, Point
from worker.job_index import index_new_job, listing_key

PROJECT = "bench"
BATCH = "BENCHBATCH"
TTL = 24 * 3600
KEY = b"listing-bench-token-key-0123456789"
CHUNK = 5000
START_MS = 1_900_000_000_000


def _status(i: int) -> JobStatus:
    if i % 100 == 7:
        return JobStatus.FAILED
    if i % 100 == 42:
        return JobStatus.CANCELLED
    return JobStatus.SUCCEEDED


def _iso(ms: int) -> str:
    t = time.gmtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms % 1000:03d}Z"


def _job(i: int) -> Job:
    status = _status(i)
    crop = Cropping(
        AspectRatio="1:1",
        Confidence=0.87,
        Boundary=Boundary(
            Left=10, Top=0, Width=800, Height=800, Polygon=[Point(X=10, Y=0), Point(X=810, Y=0)] * 2
        ),
    )
    return Job(
        RequestId=f"BENCH-{i:08d}-0000-4000-8000-000000000000",
        ProjectName=PROJECT,
        Status=status,
        BatchId=BATCH if i % 10 == 0 else None,
        SourceURI=f"oss://catalogue/products/{i:08d}.jpg",
        AspectRatios=["1:1"],
        Croppings=[crop] if status is JobStatus.SUCCEEDED else None,
        Code={JobStatus.FAILED: "ResourceNotFound", JobStatus.CANCELLED: "Cancelled"}.get(status),
        CreatedAt=_iso(START_MS + i // 3),  # three jobs per ms: ties are the normal case here
        FinishedAt=_iso(START_MS + i // 3 + 500),
    )


def fill(r: redis.Redis, jobs: int) -> float:
    t0 = time.perf_counter()
    for base in range(0, jobs, CHUNK):
        with r.pipeline(transaction=False) as pipe:
            for i in range(base, min(base + CHUNK, jobs)):
                job = _job(i)
                pipe.set(keys.job(job.RequestId), job.model_dump_json(exclude_none=True), ex=TTL)
                index_new_job(pipe, job, TTL)
            pipe.execute()
    return time.perf_counter() - t0


def deep_token(r: redis.Redis, scope: ListingScope) -> str:
    """The NextToken a client holds half-way down the scope's listing."""
    index = listing_key(scope.project, scope.status, scope.batch_id)
    middle = r.zcard(index) // 2
    entries = cast("list[tuple[bytes, float]]", r.zrevrange(index, middle, middle, withscores=True))
    ((member, score),) = entries
    return encode_token(Cursor(int(score), member.decode()), scope, KEY)


async def timed(
    client: aioredis.Redis, scope: ListingScope, page: int, token: str | None, repeat: int
) -> tuple[float, float, int]:
    times = []
    count = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        jobs, _ = await list_jobs(client, scope, page, token, KEY)
        times.append(time.perf_counter() - t0)
        count = len(jobs)
    return statistics.median(times) * 1000, max(times) * 1000, count


Case = tuple[str, ListingScope, str | None]


async def measure(url: str, cases: list[Case], page: int, repeat: int) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        print(f"{'page':<34} {'jobs':>5} {'median ms':>10} {'worst ms':>9}")
        for name, scope, token in cases:
            median, worst, n = await timed(client, scope, page, token, repeat)
            print(f"{name:<34} {n:>5} {median:>10.2f} {worst:>9.2f}")
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--page", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        valkey = start_valkey(Path(tmp), port, durable=False)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            r = redis.Redis.from_url(url)
            before = int(r.info("memory")["used_memory"])
            seconds = fill(r, args.jobs)
            used = int(r.info("memory")["used_memory"]) - before
            print(
                f"wrote {args.jobs:,} jobs and their index entries in {seconds:.1f} s; "
                f"Redis memory {used / args.jobs:,.0f} B per job (record + indexes)"
            )
            every = ListingScope(PROJECT, None, None)
            failed = ListingScope(PROJECT, JobStatus.FAILED, None)
            batch = ListingScope(PROJECT, None, BATCH)
            cases = [
                ("first page", every, None),
                ("deep page (NextToken, 1/2 down)", every, deep_token(r, every)),
                ("Status=Failed, first page", failed, None),
                ("Status=Failed, deep page", failed, deep_token(r, failed)),
                ("BatchId, first page", batch, None),
                ("BatchId, deep page", batch, deep_token(r, batch)),
            ]
            asyncio.run(measure(url, cases, args.page, args.repeat))
            r.close()
        finally:
            valkey.stop()


if __name__ == "__main__":
    main()
