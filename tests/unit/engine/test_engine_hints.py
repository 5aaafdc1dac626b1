"""Hint words (English, Chinese, synonyms, phrases) reach the right detector; unknown words reach none."""

from __future__ import annotations

import pytest

from worker.engine.detectors import DETECTOR_NAMES
from worker.engine.hints import detector_for_hint


@pytest.mark.parametrize(
    ("hint", "name"),
    [
        ("face", "face"),
        ("Faces", "face"),
        ("人脸", "face"),
        ("脸", "face"),
        ("person", "person"),
        ("people", "person"),
        ("pedestrian", "person"),
        ("human", "person"),
        ("人", "person"),
        ("行人", "person"),
        ("人物", "person"),
        ("cat", "cat"),
        ("猫", "cat"),
        ("kitten", "cat"),
        ("eye", "eye"),
        ("眼睛", "eye"),
        ("smile", "smile"),
        ("微笑", "smile"),
        ("licence plate", "plate"),
        ("License-Plate", "plate"),
        ("车牌", "plate"),
        ("number plate", "plate"),
        ("text", "text"),
        ("sign", "text"),
        ("signboard", "text"),
        ("文字", "text"),
        ("招牌", "text"),
        ("the shop's signboard", "text"),
        ("a red car licence plate", "plate"),
        ("  FACE  ", "face"),
    ],
)
def test_known_hints(hint: str, name: str) -> None:
    assert detector_for_hint(hint) == name
    assert name in DETECTOR_NAMES


@pytest.mark.parametrize("hint", ["zeppelin", "", "   ", "飞艇", "12345"])
def test_unknown_hints_match_nothing(hint: str) -> None:
    assert detector_for_hint(hint) is None
