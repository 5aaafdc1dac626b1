"""The whole hostile-image corpus through the sandboxed decode: each case ends with an acceptable outcome
(a clear ``InvalidArgument.*`` code, or success for legal-but-odd images), and the process survives."""

from __future__ import annotations

import dataclasses

import pytest

from tests.security.hostile_images import BUILDERS, Case, corpus
from worker.engine.config import EngineConfig
from worker.engine.decode import decode
from worker.engine.errors import CropError

# What the workers run with (CROPQ_DECODE_MEMORY_MB=640).
ISOLATED = dataclasses.replace(EngineConfig(), decode_isolated=True, decode_memory_bytes=640 << 20)


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {c.name: c for c in corpus()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_hostile_image_ends_with_an_acceptable_outcome(name: str, cases: dict[str, Case]) -> None:
    case = cases[name]
    try:
        decoded = decode(case.data, ISOLATED)
    except CropError as exc:
        assert exc.code in case.expect, f"{name}: {exc.code}: {exc}"
        assert exc.code.startswith("InvalidArgument")
    else:
        assert None in case.expect, f"{name} decoded, but should have been refused"
        assert decoded.rgb.ndim == 3 and max(decoded.rgb.shape[:2]) <= 640
