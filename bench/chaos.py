"""Chaos: jobs submitted before and during repeated faults; every accepted job must end, once.

    python bench/chaos.py [--jobs 120] [--fault-seconds 45] [--json figures.json]

Starts its own stack in a temporary folder on loopback (durable Valkey with an append-only file,
SeaweedFS, the API, 2 crop workers with their callback workers) and a callback receiver, submits photo
JPEGs (every third job with a CallbackURL, each submission with its own IdempotencyKey and retried on
503) before and during these faults, timed from the start of the fault window:

- every --kill-every s a random crop-worker child is SIGKILLed (the whole window);
- at --redis-at s Valkey is stopped (SIGTERM, or SIGKILL with --redis-crash) for --redis-down s and
  started again on the same port and data; meanwhile a prober sends a submit or a get every 0.2 s;
- at --s3-at s SeaweedFS is stopped for --s3-down s and started again (same data, port, credentials);
- the callback receiver answers 500 for --callback-500 s, then 410 for --callback-410 s, then 200.

After each fault ends a probe job is submitted; its recovery time is fault end -> probe Succeeded. Then
it waits (--wait-minutes) for every accepted job and prints: accepted, succeeded, failed by Code, lost,
duplicated results ("job_finished" logged more than once for a RequestId; fenced stale runs,
"stale_run_discarded", apart), callbacks per webhook-id, recovery times and the prober's figures.

Exit code 0 only with zero lost, zero failed, no 5xx answer other than 503, and every answer during the
Redis outage a 503 with an IMM body within 6 s.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hostile_bench import machine
from bench.stack_fixture import (
    BenchStack,
    job_records,
    log_events,
    percentile,
    photo_jpegs,
    say,
    start_stack,
)

PROJECT, BUCKET = "chaos", "chaos"
RATIO_SETS = [["1:1"], ["16:9", "4:3"], ["1:1", "16:9", "4:3", "3:4", "9:16"]]
IMM_FIELDS = {"RequestId", "HostId", "Code", "Message", "Recommend"}
OUTAGE_ANSWER_LIMIT = 6.0
PROBE_EVERY = 0.2


class Clock:
    """Seconds since the fault window opened (negative before)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


@dataclass
class Answer:
    at: float
    source: str
    method: str
    status: int | None  # None: no answer (connection refused, timeout)
    code: str | None
    elapsed: float
    imm_body: bool


class ApiLog:
    """Every API answer the script got, for the 5xx and outage checks."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    def request(
        self, source: str, client: httpx.Client, method: str, path: str, **kw: Any
    ) -> httpx.Response | None:
        """``client.request(...)``, recorded; None when no answer came (refused, timed out)."""
        start = time.monotonic()
        try:
            r: httpx.Response | None = client.request(method, path, **kw)
        except httpx.HTTPError:
            r = None
        elapsed = time.monotonic() - start
        body: Any = None
        if r is not None:
            try:
                body = r.json()
            except ValueError:
                body = None
        imm = isinstance(body, dict) and body.keys() >= IMM_FIELDS
        code = body.get("Code") if isinstance(body, dict) and r is not None and r.status_code >= 400 else None
        with self._lock:
            self.answers.append(
                Answer(self.clock.now(), source, method, r.status_code if r else None, code, elapsed, imm)
            )
        return r


class CallbackReceiver:
    """Answers 500, then 410, then 200 (by time since the fault window opened); keeps every POST."""

    def __init__(self, clock: Clock, fail_until: float, gone_until: float) -> None:
        self.posts: list[tuple[float, str, int]] = []  # (at, webhook-id, status answered)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = clock.now()
                status = 500 if at < fail_until else 410 if at < gone_until else 200
                outer.posts.append((at, self.headers.get("webhook-id", ""), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/chaos"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Fault:
    name: str
    started: float
    ended: float | None = None
    recovered: float | None = None  # fault end -> probe job Succeeded, seconds
    probe: str | None = None
    note: str = ""


@dataclass
class Run:
    """Everything the threads record; read after they have all ended."""

    accepted: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    not_accepted: int = 0
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rid: str, probe: bool = False) -> None:
        with self.lock:
            self.accepted.append(rid)
            if probe:
                self.probes.append(rid)


class Chaos:
    def __init__(
        self, args: argparse.Namespace, stack: BenchStack, uris: list[str], callback_url: str, clock: Clock
    ) -> None:
        self.args = args
        self.stack = stack
        self.uris = uris
        self.callback_url = callback_url
        self.clock = clock  # shared with the callback receiver: its phases follow the fault window
        self.api = ApiLog(self.clock)
        self.run = Run()
        self.rng = random.Random(args.seed)
        self.window_over = threading.Event()
        self.redis_down = threading.Event()
        self.deadline = 0.0  # monotonic; set once the fault window closes
        self.all_ended_at: float | None = None

    # ------------------------------------------------------------ jobs
    def body(self, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "SourceURI": self.uris[n % len(self.uris)],
            "AspectRatios": RATIO_SETS[n % len(RATIO_SETS)],
            "IdempotencyKey": uuid.uuid4().hex,
        }
        if n % 3 == 0:
            body["CallbackURL"] = f"{self.callback_url}?job={n}"
        return body

    def plain_body(self, n: int) -> dict[str, Any]:
        """A job without a callback (probes: their figure is the job's own end)."""
        body = self.body(n)
        body.pop("CallbackURL", None)
        return body

    def submit(self, client: httpx.Client, body: dict[str, Any], source: str, give_up: float) -> str | None:
        """POST until accepted (202), retrying no answer and 503 with the same IdempotencyKey."""
        path = f"/v1/projects/{PROJECT}/crop-jobs"
        while time.monotonic() < give_up:
            r = self.api.request(source, client, "POST", path, json=body)
            if r is not None and r.status_code == 202:
                return str(r.json()["RequestId"])
            if r is not None and r.status_code != 503:
                say(f"submission refused: {r.status_code} {r.text[:200]}")
                return None
            time.sleep(0.3)
        return None

    def submit_load(self, n: int) -> None:
        with self.stack.http(timeout=10) as client:
            rid = self.submit(client, self.body(n), "load", time.monotonic() + 120)
        if rid is None:
            with self.run.lock:
                self.run.not_accepted += 1
        else:
            self.run.add(rid)

    def load(self, first: int) -> None:
        """The jobs of the fault window, evenly spread over it, each in a thread of its own pool."""
        count = self.args.jobs - first
        gap = self.args.fault_seconds / max(count, 1)
        with ThreadPoolExecutor(max_workers=16) as pool:
            for i in range(count):
                time.sleep(max(0.0, i * gap - self.clock.now()))
                pool.submit(self.submit_load, first + i)

    # ------------------------------------------------------------ probes
    def wait_succeeded(self, client: httpx.Client, rid: str, give_up: float) -> bool:
        path = f"/v1/projects/{PROJECT}/crop-jobs/{rid}"
        while time.monotonic() < give_up:
            r = self.api.request("probe", client, "GET", path, params={"wait": 5})
            if r is None or r.status_code != 200:
                time.sleep(0.2)
                continue
            status = r.json().get("Status")
            if status in ("Succeeded", "Failed"):
                return bool(status == "Succeeded")
        return False

    def probe(self, fault: Fault) -> None:
        """Fault end -> a new job Succeeded: the fault's recovery time."""
        ended = self.clock.now()
        fault.ended = ended
        give_up = time.monotonic() + self.args.wait_minutes * 60
        with self.stack.http(timeout=10) as client:
            rid = self.submit(client, self.plain_body(1), "probe", give_up)
            if rid is None:
                fault.note = "probe never accepted"
                return
            self.run.add(rid, probe=True)
            fault.probe = rid
            if self.wait_succeeded(client, rid, give_up):
                fault.recovered = self.clock.now() - ended
            else:
                fault.note = "probe did not succeed"

    def start_probe(self, fault: Fault, threads: list[threading.Thread]) -> None:
        with self.run.lock:
            self.run.faults.append(fault)
        t = threading.Thread(target=self.probe, args=(fault,), daemon=True)
        t.start()
        threads.append(t)

    # ------------------------------------------------------------ faults
    def sleep_until(self, at: float) -> None:
        time.sleep(max(0.0, at - self.clock.now()))

    def kill_children(self, probes: list[threading.Thread]) -> None:
        n = 0
        while True:
            n += 1
            if n * self.args.kill_every >= self.args.fault_seconds:
                return
            self.sleep_until(n * self.args.kill_every)
            started = self.clock.now()
            victim = self.stack.kill_random_worker_child(self.rng)
            if victim is None:
                continue
            self.start_probe(Fault("worker child SIGKILL", started, note=f"pid {victim}"), probes)

    def redis_outage(self, probes: list[threading.Thread]) -> None:
        self.sleep_until(self.args.redis_at)
        started = self.clock.now()
        self.stack.stop_valkey(crash=self.args.redis_crash)
        self.redis_down.set()
        prober = threading.Thread(target=self.outage_prober, daemon=True)
        prober.start()
        self.sleep_until(self.args.redis_at + self.args.redis_down)
        self.redis_down.clear()
        prober.join()  # every outage answer is in before Valkey comes back
        self.stack.start_valkey()
        how = "SIGKILL" if self.args.redis_crash else "SIGTERM"
        down = self.clock.now() - started
        self.start_probe(Fault(f"Valkey restart ({how})", started, note=f"down {down:.1f} s"), probes)

    def outage_prober(self) -> None:
        """A submit or a get every 0.2 s while Valkey is down, each in its own thread (a slow answer does
        not thin the probes out); returns once every answer is in. Each must be a quick 503 + IMM body."""
        with self.stack.http(timeout=10) as client, ThreadPoolExecutor(max_workers=64) as pool:
            n = 0
            while self.redis_down.is_set():
                pool.submit(self.outage_request, client, n)
                n += 1
                time.sleep(PROBE_EVERY)

    def outage_request(self, client: httpx.Client, n: int) -> None:
        if n % 2 == 0:
            path = f"/v1/projects/{PROJECT}/crop-jobs"
            r = self.api.request("outage", client, "POST", path, json=self.plain_body(n))
            if r is not None and r.status_code == 202:
                self.run.add(str(r.json()["RequestId"]))  # accepted after all: it counts
        else:
            rid = self.run.accepted[0] if self.run.accepted else "missing"
            self.api.request("outage", client, "GET", f"/v1/projects/{PROJECT}/crop-jobs/{rid}")

    def storage_outage(self, probes: list[threading.Thread]) -> None:
        self.sleep_until(self.args.s3_at)
        started = self.clock.now()
        self.stack.stop_seaweedfs()
        self.sleep_until(self.args.s3_at + self.args.s3_down)
        restart = time.monotonic()
        self.stack.start_seaweedfs()
        fault = Fault("SeaweedFS stopped", started, note=f"start-up {time.monotonic() - restart:.1f} s")
        self.start_probe(fault, probes)

    # ------------------------------------------------------------ the run
    def warm_up(self) -> None:
        """A few jobs per worker child first (each child loads its models on its first job), so the jobs
        submitted before the faults run at full speed; they are setup and are not counted."""
        with self.stack.http(timeout=30) as client:
            count = 2 * self.args.workers * self.args.concurrency
            rids = [
                self.submit(client, self.plain_body(n), "warm-up", time.monotonic() + 60)
                for n in range(count)
            ]
            give_up = time.monotonic() + 180
            for rid in rids:
                if rid is None or not self.wait_succeeded(client, rid, give_up):
                    raise RuntimeError("the warm-up jobs did not succeed: the stack is not working")

    def execute(self) -> None:
        self.warm_up()
        with self.stack.http(timeout=30) as client:
            for n in range(self.args.jobs_before):
                rid = self.submit(client, self.body(n), "load", time.monotonic() + 60)
                if rid is None:
                    self.run.not_accepted += 1
                else:
                    self.run.add(rid)
        say(f"{len(self.run.accepted)} jobs submitted before the faults; fault window opens")
        self.clock.start()
        probes: list[threading.Thread] = []
        actors = [
            threading.Thread(target=self.load, args=(self.args.jobs_before,), daemon=True),
            threading.Thread(target=self.kill_children, args=(probes,), daemon=True),
            threading.Thread(target=self.redis_outage, args=(probes,), daemon=True),
            threading.Thread(target=self.storage_outage, args=(probes,), daemon=True),
        ]
        for t in actors:
            t.start()
        for t in actors:
            t.join()
        self.start_probe(Fault("all faults over", self.clock.now()), probes)
        say(f"fault window closed at {self.clock.now():.1f} s; waiting for every accepted job")
        self.deadline = time.monotonic() + self.args.wait_minutes * 60
        for t in probes:
            t.join(max(0.0, self.deadline - time.monotonic()))
        self.wait_all()

    def wait_all(self) -> None:
        """Until every accepted job ended and every callback settled (or the deadline); notes when the
        last job ended."""
        client = self.stack.redis()
        next_note = time.monotonic() + 15
        try:
            while time.monotonic() < self.deadline:
                try:
                    records = job_records(client, list(self.run.accepted))
                except Exception:
                    time.sleep(1)
                    continue
                ended = sum(1 for r in records.values() if _finished(r))
                if ended == len(records) and self.all_ended_at is None:
                    self.all_ended_at = self.clock.now()
                if all(_settled(r) for r in records.values()):
                    return
                if self.all_ended_at is not None and exited_processes(self.stack):
                    return  # a callback worker is gone: the callbacks left will not settle
                if time.monotonic() >= next_note:
                    say(f"  {self.clock.now():.0f} s: {ended} of {len(records)} jobs ended")
                    next_note += 15
                time.sleep(0.5)
        finally:
            client.close()


def _finished(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("Status") in ("Succeeded", "Failed")


def _settled(record: dict[str, Any] | None) -> bool:
    if not _finished(record):
        return False
    assert record is not None
    callback = record.get("Callback")
    return not record.get("CallbackURL") or (
        isinstance(callback, dict) and callback.get("Status") in ("Delivered", "Failed")
    )


def figures(chaos: Chaos, receiver: CallbackReceiver) -> dict[str, Any]:
    run, api, args = chaos.run, chaos.api, chaos.args
    with chaos.stack.redis() as client:
        records = job_records(client, run.accepted)
    statuses = Counter(r["Status"] if r else "missing" for r in records.values())
    failed_codes = Counter(r.get("Code") for r in records.values() if r and r["Status"] == "Failed")
    lost = [rid for rid, r in records.items() if not _finished(r)]
    finished_events = log_events(chaos.stack.worker_logs(), "job_finished")
    per_job = Counter(e.get("request_id") for e in finished_events if e.get("request_id") in records)
    duplicated = sorted(rid for rid, n in per_job.items() if n > 1)
    stale = log_events(chaos.stack.worker_logs(), "stale_run_discarded")
    reruns = sum(1 for r in records.values() if r and int(r.get("Attempts", 0)) > 1)

    posts = Counter(wid for _, wid, _ in receiver.posts)
    delivered = Counter(wid for _, wid, status in receiver.posts if 200 <= status < 300)
    callback_jobs = [r for r in records.values() if r and r.get("CallbackURL")]
    callback_states = Counter((r.get("Callback") or {}).get("Status", "none") for r in callback_jobs)

    outage = [a for a in api.answers if a.source == "outage"]
    outage_ok = [a for a in outage if a.status == 503 and a.imm_body and a.elapsed <= OUTAGE_ANSWER_LIMIT]
    other_5xx = [a for a in api.answers if a.status is not None and a.status >= 500 and a.status != 503]
    kills = [f for f in run.faults if f.name.startswith("worker child")]
    kill_recoveries = [f.recovered for f in kills if f.recovered is not None]
    return {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "accepted": len(run.accepted),
        "probe_jobs": len(run.probes),
        "not_accepted": run.not_accepted,
        "succeeded": statuses.get("Succeeded", 0),
        "failed": sum(failed_codes.values()),
        "failed_by_code": dict(failed_codes),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "reruns": reruns,
        "all_ended_at": chaos.all_ended_at,
        "duplicated_results": len(duplicated),
        "duplicated_ids": duplicated[:20],
        "stale_runs_discarded": len(stale),
        "callback_jobs": len(callback_jobs),
        "callback_states": dict(callback_states),
        "callback_posts": sum(posts.values()),
        "callback_ids_posted": len(posts),
        "callback_max_posts_per_id": max(posts.values(), default=0),
        "duplicate_callbacks": sum(1 for n in delivered.values() if n > 1),
        "faults": [asdict(f) for f in run.faults],
        "kills": len(kills),
        "kill_recovery_p50": percentile(kill_recoveries, 50) if kill_recoveries else None,
        "kill_recovery_max": max(kill_recoveries, default=None),
        "outage_requests": len(outage),
        "outage_all_503_imm": bool(outage) and len(outage_ok) == len(outage),
        "outage_statuses": dict(Counter(str(a.status) for a in outage)),
        "outage_max_seconds": max((a.elapsed for a in outage), default=None),
        "other_5xx": len(other_5xx),
        "other_5xx_statuses": dict(Counter(str(a.status) for a in other_5xx)),
        "503_outside_outage": sum(1 for a in api.answers if a.source != "outage" and a.status == 503),
        "api_requests": len(api.answers),
        "callbacks_unsettled": sum(1 for r in callback_jobs if not _settled(r)),
        "exited_processes": exited_processes(chaos.stack),
    }


def exited_processes(stack: BenchStack) -> dict[str, str]:
    """The API, crop and callback workers that are no longer running, with their last critical log event
    (the faults restart Valkey and SeaweedFS themselves; everything else must ride them out)."""
    procs = [stack.api, *stack.workers, *(w.webhooks for w in stack.workers)]
    out = {}
    for proc in procs:
        if proc is None or proc.alive():
            continue
        out[proc.name] = last_critical(proc.log_path) or f"exit code {proc.proc.returncode}"
    return out


def last_critical(log: Path) -> str | None:
    """The last JSON log event at level critical (Celery's "Unrecoverable error: ...")."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        if '"critical"' in line:
            try:
                found = str(json.loads(line).get("event", ""))[:300]
            except ValueError:
                continue
    return found


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def report(f: dict[str, Any]) -> bool:
    ok = (
        f["lost"] == 0
        and f["failed"] == 0
        and f["not_accepted"] == 0
        and f["other_5xx"] == 0
        and f["outage_all_503_imm"]
        and (f["outage_max_seconds"] or 0) <= OUTAGE_ANSWER_LIMIT
        and f["callbacks_unsettled"] == 0
        and not f["exited_processes"]
    )
    say("")
    say("| figure | value |")
    say("|---|---|")
    say(f"| jobs accepted | {f['accepted']} ({f['probe_jobs']} of them recovery probes) |")
    say(f"| submissions never accepted | {f['not_accepted']} |")
    say(f"| succeeded | {f['succeeded']} |")
    codes = ", ".join(f"{k}: {v}" for k, v in f["failed_by_code"].items())
    say(f"| failed | {f['failed']}{f' ({codes})' if codes else ''} |")
    say(f"| lost (accepted, never finished or record missing) | {f['lost']} |")
    say(
        f"| last job ended at (fault window: 0 to {f['settings']['fault_seconds']:g} s) "
        f"| {_s(f['all_ended_at'])} |"
    )
    say(f"| jobs run more than once (Attempts > 1) | {f['reruns']} |")
    say(f"| duplicated results (job_finished > 1 per RequestId) | {f['duplicated_results']} |")
    say(f"| stale runs discarded (fenced) | {f['stale_runs_discarded']} |")
    states = ", ".join(f"{k}: {v}" for k, v in f["callback_states"].items())
    say(f"| jobs with a callback | {f['callback_jobs']} ({states}) |")
    say(
        f"| callback POSTs | {f['callback_posts']} to {f['callback_ids_posted']} webhook-ids, "
        f"at most {f['callback_max_posts_per_id']} per id |"
    )
    say(f"| duplicate callbacks (2xx deliveries per webhook-id > 1) | {f['duplicate_callbacks']} |")
    say(f"| callbacks neither Delivered nor Failed at the end | {f['callbacks_unsettled']} |")
    exited = "; ".join(f"{k}: {v}" for k, v in f["exited_processes"].items()) or "none"
    say(f"| API and worker processes that exited | {exited} |")
    say(
        f"| Redis outage: prober requests | {f['outage_requests']}, all 503 with an IMM body: "
        f"{'yes' if f['outage_all_503_imm'] else 'no'} ({f['outage_statuses']}), "
        f"slowest {_s(f['outage_max_seconds'])} |"
    )
    say(f"| 5xx other than 503 (whole run) | {f['other_5xx']} {f['other_5xx_statuses'] or ''} |")
    say(f"| 503 answers outside the prober (retried) | {f['503_outside_outage']} |")
    say(f"| API requests | {f['api_requests']} |")
    say("")
    say("| fault | started | ended | recovery (end -> probe job Succeeded) | note |")
    say("|---|---|---|---|---|")
    kills = [x for x in f["faults"] if x["name"].startswith("worker child")]
    for x in f["faults"]:
        if x in kills:
            continue
        say(f"| {x['name']} | {x['started']:.1f} s | {_s(x['ended'])} | {_s(x['recovered'])} | {x['note']} |")
    if kills:
        say(
            f"| worker child SIGKILL x{len(kills)} | {kills[0]['started']:.1f} s "
            f"| {kills[-1]['started']:.1f} s "
            f"| p50 {_s(f['kill_recovery_p50'])}, max {_s(f['kill_recovery_max'])} | every "
            f"{f['settings']['kill_every']:g} s |"
        )
    say("")
    say(
        f"verdict: {'PASS' if ok else 'FAIL'} "
        "(zero lost, zero failed, no 5xx but 503, outage answers 503 + IMM within 6 s, every callback "
        "settled, no process exited)"
    )
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=120, help="load jobs in all (probe jobs come on top)")
    ap.add_argument("--jobs-before", type=int, default=30, help="of them, submitted before the faults")
    ap.add_argument("--fault-seconds", type=float, default=45, help="length of the fault window")
    ap.add_argument("--kill-every", type=float, default=2, help="seconds between worker-child SIGKILLs")
    ap.add_argument("--redis-at", type=float, default=5, help="Valkey stops at this second of the window")
    ap.add_argument("--redis-down", type=float, default=5, help="seconds Valkey stays down")
    ap.add_argument("--redis-crash", action="store_true", help="SIGKILL Valkey instead of SIGTERM")
    ap.add_argument("--s3-at", type=float, default=15, help="SeaweedFS stops at this second of the window")
    ap.add_argument("--s3-down", type=float, default=15, help="seconds SeaweedFS stays down")
    ap.add_argument("--callback-500", type=float, default=15, help="receiver answers 500 until then")
    ap.add_argument("--callback-410", type=float, default=25, help="then 410 until then, then 200")
    ap.add_argument("--wait-minutes", type=float, default=4, help="bound on the wait for the jobs to end")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2, help="prefork children per crop worker")
    ap.add_argument("--images", type=int, default=12, help="distinct source images")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a CROPQ_ setting (repeatable)"
    )
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    args = ap.parse_args(argv)
    if args.redis_at + args.redis_down > args.fault_seconds or args.s3_at + args.s3_down > args.fault_seconds:
        ap.error("the Valkey and SeaweedFS outages must end inside the fault window")
    if not 0 <= args.jobs_before <= args.jobs:
        ap.error("--jobs-before must be between 0 and --jobs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say(machine())
    work = Path(tempfile.mkdtemp(prefix="cropq-chaos-"))
    settings = {
        "log_json": "true",
        "webhook_allowed_cidrs": '["127.0.0.0/8"]',
        "webhook_retry_schedule": "[1, 2, 4, 8, 15]",
        "webhook_timeout_seconds": "5",
        **dict(s.split("=", 1) for s in args.set),
    }
    images = photo_jpegs(args.images, seed=args.seed)
    say(f"stack in {work}: Valkey (append-only), SeaweedFS, API, {args.workers} x {args.concurrency} workers")
    stack = start_stack(work, workers=args.workers, concurrency=args.concurrency, durable=True, **settings)
    ok = False
    chaos: Chaos | None = None
    receiver: CallbackReceiver | None = None
    try:
        stack.project(PROJECT, BUCKET)
        uris = [stack.put(BUCKET, f"photo-{i:02d}.jpg", data) for i, data in enumerate(images)]
        clock = Clock()
        receiver = CallbackReceiver(clock, args.callback_500, args.callback_410)
        chaos = Chaos(args, stack, uris, receiver.url, clock)
        started = time.monotonic()
        chaos.execute()
        found = figures(chaos, receiver)
        found["seconds"] = round(time.monotonic() - started, 1)
        ok = report(found)
        say(
            f"run: {found['seconds']} s; logs in {work}"
            if args.keep or not ok
            else f"run: {found['seconds']} s"
        )
        if args.json:
            args.json.write_text(json.dumps(found, indent=2))
    finally:
        if receiver is not None:
            receiver.close()
        stack.stop()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
