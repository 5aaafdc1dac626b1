"""Shared bits of the integration tests: images, job polling and a TCP forwarder."""

from __future__ import annotations

import contextlib
import socket
import threading
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


class FlakyProxy:
    """A TCP forwarder to ``target`` (host:port) listening on ``bind``, on a free port; it can be switched
    off (an outage: new connections are closed at once) and on again."""

    def __init__(self, target: str, bind: str = "127.0.0.1") -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.up = threading.Event()
        self.up.set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.refused = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up.is_set():
                self.refused += 1
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()
