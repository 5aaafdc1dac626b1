"""SSRF guard for outgoing requests (callbacks, http(s) sources): resolve the host, check every address,
then dial the checked address.

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

import httpcore
import httpx

from worker.webhooks.deadline import Deadline, DeadlineBackend

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Written out rather than trusting ``is_global`` alone, whose tables changed between Python patch releases.
# Every block of IANA's IPv4 and IPv6 special-purpose registries that is not globally reachable, plus
# multicast and deprecated site-local space.
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata lives here)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments (DS-Lite, NAT64 discovery...)
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "100:0:0:1::/64",  # dummy prefix
        "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# Blocks inside the ones above that the registries mark globally reachable (anycast services).
GLOBAL_EXCEPTIONS: tuple[IPNetwork, ...] = tuple(
    ip_network(n)
    for n in (
        "192.0.0.9/32",  # Port Control Protocol anycast
        "192.0.0.10/32",  # TURN anycast
        "2001:1::1/128",  # Port Control Protocol anycast
        "2001:1::2/128",  # TURN anycast
        "2001:1::3/128",  # DNS-SD service registration anycast
        "2001:3::/32",  # AMT
        "2001:4:112::/48",  # AS112-v6
        "2001:20::/28",  # ORCHIDv2
        "2001:30::/28",  # drone remote ID tags
    )
)
# Only global unicast IPv6 is dialled; everything else left of 2000::/3 is unassigned or local.
_GLOBAL_UNICAST_V6 = ip_network("2000::/3")
_NAT64 = ip_network("64:ff9b::/96")
_TRANSLATED = ip_network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated (::ffff:0:a.b.c.d)
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)  # interface identifiers ::0:5efe:a.b.c.d / ::200:5efe:a.b.c.d


class SsrfRefused(ValueError):
    """The URL is not allowed (scheme, no host, or a non-public address): retrying cannot help."""


class ResolveFailed(httpx.ConnectError):
    """The host name did not resolve (in time): a transient network failure, retried like a refused
    connection."""


# getaddrinfo cannot be cancelled and ignores socket timeouts: it runs on a small pool of its own so a
# stuck resolver costs the request its timeout, not the worker its time limit.
_DNS_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cropq-dns")


def parse_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ip_network(c.strip(), strict=False) for c in cidrs)


def canonical(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, IPv4-translated, NAT64, 6to4 or ISATAP),
    else ``ip`` itself. Checking the carried address closes every path from IPv6 to a private IPv4 host."""
    if not isinstance(ip, IPv6Address):
        return ip
    low32 = IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _TRANSLATED or ip in _NAT64:
        return low32
    if ip.sixtofour is not None:
        return ip.sixtofour
    if (int(ip) >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        return low32
    return ip


def is_public(ip: IPAddress) -> bool:
    ip = canonical(ip)
    if any(ip in net for net in GLOBAL_EXCEPTIONS):
        return True
    if isinstance(ip, IPv6Address) and ip not in _GLOBAL_UNICAST_V6:
        return False
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in BLOCKED_NETWORKS)


def in_networks(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """Inside one of ``networks``, checked on the raw and the unwrapped address."""
    return any(a in net for a in (ip, canonical(ip)) for net in networks)


def is_allowed(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Public, or inside an allow-listed network (checked on the raw and the unwrapped address)."""
    return is_public(ip) or in_networks(ip, allowed)


def literal_address(host: str) -> IPAddress | None:
    """The address a numeric host stands for, in every spelling ``inet_aton`` accepts (``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.1``) or an IPv6 literal; None for a name. Such hosts are never
    handed to a resolver: what is checked is what the C library would have made of them."""
    host = host.removesuffix(".")
    try:
        return ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        try:
            if part[:2].lower() == "0x":
                values.append(int(part[2:], 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part[1:], 8))
            else:
                values.append(int(part, 10) if part.isascii() and part.isdigit() else -1)
        except ValueError:
            return None
    if any(v < 0 for v in values):
        return None
    # a.b.c.d, a.b.c (c fills 16 bits), a.b (b fills 24 bits), a (32 bits)
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return IPv4Address(number)


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
    *,
    plain_http: Sequence[IPNetwork] | None = None,
) -> IPAddress:
    """Resolve ``url``'s host once, refuse unless every address is allowed, and return the one to dial.

    With ``plain_http``, an ``http://`` URL must moreover resolve only into those networks (sources send
    plain http only to listed test and on-premise servers); None lets http go wherever https may.

    Raises :class:`SsrfRefused` (permanent) or :class:`ResolveFailed` (transient)."""
    if url.scheme not in ALLOWED_SCHEMES:
        raise SsrfRefused(f"scheme {url.scheme!r} is not allowed")
    host = url.raw_host.decode("ascii")
    if not host:
        raise SsrfRefused("URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = literal_address(host)
    addresses = [literal] if literal is not None else resolve_within(resolver, host, port, resolve_timeout)
    if not addresses:
        raise SsrfRefused(f"{host} has no address")
    # Every address must pass: otherwise a mixed answer could steer the connection to the bad one.
    refused = [ip for ip in addresses if not is_allowed(ip, allowed)]
    if refused:
        raise SsrfRefused(f"{host} resolves to a non-public address ({refused[0]})")
    if url.scheme == "http" and plain_http is not None:
        # Judged on the same single answer as above: a second lookup could be answered differently.
        unlisted = [ip for ip in addresses if not in_networks(ip, plain_http)]
        if unlisted:
            raise SsrfRefused(f"plain http to {host} ({unlisted[0]}) is not allowed; use https")
    return addresses[0]


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that checks each request's host and connects to the checked IP.

    The request keeps its ``Host`` header; https sends the original name as SNI and verifies the
    certificate against it. Use one client per delivery: the connection pool is keyed by IP, so two
    names sharing an address must not share a TLS connection. With ``deadline`` (seconds), each request
    runs against one clock from its DNS lookup to the last byte read (:mod:`worker.webhooks.deadline`);
    a :class:`Deadline` instead is one clock shared by every request of the transport (and of any other
    transport given it: a chain of redirects). ``plain_http`` is :func:`check_url`'s.
    """

    def __init__(
        self,
        allowed: Sequence[IPNetwork] = (),
        *,
        resolver: Resolver = system_resolver,
        resolve_timeout: float | None = None,
        verify: ssl.SSLContext | bool = True,
        deadline: float | Deadline | None = None,
        plain_http: Sequence[IPNetwork] | None = None,
    ) -> None:
        self._allowed = tuple(allowed)
        self._plain_http = None if plain_http is None else tuple(plain_http)
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout
        self._deadline = deadline
        self._backend = DeadlineBackend()
        self._inner = httpx.HTTPTransport(verify=verify, retries=0, trust_env=False)
        # httpx offers no argument for the network backend: its pool is replaced by the same pool
        # (TLS context, no retries, no proxy) over the deadline backend.
        ssl_context = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        )
        self._inner._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, retries=0, network_backend=self._backend
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        deadline = (
            self._deadline
            if self._deadline is None or isinstance(self._deadline, Deadline)
            else Deadline(self._deadline)
        )
        self._backend.deadline = deadline
        resolve_timeout = self._resolve_timeout
        try:
            if deadline is not None:
                budget = deadline.budget(resolve_timeout, ResolveFailed)
                resolve_timeout = budget
            ip = check_url(url, self._allowed, self._resolver, resolve_timeout, plain_http=self._plain_http)
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
