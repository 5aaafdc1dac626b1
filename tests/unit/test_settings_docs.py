"""The README's configuration table and .env.example are generated from Settings and kept in step with it;
every value .env.example suggests is one the settings accept."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from cropq_cli.config_docs import (
    COMPOSE_PASSES,
    PLACEHOLDERS,
    env_example,
    env_name,
    parse_env_line,
    settings_table,
)
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = ROOT / "docker-compose.yml"
BEGIN, END = "<!-- settings-table:begin -->\n", "<!-- settings-table:end -->"


def readme_table() -> str:
    text = README.read_text()
    assert BEGIN in text and END in text, f"README.md lost its {BEGIN.strip()} / {END} markers"
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def test_the_readme_table_is_the_generated_one() -> None:
    assert readme_table() == settings_table(), (
        "README.md's configuration table is out of date: run `make docs`"
    )


def test_every_setting_has_a_row_and_a_description() -> None:
    rows = re.findall(r"^\| `(CROPQ_\w+)` \|", settings_table(), re.MULTILINE)
    assert rows == [env_name(n) for n in Settings.model_fields]
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_env_example_is_the_generated_one() -> None:
    assert ENV_EXAMPLE.read_text() == env_example(), ".env.example is out of date: run `make docs`"


def env_example_values() -> list[tuple[str, str]]:
    return [found for line in ENV_EXAMPLE.read_text().splitlines() if (found := parse_env_line(line))]


def test_env_example_names_every_setting_once() -> None:
    names = [name for name, _ in env_example_values()]
    assert sorted(names) == sorted(env_name(n) for n in Settings.model_fields)


def plain(value: object) -> object:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_every_suggested_value_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("CROPQ_"):
            monkeypatch.delenv(var)
    refused_on_purpose = env_name("secret_key")  # a placeholder that must be replaced before a start
    for name, value in env_example_values():
        if name != refused_on_purpose:
            monkeypatch.setenv(name, value)
    read = Settings().model_dump()
    defaults = Settings.model_construct().model_dump()
    # Read as docker compose passes them (JSON unquoted), the suggested values are the defaults; a setting
    # unset by default is suggested empty, which reads as unset (or as an empty string where that is a value).
    for name, default in defaults.items():
        if name not in PLACEHOLDERS:
            expected = (None, "") if default is None else (plain(default),)
            assert plain(read[name]) in expected, name
    monkeypatch.setenv(refused_on_purpose, PLACEHOLDERS["secret_key"][0])
    with pytest.raises(ValidationError, match="secret_key"):
        Settings()


def test_placeholders_and_pass_throughs_match_docker_compose() -> None:
    compose = COMPOSE.read_text()
    required = set(re.findall(r"\$\{(CROPQ_\w+):\?", compose))
    assert required == {env_name(n) for n in PLACEHOLDERS}, (
        "docker-compose.yml requires these variables; cropq_cli/config_docs.py PLACEHOLDERS must match"
    )
    passed = set(re.findall(r"\$\{(CROPQ_\w+):-", compose))
    assert passed == {env_name(n) for n in COMPOSE_PASSES}, (
        "docker-compose.yml passes these variables on; cropq_cli/config_docs.py COMPOSE_PASSES must match"
    )
    for name, (placeholder, _) in PLACEHOLDERS.items():
        assert placeholder.startswith("change-me"), name


def test_a_changed_setting_shows_in_both_generated_files(monkeypatch: pytest.MonkeyPatch) -> None:
    field = Settings.model_fields["visibility_timeout"]
    monkeypatch.setattr(field, "default", 61)
    monkeypatch.setattr(field, "description", "A new description.")
    assert "| `CROPQ_VISIBILITY_TIMEOUT` | `61` | A new description. |" in settings_table()
    assert "# A new description.\n# CROPQ_VISIBILITY_TIMEOUT=61\n" in env_example()


def test_make_docs_rewrites_only_the_table_between_the_markers() -> None:
    from cropq_cli.config_docs import update_readme

    stale = f"# Title\n\nbefore\n{BEGIN}| old | table |\n{END}\nafter\n"
    updated = update_readme(stale)
    assert updated == f"# Title\n\nbefore\n{BEGIN}{settings_table()}{END}\nafter\n"
    assert update_readme(README.read_text()) == README.read_text()  # the committed README is up to date
