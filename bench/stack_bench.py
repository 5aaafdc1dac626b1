"""Full-stack benchmark: API -> Redis -> Celery worker -> S3 -> result, against the engine alone, in one run.

    python bench/stack_bench.py [--jobs 40] [--image photo.jpg]

Starts its own Valkey, SeaweedFS, API and workers on free loopback ports (nothing else is touched), makes a
12 MP JPEG unless one is given, and prints:
- the decode floor (1/8-scale JPEG decode) and the engine alone (5 ratios, face detection on);
- one job at a time through the stack: p50/p95 submit-to-result latency, and its ratio to the engine alone;
- a batch of jobs with 1 and with 2 worker processes: jobs/s and the scaling ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack_fixture import BENCH_KEY as KEY  # noqa: E402
from bench.stack_fixture import say, start_stack  # noqa: E402

RATIOS = ["1:1", "16:9", "4:3", "3:4", "9:16"]


def make_12mp_jpeg() -> bytes:
    """A photo-like 4000x3000 JPEG (about 3 MB): a real photo with a face, upscaled, plus noise."""
    import cv2
    from skimage import data

    img = cv2.resize(data.astronaut(), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).normal(0, 6, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return bytes(buf)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def time_engine(data: bytes, n: int) -> tuple[list[float], list[float]]:
    from PIL import Image

    from worker.engine.pipeline import detect_crops

    detect_crops(data, RATIOS)  # warm-up: model load
    floor, engine = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (im.width // 8, im.height // 8))
            im.load()
        floor.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        detect_crops(data, RATIOS)
        engine.append((time.perf_counter() - t0) * 1000)
    return floor, engine


def run_job(client: httpx.Client, uri: str, expect: str = "Succeeded") -> float:
    t0 = time.perf_counter()
    r = client.post("/v1/projects/bench/crop-jobs", json={"SourceURI": uri, "AspectRatios": RATIOS})
    r.raise_for_status()
    rid = r.json()["RequestId"]
    while True:
        job = client.get(f"/v1/projects/bench/crop-jobs/{rid}", params={"wait": 30}).json()
        if job["Status"] in ("Succeeded", "Failed"):
            assert job["Status"] == expect, job
            return (time.perf_counter() - t0) * 1000


def time_sdk(port: int, uri: str, n: int) -> list[float]:
    """The official IMM SDK's DetectImageCropping call, end to end (RPC face: submit, wait, answer)."""
    from alibabacloud_imm20200930 import models
    from alibabacloud_imm20200930.client import Client
    from alibabacloud_tea_openapi import models as open_api_models

    client = Client(
        open_api_models.Config(
            access_key_id=KEY["AccessKeyId"],
            access_key_secret=KEY["AccessKeySecret"],
            endpoint=f"127.0.0.1:{port}",
            protocol="http",
        )
    )
    request = models.DetectImageCroppingRequest(
        project_name="bench", source_uri=uri, aspect_ratios=json.dumps(RATIOS)
    )
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert len(client.detect_image_cropping(request).body.croppings) == len(RATIOS)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=40, help="jobs in each throughput batch")
    ap.add_argument("--latency-jobs", type=int, default=30, help="jobs sent one at a time for latency")
    ap.add_argument("--image", type=Path, help="a JPEG to use instead of the generated 12 MP one")
    args = ap.parse_args()

    data = args.image.read_bytes() if args.image else make_12mp_jpeg()
    say(f"image: {len(data) / 1e6:.1f} MB JPEG; ratios {RATIOS}")
    floor, engine = time_engine(data, 20)
    f50, e50 = statistics.median(floor), statistics.median(engine)

    stack = start_stack(Path(tempfile.mkdtemp(prefix="cropq-bench-")), log_level="WARNING")
    try:
        stack.project("bench", "bench")
        uri = stack.put("bench", "12mp.jpg", data)
        client = stack.http(timeout=120)

        stack.add_worker(1)
        for _ in range(3):
            run_job(client, uri)  # warm-up: model load in the worker child
        latency = [run_job(client, uri) for _ in range(args.latency_jobs)]
        # The queue's own cost: a job on a missing object (API, Redis, worker, S3 stat, result; no decode).
        queue_rtt = [run_job(client, "oss://bench/missing.jpg", "Failed") for _ in range(args.latency_jobs)]
        sdk_latency = time_sdk(stack.api_port, uri, args.latency_jobs)

        def batch() -> float:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda _: run_job(client, uri), range(args.jobs)))
            return args.jobs / (time.perf_counter() - t0)

        one = batch()
        stack.add_worker(1)
        for _ in range(2):
            run_job(client, uri)
        two = batch()
    finally:
        stack.stop()

    l50, l95 = pct(latency, 50), pct(latency, 95)
    say("")
    say("| measure | value | ratio |")
    say("|---|---|---|")
    say(f"| decode floor: 1/8-scale JPEG decode, median | {f50:.1f} ms | 1.00 |")
    q50 = pct(queue_rtt, 50)
    say(f"| engine alone, 5 ratios, faces + objects, median | {e50:.1f} ms | {e50 / f50:.2f}x floor |")
    say(f"| queue round trip without decode (missing object), p50 | {q50:.1f} ms | - |")
    say(f"| floor of a job: decode + queue round trip | {f50 + q50:.1f} ms | 1.00 |")
    say(
        f"| full stack, one job at a time, p50 submit-to-result | {l50:.1f} ms | {l50 / e50:.2f}x engine, "
        f"{l50 / (f50 + q50):.2f}x job floor, {l50 / (e50 + q50):.2f}x engine + queue |"
    )
    say(f"| full stack, one job at a time, p95 submit-to-result | {l95:.1f} ms | {l95 / e50:.2f}x engine |")
    s50, s95 = pct(sdk_latency, 50), pct(sdk_latency, 95)
    say(f"| official IMM SDK call (RPC face), p50 | {s50:.1f} ms | {s50 / e50:.2f}x engine |")
    say(f"| official IMM SDK call (RPC face), p95 | {s95:.1f} ms | {s95 / e50:.2f}x engine |")
    say(f"| throughput, 1 worker process, {args.jobs} jobs | {one:.1f} jobs/s | 1.00 |")
    say(f"| throughput, 2 worker processes, {args.jobs} jobs | {two:.1f} jobs/s | {two / one:.2f}x |")
    say(f"| engine alone, 1 process | {1000 / e50:.1f} jobs/s | {1000 / e50 / one:.2f}x of 1 worker |")


if __name__ == "__main__":
    main()
