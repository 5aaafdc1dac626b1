"""Fetching http(s) sources: the submit-time precheck as a table, and fetches from a loopback origin whose
every path answers as a test needs (statuses, content types, sizes, chunked and dripping bodies, redirects).

Host names resolve through a dict (:func:`table_resolver`): no query reaches a real resolver, and every
connection goes to loopback.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import Any

import pytest

from worker.http_source import (
    MAX_REDIRECTS,
    SourceFetchFailed,
    SourceRefused,
    fetch_source,
    precheck_source_url,
)
from worker.settings import Settings
from worker.storage import ObjectNotFound, ObjectTooLarge, StorageError, StorageUnavailable
from worker.webhooks.ssrf import IPAddress, Resolver

IMAGE = bytes(range(256)) * 64  # 16 kB standing in for an image: the fetch never decodes it
CAP = 100_000
LOOPBACK = ["127.0.0.0/8"]

Route = Callable[[BaseHTTPRequestHandler], None]


def source_settings(
    cidrs: list[str] | None = None, allow_http: bool = False, timeout: float = 10.0
) -> Settings:
    return Settings(
        source_allowed_cidrs=cidrs or [],
        source_allow_http=allow_http,
        source_timeout_seconds=timeout,
        source_user_agent="cropq-test-fetcher/7",
    )


def table_resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    """A resolver answering from ``table`` (unknown names fail like NXDOMAIN), recording each question."""

    def resolve(host: str, port: int) -> list[IPAddress]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ip_address(a) for a in table[host]]

    return resolve


def send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    if "Content-Length" not in (headers or {}):
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    return lambda handler: send(handler, status, body, headers)


def image(content_type: str | None = "image/png", body: bytes = IMAGE) -> Route:
    return answer(200, body, {"Content-Type": content_type} if content_type else {})


def redirect(location: str, status: int = 302) -> Route:
    return answer(status, headers={"Location": location})


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer (past a cap, a deadline, an unread error body) is expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Origin:
    """A threaded loopback web server: each path answers with its route; every request is recorded."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()  # frees the handlers that hold a response open
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                origin.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = origin.routes.get(self.path, answer(404))
                try:
                    route(self)
                except OSError:  # the client hung up (as it should, past a cap or a deadline)
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _QuietServer((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "img.test", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def shared_origin() -> Iterator[Origin]:
    origin = Origin()
    yield origin
    origin.close()


@pytest.fixture
def origin(shared_origin: Origin) -> Origin:
    shared_origin.routes = {"/img": image()}
    shared_origin.requests = []
    return shared_origin


RESOLVE = table_resolver({"img.test": ["127.0.0.1"]})


def fetch(url: str, settings: Settings | None = None, max_bytes: int = CAP) -> bytes:
    return fetch_source(url, settings or source_settings(LOOPBACK), max_bytes, RESOLVE)


# --- precheck: policy without DNS ---

PRECHECK = [
    # (url, settings, accepted)
    ("https://img.example/a.jpg", {}, True),
    ("https://img.example:8443/a.jpg?sig=abc#frag", {}, True),
    ("https://IMG.Example./a.jpg", {}, True),
    ("https://例子.测试/a.jpg", {}, True),  # IDNA: judged as its punycode
    ("http://img.example/a.jpg", {}, False),  # plain http: nobody allowed it
    ("http://img.example/a.jpg", {"allow_http": True}, True),
    ("http://img.example/a.jpg", {"cidrs": ["10.0.0.0/8"]}, True),  # the name may resolve into them
    ("ftp://img.example/a.jpg", {"allow_http": True}, False),
    ("file:///etc/passwd", {"allow_http": True}, False),
    ("gopher://img.example/", {}, False),
    ("data:image/png;base64,AAAA", {}, False),
    ("oss://bucket/a.jpg", {}, False),
    ("img.example/a.jpg", {}, False),
    ("https://user:pw@img.example/a.jpg", {}, False),
    ("https://user@img.example/a.jpg", {}, False),
    ("https://@img.example/a.jpg", {}, False),
    ("https://img.example@evil.example/a.jpg", {}, False),
    ("https:///a.jpg", {}, False),
    ("https://img example/a.jpg", {}, False),
    ("https://img.example:99999/a.jpg", {}, False),
    ("https://img.example:0/a.jpg", {}, False),
    ("https://img.example/a\n.jpg", {}, False),
    ("https://img.example/a\x00.jpg", {}, False),
    ("https://img.example/a\x7f.jpg", {}, False),
    ("https://img.example/a\x85.jpg", {}, False),  # C1 control
    ("https://img.example/\t", {}, False),
    # literal addresses: public ones pass, private ones only when listed
    ("https://8.8.8.8/a.jpg", {}, True),
    ("https://[2606:4700:4700::1111]/a.jpg", {}, True),
    ("https://127.0.0.1/a.jpg", {}, False),
    ("https://10.1.2.3/a.jpg", {}, False),
    ("https://169.254.169.254/latest/meta-data/", {}, False),
    ("https://192.168.1.1/", {}, False),
    ("https://[::1]/a.jpg", {}, False),
    ("https://[::ffff:127.0.0.1]/a.jpg", {}, False),
    ("https://[fd00::1]/a.jpg", {}, False),
    ("https://2130706433/a.jpg", {}, False),  # 127.0.0.1 spelt as one number
    ("https://0x7f.1/a.jpg", {}, False),
    ("https://127.0.0.1/a.jpg", {"cidrs": LOOPBACK}, True),
    ("http://127.0.0.1/a.jpg", {"cidrs": LOOPBACK}, True),  # plain http to a listed address
    ("https://[::ffff:127.0.0.1]/a.jpg", {"cidrs": LOOPBACK}, True),
    ("https://10.1.2.3/a.jpg", {"cidrs": LOOPBACK}, False),
    ("http://8.8.8.8/a.jpg", {"cidrs": LOOPBACK}, False),  # plain http to a public address
    ("http://8.8.8.8/a.jpg", {"allow_http": True}, True),
    ("http://127.0.0.1/a.jpg", {"allow_http": True}, False),  # allowing http opens no private address
    ("https://img.example/" + "a" * (2048 - len("https://img.example/")), {}, True),
    ("https://img.example/" + "a" * (2049 - len("https://img.example/")), {}, False),
]


@pytest.mark.parametrize(("url", "options", "accepted"), PRECHECK)
def test_precheck(url: str, options: dict[str, Any], accepted: bool) -> None:
    settings = source_settings(**options)
    if accepted:
        precheck_source_url(url, settings)
    else:
        with pytest.raises(SourceRefused) as refused:
            precheck_source_url(url, settings)
        assert refused.value.code == "InvalidArgument.SourceRefused"
        assert str(refused.value)


def test_precheck_messages_say_what_is_wrong() -> None:
    cases = {
        "http://img.example/": "http",
        "https://u:p@img.example/": "password",
        "https://10.0.0.1/": "CROPQ_SOURCE_ALLOWED_CIDRS",
        "https://img.example/" + "a" * 3000: "2048",
        "ftp://img.example/": "https://",
    }
    for url, words in cases.items():
        with pytest.raises(SourceRefused, match=words):
            precheck_source_url(url, source_settings())


def test_a_bad_allow_list_stops_the_process_at_start() -> None:
    with pytest.raises(ValueError, match="'not-a-network' is not a network"):
        source_settings(["not-a-network"])


def test_a_bad_allow_list_that_got_past_settings_is_a_refusal_not_a_crash() -> None:
    settings = Settings.model_construct(
        **{**Settings().model_dump(), "source_allowed_cidrs": ["not-a-network"]}
    )
    with pytest.raises(SourceRefused, match="CROPQ_SOURCE_ALLOWED_CIDRS"):
        precheck_source_url("https://img.example/", settings)


def test_error_codes() -> None:
    assert issubclass(SourceRefused, StorageError) and issubclass(SourceFetchFailed, StorageError)
    assert SourceRefused.code == "InvalidArgument.SourceRefused"
    assert SourceFetchFailed.code == "InvalidArgument.SourceUnreachable"


# --- fetching ---


def test_loopback_is_refused_by_default_and_fetched_once_listed(origin: Origin) -> None:
    url = origin.url("/img")
    with pytest.raises(SourceRefused):  # plain http: not allowed at all
        fetch(url, source_settings())
    with pytest.raises(SourceRefused, match="non-public"):  # http allowed, but loopback is not public
        fetch(url, source_settings(allow_http=True))
    with pytest.raises(SourceRefused):  # the literal address, too
        fetch(origin.url("/img", host="127.0.0.1"), source_settings(allow_http=True))
    assert origin.requests == []
    assert fetch(url, source_settings(LOOPBACK)) == IMAGE
    assert fetch(origin.url("/img", host="127.0.0.1"), source_settings(["127.0.0.1/32"])) == IMAGE
    assert origin.paths == ["/img", "/img"]


def test_user_agent_and_accept_are_sent_and_nothing_else_of_ours(origin: Origin) -> None:
    fetch(origin.url("/img"))
    (_, headers), *_ = origin.requests
    assert headers["user-agent"] == "cropq-test-fetcher/7"
    assert headers["accept"] == "image/*"
    assert headers["accept-encoding"] == "identity"
    assert headers["host"] == f"img.test:{origin.port}"  # the name, though the pinned address was dialled
    assert "authorization" not in headers and "cookie" not in headers


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, ObjectNotFound),
        (410, ObjectNotFound),
        (500, StorageUnavailable),
        (502, StorageUnavailable),
        (503, StorageUnavailable),
        (504, StorageUnavailable),
        (429, StorageUnavailable),
        (408, StorageUnavailable),
        (400, SourceFetchFailed),
        (401, SourceFetchFailed),
        (403, SourceFetchFailed),
        (451, SourceFetchFailed),
        (204, SourceFetchFailed),
        (206, SourceFetchFailed),
        (304, SourceFetchFailed),
        (300, SourceFetchFailed),
    ],
)
def test_statuses_map_to_storage_errors(origin: Origin, status: int, error: type[Exception]) -> None:
    origin.routes["/x"] = answer(status, b"nope" if status not in (204, 304) else b"")
    with pytest.raises(error, match=str(status)):
        fetch(origin.url("/x"))


@pytest.mark.parametrize(
    "content_type",
    ["image/jpeg", "image/webp; charset=binary", "application/octet-stream", "binary/octet-stream", None],
)
def test_image_and_generic_content_types_are_accepted(origin: Origin, content_type: str | None) -> None:
    origin.routes["/typed"] = image(content_type)
    assert fetch(origin.url("/typed")) == IMAGE


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/json", "video/mp4"])
def test_other_content_types_are_refused(origin: Origin, content_type: str) -> None:
    origin.routes["/page"] = image(content_type, b"<html>sign in</html>")
    with pytest.raises(SourceFetchFailed, match=content_type.split(";")[0]):
        fetch(origin.url("/page"))


def test_an_encoded_body_is_refused_rather_than_inflated(origin: Origin) -> None:
    origin.routes["/gz"] = answer(
        200, b"\x1f\x8b" + bytes(30), {"Content-Type": "image/png", "Content-Encoding": "gzip"}
    )
    with pytest.raises(SourceFetchFailed, match="gzip"):
        fetch(origin.url("/gz"))


def test_a_declared_length_over_the_cap_is_refused_before_the_body(origin: Origin) -> None:
    def announce_only(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(CAP + 1))
        handler.end_headers()
        handler.wfile.flush()
        origin.release.wait(10)  # the body never comes: reading it would run into the deadline instead

    origin.routes["/big"] = announce_only
    with pytest.raises(ObjectTooLarge, match=str(CAP + 1)):
        fetch(origin.url("/big"), source_settings(LOOPBACK, timeout=30))


def chunked(total: int, sent: list[int], done: threading.Event, chunk: int = 16_384) -> Route:
    def stream(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            while sent[0] < total:
                n = min(chunk, total - sent[0])
                handler.wfile.write(b"%x\r\n" % n + b"\xab" * n + b"\r\n")
                sent[0] += n
            handler.wfile.write(b"0\r\n\r\n")
        finally:
            done.set()

    return stream


def test_a_chunked_body_is_cut_past_the_cap(origin: Origin) -> None:
    sent, done = [0], threading.Event()
    total = 64 * 1024 * 1024  # far more than loopback socket buffers hold
    origin.routes["/endless"] = chunked(total, sent, done)
    with pytest.raises(ObjectTooLarge, match=str(CAP)):
        fetch(origin.url("/endless"))
    assert done.wait(10)  # the server's next write failed: the client had hung up
    assert sent[0] < total


def test_a_body_of_exactly_the_cap_is_whole(origin: Origin) -> None:
    sent, done = [0], threading.Event()
    origin.routes["/exact"] = chunked(CAP, sent, done, chunk=7_000)
    assert fetch(origin.url("/exact")) == b"\xab" * CAP


def drip(headers_too: bool, release: threading.Event) -> Route:
    """One byte every 0.1 s until the client hangs up (or the origin closes): of the whole answer, or of
    the body after prompt headers."""

    def slow(handler: BaseHTTPRequestHandler) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n"
        body = b"\xab" * 100
        if not headers_too:
            handler.wfile.write(head)
            head = b""
        for byte in head + body:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            if release.wait(0.1):
                return

    return slow


@pytest.mark.parametrize("headers_too", [True, False], ids=["headers", "body"])
def test_a_dripping_server_is_cut_off_at_the_deadline(origin: Origin, headers_too: bool) -> None:
    # Each byte comes well within any per-read timeout; only the one deadline over the exchange ends it.
    origin.routes["/drip"] = drip(headers_too, origin.release)
    with pytest.raises(StorageUnavailable, match="timed out"):
        fetch(origin.url("/drip"), source_settings(LOOPBACK, timeout=1.0))


def test_a_connection_cut_mid_body_is_transient(origin: Origin) -> None:
    def cut(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"\xab" * 10)
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True

    origin.routes["/cut"] = cut
    with pytest.raises(StorageUnavailable):
        fetch(origin.url("/cut"))


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StorageUnavailable, match="unreachable"):
        fetch(f"http://img.test:{port}/img")


def test_a_name_that_does_not_resolve_is_transient() -> None:
    with pytest.raises(StorageUnavailable, match="resolve"):
        fetch("http://nowhere.test/img")


def test_redirects_are_followed_up_to_the_limit(origin: Origin) -> None:
    for n in range(1, MAX_REDIRECTS + 2):
        origin.routes[f"/r{n}"] = redirect(f"/r{n - 1}", status=(301, 302, 303, 307, 308)[n % 5])
    origin.routes["/r0"] = image()
    assert fetch(origin.url(f"/r{MAX_REDIRECTS}")) == IMAGE
    assert origin.paths == [f"/r{n}" for n in range(MAX_REDIRECTS, -1, -1)]
    with pytest.raises(SourceFetchFailed, match="redirected more than"):
        fetch(origin.url(f"/r{MAX_REDIRECTS + 1}"))


def test_a_redirect_to_another_allowed_name_and_absolute_url(origin: Origin) -> None:
    resolve = table_resolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    origin.routes["/hop"] = redirect(origin.url("/img", host="b.test"))
    assert fetch_source(origin.url("/hop", host="a.test"), source_settings(LOOPBACK), CAP, resolve) == IMAGE
    assert origin.requests[1][1]["host"] == f"b.test:{origin.port}"


def test_a_redirect_without_location_fails(origin: Origin) -> None:
    origin.routes["/nowhere"] = answer(302)
    with pytest.raises(SourceFetchFailed, match="Location"):
        fetch(origin.url("/nowhere"))
