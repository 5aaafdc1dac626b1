"""In-memory collaborators of ``run_crop_job``: a job store with run counters, a source, an engine, a renderer
and a callback queue that record what they were asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.contracts import Cropping, CropTaskMessage, Job, JobStatus, RenderedOutput, RenderSpec
from worker.crop_job import CropDeps
from worker.engine.types import CropResult, CropSuggestion, Detected, Rect
from worker.jobstore import JobNotFound
from worker.tracing import NO_TRACING, Tracer

RID = "5D3B7A4E-0000-4000-8000-00000000C0DE"
MSG = CropTaskMessage(RequestId=RID, ProjectName="p", Bucket="b", Key="k.jpg", AspectRatios=["1:1"])
RESULT = CropResult(
    width=40,
    height=30,
    croppings=[CropSuggestion("1:1", Rect(5, 0, 30, 30), 0.9)],
    matched_hints=[],
    detections=[Detected("face", "face", Rect(10, 5, 8, 8), 0.8)],
)


def make_job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "RequestId": RID,
        "ProjectName": "p",
        "Status": JobStatus.QUEUED,
        "SourceURI": "oss://b/k.jpg",
        "AspectRatios": ["1:1"],
        "CallbackURL": "https://example.test/hook",
        "CreatedAt": "2026-01-01T00:00:00.000Z",
    }
    return Job(**{**base, **fields})


class FakeStore:
    """The job store's run bookkeeping: started and ended runs per job, the callback-queued mark."""

    def __init__(self, *jobs: Job, started: int = 0, ended: int = 0) -> None:
        self.jobs = {j.RequestId: j for j in jobs}
        self.started = started
        self.ended = ended
        self.queued_callbacks: set[str] = set()
        self.writes: list[Job] = []
        self.before_get: Callable[[], None] = lambda: None

    def get(self, request_id: str) -> Job:
        self.before_get()
        if request_id not in self.jobs:
            raise JobNotFound(request_id)
        return self.jobs[request_id]

    def update(self, request_id: str, change: Callable[[Job], Job | None]) -> Job:
        if request_id not in self.jobs:
            raise JobNotFound(request_id)
        new = change(self.jobs[request_id])
        if new is not None:
            self.jobs[request_id] = new
            self.writes.append(new)
        return self.jobs[request_id]

    def start_run(self, request_id: str) -> tuple[int, int]:
        self.started += 1
        return self.started, self.ended

    def end_run(self, request_id: str) -> None:
        self.ended += 1

    def callback_queued(self, request_id: str) -> bool:
        return request_id in self.queued_callbacks

    def mark_callback_queued(self, request_id: str) -> None:
        self.queued_callbacks.add(request_id)

    @property
    def job(self) -> Job:
        return self.jobs[RID]


@dataclass
class Calls:
    """What the run asked of its collaborators, in order."""

    log: list[str] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    ended: list[tuple[JobStatus, float | None]] = field(default_factory=list)


def fake_render(
    data: bytes, msg: CropTaskMessage, spec: RenderSpec, croppings: list[Cropping]
) -> list[Cropping]:
    output = RenderedOutput(URI="oss://thumbs/x.jpg", Width=30, Height=30, Format="jpeg", Bytes=3, ETag="e")
    return [c.model_copy(update={"Output": output}) for c in croppings]


def make_deps(
    store: FakeStore,
    calls: Calls,
    *,
    fetch: Callable[[CropTaskMessage], bytes] | None = None,
    engine: Callable[[bytes, CropTaskMessage], CropResult] | None = None,
    render: Callable[[bytes, CropTaskMessage, RenderSpec, list[Cropping]], list[Cropping]] = fake_render,
    now: float = 1_000_000.0,
    tracer: Tracer = NO_TRACING,
) -> CropDeps:
    def default_fetch(msg: CropTaskMessage) -> bytes:
        calls.log.append("fetch")
        return b"image"

    def default_engine(data: bytes, msg: CropTaskMessage) -> CropResult:
        calls.log.append("engine")
        assert data == b"image"
        return RESULT

    def send_callback(rid: str) -> None:
        calls.log.append("callback")
        calls.callbacks.append(rid)

    def job_ended(job: Job, seconds: float | None) -> None:
        calls.log.append("ended")
        calls.ended.append((job.Status, seconds))

    ticks = iter(range(100))
    return CropDeps(
        store=store,
        fetch=fetch or default_fetch,
        engine=engine or default_engine,
        render=render,
        send_callback=send_callback,
        job_ended=job_ended,
        batch_job_ended=lambda job: calls.log.append(f"batch:{job.BatchId}"),
        clock=lambda: now,
        timer=lambda: float(next(ticks)),
        tracer=tracer,
    )
