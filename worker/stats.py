"""Service-wide counters kept in Redis, so /metrics on any API replica shows every worker on every machine
(prefork children and many hosts need no Prometheus multiprocess directory this way)."""

from __future__ import annotations

import redis

from worker import keys

CROP_SECONDS_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def record_job(client: redis.Redis, status: str, crop_seconds: float | None = None) -> None:
    """Count a finished job; with ``crop_seconds``, also observe the engine time in a histogram."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(keys.STATS, f"jobs:{status}", 1)
        if crop_seconds is not None:
            pipe.hincrbyfloat(keys.STATS, "crop_seconds:sum", crop_seconds)
            pipe.hincrby(keys.STATS, "crop_seconds:count", 1)
            for bound in CROP_SECONDS_BUCKETS:
                if crop_seconds <= bound:
                    pipe.hincrby(keys.STATS, f"crop_seconds:le:{bound}", 1)
        pipe.execute()


ACCEPTED = "jobs:accepted"


def record_webhook(client: redis.Redis, outcome: str) -> None:
    client.hincrby(keys.STATS, f"webhook:{outcome}", 1)


def render_prometheus(stats: dict[str, str]) -> str:
    """The counters in Prometheus text format (cumulative histogram buckets, as Prometheus expects)."""
    out = [
        "# HELP cropq_jobs_accepted_total Crop jobs accepted (answered 202)",
        "# TYPE cropq_jobs_accepted_total counter",
        f"cropq_jobs_accepted_total {int(stats.get(ACCEPTED, 0))}",
        "# HELP cropq_jobs_total Crop jobs finished, by status",
        "# TYPE cropq_jobs_total counter",
    ]
    for status in ("Succeeded", "Failed"):
        out.append(f'cropq_jobs_total{{status="{status}"}} {int(stats.get(f"jobs:{status}", 0))}')
    out += ["# HELP cropq_crop_seconds Engine time per job", "# TYPE cropq_crop_seconds histogram"]
    for bound in CROP_SECONDS_BUCKETS:
        out.append(
            f'cropq_crop_seconds_bucket{{le="{bound}"}} {int(stats.get(f"crop_seconds:le:{bound}", 0))}'
        )
    count = int(stats.get("crop_seconds:count", 0))
    out.append(f'cropq_crop_seconds_bucket{{le="+Inf"}} {count}')
    out.append(f"cropq_crop_seconds_sum {float(stats.get('crop_seconds:sum', 0.0))}")
    out.append(f"cropq_crop_seconds_count {count}")
    out += [
        "# HELP cropq_webhook_attempts_total Callback POSTs, by outcome",
        "# TYPE cropq_webhook_attempts_total counter",
    ]
    for outcome in ("delivered", "error"):
        out.append(
            f'cropq_webhook_attempts_total{{outcome="{outcome}"}} {int(stats.get(f"webhook:{outcome}", 0))}'
        )
    return "\n".join(out) + "\n"
