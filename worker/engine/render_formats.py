"""Which output formats a render can write here, and their media types.

Tiny on purpose: the API validates a job's ``Render.Format`` against :func:`supported_formats` at submit
time (a clear 400 for ``avif`` where this Pillow cannot write it), and it must do so without importing
numpy, OpenCV or the rest of the engine. Only ``PIL.features`` is imported here; pillow-heif is looked
at lazily, and only when Pillow itself has no AVIF encoder.
"""

from __future__ import annotations

import functools
import warnings

from PIL import features

MEDIA_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "png": "image/png",
    "avif": "image/avif",
}
"""Output format -> the Content-Type its objects are written with."""

EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "webp": "webp", "png": "png", "avif": "avif"}
"""Output format -> the usual file name extension (``cropq crop --render`` names its files with it)."""

# Pillow's feature name for each format's encoder: a build without libjpeg, libwebp or zlib has no writer.
_PILLOW_FEATURE = {"jpeg": "jpg", "webp": "webp", "png": "zlib", "avif": "avif"}


def _pillow_has(feature: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a Pillow older than the feature warns "Unknown feature"
        try:
            return bool(features.check(feature))
        except Exception:  # a broken optional library must not break the API's validation
            return False


def pillow_heif_avif() -> bool:
    """pillow-heif (before 0.22, which left AVIF to Pillow) can write AVIF when its libheif has an
    AVIF encoder."""
    try:
        import pillow_heif
    except ImportError:
        return False
    try:
        info = pillow_heif.libheif_info()
        return hasattr(pillow_heif, "register_avif_opener") and bool(info.get("AVIF"))
    except Exception:
        return False


@functools.cache
def supported_formats() -> frozenset[str]:
    """The output formats this installation can encode: jpeg, webp and png wherever Pillow was built
    with them (always, in practice), avif where Pillow has it (11.2 and later, with libavif) or
    pillow-heif's AVIF encoder is usable."""
    found = {fmt for fmt, feature in _PILLOW_FEATURE.items() if _pillow_has(feature)}
    if "avif" not in found and pillow_heif_avif():
        found.add("avif")
    return frozenset(found)
