"""``cropq keys``: create, list, disable, enable and delete access keys stored in Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.auth.keystore import AccessKeyInfo, AccessKeyStore, KeyStoreError
from cropq_cli.errors import CliError, OneLineErrors, redact_url
from cropq_cli.settings import cli_settings
from worker.redis_clients import async_client

keys_app = typer.Typer(
    cls=OneLineErrors, help="Manage access keys (like RAM AccessKeys): each key acts on its projects only."
)

T = TypeVar("T")


def _run(action: Callable[[AccessKeyStore], Awaitable[T]]) -> T:
    """Run ``action`` against the configured Redis; operator errors exit 1 with their message."""
    settings = cli_settings()

    async def main() -> T:
        redis = async_client(settings.redis_url, decode_responses=True)
        try:
            return await action(AccessKeyStore(redis, settings))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except KeyStoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise CliError(
            f"cannot reach Redis at {redact_url(settings.redis_url)} ({str(exc).strip()}); start the stack "
            "with `cropq up`, or set CROPQ_REDIS_URL"
        ) from None


def _info_dict(k: AccessKeyInfo) -> dict[str, object]:
    return {
        "AccessKeyId": k.access_key_id,
        "Projects": list(k.projects),
        "Status": "Active" if k.enabled else "Inactive",
        "Source": k.source,
        "CreatedAt": k.created_at,
    }


@keys_app.command("create")
def create(
    project: Annotated[
        list[str], typer.Option("--project", "-p", help='Project the key may act on ("*" = all).')
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key and print its AccessKeyId and AccessKeySecret (the secret is shown only now)."""
    key, secret = _run(lambda store: store.create(project))
    if as_json:
        typer.echo(
            json.dumps(
                {"AccessKeyId": key.access_key_id, "AccessKeySecret": secret, "Projects": list(key.projects)}
            )
        )
        return
    typer.echo(f"AccessKeyId:     {key.access_key_id}")
    typer.echo(f"AccessKeySecret: {secret}")
    typer.echo(f"Projects:        {', '.join(key.projects)}")
    typer.echo("Store the secret now: it cannot be shown again.", err=True)


@keys_app.command("list")
def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List keys (never their secrets)."""
    infos = _run(lambda store: store.list())
    if as_json:
        typer.echo(json.dumps([_info_dict(k) for k in infos]))
        return
    if not infos:
        typer.echo("No access keys.")
        return
    for k in infos:
        status = "Active" if k.enabled else "Inactive"
        created = k.created_at or "-"
        typer.echo(f"{k.access_key_id}  {status:<8}  {k.source:<9}  {created:<20}  {','.join(k.projects)}")


def _change(key_id: str, verb: str, action: Callable[[AccessKeyStore], Awaitable[bool]]) -> None:
    if not _run(action):
        typer.echo(f"error: no stored access key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{verb} {key_id}")


@keys_app.command("disable")
def disable(key_id: Annotated[str, typer.Argument(help="AccessKeyId")]) -> None:
    """Disable a key: its requests get InvalidAccessKeyId.Inactive."""
    _change(key_id, "disabled", lambda store: store.disable(key_id))


@keys_app.command("enable")
def enable(key_id: Annotated[str, typer.Argument(help="AccessKeyId")]) -> None:
    """Enable a disabled key again."""
    _change(key_id, "enabled", lambda store: store.enable(key_id))


@keys_app.command("delete")
def delete(key_id: Annotated[str, typer.Argument(help="AccessKeyId")]) -> None:
    """Delete a key for good."""
    _change(key_id, "deleted", lambda store: store.delete(key_id))
