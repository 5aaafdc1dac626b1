"""Signatures bound to what they authorise, each case a real request against a real stack.

A v2 (query) signature covers the method and the parameters only, so it must not be movable to another
path or given another body; ACS3 covers path and body hash; parameters given twice and an unsigned
content-type are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, Stack
from tests.integration.helpers import jpeg
from tests.security.signatures_support import acs3_headers, client_from, code, new_key, v2_query

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.21"  # this module's failures stay off other tests' failure budget


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    s: Stack = make_stack(workers=1)
    return s


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, str]:
    project_a, bucket_a = stack.project()
    project_b, _ = stack.project()
    key_id, secret = new_key(stack, project_a)
    return {
        "a": project_a,
        "b": project_b,
        "uri": stack.put(bucket_a, "pic.jpg", jpeg(600, 400)),
        "key_id": key_id,
        "secret": secret,
    }


@pytest.fixture
def c(stack: Stack) -> Iterator[httpx.Client]:
    with client_from(stack, ADDRESS) as client:
        yield client


def test_v2_query_works_where_it_belongs(c: httpx.Client, world: dict[str, str]) -> None:
    query = v2_query("POST", world["key_id"], world["secret"], ProjectName=world["a"], SourceURI=world["uri"])
    r = c.post("/?" + query)
    assert r.status_code == 200, r.text
    assert r.json()["Croppings"]


def test_v2_query_moved_to_the_native_api_with_a_json_body(
    stack: Stack, c: httpx.Client, world: dict[str, str]
) -> None:
    query = v2_query("POST", world["key_id"], world["secret"], ProjectName=world["a"], SourceURI=world["uri"])
    forged = {"SourceURI": world["uri"], "CallbackURL": "http://127.0.0.1:9/steal"}
    r = c.post(f"/v1/projects/{world['a']}/crop-jobs?{query}", json=forged)
    assert code(r) == (400, "IncompleteSignature")
    assert "only on the IMM RPC endpoint" in r.json()["Message"]


def test_admin_v2_get_replayed_on_a_project_does_not_reveal_it(
    c: httpx.Client, world: dict[str, str]
) -> None:
    query = v2_query("GET", ADMIN_KEY["AccessKeyId"], ADMIN_KEY["AccessKeySecret"])
    r = c.get(f"/v1/projects/{world['b']}?{query}")
    assert code(r) == (400, "IncompleteSignature")
    assert "whsec_" not in r.text and "WebhookSecret" not in r.text


def test_v2_with_a_json_body_on_the_rpc_face(c: httpx.Client, world: dict[str, str]) -> None:
    query = v2_query("POST", world["key_id"], world["secret"], ProjectName=world["a"], SourceURI=world["uri"])
    r = c.post("/?" + query, json={"ProjectName": world["b"]})
    assert code(r) == (400, "IncompleteSignature")
    assert "body" in r.json()["Message"]


def test_v2_form_body_is_signed_with_the_query(c: httpx.Client, world: dict[str, str]) -> None:
    query = v2_query("POST", world["key_id"], world["secret"], ProjectName=world["a"], SourceURI=world["uri"])
    r = c.post("/?" + query, data={"InclusionHints": '["face"]'})  # an unsigned extra pair
    assert code(r) == (400, "SignatureDoesNotMatch")


def test_acs3_moved_to_another_path_or_body(c: httpx.Client, stack: Stack, world: dict[str, str]) -> None:
    query = f"ProjectName={world['a']}&SourceURI={world['uri']}"
    headers = acs3_headers(
        stack, "POST", "/", str(httpx.QueryParams(query)), b"", world["key_id"], world["secret"]
    )
    moved = c.post(f"/v1/projects/{world['a']}/crop-jobs?{httpx.QueryParams(query)}", headers=headers)
    assert code(moved) == (400, "SignatureDoesNotMatch")
    body = b'{"SourceURI": "oss://other/x.jpg"}'
    other_body = c.post(f"/?{httpx.QueryParams(query)}", headers=headers, content=body)
    assert code(other_body) == (400, "SignatureDoesNotMatch")
    intact = c.post(f"/?{httpx.QueryParams(query)}", headers=headers)
    assert intact.status_code == 200, intact.text  # the same request, untouched, was valid all along


@pytest.mark.parametrize("scheme", ["v2", "acs3", "bearer"])
def test_duplicate_query_keys(c: httpx.Client, stack: Stack, world: dict[str, str], scheme: str) -> None:
    base = f"ProjectName={world['a']}&SourceURI={world['uri']}"
    if scheme == "v2":
        query = v2_query(
            "POST", world["key_id"], world["secret"], ProjectName=world["a"], SourceURI=world["uri"]
        )
        r = c.post(f"/?{query}&ProjectName={world['b']}")
    elif scheme == "acs3":
        query = str(httpx.QueryParams(base)) + f"&ProjectName={world['b']}"
        r = c.post(
            f"/?{query}",
            headers=acs3_headers(stack, "POST", "/", query, b"", world["key_id"], world["secret"]),
        )
    else:
        auth = {"Authorization": f"Bearer {world['key_id']}:{world['secret']}"}
        r = c.get(f"/v1/projects/{world['a']}?x=1&x=2", headers=auth)
    assert code(r) == (400, "InvalidArgument")
    assert "more than once" in r.json()["Message"]


def test_unsigned_content_type_on_the_rpc_face(c: httpx.Client, stack: Stack, world: dict[str, str]) -> None:
    body = b"InclusionHints=%5B%22face%22%5D"  # the body is hash-bound; reading it as pairs is the header's
    form = {"content-type": "application/x-www-form-urlencoded"}
    query = str(httpx.QueryParams(f"ProjectName={world['a']}&SourceURI={world['uri']}"))
    headers = acs3_headers(stack, "POST", "/", query, body, world["key_id"], world["secret"], form)
    r = c.post(f"/?{query}", headers=headers, content=body)
    assert code(r) == (400, "IncompleteSignature")
    assert "content-type" in r.json()["Message"]


def test_no_signature_secret_or_signed_query_in_any_log(
    c: httpx.Client, stack: Stack, world: dict[str, str]
) -> None:
    key_id, secret = world["key_id"], world["secret"]
    secrets = [secret, ADMIN_KEY["AccessKeySecret"], "wrong-secret-in-logs"]
    signatures: list[str] = []
    queries: list[str] = []
    for s in (secret, "wrong-secret-in-logs"):
        query = v2_query("POST", key_id, s, ProjectName=world["a"], SourceURI=world["uri"])
        queries.append(query)
        signatures.append(httpx.QueryParams(query)["Signature"])
        c.post("/?" + query)
        q = str(httpx.QueryParams(f"ProjectName={world['a']}&SourceURI={world['uri']}&UserData=acs3-{s[:5]}"))
        headers = acs3_headers(stack, "POST", "/", q, b"", key_id, s)
        queries.append(q)
        signatures.append(headers["Authorization"].rsplit("Signature=", 1)[1])
        c.post(f"/?{q}", headers=headers)
        c.get(
            f"/v1/projects/{world['a']}?probe=bearer-{s[:5]}",
            headers={"Authorization": f"Bearer {key_id}:{s}"},
        )
    logs = {
        p.name: p.read_text(errors="replace")
        for p in [stack.api.log_path, *(w.log_path for w in stack.workers)]
    }
    assert logs[stack.api.log_path.name].strip(), "the API wrote no log at all"
    for name, text in logs.items():
        for needle in [*secrets, *signatures, *queries, "probe=bearer", "SignatureNonce"]:
            assert needle not in text, f"{needle[:40]!r} is in {name}"
