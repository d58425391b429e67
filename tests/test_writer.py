"""The write API (functions/history_writer/app.py) on the real engines.

Every request is an API Gateway HTTP API (payload 2.0) event built from the files in
events/ and run through ``lambda_handler`` as Lambda runs it.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from devtools.lambda_context import FakeLambdaContext, load_module
from tests.conftest import load_event
from watch_history import runtime
from watch_history.connection import create_client
from watch_history.models import ID_PATTERN
from watch_history.settings import Settings
from watch_history.store import HistoryStore

PROFILE = "demo-profile-1"
ASSET = "ipl-2026-m01"
# The writes of one profile's history (events/), each as the app sends it.
WRITE_EVENTS = [
    "http_put_item.json",
    "http_delete_item.json",
    "http_post_dismiss.json",
    "http_delete_history.json",
]

# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def writer() -> Iterator[ModuleType]:
    """functions/history_writer/app.py, imported as Lambda would, with Powertools' env."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POWERTOOLS_SERVICE_NAME", "history-writer")
        yield load_module("history_writer")


@pytest.fixture
def store(make_store: Callable[..., HistoryStore]) -> HistoryStore:
    """The handler's store, with a key prefix of its own (the events name fixed ids)."""
    wired = make_store(key_prefix=f"w{uuid.uuid4().hex[:10]}:")
    runtime.set_store(wired)
    return wired


# --- helpers --------------------------------------------------------------------------


def call(writer: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON body or None)."""
    response = writer.lambda_handler(event, FakeLambdaContext("history-writer"))
    body = response.get("body")
    parsed = json.loads(body) if body else None
    return int(response["statusCode"]), dict(response.get("headers") or {}), parsed


def put_event(
    profile: str = PROFILE, asset: str = ASSET, body: dict[str, Any] | str | None = None
) -> dict[str, Any]:
    event = load_event("http_put_item.json")
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return at_path(event, profile, asset)


def at_path(event: dict[str, Any], profile: str, asset: str | None = None) -> dict[str, Any]:
    """The event for another profile/asset (rawPath is what Powertools routes on)."""
    event = copy.deepcopy(event)
    path = f"/profiles/{profile}/history" + (f"/{asset}" if asset is not None else "")
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"profileId": profile, **({"assetId": asset} if asset else {})}
    return event


def with_claims(event: dict[str, Any], claims: dict[str, Any] | None) -> dict[str, Any]:
    event = copy.deepcopy(event)
    if claims is None:
        event["requestContext"].pop("authorizer", None)
    else:
        event["requestContext"]["authorizer"]["jwt"]["claims"] = claims
    return event


def admin(event: dict[str, Any]) -> dict[str, Any]:
    return with_claims(event, {"sub": "ops", "scope": "history:admin"})


def body_of(event: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event["body"])
    return data


def nothing_stored(store: HistoryStore) -> bool:
    return not store.client.keys(f"{store.settings.key_prefix}*")


# --- PUT ------------------------------------------------------------------------------


def test_put_event_returns_and_stores_the_item(writer: ModuleType, store: HistoryStore) -> None:
    status, headers, body = call(writer, load_event("http_put_item.json"))

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    stored = store.get_item(PROFILE, ASSET)
    assert stored is not None
    assert body == stored.to_api()
    assert body["position"] == 2400.0
    assert body["lastWatchedAt"] == "2026-11-20T19:40:00.000Z"
    assert body["teams"] == ["csk", "mi"]
    assert body["deviceId"] == "phone-1"


def test_an_older_put_returns_the_stored_item_unchanged(
    writer: ModuleType, store: HistoryStore
) -> None:
    call(writer, load_event("http_put_item.json"))
    before = store.get_item(PROFILE, ASSET)
    older = body_of(load_event("http_put_item.json")) | {
        "position": 10,
        "eventTime": "2026-11-20T19:00:00Z",
    }

    status, _, body = call(writer, put_event(body=older))

    assert status == 200
    after = store.get_item(PROFILE, ASSET)
    assert before is not None
    assert after is not None
    assert body == after.to_api()
    # what the update stated was not stored; it only says the asset was seen earlier
    assert (after.position, after.last_watched_at) == (before.position, before.last_watched_at)
    assert body["firstWatchedAt"] == "2026-11-20T19:00:00.000Z"


def test_event_time_defaults_to_now_and_unknown_fields_are_ignored(
    writer: ModuleType, store: HistoryStore
) -> None:
    status, _, body = call(
        writer, put_event(body={"position": 42, "duration": 100, "playerVersion": "9.1"})
    )

    assert status == 200
    last = datetime.fromisoformat(body["lastWatchedAt"])
    assert abs(datetime.now(UTC) - last) < timedelta(seconds=30)
    assert body["position"] == 42.0
    assert "playerVersion" not in body


def test_put_complete_marks_as_watched(writer: ModuleType, store: HistoryStore) -> None:
    status, _, body = call(
        writer,
        put_event(body={"position": 0, "eventType": "complete", "eventTime": 1795200000000}),
    )
    assert status == 200
    assert body["completed"] is True
    assert body["completedAt"] == "2026-11-20T18:40:00.000Z"


def test_a_put_older_than_a_removal_is_409_and_stores_nothing(
    writer: ModuleType, store: HistoryStore
) -> None:
    call(writer, load_event("http_put_item.json"))
    status, _, _ = call(writer, load_event("http_delete_item.json"))
    assert status == 204

    status, _, body = call(writer, load_event("http_put_item.json"))

    assert status == 409
    assert "was removed" in body["message"]
    assert store.get_item(PROFILE, ASSET) is None


# --- DELETE ---------------------------------------------------------------------------


def test_delete_item_is_idempotent(writer: ModuleType, store: HistoryStore) -> None:
    call(writer, load_event("http_put_item.json"))
    other = body_of(load_event("http_put_item.json"))
    assert call(writer, put_event(asset="other-asset", body=other))[0] == 200

    for _ in range(2):
        status, _, body = call(writer, load_event("http_delete_item.json"))
        assert (status, body) == (204, None)

    assert store.get_item(PROFILE, ASSET) is None
    assert store.get_item(PROFILE, "other-asset") is not None


def test_delete_history_clears_everything(writer: ModuleType, store: HistoryStore) -> None:
    for asset in ("a1", "a2", "a3"):
        assert call(writer, put_event(asset=asset))[0] == 200

    status, _, body = call(writer, load_event("http_delete_history.json"))

    assert (status, body) == (204, None)
    assert store.get_items(PROFILE, ["a1", "a2", "a3"]) == {}
    assert call(writer, load_event("http_delete_history.json"))[0] == 204


# --- authorization --------------------------------------------------------------------


@pytest.mark.parametrize("name", WRITE_EVENTS)
def test_missing_claims_are_401_and_another_profile_is_403(
    writer: ModuleType, store: HistoryStore, name: str
) -> None:
    event = load_event(name)

    status, headers, body = call(writer, with_claims(event, None))
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert body["message"]

    status, _, body = call(writer, with_claims(event, {"sub": "x", "scope": "history:write"}))
    assert status == 401  # claims, but no profile_id claim

    status, _, body = call(writer, with_claims(event, {"sub": "x", "profile_id": "someone-else"}))
    assert status == 403
    assert "demo-profile-1" in body["message"]
    assert nothing_stored(store)


def test_a_profile_list_claim_and_the_admin_scope_grant_access(
    writer: ModuleType, store: HistoryStore
) -> None:
    event = load_event("http_put_item.json")
    listed = with_claims(event, {"sub": "x", "profile_id": "kids-1 demo-profile-1"})
    assert call(writer, listed)[0] == 200
    assert call(writer, admin(put_event(profile="someone-else")))[0] == 200


# --- bad input: 4xx with a message, nothing stored ------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"position": "x"}, 422, "body.position"),
        ({"position": -1}, 422, "body.position"),
        ({"position": 10, "duration": 0}, 422, "body.duration"),
        ({"position": 10, "eventTime": "2026-11-20T10:00:00"}, 422, "timezone"),
        ({"position": 10, "eventTime": 1795200000}, 422, "greater than 2000-01-01"),
        ({"position": 10, "eventType": "rewind"}, 422, "body.eventType"),
        ({"position": 10, "deviceId": "a b"}, 422, "body.deviceId"),
        ({"position": 10, "asset": {"teams": ["t"] * 17}}, 422, "body.asset.teams"),
        ({"duration": 100}, 422, "position is required unless marking as watched"),
        (
            {"position": 1, "completedAt": 1795200000000, "eventTime": 1795200000000},
            422,
            "not both",
        ),
        ({"completedAt": 1795200000000, "eventType": "pause"}, 422, "eventType complete"),
        ("", 422, "body"),
        ("{not json", 400, "not valid JSON"),
        ("[" * 5000, 400, "nests too deeply"),
    ],
)
def test_bad_bodies_are_rejected_with_a_clear_message(
    writer: ModuleType, store: HistoryStore, body: dict[str, Any] | str, status: int, says: str
) -> None:
    got, _, reply = call(writer, put_event(body=body))
    assert got == status
    assert says in reply["message"]
    assert nothing_stored(store)


def test_an_event_time_days_ahead_is_422(writer: ModuleType, store: HistoryStore) -> None:
    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    status, _, body = call(writer, put_event(body={"position": 1, "eventTime": ahead}))
    assert status == 422
    assert "in the future" in body["message"]
    assert nothing_stored(store)


def test_a_body_over_16_kib_is_413(writer: ModuleType, store: HistoryStore) -> None:
    padded = {"position": 1, "padding": "x" * (16 * 1024)}
    status, _, body = call(writer, put_event(body=padded))
    assert status == 413
    assert "16384" in body["message"]

    encoded = put_event(body=padded)  # the same, base64-encoded by API Gateway
    encoded["body"] = base64.b64encode(encoded["body"].encode()).decode()
    encoded["isBase64Encoded"] = True
    assert call(writer, encoded)[0] == 413
    assert nothing_stored(store)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_json_is_415(
    writer: ModuleType, store: HistoryStore, content_type: str
) -> None:
    # (curl -d sends form-encoded by default: the JSON must not be read as form fields)
    event = put_event()
    event["headers"]["content-type"] = content_type
    status, _, body = call(writer, event)
    assert status == 415
    assert "application/json" in body["message"]
    assert nothing_stored(store)


HOSTILE_IDS = ['a"]', "x)||@.y", "{p}", "a%22%5D", "a b", "*", "x" * 129, "é"]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
@pytest.mark.parametrize("where", ["profile", "asset"])
def test_hostile_ids_are_rejected_and_nothing_is_stored(
    writer: ModuleType, store: HistoryStore, bad: str, where: str
) -> None:
    profile, asset = (bad, ASSET) if where == "profile" else (PROFILE, bad)
    for event in (
        put_event(profile, asset),
        at_path(load_event("http_delete_item.json"), profile, asset),
    ):
        status, _, body = call(writer, admin(event))
        assert status in (404, 422), (event["rawPath"], status, body)
        assert body["message"]
    if where == "profile":
        status, _, body = call(writer, admin(at_path(load_event("http_delete_history.json"), bad)))
        assert status in (404, 422)
    assert nothing_stored(store)


def test_bad_path_ids_name_the_parameter(writer: ModuleType, store: HistoryStore) -> None:
    status, _, body = call(writer, admin(put_event("x)||@.y", ASSET)))
    assert status == 422
    assert "path.profileId" in body["message"]
    assert body["errors"][0]["loc"] == ["path", "profileId"]


def test_an_unknown_route_is_a_json_404(writer: ModuleType, store: HistoryStore) -> None:
    event = at_path(load_event("http_put_item.json"), PROFILE)  # PUT on the collection
    status, _, body = call(writer, event)
    assert status == 404
    assert body == {"message": "Not Found"}  # what API Gateway says for no route


# --- the store is down ----------------------------------------------------------------


@pytest.mark.parametrize("name", WRITE_EVENTS)
def test_an_unreachable_store_is_503_with_retry_after(writer: ModuleType, name: str) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1", redis_cluster=False, key_prefix="down:"
    )  # nothing there
    runtime.set_store(HistoryStore(create_client(settings), settings))
    try:
        status, headers, body = call(writer, load_event(name))
    finally:
        runtime.set_store(None)
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert "retry" in body["message"]


# --- OpenAPI --------------------------------------------------------------------------


def test_the_openapi_schema_documents_the_routes(writer: ModuleType) -> None:
    schema = writer.app.get_openapi_schema().model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    item = schema["paths"]["/profiles/{profileId}/history/{assetId}"]
    collection = schema["paths"]["/profiles/{profileId}/history"]
    assert set(item) == {"put", "delete"}
    assert set(collection) == {"delete", "post"}
    params = {p["name"]: p for p in item["put"]["parameters"]}
    assert params["profileId"]["in"] == "path"
    assert params["assetId"]["schema"]["pattern"] == ID_PATTERN
    assert params["assetId"]["schema"]["maxLength"] == 128
    body_ref = json.dumps(item["put"]["requestBody"])
    assert "ProgressBody" in body_ref
    assert {"200", "400", "401", "403", "409", "413", "415", "422", "503"} <= set(
        item["put"]["responses"]
    )
    assert "HistoryItem" in json.dumps(item["put"]["responses"]["200"])
    assert "204" in item["delete"]["responses"]
    assert "204" in collection["delete"]["responses"]
