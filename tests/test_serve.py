"""``make serve``: real HTTP requests to the local API, through the real handlers."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from devtools.lambda_context import Handler
from devtools.serve import (
    READER,
    WRITER,
    LocalApiServer,
    api_event,
    match_route,
    template_cors,
)
from devtools.serve import (
    main as serve_main,
)
from tests.conftest import ROOT, serving
from watch_history.store import HistoryStore

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def call(
    server: LocalApiServer,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + path, data=data, method=method, headers=dict(headers or {})
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=10) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, got, raw = error.code, dict(error.headers), error.read()
        error.close()
    return status, {k.lower(): v for k, v in got.items()}, json.loads(raw) if raw else None


def match(asset_id: str, teams: list[str], sport: str = "cricket") -> dict[str, Any]:
    return {
        "position": 600,
        "duration": 6600,
        "eventType": "heartbeat",
        "asset": {
            "type": "match",
            "title": asset_id,
            "sport": sport,
            "series": "ipl-2026" if sport == "cricket" else "premier-league-2026-27",
            "teams": teams,
        },
    }


def test_put_then_get_round_trip(server: LocalApiServer, profile_id: str) -> None:
    me = {"X-Dev-Profile": profile_id}
    body = {
        "position": 1260.5,
        "duration": 6420,
        "eventTime": "2026-11-20T20:15:00.250+05:30",
        "deviceId": "tv-1",
        "asset": {"type": "movie", "title": "The Last Ferry"},
    }
    status, _, item = call(
        server, "PUT", f"/profiles/{profile_id}/history/movie-1", body=body, headers=me
    )
    assert status == 200
    assert item["assetId"] == "movie-1"
    assert item["position"] == 1260.5
    assert item["lastWatchedAt"] == "2026-11-20T14:45:00.250Z"

    status, headers, got = call(
        server, "GET", f"/profiles/{profile_id}/history/movie-1", headers=me
    )
    assert status == 200
    assert got == item
    assert headers["content-type"].startswith("application/json")

    status, headers, page = call(server, "GET", f"/profiles/{profile_id}/history", headers=me)
    assert status == 200
    assert page == {"items": [item], "nextCursor": None}
    # the handler's headers come back as they are: a conditional GET gets 304, no body
    status, _, nothing = call(
        server,
        "GET",
        f"/profiles/{profile_id}/history",
        headers={**me, "If-None-Match": headers["etag"]},
    )
    assert (status, nothing) == (304, None)

    status, _, nothing = call(
        server, "DELETE", f"/profiles/{profile_id}/history/movie-1", headers=me
    )
    assert (status, nothing) == (204, None)
    status, _, error = call(server, "GET", f"/profiles/{profile_id}/history/movie-1", headers=me)
    assert status == 404
    assert "message" in error


def test_repeated_query_parameters_reach_the_handler_comma_joined(
    server: LocalApiServer, profile_id: str
) -> None:
    me = {"X-Dev-Profile": profile_id}
    base = f"/profiles/{profile_id}/history"
    for asset_id, teams, sport in (
        ("m-csk-mi", ["csk", "mi"], "cricket"),
        ("m-rcb-kkr", ["rcb", "kkr"], "cricket"),
        ("m-gt-dc", ["gt", "dc"], "cricket"),
        ("m-ars-che", ["arsenal", "chelsea"], "football"),
    ):
        status, _, _ = call(
            server, "PUT", f"{base}/{asset_id}", body=match(asset_id, teams, sport), headers=me
        )
        assert status == 200

    status, _, page = call(server, "GET", f"{base}?sport=cricket&team=csk&team=kkr", headers=me)
    assert status == 200
    assert sorted(i["assetId"] for i in page["items"]) == ["m-csk-mi", "m-rcb-kkr"]
    status, _, page = call(server, "GET", f"{base}?sport=cricket&team=gt", headers=me)
    assert [i["assetId"] for i in page["items"]] == ["m-gt-dc"]
    # assetId is repeatable too; limit pages
    status, _, page = call(
        server, "GET", f"{base}?assetId=m-gt-dc&assetId=m-ars-che&assetId=nope", headers=me
    )
    assert status == 200
    assert sorted(i["assetId"] for i in page["items"]) == ["m-ars-che", "m-gt-dc"]

    event = api_event("GET", f"{base}?sport=cricket&team=csk&team=kkr&limit=5")
    assert event["rawQueryString"] == "sport=cricket&team=csk&team=kkr&limit=5"
    assert event["queryStringParameters"] == {"sport": "cricket", "team": "csk,kkr", "limit": "5"}
    assert event["pathParameters"] == {"profileId": profile_id}
    assert event["routeKey"] == "GET /profiles/{profileId}/history"


def test_without_dev_claims_401(server: LocalApiServer, profile_id: str) -> None:
    status, headers, error = call(server, "GET", f"/profiles/{profile_id}/history")
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert error["message"]
    status, _, _ = call(server, "PUT", f"/profiles/{profile_id}/history/a1", body={"position": 1})
    assert status == 401
    assert "authorizer" not in api_event("GET", f"/profiles/{profile_id}/history")["requestContext"]


def test_dev_claims_header_grants_as_a_jwt_would(server: LocalApiServer, profile_id: str) -> None:
    path = f"/profiles/{profile_id}/history"
    assert call(server, "GET", path, headers={"X-Dev-Profile": "someone-else"})[0] == 403
    listed = json.dumps({"profile_id": ["someone-else", profile_id]})
    assert call(server, "GET", path, headers={"X-Dev-Claims": listed})[0] == 200
    admin = json.dumps({"sub": "ops", "scope": "openid history:admin"})
    assert call(server, "GET", path, headers={"X-Dev-Claims": admin})[0] == 200
    status, _, error = call(server, "GET", path, headers={"X-Dev-Claims": "{not json"})
    assert status == 401
    assert "X-Dev-Claims" in error["message"]


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.WzFd.c"])
def test_a_token_that_cannot_be_read_is_401_as_from_the_authorizer(
    server: LocalApiServer, profile_id: str, token: str
) -> None:
    path = f"/profiles/{profile_id}/history"
    status, headers, error = call(server, "GET", path, headers={"Authorization": f"Bearer {token}"})
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert "JWT" in error["message"]


def test_a_port_in_use_is_a_one_line_error(
    server: LocalApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(server.server_address[1])
    assert serve_main(["--port", port, "--sample-profiles", "0", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "PORT=" in err


def test_make_serve_passes_port() -> None:
    dry = subprocess.run(
        ["make", "-n", "serve", "PORT=9123", "VENV=.venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "devtools.serve --port 9123 " in dry.stdout


def test_unknown_routes_404(server: LocalApiServer, profile_id: str) -> None:
    me = {"X-Dev-Profile": profile_id}
    for method, path in (
        ("GET", "/nope"),
        ("GET", f"/profiles/{profile_id}"),
        ("PATCH", f"/profiles/{profile_id}/history"),
        ("PUT", f"/profiles/{profile_id}/history"),
        ("GET", f"/profiles/{profile_id}/history/a1/extra"),
    ):
        status, _, error = call(
            server, method, path, headers=me, body={} if method != "GET" else None
        )
        assert (status, error) == (404, {"message": "Not Found"}), (method, path)


def test_routes_and_events_match_api_gateway() -> None:
    matched = match_route("DELETE", "/profiles/p1/history/ipl-2026-m01")
    assert matched is not None
    route, params = matched
    assert route.key == "DELETE /profiles/{profileId}/history/{assetId}"
    assert route.function == WRITER
    assert params == {"profileId": "p1", "assetId": "ipl-2026-m01"}
    reading = match_route("GET", "/profiles/p1/history")
    assert reading is not None
    assert reading[0].function == READER
    assert match_route("PATCH", "/profiles/p1/history") is None

    event = api_event(
        "PUT",
        "/profiles/p1/history/a%3Ab",
        headers=[
            ("Content-Type", "application/json"),
            ("Cookie", "a=1; b=2"),
            ("X-A", "1"),
            ("x-a", "2"),
        ],
        body=b'{"position": 1}',
        claims={"profile_id": "p1", "exp": 1772398800, "groups": ["a", "b"]},
    )
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/profiles/p1/history/a%3Ab"
    assert event["pathParameters"] == {"profileId": "p1", "assetId": "a:b"}
    assert event["headers"]["content-type"] == "application/json"
    assert event["headers"]["x-a"] == "1,2"
    assert event["cookies"] == ["a=1", "b=2"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"position": 1}', False)
    http = event["requestContext"]["http"]
    assert (http["method"], http["path"]) == ("PUT", "/profiles/p1/history/a%3Ab")
    assert event["requestContext"]["authorizer"]["jwt"]["claims"] == {
        "profile_id": "p1",
        "exp": "1772398800",
        "groups": "[a b]",
    }
    binary = api_event(
        "PUT", "/x", headers={"content-type": "application/octet-stream"}, body=b"\xff\x00"
    )
    assert (binary["body"], binary["isBase64Encoded"]) == ("/wA=", True)
    assert binary["routeKey"] == "$default"


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalApiServer(("0.0.0.0", 0), {})


# --- CORS: the template's policy, as API Gateway applies it ---------------------------


def test_the_cors_policy_is_the_templates() -> None:
    assert template_cors("") is None  # no origins: no CORS, as the template's HasCors
    policy = template_cors("https://app.example.com, http://localhost:3000")
    assert policy is not None
    assert policy.allow_origins == ("https://app.example.com", "http://localhost:3000")
    assert {"authorization", "content-type", "if-none-match"} <= set(policy.allow_headers)
    # and this server's own development headers, so that a browser app can send them
    assert {"x-dev-profile", "x-dev-claims"} <= set(policy.allow_headers)
    assert {"etag", "retry-after", "x-update-outcome"} <= set(policy.expose_headers)
    assert {"GET", "PUT", "POST", "DELETE"} <= set(policy.allow_methods)


@pytest.fixture
def cors_server(store: HistoryStore, handlers: dict[str, Handler]) -> Iterator[LocalApiServer]:
    with serving(store, handlers, cors=template_cors("https://app.example.com")) as srv:
        yield srv


def test_a_preflight_is_answered_locally(cors_server: LocalApiServer, profile_id: str) -> None:
    path = f"/profiles/{profile_id}/history"
    asking = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-dev-profile,if-none-match",
    }
    status, headers, body = call(cors_server, "OPTIONS", path, headers=asking)
    assert (status, body) == (204, None)
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    allowed = headers["access-control-allow-headers"].split(",")
    assert {"if-none-match", "x-dev-profile"} <= set(allowed)
    assert "GET" in headers["access-control-allow-methods"]
    foreign = {**asking, "Origin": "https://evil.example"}
    status, headers, _ = call(cors_server, "OPTIONS", path, headers=foreign)
    assert status == 204
    assert "access-control-allow-origin" not in headers


def test_responses_to_an_allowed_origin_expose_etag_and_retry_after(
    cors_server: LocalApiServer, profile_id: str
) -> None:
    me = {"X-Dev-Profile": profile_id, "Origin": "https://app.example.com"}
    status, headers, _ = call(cors_server, "GET", f"/profiles/{profile_id}/history", headers=me)
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    exposed = headers["access-control-expose-headers"].split(",")
    assert {"etag", "retry-after"} <= set(exposed)
    status, headers, _ = call(
        cors_server, "GET", f"/profiles/{profile_id}/history", headers={"X-Dev-Profile": profile_id}
    )
    assert "access-control-allow-origin" not in headers  # no Origin: no CORS headers


def test_without_cors_a_preflight_is_an_unknown_route(
    server: LocalApiServer, profile_id: str
) -> None:
    asking = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    status, headers, _ = call(server, "OPTIONS", f"/profiles/{profile_id}/history", headers=asking)
    assert status == 404
    assert "access-control-allow-origin" not in headers
