"""``cropq keys`` against a real Redis, configured through the environment like the real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from cropq_cli.keys import keys_app
from worker.settings import get_settings

BOOT = '[{"AccessKeyId": "BOOTKEY001", "AccessKeySecret": "boot-secret-0123456789", "Projects": ["*"]}]'


@pytest.fixture
def cli_env(aredis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("CROPQ_DATA_DIR", str(tmp_path))  # no `cropq up` of the developer's is consulted
    monkeypatch.setenv("CROPQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CROPQ_SECRET_KEY", "cli-test-key-0123456789abcdef0123456")
    monkeypatch.setenv("CROPQ_ACCESS_KEYS", BOOT)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_create_list_disable_enable_delete(cli_env: None) -> None:
    runner = CliRunner()
    created = runner.invoke(keys_app, ["create", "--project", "demo", "--project", "photos", "--json"])
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    assert key["AccessKeyId"].startswith("LTAI") and len(key["AccessKeySecret"]) >= 30
    assert key["Projects"] == ["demo", "photos"]

    plain = runner.invoke(keys_app, ["create", "-p", "*"])
    assert plain.exit_code == 0
    assert "AccessKeyId:" in plain.stdout and "AccessKeySecret:" in plain.stdout

    listed = runner.invoke(keys_app, ["list", "--json"])
    rows = {r["AccessKeyId"]: r for r in json.loads(listed.stdout)}
    assert rows["BOOTKEY001"]["Source"] == "bootstrap"
    assert rows[key["AccessKeyId"]]["Status"] == "Active"
    assert key["AccessKeySecret"] not in listed.stdout and "boot-secret" not in listed.stdout

    kid = key["AccessKeyId"]
    assert runner.invoke(keys_app, ["disable", kid]).exit_code == 0
    assert "Inactive" in runner.invoke(keys_app, ["list"]).stdout
    assert runner.invoke(keys_app, ["enable", kid]).exit_code == 0
    assert runner.invoke(keys_app, ["delete", kid]).exit_code == 0
    gone = runner.invoke(keys_app, ["delete", kid])
    assert gone.exit_code == 1 and "no stored access key" in gone.output


def test_bootstrap_keys_are_refused_clearly(cli_env: None) -> None:
    result = CliRunner().invoke(keys_app, ["disable", "BOOTKEY001"])
    assert result.exit_code == 1
    assert "CROPQ_ACCESS_KEYS" in result.output


def test_missing_secret_key_is_a_clear_error(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPQ_SECRET_KEY", "")
    get_settings.cache_clear()
    result = CliRunner().invoke(keys_app, ["create", "--project", "demo"])
    assert result.exit_code == 1
    assert "CROPQ_SECRET_KEY is empty" in result.output
