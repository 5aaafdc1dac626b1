"""The asyncio client, :class:`AsyncCropqClient`: :class:`~cropq_client.CropqClient` method for method,
each awaited; progress callbacks may be plain functions or coroutine functions."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx

from cropq_client import _calls
from cropq_client._calls import LONG_POLL_SECONDS, Call, RenderArg, UploadData
from cropq_client.errors import ConnectionFailed, InvalidArgument, WaitTimeout, error_from_response
from cropq_client.models import Batch, Job, JobPage, JobStatus, Project
from cropq_client.version import USER_AGENT

T = TypeVar("T")
Progress = Callable[[T], None] | Callable[[T], Awaitable[None]]


async def _notify(on_progress: Progress[T] | None, state: T) -> None:
    if on_progress is not None:
        result = on_progress(state)
        if inspect.isawaitable(result):
            await result


class AsyncCropqClient:
    """A cropq API client for asyncio, signed in with one access key. Use ``async with`` (or await
    :meth:`aclose`) so its connections are released. Errors as :class:`~cropq_client.CropqClient`."""

    def __init__(
        self,
        base_url: str,
        access_key_id: str,
        access_key_secret: str,
        *,
        timeout: float = 60,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._long_poll = LONG_POLL_SECONDS
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {access_key_id}:{access_key_secret}",
                "User-Agent": USER_AGENT,
            },
        )

    async def __aenter__(self) -> AsyncCropqClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        timeout = httpx.Timeout(self._timeout, read=max(self._timeout, call.read_timeout or 0))
        try:
            r = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                files=call.files,
                headers=call.headers,
                timeout=timeout,
            )
        except httpx.TransportError as e:
            raise ConnectionFailed(f"cannot reach {self.base_url}: {e or type(e).__name__}") from e
        if r.is_error:
            raise error_from_response(r)
        return r.json() if r.content else None

    # --- jobs ---

    async def submit(
        self,
        project: str,
        source_uri: str,
        aspect_ratios: Sequence[str] | None = None,
        inclusion_hints: Sequence[str] | None = None,
        *,
        render: RenderArg = None,
        callback_url: str | None = None,
        user_data: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        fields = _calls.job_fields(aspect_ratios, inclusion_hints, render, callback_url, user_data)
        answer = await self._send(_calls.submit_call(project, source_uri, fields, idempotency_key))
        return _calls.request_id_of(answer)

    async def submit_file(
        self,
        project: str,
        data: UploadData,
        file_name: str | None = None,
        aspect_ratios: Sequence[str] | None = None,
        inclusion_hints: Sequence[str] | None = None,
        *,
        render: RenderArg = None,
        callback_url: str | None = None,
        user_data: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        fields = _calls.job_fields(aspect_ratios, inclusion_hints, render, callback_url, user_data)
        # A path is read in a thread: a large file must not stall the event loop.
        call = await asyncio.to_thread(
            _calls.submit_file_call, project, data, file_name, fields, idempotency_key
        )
        return _calls.request_id_of(await self._send(call))

    async def get(self, project: str, request_id: str, wait: float = 0) -> Job:
        return Job.model_validate(await self._send(_calls.get_call(project, request_id, wait)))

    async def wait(
        self,
        project: str,
        request_id: str,
        timeout: float | None = 300,
        on_progress: Progress[Job] | None = None,
    ) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.get(project, request_id)
        while True:
            await _notify(on_progress, job)
            if job.Status.finished:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                assert timeout is not None
                raise WaitTimeout(_calls.timed_out("job", request_id, timeout, job.Status), job)
            wait = self._long_poll if left is None else min(self._long_poll, left)
            job = await self._poll(project, request_id, wait)

    async def _poll(self, project: str, request_id: str, wait: float) -> Job:
        if self._long_poll > 0:
            try:
                return await self.get(project, request_id, wait=wait)
            except InvalidArgument:
                self._long_poll = 0  # the server caps ?wait= lower than this client's long-poll
        await asyncio.sleep(min(1.0, wait))
        return await self.get(project, request_id)

    async def list_jobs_page(
        self,
        project: str,
        status: JobStatus | str | None = None,
        batch_id: str | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> JobPage:
        call = _calls.list_call(project, status, batch_id, max_results, next_token)
        return _calls.page_of(await self._send(call))

    async def list_jobs(
        self,
        project: str,
        status: JobStatus | str | None = None,
        batch_id: str | None = None,
        max_results: int | None = None,
        *,
        limit: int | None = None,
    ) -> AsyncIterator[Job]:
        token: str | None = None
        seen = 0
        while limit is None or seen < limit:
            page = await self.list_jobs_page(project, status, batch_id, max_results, token)
            for job in page.Jobs[: None if limit is None else limit - seen]:
                seen += 1
                yield job
            if not page.NextToken:
                return
            token = page.NextToken

    async def cancel(self, project: str, request_id: str) -> Job:
        answer = await self._send(Call("POST", _calls.job_path(project, request_id) + ":cancel"))
        return _calls.job_or_none(answer) or await self.get(project, request_id)

    async def delete(self, project: str, request_id: str) -> None:
        await self._send(Call("DELETE", _calls.job_path(project, request_id)))

    # --- prefix batches ---

    async def submit_batch(
        self,
        project: str,
        source_prefix: str,
        aspect_ratios: Sequence[str] | None = None,
        *,
        suffixes: Sequence[str] | None = None,
        inclusion_hints: Sequence[str] | None = None,
        render: RenderArg = None,
        manifest_uri: str | None = None,
        callback_url: str | None = None,
        user_data: str | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        fields = _calls.job_fields(aspect_ratios, inclusion_hints, render, callback_url, user_data)
        call = _calls.batch_call(project, source_prefix, suffixes, manifest_uri, fields, idempotency_key)
        answer = await self._send(call)
        return _calls.batch_or_none(answer) or await self.get_batch(project, _calls.batch_id_of(answer))

    async def get_batch(self, project: str, batch_id: str) -> Batch:
        return Batch.model_validate(await self._send(Call("GET", _calls.batch_path(project, batch_id))))

    async def cancel_batch(self, project: str, batch_id: str) -> Batch:
        answer = await self._send(Call("POST", _calls.batch_path(project, batch_id) + ":cancel"))
        return _calls.batch_or_none(answer) or await self.get_batch(project, batch_id)

    async def wait_batch(
        self,
        project: str,
        batch_id: str,
        timeout: float | None = None,
        on_progress: Progress[Batch] | None = None,
        *,
        poll_interval: float = 1.0,
    ) -> Batch:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = await self.get_batch(project, batch_id)
            await _notify(on_progress, batch)
            if batch.Status.finished:
                return batch
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                assert timeout is not None
                raise WaitTimeout(_calls.timed_out("batch", batch_id, timeout, batch.Status), batch)
            await asyncio.sleep(poll_interval if left is None else min(poll_interval, left))

    # --- projects ---

    async def put_project(
        self, project: str, buckets: Sequence[str], writable_buckets: Sequence[str] | None = None
    ) -> Project:
        return Project.model_validate(
            await self._send(_calls.project_call(project, buckets, writable_buckets))
        )

    async def get_project(self, project: str) -> Project:
        return Project.model_validate(await self._send(Call("GET", _calls.project_path(project))))
