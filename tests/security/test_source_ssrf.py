"""SSRF through http(s) sources: a job's SourceURI is a URL of the submitter's choosing that the worker
fetches, so it must not reach anything a callback could not (private and loopback networks, cloud
metadata) by a redirect, a rebinding DNS answer, a mixed DNS answer, a proxy from the environment or a
fall back from https to plain http.

Only loopback is ever dialled: an autouse guard fails any connection elsewhere, and counts the ones made.
The "public" server of each case is 127.0.0.1 listed in ``source_allowed_cidrs`` (alone: 127.0.0.2 stays
private), with an "internal" server on 127.0.0.2 that must never see a request.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_http_source import (
    CAP,
    IMAGE,
    Origin,
    image,
    redirect,
    source_settings,
    table_resolver,
)
from tests.unit.webhooks.test_ssrf import _self_signed
from worker.http_source import SourceFetchFailed, SourceRefused, fetch_source
from worker.webhooks.ssrf import IPAddress

ONLY_FIRST = ["127.0.0.1/32"]


@pytest.fixture(autouse=True)
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a connection was opened to; anything but loopback fails the test before it leaves."""
    seen: list[str] = []
    real = socket.create_connection

    def loopback_only(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        seen.append(address[0])
        assert ip_address(address[0]).is_loopback, f"dialled {address[0]}, outside loopback"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)
    return seen


@pytest.fixture
def front() -> Iterator[Origin]:
    origin = Origin("127.0.0.1")
    origin.routes = {"/img": image()}
    yield origin
    origin.close()


@pytest.fixture
def internal() -> Iterator[Origin]:
    origin = Origin("127.0.0.2")
    origin.routes = {"/secret": image(body=b"internal")}
    yield origin
    origin.close()


def _private_targets(internal: Origin) -> list[str]:
    port = internal.port
    return [
        f"http://127.0.0.2:{port}/secret",
        f"http://inner.test:{port}/secret",  # a name for the internal server
        f"http://2130706434:{port}/secret",  # 127.0.0.2 as one number
        f"http://[::ffff:127.0.0.2]:{port}/secret",
        f"https://inner.test:{port}/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.test/latest/meta-data/",
        "http://10.0.0.7/",
        "http://internal.test/",
        f"http://[::1]:{port}/secret",
        f"http://localhost:{port}/secret",
    ]


RESOLVE = table_resolver(
    {
        "img.test": ["127.0.0.1"],
        "inner.test": ["127.0.0.2"],
        "metadata.test": ["169.254.169.254"],
        "internal.test": ["10.1.2.3"],
        "localhost": ["127.0.0.2", "::1"],
    }
)


@pytest.mark.parametrize("allow_http", [False, True])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_a_private_address_is_refused(
    front: Origin, internal: Origin, dialled: list[str], status: int, allow_http: bool
) -> None:
    settings = source_settings(ONLY_FIRST, allow_http=allow_http)
    for n, target in enumerate(_private_targets(internal)):
        front.routes[f"/go{n}"] = redirect(target, status)
        with pytest.raises(SourceRefused, match=r"redirected|refused"):
            fetch_source(front.url(f"/go{n}"), settings, CAP, RESOLVE)
    assert internal.requests == []
    assert set(dialled) == {"127.0.0.1"}  # the front, once per case, and nothing else


def test_a_redirect_may_not_carry_credentials_or_leave_http(front: Origin) -> None:
    for n, target in enumerate(
        [
            front.url("/img", host="user:pw@img.test"),
            "file:///etc/passwd",
            "ftp://img.test/img",
            "gopher://img.test:70/_",
        ]
    ):
        front.routes[f"/go{n}"] = redirect(target)
        with pytest.raises(SourceRefused, match="redirected to a refused URL"):
            fetch_source(front.url(f"/go{n}"), source_settings(ONLY_FIRST), CAP, RESOLVE)
    assert front.paths == ["/go0", "/go1", "/go2", "/go3"]


def test_rebinding_the_name_after_the_check_does_not_move_the_connection(
    front: Origin, internal: Origin, dialled: list[str]
) -> None:
    # The first answer passes the check; any later answer would point at the internal server.
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]])

    def rebinding(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        return [ip_address(a) for a in next(answers)]

    internal.routes["/img"] = image(body=b"internal")
    assert fetch_source(front.url("/img"), source_settings(ONLY_FIRST), CAP, rebinding) == IMAGE
    assert calls == ["img.test"]  # one lookup: the checked address is the dialled one
    assert dialled == ["127.0.0.1"] and internal.requests == []


def test_each_redirect_hop_is_looked_up_and_checked_again(
    front: Origin, internal: Origin, dialled: list[str]
) -> None:
    # A redirect back to the same name gets a fresh lookup, judged like the first: now it is refused.
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])

    def rebinding(host: str, port: int) -> list[IPAddress]:
        return [ip_address(a) for a in next(answers)]

    front.routes["/again"] = redirect("/img")
    internal.routes["/img"] = image(body=b"internal")
    with pytest.raises(SourceRefused, match=r"127\.0\.0\.2"):
        fetch_source(front.url("/again"), source_settings(ONLY_FIRST), CAP, rebinding)
    assert dialled == ["127.0.0.1"] and internal.requests == []


@pytest.mark.parametrize(
    "answer",
    [
        ["127.0.0.1", "127.0.0.2"],  # the listed address first, an unlisted one behind it
        ["127.0.0.2", "127.0.0.1"],
        ["127.0.0.1", "10.0.0.1"],
        ["127.0.0.1", "169.254.169.254"],
        ["127.0.0.1", "::1"],
        ["127.0.0.1", "::ffff:127.0.0.2"],
        ["127.0.0.1", "8.8.8.8", "192.168.1.1"],
    ],
)
def test_a_name_with_any_private_address_is_refused_whole(
    front: Origin, dialled: list[str], answer: list[str]
) -> None:
    resolve = table_resolver({"img.test": answer})
    with pytest.raises(SourceRefused, match="non-public"):
        fetch_source(front.url("/img"), source_settings(ONLY_FIRST), CAP, resolve)
    assert dialled == [] and front.requests == []


def test_a_mixed_public_and_loopback_answer_is_refused_without_an_allow_list(
    front: Origin, dialled: list[str]
) -> None:
    resolve = table_resolver({"img.test": ["127.0.0.1", "8.8.8.8"]})
    with pytest.raises(SourceRefused, match="non-public"):
        fetch_source(front.url("/img", scheme="https"), source_settings(), CAP, resolve)
    assert dialled == [] and front.requests == []


def test_proxies_from_the_environment_are_ignored(
    front: Origin, internal: Origin, dialled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would dial the target on the worker's behalf, past every check made here.
    proxy = f"http://127.0.0.2:{internal.port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    assert fetch_source(front.url("/img"), source_settings(ONLY_FIRST), CAP, RESOLVE) == IMAGE
    assert dialled == ["127.0.0.1"] and internal.requests == []


@pytest.fixture
def tls_front(tmp_path: Path) -> Iterator[tuple[Origin, ssl.SSLContext]]:
    cert, key = _self_signed(tmp_path, "img.test")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    origin = Origin("127.0.0.1", tls=server_tls)
    origin.routes = {"/img": image()}
    yield origin, ssl.create_default_context(cafile=str(cert))
    origin.close()


def test_https_to_plain_http_only_where_plain_http_may_go(
    tls_front: tuple[Origin, ssl.SSLContext], front: Origin, dialled: list[str]
) -> None:
    origin, trust = tls_front
    resolve = table_resolver(
        {"img.test": ["127.0.0.1"], "cdn.test": ["8.8.8.8"], "plain.test": ["127.0.0.1"]}
    )
    settings = source_settings(ONLY_FIRST)
    assert fetch_source(origin.url("/img", scheme="https"), settings, CAP, resolve, verify=trust) == IMAGE

    # Down to plain http on a public address: refused before any connection is made.
    origin.routes["/down"] = redirect("http://cdn.test/img.png")
    with pytest.raises(SourceRefused, match="plain http"):
        fetch_source(origin.url("/down", scheme="https"), settings, CAP, resolve, verify=trust)
    origin.routes["/down-literal"] = redirect("http://8.8.8.8/img.png")
    with pytest.raises(SourceRefused, match="http"):
        fetch_source(origin.url("/down-literal", scheme="https"), settings, CAP, resolve, verify=trust)

    # Down to plain http inside the listed network: allowed, as a plain http source there would be.
    origin.routes["/listed"] = redirect(front.url("/img", host="plain.test"))
    assert fetch_source(origin.url("/listed", scheme="https"), settings, CAP, resolve, verify=trust) == IMAGE
    assert front.paths == ["/img"]
    assert set(dialled) == {"127.0.0.1"}


def test_the_certificate_is_verified_for_the_name_not_the_pinned_address(
    tls_front: tuple[Origin, ssl.SSLContext],
) -> None:
    origin, trust = tls_front
    resolve = table_resolver({"other.test": ["127.0.0.1"]})
    with pytest.raises(SourceFetchFailed, match="certificate") as failure:
        fetch_source(
            origin.url("/img", host="other.test", scheme="https"),
            source_settings(ONLY_FIRST),
            CAP,
            resolve,
            verify=trust,
        )
    assert failure.value.code == "InvalidArgument.SourceUnreachable"
    assert origin.requests == []
