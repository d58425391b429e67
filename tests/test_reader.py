"""The read Lambda end to end: HTTP API events in, responses out, the real engines behind.

The events are the files in events/ (the ones ``sam local invoke -e`` takes); the demo
profile they name is seeded here with the history below before each test.
"""

from __future__ import annotations

import json
import socket
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

import functions.history_reader.app as reader
from devtools.lambda_context import FakeLambdaContext
from tests.conftest import EVENTS, load_event
from watch_history.connection import ClientType
from watch_history.errors import StaleUpdateError
from watch_history.models import AssetInfo, EventType, HistoryQuery, ProgressUpdate
from watch_history.runtime import set_store
from watch_history.settings import Settings
from watch_history.store import HistoryStore

DEMO = "demo-profile-1"
T0 = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)

CRICKET = {"type": "match", "sport": "cricket"}
IPL = {**CRICKET, "series": "ipl-2026"}
T20 = {**CRICKET, "series": "t20-world-cup-2026"}
EPL = {"type": "match", "sport": "football", "series": "epl-2025-26"}
HOUSE = {"type": "episode", "show": "house-of-ash"}
TIDE = {"type": "episode", "show": "tidewater", "season": 1}
# asset, hours before T0, position, duration, complete, asset fields
DEMO_HISTORY: list[tuple[str, float, float, float | None, bool, dict[str, Any]]] = [
    ("ipl-2026-m01",     0,   1800,  12000, False, {**IPL, "teams": ["csk", "mi"]}),
    ("s-tide-s01e05",    0.5, 12,    2400,  False, {**TIDE, "episode": 5}),  # just started
    ("s-house-s02e03",   1,   600,   2700,  False, {**HOUSE, "season": 2, "episode": 3}),
    ("ipl-2026-m02",     2,   11900, 12000, False, {**IPL, "teams": ["rcb", "gt"]}),
    ("s-house-s02e02",   3,   2650,  2700,  True,  {**HOUSE, "season": 2, "episode": 2}),
    ("epl-2026-m10",     4,   3000,  6000,  False, {**EPL, "teams": ["ars", "che"]}),
    ("s-house-s01e01",   5,   1500,  2700,  False, {**HOUSE, "season": 1, "episode": 1}),
    ("movie-dune",       6,   4000,  9000,  False, {"type": "movie", "title": "Dune"}),
    ("ipl-2026-m03",     7,   900,   12000, False, {**IPL, "teams": ["kkr", "rcb"]}),
    ("t20wc-2026-final", 8,   10900, 11000, False, {**T20, "teams": ["ind", "aus"]}),
    ("s-tide-s01e04",    9,   1200,  2400,  False, {**TIDE, "episode": 4}),
]  # fmt: skip

EXPECTED: dict[str, list[str]] = {
    "http_get_assets.json": ["ipl-2026-m01", "s-house-s02e03", "movie-dune"],
    "http_get_sport.json": ["ipl-2026-m01", "ipl-2026-m02", "ipl-2026-m03", "t20wc-2026-final"],
    "http_get_sport_series.json": ["ipl-2026-m01", "ipl-2026-m02", "ipl-2026-m03"],
    "http_get_sport_series_team.json": ["ipl-2026-m01", "ipl-2026-m03"],
    "http_get_show.json": ["s-house-s02e03", "s-house-s02e02", "s-house-s01e01"],
    "http_get_show_season.json": ["s-house-s02e03", "s-house-s02e02"],
    "http_get_in_progress.json": [
        "ipl-2026-m01",
        "s-house-s02e03",
        "epl-2026-m10",
        "s-house-s01e01",
        "movie-dune",
        "ipl-2026-m03",
        "s-tide-s01e04",
    ],
    "http_get_collapsed.json": [
        "ipl-2026-m01",
        "s-house-s02e03",
        "epl-2026-m10",
        "movie-dune",
        "ipl-2026-m03",
        "s-tide-s01e04",
    ],
    "http_get_paged.json": ["ipl-2026-m02", "s-house-s02e02", "epl-2026-m10"],
}
LIST_EVENTS = sorted(EXPECTED)
ALL_EVENTS = sorted(p.name for p in EVENTS.glob("http_get_*.json"))


def demo_update(
    asset_id: str,
    hours: float,
    position: float,
    duration: float | None,
    complete: bool,
    asset: dict[str, Any],
) -> ProgressUpdate:
    return ProgressUpdate(
        profile_id=DEMO,
        asset_id=asset_id,
        position=position,
        duration=duration,
        event_time=T0 - timedelta(hours=hours),
        event_type=EventType.COMPLETE if complete else EventType.HEARTBEAT,
        device_id="tv-1",
        asset=AssetInfo.model_validate(asset),
    )


class CountingStore(HistoryStore):
    """The real store, counting the round trips it makes (bad input must make none)."""

    calls = 0

    def _read_items(
        self, key: str, prefix: int | None, asset_filter: Any = None
    ) -> tuple[list[list[Any]], bool]:
        self.calls += 1
        return super()._read_items(key, prefix, asset_filter)

    def _execute(self, name: str, calls: Any, budget: Any = None) -> Any:
        self.calls += 1
        return super()._execute(name, calls, budget)


Invoke = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture
def demo(client: ClientType, settings: Settings) -> Iterator[CountingStore]:
    """The demo profile holding DEMO_HISTORY, and the handler reading through this store."""
    store = CountingStore(client, settings)
    store.client.delete(store.key(DEMO))  # not clear(): its watermark would ignore the seed
    result = store.record_batch([demo_update(*row) for row in DEMO_HISTORY])
    assert not result.failures
    store.calls = 0
    set_store(store)
    try:
        yield store
    finally:
        set_store(None)


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = reader.lambda_handler(
        json.loads(json.dumps(event)), FakeLambdaContext("history-reader")
    )
    assert isinstance(response["statusCode"], int)
    return response


def body(response: dict[str, Any]) -> Any:
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def request(
    query: list[tuple[str, str]] | str = "",
    *,
    profile_id: str = DEMO,
    asset_id: str | None = None,
    headers: dict[str, str] | None = None,
    claims: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTP API 2.0 event, built from the sport event file like API Gateway would."""
    event = load_event("http_get_sport.json")
    raw = query if isinstance(query, str) else urlencode(query)
    params: dict[str, str] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        params[name] = f"{params[name]},{value}" if name in params else value
    path = f"/profiles/{quote(profile_id, safe='')}/history"
    event["pathParameters"] = {"profileId": profile_id}
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /profiles/{profileId}/history"
    if asset_id is not None:
        path += f"/{quote(asset_id, safe='')}"
        event["pathParameters"]["assetId"] = asset_id
        event["routeKey"] += "/{assetId}"
        event["requestContext"]["routeKey"] = event["routeKey"]
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["rawQueryString"] = raw
    if params:
        event["queryStringParameters"] = params
    else:
        event.pop("queryStringParameters", None)
    event["headers"].update(headers or {})
    if claims is None:
        event["requestContext"]["authorizer"]["jwt"]["claims"]["profile_id"] = profile_id
    elif claims == {}:
        del event["requestContext"]["authorizer"]
    else:
        event["requestContext"]["authorizer"]["jwt"]["claims"] = claims
    return event


def asset_ids(response: dict[str, Any]) -> list[str]:
    assert response["statusCode"] == 200, response["body"]
    return [item["assetId"] for item in body(response)["items"]]


# --- the event files ------------------------------------------------------------------


def test_there_is_one_event_per_query_dimension() -> None:
    assert sorted([*LIST_EVENTS, "http_get_asset.json"]) == ALL_EVENTS


@pytest.mark.parametrize("name", ALL_EVENTS)
def test_event_files_are_what_api_gateway_sends(name: str) -> None:
    event = load_event(name)
    assert event["version"] == "2.0"
    context = event["requestContext"]
    assert event["routeKey"] == context["routeKey"]
    assert context["http"]["method"] == "GET"
    assert context["http"]["path"] == event["rawPath"]
    assert context["authorizer"]["jwt"]["claims"]["profile_id"] == DEMO
    assert event["pathParameters"]["profileId"] == DEMO
    template = event["routeKey"].removeprefix("GET ")
    assert event["rawPath"] == template.format(**event["pathParameters"])
    joined: dict[str, str] = {}
    for key, value in parse_qsl(event["rawQueryString"]):
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    assert event.get("queryStringParameters", {}) == joined


@pytest.mark.parametrize("name", LIST_EVENTS)
def test_each_list_event_returns_its_items(demo: CountingStore, name: str) -> None:
    response = invoke(load_event(name))
    assert asset_ids(response) == EXPECTED[name]
    page = body(response)
    assert "nextCursor" in page
    assert (page["nextCursor"] is None) == (name != "http_get_paged.json")


def test_the_asset_event_returns_one_item(demo: CountingStore) -> None:
    response = invoke(load_event("http_get_asset.json"))
    assert response["statusCode"] == 200
    assert body(response) == {
        "assetId": "ipl-2026-m01",
        "assetType": "match",
        "sport": "cricket",
        "series": "ipl-2026",
        "teams": ["csk", "mi"],
        "position": 1800.0,
        "duration": 12000.0,
        "progress": 0.15,
        "completed": False,
        "firstWatchedAt": "2026-03-01T20:00:00.000Z",
        "lastWatchedAt": "2026-03-01T20:00:00.000Z",
        "deviceId": "tv-1",
    }


def test_the_paged_event_carries_the_first_pages_cursor(demo: CountingStore) -> None:
    paged = load_event("http_get_paged.json")
    first = invoke(request("limit=3"))
    assert asset_ids(first) == ["ipl-2026-m01", "s-tide-s01e05", "s-house-s02e03"]
    assert body(first)["nextCursor"] == paged["queryStringParameters"]["cursor"], (
        "events/http_get_paged.json must carry the nextCursor of ?limit=3 on the demo history"
    )
    second = invoke(paged)
    third = invoke(request([("limit", "10"), ("cursor", body(second)["nextCursor"])]))
    assert asset_ids(third) == [
        "s-house-s01e01",
        "movie-dune",
        "ipl-2026-m03",
        "t20wc-2026-final",
        "s-tide-s01e04",
    ]
    assert body(third)["nextCursor"] is None


# --- the response -----------------------------------------------------------------------


def test_items_have_the_api_shape_and_leave_out_absent_fields(demo: CountingStore) -> None:
    response = invoke(request("assetId=movie-dune"))
    page = body(response)
    assert page == {
        "items": [
            {
                "assetId": "movie-dune",
                "assetType": "movie",
                "title": "Dune",
                "position": 4000.0,
                "duration": 9000.0,
                "progress": 0.4444,
                "completed": False,
                "firstWatchedAt": "2026-03-01T14:00:00.000Z",
                "lastWatchedAt": "2026-03-01T14:00:00.000Z",
                "deviceId": "tv-1",
            }
        ],
        "nextCursor": None,
    }
    # the body is built from the stored arrays; it is what the validated models dump
    direct = demo.query(DEMO, HistoryQuery(asset_ids=["movie-dune"]))
    assert page == {"items": [item.to_api() for item in direct.items], "nextCursor": None}


def test_repeated_and_comma_separated_parameters_are_the_same(demo: CountingStore) -> None:
    repeated = invoke(request([("sport", "cricket"), ("team", "csk"), ("team", "kkr")]))
    joined = invoke(request([("sport", "cricket"), ("team", "csk,kkr")]))
    assert asset_ids(repeated) == asset_ids(joined) == ["ipl-2026-m01", "ipl-2026-m03"]
    assert repeated["body"] == joined["body"]
    ids = [("assetId", a) for a in ("movie-dune", "ipl-2026-m01")]
    assert asset_ids(invoke(request(ids))) == ["ipl-2026-m01", "movie-dune"]
    assert asset_ids(invoke(request("assetId=movie-dune,ipl-2026-m01"))) == [
        "ipl-2026-m01",
        "movie-dune",
    ]


def test_every_filter_reaches_the_store(demo: CountingStore) -> None:
    cases: dict[str, list[str]] = {
        "assetType=episode&status=completed": ["s-house-s02e02"],
        "status=completed": ["ipl-2026-m02", "s-house-s02e02", "t20wc-2026-final"],
        "sport=cricket&series=ipl-2026&status=in_progress&limit=1": ["ipl-2026-m01"],
        "show=tidewater&season=1": ["s-tide-s01e05", "s-tide-s01e04"],
        "collapse=series&sport=cricket": ["ipl-2026-m01", "t20wc-2026-final"],
        "collapse=show&show=house-of-ash": ["s-house-s02e03"],
        "sport=football&team=ars": ["epl-2026-m10"],
        "sport=tennis": [],
    }
    for query, expected in cases.items():
        assert asset_ids(invoke(request(query))) == expected, query


def test_an_empty_cursor_is_the_first_page(demo: CountingStore) -> None:
    assert invoke(request("limit=2&cursor="))["body"] == invoke(request("limit=2"))["body"]


def test_a_full_walk_of_pages_through_the_api(demo: CountingStore) -> None:
    seen: list[str] = []
    query: list[tuple[str, str]] = [("limit", "2")]
    for _ in range(20):
        page = body(invoke(request(query)))
        seen.extend(item["assetId"] for item in page["items"])
        if page["nextCursor"] is None:
            break
        query = [("limit", "2"), ("cursor", page["nextCursor"])]
    assert seen == [row[0] for row in DEMO_HISTORY]


# --- ETag and 304 -----------------------------------------------------------------------


def test_etag_is_the_hash_of_the_body_as_sent(demo: CountingStore) -> None:
    response = invoke(load_event("http_get_sport.json"))
    headers = response["headers"]
    assert headers["Cache-Control"] == "private, no-cache"
    assert headers["ETag"] == reader.etag_of(response["body"])
    assert headers["ETag"][0] == headers["ETag"][-1] == '"'
    assert invoke(load_event("http_get_sport.json"))["headers"]["ETag"] == headers["ETag"]
    other = invoke(load_event("http_get_show.json"))["headers"]["ETag"]
    assert other != headers["ETag"]


@pytest.mark.parametrize("name", ["http_get_sport.json", "http_get_asset.json"])
def test_if_none_match_with_the_current_etag_gives_304(demo: CountingStore, name: str) -> None:
    first = invoke(load_event(name))
    etag = first["headers"]["ETag"]
    for header in (etag, f"W/{etag}", f'"stale", {etag}', "*"):
        event = load_event(name)
        event["headers"]["if-none-match"] = header
        response = invoke(event)
        assert response["statusCode"] == 304, header
        assert response["body"] == ""
        assert response["headers"]["ETag"] == etag
        assert response["headers"]["Cache-Control"] == "private, no-cache"
    event = load_event(name)
    event["headers"]["if-none-match"] = '"something-else"'
    assert invoke(event)["statusCode"] == 200


def test_a_write_changes_the_etag(demo: CountingStore) -> None:
    before = invoke(load_event("http_get_sport.json"))
    demo.record_progress(demo_update("ipl-2026-m03", -1, 1000, 12000, False, {"sport": "cricket"}))
    event = load_event("http_get_sport.json")
    event["headers"]["if-none-match"] = before["headers"]["ETag"]
    after = invoke(event)
    assert after["statusCode"] == 200
    assert after["headers"]["ETag"] != before["headers"]["ETag"]
    assert asset_ids(after)[0] == "ipl-2026-m03"


# --- authorization ----------------------------------------------------------------------


def test_without_claims_401(demo: CountingStore) -> None:
    for event in (request(claims={}), request(asset_id="movie-dune", claims={})):
        response = invoke(event)
        assert response["statusCode"] == 401
        assert response["headers"]["WWW-Authenticate"] == "Bearer"
        assert body(response)["message"]
    no_profile_claim = invoke(request(claims={"sub": "someone", "scope": "history:read"}))
    assert no_profile_claim["statusCode"] == 401
    assert demo.calls == 0


def test_another_profile_403(demo: CountingStore) -> None:
    for claims in ({"profile_id": "demo-profile-2"}, {"profile_id": "demo-profile-10 x"}):
        for event in (request(claims=claims), request(asset_id="movie-dune", claims=claims)):
            response = invoke(event)
            assert response["statusCode"] == 403
            assert "demo-profile-1" in body(response)["message"]
    assert demo.calls == 0


@pytest.mark.parametrize(
    "claims",
    [
        {"profile_id": "demo-profile-1"},
        {"profile_id": "kid-2 demo-profile-1"},
        {"profile_id": "[kid-2 demo-profile-1]"},
        {"sub": "support-agent", "scope": "openid history:admin"},
        {"sub": "support-agent", "scp": ["history:admin"]},
    ],
)
def test_claims_that_grant_the_profile(demo: CountingStore, claims: dict[str, Any]) -> None:
    assert asset_ids(invoke(request("sport=football", claims=claims))) == ["epl-2026-m10"]


def test_the_claim_name_comes_from_settings(
    demo: CountingStore, client: ClientType, settings: Settings
) -> None:
    set_store(HistoryStore(client, settings.model_copy(update={"profile_claim": "profiles"})))
    assert invoke(request("sport=football", claims={"profiles": DEMO}))["statusCode"] == 200
    assert invoke(request("sport=football", claims={"profile_id": DEMO}))["statusCode"] == 401


# --- bad input ------------------------------------------------------------------------

BAD_QUERIES = [
    "status=unknown",
    "status=",
    "limit=0",
    "limit=101",
    "limit=-1",
    "limit=ten",
    "limit=1.5",
    "cursor=not-a-cursor",
    "cursor=" + "A" * 513,
    "cursor=WzEsMl0",  # valid base64 of [1,2]
    'sport=cricket"',
    "sport=a'b",
    "sport=$..h",
    "sport=h[0]",
    "sport={x}",
    "sport=",
    "sport=a b",
    "sport=cricket&sport=football",
    "sport=cricket,football",
    "sport=cricket&team=csk]",
    "show=(x)",
    "series=ipl-2026",
    "team=csk",
    "season=2",
    "sport=cricket&show=house-of-ash",
    "sport=cricket&series=ipl-2026&show=house-of-ash&season=2",
    "show=house-of-ash&season=two",
    "show=house-of-ash&season=-1",
    "assetType=Movie",
    "assetType=",
    "assetId=",
    "assetId=a,,b",
    'assetId=x"',
    "assetId=" + "&assetId=".join(f"a{i}" for i in range(101)),
    "assetId=" + ",".join(f"a{i}" for i in range(101)),
    "sport=cricket&" + "&".join(f"team=t{i}" for i in range(17)),
    "collapse=season",
    "collapse=",
    "sport=" + "x" * 129,
]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_bad_input_is_422_json_and_never_reaches_the_store(demo: CountingStore, query: str) -> None:
    response = invoke(request(query))
    assert response["statusCode"] == 422, response
    message = body(response)["message"]
    assert isinstance(message, str)
    assert message
    assert demo.calls == 0, "a bad value must not run a query"


def test_messages_say_what_is_wrong(demo: CountingStore) -> None:
    def message(query: str) -> tuple[int, str]:
        response = invoke(request(query))
        return response["statusCode"], body(response)["message"]

    assert message("series=ipl") == (422, "invalid request: series needs sport")
    assert message("sport=cricket&show=x") == (
        422,
        "invalid request: sport filters and show filters cannot be combined",
    )
    status, text = message("limit=0")
    assert status == 422
    assert "limit" in text
    assert "greater than or equal to 1" in text
    status, text = message("status=paused")
    assert status == 422
    assert "status" in text
    assert "in_progress" in text
    status, text = message("cursor=bad")
    assert status == 422
    assert "cursor" in text
    # one rule, one shape: a rule across values is a 422 listing it, as limit=0 is
    team = body(invoke(request("team=csk")))
    assert team["errors"] == [{"loc": [], "type": "value_error", "msg": "team needs sport"}]
    response = invoke(request("limit=0&status=x"))
    assert {tuple(e["loc"]) for e in body(response)["errors"]} == {
        ("query", "limit"),
        ("query", "status"),
    }


def test_a_cursor_of_another_query_is_422(demo: CountingStore) -> None:
    cursor = body(invoke(request("sport=cricket&limit=1")))["nextCursor"]
    assert cursor
    response = invoke(request([("show", "house-of-ash"), ("cursor", cursor)]))
    assert response["statusCode"] == 422
    assert "another query or profile" in body(response)["message"]


@pytest.mark.parametrize(
    ("profile_id", "asset_id"),
    [('a"b', None), ("a[0]", None), ("{p}", None), (DEMO, 'x"y'), (DEMO, "$.h[0]"), (DEMO, "a b")],
)
def test_bad_ids_in_the_path_are_422(
    demo: CountingStore, profile_id: str, asset_id: str | None
) -> None:
    # an admin may read any profile: what is left to refuse is the id itself
    admin = {"sub": "ops", "scope": "history:admin"}
    response = invoke(request(profile_id=profile_id, asset_id=asset_id, claims=admin))
    assert response["statusCode"] == 422
    assert body(response)["message"]
    assert demo.calls == 0


def test_unknown_asset_404_and_unknown_route_404(demo: CountingStore) -> None:
    missing = invoke(request(asset_id="never-watched"))
    assert missing["statusCode"] == 404
    assert "never-watched" in body(missing)["message"]
    event = request()
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/profiles/demo-profile-1/other"
    nowhere = invoke(event)
    assert nowhere["statusCode"] == 404
    assert body(nowhere)["message"]


_PARAMS = ["sport", "series", "team", "show", "season", "assetType", "assetId", "status",
           "limit", "cursor", "collapse", "other"]  # fmt: skip
_TEXT = st.text(
    string.ascii_letters + string.digits + "\"'[]{}(),.:_-$@?*=% &\\/é\x00", max_size=12
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    query=st.lists(st.tuples(st.sampled_from(_PARAMS), _TEXT), max_size=5),
    profile_id=st.one_of(st.just(DEMO), _TEXT),
)
def test_no_input_gives_a_500_or_a_query_with_a_bad_value(
    demo: CountingStore, query: list[tuple[str, str]], profile_id: str
) -> None:
    demo.calls = 0
    response = invoke(request(query, profile_id=profile_id))
    status = response["statusCode"]
    assert status in (200, 400, 403, 404, 422), response
    if status != 200:
        assert body(response)["message"]
        assert demo.calls == 0


# --- the store unavailable ---------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_store_unavailable_is_503_with_retry_after() -> None:
    client = redis.Redis(
        host="127.0.0.1",
        port=_closed_port(),
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    set_store(HistoryStore(client, Settings(key_prefix="t:")))
    try:
        for event in (load_event("http_get_sport.json"), load_event("http_get_asset.json")):
            response = invoke(event)
            assert response["statusCode"] == 503
            assert response["headers"]["Retry-After"] == "1"
            assert "retry" in body(response)["message"]
    finally:
        set_store(None)
        client.close()


def test_a_replayed_update_keeps_the_etag(demo: CountingStore) -> None:
    before = invoke(load_event("http_get_sport.json"))
    with pytest.raises(StaleUpdateError):  # a duplicate heartbeat: nothing changes
        demo.record_progress(demo_update(*DEMO_HISTORY[0]))
    assert invoke(load_event("http_get_sport.json"))["body"] == before["body"]
