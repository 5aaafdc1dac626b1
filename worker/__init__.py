"""cropq workers: Celery tasks, storage, webhooks, and the pure crop engine (worker.engine)."""
