"""A job whose message vanished (the gap kombu leaves between taking a message and recording it as unacked)
is found by the orphan sweeper and run."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from cropq_cli.localstack import wait_until
from tests.conftest import Stack, wait_for_workers_on
from tests.integration.helpers import jpeg, submit, wait_done

pytestmark = pytest.mark.integration


def test_a_job_whose_message_was_lost_is_sent_again_and_succeeds(make_stack: Any) -> None:
    stack: Stack = make_stack(workers=0, visibility_timeout="5")
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(500, 400))
    queue = stack.env["CROPQ_QUEUE_NAME"]
    r = redis.Redis.from_url(stack.redis_url)
    with stack.http() as c:
        rid = submit(c, project, {"SourceURI": uri})
        assert r.zscore(f"cropq:open:{queue}", rid) is not None
        assert r.delete(queue) == 1  # the message is gone; the job record still says Queued
        t0 = time.monotonic()
        stack.add_worker()
        wait_for_workers_on(stack, 1)
        job = wait_done(c, project, rid, timeout=90)
        found_after = time.monotonic() - t0
    assert job["Status"] == "Succeeded", job
    assert "orphaned_job_sent_again" in stack.workers[0].log_path.read_text()
    # Finished jobs leave the index (the worker removes it just after storing the end the poll saw).
    wait_until(lambda: r.zscore(f"cropq:open:{queue}", rid) is None, 5, "the open-job index entry to go")
    # 2 x 5 s visibility + 5 s margin after its last sign of life, confirmed on a second sweep 2 s later.
    assert found_after < 40, found_after
    print(f"orphan found and finished {found_after:.1f} s after its worker started")
