"""Request limits before parsing, and no 5xx from any input: real requests against a real API process."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import ADMIN_KEY, Stack

pytestmark = pytest.mark.integration

MB = 1024 * 1024
CAP = 1 * MB  # the default CROPQ_MAX_BODY_BYTES


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=0)
    return s


@pytest.fixture(scope="module")
def project(stack: Stack) -> Iterator[tuple[str, str]]:
    yield stack.project()


def _port(stack: Stack) -> int:
    return int(stack.url.rsplit(":", 1)[1])


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_request(port: int, head: bytes, body: Iterable[bytes], timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``head`` then the body pieces until the server answers (it may answer before the body is
    sent, which is the point); returns (status, whole response)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(head)
        sock.settimeout(0.2)
        for piece in body:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is already there: stop sending
            try:
                sock.sendall(piece)
            except TimeoutError:
                break  # the server stopped reading
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(timeout)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 "), data[:200]
        return int(data[9:12]), data
    finally:
        sock.close()


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return 1 << 62


def _body_of(response: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.partition(b"\r\n\r\n")[2])
    return body


def _imm_error(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}, body
    assert body["Code"] == code, body


def test_unauthenticated_48_mb_body_is_refused_at_once_without_memory(stack: Stack) -> None:
    pid = stack.api.pid
    before = rss_kb(pid)
    size = 48 * MB
    head = (
        f"POST /v1/projects/x/crop-jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    piece = b"[" + b"1," * (MB // 2 - 1) + b"1"
    t0 = time.monotonic()
    status, response = raw_request(_port(stack), head, (piece for _ in range(48)))
    elapsed = time.monotonic() - t0
    grown_mb = (rss_kb(pid) - before) / 1024
    print(f"48 MB body: {status} in {elapsed * 1000:.0f} ms, API RSS grew {grown_mb:.1f} MB")
    assert status == 413
    _imm_error(_body_of(response), "RequestEntityTooLarge")
    assert b"connection: close" in response.lower()
    assert elapsed < 3.0
    assert grown_mb < 50


def test_a_40_mb_header_is_refused_without_memory(stack: Stack) -> None:
    """The request head is the server's to bound (h11, 16 kB): the app's body cap never sees it."""
    pid = stack.api.pid
    before = rss_kb(pid)
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
    piece = b"a" * MB
    t0 = time.monotonic()
    try:
        status, _ = raw_request(_port(stack), head, (piece for _ in range(40)))
        outcome = str(status)
    except (ConnectionResetError, BrokenPipeError):
        # The server answered 400 and closed while bytes were still in flight: the kernel then resets
        # the connection and the answer may be lost. Refused either way; what matters is that it stopped.
        outcome = "reset"
    elapsed = time.monotonic() - t0
    grown_mb = (rss_kb(pid) - before) / 1024
    print(f"40 MB header: {outcome} in {elapsed * 1000:.0f} ms, API RSS grew {grown_mb:.1f} MB")
    assert outcome in ("400", "431", "reset")
    assert elapsed < 3.0
    assert grown_mb < 20
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200  # and it still serves


def test_chunked_body_over_the_cap_is_refused_as_it_streams(stack: Stack) -> None:
    pid = stack.api.pid
    before = rss_kb(pid)
    head = (
        b"POST /v1/projects/x/crop-jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * (256 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    t0 = time.monotonic()
    status, response = raw_request(_port(stack), head, (chunk for _ in range(200)))  # 50 MB offered
    elapsed = time.monotonic() - t0
    grown_mb = (rss_kb(pid) - before) / 1024
    print(f"chunked 50 MB body: {status} in {elapsed * 1000:.0f} ms, API RSS grew {grown_mb:.1f} MB")
    assert status == 413, response[:300]
    _imm_error(_body_of(response), "RequestEntityTooLarge")
    assert elapsed < 3.0
    assert grown_mb < 50


def test_authenticated_body_over_the_cap_gets_413_and_one_under_it_is_read(
    stack: Stack, project: tuple[str, str]
) -> None:
    name, bucket = project
    with stack.http() as c:
        big = c.post(
            f"/v1/projects/{name}/crop-jobs",
            content=json.dumps({"SourceURI": f"oss://{bucket}/a.jpg", "UserData": "x" * (CAP + 10)}),
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413, big.text
        _imm_error(big.json(), "RequestEntityTooLarge")
        assert big.json()["RequestId"] == big.headers["x-acs-request-id"]
        # The biggest ordinary request, a 100-job batch with long fields, fits well under the cap.
        job = {
            "SourceURI": f"oss://{bucket}/" + "k" * 900,
            "AspectRatios": ["1:1", "4:3", "3:4", "16:9", "9:16"],
            "InclusionHints": ["face"],
            "UserData": "u" * 2048,
            "CallbackURL": "https://example.com/" + "c" * 2000,
        }
        batch = c.post(f"/v1/projects/{name}/crop-jobs:batch", json={"Jobs": [job] * 100})
        assert batch.status_code == 202, batch.text
        assert len(batch.json()["Jobs"]) == 100


def _post_ascii_json(c: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    """JSON with \\u escapes, so lone surrogates (which no UTF-8 encoder writes) reach the server."""
    return c.post(url, content=json.dumps(body), headers={"content-type": "application/json"})


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("field", ["AspectRatios", "InclusionHints", "CredentialConfig"])
def test_deep_json_in_string_parameters_is_400(stack: Stack, project: tuple[str, str], field: str) -> None:
    name, bucket = project
    with stack.http() as c:
        for doc in (_deep(100_000), '{"a":' * 50 + "1" + "}" * 50):
            r = c.post(
                f"/v1/projects/{name}/crop-jobs", json={"SourceURI": f"oss://{bucket}/a.jpg", field: doc}
            )
            assert r.status_code == 400, r.text
            _imm_error(r.json(), "InvalidArgument")
            assert field in r.json()["Message"]


def test_deep_json_bodies_are_400(stack: Stack, project: tuple[str, str]) -> None:
    name, bucket = project
    with stack.http() as c:
        for content in (
            _deep(100_000),
            json.dumps({"SourceURI": f"oss://{bucket}/a.jpg", "CredentialConfig": {}})[:-1]
            + ', "X": '
            + _deep(100_000)
            + "}",
        ):
            r = c.post(
                f"/v1/projects/{name}/crop-jobs",
                content=content,
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 400, r.text
            _imm_error(r.json(), "InvalidArgument")
        nested = {
            "SourceURI": f"oss://{bucket}/a.jpg",
            "CredentialConfig": json.loads('{"a":' * 40 + "1" + "}" * 40),
        }
        r = c.post(f"/v1/projects/{name}/crop-jobs", json=nested)
        assert r.status_code == 400 and "CredentialConfig" in r.json()["Message"], r.text


def test_overlong_fields_are_400(stack: Stack, project: tuple[str, str]) -> None:
    name, bucket = project
    base = {"SourceURI": f"oss://{bucket}/a.jpg"}
    cases: list[dict[str, Any]] = [
        {"SourceURI": f"oss://{bucket}/" + "k" * 300_000},
        {"SourceURI": f"oss://{bucket}/" + "é" * 540},  # 1,080 bytes of key: past S3's 1,024
        {**base, "InclusionHints": ["h" * 65]},
        {**base, "InclusionHints": json.dumps(["h" * 65])},
        {**base, "UserData": "u" * 2049},
        {**base, "CallbackURL": "https://example.com/" + "c" * 2100},
        {**base, "IdempotencyKey": "i" * 129},
        {**base, "AspectRatios": ["1" * 5000 + ":1"]},
        {**base, "AspectRatios": json.dumps(["1" * 5000 + ":1"])},
        {**base, "AspectRatios": json.dumps(["1:1"]) + " " * 2000},
        {**base, "CredentialConfig": json.dumps({"k": "v" * 9000})},
    ]
    with stack.http() as c:
        for body in cases:
            r = c.post(f"/v1/projects/{name}/crop-jobs", json=body)
            assert r.status_code == 400, (str(body)[:120], r.text)
            _imm_error(r.json(), "InvalidArgument")
            assert len(r.text) < 2000  # the refusal does not echo the input back
        r = c.post(f"/v1/projects/{name}/crop-jobs", json=base, headers={"Idempotency-Key": "i" * 129})
        assert r.status_code == 400, r.text
        for path in (f"/v1/projects/{'p' * 129}", f"/v1/projects/{name}/crop-jobs/{'R' * 65}"):
            r = c.get(path)
            assert r.status_code == 400, (path, r.text)
            _imm_error(r.json(), "InvalidArgument")


def test_malformed_input_never_gets_a_5xx(stack: Stack, project: tuple[str, str]) -> None:
    name, bucket = project
    good = {"SourceURI": f"oss://{bucket}/a.jpg"}
    jobs = f"/v1/projects/{name}/crop-jobs"
    with stack.http() as c:
        checks: list[httpx.Response] = [
            c.get(f"{jobs}/X", params={"wait": "abc"}),
            c.get(f"{jobs}/X", params={"wait": "nan"}),
            c.get(f"{jobs}/X", params={"wait": "1e999"}),
            c.get(f"{jobs}/X", params={"wait": "-1"}),
            c.post(jobs, content=b'{"SourceURI": ', headers={"content-type": "application/json"}),
            c.post(jobs, content=b"\xff\xfe\x00{", headers={"content-type": "application/json"}),
            c.post(jobs, json={**good, "AspectRatios": 7}),
            c.post(jobs, json={**good, "InclusionHints": {"a": 1}}),
            c.post(jobs, json={**good, "UserData": ["x"]}),
            c.post(jobs, json={"SourceURI": f"oss://{bucket}/a\x00.jpg"}),
            _post_ascii_json(c, jobs, {"SourceURI": f"oss://{bucket}/a\ud800.jpg"}),
            _post_ascii_json(c, jobs, {**good, "UserData": "\udfff"}),
            _post_ascii_json(c, jobs, {**good, "\ud800": 1}),
            _post_ascii_json(c, jobs, {**good, "IdempotencyKey": "\ud800"}),
            c.post(f"{jobs}:batch", json={"Jobs": [good] * 101}),
            c.post(f"{jobs}:batch", json={"Jobs": "x"}),
            c.put(f"/v1/projects/{name}", json={"Buckets": ["B" * 70]}),
            c.put(f"/v1/projects/{name}", json={"Buckets": "x"}),
        ]
        for r in checks:
            assert r.status_code == 400, (r.request.url, r.text)
            _imm_error(r.json(), "InvalidArgument")
        # The RPC face (a form body) with non-UTF-8 bytes, NUL bytes, huge numbers and deep JSON.
        rpc = {"Action": "DetectImageCropping", "Version": "2020-09-30", "ProjectName": name}
        for extra in (
            b"SourceURI=oss%3A%2F%2F" + bucket.encode() + b"%2F%FF%FE.jpg",
            b"SourceURI=oss%3A%2F%2F" + bucket.encode() + b"%2Fa%00.jpg",
            b"SourceURI=oss%3A%2F%2F"
            + bucket.encode()
            + b"%2Fa.jpg&AspectRatios=%5B%22"
            + b"1" * 5000
            + b"%3A1%22%5D",
            b"SourceURI=oss%3A%2F%2F" + bucket.encode() + b"%2Fa.jpg&InclusionHints=" + b"%5B" * 100_000,
            b"SourceURI=oss%3A%2F%2F" + bucket.encode() + b"%2Fa.jpg&CredentialConfig=%FF",
        ):
            form = str(httpx.QueryParams(rpc)).encode() + b"&" + extra
            r = c.post("/", content=form, headers={"content-type": "application/x-www-form-urlencoded"})
            assert r.status_code == 400, (extra[:80], r.text)
            assert r.json()["Code"].startswith("InvalidArgument"), r.text
        # A huge header is refused or ignored by the server, never a 5xx.
        r = c.get(f"/v1/projects/{name}", headers={"X-Pad": "p" * 60_000})
        assert r.status_code < 500, r.text


def test_a_batch_costs_one_rate_limit_unit_per_job(make_stack: Any) -> None:
    # A key of its own: the session's stacks share one Redis, so the shared admin key's bucket is not full.
    key: dict[str, Any] = {
        "AccessKeyId": f"LTAIbatch{uuid.uuid4().hex[:10]}",
        "AccessKeySecret": "batch-secret-0123456789",
        "Projects": ["*"],
    }
    limited: Stack = make_stack(
        workers=0, rate_limit_per_minute="50", access_keys=json.dumps([ADMIN_KEY, key])
    )
    name, bucket = limited.project()
    queue = limited.env["CROPQ_QUEUE_NAME"]
    job = {"SourceURI": f"oss://{bucket}/a.jpg"}
    r = redis.Redis.from_url(limited.redis_url)
    auth = {"Authorization": f"Bearer {key['AccessKeyId']}:{key['AccessKeySecret']}"}
    try:
        with httpx.Client(base_url=limited.url, headers=auth, timeout=60) as c:
            refused = c.post(f"/v1/projects/{name}/crop-jobs:batch", json={"Jobs": [job] * 60})
            assert refused.status_code == 429 and refused.json()["Code"] == "Throttling", refused.text
            assert int(refused.headers["x-acs-retry-after"]) > 0
            assert r.llen(queue) == 0  # nothing queued
            accepted = c.post(f"/v1/projects/{name}/crop-jobs:batch", json={"Jobs": [job] * 40})
            assert accepted.status_code == 202, accepted.text
            assert r.llen(queue) == 40
            # 1 (the refused batch's request) + 40 units spent: a 10-job batch no longer fits in the minute.
            again = c.post(f"/v1/projects/{name}/crop-jobs:batch", json={"Jobs": [job] * 10})
            assert again.status_code == 429, again.text
            assert r.llen(queue) == 40
    finally:
        r.close()
