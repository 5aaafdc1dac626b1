"""The blocking client, :class:`CropqClient` (httpx). :class:`~cropq_client.AsyncCropqClient` is the
same client for asyncio."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx

from cropq_client import _calls
from cropq_client._calls import LONG_POLL_SECONDS, Call, RenderArg, UploadData
from cropq_client.errors import ConnectionFailed, InvalidArgument, WaitTimeout, error_from_response
from cropq_client.models import Batch, Job, JobPage, JobStatus, Project
from cropq_client.version import USER_AGENT


class CropqClient:
    """A cropq API client, signed in with one access key (``Authorization: Bearer id:secret``).

    Use it as a context manager (or call :meth:`close`) so its connections are released. Every error
    answer raises an :class:`~cropq_client.errors.ApiError`; an unreachable server raises
    :class:`~cropq_client.errors.ConnectionFailed`."""

    def __init__(
        self,
        base_url: str,
        access_key_id: str,
        access_key_secret: str,
        *,
        timeout: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._long_poll = LONG_POLL_SECONDS
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {access_key_id}:{access_key_secret}",
                "User-Agent": USER_AGENT,
            },
        )

    def __enter__(self) -> CropqClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        """The answer's JSON (None for an empty body); an error answer raises."""
        timeout = httpx.Timeout(self._timeout, read=max(self._timeout, call.read_timeout or 0))
        try:
            r = self._http.request(
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

    def submit(
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
        """Queue a crop job for an ``oss://``/``s3://`` object of the project or an http(s) URL; its
        RequestId. ``aspect_ratios`` defaults to the server's ``["auto"]``."""
        fields = _calls.job_fields(aspect_ratios, inclusion_hints, render, callback_url, user_data)
        return _calls.request_id_of(
            self._send(_calls.submit_call(project, source_uri, fields, idempotency_key))
        )

    def submit_file(
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
        """Upload the image itself (bytes, or a file's path) and queue its crop job; the RequestId. The
        file name (default: the path's name) becomes ``{Stem}`` in a Render target."""
        fields = _calls.job_fields(aspect_ratios, inclusion_hints, render, callback_url, user_data)
        call = _calls.submit_file_call(project, data, file_name, fields, idempotency_key)
        return _calls.request_id_of(self._send(call))

    def get(self, project: str, request_id: str, wait: float = 0) -> Job:
        """The job; with ``wait`` the server holds the answer up to that many seconds until it ends."""
        return Job.model_validate(self._send(_calls.get_call(project, request_id, wait)))

    def wait(
        self,
        project: str,
        request_id: str,
        timeout: float | None = 300,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Long-poll until the job ends and return it. ``on_progress`` gets every state read (the
        finished one included). Raises :class:`~cropq_client.errors.WaitTimeout` after ``timeout`` s
        (None waits for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(project, request_id)
        while True:
            if on_progress is not None:
                on_progress(job)
            if job.Status.finished:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                assert timeout is not None
                raise WaitTimeout(_calls.timed_out("job", request_id, timeout, job.Status), job)
            job = self._poll(
                project, request_id, self._long_poll if left is None else min(self._long_poll, left)
            )

    def _poll(self, project: str, request_id: str, wait: float) -> Job:
        if self._long_poll > 0:
            try:
                return self.get(project, request_id, wait=wait)
            except InvalidArgument:
                # The server caps ?wait= lower than this client's long-poll (CROPQ_MAX_WAIT_SECONDS).
                self._long_poll = 0
        time.sleep(min(1.0, wait))
        return self.get(project, request_id)

    def list_jobs_page(
        self,
        project: str,
        status: JobStatus | str | None = None,
        batch_id: str | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> JobPage:
        """One page of the project's jobs, newest first; pass its ``NextToken`` for the next one."""
        return _calls.page_of(
            self._send(_calls.list_call(project, status, batch_id, max_results, next_token))
        )

    def list_jobs(
        self,
        project: str,
        status: JobStatus | str | None = None,
        batch_id: str | None = None,
        max_results: int | None = None,
        *,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """Every job of the project (optionally of one status or batch), newest first, page after page
        (``max_results`` jobs a page); at most ``limit`` jobs when given."""
        token: str | None = None
        seen = 0
        while limit is None or seen < limit:
            page = self.list_jobs_page(project, status, batch_id, max_results, token)
            for job in page.Jobs[: None if limit is None else limit - seen]:
                seen += 1
                yield job
            if not page.NextToken:
                return
            token = page.NextToken

    def cancel(self, project: str, request_id: str) -> Job:
        """Cancel a queued or running job; the job as it is then (409 Conflict if it had already ended)."""
        answer = self._send(Call("POST", _calls.job_path(project, request_id) + ":cancel"))
        return _calls.job_or_none(answer) or self.get(project, request_id)

    def delete(self, project: str, request_id: str) -> None:
        """Remove a finished job's record (409 Conflict while it is queued or running)."""
        self._send(Call("DELETE", _calls.job_path(project, request_id)))

    # --- prefix batches ---

    def submit_batch(
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
        """Crop every object under ``source_prefix`` (``oss://bucket/prefix/``) whose name ends with one of
        ``suffixes``; the batch as it is just after it was accepted."""
        fields = _calls.job_fields(aspect_ratios, inclusion_hints, render, callback_url, user_data)
        call = _calls.batch_call(project, source_prefix, suffixes, manifest_uri, fields, idempotency_key)
        answer = self._send(call)
        return _calls.batch_or_none(answer) or self.get_batch(project, _calls.batch_id_of(answer))

    def get_batch(self, project: str, batch_id: str) -> Batch:
        return Batch.model_validate(self._send(Call("GET", _calls.batch_path(project, batch_id))))

    def cancel_batch(self, project: str, batch_id: str) -> Batch:
        """Stop a batch: its queued jobs never run; jobs that already ended stay as they are."""
        answer = self._send(Call("POST", _calls.batch_path(project, batch_id) + ":cancel"))
        return _calls.batch_or_none(answer) or self.get_batch(project, batch_id)

    def wait_batch(
        self,
        project: str,
        batch_id: str,
        timeout: float | None = None,
        on_progress: Callable[[Batch], None] | None = None,
        *,
        poll_interval: float = 1.0,
    ) -> Batch:
        """Read the batch every ``poll_interval`` s until it ends and return it; ``on_progress`` gets
        every state read. Raises :class:`~cropq_client.errors.WaitTimeout` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.get_batch(project, batch_id)
            if on_progress is not None:
                on_progress(batch)
            if batch.Status.finished:
                return batch
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                assert timeout is not None
                raise WaitTimeout(_calls.timed_out("batch", batch_id, timeout, batch.Status), batch)
            time.sleep(poll_interval if left is None else min(poll_interval, left))

    # --- projects ---

    def put_project(
        self, project: str, buckets: Sequence[str], writable_buckets: Sequence[str] | None = None
    ) -> Project:
        """Create or update a project (an admin key's call); ``writable_buckets`` is kept when None."""
        return Project.model_validate(self._send(_calls.project_call(project, buckets, writable_buckets)))

    def get_project(self, project: str) -> Project:
        return Project.model_validate(self._send(Call("GET", _calls.project_path(project))))
