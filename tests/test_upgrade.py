"""Upgrading stored documents to the current layout: ``HistoryStore.upgrade_layout``,
standalone and cluster.

The documents are the committed fixtures (tests/fixtures/layouts/, written by this
code's store for layout 2 and per codec.py for layout 1: tests/fixtures/make_layouts.py).
Every assertion holds for any current layout (codec.LAYOUT): what reads answer does not
change, the document says it is in the current layout, a second run changes nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from watch_history.codec import LAYOUT
from watch_history.connection import ClientType
from watch_history.models import HistoryQuery, ProgressUpdate, Status
from watch_history.store import HistoryStore, UpgradeOutcome

FIXTURES = Path(__file__).parent / "fixtures" / "layouts"
LUA = Path(__file__).parents[1] / "shared" / "watch_history" / "lua"


def fixture_documents(layout: int) -> dict[str, dict[str, Any]]:
    data = json.loads((FIXTURES / f"v{layout}.json").read_text())
    assert data["layout"] == layout
    documents: dict[str, dict[str, Any]] = data["documents"]
    return documents


OLD_LAYOUTS = (1, 2)


@pytest.fixture
def prefixed(make_store: Callable[..., HistoryStore]) -> HistoryStore:
    """A store with a key prefix of its own: the command scans only this test's keys."""
    return make_store(key_prefix=f"u{uuid.uuid4().hex[:10]}:")


def load(store: HistoryStore, layout: int, suffix: str = "") -> dict[str, str]:
    """The fixture documents of ``layout`` under ``store``'s prefix: profile id -> key."""
    keys = {}
    for profile_id, doc in fixture_documents(layout).items():
        key = store.key(profile_id + suffix)
        store.client.execute_command("JSON.SET", key, "$", json.dumps(doc))
        keys[profile_id + suffix] = key
    return keys


def document(store: HistoryStore, key: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(store.client.execute_command("JSON.GET", key, "$"))[0]
    return found


def dump(client: ClientType, key: str) -> bytes | None:
    return client.dump(key)


def reads(store: HistoryStore, profile_id: str) -> dict[str, Any]:
    """Everything the read API answers about a profile (as JSON-able values)."""
    pages = []
    query = HistoryQuery(limit=3)
    while True:  # every page, through the cursors
        page = store.query(profile_id, query)
        pages.append(page.model_dump(mode="json"))
        if page.next_cursor is None:
            break
        query = HistoryQuery(limit=3, cursor=page.next_cursor)
    everything = store.query(profile_id, HistoryQuery(limit=100)).items
    ids = [item.asset_id for item in everything]
    filtered = {}
    for item in everything:
        if item.sport:
            filtered[f"sport={item.sport}"] = HistoryQuery(sport=item.sport, limit=100)
        if item.show:
            filtered[f"show={item.show}"] = HistoryQuery(show=item.show, season=item.season)
    full = store.changes(profile_id)
    return {
        "pages": pages,
        "continue": store.query(profile_id, HistoryQuery(status=Status.IN_PROGRESS)).model_dump(
            mode="json"
        ),
        "filtered": {
            name: store.query(profile_id, q).model_dump(mode="json")
            for name, q in sorted(filtered.items())
        },
        "by id": {
            a: i.model_dump(mode="json") for a, i in store.get_items(profile_id, ids).items()
        },
        "changes": full.model_dump(mode="json"),
        "since its token": store.changes(profile_id, full.next_token).model_dump(mode="json"),
    }


# --- one document -----------------------------------------------------------------------


def test_python_lua_and_new_documents_agree_on_the_layout(store: HistoryStore, profile_id: str):
    common = (LUA / "common.lua").read_text()
    assert re.search(r"^local LAYOUT = (\d+)$", common, re.MULTILINE)[1] == str(LAYOUT)  # type: ignore[index]
    store.clear(profile_id)  # creates the document
    assert document(store, store.key(profile_id))["v"] == LAYOUT
    assert store.upgrade_layout(store.key(profile_id)) is UpgradeOutcome.CURRENT


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_every_fixture_document_reads_the_same_after_its_upgrade(
    prefixed: HistoryStore, layout: int
):
    keys = load(prefixed, layout)
    before = {p: reads(prefixed, p) for p in keys}
    expected = UpgradeOutcome.UPGRADED if layout < LAYOUT else UpgradeOutcome.CURRENT
    for key in keys.values():
        assert prefixed.upgrade_layout(key) is expected
        assert document(prefixed, key)["v"] == LAYOUT
    assert {p: reads(prefixed, p) for p in keys} == before
    dumps = {key: dump(prefixed.client, key) for key in keys.values()}
    for key in keys.values():  # a second run changes nothing
        assert prefixed.upgrade_layout(key) is UpgradeOutcome.CURRENT
    assert {key: dump(prefixed.client, key) for key in keys.values()} == dumps


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_writes_after_an_upgrade_do_what_they_do_on_the_old_document(
    prefixed: HistoryStore, layout: int
):
    """The same writes on an upgraded copy and on an old copy read the same after."""
    old = load(prefixed, layout, "-old")
    new = load(prefixed, layout, "-new")
    for key in new.values():
        prefixed.upgrade_layout(key)
    for profile in fixture_documents(layout):
        a, b = f"{profile}-old", f"{profile}-new"
        now = datetime.now(UTC)
        for pid in (a, b):
            items = prefixed.query(pid, HistoryQuery(limit=100)).items
            if items:
                prefixed.remove(pid, [items[-1].asset_id])
            prefixed.record_batch(_updates(pid, items, now))
        assert _without_tokens(reads(prefixed, a)) == _without_tokens(reads(prefixed, b))
    assert all(document(prefixed, key)["v"] == LAYOUT for key in old.values())


def _updates(profile_id: str, items: list[Any], now: datetime) -> list[ProgressUpdate]:
    out = [
        ProgressUpdate.model_validate(
            {
                "profileId": profile_id,
                "assetId": "new-title",
                "position": 12,
                "duration": 1200,
                "eventTime": now.isoformat(),
                "eventType": "heartbeat",
                "deviceId": "tv-upgrade",
                "asset": {"type": "movie", "title": "New title"},
            }
        )
    ]
    if len(items) > 1:  # an older item resumed
        out.append(
            ProgressUpdate.model_validate(
                {
                    "profileId": profile_id,
                    "assetId": items[1].asset_id,
                    "position": 30,
                    "eventTime": now.isoformat(),
                    "eventType": "heartbeat",
                }
            )
        )
    return out


def _without_tokens(answer: Any) -> Any:
    """Tokens and cursors name their profile, and writes take change stamps from the
    server's clock: they differ between two copies of one history."""
    if isinstance(answer, dict):
        return {
            k: _without_tokens(v)
            for k, v in answer.items()
            if k not in ("next_token", "next_cursor")
        }
    if isinstance(answer, list):
        return [_without_tokens(v) for v in answer]
    return answer


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_a_dry_run_changes_nothing(prefixed: HistoryStore, layout: int):
    keys = load(prefixed, layout)
    dumps = {key: dump(prefixed.client, key) for key in keys.values()}
    expected = UpgradeOutcome.UPGRADED if layout < LAYOUT else UpgradeOutcome.CURRENT
    for key in keys.values():
        assert prefixed.upgrade_layout(key, dry_run=True) is expected
    assert {key: dump(prefixed.client, key) for key in keys.values()} == dumps


def plant_others(store: HistoryStore) -> dict[str, str]:
    """Keys the upgrade must leave alone, by what they are: name -> key."""
    prefix = store.settings.key_prefix
    client = store.client
    keys = {
        "string": f"{prefix}{{str-1}}",
        "hash": f"{prefix}{{hash-1}}",
        "json array": f"{prefix}{{arr-1}}",
        "json without a history": f"{prefix}{{obj-1}}",
        "newer layout": f"{prefix}{{newer-1}}",
        "another shape": f"{prefix}settings",
        "another prefix": f"x{prefix}{{p}}",
    }
    client.set(keys["string"], "x")
    client.hset(keys["hash"], "v", "1")
    client.execute_command("JSON.SET", keys["json array"], "$", "[1,2]")
    client.execute_command("JSON.SET", keys["json without a history"], "$", '{"v":1}')
    client.execute_command(
        "JSON.SET", keys["newer layout"], "$", json.dumps({"v": LAYOUT + 1, "h": []})
    )
    client.execute_command("JSON.SET", keys["another shape"], "$", '{"v":1,"h":[]}')
    client.execute_command("JSON.SET", keys["another prefix"], "$", '{"v":1,"h":[]}')
    return keys


def test_other_keys_are_left_alone(prefixed: HistoryStore):
    others = plant_others(prefixed)
    dumps = {k: dump(prefixed.client, k) for k in others.values()}
    outcomes = {name: prefixed.upgrade_layout(key) for name, key in others.items()}
    assert outcomes == {
        **{name: UpgradeOutcome.NOT_HISTORY for name in others},
        "newer layout": UpgradeOutcome.NEWER,
    }
    assert prefixed.upgrade_layout(prefixed.key("no-such-profile")) is UpgradeOutcome.NOT_HISTORY
    assert {k: dump(prefixed.client, k) for k in others.values()} == dumps
