"""Settings as the ``cropq`` commands see them: the environment first, then a running ``cropq up``'s
endpoints and development key (:mod:`cropq_cli.stack_file`), then the defaults.

So a second shell reaches the local stack with no variable set, and any variable set still wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from cropq_cli.stack_file import live_stack
from worker.settings import Settings


class StackFileSource(PydanticBaseSettingsSource):
    """The live stack file of the data folder (CROPQ_DATA_DIR as the sources above it resolved it)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values().get(field_name), field_name, False

    def _values(self) -> dict[str, Any]:
        data_dir = self.current_state.get("data_dir") or Settings.model_fields["data_dir"].default
        stack = live_stack(Path(data_dir))
        if stack is None:
            return {}
        return stack.endpoints.model_dump(exclude_none=True)

    def __call__(self) -> dict[str, Any]:
        return self._values()


class CliSettings(Settings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        stack = StackFileSource(settings_cls)
        return init_settings, env_settings, dotenv_settings, stack, file_secret_settings


def cli_settings() -> Settings:
    """Read afresh on every call: a command runs once, and the stack may have started meanwhile."""
    return CliSettings()
