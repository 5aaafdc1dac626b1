"""Multipart uploads: the checks the API makes without decoding anything."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from api.limits import is_upload
from api.uploads import safe_file_name, sniff_media_type


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (8, 8), 0).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_sniffs_what_pillow_writes(fmt: str, media_type: str) -> None:
    assert sniff_media_type(_encoded(fmt)[:32]) == media_type


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"RIFF\0\0\0\0WAVEfmt ",
        b"%PDF-1.7",
        b"\xff\xd8",
    ],
)
def test_refuses_what_is_not_an_image(data: bytes) -> None:
    assert sniff_media_type(data) is None


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("photo.jpg", "photo.jpg"),
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("C:\\Users\\me\\x.png", "C:_Users_me_x.png"),
        ("a\nb\x00.jpg", "a_b_.jpg"),
        ("{Ratio}.jpg", "_Ratio_.jpg"),
        ("", "image"),
        (None, "image"),
        ("..", "image"),
        ("x" * 500, "x" * 200),
    ],
)
def test_file_names_become_one_safe_key_segment(name: str | None, safe: str) -> None:
    assert safe_file_name(name) == safe


def _scope(method: str, path: str, content_type: bytes | None) -> dict[str, object]:
    headers = [(b"content-type", content_type)] if content_type is not None else []
    return {"type": "http", "method": method, "path": path, "headers": headers}


def test_only_a_multipart_submit_gets_the_upload_cap() -> None:
    assert is_upload(_scope("POST", "/v1/projects/p/crop-jobs", b"multipart/form-data; boundary=x"))
    assert not is_upload(_scope("POST", "/v1/projects/p/crop-jobs", b"application/json"))
    assert not is_upload(_scope("POST", "/v1/projects/p/crop-jobs:batch", b"multipart/form-data; boundary=x"))
    assert not is_upload(_scope("PUT", "/v1/projects/p", b"multipart/form-data; boundary=x"))
    assert not is_upload(_scope("POST", "/", b"multipart/form-data; boundary=x"))
    assert not is_upload(_scope("POST", "/v1/projects/p/crop-jobs", None))
