"""Worker liveness, arq style: the worker's main process refreshes a Redis key with a TTL; the check
``python -m worker.health`` exits 0 when this host's worker refreshed it recently, 1 otherwise.
Usable as a Docker HEALTHCHECK or a Kubernetes exec probe without an HTTP server in the worker.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any

import redis
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from worker import keys
from worker.logs import configure_logging
from worker.redis_clients import sync_client
from worker.settings import get_settings

HEARTBEAT_EVERY = 10.0
HEARTBEAT_TTL = 45

_stop = threading.Event()


def _default_node() -> str:
    return f"celery@{socket.gethostname()}"


def _beat(node: str) -> None:
    s = get_settings()
    client = sync_client(s.redis_url, socket_timeout=5, socket_connect_timeout=5)
    started = time.time()
    beats = 0
    while not _stop.is_set():
        try:
            beats += 1
            payload = json.dumps({"pid": os.getpid(), "started": started, "beats": beats, "at": time.time()})
            client.set(keys.worker_heartbeat(node), payload, ex=HEARTBEAT_TTL)
        except redis.RedisError:
            pass  # the check reports it: no heartbeat, not healthy
        _stop.wait(HEARTBEAT_EVERY)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    node = str(getattr(sender, "hostname", "") or _default_node())
    threading.Thread(target=_beat, args=(node,), name="cropq-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _stop.set()


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    s = get_settings()
    configure_logging(s.log_level, s.log_json)
    try:  # one OpenCV thread per prefork child: the children are the parallelism
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def check(node: str | None = None) -> bool:
    s = get_settings()
    try:
        client = sync_client(s.redis_url, socket_timeout=3, socket_connect_timeout=3)
        return bool(client.exists(keys.worker_heartbeat(node or _default_node())))
    except redis.RedisError:
        return False


def main() -> int:
    ok = check(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.stdout.write("healthy\n" if ok else "unhealthy: no recent heartbeat\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
