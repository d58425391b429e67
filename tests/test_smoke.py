"""``make smoke``: the deployed-stack smoke test, run against the local API (make serve)."""

from __future__ import annotations

import base64
import json

import pytest

from devtools.serve import LocalApiServer
from devtools.smoke import Api, SmokeFailure, main, run, token_profile


def _token(claims: dict[str, object]) -> str:
    """An unsigned JWT: make serve uses its payload as the claims."""
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{part}.sig"


@pytest.fixture
def api_url(server: LocalApiServer) -> str:
    """The local API (conftest's ``server``: make serve's on an ephemeral port)."""
    return server.url


def test_smoke_passes_and_leaves_no_item(
    api_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN", _token({"profile_id": "smoke-p1 other"}))
    assert main(["--api-url", api_url]) == 0
    out = capsys.readouterr().out
    assert out.count("\nok  ") + out.startswith("ok  ") == 8, out
    assert "smoke test passed" in out
    left = Api(api_url, _token({"profile_id": "smoke-p1"})).call(
        "GET", "/profiles/smoke-p1/history"
    )
    assert (left.status, left.body["items"]) == (200, [])


def test_smoke_fails_at_the_first_unexpected_answer(api_url: str) -> None:
    """A token for another profile: the first call is refused (403); no step passed."""
    lines: list[str] = []
    api = Api(api_url, _token({"profile_id": "someone-else"}))
    with pytest.raises(SmokeFailure, match="expected 200, got 403"):
        run(api, "smoke-p2", lines.append)
    assert lines == []


def test_unreachable_api_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN", _token({"profile_id": "p"}))
    assert main(["--api-url", "http://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED GET http://127.0.0.1:1/profiles/p/history/changes: no answer")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_token_profile() -> None:
    assert token_profile(_token({"profile_id": "a b"}), "profile_id") == "a"
    assert token_profile(_token({"pids": ["x", "y"]}), "pids") == "x"
    assert token_profile(_token({"scope": "history:admin"}), "profile_id") is None
    assert token_profile("opaque-token", "profile_id") is None
