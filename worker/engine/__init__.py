"""The crop engine: a pure library (image bytes in, crop suggestions out).

Nothing here talks to Redis, S3, HTTP or Celery, and nothing reads settings: the worker and the CLI
pass what they need. Import the heavy entry point from :mod:`worker.engine.pipeline`; this package
itself stays cheap to import so that ratio parsing can be shared with the API without OpenCV.
"""
