"""Signed job-finished callbacks: Standard Webhooks signing, SSRF-safe delivery, the Celery retry task."""

WEBHOOK_QUEUE_SUFFIX = ".webhooks"


def webhook_queue(queue_name: str) -> str:
    """The Celery queue callbacks travel on, beside the crop queue ``queue_name``: their own workers
    consume it, so a slow receiver never holds a crop worker."""
    return queue_name + WEBHOOK_QUEUE_SUFFIX
