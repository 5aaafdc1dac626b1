"""Fetching a crop job's ``http(s)://`` source: the worker GETs the image itself, guarded like a callback.

Every hop is resolved, checked and pinned by the callback SSRF guard (:mod:`worker.webhooks.ssrf`):
redirects are followed here, one hop at a time, each judged by the same policy as the first URL, so a
redirect can neither reach a private address nor fall back to plain http where plain http is not allowed.
One deadline (:mod:`worker.webhooks.deadline`) runs from the first DNS lookup to the last byte of the last
hop, however slowly a server drips. The body is asked for and read unencoded, counted, and cut just past
the byte cap.

Outcomes are the storage errors the crop task already handles: missing (404/410) fails the job as
``ResourceNotFound``, too big as ``InvalidArgument.ImageTooLarge``, transient trouble (5xx, 429,
timeouts, refused or reset connections, DNS failures) is retried like an unavailable bucket, and the two
errors below fail the job at once. :func:`precheck_source_url` is the part that needs no DNS, for the API
to answer 400 at submit.
"""

from __future__ import annotations

import re
import ssl
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httpx

from worker.settings import Settings
from worker.storage import ObjectNotFound, ObjectTooLarge, StorageError, StorageUnavailable
from worker.webhooks.deadline import Deadline
from worker.webhooks.ssrf import (
    IPNetwork,
    PinnedTransport,
    Resolver,
    SsrfRefused,
    in_networks,
    is_allowed,
    literal_address,
    parse_cidrs,
    system_resolver,
)

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
IMAGE_STATUSES = frozenset({200, 203})
# Worth another try later: the server is overloaded, throttling, or timed out waiting for us.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Servers often label images as generic bytes (S3's default); anything else (an HTML login page, a JSON
# error) is refused here with a clearer message than the decoder could give.
GENERIC_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})

_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


class SourceRefused(StorageError):
    """The URL may not be fetched: scheme, credentials in it, an address that is not public and not listed
    in ``CROPQ_SOURCE_ALLOWED_CIDRS``, plain http where it is not allowed, or a redirect to such a place."""

    code = "InvalidArgument.SourceRefused"


class SourceFetchFailed(StorageError):
    """The server answered, but not with an image: a 4xx other than 404/410, a non-image content type,
    an unreadable redirect or too many of them, an invalid certificate."""

    code = "InvalidArgument.SourceUnreachable"


@dataclass(frozen=True)
class _Policy:
    allowed: tuple[IPNetwork, ...]
    """Private or loopback networks reachable anyway (plain http too)."""
    plain_http: tuple[IPNetwork, ...] | None
    """Where plain http may go: None for wherever https may go, else only into these networks."""


def _policy(settings: Settings) -> _Policy:
    try:
        allowed = parse_cidrs(settings.source_allowed_cidrs)
    except ValueError as exc:
        raise SourceRefused(f"CROPQ_SOURCE_ALLOWED_CIDRS is not a list of networks: {exc}") from None
    return _Policy(allowed=allowed, plain_http=None if settings.source_allow_http else allowed)


def precheck_source_url(url: str, settings: Settings) -> None:
    """Syntax and policy checks without DNS, for the API (400 at submit): http or https only; http only
    when ``source_allow_http`` or ``source_allowed_cidrs`` is set (the host may resolve into them); no
    credentials; a literal IP host must be public or inside ``source_allowed_cidrs``; at most 2048
    characters; no control characters. Raises :class:`SourceRefused` saying what is wrong."""
    _checked_url(url, _policy(settings))


def _checked_url(url: str, policy: _Policy) -> httpx.URL:
    """``url`` parsed, or :class:`SourceRefused`: every check that needs no DNS (run again on each hop)."""
    if len(url) > MAX_URL_LENGTH:
        raise SourceRefused(f"The source URL is {len(url)} characters long; the limit is {MAX_URL_LENGTH}.")
    if any(unicodedata.category(c) == "Cc" for c in url):
        raise SourceRefused("The source URL contains a control character.")
    try:
        parsed = httpx.URL(url)
        # A second parser's view of the authority: an "@" either parser sees is refused.
        netloc = urlsplit(url).netloc
    except (httpx.InvalidURL, ValueError) as exc:
        raise SourceRefused(f"The source URL is not a valid URL: {exc}") from None
    scheme = parsed.scheme
    if scheme not in ("http", "https"):
        raise SourceRefused(f"The source URL must be https:// (or http:// where allowed), not {scheme!r}.")
    if parsed.userinfo or "@" in netloc:
        raise SourceRefused("The source URL must not carry a user name or password.")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise SourceRefused("The source URL has no host.")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise SourceRefused(f"The source URL's port {parsed.port} is not a valid port.")
    if scheme == "http" and policy.plain_http is not None and not policy.plain_http:
        raise SourceRefused("Plain http:// sources are not allowed here; use https://.")
    literal = literal_address(host)
    if literal is None:
        _check_host_name(host)
        return parsed
    if not is_allowed(literal, policy.allowed):
        raise SourceRefused(
            f"The source address {literal} is not public and not listed in CROPQ_SOURCE_ALLOWED_CIDRS."
        )
    if scheme == "http" and policy.plain_http is not None and not in_networks(literal, policy.plain_http):
        raise SourceRefused(f"Plain http:// to {literal} is not allowed; use https://.")
    return parsed


def _check_host_name(host: str) -> None:
    """A name a resolver could answer: refused now rather than retried as a DNS failure for minutes."""
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise SourceRefused(f"The source host {host[:100]!r} is not a valid host name.")


def fetch_source(
    url: str,
    settings: Settings,
    max_bytes: int,
    resolver: Resolver | None = None,
    *,
    verify: ssl.SSLContext | bool = True,
) -> bytes:
    """GET the image at ``url`` (http or https) and return its bytes.

    Every hop is resolved, checked and pinned (no redirect to a private address, no plain http where it
    is not allowed), at most 5 redirects are followed, a Content-Length above ``max_bytes`` is refused
    before the body is read and the body is cut just past ``max_bytes``; one deadline of
    ``settings.source_timeout_seconds`` covers everything from the first DNS lookup to the last byte.
    ``resolver`` defaults to the system's; ``verify`` is the TLS trust (a context for a private CA).

    Raises :class:`ObjectNotFound` (404, 410), :class:`ObjectTooLarge`, :class:`StorageUnavailable` (5xx,
    408, 425, 429, timeouts, refused or reset connections, DNS failures: worth retrying),
    :class:`SourceRefused` (policy) or :class:`SourceFetchFailed` (any other answer that is not an image).
    """
    policy = _policy(settings)
    target = _checked_url(url, policy)
    deadline = Deadline(settings.source_timeout_seconds)
    tls = verify if isinstance(verify, ssl.SSLContext) else _tls_context(verify)
    hop = _Hop(settings, policy, resolver or system_resolver, deadline, tls, max_bytes)
    for _ in range(MAX_REDIRECTS + 1):
        outcome = hop.get(target)
        if isinstance(outcome, bytes):
            return outcome
        target = outcome
    raise SourceFetchFailed(f"The source redirected more than {MAX_REDIRECTS} times.")


@lru_cache(maxsize=2)
def _tls_context(verify: bool) -> ssl.SSLContext:
    # Built once per process: loading the CA bundle costs about 50 ms, and a context is safe to share.
    return httpx.create_ssl_context(verify=verify)


@dataclass(frozen=True)
class _Hop:
    """One request of a fetch: everything it needs but the URL."""

    settings: Settings
    policy: _Policy
    resolver: Resolver
    deadline: Deadline
    tls: ssl.SSLContext
    max_bytes: int

    def get(self, url: httpx.URL) -> bytes | httpx.URL:
        """The image bytes, or the checked URL a redirect points to."""
        host = url.host
        headers = {
            "User-Agent": self.settings.source_user_agent,
            "Accept": "image/*",
            # Decoding is the decoder's job: a compressed answer could expand far past the byte cap.
            "Accept-Encoding": "identity",
        }
        # A fresh transport per hop: its pool is keyed by IP, and a TLS connection verified for one name
        # must not carry a request for another name that resolves to the same address.
        transport = PinnedTransport(
            self.policy.allowed,
            resolver=self.resolver,
            verify=self.tls,
            deadline=self.deadline,
            plain_http=self.policy.plain_http,
        )
        try:
            with (
                httpx.Client(
                    transport=transport,
                    follow_redirects=False,
                    trust_env=False,  # no proxy or netrc from the environment may bypass the pinning
                    timeout=httpx.Timeout(self.settings.source_timeout_seconds),
                ) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code in REDIRECT_STATUSES:
                    return self._redirect(url, response)
                _judge_answer(response, host, self.max_bytes)
                return _read_capped(response, host, self.max_bytes)
        except SsrfRefused as exc:
            raise SourceRefused(f"The source was refused: {exc}.") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise SourceRefused(f"The source URL is not valid: {exc}") from None
        except httpx.TimeoutException as exc:
            raise StorageUnavailable(f"Fetching the source from {host} timed out: {exc}") from None
        except httpx.HTTPError as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise SourceFetchFailed(f"The TLS certificate of {host} is not valid: {exc}") from None
            raise StorageUnavailable(
                f"The source at {host} is unreachable: {type(exc).__name__}: {exc}"
            ) from None

    def _redirect(self, url: httpx.URL, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise SourceFetchFailed(f"{url.host} answered HTTP {response.status_code} without a Location.")
        try:
            joined = url.join(location)
        except httpx.InvalidURL as exc:
            raise SourceRefused(f"{url.host} redirected to an invalid URL: {exc}") from None
        try:
            return _checked_url(str(joined), self.policy)
        except SourceRefused as exc:
            raise SourceRefused(f"{url.host} redirected to a refused URL: {exc}") from None


def _judge_answer(response: httpx.Response, host: str, max_bytes: int) -> None:
    """Raise unless the status line and headers announce an image of at most ``max_bytes``."""
    code = response.status_code
    if code in (404, 410):
        raise ObjectNotFound(f"The specified resource is not found: {host} answered HTTP {code}.")
    if code >= 500 or code in TRANSIENT_STATUSES:
        raise StorageUnavailable(f"The source at {host} answered HTTP {code}.")
    if code not in IMAGE_STATUSES:
        raise SourceFetchFailed(f"The source at {host} answered HTTP {code}, not an image.")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise SourceFetchFailed(f"The source at {host} sent a {encoding!r}-encoded body; none was accepted.")
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and not content_type.startswith("image/") and content_type not in GENERIC_CONTENT_TYPES:
        raise SourceFetchFailed(f"The source at {host} answered {content_type[:100]}, not an image.")
    length = response.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise ObjectTooLarge(f"The source is {int(length)} bytes; the limit is {max_bytes}.")


def _read_capped(response: httpx.Response, host: str, max_bytes: int) -> bytes:
    """The raw body, stopped as soon as it passes ``max_bytes`` (whatever Content-Length said)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise ObjectTooLarge(f"The source at {host} exceeds the limit of {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
