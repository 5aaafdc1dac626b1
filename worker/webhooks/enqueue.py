"""Queue a job's callback by task name: no task module and no worker app needed (the API and the worker's
job lifecycle both call it)."""

from __future__ import annotations

from worker.celery_config import sending_app
from worker.contracts import WEBHOOK_TASK


def enqueue_callback(request_id: str) -> None:
    """Queue the callback of a job whose terminal state is already stored."""
    sending_app().send_task(WEBHOOK_TASK, args=[request_id])
