"""Jobs and batches as a person reads them in a terminal (``cropq submit``, ``cropq batch``, ``cropq jobs``):
plain text for one job or batch, a rich table for a listing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cropq_client.models import Batch, Job
from rich.table import Table


def _size(n: int) -> str:
    return f"{n / 1024:.0f} kB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def describe_job(job: Job) -> str:
    head = f"{job.Status.value}  {job.RequestId}"
    if job.ImageWidth and job.ImageHeight:
        head += f"  {job.ImageWidth}x{job.ImageHeight}"
    lines = [head]
    if job.Code:
        lines.append(f"  {job.Code}: {job.Message or ''}")
    for c in job.Croppings or []:
        b = c.Boundary
        line = f"  {c.AspectRatio:>6}  {c.Confidence:.2f}  {b.Width}x{b.Height} at ({b.Left}, {b.Top})"
        if c.Output is not None:
            o = c.Output
            line += f"  -> {o.URI}  {o.Width}x{o.Height} {o.Format} {_size(o.Bytes)}"
        lines.append(line)
    found = job.Detections or []
    if found:
        kinds = sorted({d.Label for d in found})
        lines.append(f"  found: {', '.join(kinds)}")
    return "\n".join(lines)


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f} s"


def describe_batch(batch: Batch) -> str:
    """A batch's summary; the time and rate are the server's (CreatedAt to FinishedAt) once it ended."""
    lines = [f"{batch.Status.value}  {batch.BatchId}  {batch.SourcePrefix}"]
    counts = (
        f"  {batch.Total} images: {batch.Succeeded} succeeded, {batch.Failed} failed, "
        f"{batch.Cancelled} cancelled, {batch.Pending} pending"
    )
    if batch.FinishedAt:
        seconds = (_instant(batch.FinishedAt) - _instant(batch.CreatedAt)).total_seconds()
        counts += f" in {_duration(seconds)}"
        if seconds > 0 and batch.done:
            counts += f" ({batch.done / seconds:.1f} images/s)"
    lines.append(counts)
    if batch.ManifestURI:
        lines.append(f"  manifest: {batch.ManifestURI}")
    return "\n".join(lines)


def jobs_table(jobs: Iterable[Job]) -> Table:
    table = Table("RequestId", "Status", "Source", "Ratios", "Created", "Result", box=None, pad_edge=False)
    for job in jobs:
        if job.Code:
            result = job.Code
        elif job.Croppings is not None:
            result = f"{len(job.Croppings)} crops"
        else:
            result = ""
        table.add_row(
            job.RequestId,
            job.Status.value,
            job.SourceURI,
            ",".join(job.AspectRatios),
            job.CreatedAt.replace("T", " ").rstrip("Z")[:19],
            result,
        )
    return table
