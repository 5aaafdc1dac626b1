"""Aspect-ratio and inclusion-hint rules of IMM's DetectImageCropping (no OpenCV here).

Rules (seed page): at most 5 entries; each is ``auto`` or ``W:H`` with W, H plain decimal integers in
the open interval (0, 20); W/H must lie in [0.5, 2] inclusive; an empty list is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from worker.engine.errors import InvalidAspectRatio, InvalidInclusionHints

MAX_RATIOS = 5
MAX_HINTS = 1
MAX_HINT_LENGTH = 64
MAX_RATIO_LENGTH = 16
# The JSON-array-in-a-string forms are bounded before they are decoded: a valid one is a flat list far below
# these, and a huge or deeply nested document must cost nothing (json.loads recurses).
MAX_PARAM_CHARS = 1024
MAX_PARAM_DEPTH = 4
AUTO = "auto"
DEFAULT_RATIOS: tuple[str, ...] = (AUTO,)
# Ratios `auto` chooses among: the common ones inside IMM's [0.5, 2] range.
AUTO_CANDIDATES: tuple[str, ...] = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "2:1", "1:2")

# Bounded digits: int() never sees a 5,000-digit number (Python refuses those with a ValueError).
_RATIO_RE = re.compile(r"([0-9]{1,15}):([0-9]{1,15})")


def shown(text: str, limit: int = 40) -> str:
    """``repr`` of what the client sent, cut to ``limit`` characters for messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """Does the JSON text nest arrays/objects deeper than ``max_depth``? A linear scan, no recursion."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def loads_bounded(
    text: str, name: str, max_chars: int = MAX_PARAM_CHARS, max_depth: int = MAX_PARAM_DEPTH
) -> object:
    """``json.loads`` of a parameter that carries JSON in a string, after its length and nesting are checked.
    Raises ValueError with a message naming ``name``."""
    if len(text) > max_chars:
        raise ValueError(f"{name} is at most {max_chars} characters, got {len(text)}")
    if json_depth_exceeds(text, max_depth):
        raise ValueError(f"{name} nests JSON deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"{name} is not valid JSON: {shown(text)}") from None


@dataclass(frozen=True, slots=True)
class AspectRatio:
    """A validated ``W:H`` ratio; ``auto`` is represented by ``None`` at the call sites."""

    w: int
    h: int

    @property
    def value(self) -> float:
        return self.w / self.h

    def __str__(self) -> str:
        return f"{self.w}:{self.h}"


def parse_ratio(text: str) -> AspectRatio | None:
    """Parse one entry; ``None`` means ``auto``. Raises :class:`InvalidAspectRatio` naming the entry."""
    if not isinstance(text, str):
        raise InvalidAspectRatio(f"AspectRatios entry {text!r} is not a string")
    if text == AUTO:
        return None
    if len(text) > MAX_RATIO_LENGTH:
        raise InvalidAspectRatio(
            f"AspectRatios entry {shown(text)} is longer than {MAX_RATIO_LENGTH} characters"
        )
    m = _RATIO_RE.fullmatch(text)
    if m is None:
        raise InvalidAspectRatio(f"AspectRatios entry {text!r} is not 'auto' or 'W:H' with integers W and H")
    w, h = int(m.group(1)), int(m.group(2))
    if not (0 < w < 20 and 0 < h < 20):
        raise InvalidAspectRatio(f"AspectRatios entry {text!r}: W and H must be integers in (0, 20)")
    if h > 2 * w or w > 2 * h:
        raise InvalidAspectRatio(f"AspectRatios entry {text!r}: W/H must lie in [0.5, 2]")
    return AspectRatio(w, h)


def parse_ratios(entries: Sequence[str]) -> list[AspectRatio | None]:
    """Validate a whole list (1 to 5 entries)."""
    if isinstance(entries, str) or not isinstance(entries, Sequence):
        raise InvalidAspectRatio('AspectRatios must be a list of strings such as ["1:1", "16:9"]')
    if len(entries) == 0:
        raise InvalidAspectRatio("AspectRatios must not be empty")
    if len(entries) > MAX_RATIOS:
        raise InvalidAspectRatio(f"AspectRatios accepts at most {MAX_RATIOS} ratios, got {len(entries)}")
    return [parse_ratio(e) for e in entries]


def ratios_from_param(value: str | Sequence[str] | None) -> list[str]:
    """Accept the wire forms: omitted (-> ``["auto"]``), a list, or a JSON-array string.

    Returns the entries exactly as given (they are echoed back in ``AspectRatio``) after validating them.
    """
    if value is None:
        return list(DEFAULT_RATIOS)
    if isinstance(value, str):
        try:
            decoded = loads_bounded(value, "AspectRatios")
        except ValueError as e:
            raise InvalidAspectRatio(
                f'{e}; AspectRatios must be a JSON array of strings such as ["1:1"]'
            ) from None
        if not isinstance(decoded, list) or not all(isinstance(e, str) for e in decoded):
            raise InvalidAspectRatio('AspectRatios must be a JSON array of strings such as ["1:1"]')
        value = decoded
    entries = list(value)
    parse_ratios(entries)
    return entries


def hints_from_param(value: str | Sequence[str] | None) -> list[str]:
    """Validate InclusionHints (at most one non-empty free-text hint); a JSON-array string is accepted."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            decoded = loads_bounded(value, "InclusionHints")
        except ValueError as e:
            raise InvalidInclusionHints(
                f'{e}; InclusionHints must be a JSON array of strings such as ["face"]'
            ) from None
        if not isinstance(decoded, list):
            raise InvalidInclusionHints('InclusionHints must be a JSON array of strings such as ["face"]')
        value = decoded
    hints = list(value)
    if len(hints) > MAX_HINTS:
        raise InvalidInclusionHints(f"InclusionHints accepts at most {MAX_HINTS} hint, got {len(hints)}")
    out: list[str] = []
    for h in hints:
        if not isinstance(h, str) or not h.strip():
            raise InvalidInclusionHints("InclusionHints entries must be non-empty strings")
        if len(h) > MAX_HINT_LENGTH:
            raise InvalidInclusionHints(f"InclusionHints entries are at most {MAX_HINT_LENGTH} characters")
        out.append(h.strip())
    return out
