"""Fixtures for the auth tests: a real Redis client (from the suite's ``redis_url``) and a capture of the
requests the official IMM SDK would send, taken just before they reach the network."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import redis as redis_sync
from redis.asyncio import Redis

T = TypeVar("T")


@pytest.fixture
def aredis(redis_url: str) -> Iterator[Redis]:
    """An async client on a flushed DB. Use it through ``arun`` (one event loop per call)."""
    with redis_sync.Redis.from_url(redis_url) as sync:
        sync.flushdb()
    yield Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def arun(aredis: Redis) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine in a fresh loop, then drop the pool's connections (they belong to that loop)."""

    def run(coro: Coroutine[Any, Any, T]) -> T:
        async def main() -> T:
            try:
                return await coro
            finally:
                await aredis.connection_pool.disconnect()

        return asyncio.run(main())

    return run


@dataclass(frozen=True)
class WireRequest:
    method: str
    raw_path: bytes
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def url(self) -> str:
        return self.raw_path.decode() + ("?" + self.raw_query if self.raw_query else "")


class _Captured(Exception):
    pass


def capture_sdk_request(
    *,
    access_key_id: str = "AKIDtest123",
    access_key_secret: str = "secretXYZ",
    signature_algorithm: str | None = None,
    endpoint: str = "127.0.0.1:8000",
    security_token: str | None = None,
    **request_fields: Any,
) -> WireRequest:
    """The request the official SDK builds for ``detect_image_cropping(**request_fields)``, as it goes out.

    ``DaraCore.do_action`` is the SDK's single exit to the HTTP library; it is swapped for a catcher, and
    the URL is composed by the SDK's own ``compose_url`` (Python ``urlencode``), exactly as on the wire.
    """
    from alibabacloud_imm20200930 import models as imm_models
    from alibabacloud_imm20200930.client import Client
    from alibabacloud_tea_openapi import models as open_api_models
    from darabonba.core import DaraCore

    seen: list[Any] = []

    def catch(request: Any, runtime: Any = None) -> Any:
        seen.append(request)
        raise _Captured

    original = DaraCore.__dict__["do_action"]
    DaraCore.do_action = staticmethod(catch)  # type: ignore[method-assign]
    try:
        config = open_api_models.Config(
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            endpoint=endpoint,
            protocol="http",
            signature_algorithm=signature_algorithm,
        )
        with contextlib.suppress(Exception):  # the catcher's exception, wrapped by the SDK
            Client(config).detect_image_cropping(imm_models.DetectImageCroppingRequest(**request_fields))
    finally:
        DaraCore.do_action = original  # type: ignore[method-assign]
    assert len(seen) == 1, "the SDK did not reach its transport"
    req = seen[0]
    url = urlsplit(DaraCore.compose_url(req))
    body = req.body if req.body is not None else b""
    return WireRequest(
        method=req.method,
        raw_path=url.path.encode(),
        raw_query=url.query,
        headers=[(str(k), str(v)) for k, v in req.headers.items()],
        body=body.encode() if isinstance(body, str) else body,
    )


@pytest.fixture
def sdk_request() -> Callable[..., WireRequest]:
    return capture_sdk_request
