"""What a durable 202 costs: the accept step (counter write + WAITAOF/WAIT) under each
``CROPQ_ACCEPT_DURABILITY`` mode and Redis ``appendfsync`` policy, side by side in ONE run.

    python bench/durability_bench.py [--accepts 200] [--concurrency 8]

Each case starts its own Valkey on loopback (append-only file under a temp folder) and times ``--accepts``
calls of ``api.durability.confirm_accepted`` through the API's own client code, ``--concurrency`` at a time
(submissions arrive in parallel; with ``everysec`` they share each fsync). The baseline is ``memory``
(nothing waited for) on the same server. Prints the CPU, then p50/p99 latency and accepts/s per case.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from api.durability import confirm_accepted
from bench.hostile_bench import machine
from cropq_cli.localstack import free_port, start_valkey
from worker.settings import Settings

CASES = (
    ("everysec", "memory"),
    ("everysec", "fsync"),
    ("always", "memory"),
    ("always", "fsync"),
)


async def _run(port: int, mode: str, accepts: int, concurrency: int) -> list[float]:
    settings = Settings(accept_durability=mode)  # type: ignore[arg-type]
    r = aioredis.Redis(port=port, max_connections=concurrency + 2)
    times: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            t0 = time.perf_counter()
            await r.set("bench:job", "x" * 600)  # a job record's size, written first as the API does
            await confirm_accepted(r, settings, 1)
            times.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(accepts)))
    await r.aclose()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accepts", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)
    print(f"CPU: {machine()}")
    print(f"{args.accepts} accepts per case, {args.concurrency} at a time\n")
    print("| appendfsync | accept_durability | p50 ms | p99 ms | accepts/s | p50 × memory |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        base: dict[str, float] = {}
        for policy, mode in CASES:
            port = free_port()
            valkey = start_valkey(
                Path(tmp) / f"{policy}-{mode}", port, durable=True, extra_args=("--appendfsync", policy)
            )
            try:
                t0 = time.perf_counter()
                times = asyncio.run(_run(port, mode, args.accepts, args.concurrency))
                wall = time.perf_counter() - t0
            finally:
                valkey.stop()
            p50 = statistics.median(times) * 1000
            p99 = sorted(times)[int(0.99 * (len(times) - 1))] * 1000
            base.setdefault(policy, p50)
            print(
                f"| {policy} | {mode} | {p50:.2f} | {p99:.2f} | {len(times) / wall:.0f} | "
                f"{p50 / base[policy]:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
