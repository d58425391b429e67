"""Hostile HTTP input: every route of the committed openapi.json, driven by schemathesis.

The requests go through a small WSGI adapter (below): each one becomes the API Gateway
HTTP API event ``devtools.serve.api_event`` builds (the local server's own
translation), runs through the real reader or writer handler in-process, and the
handler's response comes back. Each generated request is sent three ways: with claims
granting the path's profile, with claims of another profile, and with no claims. None
may get a 5xx; every 4xx says why; without rights it is 401/403 whatever else is wrong
(the caller is authorized before the rest of the input is validated); and a profile
that no request is granted keeps its history untouched.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from devtools.lambda_context import FakeLambdaContext
from devtools.serve import api_event
from tests.conftest import ROOT
from tests.test_fuzz import handlers
from watch_history import runtime
from watch_history.models import HistoryQuery, ProgressUpdate
from watch_history.store import HistoryStore

schema = schemathesis.openapi.from_path(str(ROOT / "openapi.json"))
SENTINEL = "sentinel-profile"
CLAIMS_HEADER = "X-Test-Claims"  # the adapter turns it into the authorizer's claims
__all__ = ["handlers"]  # the handler modules' fixture, shared with test_fuzz


@pytest.fixture
def wired(make_store: Callable[..., HistoryStore]) -> HistoryStore:
    store = make_store(key_prefix=f"h{uuid.uuid4().hex[:8]}:")
    at = datetime.now(UTC) - timedelta(hours=1)
    store.record_progress(
        ProgressUpdate(profile_id=SENTINEL, asset_id="kept", position=300.0, event_time=at)
    )
    runtime.set_store(store)
    return store


def wsgi_app(handlers: dict[str, ModuleType]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app in front of the two handlers (GET: reader; PUT, DELETE: writer)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("REQUEST_URI") or environ.get("RAW_URI")
        if not path:
            path = quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/:@!$&'()*+,;=")
            if environ.get("QUERY_STRING"):
                path += "?" + environ["QUERY_STRING"]
        headers = [
            (key[5:].replace("_", "-").lower(), value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        if environ.get("CONTENT_TYPE"):
            headers.append(("content-type", environ["CONTENT_TYPE"]))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else None
        claims_text = dict(headers).pop(CLAIMS_HEADER.lower(), "null")
        headers = [(k, v) for k, v in headers if k != CLAIMS_HEADER.lower()]
        event = api_event(method, path, headers=headers, body=body, claims=json.loads(claims_text))
        name = "history_reader" if method == "GET" else "history_writer"
        response = handlers[name].lambda_handler(event, FakeLambdaContext(name))
        status = int(response["statusCode"])
        raw = response.get("body") or ""
        data = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        start_response(
            f"{status} {HTTPStatus(status).phrase}", list((response.get("headers") or {}).items())
        )
        return [data]

    return app


def _path_profile(case: Any) -> str | None:
    params = case.path_parameters or {}
    value = params.get("profileId")
    return value if isinstance(value, str) else None


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx_and_unauthorized_ones_learn_nothing(
    case: Any, handlers: dict[str, ModuleType], wired: HistoryStore
):
    app = wsgi_app(handlers)
    profile = _path_profile(case)
    kinds = {
        "granted": {"sub": "u", "profile_id": profile or "nobody"},
        "another profile": {"sub": "u", "profile_id": "someone-else"},
        "no claims": None,
    }
    for kind, claims in kinds.items():
        headers = {**(case.headers or {}), CLAIMS_HEADER: json.dumps(claims)}
        response = case.call(app=app, headers=headers)
        status = response.status_code
        assert status < 500, (kind, status, response.text)
        if status >= 400 and status != 404:  # 404 of an unmatched path: API Gateway's own
            assert json.loads(response.text)["message"], (kind, response.text)
        if kind == "no claims" and profile is not None and status != 404:
            assert status == 401, (kind, status, response.text)
        if kind == "another profile" and profile not in {None, "someone-else"} and status != 404:
            assert status == 403, (kind, status, response.text)
    (kept,) = wired.query(SENTINEL, HistoryQuery()).items  # no request was granted it
    assert kept.asset_id == "kept"
    assert kept.position == 300.0


# --- the rules behind it, one example each --------------------------------------------


def _call(
    handlers: dict[str, ModuleType],
    method: str,
    target: str,
    claims: dict[str, Any] | None,
    body: str | None = None,
    scopes: list[str] | None = None,
) -> tuple[int, Any]:
    headers = {"content-type": "application/json"} if body is not None else {}
    event = api_event(method, target, headers=headers, body=body, claims=claims)
    if scopes is not None:
        event["requestContext"]["authorizer"]["jwt"]["scopes"] = scopes
    name = "history_reader" if method == "GET" else "history_writer"
    response = handlers[name].lambda_handler(event, FakeLambdaContext(name))
    return int(response["statusCode"]), json.loads(response["body"] or "null")


def test_another_profiles_bad_request_is_403_not_422(
    handlers: dict[str, ModuleType], wired: HistoryStore
):
    mine = {"profile_id": "p-mine"}
    assert _call(handlers, "GET", "/profiles/p-other/history?limit=0", mine)[0] == 403
    assert _call(handlers, "GET", "/profiles/p-mine/history?limit=0", mine)[0] == 422
    put = "/profiles/p-other/history/a1"
    assert _call(handlers, "PUT", put, mine, '{"position": -1}')[0] == 403
    assert _call(handlers, "PUT", put, None, '{"position": -1}')[0] == 401
    assert _call(handlers, "DELETE", "/profiles/p-other/history", mine)[0] == 403


def test_the_admin_scope_counts_from_the_authorizers_scopes_too(
    handlers: dict[str, ModuleType], wired: HistoryStore
):
    """API Gateway lists a token's scopes in ``requestContext.authorizer.jwt.scopes``."""
    target = f"/profiles/{SENTINEL}/history"
    claims = {"sub": "ops"}
    assert _call(handlers, "GET", target, claims, scopes=["openid"])[0] in {401, 403}
    status, body = _call(handlers, "GET", target, claims, scopes=["openid", "history:admin"])
    assert status == 200
    assert [i["assetId"] for i in body["items"]] == ["kept"]
    status, _ = _call(handlers, "GET", target, {"sub": "ops", "scope": "history:admin"})
    assert status == 200


def test_a_cursor_of_one_profile_is_refused_on_another(
    handlers: dict[str, ModuleType], wired: HistoryStore
):
    at = datetime.now(UTC) - timedelta(hours=2)
    for profile in ("cur-a", "cur-b"):
        for n in range(3):
            wired.record_progress(
                ProgressUpdate(
                    profile_id=profile,
                    asset_id=f"m{n}",
                    position=100.0,
                    event_time=at + timedelta(minutes=n),
                )
            )
    both = {"profile_id": "cur-a cur-b"}
    status, page = _call(handlers, "GET", "/profiles/cur-a/history?limit=1", both)
    assert status == 200
    cursor = page["nextCursor"]
    status, _ = _call(handlers, "GET", f"/profiles/cur-a/history?limit=1&cursor={cursor}", both)
    assert status == 200
    status, body = _call(handlers, "GET", f"/profiles/cur-b/history?limit=1&cursor={cursor}", both)
    assert status == 400
    assert "another query or profile" in body["message"]


@pytest.mark.parametrize(
    "body",
    [
        '{"position": %s}',
        '{"position": 1, "asset": {"season": %s}}',
        '{"position": 1, "eventTime": %s}',
        '{"position": 1, "asset": {"season": -%s}}',
    ],
)
def test_a_five_thousand_digit_integer_is_a_400_with_a_reason(
    handlers: dict[str, ModuleType], wired: HistoryStore, body: str
):
    status, reply = _call(
        handlers, "PUT", "/profiles/p-big/history/a1", {"profile_id": "p-big"}, body % ("9" * 5000)
    )
    assert status == 400
    assert "5000 digits" in reply["message"]
    assert wired.get_item("p-big", "a1") is None
    for query in ("limit=", "show=x&season="):
        status, reply = _call(
            handlers, "GET", f"/profiles/p-big/history?{query}{'9' * 5000}", {"profile_id": "p-big"}
        )
        assert status == 422
        assert reply["message"]
