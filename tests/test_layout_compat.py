"""During a deploy the scripts of layout 2 run beside layout 3's: they must never
change a layout-3 document. Their writes fail on it before writing anything (the
recorder then reports the record for retry, and layout 3's code lands it); their reads
leave it as it is.

``tests/layout2_lua`` is a frozen copy of the layout-2 scripts as they were deployed
(shared/watch_history/lua before layout 3), built into scripts the way that store built
them. Every one runs, on every path, against layout-3 documents; the document's DUMP is
byte-identical afterwards. Runs on both engines, standalone and cluster, like the suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.exceptions import ResponseError

from tests.layout2 import old_argument, old_script
from watch_history.codec import is_layout3
from watch_history.models import AssetInfo, ProgressUpdate
from watch_history.store import HistoryStore

NOW = datetime.now(UTC).replace(microsecond=0)


def update(
    profile: str, asset_id: str, minutes_ago: float, position: float = 50.0
) -> ProgressUpdate:
    return ProgressUpdate(
        profile_id=profile,
        asset_id=asset_id,
        position=position,
        duration=1000.0,
        event_time=NOW - timedelta(minutes=minutes_ago),
        device_id="tv-1",
        asset=AssetInfo(type="episode", title=f"Title, {asset_id}", show="s1", season=1),
    )


# The layout-3 documents the old scripts meet: an empty history (never written, then
# cleared), one with items, tombstones and eviction records.
def empty_history(store: HistoryStore, profile: str) -> None:
    store.record_progress(update(profile, "a", 30))
    store.clear(profile)


def full_history(store: HistoryStore, profile: str) -> None:
    store.record_batch([update(profile, f"a{k}", 60 - k) for k in range(6)])  # evicts 2
    store.remove(profile, ["a3", "never-there"])
    store.record_progress(update(profile, "a4", 1))  # an older item moved to the front


DOCUMENTS: dict[str, Callable[[HistoryStore, str], None]] = {
    "empty": empty_history,
    "full": full_history,
}


def old_calls(store: HistoryStore, profile: str) -> list[tuple[str, str, list[str], bool]]:
    """(what, script, ARGV, whether it writes) for every path of the old scripts."""
    threshold = store.settings.completion_threshold

    def record(*updates: ProgressUpdate, items: int = 0) -> list[str]:
        config = json.dumps([threshold, store.settings.max_items, items])
        return [config, *(old_argument(u, threshold) for u in updates)]

    ttl = json.dumps([86_400_000])
    calls: list[tuple[str, str, list[str], bool]] = []
    for items in (0, 1):
        calls += [
            (
                f"heartbeat on the front item ({items})",
                "record_progress",
                record(update(profile, "a4", 0.5), items=items),
                True,
            ),
            (
                f"older item moved ({items})",
                "record_progress",
                record(update(profile, "a5", 0.2), items=items),
                True,
            ),
            (
                f"new asset ({items})",
                "record_progress",
                record(update(profile, "new", 0.1), items=items),
                True,
            ),
            (
                f"stale update ({items})",
                "record_progress",
                record(update(profile, "a4", 500), items=items),
                True,
            ),
            (
                f"removed asset ({items})",
                "record_progress",
                record(update(profile, "a3", 0.1), items=items),
                True,
            ),
            (
                f"several ({items})",
                "record_progress",
                record(update(profile, "a4", 0.3), update(profile, "x", 0.3), items=items),
                True,
            ),
        ]
    calls += [
        ("removal of an item", "remove_asset", [ttl, "a4"], True),
        ("removal of an unknown asset", "remove_asset", [ttl, "zz"], True),
        ("removal again of a removed asset", "remove_asset", [ttl, "a3"], True),
        ("clear", "clear_history", [], True),
        ("lookup by ids", "get_items", ["a4", "a5", "zz"], False),
        ("changes since 0", "read_changes", ["0"], False),
        ("changes since a token", "read_changes", ["1"], False),
    ]
    return calls


@pytest.mark.parametrize("shape", sorted(DOCUMENTS))
def test_layout_2_scripts_never_change_a_layout_3_document(
    make_store: Callable[..., HistoryStore], profile_id: str, shape: str
) -> None:
    store = make_store(max_items=4)
    DOCUMENTS[shape](store, profile_id)
    key = store.key(profile_id)
    head = json.loads(store.client.execute_command("JSON.GET", key, "$.h[0]"))[0]
    assert is_layout3(head)
    before = store.client.dump(key)
    outcomes: dict[str, Any] = {}
    for what, name, argv, writes in old_calls(store, profile_id):
        try:
            outcomes[what] = store.client.execute_command("EVAL", old_script(name), 1, key, *argv)
        except ResponseError as exc:
            outcomes[what] = exc
        assert store.client.dump(key) == before, f"{name}: {what} changed the document"
        if writes:  # a write that did not fail would be a lost update
            assert isinstance(outcomes[what], ResponseError), f"{name}: {what} did not fail"


def test_layout_2_readers_fail_on_a_layout_3_document_rather_than_show_a_wrong_item(
    store: HistoryStore, profile_id: str
) -> None:
    """What layout 2's readers get during a deploy: no stored text of layout 3 (the head
    or an item) decodes as a layout-2 item, so they fail (503, retried by the app)."""
    full_history(store, profile_id)
    key = store.key(profile_id)
    found = store.client.execute_command("EVAL", old_script("get_items"), 1, key, "a4", "a5")
    stored = json.loads(store.client.execute_command("JSON.GET", key, "$.h"))[0]
    for text in [*(f for f in found if f), *stored]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


def test_the_frozen_scripts_work_on_the_layout_they_were_written_for(
    store: HistoryStore, profile_id: str
) -> None:
    """The control: on a layout-2 document (written by them) every call above succeeds,
    so their failures on layout 3 come from the layout, not from a broken copy."""
    key = store.key(profile_id)
    threshold = store.settings.completion_threshold
    config = json.dumps([threshold, 4, 0])
    seed = [old_argument(update(profile_id, f"a{k}", 60 - k), threshold) for k in range(6)]
    store.client.execute_command("EVAL", old_script("record_progress"), 1, key, config, *seed)
    assert json.loads(store.client.execute_command("JSON.GET", key, "$.v")) == [2]
    for what, name, argv, _ in old_calls(store, profile_id):
        store.client.execute_command("EVAL", old_script(name), 1, key, *argv)  # no error
        assert json.loads(store.client.execute_command("JSON.GET", key, "$.v")) == [2], what
