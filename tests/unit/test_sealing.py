"""Secrets at rest: sealed under CROPQ_SECRET_KEY, bound to their record, per purpose."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from worker.projects import Project, webhook_secret
from worker.sealing import ACCESS_KEYS, WEBHOOK_SECRETS, SealingError, SecretBox

KEY = SecretStr("a-long-random-server-key")


def test_round_trip_and_the_token_hides_the_secret() -> None:
    box = SecretBox(KEY, WEBHOOK_SECRETS)
    token = box.seal("photos", "whsec_c2VjcmV0LXNpZ25pbmcta2V5")
    assert "whsec_" not in token and "c2VjcmV0" not in token and "photos" not in token
    assert box.open("photos", token) == "whsec_c2VjcmV0LXNpZ25pbmcta2V5"
    assert box.seal("photos", "x") != box.seal("photos", "x")  # fresh IV each time


def test_a_token_opens_only_for_its_record_its_purpose_and_its_key() -> None:
    token = SecretBox(KEY, WEBHOOK_SECRETS).seal("photos", "s")
    with pytest.raises(SealingError, match="belongs to photos"):
        SecretBox(KEY, WEBHOOK_SECRETS).open("videos", token)
    with pytest.raises(SealingError, match="cannot be decrypted"):
        SecretBox(KEY, ACCESS_KEYS).open("photos", token)
    with pytest.raises(SealingError, match="cannot be decrypted"):
        SecretBox(SecretStr("another-key"), WEBHOOK_SECRETS).open("photos", token)
    with pytest.raises(SealingError, match="cannot be decrypted"):
        SecretBox(KEY, WEBHOOK_SECRETS).open("photos", token[:-4] + "AAAA")


def test_an_empty_key_is_a_clear_configuration_error() -> None:
    box = SecretBox(SecretStr(""), WEBHOOK_SECRETS)
    with pytest.raises(SealingError, match="CROPQ_SECRET_KEY is empty"):
        box.seal("photos", "s")


def test_project_records_from_before_sealing_still_sign() -> None:
    box = SecretBox(KEY, WEBHOOK_SECRETS)
    legacy = Project(ProjectName="p", CreatedAt="2026-01-01T00:00:00Z", WebhookSecret="whsec_b2xk")
    sealed = legacy.model_copy(update={"WebhookSecret": box.seal("p", "whsec_bmV3")})
    assert webhook_secret(legacy, box) == "whsec_b2xk"
    assert webhook_secret(sealed, box) == "whsec_bmV3"
