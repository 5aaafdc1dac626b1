"""`cropq crop` as a function: one JSON line per image in order, error lines, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from cropq_cli.crop import run_crop_cli
from tests.unit.engine.engine_helpers import encode


def test_json_lines_in_order_and_error_line(
    tmp_path: Path, astronaut: NDArray[np.uint8], capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "a.jpg"
    good.write_bytes(encode(astronaut[:300], "JPEG"))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"garbage")
    preview = tmp_path / "prev"
    code = run_crop_cli([str(good), str(bad), str(good)], "1:1,16:9,auto", "face", preview)
    assert code == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["Image"] for x in lines] == [str(good), str(bad), str(good)]
    first = lines[0]
    assert (first["Width"], first["Height"]) == (512, 300)
    assert [c["AspectRatio"] for c in first["Croppings"]][:2] == ["1:1", "16:9"]
    b = first["Croppings"][0]["Boundary"]
    assert b["Polygon"] == [
        {"X": b["Left"], "Y": b["Top"]},
        {"X": b["Left"] + b["Width"], "Y": b["Top"]},
        {"X": b["Left"] + b["Width"], "Y": b["Top"] + b["Height"]},
        {"X": b["Left"], "Y": b["Top"] + b["Height"]},
    ]
    assert first["MatchedInclusionHints"] == ["face"]
    assert lines[1]["Code"] == "InvalidArgument.Image" and lines[1]["Message"]
    assert (preview / "a.preview.png").exists()


def test_all_good_exits_zero(
    tmp_path: Path, astronaut: NDArray[np.uint8], capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "a.png"
    p.write_bytes(encode(astronaut[:64, :96]))
    assert run_crop_cli([str(p)], "auto", None, None) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize("ratios", ["4.1:3", "3:1", "", "1:1,1:1,1:1,1:1,1:1,1:1"])
def test_invalid_ratios_exit_2(ratios: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_crop_cli(["whatever.jpg"], ratios, None, None) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "invalid --ratios" in captured.err
