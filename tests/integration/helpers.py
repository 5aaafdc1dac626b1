"""Shared bits of the integration tests: images and job polling."""

from __future__ import annotations

import time
from typing import Any

import cv2
import httpx
import numpy as np


def jpeg(
    width: int = 1200, height: int = 800, patch: tuple[int, int] | None = (900, 200), seed: int = 0
) -> bytes:
    """A textured picture with one strongly salient patch (centre given), as JPEG bytes."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 110, np.uint8)
    img += rng.integers(0, 20, size=img.shape, dtype=np.uint8)
    if patch is not None:
        x, y = patch
        cv2.circle(img, (x, y), max(8, min(width, height) // 12), (20, 40, 240), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG that takes a noticeable time to decode (noise does not compress)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return bytes(buf)


def submit(client: httpx.Client, project: str, body: dict[str, Any], **kw: Any) -> str:
    r = client.post(f"/v1/projects/{project}/crop-jobs", json=body, **kw)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/projects/{project}/crop-jobs/{r.json()['RequestId']}"
    return str(r.json()["RequestId"])


def wait_done(client: httpx.Client, project: str, rid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/projects/{project}/crop-jobs/{rid}", params={"wait": 10})
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["Status"] in ("Succeeded", "Failed"):
            return job
    raise AssertionError(f"job {rid} did not finish in {timeout} s")


def assert_valid_croppings(job: dict[str, Any], ratios: list[str], width: int, height: int) -> None:
    crops = job["Croppings"]
    assert len(crops) == len(ratios)
    for want, c in zip(ratios, crops, strict=True):
        b = c["Boundary"]
        if want != "auto":
            assert c["AspectRatio"] == want
        w, h = (int(p) for p in c["AspectRatio"].split(":"))
        assert b["Left"] >= 0 and b["Top"] >= 0
        assert b["Left"] + b["Width"] <= width and b["Top"] + b["Height"] <= height
        assert abs(b["Width"] * h / w - b["Height"]) <= 1.0 + h / w
        left, top, right, bottom = b["Left"], b["Top"], b["Left"] + b["Width"], b["Top"] + b["Height"]
        assert b["Polygon"] == [
            {"X": left, "Y": top},
            {"X": right, "Y": top},
            {"X": right, "Y": bottom},
            {"X": left, "Y": bottom},
        ]
        assert 0.0 <= c["Confidence"] <= 1.0
