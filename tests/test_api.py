"""The apps' API as they call it: sync, batches, outcomes, marking as
watched, ids in paths, one error shape. Through the real handlers, on HTTP API 2.0
events built from events/ (the shapes API Gateway sends), on both engines.
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
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from devtools.lambda_context import FakeLambdaContext, load_module
from tests.conftest import NOT_NUMBERS, load_event
from watch_history import runtime
from watch_history.http_api import serialize
from watch_history.settings import Settings
from watch_history.store import HistoryStore

LATER = datetime.now(UTC) + timedelta(minutes=10)  # newer than any removal made below
EARLIER = (datetime.now(UTC) - timedelta(hours=2)).isoformat()  # older than any removal


@pytest.fixture(scope="module")
def apps() -> dict[str, ModuleType]:
    return {"reader": load_module("history_reader"), "writer": load_module("history_writer")}


@pytest.fixture
def store(make_store: Callable[..., HistoryStore]) -> Iterator[HistoryStore]:
    # LATER is 10 min ahead: a store whose clock-skew bound (300 s by default) allows it
    wired = make_store(key_prefix=f"a{uuid.uuid4().hex[:10]}:", max_future_skew_seconds=3_600)
    runtime.set_store(wired)
    yield wired
    runtime.set_store(None)


# Every route, and the event file it is built from.
ROUTES = {
    ("GET", "/profiles/{profileId}/history"): "http_get_sport.json",
    ("GET", "/profiles/{profileId}/history/changes"): "http_sync_changes.json",
    ("GET", "/profiles/{profileId}/history/{assetId}"): "http_get_asset.json",
    ("PUT", "/profiles/{profileId}/history/{assetId}"): "http_put_item.json",
    ("POST", "/profiles/{profileId}/history"): "http_post_batch.json",
    ("DELETE", "/profiles/{profileId}/history/{assetId}"): "http_delete_item.json",
    ("POST", "/profiles/{profileId}/history/{assetId}/dismiss"): "http_post_dismiss.json",
    ("DELETE", "/profiles/{profileId}/history"): "http_delete_history.json",
}


def event(
    method: str,
    template: str,
    profile: str,
    asset: str | None = None,
    *,
    body: Any = None,
    query: str = "",
    decoded_path: bool = False,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The event API Gateway sends for a request whose ids were percent-encoded by the
    client (``encodeURIComponent``). ``rawPath`` is the path as the client sent it, or,
    with ``decoded_path``, already decoded (both shapes are handled the same);
    ``pathParameters`` are decoded."""
    built = copy.deepcopy(load_event(ROUTES[(method, template)]))
    ids = {"profileId": profile, **({"assetId": asset} if asset is not None else {})}
    path = template
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value if decoded_path else quote(value, safe=""))
    built["rawPath"] = built["requestContext"]["http"]["path"] = path
    built["pathParameters"] = ids
    built["rawQueryString"] = query
    built.pop("queryStringParameters", None)
    if query:
        built["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&"))
    built["requestContext"]["authorizer"]["jwt"]["claims"]["profile_id"] = profile
    if body is not None:
        built["body"] = body if isinstance(body, str) else json.dumps(body)
    built["headers"].update(headers or {})
    return built


def call(apps: dict[str, ModuleType], built: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    app = apps["reader" if built["requestContext"]["http"]["method"] == "GET" else "writer"]
    response = app.lambda_handler(built, FakeLambdaContext("api"))
    raw = response.get("body")
    return (
        int(response["statusCode"]),
        dict(response.get("headers") or {}),
        (json.loads(raw) if raw else None),
    )


def put_body(position: float = 600, **extra: Any) -> dict[str, Any]:
    return {"position": position, "duration": 3000, "eventTime": LATER.isoformat(), **extra}


# --- ids in paths -----------------------------------------------------------------------


@pytest.mark.parametrize("decoded_path", [False, True], ids=["encoded", "decoded"])
def test_ids_are_percent_decoded_once_on_every_route(
    apps: dict[str, ModuleType], store: HistoryStore, decoded_path: bool
) -> None:
    profile, asset = f"ns:p:{uuid.uuid4().hex[:6]}", "ns:a:1"
    status, _, _ = call(
        apps,
        event(
            "PUT",
            "/profiles/{profileId}/history/{assetId}",
            profile,
            asset,
            body=put_body(),
            decoded_path=decoded_path,
        ),
    )
    assert status == 200
    assert store.get_item(profile, asset) is not None  # stored under the decoded ids
    status, _, item = call(
        apps,
        event(
            "GET",
            "/profiles/{profileId}/history/{assetId}",
            profile,
            asset,
            decoded_path=decoded_path,
        ),
    )
    assert (status, item["assetId"]) == (200, asset)
    status, _, page = call(
        apps, event("GET", "/profiles/{profileId}/history", profile, decoded_path=decoded_path)
    )
    assert [i["assetId"] for i in page["items"]] == [asset]
    status, _, changes = call(
        apps,
        event("GET", "/profiles/{profileId}/history/changes", profile, decoded_path=decoded_path),
    )
    assert [i["assetId"] for i in changes["items"]] == [asset]
    batch = {"updates": [{"assetId": "ns:a:2", **put_body()}]}
    status, _, result = call(
        apps,
        event(
            "POST", "/profiles/{profileId}/history", profile, body=batch, decoded_path=decoded_path
        ),
    )
    assert result["results"][0]["outcome"] == "applied"
    status, _, _ = call(
        apps,
        event(
            "POST",
            "/profiles/{profileId}/history/{assetId}/dismiss",
            profile,
            asset,
            decoded_path=decoded_path,
        ),
    )
    assert status == 204
    dismissed = store.get_item(profile, asset)
    assert dismissed is not None
    assert dismissed.dismissed_at is not None
    status, _, _ = call(
        apps,
        event(
            "DELETE",
            "/profiles/{profileId}/history/{assetId}",
            profile,
            asset,
            decoded_path=decoded_path,
        ),
    )
    assert status == 204
    assert store.get_item(profile, asset) is None
    status, _, _ = call(
        apps, event("DELETE", "/profiles/{profileId}/history", profile, decoded_path=decoded_path)
    )
    assert status == 204
    assert store.get_item(profile, "ns:a:2") is None


def test_an_id_is_decoded_once_not_twice(apps: dict[str, ModuleType], store: HistoryStore) -> None:
    """``%253A`` is the id ``%3A`` (invalid: 422), never ``:``."""
    built = event("GET", "/profiles/{profileId}/history/{assetId}", "p1", "x")
    built["rawPath"] = "/profiles/p1/history/ns%253Aa"
    status, _, body = call(apps, built)
    assert status == 422
    assert "assetId" in body["message"]


@pytest.mark.parametrize("dots", [".", "..", "..."])
def test_ids_of_only_dots_are_refused(
    apps: dict[str, ModuleType], store: HistoryStore, dots: str
) -> None:
    built = event("PUT", "/profiles/{profileId}/history/{assetId}", "p1", dots, body=put_body())
    status, _, body = call(apps, built)
    assert status == 422
    assert body["errors"][0]["loc"] == ["path", "assetId"]
    assert store.get_item("p1", "a.b") is None
    ok = event("PUT", "/profiles/{profileId}/history/{assetId}", "p1", ".a.", body=put_body())
    assert call(apps, ok)[0] == 200  # dots with anything else are fine


# --- sync -------------------------------------------------------------------------------


def test_a_sync_round_through_the_api(apps: dict[str, ModuleType], store: HistoryStore) -> None:
    profile = f"p-{uuid.uuid4().hex[:8]}"
    changes = "/profiles/{profileId}/history/changes"
    for asset in ("a", "b"):
        put = event(
            "PUT", "/profiles/{profileId}/history/{assetId}", profile, asset, body=put_body()
        )
        assert call(apps, put)[0] == 200
    status, headers, first = call(apps, event("GET", changes, profile))
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert first["reset"] is True
    assert sorted(i["assetId"] for i in first["items"]) == ["a", "b"]
    call(apps, event("DELETE", "/profiles/{profileId}/history/{assetId}", profile, "a"))
    status, _, second = call(
        apps, event("GET", changes, profile, query=f"since={first['nextToken']}")
    )
    assert status == 200
    assert (second["reset"], second["removed"], second["items"]) == (False, ["a"], [])
    # another profile's token, and a malformed one: 422; the empty since: everything
    other = event("GET", changes, "someone-else", query=f"since={first['nextToken']}")
    assert call(apps, other)[0] == 422
    assert call(apps, event("GET", changes, profile, query="since=zz"))[0] == 422
    assert call(apps, event("GET", changes, profile, query="since="))[2]["reset"] is True


def test_a_token_the_history_no_longer_covers_is_410(
    apps: dict[str, ModuleType], store: HistoryStore
) -> None:
    profile = f"p-{uuid.uuid4().hex[:8]}"
    changes = "/profiles/{profileId}/history/changes"
    call(
        apps, event("PUT", "/profiles/{profileId}/history/{assetId}", profile, "a", body=put_body())
    )
    token = call(apps, event("GET", changes, profile))[2]["nextToken"]
    call(apps, event("DELETE", "/profiles/{profileId}/history/{assetId}", profile, "a"))
    store.client.execute_command("JSON.SET", store.key(profile), "$.tts[0]", 1)  # aged out
    call(apps, event("DELETE", "/profiles/{profileId}/history/{assetId}", profile, "b"))
    status, _, body = call(apps, event("GET", changes, profile, query=f"since={token}"))
    assert status == 410
    assert "call without since" in body["message"]


# --- dismiss from continue watching --------------------------------------------------


def test_dismiss_hides_from_continue_watching_until_watched_again(
    apps: dict[str, ModuleType], store: HistoryStore
) -> None:
    profile = f"p-{uuid.uuid4().hex[:8]}"
    item = "/profiles/{profileId}/history/{assetId}"
    history = "/profiles/{profileId}/history"
    for asset in ("a", "b"):
        call(apps, event("PUT", item, profile, asset, body=put_body()))
    token = call(apps, event("GET", f"{history}/changes", profile))[2]["nextToken"]

    dismiss = event("POST", f"{item}/dismiss", profile, "a")
    status, headers, body = call(apps, dismiss)
    assert (status, body, headers["Cache-Control"]) == (204, None, "no-store")
    assert call(apps, dismiss)[0] == 204  # idempotent

    rail = call(apps, event("GET", history, profile, query="status=in_progress"))[2]
    assert [i["assetId"] for i in rail["items"]] == ["b"]
    everything = call(apps, event("GET", history, profile))[2]
    assert {i["assetId"]: "dismissedAt" in i for i in everything["items"]} == {
        "a": True,
        "b": False,
    }
    changes = call(apps, event("GET", f"{history}/changes", profile, query=f"since={token}"))[2]
    assert [i["assetId"] for i in changes["items"]] == ["a"]
    assert "dismissedAt" in changes["items"][0]

    resumed = put_body(eventTime=(LATER + timedelta(seconds=1)).isoformat())
    call(apps, event("PUT", item, profile, "a", body=resumed))
    rail = call(apps, event("GET", history, profile, query="status=in_progress"))[2]
    assert [i["assetId"] for i in rail["items"]] == ["a", "b"]


def test_dismissing_an_asset_not_in_the_history_is_404(
    apps: dict[str, ModuleType], store: HistoryStore
) -> None:
    profile = f"p-{uuid.uuid4().hex[:8]}"
    status, _, body = call(
        apps, event("POST", "/profiles/{profileId}/history/{assetId}/dismiss", profile, "nope")
    )
    assert status == 404
    assert body == {"message": "asset nope is not in the history"}
    assert not store.client.exists(store.key(profile))


# --- writes say what they did ---------------------------------------------------------


def test_the_put_says_its_outcome(apps: dict[str, ModuleType], store: HistoryStore) -> None:
    profile = f"p-{uuid.uuid4().hex[:8]}"
    item = "/profiles/{profileId}/history/{assetId}"
    status, headers, _ = call(apps, event("PUT", item, profile, "a", body=put_body()))
    assert (status, headers["X-Update-Outcome"]) == (200, "applied")
    older = put_body(5, eventTime=(LATER - timedelta(hours=1)).isoformat())
    status, headers, body = call(apps, event("PUT", item, profile, "a", body=older))
    assert (status, headers["X-Update-Outcome"], body["position"]) == (200, "stale", 600.0)
    call(apps, event("DELETE", item, profile, "b"))
    late = put_body(eventTime=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
    status, headers, _ = call(apps, event("PUT", item, profile, "b", body=late))
    assert (status, headers["X-Update-Outcome"]) == (409, "ignored")


def test_mark_watched_keeps_the_known_duration_as_the_position(
    apps: dict[str, ModuleType], store: HistoryStore
) -> None:
    """The README's example: a watched title shows as watched, not as not started."""
    profile = f"p-{uuid.uuid4().hex[:8]}"
    item = "/profiles/{profileId}/history/{assetId}"
    watching = {"position": 1843, "duration": 2633, "eventTime": LATER.isoformat()}
    call(apps, event("PUT", item, profile, "ep-s02e05", body=watching))
    later = (LATER + timedelta(seconds=1)).isoformat()
    status, _, body = call(
        apps,
        event(
            "PUT", item, profile, "ep-s02e05", body={"eventType": "complete", "eventTime": later}
        ),
    )
    assert status == 200
    assert (body["completed"], body["position"], body["progress"]) == (True, 2633.0, 1.0)


def test_mark_watched_without_a_position_at_a_given_time(
    apps: dict[str, ModuleType], store: HistoryStore
) -> None:
    profile = f"p-{uuid.uuid4().hex[:8]}"
    item = "/profiles/{profileId}/history/{assetId}"
    watched = "2026-11-01T20:00:00.000Z"
    status, _, body = call(
        apps, event("PUT", item, profile, "film", body={"completedAt": watched, "duration": 5400})
    )
    assert status == 200
    assert (body["completed"], body["completedAt"], body["lastWatchedAt"]) == (
        True,
        watched,
        watched,
    )
    assert body["position"] == 5400.0  # the end, when the duration is known
    status, _, body = call(apps, event("PUT", item, profile, "doc", body={"eventType": "complete"}))
    assert (status, body["completed"], body["position"]) == (200, True, 0.0)
    # A title watched long ago, marked now, after a newer rewatch started: it stays the
    # rewatch (stale), and completedAt says it was completed back then.
    call(apps, event("PUT", item, profile, "old", body=put_body(60)))
    status, headers, body = call(
        apps, event("PUT", item, profile, "old", body={"completedAt": watched})
    )
    assert (status, headers["X-Update-Outcome"]) == (200, "stale")
    assert (body["completed"], body["completedAt"], body["position"]) == (False, watched, 60.0)
    ever = call(
        apps, event("GET", "/profiles/{profileId}/history", profile, query="status=ever_completed")
    )[2]
    assert sorted(i["assetId"] for i in ever["items"]) == ["doc", "film", "old"]


@pytest.fixture
def private_store(private_client: Any, settings: Settings) -> Iterator[HistoryStore]:
    """``store`` on a server of the test's own (its commands are counted there)."""
    wired = HistoryStore(
        private_client, settings.model_copy(update={"max_future_skew_seconds": 3_600})
    )
    runtime.set_store(wired)
    yield wired
    runtime.set_store(None)


@pytest.mark.own_servers  # counts calls on the server: nobody else may write there
def test_a_batch_is_one_store_call_with_an_outcome_per_update(
    apps: dict[str, ModuleType], private_store: HistoryStore
) -> None:
    store = private_store
    profile = f"p-{uuid.uuid4().hex[:8]}"
    item = "/profiles/{profileId}/history/{assetId}"
    call(apps, event("PUT", item, profile, "seen", body=put_body(900)))
    call(apps, event("DELETE", item, profile, "gone"))
    older = (LATER - timedelta(hours=1)).isoformat()
    updates = [
        {"assetId": "new", **put_body(10)},
        {"assetId": "seen", **put_body(5, eventTime=older)},  # stale
        {"assetId": "gone", **put_body(eventTime=EARLIER)},  # before its removal: ignored
        {"assetId": "bad id", **put_body()},
        {"assetId": "x", "position": -1},
        {"assetId": "y", "position": 1, "eventTime": "2999-01-01T00:00:00Z"},
        "not an object",
        {"assetId": "done", "completedAt": "2026-11-01T20:00:00Z"},
    ]
    nodes = _nodes(store)
    for node in nodes:
        node.config_resetstat()
    status, _, body = call(
        apps, event("POST", "/profiles/{profileId}/history", profile, body={"updates": updates})
    )
    calls = sum(n.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) for n in nodes)
    assert status == 200
    results = body["results"]
    assert [(r["index"], r.get("assetId"), r["outcome"]) for r in results] == [
        (0, "new", "applied"),
        (1, "seen", "stale"),
        (2, "gone", "ignored"),
        (3, "bad id", "invalid"),
        (4, "x", "invalid"),
        (5, "y", "invalid"),
        (6, None, "invalid"),
        (7, "done", "applied"),
    ]
    reasons = [r.get("reason", "") for r in results]
    assert (
        reasons[3] == "assetId: not a valid id: use 1 to 128 of A-Z a-z 0-9 . _ : -, not only dots"
    )
    assert "position" in reasons[4]
    assert "future" in reasons[5] or "eventTime" in reasons[5]
    assert reasons[6]
    assert calls == 1  # one script call for the whole batch
    assert store.get_item(profile, "new") is not None
    assert store.get_item(profile, "x") is None


@pytest.mark.parametrize("fields", NOT_NUMBERS, ids=json.dumps)
def test_a_string_or_boolean_for_a_number_is_refused_alone_and_in_a_batch(
    apps: dict[str, ModuleType], store: HistoryStore, fields: dict[str, Any]
) -> None:
    profile = f"p-{uuid.uuid4().hex[:8]}"
    put = event("PUT", "/profiles/{profileId}/history/{assetId}", profile, "a1", body=fields)
    status, _, body = call(apps, put)
    assert status == 422, body
    assert body["errors"]
    updates = [{"assetId": "a1", **fields}, {"assetId": "a2", **put_body()}]
    batch = event("POST", "/profiles/{profileId}/history", profile, body={"updates": updates})
    status, _, body = call(apps, batch)
    assert [r["outcome"] for r in body["results"]] == ["invalid", "applied"]
    assert store.get_item(profile, "a1") is None


def test_a_batch_over_100_updates_or_empty_is_422(
    apps: dict[str, ModuleType], store: HistoryStore
) -> None:
    batch = "/profiles/{profileId}/history"
    many = {"updates": [{"assetId": f"a{k}", **put_body()} for k in range(101)]}
    bodies: list[dict[str, Any]] = [many, {"updates": []}, {}]
    for body in bodies:
        status, _, reply = call(apps, event("POST", batch, "p1", body=body))
        assert status == 422, reply
        assert reply["errors"][0]["loc"][:2] == ["body", "updates"]
    assert store.get_item("p1", "a0") is None


def _nodes(store: HistoryStore) -> list[Any]:
    client = store.client
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(n) for n in client.get_primaries()]
    return [client]


# --- one error shape ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["APPLICATION/JSON", "Application/Json; charset=UTF-8", "application/vnd.api+json"],
)
def test_media_types_are_compared_case_insensitively(
    apps: dict[str, ModuleType], store: HistoryStore, content_type: str
) -> None:
    built = event(
        "PUT",
        "/profiles/{profileId}/history/{assetId}",
        "p1",
        "m",
        body=put_body(),
        headers={"content-type": content_type},
    )
    assert call(apps, built)[0] == 200


def test_every_error_has_the_same_shape_and_serializer(
    apps: dict[str, ModuleType], store: HistoryStore
) -> None:
    """415 (answered before routing), 404 (no route), 400, 422: the same JSON body,
    serialized the same way, and the same headers."""
    item = "/profiles/{profileId}/history/{assetId}"
    form = event(
        "PUT",
        item,
        "p1",
        "m",
        body="position=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    no_route = event("PUT", item, "p1", "m", body=put_body())
    no_route["rawPath"] = "/profiles/p1/elsewhere"
    bad_json = event("PUT", item, "p1", "m", body="{nope")
    bad_field = event("PUT", item, "p1", "m", body={"position": -1})
    for built, status in ((form, 415), (no_route, 404), (bad_json, 400), (bad_field, 422)):
        app = apps["writer"]
        response = app.lambda_handler(built, FakeLambdaContext("api"))
        assert response["statusCode"] == status
        assert response["headers"]["Content-Type"] == "application/json"
        assert response["headers"]["Cache-Control"] == "no-store"
        parsed = json.loads(response["body"])
        assert response["body"] == serialize(parsed)
        assert isinstance(parsed["message"], str)
    assert json.loads(apps["writer"].lambda_handler(no_route, FakeLambdaContext("a"))["body"]) == {
        "message": "Not Found"
    }


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    since=st.one_of(
        st.text(max_size=600),
        st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).decode()),
        st.lists(st.one_of(st.integers(), st.text(max_size=12), st.none()), max_size=4).map(
            lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("=")
        ),
    )
)
def test_no_since_gets_a_server_error(
    apps: dict[str, ModuleType], store: HistoryStore, since: str
) -> None:
    built = event("GET", "/profiles/{profileId}/history/changes", "p1")
    built["queryStringParameters"] = {"since": since}
    built["rawQueryString"] = "since=" + quote(since)
    status, _, body = call(apps, built)
    assert status in (200, 400, 410, 422), body
    if status != 200:
        assert isinstance(body["message"], str)
