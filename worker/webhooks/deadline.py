"""One deadline over a whole HTTP exchange, enforced under httpx.

httpx's timeouts apply per operation: a receiver that sends one byte every second never trips a 15 s read
timeout, and holds the delivery as long as it likes. Here every socket operation (connect, TLS handshake,
each write, each read) gets at most the time left until one monotonic deadline, and none starts after it,
so the whole exchange (status line and headers included) ends by then, however the receiver drips.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import typing
from collections.abc import Iterator

import httpcore

SOCKET_OPTION = typing.Any  # httpcore's own alias is private; the value is passed through untouched


class Deadline:
    """A point on the monotonic clock; :meth:`budget` is the time an operation may still take."""

    def __init__(self, seconds: float, clock: typing.Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._at = clock() + seconds

    def remaining(self) -> float:
        return self._at - self._clock()

    def budget(self, timeout: float | None, error: type[Exception]) -> float:
        """``timeout`` capped at the time left; raises ``error`` once the deadline has passed."""
        left = self.remaining()
        if left <= 0:
            raise error(self.message())
        return left if timeout is None else min(timeout, left)

    def message(self) -> str:
        return f"the whole exchange took over {self.seconds:g} s"


@contextlib.contextmanager
def _named(deadline: Deadline) -> Iterator[None]:
    """A timeout of the operation that used up the deadline says so (the receiver's LastError)."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        if deadline.remaining() <= 0:
            raise type(exc)(deadline.message()) from exc
        raise


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _named(self._deadline):
            return self._inner.read(max_bytes, self._deadline.budget(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _named(self._deadline):
            self._inner.write(buffer, self._deadline.budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        with _named(self._deadline):
            budget = self._deadline.budget(timeout, httpcore.ConnectTimeout)
            tls = self._inner.start_tls(ssl_context, server_hostname, budget)
        return DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking socket backend with every operation bounded by ``deadline`` (set per request
    by the transport before it sends)."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self.deadline: Deadline | None = None

    def _bounded(self, stream: httpcore.NetworkStream) -> httpcore.NetworkStream:
        return stream if self.deadline is None else DeadlineStream(stream, self.deadline)

    def _budget(self, timeout: float | None) -> float | None:
        return timeout if self.deadline is None else self.deadline.budget(timeout, httpcore.ConnectTimeout)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self._budget(timeout), local_address, socket_options)
        return self._bounded(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return self._bounded(self._inner.connect_unix_socket(path, self._budget(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
