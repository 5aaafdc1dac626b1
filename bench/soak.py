"""Soak: many jobs at a steady share of the measured capacity; latency, memory and backlog over time.

    python bench/soak.py [--jobs 10000] [--load 0.8] [--png docs/soak.png] [--max-minutes 120]

Starts its own stack in a temporary folder on loopback (durable Valkey, SeaweedFS, the API, 2 crop
workers) and measures the capacity first: --capacity-jobs jobs submitted one by one while the workers
are kept busy, jobs / (last FinishedAt - first CreatedAt), so the API's share of the machine is counted.
Then it submits --jobs jobs open-loop at --load x capacity. Every --sample-seconds it reads: latency
p50/p99 of the jobs finished in the window (FinishedAt - CreatedAt of their records), throughput, the
crop workers' RSS (main processes, prefork children and their decode servers, from /proc), Redis
used_memory (INFO memory) and the queue backlog (LLEN).

Prints a table with one row per 1,000 finished jobs and the targets: zero lost; worker RSS flat (within
10 % from job 1,000 to the last job); Redis memory per finished job (records are kept for
CROPQ_RESULT_TTL_SECONDS, 7 days by default). Plots the samples to --png. --max-minutes bounds the whole
run: past it, nothing more is submitted and the run fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hostile_bench import machine  # noqa: E402
from bench.stack_fixture import (  # noqa: E402
    BenchStack,
    job_records,
    percentile,
    photo_jpegs,
    say,
    start_stack,
)
from worker import keys  # noqa: E402

PROJECT, BUCKET = "soak", "soak"
RATIOS = [["1:1"], ["16:9", "4:3"], ["1:1", "16:9", "4:3", "3:4", "9:16"]]
RSS_TOLERANCE = 0.10
MB = 1024 * 1024


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Sample:
    minute: float  # since the soak started
    submitted: int
    finished: int
    latency_p50: float | None  # seconds, jobs finished in this window
    latency_p99: float | None
    throughput: float  # jobs/s finished in this window
    worker_rss: int  # bytes
    redis_used: int  # bytes
    backlog: int


class Soak:
    def __init__(self, args: argparse.Namespace, stack: BenchStack, uris: list[str]) -> None:
        self.args = args
        self.stack = stack
        self.uris = uris
        self.lock = threading.Lock()
        self.submitted: list[str] = []
        self.not_accepted = 0
        self.pending: set[str] = set()
        self.idem: dict[str, str] = {}  # RequestId -> its IdempotencyKey
        self.finished: list[tuple[float, float, str]] = []  # (finished at epoch, latency s, rid)
        self.samples: list[Sample] = []
        self.stop_submitting = threading.Event()
        self.local = threading.local()
        self.t0 = time.time()

    def body(self, n: int) -> dict[str, Any]:
        return {
            "SourceURI": self.uris[n % len(self.uris)],
            "AspectRatios": RATIOS[n % len(RATIOS)],
            "IdempotencyKey": uuid.uuid4().hex,
        }

    def client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = self.stack.http(timeout=30)
        client: httpx.Client = self.local.client
        return client

    def submit(self, n: int) -> str | None:
        """POST until 202 (no answer and 503 retried with the same IdempotencyKey, for up to a minute)."""
        body, give_up = self.body(n), time.monotonic() + 60
        while time.monotonic() < give_up:
            try:
                r = self.client().post(f"/v1/projects/{PROJECT}/crop-jobs", json=body)
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if r.status_code == 202:
                rid = str(r.json()["RequestId"])
                with self.lock:
                    self.submitted.append(rid)
                    self.pending.add(rid)
                    self.idem[rid] = body["IdempotencyKey"]
                return rid
            if r.status_code != 503:
                say(f"submission refused: {r.status_code} {r.text[:200]}")
                break
            time.sleep(0.5)
        with self.lock:
            self.not_accepted += 1
        return None

    # ------------------------------------------------------------ capacity
    def capacity(self, count: int) -> float:
        """Jobs/s the stack sustains while it also accepts them: ``count`` jobs submitted one by one, with
        a few times as many jobs outstanding as there are worker children (they never wait for work),
        from the first CreatedAt to the last FinishedAt."""
        window = 4 * self.args.workers * self.args.concurrency
        client = self.stack.redis()
        records: dict[str, dict[str, Any] | None] = {}
        outstanding: list[str] = []
        submitted, deadline = 0, time.monotonic() + 600
        try:
            while submitted < count or outstanding:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the capacity run of {count} jobs did not end within 10 minutes")
                while submitted < count and len(outstanding) < window:
                    rid = self.submit(submitted)
                    submitted += 1
                    if rid is not None:
                        outstanding.append(rid)
                fresh = job_records(client, outstanding)
                records.update(fresh)
                outstanding = [rid for rid, r in fresh.items() if not (r and r.get("FinishedAt"))]
                time.sleep(0.02)
        finally:
            client.close()
        created = min(epoch(r["CreatedAt"]) for r in records.values() if r)
        done = max(epoch(r["FinishedAt"]) for r in records.values() if r)
        with self.lock:  # the soak's figures start after this run
            self.submitted.clear()
            self.pending.clear()
        return len(records) / (done - created)

    # ------------------------------------------------------------ the soak
    def offer(self, rate: float) -> None:
        """Open loop: job i is submitted at i / rate s, whatever the answers (a pool absorbs slow ones)."""
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            for i in range(self.args.jobs):
                if self.stop_submitting.is_set():
                    break
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                pool.submit(self.submit, i)

    def sample(self, client: redis.Redis, window: float) -> Sample:
        with self.lock:
            pending = list(self.pending)
            submitted = len(self.submitted)
        fresh = []
        for rid, record in job_records(client, pending).items():
            if record and record.get("FinishedAt"):
                finished_at = epoch(record["FinishedAt"])
                fresh.append((finished_at, finished_at - epoch(record["CreatedAt"]), rid))
        fresh.sort()
        with self.lock:
            self.pending.difference_update(rid for _, _, rid in fresh)
            self.finished.extend(fresh)
            finished = len(self.finished)
        latencies = [lat for _, lat, _ in fresh]
        return Sample(
            minute=(time.time() - self.t0) / 60,
            submitted=submitted,
            finished=finished,
            latency_p50=percentile(latencies, 50) if latencies else None,
            latency_p99=percentile(latencies, 99) if latencies else None,
            throughput=len(fresh) / window,
            worker_rss=self.stack.worker_rss(),
            redis_used=int(client.info("memory")["used_memory"]),
            backlog=self.stack.backlog(client),
        )

    def run(self, rate: float, deadline: float) -> bool:
        """Offer the jobs and sample until all ended; False when the time guard stopped it."""
        client = self.stack.redis()
        self.t0 = time.time()
        offer = threading.Thread(target=self.offer, args=(rate,), daemon=True)
        offer.start()
        every = self.args.sample_seconds
        last = time.monotonic()
        in_time = True
        try:
            while True:
                time.sleep(max(0.0, last + every - time.monotonic()))
                now = time.monotonic()
                s = self.sample(client, now - last)
                last = now
                self.samples.append(s)
                if len(self.samples) % max(1, int(60 / every)) == 0:
                    say(
                        f"  {s.minute:5.1f} min: {s.submitted} submitted, {s.finished} finished, "
                        f"backlog {s.backlog}, worker RSS {s.worker_rss / MB:.0f} MB, "
                        f"Redis {s.redis_used / MB:.1f} MB"
                    )
                if now > deadline:
                    in_time = False
                    self.stop_submitting.set()
                if not offer.is_alive() and not self.pending:
                    return in_time
                if now > deadline + 120:  # the guard's grace for the jobs already submitted
                    return False
        finally:
            offer.join(5)
            client.close()


# ---------------------------------------------------------------- report
def milestones(soak: Soak) -> list[dict[str, Any]]:
    """One row per 1,000 finished jobs (finish order): latency and throughput of that thousand, readings
    of the first sample at or past it."""
    rows, step = [], 1000
    done = sorted(soak.finished)
    for k in range(step, len(done) + 1, step):
        chunk = done[k - step : k]
        lat = [x[1] for x in chunk]
        span = chunk[-1][0] - chunk[0][0]
        at = next(s for s in soak.samples if s.finished >= k)
        rows.append(
            {
                "jobs": k,
                "minute": round(at.minute, 1),
                "latency_p50": percentile(lat, 50),
                "latency_p99": percentile(lat, 99),
                "throughput": (len(chunk) - 1) / span if span > 0 else float("nan"),
                "worker_rss": at.worker_rss,
                "redis_used": at.redis_used,
                "backlog": at.backlog,
            }
        )
    return rows


def plot(soak: Soak, rate: float, capacity: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = soak.samples
    minutes = [x.minute for x in s]
    fig, axes = plt.subplots(5, 1, figsize=(9, 12), sharex=True)
    ax = axes[0]
    ax.plot(minutes, [x.latency_p50 for x in s], label="p50")
    ax.plot(minutes, [x.latency_p99 for x in s], label="p99")
    ax.set_ylabel("latency (s)")
    ax.legend(loc="upper right")
    ax = axes[1]
    ax.plot(minutes, [x.throughput for x in s], label="finished")
    ax.axhline(rate, color="grey", linestyle="--", label=f"offered {rate:.1f}/s")
    ax.axhline(capacity, color="black", linestyle=":", label=f"capacity {capacity:.1f}/s")
    ax.set_ylabel("jobs/s")
    ax.legend(loc="lower right")
    axes[2].plot(minutes, [x.worker_rss / MB for x in s])
    axes[2].set_ylabel("worker RSS (MB)")
    axes[3].plot(minutes, [x.redis_used / MB for x in s])
    axes[3].set_ylabel("Redis used (MB)")
    axes[4].plot(minutes, [x.backlog for x in s])
    axes[4].set_ylabel("queue backlog")
    axes[4].set_xlabel("minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.suptitle(
        f"cropq soak: {len(soak.finished):,} jobs at {soak.args.load:.0%} of capacity, "
        f"{soak.args.workers} workers x {soak.args.concurrency}\n{machine()}",
        fontsize=9,
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)


def redis_per_job(stack: BenchStack, rids: list[str], idem: dict[str, str]) -> tuple[float, float]:
    """Mean MEMORY USAGE of a sample of finished jobs' keys (those named after the RequestId, found with
    one SCAN, and the idempotency key), and how many keys that is."""
    if not rids:
        return float("nan"), float("nan")
    client = stack.redis()
    try:
        first = rids[0]
        templates = [
            k.decode().replace(first, "{rid}") for k in client.scan_iter(match=f"*{first}*", count=5000)
        ]
        sizes, counts = [], []
        for rid in rids[:: max(1, len(rids) // 200)]:
            names = [t.replace("{rid}", rid) for t in templates]
            if rid in idem:
                names.append(keys.idempotency(PROJECT, idem[rid]))
            found = [int(n) for n in (client.memory_usage(name) for name in names) if n is not None]
            sizes.append(sum(found))
            counts.append(len(found))
        return sum(sizes) / len(sizes), sum(counts) / len(counts)
    finally:
        client.close()


def report(soak: Soak, capacity: float, rate: float, base_used: int, lost: list[str]) -> dict[str, Any]:
    rows = milestones(soak)
    say("")
    say("| jobs | minute | latency p50 | latency p99 | throughput | worker RSS | Redis used | backlog |")
    say("|---|---|---|---|---|---|---|---|")
    for r in rows:
        say(
            f"| {r['jobs']:,} | {r['minute']:.1f} | {r['latency_p50']:.2f} s | {r['latency_p99']:.2f} s "
            f"| {r['throughput']:.1f}/s | {r['worker_rss'] / MB:.0f} MB | {r['redis_used'] / MB:.1f} MB "
            f"| {r['backlog']} |"
        )
    finished = len(soak.finished)
    end_used = soak.samples[-1].redis_used if soak.samples else base_used
    per_job_used = (end_used - base_used) / finished if finished else float("nan")
    usage, keys_per_job = redis_per_job(soak.stack, [rid for _, _, rid in soak.finished], soak.idem)
    rss_first = rows[0]["worker_rss"] if rows else 0
    rss_last = rows[-1]["worker_rss"] if rows else 0
    rss_change = (rss_last - rss_first) / rss_first if rss_first else float("nan")
    all_lat = [x[1] for x in soak.finished]
    say("")
    say("| target | figure | met |")
    say("|---|---|---|")
    say(
        f"| zero lost | {len(lost)} lost of {len(soak.submitted):,} accepted "
        f"| {'yes' if not lost else 'no'} |"
    )
    rss_ok = bool(rows) and abs(rss_change) <= RSS_TOLERANCE
    last_jobs = rows[-1]["jobs"] if rows else 0
    say(
        f"| worker RSS flat (within 10 %) | job 1,000: {rss_first / MB:.0f} MB, job {last_jobs:,}: "
        f"{rss_last / MB:.0f} MB ({rss_change:+.1%}) | {'yes' if rss_ok else 'no'} |"
    )
    say(
        f"| Redis memory per finished job | {per_job_used:,.0f} B (used_memory growth / jobs); "
        f"{usage:,.0f} B in {keys_per_job:.1f} keys (MEMORY USAGE of a sample) | kept for the result TTL |"
    )
    say("")
    say(
        f"capacity {capacity:.1f} jobs/s; offered {rate:.1f} jobs/s ({soak.args.load:.0%}); "
        f"all jobs: latency p50 {percentile(all_lat, 50):.2f} s, p99 {percentile(all_lat, 99):.2f} s; "
        f"submissions never accepted: {soak.not_accepted}"
    )
    return {
        "machine": machine(),
        "settings": {k: str(v) for k, v in vars(soak.args).items()},
        "capacity": capacity,
        "rate": rate,
        "accepted": len(soak.submitted),
        "not_accepted": soak.not_accepted,
        "finished": finished,
        "lost": len(lost),
        "lost_ids": lost[:20],
        "latency_p50": percentile(all_lat, 50),
        "latency_p99": percentile(all_lat, 99),
        "rss_first": rss_first,
        "rss_last": rss_last,
        "rss_change": rss_change,
        "rss_ok": rss_ok,
        "redis_bytes_per_job": per_job_used,
        "redis_memory_usage_per_job": usage,
        "redis_keys_per_job": keys_per_job,
        "rows": rows,
        "samples": [asdict(s) for s in soak.samples],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--load", type=float, default=0.8, help="share of the measured capacity offered")
    ap.add_argument("--capacity-jobs", type=int, default=300, help="jobs of the capacity burst")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1, help="prefork children per crop worker")
    ap.add_argument("--images", type=int, default=12, help="distinct source images")
    ap.add_argument("--sample-seconds", type=float, default=5)
    ap.add_argument("--max-minutes", type=float, default=120, help="bound on the whole run")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "soak.png")
    ap.add_argument("--json", type=Path, help="write the figures and samples here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a CROPQ_ setting (repeatable)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    say(machine())
    work = Path(tempfile.mkdtemp(prefix="cropq-soak-"))
    settings = {"log_json": "true", **dict(s.split("=", 1) for s in args.set)}
    images = photo_jpegs(args.images)
    stack = start_stack(work, workers=args.workers, concurrency=args.concurrency, durable=True, **settings)
    ok = False
    try:
        stack.project(PROJECT, BUCKET)
        uris = [stack.put(BUCKET, f"photo-{i:02d}.jpg", data) for i, data in enumerate(images)]
        soak = Soak(args, stack, uris)
        soak.capacity(2 * args.workers * args.concurrency)  # warm-up: models loaded in every child
        capacity = soak.capacity(args.capacity_jobs)
        rate = args.load * capacity
        say(f"capacity {capacity:.1f} jobs/s; offering {args.jobs:,} jobs at {rate:.1f} jobs/s")
        with stack.redis() as client:
            base_used = int(client.info("memory")["used_memory"])
        in_time = soak.run(rate, deadline)
        with stack.redis() as client:
            records = job_records(client, soak.submitted)
        lost = [rid for rid, r in records.items() if not (r and r.get("Status") in ("Succeeded", "Failed"))]
        failed = sum(1 for r in records.values() if r and r.get("Status") == "Failed")
        found = report(soak, capacity, rate, base_used, lost)
        found["failed"] = failed
        found["in_time"] = in_time
        plot(soak, rate, capacity, args.png)
        say(f"failed jobs: {failed}; plot: {args.png}; run: {(time.monotonic() - started) / 60:.1f} min")
        if not in_time:
            say(f"stopped by the --max-minutes guard ({args.max_minutes:g} min)")
        ok = in_time and not lost and failed == 0 and found["rss_ok"]
        say(f"verdict: {'PASS' if ok else 'FAIL'} (zero lost, zero failed, worker RSS within 10 %, in time)")
        if args.json:
            args.json.write_text(json.dumps(found, indent=2))
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"logs and data in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
