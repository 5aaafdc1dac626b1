"""Free-text InclusionHints -> the detector that finds such objects (English and Chinese, with synonyms).

An unknown hint is not an error: it maps to nothing and the crop is made as usual.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

# Each detector name with the words that reach it. Matching is on the normalised whole hint first, then
# on its words (so "a red car's licence plate" still finds the plate detector).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "face": (
        "face",
        "faces",
        "head",
        "heads",
        "portrait",
        "selfie",
        "facial",
        "人脸",
        "脸",
        "面部",
        "脸部",
        "头像",
        "人头",
        "面孔",
    ),
    "person": (
        "person",
        "persons",
        "people",
        "pedestrian",
        "pedestrians",
        "human",
        "humans",
        "man",
        "men",
        "woman",
        "women",
        "child",
        "children",
        "kid",
        "kids",
        "boy",
        "girl",
        "player",
        "crowd",
        "body",
        "人",
        "人物",
        "行人",
        "人类",
        "人群",
        "男人",
        "女人",
        "孩子",
        "儿童",
        "路人",
        "人体",
    ),
    "cat": ("cat", "cats", "kitten", "kittens", "kitty", "猫", "猫咪", "小猫", "猫脸"),
    "eye": ("eye", "eyes", "眼睛", "眼", "双眼"),
    "smile": ("smile", "smiles", "smiling", "laugh", "微笑", "笑容", "笑脸", "笑"),
    "plate": (
        "licence plate",
        "license plate",
        "licence plates",
        "license plates",
        "number plate",
        "number plates",
        "plate",
        "plates",
        "registration plate",
        "numberplate",
        "车牌",
        "车牌号",
        "号牌",
        "牌照",
    ),
    "text": (
        "text",
        "texts",
        "sign",
        "signs",
        "signboard",
        "signboards",
        "signage",
        "word",
        "words",
        "letters",
        "caption",
        "title",
        "logo",
        "banner",
        "poster",
        "billboard",
        "label",
        "writing",
        "文字",
        "文本",
        "招牌",
        "标志",
        "标牌",
        "字",
        "广告牌",
        "标语",
        "牌子",
        "指示牌",
        "横幅",
    ),
}

_LOOKUP: dict[str, str] = {word: name for name, words in _SYNONYMS.items() for word in words}
_WORD = re.compile(r"[a-z]+")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    return re.sub(r"[\s_\-]+", " ", text)


def detector_for_hint(hint: str) -> str | None:
    """The detector name for a hint, or ``None`` when no detector understands it."""
    text = _normalise(hint)
    if text in _LOOKUP:
        return _LOOKUP[text]
    # A longer phrase: try its Chinese words, then the English ones (most specific detector first).
    for word in sorted((w for w in _LOOKUP if not w.isascii()), key=len, reverse=True):
        if word in text:
            return _LOOKUP[word]
    words = _WORD.findall(text)
    for a, b in itertools.pairwise(words):
        if f"{a} {b}" in _LOOKUP:
            return _LOOKUP[f"{a} {b}"]
    for word in words:
        if word in _LOOKUP:
            return _LOOKUP[word]
    return None
