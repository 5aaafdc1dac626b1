"""Render.TargetURI templates: what the API refuses, and the keys workers write."""

from __future__ import annotations

import pytest

from worker.render_targets import TargetError, parse_target, ratio_slug, stem_of


def test_expand_fills_every_placeholder() -> None:
    target = parse_target("oss://thumbs/{RequestId}/{Stem}_{Ratio}.webp")
    assert target.bucket == "thumbs"
    assert target.placeholders == {"RequestId", "Stem", "Ratio"}
    assert target.expand("RID-1", "red shoe", "16:9") == "RID-1/red shoe_16x9.webp"


def test_same_job_same_keys() -> None:
    # A rerun must overwrite its outputs, never add new ones: the key depends on the job alone.
    target = parse_target("s3://out/{Stem}/{Ratio}.jpg")
    assert target.expand("a", "x", "1:1") == target.expand("a", "x", "1:1")
    assert target.expand("a", "x", "1:1") != target.expand("a", "x", "4:3")


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("oss://thumbs", "oss://bucket/key"),
        ("https://thumbs/x.jpg", "oss://bucket/key"),
        ("oss://{Stem}/x.jpg", "oss://bucket/key"),  # the bucket is literal: checked before anything runs
        ("oss://Thumbs/x.jpg", "oss://bucket/key"),
        ("oss://thumbs/{Size}.jpg", "unknown placeholders {Size}"),
        ("oss://thumbs/{Stem.jpg", "unmatched"),
        ("oss://thumbs/Stem}.jpg", "unmatched"),
        ("oss://thumbs/a//b.jpg", "empty"),
        ("oss://thumbs/../b.jpg", "'..'"),
        ("oss://thumbs/a\nb.jpg", "oss://bucket/key"),
        ("oss://thumbs/" + "k" * 1100, "1024 bytes"),
    ],
)
def test_bad_templates_are_refused(uri: str, why: str) -> None:
    with pytest.raises(TargetError, match=why.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        parse_target(uri)


def test_an_expansion_longer_than_s3_allows_is_refused() -> None:
    target = parse_target("oss://thumbs/" + "k" * 1000 + "/{Stem}")
    with pytest.raises(TargetError, match="1024 bytes"):
        target.expand("r", "s" * 100, "1:1")


@pytest.mark.parametrize(
    ("source", "stem"),
    [
        ("shop/red shoe.jpg", "red shoe"),
        ("photo", "photo"),
        ("a/b/archive.tar.gz", "archive.tar"),
        ("https://example.com/img/caf%C3%A9.png?size=large", "café"),
        ("https://example.com/", "image"),
        ("https://example.com/a%2Fb.jpg", "b"),
        ("p/rid/.hidden", ".hidden"),
        ("p/rid/{Ratio}.jpg", "_Ratio_"),  # braces never reach a key as placeholders
        ("p/rid/..", "image"),
    ],
)
def test_stem_of(source: str, stem: str) -> None:
    assert stem_of(source) == stem
    assert "/" not in stem_of(source)


def test_ratio_slug() -> None:
    assert ratio_slug("16:9") == "16x9"
