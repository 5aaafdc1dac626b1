"""AccessKeyStore against a real Redis: encryption at rest, bootstrap keys, lifecycle."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from api.auth.keystore import AccessKeyStore, KeyStoreConfigError, KeyStoreError, ReadOnlyKeyError
from worker import keys
from worker.settings import AccessKeySpec, Settings

Run = Callable[[Any], Any]

BOOT = AccessKeySpec(
    AccessKeyId="BOOTKEY001", AccessKeySecret=SecretStr("boot-secret-0123456789"), Projects=["*"]
)


def make_settings(secret_key: str = "test-secret-key", boot: bool = True) -> Settings:
    # Keys are padded to the 32-byte minimum; distinct names stay distinct keys.
    padded = (secret_key + "-" * 32) if secret_key else ""
    return Settings(secret_key=SecretStr(padded), access_keys=[BOOT] if boot else [])


def test_create_then_get_round_trips_and_secret_is_encrypted(aredis: Redis, arun: Run) -> None:
    store = AccessKeyStore(aredis, make_settings())

    async def scenario() -> None:
        key, secret = await store.create(["demo", "photos", "demo"])
        assert re.fullmatch(r"LTAI[A-Za-z0-9]{20}", key.access_key_id)
        assert len(secret) >= 30 and re.fullmatch(r"[A-Za-z0-9_-]+", secret)
        assert key.projects == ("demo", "photos")
        got = await store.get(key.access_key_id)
        assert got is not None and got.secret == secret and got.enabled and got.source == "stored"
        # A dump of Redis holds no trace of the secret.
        dump = json.dumps(await aredis.hgetall(keys.access_key(key.access_key_id)))
        assert secret not in dump
        assert secret not in repr(got)
        assert await aredis.sismember(keys.ACCESS_KEYS_INDEX, key.access_key_id)

    arun(scenario())


def test_other_secret_key_cannot_read_and_says_so(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        key, _ = await AccessKeyStore(aredis, make_settings("one")).create(["demo"])
        with pytest.raises(KeyStoreConfigError, match="CROPQ_SECRET_KEY"):
            await AccessKeyStore(aredis, make_settings("two")).get(key.access_key_id)

    arun(scenario())


def test_empty_secret_key_is_a_configuration_error_only_when_needed(aredis: Redis, arun: Run) -> None:
    async def scenario() -> None:
        key, _ = await AccessKeyStore(aredis, make_settings()).create(["demo"])
        empty = AccessKeyStore(aredis, make_settings(""))
        with pytest.raises(KeyStoreConfigError, match="CROPQ_SECRET_KEY is empty"):
            await empty.create(["demo"])
        with pytest.raises(KeyStoreConfigError, match="CROPQ_SECRET_KEY is empty"):
            await empty.get(key.access_key_id)
        # Bootstrap keys, unknown ids and listings need no secret key.
        boot = await empty.get("BOOTKEY001")
        assert boot is not None and boot.secret == "boot-secret-0123456789"
        assert await empty.get("LTAIunknown") is None
        assert {k.access_key_id for k in await empty.list()} == {"BOOTKEY001", key.access_key_id}

    arun(scenario())


def test_token_moved_to_another_record_does_not_decrypt(aredis: Redis, arun: Run) -> None:
    store = AccessKeyStore(aredis, make_settings())

    async def scenario() -> None:
        a, _ = await store.create(["a"])
        b, _ = await store.create(["b"])
        token = await aredis.hget(keys.access_key(a.access_key_id), "secret")
        await aredis.hset(keys.access_key(b.access_key_id), "secret", token)
        with pytest.raises(KeyStoreConfigError):
            await store.get(b.access_key_id)

    arun(scenario())


def test_disable_enable_delete(aredis: Redis, arun: Run) -> None:
    store = AccessKeyStore(aredis, make_settings())

    async def scenario() -> None:
        key, _ = await store.create(["demo"])
        kid = key.access_key_id
        assert await store.disable(kid)
        got = await store.get(kid)
        assert got is not None and not got.enabled
        assert await store.enable(kid)
        got = await store.get(kid)
        assert got is not None and got.enabled
        assert await store.delete(kid)
        assert await store.get(kid) is None
        assert not await aredis.sismember(keys.ACCESS_KEYS_INDEX, kid)
        # Unknown ids: nothing is created behind our back.
        assert not await store.disable(kid)
        assert not await store.enable(kid)
        assert not await store.delete(kid)
        assert not await aredis.exists(keys.access_key(kid))

    arun(scenario())


def test_bootstrap_keys_are_served_and_read_only(aredis: Redis, arun: Run) -> None:
    store = AccessKeyStore(aredis, make_settings())

    async def scenario() -> None:
        boot = await store.get("BOOTKEY001")
        assert boot is not None and boot.source == "bootstrap" and boot.projects == ("*",) and boot.enabled
        for op in (store.disable, store.enable, store.delete):
            with pytest.raises(ReadOnlyKeyError, match="CROPQ_ACCESS_KEYS"):
                await op("BOOTKEY001")

    arun(scenario())


def test_list_shows_everything_without_secrets(aredis: Redis, arun: Run) -> None:
    store = AccessKeyStore(aredis, make_settings())

    async def scenario() -> None:
        a, _ = await store.create(["a"])
        b, _ = await store.create(["*"])
        await store.disable(b.access_key_id)
        infos = await store.list()
        assert infos[0].access_key_id == "BOOTKEY001"
        by_id = {k.access_key_id: k for k in infos}
        assert by_id[a.access_key_id].enabled and by_id[a.access_key_id].projects == ("a",)
        assert not by_id[b.access_key_id].enabled
        assert all(not hasattr(k, "secret") for k in infos)

    arun(scenario())


@pytest.mark.parametrize("projects", [[], [""], ["  "], ["has space"]])
def test_create_rejects_bad_projects(aredis: Redis, arun: Run, projects: list[str]) -> None:
    store = AccessKeyStore(aredis, make_settings())
    with pytest.raises(KeyStoreError):
        arun(store.create(projects))
