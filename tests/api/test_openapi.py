"""The OpenAPI document describes the API as it behaves: its auth schemes and its IMM error bodies."""

from __future__ import annotations

from typing import Any

import pytest

from api.main import create_app
from worker.settings import Settings


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return create_app(Settings(secret_key="openapi-test-key-0123456789abcdef", log_level="WARNING")).openapi()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items()]


def test_auth_schemes_are_bearer_and_acs3(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    assert schemes["Bearer"]["bearerFormat"] == "<AccessKeyId>:<AccessKeySecret>"
    assert schemes["ACS3"] == {**schemes["ACS3"], "type": "apiKey", "in": "header", "name": "Authorization"}
    assert "ACS3-HMAC-SHA256" in schemes["ACS3"]["description"]


def test_no_422_and_every_authenticated_route_lists_the_imm_errors(doc: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error = doc["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    authenticated = 0
    for method, path, op in _operations(doc):
        assert "422" not in op["responses"], (method, path)
        assert "413" in op["responses"], (method, path)  # the body cap applies everywhere
        if path in ("/healthz", "/readyz", "/metrics", "/metrics/cluster"):
            assert "security" not in op
            continue
        authenticated += 1
        assert op["security"] == [{"Bearer": []}, {"ACS3": []}], (method, path)
        for status in ("400", "403", "404", "413", "429"):
            content = op["responses"][status]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert authenticated >= 8


def test_operation_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids))
