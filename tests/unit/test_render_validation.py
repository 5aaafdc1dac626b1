"""Render at submit: what the API refuses before anything is queued (no image is looked at)."""

from __future__ import annotations

import pytest

import api.jobs
from api.errors import ImmError
from api.jobs import check_writable, validate_render
from worker.contracts import RenderSpec
from worker.projects import Project


def _spec(**kw: object) -> RenderSpec:
    return RenderSpec.model_validate({"TargetURI": "oss://thumbs/{Stem}/{Ratio}.jpg", **kw})


def test_a_format_this_server_cannot_encode_is_a_clear_400(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.jobs, "supported_formats", lambda: frozenset({"jpeg", "png", "webp"}))
    with pytest.raises(ImmError) as e:
        validate_render(_spec(Format="avif"), ["1:1"])
    assert e.value.status == 400 and e.value.code == "InvalidArgument"
    assert "'avif' is not supported" in e.value.message and "jpeg, png, webp" in e.value.message


def test_avif_is_accepted_where_the_encoder_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.jobs, "supported_formats", lambda: frozenset({"jpeg", "avif"}))
    assert validate_render(_spec(Format="avif"), ["1:1", "4:3"]) is not None


def test_several_ratios_need_distinct_keys() -> None:
    with pytest.raises(ImmError, match=r"\{Ratio\}"):
        validate_render(_spec(TargetURI="oss://thumbs/{Stem}.jpg"), ["1:1", "4:3"])
    assert validate_render(_spec(TargetURI="oss://thumbs/{Stem}.jpg"), ["1:1"]) is not None


def test_bad_templates_are_400() -> None:
    with pytest.raises(ImmError, match="unknown placeholders"):
        validate_render(_spec(TargetURI="oss://thumbs/{Width}.jpg"), ["1:1"])


def test_only_writable_buckets() -> None:
    project = Project(
        ProjectName="p", Buckets=["thumbs"], WritableBuckets=["out"], CreatedAt="x", WebhookSecret="whsec_x"
    )
    with pytest.raises(ImmError, match="not writable"):
        check_writable(_spec(), project)  # readable is not writable
    check_writable(_spec(TargetURI="oss://out/{Ratio}.jpg"), project)
    check_writable(None, project)
