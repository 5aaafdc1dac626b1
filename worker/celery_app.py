"""The Celery application: broker/back-end wiring and the reliability settings.

Only configuration lives here (importing it never loads OpenCV), so the API can send tasks by name.
Crop workers start with ``celery -A worker.celery_app worker -Q cropq,cropq.batch``: the jobs of prefix
batches (and the batches' feeder and finisher) travel on ``cropq.batch``, which a worker reads only when
``cropq`` is empty (kombu's ``priority`` queue order), so an interactive job waits at most for the batch jobs
already running. Callbacks travel on their own queue (``cropq.webhooks``), consumed by separate worker
processes so a slow receiver never delays a crop.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from worker.logs import configure_logging
from worker.redis_clients import celery_broker
from worker.settings import Settings, get_settings
from worker.webhooks import webhook_queue

CROP_TASK = "cropq.crop"
WEBHOOK_TASK = "cropq.webhook"
BATCH_FEED_TASK = "cropq.batch-feed"
BATCH_FINISH_TASK = "cropq.batch-finish"
BATCH_WEBHOOK_TASK = "cropq.batch-webhook"
BATCH_QUEUE_SUFFIX = ".batch"


def batch_queue(queue_name: str) -> str:
    """The queue of prefix batches' jobs beside the crop queue ``queue_name``: crop workers consume both,
    this one only when the crop queue is empty."""
    return queue_name + BATCH_QUEUE_SUFFIX


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    broker_url, broker_options = celery_broker(s.redis_url)
    app = Celery(
        "cropq", broker=broker_url, include=["worker.tasks", "worker.webhooks.tasks", "worker.batches"]
    )
    app.conf.update(
        # JSON only: never unpickle what arrives on a shared broker.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,  # results live in our own job records
        task_default_queue=s.queue_name,
        task_routes={
            CROP_TASK: {"queue": s.queue_name},
            WEBHOOK_TASK: {"queue": webhook_queue(s.queue_name)},
            BATCH_FEED_TASK: {"queue": batch_queue(s.queue_name)},
            BATCH_FINISH_TASK: {"queue": batch_queue(s.queue_name)},
            BATCH_WEBHOOK_TASK: {"queue": webhook_queue(s.queue_name)},
        },
        # A job is acknowledged only once it ended, one message is reserved at a time, and a child
        # killed mid-job puts the message back (the attempt counter in the task stops a poison loop).
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Decoding a huge image leaves the allocator holding memory it rarely returns: a child above
        # the limit after its job is replaced (never mid-job), so one bad image cannot ratchet it up.
        worker_max_memory_per_child=s.worker_max_memory_mb * 1024 or None,
        task_soft_time_limit=s.task_soft_time_limit,
        task_time_limit=s.task_hard_time_limit,
        broker_transport_options={
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
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Replace Celery's log setup with ours: JSON lines, the RequestId bound on every task's lines."""
    s = get_settings()
    configure_logging(s.log_level, s.log_json)


app = make_celery()
