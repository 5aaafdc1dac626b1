"""SSRF guard for callbacks: resolve the host, check every address, then dial the checked address.

The check lives in the transport (as svix does it in its connector's resolver), so the address that was
checked is the one connected to: a DNS answer that changes between check and connect (rebinding) never
reaches the socket. For https the original host name is still sent as SNI and verified in the certificate.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpx

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Written out rather than trusting ``is_global`` alone, whose tables changed between Python patch releases.
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata lives here)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ip_network("64:ff9b::/96")


class SsrfRefused(ValueError):
    """The callback URL is not allowed (scheme, no host, or a non-public address): retrying cannot help."""


class ResolveFailed(httpx.ConnectError):
    """The host name did not resolve (in time): a transient network failure, retried like a refused
    connection."""


# getaddrinfo cannot be cancelled and ignores socket timeouts: it runs on a small pool of its own so a
# stuck resolver costs the delivery its timeout, not the worker its time limit.
_DNS_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cropq-dns")


def parse_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ip_network(c.strip(), strict=False) for c in cidrs)


def canonical(ip: IPAddress) -> IPAddress:
    """The IPv4 address hidden in an IPv4-mapped, NAT64 or 6to4 IPv6 address, else ``ip`` itself."""
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def is_public(ip: IPAddress) -> bool:
    ip = canonical(ip)
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in BLOCKED_NETWORKS)


def is_allowed(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Public, or inside an allow-listed network (checked on the raw and the unwrapped address)."""
    return is_public(ip) or any(a in net for a in (ip, canonical(ip)) for net in allowed)


def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    # getaddrinfo may append an IPv6 scope ("fe80::1%eth0"); ip_address keeps it, checks ignore it.
    return [ip_address(info[4][0]) for info in infos]


def resolve_within(resolver: Resolver, host: str, port: int, timeout: float | None) -> list[IPAddress]:
    """``resolver(host, port)``, raising :class:`ResolveFailed` if it fails or takes over ``timeout`` s."""
    try:
        if timeout is None:
            return resolver(host, port)
        return _DNS_POOL.submit(resolver, host, port).result(timeout=timeout)
    except FutureTimeout:
        raise ResolveFailed(f"resolving {host} took over {timeout:g} s") from None
    except UnicodeError as exc:  # not a valid host name (a label over 63 characters...): never will be
        raise SsrfRefused(f"cannot resolve {host}: {exc}") from exc
    except OSError as exc:
        raise ResolveFailed(f"cannot resolve {host}: {exc}") from exc


def check_url(
    url: httpx.URL,
    allowed: Sequence[IPNetwork] = (),
    resolver: Resolver = system_resolver,
    resolve_timeout: float | None = None,
) -> IPAddress:
    """Resolve ``url``'s host once, refuse unless every address is allowed, and return the one to dial.

    Raises :class:`SsrfRefused` (permanent) or :class:`ResolveFailed` (transient)."""
    if url.scheme not in ALLOWED_SCHEMES:
        raise SsrfRefused(f"scheme {url.scheme!r} is not allowed")
    host = url.raw_host.decode("ascii")
    if not host:
        raise SsrfRefused("URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = resolve_within(resolver, host, port, resolve_timeout)
    if not addresses:
        raise SsrfRefused(f"{host} has no address")
    # Every address must pass: otherwise a mixed answer could steer the connection to the bad one.
    refused = [ip for ip in addresses if not is_allowed(ip, allowed)]
    if refused:
        raise SsrfRefused(f"{host} resolves to a non-public address ({refused[0]})")
    return addresses[0]


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that checks each request's host and connects to the checked IP.

    The request keeps its ``Host`` header; https sends the original name as SNI and verifies the
    certificate against it. Use one client per delivery: the connection pool is keyed by IP, so two
    names sharing an address must not share a TLS connection.
    """

    def __init__(
        self,
        allowed: Sequence[IPNetwork] = (),
        *,
        resolver: Resolver = system_resolver,
        resolve_timeout: float | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._allowed = tuple(allowed)
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout
        self._inner = httpx.HTTPTransport(verify=verify, retries=0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        try:
            ip = check_url(url, self._allowed, self._resolver, self._resolve_timeout)
        except ResolveFailed as exc:
            exc.request = request
            raise
        # httpx set the Host header from the original URL when the request was built.
        request.url = url.copy_with(host=str(ip).split("%", 1)[0])
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": url.raw_host.decode("ascii")}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
