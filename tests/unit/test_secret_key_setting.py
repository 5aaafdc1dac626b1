"""CROPQ_SECRET_KEY: a short key is refused when settings load, not discovered when a secret is sealed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from worker.settings import SECRET_KEY_MIN_BYTES, Settings


def test_short_secret_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(secret_key=SecretStr("x" * (SECRET_KEY_MIN_BYTES - 1)))


def test_key_of_32_bytes_and_empty_key_load() -> None:
    assert Settings(secret_key=SecretStr("x" * SECRET_KEY_MIN_BYTES)).secret_key.get_secret_value()
    # Empty: the CLI's crop command needs no key; sealing then refuses with its own message.
    assert Settings(secret_key=SecretStr("")).secret_key.get_secret_value() == ""


def test_length_is_counted_in_bytes() -> None:
    # 11 three-byte characters are 33 bytes.
    assert Settings(secret_key=SecretStr("密" * 11)).secret_key.get_secret_value()
