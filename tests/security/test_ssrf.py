"""The callback SSRF guard, as a table: every block of IANA's IPv4 and IPv6 special-purpose address registries
(refused unless the registry marks it globally reachable), the IPv6 forms that carry an IPv4 address,
numeric host spellings, and DNS answers that mix public and private addresses.

The resolver is always injected: no DNS query leaves the machine, and nothing is dialled except the
loopback receiver of the end-to-end case at the bottom (which must stay unreached).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, ClassVar

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.helpers import jpeg, submit, wait_done
from worker.webhooks.delivery import deliver
from worker.webhooks.ssrf import IPAddress, SsrfRefused, check_url, is_allowed, literal_address


def no_dns(host: str, port: int) -> list[IPAddress]:
    raise AssertionError(f"the resolver must not be asked about {host}")


def answers(*addrs: str) -> Any:
    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ip_address(a) for a in addrs]

    return resolve


# (block, a representative address, globally reachable per the registry)
IPV4_REGISTRY = [
    ("0.0.0.0/8", "0.1.2.3", False),
    ("0.0.0.0/32", "0.0.0.0", False),
    ("10.0.0.0/8", "10.20.30.40", False),
    ("100.64.0.0/10", "100.100.100.100", False),
    ("127.0.0.0/8", "127.0.0.1", False),
    ("169.254.0.0/16", "169.254.169.254", False),
    ("172.16.0.0/12", "172.20.0.1", False),
    ("192.0.0.0/24", "192.0.0.100", False),
    ("192.0.0.0/29", "192.0.0.1", False),
    ("192.0.0.8/32", "192.0.0.8", False),
    ("192.0.0.9/32", "192.0.0.9", True),
    ("192.0.0.10/32", "192.0.0.10", True),
    ("192.0.0.170/32", "192.0.0.170", False),
    ("192.0.0.171/32", "192.0.0.171", False),
    ("192.0.2.0/24", "192.0.2.1", False),
    ("192.31.196.0/24", "192.31.196.1", True),
    ("192.52.193.0/24", "192.52.193.1", True),
    ("192.88.99.0/24", "192.88.99.1", False),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "192.168.1.1", False),
    ("192.175.48.0/24", "192.175.48.1", True),
    ("198.18.0.0/15", "198.19.0.1", False),
    ("198.51.100.0/24", "198.51.100.1", False),
    ("203.0.113.0/24", "203.0.113.1", False),
    ("240.0.0.0/4", "250.1.2.3", False),
    ("255.255.255.255/32", "255.255.255.255", False),
    ("multicast 224.0.0.0/4", "239.1.2.3", False),
]

IPV6_REGISTRY = [
    ("::1/128", "::1", False),
    ("::/128", "::", False),
    ("::ffff:0:0/96", "::ffff:10.0.0.1", False),  # mapped: judged as the IPv4 it carries
    ("64:ff9b::/96", "64:ff9b::808:808", True),  # NAT64 of 8.8.8.8: judged as 8.8.8.8
    ("64:ff9b:1::/48", "64:ff9b:1::808:808", False),
    ("100::/64", "100::1", False),
    ("100:0:0:1::/64", "100:0:0:1::1", False),
    ("2001::/23", "2001:5::1", False),
    ("2001::/32 Teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
    ("2001:1::1/128", "2001:1::1", True),
    ("2001:1::2/128", "2001:1::2", True),
    ("2001:1::3/128", "2001:1::3", True),
    ("2001:2::/48", "2001:2::1", False),
    ("2001:3::/32", "2001:3::1", True),
    ("2001:4:112::/48", "2001:4:112::1", True),
    ("2001:10::/28", "2001:10::1", False),
    ("2001:20::/28", "2001:20::1", True),
    ("2001:30::/28", "2001:30::1", True),
    ("2001:db8::/32", "2001:db8::1", False),
    ("2002::/16 6to4", "2002:808:808::1", True),  # 6to4 of 8.8.8.8: judged as 8.8.8.8
    ("2620:4f:8000::/48", "2620:4f:8000::1", True),
    ("3fff::/20", "3fff::1", False),
    ("5f00::/16", "5f00::1", False),
    ("fc00::/7", "fd12:3456::1", False),
    ("fe80::/10", "fe80::1", False),
    ("fec0::/10 site-local", "fec0::1", False),
    ("ff00::/8 multicast", "ff02::1", False),
    ("outside 2000::/3", "4000::1", False),
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


@pytest.mark.parametrize(("block", "addr", "reachable"), IPV4_REGISTRY + IPV6_REGISTRY)
def test_special_purpose_registries(block: str, addr: str, reachable: bool) -> None:
    assert is_allowed(ip_address(addr)) is reachable, block
    url = httpx.URL(f"http://hook.example/{block}")
    if reachable:
        assert check_url(url, (), answers(addr)) == ip_address(addr)
    else:
        with pytest.raises(SsrfRefused):
            check_url(url, (), answers(addr))


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_pass(addr: str) -> None:
    assert check_url(httpx.URL("https://hook.example/"), (), answers(addr)) == ip_address(addr)


def _embeddings(v4: str) -> dict[str, str]:
    """Every IPv6 spelling of an IPv4 address that a host could route to it."""
    n = int(IPv4Address(v4))
    hi, lo = n >> 16, n & 0xFFFF
    return {
        "mapped": f"::ffff:{v4}",
        "mapped-hex": f"::ffff:{hi:x}:{lo:x}",
        "translated": f"::ffff:0:{hi:x}:{lo:x}",  # RFC 2765 ::ffff:0:0:0/96
        "compatible": f"::{v4}",
        "nat64": f"64:ff9b::{hi:x}:{lo:x}",
        "nat64-local": f"64:ff9b:1::{hi:x}:{lo:x}",
        "6to4": f"2002:{hi:x}:{lo:x}::1",
        "isatap": f"2001:4860::5efe:{hi:x}:{lo:x}",
        "isatap-u": f"2001:4860::200:5efe:{hi:x}:{lo:x}",
        # Teredo hides the client address (xor 0xffffffff); the whole of 2001::/32 is refused.
        "teredo": f"2001:0:4136:e378:8000:63bf:{hi ^ 0xFFFF:x}:{lo ^ 0xFFFF:x}",
    }


@pytest.mark.parametrize("v4", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "169.254.169.254", "100.64.1.1"])
@pytest.mark.parametrize("form", list(_embeddings("127.0.0.1")))
def test_ipv6_forms_of_private_addresses_are_refused(v4: str, form: str) -> None:
    v6 = _embeddings(v4)[form]
    assert not is_allowed(IPv6Address(v6)), v6
    with pytest.raises(SsrfRefused):
        check_url(httpx.URL(f"http://[{v6}]/"), (), no_dns)  # a literal: never resolved
    with pytest.raises(SsrfRefused):
        check_url(httpx.URL("http://hook.example/"), (), answers(v6))


@pytest.mark.parametrize("form", ["mapped", "mapped-hex", "translated", "nat64", "6to4"])
def test_ipv6_forms_of_a_public_address_pass(form: str) -> None:
    v6 = _embeddings("8.8.8.8")[form]
    assert is_allowed(IPv6Address(v6)), v6


def test_the_reported_ipv4_translated_loopback_is_refused() -> None:
    assert not is_allowed(IPv6Address("::ffff:0:7f00:1"))


@pytest.mark.parametrize(
    ("host", "means"),
    [
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hex
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),  # octal (httpx refuses this one as a URL already)
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # short forms
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("10.0x1.0377", "10.1.0.255"),
        ("127.0.0.1.", "127.0.0.1"),  # trailing dot
        ("0", "0.0.0.0"),
        ("3232235777", "192.168.1.1"),
        ("134744072", "8.8.8.8"),  # public, decimal
    ],
)
def test_numeric_hosts_mean_what_the_c_library_makes_of_them(host: str, means: str) -> None:
    assert literal_address(host) == IPv4Address(means)
    try:
        url = httpx.URL(f"http://{host}/")
    except httpx.InvalidURL:
        return  # refused before it is a URL at all
    if is_allowed(IPv4Address(means)):
        assert check_url(url, (), no_dns) == IPv4Address(means)
    else:
        with pytest.raises(SsrfRefused):
            check_url(url, (), no_dns)


@pytest.mark.parametrize(
    "host", ["hook.example", "1.2.3.4.5", "08.0.0.1", "0x", "1e3", "256.1", "4294967296"]
)
def test_names_and_impossible_numbers_are_not_literals(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize(
    "addrs",
    [
        ["8.8.8.8", "127.0.0.1"],
        ["10.0.0.1", "8.8.8.8"],
        ["2606:4700:4700::1111", "::1"],
        ["8.8.8.8", "::ffff:0:7f00:1"],
        ["1.1.1.1", "64:ff9b::a9fe:a9fe"],  # NAT64 of the metadata address
    ],
)
def test_a_dns_answer_mixing_public_and_private_refuses_the_whole_name(addrs: list[str]) -> None:
    with pytest.raises(SsrfRefused, match="non-public"):
        check_url(httpx.URL("https://hook.example/"), (), answers(*addrs))
    public_only = [a for a in addrs if is_allowed(ip_address(a))]
    assert check_url(httpx.URL("https://hook.example/"), (), answers(*public_only)) == ip_address(
        public_only[0]
    )


def test_a_mixed_answer_is_never_dialled() -> None:
    out = deliver("http://hook.example/", b"{}", {}, 2, [], resolver=answers("8.8.8.8", "127.0.0.1"))
    assert out.refused and out.final and not out.delivered and out.error and "127.0.0.1" in out.error


# --- end to end: numeric and IPv6 spellings of loopback against the real stack, with no allow-list ---


class Counter(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_receiver() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    Counter.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_stack_refuses_spelled_out_loopback_callbacks(make_stack: Any, loopback_receiver: int) -> None:
    stack: Stack = make_stack(workers=1, webhook_allowed_cidrs="[]")
    project, bucket = stack.project()
    uri = stack.put(bucket, "a.jpg", jpeg(320, 240))
    port = loopback_receiver
    hosts = [
        "2130706433",
        "0x7f000001",
        "127.1",
        "[::ffff:0:7f00:1]",
        "[::ffff:127.0.0.1]",
        "[64:ff9b::7f00:1]",
    ]
    with stack.http() as c:
        rids = [submit(c, project, {"SourceURI": uri, "CallbackURL": f"http://{h}:{port}/x"}) for h in hosts]
        for rid, host in zip(rids, hosts, strict=True):
            assert wait_done(c, project, rid)["Status"] == "Succeeded"
            deadline = time.monotonic() + 30
            while (cb := c.get(f"/v1/projects/{project}/crop-jobs/{rid}").json().get("Callback", {})).get(
                "Status"
            ) != "Failed" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert cb["Status"] == "Failed" and "refused" in cb["LastError"], (host, cb)
    assert Counter.hits == []
