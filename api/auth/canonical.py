"""Encoding rules shared by both IMM signature schemes (imm-wire.md §2 step 5).

Strings coming off the wire are decoded as UTF-8 with ``surrogateescape`` so that re-encoding them gives back
the exact bytes the client sent: a signature is then checked over what was received, never over a
"repaired" view of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")

WIRE_ENCODING = "utf-8"
WIRE_ERRORS = "surrogateescape"


def wire_str(raw: bytes) -> str:
    """Bytes from the wire as a str that round-trips to the same bytes (see :func:`wire_bytes`)."""
    return raw.decode(WIRE_ENCODING, WIRE_ERRORS)


def wire_bytes(value: str) -> bytes:
    return value.encode(WIRE_ENCODING, WIRE_ERRORS)


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of the UTF-8 bytes: only ``A-Z a-z 0-9 - _ . ~`` stay literal, hex is upper-case."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in wire_bytes(value))


def form_decode(raw: str) -> list[tuple[str, str]]:
    """Decode a query string or form body with form rules: ``+`` is a space, empty values are kept.

    Order and repeated names are preserved; empty segments (``a=1&&b=2``) carry no pair and are dropped.
    """
    if not raw:
        return []
    return parse_qsl(raw, keep_blank_values=True, encoding=WIRE_ENCODING, errors=WIRE_ERRORS)


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """``name=value`` pairs, both percent-encoded, sorted by encoded name then value, joined with ``&``."""
    encoded = sorted((percent_encode(name), percent_encode(value)) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)
