"""Redis Sentinel: the primary dies under load, a replica is promoted, and no accepted job is lost.

The stack (API and worker) knows the group only by its ``redis+sentinel://`` URL and accepts jobs with
``accept_durability=replica``: a 202 means the job record and its queue message reached a replica. The
primary's process group is killed right after a batch of 202s, before anything could replicate on its own
schedule; submissions go on through the failover.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done
from tests.integration.sentinel_support import SentinelGroup, start_sentinel_group
from worker import keys

pytestmark = pytest.mark.integration

ANSWER_DEADLINE = 6.0  # no submission may hang longer than this, failover or not
FAILOVER_BUDGET = 30.0  # kill -> first 202 again, at most
NEW_JOB_BUDGET = 15.0  # a job submitted after the failover finishes within this
ACCEPTED_AFTER = 3  # 202s to collect after the failover before stopping the load


def _try_submit(c: httpx.Client, project: str, uri: str) -> tuple[int, str | None]:
    """One submission during the failover: a 202 (its RequestId) or an IMM 503, quickly; nothing else."""
    try:
        r = c.post(f"/v1/projects/{project}/crop-jobs", json={"SourceURI": uri}, timeout=ANSWER_DEADLINE)
    except httpx.TimeoutException as e:
        raise AssertionError(
            f"a submission hung for more than {ANSWER_DEADLINE} s during the failover"
        ) from e
    if r.status_code == 202:
        return 202, str(r.json()["RequestId"])
    assert r.status_code == 503, f"unexpected answer during the failover: {r.status_code} {r.text}"
    body = r.json()
    assert body["Code"] == "ServiceUnavailable" and body["Message"] and body["RequestId"], body
    return 503, None


def _record(group: SentinelGroup, port: int, rid: str) -> dict[str, Any]:
    with group.node(port) as node:
        raw = node.get(keys.job(rid))
    assert raw is not None, f"job {rid} is not on node {port}"
    record: dict[str, Any] = json.loads(raw)
    return record


def test_a_primary_failover_loses_no_accepted_job(make_stack: Any, tmp_path: Path) -> None:
    group = start_sentinel_group(tmp_path / "sentinel", replicas=2)
    stack: Stack | None = None
    try:
        stack = make_stack(workers=1, concurrency=2, redis_url=group.url, accept_durability="replica")
        project, bucket = stack.project()
        uri = stack.put(bucket, "a.jpg", jpeg(480, 360))
        with stack.http() as c:
            accepted = [submit(c, project, {"SourceURI": uri}) for _ in range(4)]  # the worker takes these
            old = group.primary_port()
            batch = [submit(c, project, {"SourceURI": uri}) for _ in range(4)]
            group.nodes[old].signal_group(signal.SIGKILL)
            killed = time.monotonic()
            accepted += batch

            answers: Counter[int] = Counter()
            since_failover: list[str] = []
            first_accept: float | None = None
            slowest = 0.0
            while len(since_failover) < ACCEPTED_AFTER:
                assert time.monotonic() - killed < FAILOVER_BUDGET, (
                    f"not {ACCEPTED_AFTER} jobs accepted {FAILOVER_BUDGET} s after the kill: {dict(answers)}"
                )
                sent = time.monotonic()
                code, rid = _try_submit(c, project, uri)
                slowest = max(slowest, time.monotonic() - sent)
                answers[code] += 1
                if rid is not None:
                    first_accept = first_accept or time.monotonic() - killed
                    since_failover.append(rid)
                else:
                    time.sleep(0.1)
            accepted += since_failover

            new = group.primary_port()
            assert new != old and new in group.nodes, f"no replica was promoted: {new}"
            finished = {rid: wait_done(c, project, rid, timeout=60) for rid in accepted}
            lost = {rid: job["Status"] for rid, job in finished.items() if job["Status"] != "Succeeded"}
            assert not lost, f"accepted jobs that did not succeed after the failover: {lost}"

            started = time.monotonic()
            rid = submit(c, project, {"SourceURI": uri})
            job = wait_done(c, project, rid, timeout=NEW_JOB_BUDGET)
            new_job_seconds = time.monotonic() - started
            assert job["Status"] == "Succeeded", job

        # The API and the worker found the promoted node through the sentinels: the records of the jobs
        # accepted after the failover were created and finished there, and the old primary is gone.
        assert not group.nodes[old].alive()
        for rid in [*since_failover, job["RequestId"]]:
            assert _record(group, new, rid)["Status"] == "Succeeded"
        # ... and every 202 it gave since then waited for a replica of it (WAIT), as accept_durability says.
        with group.node(new) as node:
            waits = node.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
        assert waits >= len(since_failover) + 1, f"{waits} WAIT calls on the promoted node"
        print(
            f"sentinel failover: kill -> first 202 in {first_accept:.2f} s; answers meanwhile"
            f" {dict(answers)}, slowest {slowest:.2f} s; {len(accepted)} accepted jobs all succeeded;"
            f" a new job finished in"
            f" {new_job_seconds:.2f} s"
        )
    finally:
        if stack is not None:
            stack.stop()
        group.stop()
