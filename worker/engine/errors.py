"""Engine errors. Each carries a stable IMM-style code that flows into job status and API errors."""

from __future__ import annotations


class CropError(Exception):
    """Base class: ``code`` is the stable error code, ``str(exc)`` the human message."""

    code = "InvalidArgument"


class InvalidAspectRatio(CropError):
    code = "InvalidArgument"


class InvalidInclusionHints(CropError):
    code = "InvalidArgument"


class UnsupportedImage(CropError):
    """The bytes are not an image we can decode (or are truncated / corrupt)."""

    code = "InvalidArgument.Image"


class ImageTooLarge(CropError):
    """The header announces more pixels than the configured cap: refused before decoding."""

    code = "InvalidArgument.ImageTooLarge"


class ImageTooComplex(CropError):
    """The image would cost more decoder time than any real photo: a progressive JPEG with more scans than
    real encoders write, or a decode that outlived its time budget."""

    code = "InvalidArgument.ImageTooComplex"


class UnsupportedRenderFormat(CropError):
    """A render asked for an output format this installation cannot write (AVIF without an encoder)."""

    code = "InvalidArgument.RenderFormat"
