from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from worker.webhooks.ssrf import (
    BLOCKED_NETWORKS,
    GLOBAL_EXCEPTIONS,
    IPAddress,
    IPNetwork,
    PinnedTransport,
    ResolveFailed,
    Resolver,
    SsrfRefused,
    check_url,
    is_allowed,
    parse_cidrs,
)

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.32.0.1",  # just above 172.16/12
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # mapped public v4
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]

REFUSED = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",  # documentation
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",  # benchmarking
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::",
    "::1",
    "::127.0.0.1",  # deprecated IPv4-compatible
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001::1",  # Teredo
    "2001:db8::1",
    "fc00::1",
    "fd12:3456::1",  # ULA
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "100::1",
]


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_are_allowed(addr: str) -> None:
    assert is_allowed(ip_address(addr))


@pytest.mark.parametrize("addr", REFUSED)
def test_non_public_addresses_are_refused(addr: str) -> None:
    assert not is_allowed(ip_address(addr))


@pytest.mark.parametrize(
    ("addr", "cidrs", "allowed"),
    [
        ("127.0.0.1", ["127.0.0.0/8"], True),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], True),  # allow-list applies to the unwrapped address
        ("10.1.2.3", ["10.1.0.0/16"], True),
        ("10.2.0.1", ["10.1.0.0/16"], False),
        ("fd00::5", ["fd00::/64"], True),
        ("169.254.169.254", ["10.0.0.0/8"], False),
    ],
)
def test_allow_list(addr: str, cidrs: list[str], allowed: bool) -> None:
    assert is_allowed(ip_address(addr), parse_cidrs(cidrs)) is allowed


def _addresses_in(networks: tuple[IPNetwork, ...]) -> st.SearchStrategy[IPAddress]:
    def in_net(i: int) -> st.SearchStrategy[IPAddress]:
        net = networks[i]
        lo, hi = int(net.network_address), int(net.broadcast_address)
        cls = IPv4Address if net.version == 4 else IPv6Address
        return st.integers(lo, hi).map(cls)

    return st.integers(0, len(networks) - 1).flatmap(in_net)


def _in_global_exception(ip: IPAddress) -> bool:
    return any(ip in net for net in GLOBAL_EXCEPTIONS)


def _addresses_in_blocked_networks() -> st.SearchStrategy[IPAddress]:
    """Addresses of the blocked networks, less the anycast blocks inside them that IANA's registries
    mark globally reachable (``GLOBAL_EXCEPTIONS``, checked on their own below)."""
    return _addresses_in(BLOCKED_NETWORKS).filter(lambda ip: not _in_global_exception(ip))


def _wrapped(ip: IPAddress) -> list[IPAddress]:
    if isinstance(ip, IPv4Address):  # the IPv6 spellings that reach the same IPv4 host
        return [ip, IPv6Address(f"::ffff:{ip}"), IPv6Address((0x64FF9B << 96) | int(ip))]
    return [ip]


@given(_addresses_in_blocked_networks())
def test_every_address_of_a_blocked_network_is_refused(ip: IPAddress) -> None:
    for form in _wrapped(ip):
        assert not is_allowed(form), form


@given(_addresses_in(GLOBAL_EXCEPTIONS))
def test_the_registries_globally_reachable_blocks_are_allowed(ip: IPAddress) -> None:
    assert is_allowed(ip), ip


@given(st.integers(0, 2**32 - 1).map(IPv4Address))
def test_any_ipv4_is_refused_exactly_when_its_mapped_form_is(ip: IPv4Address) -> None:
    assert is_allowed(ip) == is_allowed(IPv6Address(f"::ffff:{ip}"))


def fixed(*addrs: str) -> tuple[list[str], Resolver]:
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        return [ip_address(a) for a in addrs]

    return calls, resolve


@pytest.mark.parametrize(
    ("url", "addrs"),
    [
        ("ftp://hook.example/x", ["8.8.8.8"]),  # scheme
        ("file:///etc/passwd", ["8.8.8.8"]),
        ("http://hook.example/", ["127.0.0.1"]),
        ("http://hook.example/", ["8.8.8.8", "10.0.0.1"]),  # every address must pass
        ("http://hook.example/", []),
    ],
)
def test_check_url_refuses(url: str, addrs: list[str]) -> None:
    _, resolve = fixed(*addrs)
    with pytest.raises(SsrfRefused):
        check_url(httpx.URL(url), (), resolve)


def test_unresolvable_host_is_a_transient_failure_not_a_refusal() -> None:
    def fail(host: str, port: int) -> list[IPAddress]:
        raise OSError("Temporary failure in name resolution")

    with pytest.raises(ResolveFailed, match="cannot resolve") as caught:
        check_url(httpx.URL("https://nowhere.invalid/"), (), fail)
    assert not isinstance(caught.value, SsrfRefused)
    assert isinstance(caught.value, httpx.TransportError)  # handled like a refused connection


def test_an_invalid_host_name_is_refused_for_good() -> None:
    def bad_label(host: str, port: int) -> list[IPAddress]:
        raise UnicodeError("label too long")

    with pytest.raises(SsrfRefused, match="cannot resolve"):
        check_url(httpx.URL("https://hook.example/"), (), bad_label)


def test_a_stuck_resolver_costs_the_timeout_only() -> None:
    release = threading.Event()

    def hang(host: str, port: int) -> list[IPAddress]:
        release.wait(10)
        return [IPv4Address("8.8.8.8")]

    started = time.monotonic()
    try:
        with pytest.raises(ResolveFailed, match=r"took over 0\.2 s"):
            check_url(httpx.URL("https://slow.example/"), (), hang, resolve_timeout=0.2)
        assert time.monotonic() - started < 2.0
    finally:
        release.set()


def test_check_url_returns_first_address() -> None:
    _, resolve = fixed("8.8.4.4", "8.8.8.8")
    assert check_url(httpx.URL("https://hook.example/"), (), resolve) == IPv4Address("8.8.4.4")


# --- pinning: the checked address is the one dialled, with the original Host / SNI ---


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = self.headers.get("Host", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_transport_dials_the_checked_address_once(echo_server: ThreadingHTTPServer) -> None:
    port = echo_server.server_address[1]
    # A rebinding resolver: a second lookup would answer a forbidden address.
    answers = iter([[ip_address("127.0.0.1")], [ip_address("10.0.0.1")]])
    calls: list[str] = []

    def rebinding(host: str, p: int) -> list[IPAddress]:
        calls.append(host)
        return next(answers)

    transport = PinnedTransport(parse_cidrs(["127.0.0.0/8"]), resolver=rebinding)
    with httpx.Client(transport=transport) as client:
        response = client.get(f"http://hook.test:{port}/cb")
    assert response.status_code == 200
    assert response.text == f"hook.test:{port}"  # original Host header kept
    assert calls == ["hook.test"]


def test_transport_refuses_loopback_without_allow_list(echo_server: ThreadingHTTPServer) -> None:
    port = echo_server.server_address[1]
    with httpx.Client(transport=PinnedTransport()) as client, pytest.raises(SsrfRefused):
        client.get(f"http://127.0.0.1:{port}/")


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https_pins_ip_but_verifies_certificate_for_the_host_name(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "hook.test")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    _, resolve = fixed("127.0.0.1")
    try:
        transport = PinnedTransport(parse_cidrs(["127.0.0.0/8"]), resolver=resolve, verify=client_ctx)
        with httpx.Client(transport=transport) as client:
            assert client.get(f"https://hook.test:{port}/").text == f"hook.test:{port}"
        # The same pinned address under another name: the certificate does not match, so no connection.
        transport = PinnedTransport(parse_cidrs(["127.0.0.0/8"]), resolver=resolve, verify=client_ctx)
        with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
            client.get(f"https://other.test:{port}/")
    finally:
        server.shutdown()
        server.server_close()


def test_parse_cidrs_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_cidrs(["not-a-network"])
    assert parse_cidrs([" 10.0.0.1/8 "]) == (ip_network("10.0.0.0/8"),)
