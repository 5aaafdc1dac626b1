"""The client's models stay in step with the server's: field names and JSON types of every model (nested
ones included) match the server's wire models and the response schemas of the routes the client reads in
the API's OpenAPI document. A field added, renamed or retyped on one side only fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cropq_client import models as client_models
from pydantic import BaseModel

from api.main import create_app
from api.schemas import ProjectResponse
from worker import contracts
from worker.settings import Settings

# Documentation and constraints: the server checks them; the client only needs names and types.
_IGNORED = {
    "title", "description", "default", "examples", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "pattern", "additionalProperties",
    "$defs",
}  # fmt: skip


def shape(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A schema's names and types only, every $ref inlined: comparable across two documents."""
    if "$ref" in schema:
        return shape(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return {"anyOf": sorted((shape(s, defs) for s in schema["anyOf"]), key=json.dumps)}
    if "enum" in schema:
        return {"enum": sorted(schema["enum"])}
    out: dict[str, Any] = {
        k: v for k, v in schema.items() if k not in _IGNORED | {"properties", "items", "required"}
    }
    if "items" in schema:
        out["items"] = shape(schema["items"], defs)
    if "properties" in schema:
        out["properties"] = {name: shape(p, defs) for name, p in schema["properties"].items()}
    return out


def required_paths(schema: dict[str, Any], defs: dict[str, Any], at: str = "") -> set[str]:
    """Every field that must be present, as a dotted path (nested models included)."""
    if "$ref" in schema:
        return required_paths(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, at)
    found = {f"{at}{name}" for name in schema.get("required", [])}
    for name, prop in schema.get("properties", {}).items():
        for alt in prop.get("anyOf", [prop]):
            target = alt.get("items", alt)
            found |= required_paths(target, defs, f"{at}{name}.")
    return found


def model_shape(model: type[BaseModel]) -> tuple[Any, set[str]]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    return shape(schema, defs), required_paths(schema, defs)


PAIRS = [
    (client_models.Job, contracts.Job),
    (client_models.Batch, contracts.Batch),
    (client_models.RenderSpec, contracts.RenderSpec),
    (client_models.Detection, contracts.Detection),
    (client_models.Project, ProjectResponse),
]


@pytest.mark.parametrize(("client", "server"), PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_client_models_match_the_servers(client: type[BaseModel], server: type[BaseModel]) -> None:
    client_shape, client_required = model_shape(client)
    server_shape, server_required = model_shape(server)
    assert client_shape == server_shape
    # The client may be more lenient than the server, never stricter.
    assert client_required <= server_required, client_required - server_required


@pytest.mark.parametrize(
    ("client", "server"),
    [
        (client_models.JobStatus, contracts.JobStatus),
        (client_models.BatchStatus, contracts.BatchStatus),
        (client_models.CallbackStatus, contracts.CallbackStatus),
    ],
)
def test_states_match_and_agree_on_which_are_final(client: Any, server: Any) -> None:
    assert [s.value for s in client] == [s.value for s in server]
    assert (
        {s.value for s in client if s.finished} == {s.value for s in server if s.finished}
        if hasattr(server, "finished")
        else True
    )


def test_every_client_model_ignores_unknown_fields() -> None:
    found = [
        m
        for m in vars(client_models).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == client_models.__name__
    ]
    assert len(found) >= 12
    for model in found:
        assert model.model_config.get("extra") == "ignore", model.__name__
        assert "Unknown" not in model.model_validate(_sample(model) | {"Unknown": 1}).model_dump()


def _sample(model: type[BaseModel]) -> dict[str, Any]:
    """The smallest valid input of a model, from its own JSON schema."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})

    def value(s: dict[str, Any]) -> Any:
        if "$ref" in s:
            return value(defs[s["$ref"].rsplit("/", 1)[-1]])
        if "enum" in s:
            return s["enum"][0]
        kind = s.get("type")
        if kind == "object":
            return {k: value(p) for k, p in s.get("properties", {}).items() if k in s.get("required", [])}
        return {"string": "x", "integer": 1, "number": 0.5, "boolean": True, "array": []}[str(kind)]

    result: dict[str, Any] = value(schema)
    return result


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    settings = Settings(secret_key="client-models-test-key-0123456789ab", log_level="WARNING")
    return create_app(settings).openapi()


ROUTES = [
    ("get", "/v1/projects/{ProjectName}/crop-jobs/{RequestId}", "200", client_models.Job),
    ("get", "/v1/projects/{ProjectName}/crop-jobs", "200", client_models.JobPage),
    ("get", "/v1/projects/{ProjectName}/crop-batches/{BatchId}", "200", client_models.Batch),
    ("put", "/v1/projects/{ProjectName}", "200", client_models.Project),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "client"), ROUTES, ids=[r[1] + " " + r[0] for r in ROUTES]
)
def test_the_answers_the_client_reads_match_its_models(
    openapi: dict[str, Any], method: str, path: str, status: str, client: type[BaseModel]
) -> None:
    operation = openapi["paths"].get(path, {}).get(method)
    if operation is None:
        pytest.skip(f"{method.upper()} {path} is not served yet")
    schema = operation["responses"][status]["content"]["application/json"]["schema"]
    defs = openapi["components"]["schemas"]
    client_shape, client_required = model_shape(client)
    assert client_shape == shape(schema, defs)
    assert client_required <= required_paths(schema, defs)
