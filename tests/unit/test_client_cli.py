"""``cropq submit|status|batch|jobs`` against an in-memory API: what they print, their exit codes, and that
every failure is one ``error:`` line (no traceback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cropq_client import CropqClient
from typer.testing import CliRunner

import cropq_cli.client_commands
from cropq_cli.main import app
from tests.unit.fake_cropq import KEY_ID, KEY_SECRET, FakeCropq

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCropq]:
    server = FakeCropq()
    monkeypatch.setattr(
        cropq_cli.client_commands,
        "_client",
        lambda: CropqClient("http://cropq.test", KEY_ID, KEY_SECRET, transport=server.transport()),
    )
    monkeypatch.setenv("COLUMNS", "200")  # the table's columns are never cut in the test's terminal
    yield server


def one_error_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_submit_waits_and_prints_the_job(fake: FakeCropq) -> None:
    out = runner.invoke(
        app, ["submit", "oss://b/a.jpg", "--project", "shop", "--ratios", "1:1,16:9", "--json"]
    )
    assert out.exit_code == 0, out.output
    job = json.loads(out.stdout)
    assert job["Status"] == "Succeeded" and [c["AspectRatio"] for c in job["Croppings"]] == ["1:1", "16:9"]
    text = runner.invoke(app, ["submit", "oss://b/a.jpg", "--project", "shop", "--hint", "face"])
    assert text.stdout.startswith("Succeeded  J0001  40x30") and text.exit_code == 0
    assert json.loads(fake.requests[-3].content)["InclusionHints"] == ["face"]


def test_submit_uploads_a_file_with_its_render_options(fake: FakeCropq, tmp_path: Path) -> None:
    image = tmp_path / "poster.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    args = ["submit", str(image), "--project", "shop", "--render", "oss://t/{Stem}.webp", "--format", "webp"]
    out = runner.invoke(app, [*args, "--max-width", "300", "--no-wait"])
    assert out.exit_code == 0 and out.stdout.strip() == "J0000"
    assert fake.jobs["J0000"]["SourceURI"].endswith("/poster.jpg")
    assert fake.jobs["J0000"]["Render"] == {
        "TargetURI": "oss://t/{Stem}.webp",
        "Format": "webp",
        "Quality": 82,
        "MaxWidth": 300,
        "KeepMetadata": False,
    }


def test_failures_are_one_line(fake: FakeCropq) -> None:
    bad = runner.invoke(app, ["submit", "oss://b/a.jpg", "--project", "shop", "--ratios", "1:3"])
    assert bad.exit_code == 1
    one_error_line(bad.stderr, "400 InvalidArgument", "'1:3'", "RequestId R-400")
    missing = runner.invoke(app, ["submit", "nowhere.jpg", "--project", "shop"])
    assert missing.exit_code == 2
    one_error_line(missing.stderr, "nowhere.jpg is neither a file nor")
    badfmt = runner.invoke(
        app, ["submit", "oss://b/a.jpg", "--project", "shop", "--render", "oss://t/x", "--format", "gif"]
    )
    assert badfmt.exit_code == 1
    one_error_line(badfmt.stderr, "Format")
    unknown = runner.invoke(app, ["jobs", "show", "J9", "--project", "shop"])
    assert unknown.exit_code == 1
    one_error_line(unknown.stderr, "404 ResourceNotFound")


def test_an_unreachable_api_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    monkeypatch.setattr(
        cropq_cli.client_commands,
        "_client",
        lambda: CropqClient("http://127.0.0.1:9", KEY_ID, KEY_SECRET, transport=httpx.MockTransport(refuse)),
    )
    out = runner.invoke(app, ["jobs", "list", "--project", "shop"])
    assert out.exit_code == 1
    one_error_line(out.stderr, "cannot reach http://127.0.0.1:9", "Connection refused")


def test_status_prints_the_job_as_json(fake: FakeCropq) -> None:
    (rid,) = fake.add_jobs("shop", 1)
    out = runner.invoke(app, ["status", rid, "--project", "shop", "--wait", "2"])
    assert out.exit_code == 0 and json.loads(out.stdout)["RequestId"] == rid
    assert fake.requests[-1].url.params["wait"] == "2.0"


def test_batch_prints_its_id_or_follows_it_to_a_summary(
    fake: FakeCropq, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setattr(time, "sleep", lambda _: None)
    args = [
        "batch",
        "oss://photos/products/",
        "--project",
        "shop",
        "--ratios",
        "1:1,16:9",
        "--suffix",
        ".jpg",
    ]
    started = runner.invoke(app, [*args, "--suffix", ".png", "--manifest", "oss://out/m.jsonl"])
    assert started.exit_code == 0 and started.stdout.strip() == "B0000"
    body = json.loads(fake.requests[0].content)
    assert body["Suffixes"] == [".jpg", ".png"] and body["ManifestURI"] == "oss://out/m.jsonl"
    assert body["AspectRatios"] == ["1:1", "16:9"] and body["SourcePrefix"] == "oss://photos/products/"
    waited = runner.invoke(app, [*args, "--manifest", "oss://out/m.jsonl", "--wait"])
    assert waited.exit_code == 0, waited.output
    assert waited.stdout.splitlines() == [
        "Succeeded  B0001  oss://photos/products/",
        "  5 images: 5 succeeded, 0 failed, 0 cancelled, 0 pending in 10.0 s (0.5 images/s)",
        "  manifest: oss://out/m.jsonl",
    ]
    assert "5/5" in waited.stderr  # the progress bar's last state


def test_a_batch_that_did_not_fully_succeed_exits_1(fake: FakeCropq, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def cancel_on_sleep(_: float) -> None:
        for b in fake.batches.values():
            b |= {"Status": "Cancelled", "Cancelled": b["Total"] - b["Succeeded"], "Pending": 0}
            b["FinishedAt"] = "2026-01-01T00:00:04.000Z"

    monkeypatch.setattr(time, "sleep", cancel_on_sleep)
    out = runner.invoke(app, ["batch", "oss://photos/p/", "--project", "shop", "--wait", "--json"])
    assert out.exit_code == 1
    assert json.loads(out.stdout)["Status"] == "Cancelled"


def test_jobs_list_shows_a_table_and_pages_through(fake: FakeCropq) -> None:
    rids = fake.add_jobs("shop", 30)
    table = runner.invoke(app, ["jobs", "list", "--project", "shop", "--max", "3"])
    assert table.exit_code == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["RequestId", "Status", "Source", "Ratios", "Created", "Result"]
    assert [line.split()[0] for line in lines[1:]] == rids[::-1][:3]
    every = runner.invoke(app, ["jobs", "list", "--project", "shop", "--max", "0", "--json"])
    assert [json.loads(line)["RequestId"] for line in every.stdout.splitlines()] == rids[::-1]
    assert fake.requests[-1].url.params["MaxResults"] == "100"
    fake.jobs[rids[0]]["Status"] = "Failed"
    failed = runner.invoke(app, ["jobs", "list", "--project", "shop", "--status", "failed", "--batch", "B7"])
    assert (
        fake.requests[-1].url.params["Status"] == "Failed" and fake.requests[-1].url.params["BatchId"] == "B7"
    )
    assert failed.exit_code == 0


def test_jobs_show_cancel_and_delete(fake: FakeCropq) -> None:
    queued, done = fake.add_jobs("shop", 2)
    fake.jobs[done] = {**fake.jobs[done], "Status": "Succeeded"}
    shown = runner.invoke(app, ["jobs", "show", done, "--project", "shop"])
    assert shown.exit_code == 0 and shown.stdout.startswith(f"Succeeded  {done}")
    cancelled = runner.invoke(app, ["jobs", "cancel", queued, "--project", "shop"])
    assert cancelled.exit_code == 0 and cancelled.stdout.startswith(f"Cancelled  {queued}")
    again = runner.invoke(app, ["jobs", "cancel", done, "--project", "shop"])
    assert again.exit_code == 1
    one_error_line(again.stderr, "409 InvalidState")
    deleted = runner.invoke(app, ["jobs", "delete", done, "--project", "shop"])
    assert deleted.exit_code == 0 and done not in fake.jobs
