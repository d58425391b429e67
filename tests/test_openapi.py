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
