"""openapi.json is generated from the handlers' code: it must not drift from it."""

from __future__ import annotations

import difflib
import json
from typing import Any

import pytest
from aws_lambda_powertools.event_handler.openapi.models import OpenAPI

from devtools import openapi
from watch_history.models import ID_PATTERN, MAX_ASSET_IDS

COMMITTED = openapi.ROOT / "openapi.json"


@pytest.fixture(scope="module")
def generated() -> str:
    return openapi.render()


def test_openapi_json_matches_the_code(generated: str) -> None:
    committed = COMMITTED.read_text() if COMMITTED.exists() else ""
    if committed != generated:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "openapi.json (committed)",
                "openapi.json (from the code)",
                n=2,
            )
        )
        pytest.fail(
            "openapi.json is out of date with the handlers: run `make openapi` and commit "
            f"it.\n{diff[:4000]}",
            pytrace=False,
        )


def test_it_is_a_valid_openapi_document(generated: str) -> None:
    OpenAPI.model_validate(json.loads(generated))


def _parameters(document: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    operation = document["paths"][path]["get"]
    return {p["name"]: p for p in operation["parameters"]}


def test_it_documents_the_read_routes_and_their_constraints(generated: str) -> None:
    document = json.loads(generated)
    history = _parameters(document, "/profiles/{profileId}/history")
    assert set(history) == {
        "profileId",
        "sport",
        "series",
        "team",
        "show",
        "season",
        "assetType",
        "assetId",
        "status",
        "limit",
        "cursor",
        "collapse",
        "if-none-match",
    }
    assert history["profileId"]["schema"]["pattern"] == ID_PATTERN
    asset_ids = history["assetId"]["schema"]["anyOf"][0]
    assert asset_ids["maxItems"] == MAX_ASSET_IDS
    assert asset_ids["items"]["pattern"] == ID_PATTERN
    assert history["limit"]["schema"]["minimum"] == 1
    assert history["limit"]["schema"]["maximum"] == 100
    statuses = document["components"]["schemas"]["Status"]["enum"]
    assert statuses == ["all", "in_progress", "completed", "ever_completed"]
    item = _parameters(document, "/profiles/{profileId}/history/{assetId}")
    assert item["assetId"]["schema"]["pattern"] == ID_PATTERN
    for path in ("/profiles/{profileId}/history", "/profiles/{profileId}/history/{assetId}"):
        responses = document["paths"][path]["get"]["responses"]
        assert {"200", "304", "401", "403", "422", "503"} <= set(responses)
        assert "ETag" in responses["200"]["headers"]
        assert document["paths"][path]["get"]["security"] == [{"jwt": []}]
    page = document["components"]["schemas"]["HistoryPage"]["properties"]
    assert set(page) == {"items", "nextCursor"}


def test_merging_keeps_both_functions_operations() -> None:
    part = {
        "openapi": "3.1.0",
        "paths": {"/a": {"get": {"operationId": "get_a", "responses": {}}}},
        "components": {"schemas": {"E": {"type": "object"}}},
    }
    other = {
        "openapi": "3.1.0",
        "paths": {
            "/a": {
                "put": {
                    "operationId": "put_a",
                    "responses": {
                        "200": {"content": {"x": {"schema": {"$ref": "#/components/schemas/E"}}}}
                    },
                }
            }
        },
        "components": {"schemas": {"E": {"type": "string"}}},
    }
    merged = openapi.merge({"reader": part, "writer": other})
    assert set(merged["paths"]["/a"]) == {"get", "put"}
    # the same name defined differently is kept apart, and the references follow
    ref = merged["paths"]["/a"]["put"]["responses"]["200"]["content"]["x"]["schema"]["$ref"]
    assert ref == "#/components/schemas/E_writer"
    assert merged["components"]["schemas"] == {"E_writer": {"type": "string"}}
    with pytest.raises(openapi.MergeError):
        openapi.merge({"reader": part, "again": part})


# --- for generators and people ----------------------------------------------------------


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for operations in document["paths"].values()
        for operation in operations.values()
    }


def test_operation_ids_are_the_names_a_person_would_write(generated: str) -> None:
    assert set(_operations(json.loads(generated))) == {
        "listHistory",
        "getHistoryItem",
        "getHistoryChanges",
        "putProgress",
        "postProgressBatch",
        "deleteHistoryItem",
        "dismissHistoryItem",
        "clearHistory",
    }


def _properties(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (schema_name, name, prop)
        for schema_name, schema in document["components"]["schemas"].items()
        for name, prop in schema.get("properties", {}).items()
    ]


def _parameters_of_all(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for op in _operations(document).values() for p in op.get("parameters", [])]


def test_titles_are_words_not_mangled_aliases(generated: str) -> None:
    document = json.loads(generated)
    titled = [(name, prop["title"]) for _, name, prop in _properties(document)]
    titled += [(p["name"], p["schema"]["title"]) for p in _parameters_of_all(document)]
    mangled = [(name, title) for name, title in titled if title == name.capitalize() != name]
    assert not [m for m in mangled if any(c.isupper() for c in m[0][1:])], mangled
    assert ("eventTime", "Event time") in titled
    assert ("assetId", "Asset ID") in titled


def test_every_field_parameter_and_event_type_is_described(generated: str) -> None:
    document = json.loads(generated)
    assert [(s, n) for s, n, prop in _properties(document) if not prop.get("description")] == []
    assert [p["name"] for p in _parameters_of_all(document) if not p.get("description")] == []
    schemas = document["components"]["schemas"]
    for enum in ("EventType", "Status", "RecordOutcome", "Collapse"):
        description = schemas[enum]["description"]
        for value in schemas[enum]["enum"]:
            assert f"``{value}``" in description, (enum, value)


def _examples_and_schemas(document: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(where, example value, schema) for every request body and response with a body."""
    found = []
    for op_id, operation in _operations(document).items():
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += [(status, r) for status, r in operation["responses"].items()]
        for where, body in bodies:
            for media in body.get("content", {}).values():
                examples = media.get("examples") or {}
                assert examples, f"{op_id} {where} has no example"
                for example in examples.values():
                    found.append((f"{op_id} {where}", example["value"], media["schema"]))
    return found


def test_every_body_and_response_has_an_example_valid_against_its_schema(
    generated: str,
) -> None:
    # schemathesis brings jsonschema (no stubs)
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # noqa: PLC0415

    document = json.loads(generated)
    found = _examples_and_schemas(document)
    assert len(found) >= 30
    for where, value, schema in found:
        # the document's components beside the schema: its "#/components/..." resolve
        rooted = {**schema, "components": document["components"]}
        errors = list(Draft202012Validator(rooted).iter_errors(value))
        assert not errors, f"{where}: {errors[0].message}"


def test_servers_name_the_local_server_and_the_deployed_one(generated: str) -> None:
    servers = json.loads(generated)["servers"]
    assert servers[0]["url"] == "http://127.0.0.1:8080"
    assert set(servers[1]["variables"]) == {"apiId", "region"}


def test_paging_semantics_are_stated_on_the_list_and_its_cursor(generated: str) -> None:
    operation = _operations(json.loads(generated))["listHistory"]
    assert "moves to the front" in operation["description"]
    assert "changes feed" in operation["description"]
    cursor = {p["name"]: p for p in operation["parameters"]}["cursor"]
    assert "moved to the front" in cursor["description"]
