"""The AspectRatios / InclusionHints parser accepts exactly what IMM's rules accept."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.engine.errors import InvalidAspectRatio, InvalidInclusionHints
from worker.engine.ratios import hints_from_param, json_depth_exceeds, parse_ratio, ratios_from_param


def rule(entry: str) -> bool:
    """The seed page's rules, written independently of the parser."""
    if entry == "auto":
        return True
    if len(entry) > 16:  # cropq's own bound (no real ratio is longer), checked before any int()
        return False
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
    # Leading zeros around the length bound.
    st.builds(
        lambda z, a, b: f"{'0' * z}{a}:{b}", st.integers(0, 20), st.integers(1, 19), st.integers(1, 19)
    ),
)


@given(entries)
def test_one_entry_is_accepted_exactly_when_the_rules_accept_it(entry: str) -> None:
    try:
        parse_ratio(entry)
        accepted = True
    except InvalidAspectRatio as e:
        accepted = False
        assert repr(entry[:40]) in str(e)  # the message names the bad entry
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


def test_huge_numbers_are_refused_without_reaching_int() -> None:
    # 5,000 digits: int() would raise ValueError (Python's 4,300-digit guard) and cost quadratic time.
    for entry in ("1" * 5000 + ":1", "1:" + "9" * 5000, "0" * 5000 + "1:1"):
        with pytest.raises(InvalidAspectRatio) as e:
            parse_ratio(entry)
        assert len(str(e.value)) < 200
        with pytest.raises(InvalidAspectRatio):
            ratios_from_param(json.dumps([entry]))


@pytest.mark.parametrize("depth", [5, 1000, 100_000])
def test_deep_json_strings_are_refused_before_decoding(depth: int) -> None:
    deep = "[" * depth + "]" * depth
    with pytest.raises(InvalidAspectRatio, match=r"deeper|at most"):
        ratios_from_param(deep)
    with pytest.raises(InvalidInclusionHints, match=r"deeper|at most"):
        hints_from_param(deep)


def test_json_string_forms_are_bounded() -> None:
    with pytest.raises(InvalidAspectRatio, match="at most 1024 characters"):
        ratios_from_param('["1:1"' + " " * 1100 + "]")
    with pytest.raises(InvalidInclusionHints, match="at most 1024 characters"):
        hints_from_param('["face"' + " " * 1100 + "]")
    # Brackets inside strings are not nesting.
    assert hints_from_param(json.dumps(["[[[[[[[[face]]]]]]]]"])) == ["[[[[[[[[face]]]]]]]]"]
    assert hints_from_param(json.dumps(['a\\"[[[[[[['])) == ['a\\"[[[[[[[']


@given(st.one_of(st.text(max_size=300), st.text(alphabet='[]{}"\\:,1a ', max_size=300)))
def test_any_string_gets_the_parsers_own_error(text: str) -> None:
    """Whatever the string (JSON-like ones included), the parsers answer a value or their own error."""
    for parse, error in ((ratios_from_param, InvalidAspectRatio), (hints_from_param, InvalidInclusionHints)):
        with contextlib.suppress(error):
            parse(text)


@given(st.recursive(st.just([]), lambda inner: st.lists(inner, min_size=1, max_size=2), max_leaves=12))
def test_depth_of_valid_json(value: list[object]) -> None:
    def depth(v: object) -> int:
        return 1 + max((depth(c) for c in v), default=0) if isinstance(v, list) else 0

    text = json.dumps(value)
    assert json_depth_exceeds(text, 4) == (depth(value) > 4)
