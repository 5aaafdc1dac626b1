"""Worker liveness: the worker's main process beats into the heartbeat set (worker/heartbeats.py) every
few seconds and leaves it when it shuts down; the check ``python -m worker.health`` exits 0 when this
host's worker beat recently, 1 otherwise. Usable as a Docker HEALTHCHECK or a Kubernetes exec probe
without an HTTP server in the worker.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from typing import Any

import redis
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from worker import heartbeats
from worker.logs import configure_logging
from worker.redis_clients import sync_client
from worker.settings import get_settings

_stop = threading.Event()
_beaters: dict[str, threading.Thread] = {}  # node name -> its beating thread, once the worker is ready


def _default_node() -> str:
    return f"celery@{socket.gethostname()}"


def _client() -> redis.Redis:
    return sync_client(get_settings().redis_url, socket_timeout=5, socket_connect_timeout=5)


def _beat(node: str) -> None:
    client = _client()
    while not _stop.is_set():
        with contextlib.suppress(redis.RedisError):  # the check reports it: no recent beat, not healthy
            heartbeats.beat(client, node)
        _stop.wait(heartbeats.BEAT_EVERY_SECONDS)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    node = str(getattr(sender, "hostname", "") or _default_node())
    _beaters[node] = threading.Thread(target=_beat, args=(node,), name="cropq-heartbeat", daemon=True)
    _beaters[node].start()


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    """Sent once the pool has drained: the node no longer takes work, so it leaves the alive count."""
    _stop.set()
    for node, thread in _beaters.items():
        thread.join(timeout=6)  # a beat under way would otherwise land after the removal
        with contextlib.suppress(redis.RedisError):  # its beats age out of the window instead
            heartbeats.forget(_client(), node)


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
        return heartbeats.is_alive(client, node or _default_node())
    except redis.RedisError:
        return False


def main() -> int:
    ok = check(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.stdout.write("healthy\n" if ok else "unhealthy: no recent heartbeat\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
