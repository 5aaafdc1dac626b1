"""The README's configuration table and ``.env.example``, generated from :class:`worker.settings.Settings`
(``cropq config`` and ``cropq config --env-example``), so neither can drift from the code."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from worker.settings import Settings

ENV_PREFIX = "CROPQ_"

PLACEHOLDERS: dict[str, tuple[str, str]] = {
    "s3_access_key": (
        "change-me-cropq",
        "In compose it is also MinIO's root user (at least 3 characters).",
    ),
    "s3_secret_key": (
        "change-me-s3-secret",
        "In compose it is also MinIO's root password (at least 8 characters).",
    ),
    "secret_key": (
        "change-me",
        "cropq refuses this placeholder at start (too short): put the output of `openssl rand -hex 32` "
        "here, and keep it: changing it makes the stored secrets unreadable.",
    ),
}
"""The settings docker-compose.yml requires (``${VAR:?...}``), with the placeholder .env.example sets them
to and a note on choosing the real value: the only lines of the file not taken from Settings' defaults."""

COMPOSE_PASSES = frozenset(
    {"s3_region", "access_keys", "result_ttl_seconds", "rate_limit_per_minute", "webhook_allowed_cidrs"}
    | {"log_level", "log_json", "queue_name"}
)
"""The optional settings docker-compose.yml passes from .env to its services (``${VAR:-default}``); it
fixes a few others to its own services and leaves the rest at their defaults (a unit test compares)."""

NOTES: dict[str, str] = {
    "max_wait_seconds": "In compose or Kubernetes, keep the API's UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN (35 s) "
    "above it and its stop grace above both.",
    "task_hard_time_limit": "In compose or Kubernetes, raise the worker's stop_grace_period / "
    "terminationGracePeriodSeconds above it in the same change.",
    "webhook_timeout_seconds": "Compose and Kubernetes keep the default: their callback workers' stop grace "
    "(40 s) must stay above this plus 10 s.",
}
"""Deployment advice that belongs beside a setting in .env.example but not in its description."""

ENV_EXAMPLE_HEAD = """\
# cropq settings. Copy to .env (git-ignored) and replace every change-me value:
#
#   cp .env.example .env
#
# docker compose reads .env to fill docker-compose.yml: it needs the three values below and passes on the
# settings marked "(compose passes it)"; it fixes Redis, S3 and the API port to its own services. `cropq up`
# and your own processes read the environment instead, so export the settings there. Every name is CROPQ_ +
# a field of worker/settings.py, shown with its default; keep the single quotes around JSON values. No value
# here is a real secret. Generated from the settings: `cropq config --env-example > .env.example`.
"""

WIDTH = 110


def env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


def default_of(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _table_default(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(secret)" if value.get_secret_value() else "(empty)"
    return str(value)


def settings_table() -> str:
    """Every setting as a Markdown table row: variable, default, description."""
    rows = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_name(name)}` | `{_table_default(default_of(field))}` | {desc} |")
    return "\n".join(rows) + "\n"


def env_value(value: Any) -> str:
    """A default as a .env line writes it: JSON lists in single quotes (compose keeps them literal)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return "'" + json.dumps(value) + "'"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _comment(text: str) -> list[str]:
    # URLs and JSON examples in descriptions stay whole on one line.
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def env_example() -> str:
    """``.env.example``: the compose-required settings set to placeholders, every other one commented out
    with its description and default."""
    lines = [ENV_EXAMPLE_HEAD, "# --- Required by docker-compose.yml (it refuses to start without them) ---"]
    for name, (placeholder, note) in PLACEHOLDERS.items():
        field = Settings.model_fields[name]
        lines += _comment(f"{field.description or ''} {note}")
        lines.append(f"{env_name(name)}={placeholder}")
    lines += ["", "# --- Optional: uncomment to change a default ---"]
    for name, field in Settings.model_fields.items():
        if name in PLACEHOLDERS:
            continue
        default = default_of(field)
        notes = [
            field.description or "",
            "Unset by default." if default is None else "",
            NOTES.get(name, ""),
            "(compose passes it)" if name in COMPOSE_PASSES else "",
        ]
        lines += _comment(" ".join(n for n in notes if n))
        lines.append(f"# {env_name(name)}={env_value(default)}")
    return "\n".join(lines) + "\n"


def parse_env_line(line: str) -> tuple[str, str] | None:
    """``NAME=value`` of a line set or commented out, its value unquoted as docker compose reads it."""
    text = line.strip().removeprefix("#").strip()
    name, sep, value = text.partition("=")
    if not sep or not name.startswith(ENV_PREFIX) or not name.replace("_", "").isalnum():
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return name, value


README_TABLE_BEGIN, README_TABLE_END = "<!-- settings-table:begin -->\n", "<!-- settings-table:end -->"


def update_readme(text: str) -> str:
    """``text`` (README.md) with the table between its markers replaced by :func:`settings_table`."""
    head, rest = text.split(README_TABLE_BEGIN, 1)
    _, tail = rest.split(README_TABLE_END, 1)
    return head + README_TABLE_BEGIN + settings_table() + README_TABLE_END + tail


def main() -> None:
    """``python -m cropq_cli.config_docs README.md .env.example``: rewrite both from the settings."""
    import sys
    from pathlib import Path

    readme, env_file = (Path(a) for a in sys.argv[1:3])
    readme.write_text(update_readme(readme.read_text()))
    env_file.write_text(env_example())


if __name__ == "__main__":
    main()
