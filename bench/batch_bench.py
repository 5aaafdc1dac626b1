"""Prefix batches on the local stack: listing rate, throughput against single jobs, interactive latency
during a batch, and Redis memory per job record, in ONE run.

    python bench/batch_bench.py [--objects 5000] [--workers 2] [--interactive 30]

Starts its own Valkey, SeaweedFS, API and crop workers on free loopback ports (nothing else is touched),
uploads ``--objects`` small photo-like JPEGs (a few distinct ones reused) and prints:
- the listing rate: objects counted per second in the batch's Listing phase (and a listing-only batch whose
  suffix matches nothing, so nothing but the listing runs);
- single-job throughput (the same images submitted as separate jobs, all at once) and the batch's end-to-end
  throughput (submit to manifest written), with their ratio;
- p50/p99 latency of interactive jobs (submit to result, one at a time) with the stack idle and while the
  batch runs, with their ratio (target: within 2x);
- Redis memory per job record: INFO used_memory after the batch ended minus before it, per job.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hostile_bench import machine  # noqa: E402
from bench.stack_fixture import BenchStack, percentile, say, start_stack  # noqa: E402

PROJECT = "batchbench"
BUCKET = "batch-bench"
OUT = "batch-bench-out"
RATIOS = ["1:1", "16:9"]


def small_jpegs(count: int = 4) -> list[bytes]:
    """Distinct 480x360 photo-like JPEGs (real photos, resized, with noise): about 30 kB each."""
    import cv2
    import numpy as np
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        img = cv2.resize(sources[i % len(sources)], (480, 360), interpolation=cv2.INTER_AREA)
        noisy = np.clip(img.astype(np.float32) + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        out.append(bytes(buf))
    return out


def upload(stack: BenchStack, names: list[str], images: list[bytes]) -> float:
    s3 = stack.s3()

    def put(item: tuple[int, str]) -> None:
        i, name = item
        data = images[i % len(images)]
        s3.put_object(BUCKET, name, io.BytesIO(data), len(data), content_type="image/jpeg")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, enumerate(names)))
    return time.perf_counter() - t0


def wait_job(c: httpx.Client, rid: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/v1/projects/{PROJECT}/crop-jobs/{rid}", params={"wait": 20}).json()
        if job["Status"] in ("Succeeded", "Failed", "Cancelled"):
            return job
    raise RuntimeError(f"job {rid} did not finish")


def interactive_latencies(c: httpx.Client, sources: list[str], pause: float = 0.0) -> list[float]:
    """Submit-to-result seconds of each source as a job of its own, one at a time."""
    out = []
    for uri in sources:
        t0 = time.perf_counter()
        r = c.post(f"/v1/projects/{PROJECT}/crop-jobs", json={"SourceURI": uri, "AspectRatios": RATIOS})
        r.raise_for_status()
        job = wait_job(c, r.json()["RequestId"])
        assert job["Status"] == "Succeeded", job
        out.append(time.perf_counter() - t0)
        time.sleep(pause)
    return out


def single_job_throughput(c: httpx.Client, sources: list[str]) -> float:
    """Jobs/s of ``sources`` submitted as separate jobs all at once (batches of 100), until all ended."""
    t0 = time.perf_counter()
    rids: list[str] = []
    for i in range(0, len(sources), 100):
        body = {"Jobs": [{"SourceURI": u, "AspectRatios": RATIOS} for u in sources[i : i + 100]]}
        r = c.post(f"/v1/projects/{PROJECT}/crop-jobs:batch", json=body)
        r.raise_for_status()
        rids += [j["RequestId"] for j in r.json()["Jobs"]]
    for rid in rids:
        wait_job(c, rid)
    return len(rids) / (time.perf_counter() - t0)


def batch_get(c: httpx.Client, batch_id: str) -> dict[str, Any]:
    r = c.get(f"/v1/projects/{PROJECT}/crop-batches/{batch_id}")
    r.raise_for_status()
    return dict(r.json())


def listing_only_seconds(c: httpx.Client) -> float:
    """Seconds taken by a batch whose suffix matches nothing: it lists the whole prefix and ends."""
    t0 = time.perf_counter()
    r = c.post(
        f"/v1/projects/{PROJECT}/crop-batches",
        json={"SourcePrefix": f"oss://{BUCKET}/p/", "Suffixes": [".none"]},
    )
    r.raise_for_status()
    while not batch_get(c, r.json()["BatchId"]).get("FinishedAt"):
        time.sleep(0.02)
    return time.perf_counter() - t0


def used_memory(stack: BenchStack) -> int:
    return int(stack.redis().info("memory")["used_memory"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--interactive", type=int, default=30, help="interactive jobs per latency sample")
    ap.add_argument("--single", type=int, default=200, help="jobs in the single-job throughput run")
    ap.add_argument("--in-flight", type=int, default=8, help="CROPQ_BATCH_IN_FLIGHT")
    args = ap.parse_args()

    say(f"CPU: {machine()}")
    say(
        f"objects: {args.objects}, crop workers: {args.workers} (1 child each), "
        f"batch in flight: {args.in_flight}"
    )
    with tempfile.TemporaryDirectory(prefix="cropq-batch-bench-") as tmp:
        stack = start_stack(
            Path(tmp),
            workers=args.workers,
            durable=False,
            batch_in_flight=str(args.in_flight),
            log_json="true",
        )
        try:
            run(stack, args)
        finally:
            stack.stop()


def run(stack: BenchStack, args: argparse.Namespace) -> None:
    s3 = stack.s3()
    for bucket in (BUCKET, OUT):
        s3.make_bucket(bucket)
    with stack.http() as c:
        c.put(
            f"/v1/projects/{PROJECT}", json={"Buckets": [BUCKET], "WritableBuckets": [OUT]}
        ).raise_for_status()
    images = small_jpegs()
    names = [f"p/{i:06d}.jpg" for i in range(args.objects)]
    took = upload(stack, names, images)
    say(f"uploaded {len(names)} objects in {took:.1f} s")
    uris = [f"oss://{BUCKET}/{n}" for n in names]
    probe = [uris[i * 7 % len(uris)] for i in range(args.interactive)]

    with stack.http(timeout=120) as c:
        interactive_latencies(c, probe[:4])  # warm-up: every worker child loads its models
        idle = interactive_latencies(c, probe)
        single = single_job_throughput(c, uris[: args.single])
        listing_seconds = listing_only_seconds(c)

        before = used_memory(stack)
        t0 = time.perf_counter()
        r = c.post(
            f"/v1/projects/{PROJECT}/crop-batches",
            json={
                "SourcePrefix": f"oss://{BUCKET}/p/",
                "Suffixes": [".jpg"],
                "AspectRatios": RATIOS,
                "ManifestURI": f"oss://{OUT}/{{BatchId}}.jsonl",
            },
        )
        r.raise_for_status()
        batch_id = r.json()["BatchId"]
        listed_at = None
        while listed_at is None:
            if batch_get(c, batch_id)["Status"] != "Listing":
                listed_at = time.perf_counter() - t0
            else:
                time.sleep(0.01)
        busy = interactive_latencies(c, probe, pause=0.2)
        while not (batch := batch_get(c, batch_id)).get("FinishedAt"):
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        after = used_memory(stack)

    total = int(batch["Total"])
    say(f"batch: {batch['Status']}, Total {total}, Succeeded {batch['Succeeded']}, Failed {batch['Failed']}")
    say(
        f"listing rate: {total / listed_at:,.0f} objects/s in the batch (Listing phase {listed_at:.2f} s, "
        f"polled); listing-only batch: {len(names) / listing_seconds:,.0f} objects/s "
        f"({listing_seconds:.2f} s)"
    )
    rate = total / elapsed
    say(
        f"throughput: batch {rate:.1f} jobs/s end to end ({elapsed:.1f} s), single jobs {single:.1f} jobs/s; "
        f"ratio {rate / single:.2f}"
    )
    p50i, p99i = percentile(idle, 50), percentile(idle, 99)
    p50b, p99b = percentile(busy, 50), percentile(busy, 99)
    say(
        f"interactive latency idle:         p50 {p50i * 1000:.0f} ms, p99 {p99i * 1000:.0f} ms "
        f"({len(idle)} jobs)"
    )
    say(
        f"interactive latency during batch: p50 {p50b * 1000:.0f} ms, p99 {p99b * 1000:.0f} ms "
        f"(ratio p50 {p50b / p50i:.2f}x, p99 {p99b / p99i:.2f}x; target <= 2x)"
    )
    say(
        f"Redis memory per job record: {(after - before) / total:,.0f} bytes "
        f"({(after - before) / 1e6:.1f} MB for {total} jobs, indexes and manifest bookkeeping included)"
    )


if __name__ == "__main__":
    main()
