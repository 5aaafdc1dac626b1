"""The workers' Celery application: the shared wiring (celery_config.py) plus the task modules.

The task names live in contracts.py and the configuration in celery_config.py, so the API sends tasks from
a producer-only app and never imports this module.
Crop workers start with ``celery -A worker.celery_app worker -Q cropq,cropq.batch``: the jobs of prefix
batches (and the batches' feeder and finisher) travel on ``cropq.batch``, which a worker reads only when
``cropq`` is empty (kombu's ``priority`` queue order), so an interactive job waits at most for the batch jobs
already running. Callbacks travel on their own queue (``cropq.webhooks``), consumed by separate worker
processes so a slow receiver never delays a crop.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown

from worker import tracing
from worker.celery_config import build_app
from worker.logs import configure_logging
from worker.settings import Settings, get_settings

TASK_MODULES = ("worker.tasks", "worker.webhooks.tasks", "worker.batch_tasks")


def make_celery(settings: Settings | None = None) -> Celery:
    """The worker's app: the shared configuration (worker/celery_config.py) and the task modules."""
    return build_app(settings or get_settings(), include=TASK_MODULES)


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Replace Celery's log setup with ours: JSON lines, the RequestId bound on every task's lines."""
    s = get_settings()
    configure_logging(s.log_level, s.log_json)


@worker_process_init.connect
def _start_tracing(**_: Any) -> None:
    """Tracing starts in each pool child, after the fork: an exporter's thread and connections never
    cross a fork. Off (the default) imports nothing."""
    tracing.start_tracing(get_settings(), "cropq-worker")


@worker_process_shutdown.connect
def _stop_tracing(**_: Any) -> None:
    tracing.stop_tracing()


app = make_celery()
