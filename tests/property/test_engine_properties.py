"""Property tests: every output is valid for any image shape and ratio, and the engine is deterministic."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.engine.engine_helpers import assert_valid
from worker.engine.pipeline import detect_crops_array

ratio_st = st.tuples(st.integers(1, 19), st.integers(1, 19)).filter(
    lambda t: t[0] <= 2 * t[1] and t[1] <= 2 * t[0]
)
ratios_st = st.lists(
    st.one_of(ratio_st.map(lambda t: f"{t[0]}:{t[1]}"), st.just("auto")), min_size=1, max_size=5
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(1, 700),
    w=st.integers(1, 700),
    ratios=ratios_st,
    seed=st.integers(0, 2**16),
    patch=st.booleans(),
)
def test_any_shape_any_ratio_is_valid_and_deterministic(
    h: int, w: int, ratios: list[str], seed: int, patch: bool
) -> None:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    if patch:
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        img[y : y + max(1, h // 8), x : x + max(1, w // 8)] = rng.integers(0, 256, 3)
    res = detect_crops_array(img, ratios)
    assert (res.width, res.height) == (w, h)
    assert_valid(res, ratios)
    assert detect_crops_array(img, ratios) == res
