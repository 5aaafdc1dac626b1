"""Fixtures for the engine tests: real photos bundled with scikit-image (a test-only dependency).
Nothing here reads ../shared."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data

from tests.unit.engine.engine_helpers import ASTRONAUT_FACE


@pytest.fixture(scope="session")
def astronaut() -> NDArray[np.uint8]:
    return np.asarray(data.astronaut())


@pytest.fixture(scope="session")
def chelsea() -> NDArray[np.uint8]:
    return np.asarray(data.chelsea())


@pytest.fixture(scope="session")
def face_patch(astronaut: NDArray[np.uint8]) -> NDArray[np.uint8]:
    x0, y0, x1, y1 = ASTRONAUT_FACE
    return np.ascontiguousarray(astronaut[y0:y1, x0:x1])
