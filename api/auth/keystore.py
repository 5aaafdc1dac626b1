"""Access keys: bootstrap keys from settings (in memory, read-only) and keys created at run time (Redis).

A stored key is the hash ``cropq:ak:<id>`` with ``secret`` (a :class:`~worker.sealing.SecretBox` token
under ``CROPQ_SECRET_KEY``, bound to the key id), ``projects`` (JSON list), ``enabled`` ("1"/"0") and
``created_at``; ids are also in the set ``cropq:aks``. A Redis dump alone does not reveal any secret.
"""

from __future__ import annotations

import builtins
import json
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, cast

from redis.asyncio import Redis

from worker import keys
from worker.sealing import ACCESS_KEYS, SealingError, SecretBox
from worker.settings import Settings

KEY_ID_PREFIX = "LTAI"
_ID_ALPHABET = string.ascii_letters + string.digits

Source = Literal["bootstrap", "stored"]

# Create only if absent, so two concurrent creates can never overwrite each other.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'projects', ARGV[2], 'enabled', '1', 'created_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"""
# Flip the flag only on an existing record (a plain HSET would create a secret-less one).
_SET_ENABLED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'enabled', ARGV[1])
return 1
"""


class KeyStoreError(Exception):
    """Base class; the message is meant for the operator."""


class KeyStoreConfigError(KeyStoreError):
    """``CROPQ_SECRET_KEY`` is missing or is not the one the stored secrets were encrypted with."""


class ReadOnlyKeyError(KeyStoreError):
    """The key comes from ``CROPQ_ACCESS_KEYS`` and cannot be changed at run time."""


@dataclass(frozen=True)
class AccessKeyInfo:
    access_key_id: str
    projects: tuple[str, ...]
    enabled: bool
    source: Source
    created_at: str | None


@dataclass(frozen=True)
class AccessKey(AccessKeyInfo):
    secret: str = field(repr=False)


def new_key_id() -> str:
    return KEY_ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def new_secret() -> str:
    return secrets.token_urlsafe(24)  # 32 characters


def normalize_projects(projects: list[str]) -> tuple[str, ...]:
    cleaned: list[str] = []
    for p in projects:
        name = p.strip()
        if not name or any(c.isspace() for c in name) or len(name) > 128:
            raise KeyStoreError(f"Invalid project name {p!r}: 1-128 characters, no spaces.")
        if name not in cleaned:
            cleaned.append(name)
    if not cleaned:
        raise KeyStoreError('A key needs at least one project ("*" grants every project).')
    return tuple(cleaned)


class AccessKeyStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._box = SecretBox(settings.secret_key, ACCESS_KEYS)
        self._bootstrap: dict[str, AccessKey] = {
            spec.AccessKeyId: AccessKey(
                access_key_id=spec.AccessKeyId,
                projects=tuple(spec.Projects),
                enabled=True,
                source="bootstrap",
                created_at=None,
                secret=spec.AccessKeySecret.get_secret_value(),
            )
            for spec in settings.access_keys
        }

    # --- crypto ---------------------------------------------------------------------------------------
    def _encrypt(self, key_id: str, secret: str) -> str:
        try:
            return self._box.seal(key_id, secret)
        except SealingError as exc:
            raise KeyStoreConfigError(str(exc)) from None

    def _decrypt(self, key_id: str, token: str) -> str:
        try:
            return self._box.open(key_id, token)
        except SealingError as exc:
            raise KeyStoreConfigError(str(exc)) from None

    # --- reads ----------------------------------------------------------------------------------------
    @staticmethod
    def _info(key_id: str, record: dict[str, str]) -> AccessKeyInfo:
        return AccessKeyInfo(
            access_key_id=key_id,
            projects=tuple(json.loads(record.get("projects", "[]"))),
            enabled=record.get("enabled") == "1",
            source="stored",
            created_at=record.get("created_at"),
        )

    async def get(self, key_id: str) -> AccessKey | None:
        """The key with its decrypted secret, or ``None`` if unknown."""
        if key_id in self._bootstrap:
            return self._bootstrap[key_id]
        record = cast(dict[str, str], await self._redis.hgetall(keys.access_key(key_id)))
        if not record or "secret" not in record:
            return None
        info = self._info(key_id, record)
        return AccessKey(
            access_key_id=info.access_key_id,
            projects=info.projects,
            enabled=info.enabled,
            source=info.source,
            created_at=info.created_at,
            secret=self._decrypt(key_id, record["secret"]),
        )

    async def list(self) -> builtins.list[AccessKeyInfo]:
        """Every key, bootstrap first, without secrets (works even when ``secret_key`` is unset)."""
        out: list[AccessKeyInfo] = [
            AccessKeyInfo(k.access_key_id, k.projects, k.enabled, k.source, k.created_at)
            for k in self._bootstrap.values()
        ]
        ids = sorted(cast(set[str], await self._redis.smembers(keys.ACCESS_KEYS_INDEX)))
        if ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.hgetall(keys.access_key(key_id))
                records = cast(list[dict[str, str]], await pipe.execute())
            out.extend(
                self._info(key_id, rec)
                for key_id, rec in zip(ids, records, strict=True)
                if rec and key_id not in self._bootstrap
            )
        return out

    # --- writes ---------------------------------------------------------------------------------------
    async def create(self, projects: builtins.list[str]) -> tuple[AccessKey, str]:
        """A new enabled key for ``projects``; returns it and its secret (shown once, stored encrypted)."""
        granted = normalize_projects(projects)
        secret = new_secret()
        created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for _ in range(5):
            key_id = new_key_id()
            if key_id in self._bootstrap:
                continue
            created = await self._redis.eval(
                _CREATE,
                2,
                keys.access_key(key_id),
                keys.ACCESS_KEYS_INDEX,
                self._encrypt(key_id, secret),
                json.dumps(list(granted)),
                created_at,
                key_id,
            )
            if created:
                key = AccessKey(key_id, granted, True, "stored", created_at, secret=secret)
                return key, secret
        raise KeyStoreError("Could not allocate a fresh access key id.")  # pragma: no cover

    def _refuse_bootstrap(self, key_id: str, action: str) -> None:
        if key_id in self._bootstrap:
            raise ReadOnlyKeyError(
                f"Access key {key_id} comes from CROPQ_ACCESS_KEYS and cannot be {action} here; "
                "change the setting and restart instead."
            )

    async def _set_enabled(self, key_id: str, enabled: bool) -> bool:
        self._refuse_bootstrap(key_id, "enabled or disabled")
        done = await self._redis.eval(_SET_ENABLED, 1, keys.access_key(key_id), "1" if enabled else "0")
        return bool(done)

    async def disable(self, key_id: str) -> bool:
        """``False`` if no such stored key."""
        return await self._set_enabled(key_id, False)

    async def enable(self, key_id: str) -> bool:
        return await self._set_enabled(key_id, True)

    async def delete(self, key_id: str) -> bool:
        self._refuse_bootstrap(key_id, "deleted")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.access_key(key_id))
            pipe.srem(keys.ACCESS_KEYS_INDEX, key_id)
            removed, _ = await pipe.execute()
        return bool(removed)
