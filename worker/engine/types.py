"""Plain value types the engine returns. Coordinates are integer pixels of the image as displayed
(EXIF orientation applied); (0, 0) is the top-left corner."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rect:
    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height

    def corners(self) -> list[tuple[int, int]]:
        """The four corners clockwise from top-left."""
        return [
            (self.left, self.top),
            (self.right, self.top),
            (self.right, self.bottom),
            (self.left, self.bottom),
        ]


@dataclass(frozen=True, slots=True)
class CropSuggestion:
    aspect_ratio: str  # as requested; for ``auto`` the chosen "W:H"
    rect: Rect
    confidence: float  # in [0, 1]


@dataclass(frozen=True, slots=True)
class Detected:
    """Something the engine found and weighed, in pixels of the displayed image."""

    kind: str  # "face", "person", "object" or "hint"
    label: str  # "face", "person", a COCO class, or the hint as given
    rect: Rect
    confidence: float  # in [0, 1]


@dataclass(frozen=True, slots=True)
class CropResult:
    width: int  # displayed size of the source image
    height: int
    croppings: list[CropSuggestion]
    matched_hints: list[str] = field(default_factory=list)
    detections: list[Detected] = field(default_factory=list)
