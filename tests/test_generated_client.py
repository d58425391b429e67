"""openapi.json is enough for an app team: a typed client generated from it, by a
maintained generator (openapi-python-client, pinned in requirements-dev.txt), drives
``make serve``'s server through PUT, GET, a batch and the changes feed.

The client is generated once per session (per xdist worker) into a temporary directory
and imported from there; nothing in it is hand-edited.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devtools import openapi
from devtools.serve import LocalApiServer

PACKAGE = "watch_history_client"


@pytest.fixture(scope="session")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, importable for the session."""
    where = tmp_path_factory.mktemp("generated")
    config = where / "config.json"
    # no post hooks: the generator would format its output with ruff from PATH
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": PACKAGE}))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(openapi.ROOT / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
            "--config",
            str(config),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def operation(name: str) -> Any:
    """A generated operation's module (``sync``, ``sync_detailed``, ...)."""
    return importlib.import_module(f"{PACKAGE}.api.history.{name}")


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """A JWT whose payload ``make serve`` reads (it does not verify signatures)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


def test_a_generated_client_puts_gets_batches_and_syncs(
    client_package: ModuleType, server: LocalApiServer, profile_id: str
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    put_progress, get_history_item = operation("put_progress"), operation("get_history_item")
    changes, batch_of = operation("get_history_changes"), operation("post_progress_batch")
    list_history = operation("list_history")
    client = client_package.AuthenticatedClient(
        base_url=server.url, token=unsigned_jwt({"profile_id": profile_id})
    )

    # PUT: a heartbeat with what the asset is, typed end to end
    body = models.ProgressBody(
        position=1843.0,
        duration=2633.0,
        event_time="2026-11-26T20:32:54Z",
        event_type=models.EventType.HEARTBEAT,
        device_id="tv-livingroom",
        asset=models.AssetInfo(type_="episode", title="The Long Night", show="house", season=2),
    )
    put = put_progress.sync_detailed(profile_id, "ep-1", client=client, body=body)
    assert put.status_code == 200
    assert put.headers["X-Update-Outcome"] == "applied"
    item = put.parsed
    assert isinstance(item, models.HistoryItem)
    assert (item.asset_id, item.position, item.progress) == ("ep-1", 1843.0, 0.7)
    assert item.last_watched_at == "2026-11-26T20:32:54.000Z"

    # GET: the same item; a 404 parses as the documented error body
    got = get_history_item.sync_detailed(profile_id, "ep-1", client=client).parsed
    assert got == item
    missing = get_history_item.sync_detailed(profile_id, "nope", client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.ErrorBody)

    # the changes feed from nothing: everything, and a token
    first = changes.sync(profile_id, client=client)
    assert isinstance(first, models.HistoryChanges)
    assert first.reset
    assert [i.asset_id for i in first.items] == ["ep-1"]

    # a batch: a replay (not newer), a new asset, and an invalid update, one result each
    updates = [
        models.BatchUpdate(asset_id="ep-1", position=10.0, event_time="2026-11-26T20:32:54Z"),
        models.BatchUpdate(
            asset_id="ep-2",
            position=60.0,
            event_time="2026-11-26T21:00:00Z",
            event_type=models.EventType.START,
        ),
        models.BatchUpdate(asset_id="ep-3", position=-1.0),
    ]
    batch = batch_of.sync(profile_id, client=client, body=models.BatchBody(updates=updates))
    assert isinstance(batch, models.BatchResponse)
    assert [(r.index, r.asset_id, r.outcome) for r in batch.results] == [
        (0, "ep-1", models.RecordOutcome.STALE),
        (1, "ep-2", models.RecordOutcome.APPLIED),
        (2, "ep-3", models.RecordOutcome.INVALID),
    ]

    # the changes since the first sync: only what the batch changed
    since = changes.sync(profile_id, client=client, since=first.next_token)
    assert not since.reset
    assert [i.asset_id for i in since.items] == ["ep-2"]
    page = list_history.sync(profile_id, client=client, limit=1)
    assert isinstance(page, models.HistoryPage)
    assert [i.asset_id for i in page.items] == ["ep-2"]
    assert isinstance(page.next_cursor, str)

    # out of continue watching, still in the history: 204, and the item says when
    dismiss = operation("dismiss_history_item")
    assert dismiss.sync_detailed(profile_id, "ep-2", client=client).status_code == 204
    dismissed = get_history_item.sync(profile_id, "ep-2", client=client)
    assert isinstance(dismissed, models.HistoryItem)
    assert isinstance(dismissed.dismissed_at, str)

    # a value that breaks a rule parses as the documented 422 body
    invalid = list_history.sync_detailed(profile_id, client=client, limit=0)
    assert invalid.status_code == 422
    assert isinstance(invalid.parsed, models.ValidationErrorBody)
    assert invalid.parsed.errors[0].loc == ["query", "limit"]


def test_the_generated_client_has_the_documented_operations(client_package: ModuleType) -> None:
    folder = Path(str(client_package.__file__)).parent / "api" / "history"
    assert {p.stem for p in folder.glob("*.py")} - {"__init__"} == {
        "list_history",
        "get_history_item",
        "get_history_changes",
        "put_progress",
        "post_progress_batch",
        "delete_history_item",
        "dismiss_history_item",
        "clear_history",
    }
