"""Helpers for the signature and rate-limit security tests: hand-signed requests, fresh keys, and clients
that connect from a chosen loopback address (failed-authentication budgets are per client address)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from alibabacloud_tea_openapi.utils import Utils as SdkUtils

from api.auth import acs3
from tests.conftest import Stack


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def client_from(stack: Stack, address: str, **kw: Any) -> httpx.Client:
    """A client without credentials whose connections come from ``address`` (in 127.0.0.0/8)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=stack.url, transport=transport, timeout=30, **kw)


def new_key(stack: Stack, project: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "cropq_cli.main", "keys", "create", "--project", project, "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(out.stdout)
    return key["AccessKeyId"], key["AccessKeySecret"]


def v2_query(method: str, key_id: str, secret: str, **params: str) -> str:
    """A v2-signed query string as the SDK's v2 mode builds it (DetectImageCropping on the RPC face)."""
    signed = {
        "Action": "DetectImageCropping",
        "Version": "2020-09-30",
        "Format": "json",
        "Timestamp": now_stamp(),
        "SignatureNonce": uuid.uuid4().hex,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": key_id,
        **params,
    }
    signed["Signature"] = SdkUtils.get_rpcsignature(signed, method, secret)
    return urlencode(signed)


def signed_acs3_headers(
    host: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
    key_id: str,
    secret: str,
    extra: dict[str, str] | None = None,
    signed_extra: tuple[str, ...] = (),
) -> dict[str, str]:
    """Headers of an ACS3-HMAC-SHA256 request signed for exactly ``method path?query`` and ``body``."""
    headers = {
        "host": host,
        "x-acs-action": "DetectImageCropping",
        "x-acs-version": "2020-09-30",
        "x-acs-date": now_stamp(),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        **(extra or {}),
    }
    signed = sorted([h for h in headers if h.startswith("x-acs-") or h == "host"] + list(signed_extra))
    canonical = acs3.canonical_request(
        method, path.encode(), query, list(headers.items()), signed, headers["x-acs-content-sha256"]
    )
    signature = acs3.sign(secret, acs3.string_to_sign(canonical))
    headers["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={key_id},SignedHeaders={';'.join(signed)},Signature={signature}"
    )
    return headers


def acs3_headers(
    stack: Stack,
    method: str,
    path: str,
    query: str,
    body: bytes,
    key_id: str,
    secret: str,
    extra: dict[str, str] | None = None,
    signed_extra: tuple[str, ...] = (),
) -> dict[str, str]:
    """:func:`signed_acs3_headers` for ``stack``'s API."""
    host = stack.url.removeprefix("http://")
    return signed_acs3_headers(host, method, path, query, body, key_id, secret, extra, signed_extra)


def code(resp: httpx.Response) -> tuple[int, str]:
    body = resp.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}, body
    return resp.status_code, str(body["Code"])
