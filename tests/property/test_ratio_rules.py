"""The AspectRatios / InclusionHints parser accepts exactly what IMM's rules accept."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.engine.errors import InvalidAspectRatio, InvalidInclusionHints
from worker.engine.ratios import hints_from_param, parse_ratio, ratios_from_param


def rule(entry: str) -> bool:
    """The seed page's rules, written independently of the parser."""
    if entry == "auto":
        return True
    parts = entry.split(":")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        return False
    w, h = int(parts[0]), int(parts[1])
    return 0 < w < 20 and 0 < h < 20 and 0.5 <= w / h <= 2


entries = st.one_of(
    st.builds(lambda a, b: f"{a}:{b}", st.integers(-3, 25), st.integers(-3, 25)),
    st.builds(
        lambda a, b: f"{a}:{b}",
        st.floats(0, 25, allow_nan=False).map(lambda f: round(f, 1)),
        st.integers(0, 25),
    ),
    st.sampled_from(["auto", "AUTO", "1/1", "1:1:1", " 1:1", "1:1 ", "01:02", "+1:2", "", ":", "١:١", "²:1"]),
    st.text(max_size=6),
)


@given(entries)
def test_one_entry_is_accepted_exactly_when_the_rules_accept_it(entry: str) -> None:
    try:
        parse_ratio(entry)
        accepted = True
    except InvalidAspectRatio as e:
        accepted = False
        assert repr(entry) in str(e)  # the message names the bad entry
    assert accepted == rule(entry), entry


@given(st.lists(entries, max_size=7))
def test_lists_and_their_json_form(values: list[str]) -> None:
    ok = 1 <= len(values) <= 5 and all(rule(v) for v in values)
    for form in (values, json.dumps(values)):
        try:
            assert ratios_from_param(form) == values
            assert ok
        except InvalidAspectRatio:
            assert not ok


def test_boundaries_named_by_the_seed() -> None:
    assert ratios_from_param(None) == ["auto"]
    for good in (["1:2"], ["2:1"], ["19:10"], ["1:1", "4:3", "3:4", "16:9", "9:16"], ["auto", "1:1"]):
        assert ratios_from_param(good) == good
    for bad in (
        "[]",
        '["4.1:3"]',
        '["1:3"]',
        '["3:1"]',
        '["20:19"]',
        '["0:1"]',
        '["-1:2"]',
        "1:1",
        '"1:1"',
        "[1, 2]",
        '["1:1","1:1","1:1","1:1","1:1","1:1"]',
    ):
        with pytest.raises(InvalidAspectRatio):
            ratios_from_param(bad)


@given(st.lists(st.text(max_size=70), max_size=3))
def test_hints(values: list[str]) -> None:
    ok = len(values) <= 1 and all(v.strip() and len(v) <= 64 for v in values)
    try:
        assert hints_from_param(values) == [v.strip() for v in values]
        assert ok
    except InvalidInclusionHints:
        assert not ok


def test_hint_messages() -> None:
    with pytest.raises(InvalidInclusionHints, match=re.escape("at most 1")):
        hints_from_param(["a", "b"])
    assert hints_from_param('["招牌"]') == ["招牌"]
