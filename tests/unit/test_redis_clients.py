"""One URL scheme for a Redis Sentinel group: parsing, refusals, the clients built from it, and the form
kombu (the Celery broker) reads. Nothing here connects; tests/integration/test_sentinel.py does."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as async_sentinel
import redis.sentinel

from worker.celery_app import make_celery
from worker.redis_clients import (
    BROKER_SENTINEL_SOCKET_TIMEOUT,
    SentinelTarget,
    async_client,
    celery_broker,
    sentinel_target,
    sync_client,
)
from worker.settings import Settings

FULL = (
    "redis+sentinel://app:n%40de%3Apw@s1.internal:26379,10.0.0.2:26380,[::1]/cropq/3?sentinel_password=s%26pw"
)


def test_a_full_url_names_every_part() -> None:
    assert sentinel_target(FULL) == SentinelTarget(
        sentinels=(("s1.internal", 26379), ("10.0.0.2", 26380), ("::1", 26379)),
        master_name="cropq",
        db=3,
        username="app",
        password="n@de:pw",
        sentinel_password="s&pw",
    )


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("redis+sentinel://h1/mymaster", SentinelTarget((("h1", 26379),), "mymaster")),
        ("REDIS+SENTINEL://h1:1/m/", SentinelTarget((("h1", 1),), "m")),
        (
            "redis+sentinel://:pw@h1,h2/m/0",
            SentinelTarget((("h1", 26379), ("h2", 26379)), "m", password="pw"),
        ),
        ("redis+sentinel://user@h1/m", SentinelTarget((("h1", 26379),), "m", username="user")),
        ("redis+sentinel://[fe80::1]:26381/m", SentinelTarget((("fe80::1", 26381),), "m")),
    ],
)
def test_optional_parts_take_their_defaults(url: str, want: SentinelTarget) -> None:
    assert sentinel_target(url) == want


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380/2", "unix:///run/redis.sock", "", "junk"]
)
def test_other_urls_are_left_to_redis_py(url: str) -> None:
    assert sentinel_target(url) is None
    assert celery_broker(url) == (url, {})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:26379", "must name the master"),
        ("redis+sentinel://h1:26379/", "must name the master"),
        ("redis+sentinel://h1/m/x", "database must be a number"),
        ("redis+sentinel://h1/m/-1", "database must be a number"),
        ("redis+sentinel://h1/m/0/extra", "unexpected path"),
        ("redis+sentinel:///m", "empty sentinel address"),
        ("redis+sentinel://h1,,h2/m", "empty sentinel address"),
        ("redis+sentinel://:26379/m", "has no host"),
        ("redis+sentinel://h1:port/m", "invalid port"),
        ("redis+sentinel://h1:0/m", "invalid port"),
        ("redis+sentinel://h1:70000/m", "invalid port"),
        ("redis+sentinel://[::1/m", "malformed IPv6"),
        ("redis+sentinel://[::1]x/m", "malformed IPv6"),
        ("redis+sentinel://h1/m?password=x", "unknown query parameter(s) password"),
        ("redis+sentinel://h1/m?sentinel_password=a&sentinel_password=b", "more than once"),
        ("redis+sentinel://h1/m?sentinel_password=", "is empty"),
        ("redis+sentinel://h1/m#frag", "fragment"),
        ("rediss+sentinel://h1/m", "not supported"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="sentinel") as caught:
        sentinel_target(url)
    assert message in str(caught.value)


def test_the_broker_url_is_kombus_sentinel_form_with_the_master_and_sentinel_options() -> None:
    broker, options = celery_broker(FULL)
    entries = broker.split(";")
    assert entries == [
        "sentinel://app:n%40de%3Apw@s1.internal:26379/3",
        "sentinel://app:n%40de%3Apw@10.0.0.2:26380/3",
        "sentinel://app:n%40de%3Apw@[::1]:26379/3",
    ]
    assert options == {
        "master_name": "cropq",
        "sentinel_kwargs": {
            "socket_timeout": BROKER_SENTINEL_SOCKET_TIMEOUT,
            "socket_connect_timeout": BROKER_SENTINEL_SOCKET_TIMEOUT,
            "password": "s&pw",
        },
    }


def test_a_broker_url_without_credentials_carries_none() -> None:
    broker, options = celery_broker("redis+sentinel://h1,h2:26380/m")
    assert broker == "sentinel://h1:26379/0;sentinel://h2:26380/0"
    assert "password" not in options["sentinel_kwargs"]


def test_kombu_reads_the_group_the_way_the_url_says() -> None:
    """What Celery hands kombu: the sentinel transport, every sentinel, the data-node credentials and
    database, the master name, and cropq's own transport options kept beside them."""
    app = make_celery(Settings(redis_url=FULL))
    with app.connection_for_write() as conn:
        assert conn.transport_cls == "sentinel"
        assert conn.alt == celery_broker(FULL)[0].split(";")
        assert (conn.hostname, conn.port) == ("s1.internal", 26379)
        assert (conn.userid, conn.password, conn.virtual_host) == ("app", "n@de:pw", "3")
        options = conn.transport_options or {}
    assert options["master_name"] == "cropq"
    assert options["sentinel_kwargs"]["password"] == "s&pw"
    assert options["visibility_timeout"] == Settings().visibility_timeout


def test_a_plain_url_reaches_kombu_unchanged() -> None:
    app = make_celery(Settings(redis_url="redis://:pw@127.0.0.1:6390/2"))
    with app.connection_for_write() as conn:
        assert conn.transport_cls == "redis"
        assert (conn.hostname, conn.port, conn.password, conn.virtual_host) == ("127.0.0.1", 6390, "pw", "2")
        assert "master_name" not in (conn.transport_options or {})


def test_the_sync_client_asks_the_sentinels_for_the_primary() -> None:
    client = sync_client(FULL, socket_timeout=3, socket_connect_timeout=2, decode_responses=True)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "cropq" and pool.is_master
    node = pool.connection_kwargs
    assert (node["db"], node["username"], node["password"]) == (3, "app", "n@de:pw")
    assert node["socket_timeout"] == 3 and node["decode_responses"] is True
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [
        ("s1.internal", 26379),
        ("10.0.0.2", 26380),
        ("::1", 26379),
    ]
    assert all(s["password"] == "s&pw" and s["socket_connect_timeout"] == 2 for s in sentinels)
    assert all("db" not in s or s["db"] == 0 for s in sentinels)  # a sentinel has no databases
    client.close()


async def _async_pool_of(url: str) -> aioredis.ConnectionPool:
    client = async_client(url, socket_timeout=3, decode_responses=True)
    pool = client.connection_pool
    await client.aclose()
    return pool


def test_the_async_client_asks_the_sentinels_for_the_primary() -> None:
    import asyncio

    pool = asyncio.run(_async_pool_of(FULL))
    assert isinstance(pool, async_sentinel.SentinelConnectionPool)
    assert pool.service_name == "cropq" and pool.is_master
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "n@de:pw")
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [s["password"] for s in sentinels] == ["s&pw"] * 3


def test_plain_urls_build_plain_clients() -> None:
    import asyncio

    client = sync_client("redis://:pw@127.0.0.1:6390/2", socket_timeout=3)
    assert type(client.connection_pool) is redis.ConnectionPool
    assert client.connection_pool.connection_kwargs["password"] == "pw"
    client.close()
    pool = asyncio.run(_async_pool_of("redis://127.0.0.1:6390/4"))
    assert type(pool) is aioredis.ConnectionPool
    assert pool.connection_kwargs["db"] == 4
