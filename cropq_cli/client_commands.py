"""The ``cropq`` commands that talk to a running cropq through :mod:`cropq_client`: ``submit``, ``status``,
``batch`` (with a live progress bar) and ``jobs list|show|cancel|delete``.

Every failure (an error answer, an unreachable server, a bad option) is one ``error: ...`` line on stderr
and exit status 1 (2 for usage); a job or batch that ended other than Succeeded also exits 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from cropq_client import ConnectionFailed, CropqClient, CropqError
from cropq_client.models import Batch, BatchStatus, JobStatus
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cropq_cli.errors import SETTINGS_TITLES, OneLineErrors
from cropq_cli.job_text import describe_batch, describe_job, jobs_table

jobs_app = typer.Typer(
    cls=OneLineErrors, help="List, show, cancel and delete crop jobs.", no_args_is_help=True
)

ProjectOpt = Annotated[str, typer.Option(help="Project name.")]
RatiosOpt = Annotated[str, typer.Option(help="Comma-separated W:H ratios, or 'auto'.")]
HintOpt = Annotated[str | None, typer.Option(help="Object to keep, e.g. face.")]
RenderOpt = Annotated[
    str | None,
    typer.Option(help="Write each crop to this oss://bucket/key template ({RequestId}, {Stem}, {Ratio})."),
]
FormatOpt = Annotated[str, typer.Option("--format", help="jpeg, webp, png or avif.")]
QualityOpt = Annotated[int, typer.Option(help="Encoder quality of rendered crops.", min=1, max=100)]
MaxWidthOpt = Annotated[int | None, typer.Option(help="Largest rendered width (never upscaled).")]
MaxHeightOpt = Annotated[int | None, typer.Option(help="Largest rendered height (never upscaled).")]
CallbackOpt = Annotated[str | None, typer.Option(help="URL that receives the signed result.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _client() -> CropqClient:
    from cropq_cli.settings import cli_settings

    s = cli_settings()
    if not s.access_key_id or s.access_key_secret is None:
        raise fail(
            "no access key: start the stack with `cropq up` (in this folder, or set CROPQ_DATA_DIR to its "
            "data folder), or set CROPQ_ACCESS_KEY_ID and CROPQ_ACCESS_KEY_SECRET (see `cropq keys create`)",
            2,
        )
    url = s.api_url or f"http://{s.api_host}:{s.api_port}"
    return CropqClient(url, s.access_key_id, s.access_key_secret.get_secret_value())


@contextmanager
def connected() -> Iterator[CropqClient]:
    """The configured client; any error on the way is one line and exit status 1."""
    try:
        with _client() as c:
            yield c
    except ConnectionFailed as e:
        raise fail(f"{e}; start the stack with `cropq up`, or set CROPQ_API_URL") from None
    except CropqError as e:
        raise fail(str(e)) from None
    except ValidationError as e:  # a field the client checks before sending (e.g. --format)
        if e.title in SETTINGS_TITLES:
            raise  # a refused setting: the app's handler names its variable
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise fail(f"{where}: {first['msg']}") from None
    except OSError as e:
        raise fail(f"{e.filename or ''}: {e.strerror or e}") from None


def _render(
    target: str | None, fmt: str, quality: int, max_width: int | None, max_height: int | None
) -> dict[str, Any] | None:
    if not target:
        return None
    spec: dict[str, Any] = {"TargetURI": target, "Format": fmt, "Quality": quality}
    return spec | {k: v for k, v in (("MaxWidth", max_width), ("MaxHeight", max_height)) if v is not None}


def _ratios(ratios: str) -> list[str]:
    return [r.strip() for r in ratios.split(",") if r.strip()]


def submit(
    source: Annotated[
        str, typer.Argument(help="A local image FILE (uploaded), or oss://, s3:// or https:// URI.")
    ],
    project: ProjectOpt,
    ratios: RatiosOpt = "auto",
    hint: HintOpt = None,
    render: RenderOpt = None,
    render_format: FormatOpt = "jpeg",
    quality: QualityOpt = 82,
    max_width: MaxWidthOpt = None,
    max_height: MaxHeightOpt = None,
    callback_url: CallbackOpt = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result (--no-wait prints the RequestId).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished job as JSON.")] = False,
) -> None:
    """Submit a crop job to a running cropq and show its crops (and rendered outputs)."""
    if "://" not in source and not Path(source).is_file():
        raise fail(f"{source} is neither a file nor an oss://, s3:// or https:// URI", 2)
    options: dict[str, Any] = {
        "render": _render(render, render_format, quality, max_width, max_height),
        "callback_url": callback_url,
    }
    hints = [hint] if hint else None
    with connected() as c:
        if "://" in source:
            rid = c.submit(project, source, _ratios(ratios), hints, **options)
        else:
            rid = c.submit_file(project, Path(source), None, _ratios(ratios), hints, **options)
        if not wait:
            typer.echo(rid)
            return
        job = c.wait(project, rid)
    typer.echo(job.model_dump_json(exclude_none=True) if as_json else describe_job(job))
    raise typer.Exit(0 if job.Status is JobStatus.SUCCEEDED else 1)


def status(
    request_id: Annotated[str, typer.Argument(help="RequestId of the job.")],
    project: ProjectOpt,
    wait: Annotated[float, typer.Option(help="Seconds to long-poll for the end.")] = 0,
) -> None:
    """Print a job (JSON), optionally waiting for it to end."""
    with connected() as c:
        job = c.get(project, request_id, wait=wait)
    typer.echo(job.model_dump_json(exclude_none=True))


class _RateColumn(ProgressColumn):
    """Images a second, over rich's recent-speed window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "- img/s", style="progress.data.speed")


def watch_batch(c: CropqClient, project: str, batch_id: str, console: Console) -> Batch:
    """Follow a batch to its end with a progress bar (done of total, rate, ETA) on ``console``."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("Listing", total=None)

        def show(b: Batch) -> None:
            # The total is final only past Listing: until then the bar has no end and no ETA.
            total = None if b.Status is BatchStatus.LISTING else b.Total
            label = f"{b.Status.value}" + (f" ({b.Failed} failed)" if b.Failed else "")
            bar.update(task, total=total, completed=b.done, description=label)

        return c.wait_batch(project, batch_id, on_progress=show)


def batch(
    source_prefix: Annotated[
        str, typer.Argument(help="oss://bucket/prefix/: every object under it is cropped.")
    ],
    project: ProjectOpt,
    ratios: RatiosOpt = "auto",
    suffix: Annotated[
        list[str] | None,
        typer.Option("--suffix", help="Only objects ending with it, e.g. .jpg (repeatable)."),
    ] = None,
    hint: HintOpt = None,
    render: RenderOpt = None,
    render_format: FormatOpt = "jpeg",
    quality: QualityOpt = 82,
    max_width: MaxWidthOpt = None,
    max_height: MaxHeightOpt = None,
    manifest: Annotated[
        str | None,
        typer.Option(help="oss://bucket/key.jsonl that receives one JSON line per image at the end."),
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="URL that receives the batch's signed summary.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="The same key again answers the same batch instead of a new one.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until the batch ends, then a summary.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Crop every image under a prefix as one batch: prints its BatchId, or with --wait follows it with a
    progress bar (rate, ETA) and prints a summary."""
    with connected() as c:
        accepted = c.submit_batch(
            project,
            source_prefix,
            _ratios(ratios),
            suffixes=suffix or None,
            inclusion_hints=[hint] if hint else None,
            render=_render(render, render_format, quality, max_width, max_height),
            manifest_uri=manifest,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
        )
        if not wait:
            typer.echo(accepted.model_dump_json(exclude_none=True) if as_json else accepted.BatchId)
            return
        try:
            done = watch_batch(c, project, accepted.BatchId, Console(stderr=True))
        except KeyboardInterrupt:
            bid = accepted.BatchId
            raise fail(
                f"stopped watching; batch {bid} goes on (cropq jobs list --batch {bid})", 130
            ) from None
    typer.echo(done.model_dump_json(exclude_none=True) if as_json else describe_batch(done))
    raise typer.Exit(0 if done.Status is BatchStatus.SUCCEEDED else 1)


@jobs_app.command("list")
def list_jobs(
    project: ProjectOpt,
    status: Annotated[
        JobStatus | None, typer.Option(case_sensitive=False, help="Only jobs in this state.")
    ] = None,
    batch_id: Annotated[str | None, typer.Option("--batch", help="Only the jobs of this batch.")] = None,
    max_jobs: Annotated[int, typer.Option("--max", min=0, help="At most this many jobs (0: all).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON job a line instead of a table.")] = False,
) -> None:
    """The project's jobs, newest first."""
    limit = max_jobs or None
    page_size = min(limit or 100, 100)
    with connected() as c:
        found = c.list_jobs(project, status, batch_id, page_size, limit=limit)
        if as_json:
            for job in found:
                typer.echo(job.model_dump_json(exclude_none=True))
        else:
            Console().print(jobs_table(found))


@jobs_app.command("show")
def show_job(
    request_id: Annotated[str, typer.Argument(help="RequestId of the job.")],
    project: ProjectOpt,
    as_json: JsonOpt = False,
) -> None:
    """One job: its state, crops, rendered outputs and error."""
    with connected() as c:
        job = c.get(project, request_id)
    typer.echo(job.model_dump_json(exclude_none=True) if as_json else describe_job(job))


@jobs_app.command("cancel")
def cancel_job(
    request_id: Annotated[str, typer.Argument(help="RequestId of the job.")],
    project: ProjectOpt,
) -> None:
    """Cancel a queued or running job (a job that already ended cannot be cancelled)."""
    with connected() as c:
        job = c.cancel(project, request_id)
    typer.echo(describe_job(job))


@jobs_app.command("delete")
def delete_job(
    request_id: Annotated[str, typer.Argument(help="RequestId of the job.")],
    project: ProjectOpt,
) -> None:
    """Remove a finished job's record."""
    with connected() as c:
        c.delete(project, request_id)
    typer.echo(f"deleted {request_id}")


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(status)
    app.command()(batch)
    app.add_typer(jobs_app, name="jobs")
