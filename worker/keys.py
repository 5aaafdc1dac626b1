"""Every Redis key cropq uses, in one place (arq's constants.py habit)."""

from __future__ import annotations

PREFIX = "cropq"


def job(request_id: str) -> str:
    return f"{PREFIX}:job:{request_id}"


def job_attempts(request_id: str) -> str:
    """Bumped at the start of every run, before any work (a run that kills its worker still counts)."""
    return f"{PREFIX}:job:{request_id}:attempts"


def job_ended_runs(request_id: str) -> str:
    """Bumped when a run ends without its process dying (success, failure, retry, requeue): started runs
    minus ended ones are the runs that killed their worker, or were killed."""
    return f"{PREFIX}:job:{request_id}:ended"


def job_callback_queued(request_id: str) -> str:
    """Set once the job's callback task was sent, so a rerun of a finished job sends it only if missing."""
    return f"{PREFIX}:job:{request_id}:callback-queued"


def open_jobs(queue: str) -> str:
    """Sorted set of the jobs of ``queue`` not finished yet, scored by their last sign of life (accepted, or
    a lease renewed by the worker holding them): the orphan sweeper's index."""
    return f"{PREFIX}:open:{queue}"


def job_resent(request_id: str) -> str:
    """How many times the orphan sweeper sent the job again (it gives the job up after a few)."""
    return f"{PREFIX}:job:{request_id}:resent"


def orphan_sweep_lock(queue: str) -> str:
    return f"{PREFIX}:open:{queue}:sweeping"


def job_done_channel(request_id: str) -> str:
    """Pub/sub channel a finished job is announced on (wakes long-polls)."""
    return f"{PREFIX}:done:{request_id}"


def project_jobs(project: str) -> str:
    """Sorted set of a project's RequestIds scored by creation time (ms): the job listing's index."""
    return f"{PREFIX}:project:{project}:jobs"


def batch(batch_id: str) -> str:
    """A prefix batch's record: a hash of its request, counters and cursors (worker/batches.py)."""
    return f"{PREFIX}:batch:{batch_id}"


def batch_jobs(batch_id: str) -> str:
    """Sorted set of a batch's RequestIds scored by creation time (ms)."""
    return f"{PREFIX}:batch:{batch_id}:jobs"


def idempotency(project: str, key: str) -> str:
    return f"{PREFIX}:idem:{project}:{key}"


def project(name: str) -> str:
    return f"{PREFIX}:project:{name}"


PROJECTS_INDEX = f"{PREFIX}:projects"


def access_key(key_id: str) -> str:
    return f"{PREFIX}:ak:{key_id}"


ACCESS_KEYS_INDEX = f"{PREFIX}:aks"


def nonce(key_id: str, nonce_value: str) -> str:
    return f"imm:nonce:{key_id}:{nonce_value}"


def rate_limit(key_id: str) -> str:
    """Token bucket of an access key (api.auth.ratelimit)."""
    return f"{PREFIX}:rl:{key_id}"


def auth_failures(kind: str, value: str) -> str:
    """Failed-authentication bucket per client address (``addr``) or claimed AccessKeyId (``key``)."""
    return f"{PREFIX}:authfail:{kind}:{value}"


def auth_failed_pair(key_id: str, address: str) -> str:
    """Marks that ``address`` failed to authenticate as ``key_id`` within the last minute."""
    return f"{PREFIX}:authfail:pair:{key_id}:{address}"


WORKER_HEARTBEATS = f"{PREFIX}:workers"

STATS = f"{PREFIX}:stats"  # hash of service-wide counters (worker.stats)
