"""Hint words (English, Chinese, synonyms, plurals, phrases) reach the right detector or object class;
unknown words reach none."""

from __future__ import annotations

import pytest

from worker.engine.detectors import COCO_CLASSES, DETECTOR_NAMES
from worker.engine.hints import HINT_KINDS, detector_for_hint


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
        ("car plate", "plate"),
        ("dog", "dog"),
        ("Dogs", "dog"),
        ("小狗", "dog"),
        ("热狗", "hot dog"),
        ("hot dogs", "hot dog"),
        ("a stop sign", "stop sign"),
        ("benches", "bench"),
        ("my red cars", "car"),
        ("汽车", "car"),
        ("书包", "backpack"),
        ("花瓶", "vase"),
        ("sofa", "couch"),
        ("teddy bears", "teddy bear"),
        ("buses", "bus"),
        ("mobile phone", "cell phone"),
        ("手机", "cell phone"),
    ],
)
def test_known_hints(hint: str, name: str) -> None:
    assert detector_for_hint(hint) == name
    assert name in HINT_KINDS


def test_every_kind_is_served() -> None:
    # A kind is either a detector of its own or a class of the object detector (people included).
    assert set(HINT_KINDS) <= set(DETECTOR_NAMES) | set(COCO_CLASSES)
    assert set(COCO_CLASSES) <= set(HINT_KINDS)


@pytest.mark.parametrize("hint", ["zeppelin", "", "   ", "飞艇", "12345"])
def test_unknown_hints_match_nothing(hint: str) -> None:
    assert detector_for_hint(hint) is None
