"""One callback POST, judged by the Standard Webhooks rules.

Only 2xx succeeds; redirects are not followed (3xx fails); 410 means the receiver is gone for good;
429/502/503/504 may carry ``Retry-After``. Neither the body nor the secret is logged or kept here:
the outcome holds only the status and a short error text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from worker.webhooks.ssrf import PinnedTransport, Resolver, SsrfRefused, parse_cidrs, system_resolver

USER_AGENT = "cropq-webhooks/1"
THROTTLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: bool
    status_code: int | None = None
    retry_after_seconds: float | None = None  # the receiver's hint; the caller clamps it to its schedule
    gone: bool = False  # 410: stop retrying
    refused: bool = False  # the SSRF guard or the URL itself refused: retrying cannot help
    error: str | None = None

    @property
    def final(self) -> bool:
        """True when another attempt is pointless, whatever the schedule says."""
        return self.delivered or self.gone or self.refused


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def deliver(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
    allowed_cidrs: Sequence[str] = (),
    resolver: Resolver = system_resolver,
) -> DeliveryOutcome:
    """POST ``body`` once to ``url`` through the SSRF-pinning transport. Never raises for network trouble.

    ``timeout`` bounds the whole attempt (DNS, connect, TLS, send, status line and headers), not each
    read: a receiver dripping its answer byte by byte is cut off at the same time as a silent one."""
    try:
        allowed = parse_cidrs(allowed_cidrs)
    except ValueError as exc:
        return DeliveryOutcome(delivered=False, refused=True, error=f"bad webhook_allowed_cidrs: {exc}")
    all_headers = {"content-type": "application/json", "user-agent": USER_AGENT, **headers}
    # trust_env=False: no proxy or netrc from the environment may bypass the pinned connection.
    with httpx.Client(
        transport=PinnedTransport(allowed, resolver=resolver, deadline=timeout),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
    ) as client:
        try:
            # stream() and never read the answer: a receiver cannot make us buffer a huge body.
            with client.stream("POST", url, content=body, headers=all_headers) as response:
                return _judge(response)
        except SsrfRefused as exc:
            return DeliveryOutcome(delivered=False, refused=True, error=f"refused: {exc}")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return DeliveryOutcome(delivered=False, refused=True, error=f"invalid URL: {exc}")
        except httpx.TimeoutException as exc:
            return DeliveryOutcome(delivered=False, error=f"timeout: {type(exc).__name__}: {exc}"[:300])
        except httpx.HTTPError as exc:
            return DeliveryOutcome(delivered=False, error=f"{type(exc).__name__}: {exc}"[:300])


def _judge(response: httpx.Response) -> DeliveryOutcome:
    code = response.status_code
    if 200 <= code < 300:
        return DeliveryOutcome(delivered=True, status_code=code)
    if code == 410:
        return DeliveryOutcome(delivered=False, status_code=code, gone=True, error="HTTP 410 Gone")
    if 300 <= code < 400:
        return DeliveryOutcome(
            delivered=False, status_code=code, error=f"HTTP {code}: redirects are not followed"
        )
    retry_after = (
        parse_retry_after(response.headers.get("retry-after")) if code in THROTTLE_STATUSES else None
    )
    return DeliveryOutcome(
        delivered=False, status_code=code, retry_after_seconds=retry_after, error=f"HTTP {code}"
    )
