"""A finished job as a few lines a person reads (``cropq submit`` without ``--json``)."""

from __future__ import annotations

from worker.contracts import Job


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
