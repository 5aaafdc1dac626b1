"""Celery wiring shared by every process: broker, serialisation, routes and the reliability options.

It defines no task and imports no task module, so a producer (the API) builds its Celery app from here and
sends tasks by their names in the wire contract (worker/contracts.py) without loading the worker's app.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from celery import Celery

from worker.contracts import (
    BATCH_FEED_TASK,
    BATCH_FINISH_TASK,
    BATCH_WEBHOOK_TASK,
    CROP_TASK,
    WEBHOOK_TASK,
    batch_queue,
)
from worker.redis_clients import celery_broker
from worker.settings import Settings, get_settings
from worker.webhooks import webhook_queue


def celery_options(s: Settings) -> dict[str, Any]:
    """Every Celery setting, for producers and workers alike (a producer ignores the worker-only ones)."""
    _, broker_options = celery_broker(s.redis_url)
    return {
        # JSON only: never unpickle what arrives on a shared broker.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,  # results live in our own job records
        "task_default_queue": s.queue_name,
        "task_routes": {
            CROP_TASK: {"queue": s.queue_name},
            WEBHOOK_TASK: {"queue": webhook_queue(s.queue_name)},
            BATCH_FEED_TASK: {"queue": batch_queue(s.queue_name)},
            BATCH_FINISH_TASK: {"queue": batch_queue(s.queue_name)},
            BATCH_WEBHOOK_TASK: {"queue": webhook_queue(s.queue_name)},
        },
        # A job is acknowledged only once it ended, one message is reserved at a time, and a child
        # killed mid-job puts the message back (the attempt counter in the task stops a poison loop).
        "task_acks_late": True,
        "task_acks_on_failure_or_timeout": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Decoding a huge image leaves the allocator holding memory it rarely returns: a child above
        # the limit after its job is replaced (never mid-job), so one bad image cannot ratchet it up.
        "worker_max_memory_per_child": s.worker_max_memory_mb * 1024 or None,
        "task_soft_time_limit": s.task_soft_time_limit,
        "task_time_limit": s.task_hard_time_limit,
        "broker_transport_options": {
            # Must exceed the longest job and retry countdown, or work would run twice.
            "visibility_timeout": s.visibility_timeout,
            # Scan for messages of vanished workers every few seconds instead of every 100 s.
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
            # BRPOP lists the consumed queues in the order given (-Q cropq,cropq.batch) instead of rotating
            # them: a waiting interactive job is always taken before a batch job.
            "queue_order_strategy": "priority",
            **broker_options,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def build_app(s: Settings, include: Sequence[str] = ()) -> Celery:
    """A configured Celery app; ``include`` names the task modules a worker loads when it starts."""
    broker_url, _ = celery_broker(s.redis_url)
    app = Celery("cropq", broker=broker_url, include=list(include))
    app.conf.update(celery_options(s))
    return app


def producer_app(s: Settings) -> Celery:
    """A Celery app that only sends: no task registered, the same broker and transport options as the
    workers (JSON, routes, socket timeouts, Sentinel), so ``send_task`` by name is all a producer needs."""
    return build_app(s)


@lru_cache(maxsize=1)
def sending_app() -> Celery:
    """The producer app this process sends follow-up work with (batch feeds and finishers, callbacks) from
    modules the API imports too, so neither side needs the worker's app to send by name."""
    return producer_app(get_settings())
