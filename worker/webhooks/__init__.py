"""Signed job-finished callbacks: Standard Webhooks signing, SSRF-safe delivery, the Celery retry task."""
