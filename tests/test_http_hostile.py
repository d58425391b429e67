"""Hostile HTTP input: every route of the committed openapi.json, driven by schemathesis.

The requests go through ``make serve``'s server (tests/test_schemathesis.py's ``api``
fixture: the real handlers behind devtools/serve.py, on this mode's engine), each one
sent three ways: with claims granting the path's profile, with another profile's
claims, and with none. None may get a 5xx; every error says why; without rights it is
401/403 whatever else is wrong (the caller is authorized before the rest of the input
is validated); and a profile no request is granted keeps its history untouched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from devtools.lambda_context import FakeLambdaContext
from devtools.serve import api_event
from tests.test_fuzz import handlers, wired
from tests.test_schemathesis import api, schema
from watch_history import runtime
from watch_history.models import HistoryQuery, ProgressUpdate
from watch_history.store import HistoryStore

__all__ = ["api", "handlers", "wired"]  # fixtures shared with test_fuzz, test_schemathesis

SENTINEL = "sentinel-profile"


@pytest.fixture(scope="module")
def sentinel(api: tuple[str, HistoryStore]) -> HistoryStore:
    """A profile no generated request is granted, with one item."""
    _, store = api
    at = datetime.now(UTC) - timedelta(hours=1)
    store.record_progress(
        ProgressUpdate(profile_id=SENTINEL, asset_id="kept", position=300.0, event_time=at)
    )
    return store


def _path_profile(case: Any) -> str | None:
    value = (case.path_parameters or {}).get("profileId")
    return value if isinstance(value, str) else None


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx_and_unauthorized_ones_learn_nothing(
    case: Any, api: tuple[str, HistoryStore], sentinel: HistoryStore
):
    url, store = api
    runtime.set_store(store)  # conftest forgets the handlers' store after each test
    profile = _path_profile(case)
    callers: dict[str, dict[str, str]] = {
        "granted": {"X-Dev-Claims": json.dumps({"sub": "u", "profile_id": profile or "x"})},
        "another profile": {"X-Dev-Claims": json.dumps({"profile_id": "someone-else"})},
        "no claims": {},
    }
    # The document's bearer scheme makes schemathesis send a random token; the local
    # server would refuse it (not a JWT) before the handlers: who calls is set here.
    own = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    for caller, headers in callers.items():
        case.headers = {**own, **headers}
        response = case.call(base_url=url)
        status = response.status_code
        assert status < 500, (caller, case.method, case.formatted_path, response.text)
        if status >= 400:
            assert isinstance(response.json()["message"], str), (caller, response.text)
        if status == 404 or profile is None:
            continue  # a path no route matches: API Gateway's own 404
        if caller == "no claims":
            assert status == 401, (caller, status, response.text)
        if caller == "another profile" and profile != "someone-else":
            assert status == 403, (caller, status, response.text)
    (kept,) = store.query(SENTINEL, HistoryQuery()).items
    assert (kept.asset_id, kept.position) == ("kept", 300.0)


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
    at = datetime.now(UTC) - timedelta(hours=1)
    wired.record_progress(
        ProgressUpdate(profile_id=SENTINEL, asset_id="kept", position=300.0, event_time=at)
    )
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
    assert status == 422
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
