"""Where rendered crops go: ``Render.TargetURI`` templates, checked by the API and expanded by workers.

A template is ``oss://bucket/key`` (or ``s3://``) whose key may hold ``{RequestId}``, ``{Stem}`` (the source's
file name without its extension) and ``{Ratio}`` (``16x9``). The bucket is literal, so the API can check it
against the project's WritableBuckets before anything runs; the same template and job always expand to the
same keys, so a rerun overwrites its outputs rather than adding to them.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

PLACEHOLDERS = frozenset({"RequestId", "Stem", "Ratio"})
MAX_KEY_BYTES = 1024
MAX_STEM_LENGTH = 200

_URI_RE = re.compile(r"(oss|s3)://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)", re.DOTALL)
_FIELD_RE = re.compile(r"\{([^{}]*)\}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_STEM_RE = re.compile(r"[\x00-\x1f\x7f/\\{}]")


class TargetError(ValueError):
    """A template that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    bucket: str
    template: str
    """The key template (placeholders still in it)."""

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(_FIELD_RE.findall(self.template))

    def expand(self, request_id: str, stem: str, ratio: str) -> str:
        """The object key for one crop; ``ratio`` as the engine names it (``16:9``)."""
        values = {"RequestId": request_id, "Stem": stem, "Ratio": ratio_slug(ratio)}
        key = _FIELD_RE.sub(lambda m: values[m.group(1)], self.template)
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise TargetError(f"The rendered object key is longer than {MAX_KEY_BYTES} bytes (S3's limit).")
        return key


def parse_target(uri: str) -> Target:
    """Check a TargetURI: a literal bucket, only known placeholders, no empty or ``..`` path segment."""
    m = _URI_RE.fullmatch(uri)
    if m is None or ".." in m.group(2) or _CONTROL_RE.search(uri):
        raise TargetError("Render.TargetURI must look like oss://bucket/key (placeholders only in the key).")
    template = m.group(3)
    unknown = set(_FIELD_RE.findall(template)) - PLACEHOLDERS
    if unknown:
        names = ", ".join(sorted("{" + u + "}" for u in unknown))
        raise TargetError(
            f"Render.TargetURI holds unknown placeholders {names}; known: {{RequestId}}, {{Stem}}, {{Ratio}}."
        )
    if "{" in _FIELD_RE.sub("", template) or "}" in _FIELD_RE.sub("", template):
        raise TargetError("Render.TargetURI has an unmatched '{' or '}'.")
    if any(part in ("", ".", "..") for part in template.split("/")):
        raise TargetError("Render.TargetURI's key may not have empty, '.' or '..' path segments.")
    if len(template.encode("utf-8")) > MAX_KEY_BYTES:
        raise TargetError(f"Render.TargetURI's key is longer than {MAX_KEY_BYTES} bytes (S3's limit).")
    return Target(m.group(2), template)


def ratio_slug(ratio: str) -> str:
    """``16:9`` -> ``16x9`` (a colon in a key is legal but awkward in URLs and file systems)."""
    return ratio.replace(":", "x")


def stem_of(source_uri: str) -> str:
    """The source's file name without its extension (``oss://b/shop/red shoe.jpg`` -> ``red shoe``; an
    https URL's last path segment, decoded). ``image`` when there is none. Never contains ``/``."""
    path = urlsplit(source_uri).path if source_uri.startswith(("http://", "https://")) else source_uri
    name = posixpath.basename(unquote(path).rstrip("/"))
    stem = posixpath.splitext(name)[0] if not name.startswith(".") else name
    stem = _UNSAFE_STEM_RE.sub("_", stem).strip()[:MAX_STEM_LENGTH]
    return stem if stem not in ("", ".", "..") else "image"
