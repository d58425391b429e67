"""The changes feed (changes.py, lua/common.lua "change stamps") on the real engine.

Every test runs on the standalone server and on the 3-primary cluster (``mode``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watch_history.changes import encode_token
from watch_history.codec import (
    CHANGED_POSITION,
    ITEM_FIELDS,
    Head,
    changed_at,
    item_values,
    split_ids,
)
from watch_history.errors import InvalidInputError, TokenExpiredError
from watch_history.models import HistoryChanges, HistoryQuery, ProgressUpdate
from watch_history.store import HistoryStore

NOW = datetime.now(UTC).replace(microsecond=0)


def update(
    profile: str, asset_id: str, minutes_ago: float | None, position: float = 100.0
) -> ProgressUpdate:
    """``minutes_ago`` None: a moment from now (newer than a removal or clear just made)."""
    at = NOW - timedelta(minutes=minutes_ago) if minutes_ago is not None else None
    return ProgressUpdate(
        profile_id=profile,
        asset_id=asset_id,
        position=position,
        duration=1000.0,
        event_time=at or datetime.now(UTC) + timedelta(seconds=2),
        asset={"type": "movie", "title": f"Title {asset_id}"},
    )


def full_read(store: HistoryStore, profile: str) -> dict[str, dict[str, Any]]:
    """The history as a full read returns it (the reader's query, not the feed)."""
    page = store.query(profile, HistoryQuery(limit=100))
    assert page.next_cursor is None
    return {i.asset_id: i.to_api() for i in page.items}


class Client:
    """An app's local copy, kept by applying every delta as changes.py says."""

    def __init__(self, store: HistoryStore, profile: str) -> None:
        self.store, self.profile = store, profile
        self.copy: dict[str, dict[str, Any]] = {}
        self.token: str | None = None
        self.re_reads = 0

    def apply(self, delta: HistoryChanges) -> None:
        if delta.reset:
            self.copy.clear()
        for asset_id in delta.removed:
            self.copy.pop(asset_id, None)
        for item in delta.items:
            self.copy[item.asset_id] = item.to_api()
        self.token = delta.next_token

    def sync(self) -> None:
        try:
            delta = self.store.changes(self.profile, self.token)
        except TokenExpiredError:
            self.re_reads += 1
            delta = self.store.changes(self.profile, None)
        self.apply(delta)


def document(store: HistoryStore, profile: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        store.client.execute_command("JSON.GET", store.key(profile), "$")
    )[0]
    if isinstance(doc.get("ids"), str):  # layout 3: one string
        doc["ids"] = split_ids(doc["ids"])
    return doc


def item_stamps(doc: dict[str, Any]) -> list[int]:
    """The change stamps of a layout-3 document's items, in history order."""
    return [
        changed_at(item_values(a, text, {}))
        for a, text in zip(doc["ids"], doc["h"][1:], strict=True)
    ]


def stamps_in(doc: dict[str, Any]) -> list[int]:
    """Every change stamp a document holds: its items', its removals', its evictions' and
    its last clear's."""
    cleared = Head.of(doc["h"][0]).cleared
    return [*item_stamps(doc), *doc.get("tcs", []), *doc.get("ecs", []), cleared]


def latest_stamp(doc: dict[str, Any]) -> int:
    """A document's latest change stamp: max(the head's cs, the front item's stamp)
    (lua/common.lua, "change stamps")."""
    return max([Head.of(doc["h"][0]).stamp, *item_stamps(doc)[:1]])


def set_head_stamp(store: HistoryStore, profile: str, stamp: int) -> None:
    """Put the head's cs at ``stamp`` (as if the server's clock were behind it)."""
    key = store.key(profile)
    head = json.loads(store.client.execute_command("JSON.GET", key, "$.h[0]"))[0]
    fields = head.split(",")
    fields[2] = str(stamp)
    store.client.execute_command("JSON.SET", key, "$.h[0]", json.dumps(",".join(fields)))


# --- the property ---------------------------------------------------------------------

ASSETS = [f"a{k}" for k in range(7)]
# A write: (asset, how many ticks back, position). Tick k of the run is T0 + 10 k s, so
# most writes are newer than what came before (and than removals and clears, which
# tombstone at the item's time when it is ahead of the server's clock), some older
# (stale, or ignored after a removal).
write = st.tuples(
    st.just("write"),
    st.lists(
        st.tuples(st.sampled_from(ASSETS), st.integers(0, 4), st.integers(0, 1000)),
        min_size=1,
        max_size=6,
    ),
)
remove = st.tuples(st.just("remove"), st.lists(st.sampled_from(ASSETS), min_size=1, max_size=2))
nothing: st.SearchStrategy[list[str]] = st.just([])
clear = st.tuples(st.just("clear"), nothing)
sync = st.tuples(st.just("sync"), nothing)
operations = st.lists(
    st.one_of(write, write, write, write, remove, clear, sync, sync), min_size=10, max_size=40
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=operations, max_items=st.sampled_from([2, 4]))
def test_a_client_applying_every_delta_equals_a_full_read(
    make_store: Callable[..., HistoryStore], ops: list[tuple[str, list[Any]]], max_items: int
) -> None:
    """Random writes (new, newer, stale), removals, clears and evictions (MAX_ITEMS 2
    or 4 of 7 assets) between syncs: after every sync the client's copy is exactly the
    history. Eviction records are kept up to MAX_ITEMS, so a client that falls further
    behind gets TokenExpiredError and re-reads (counted, and it still ends equal)."""
    store = make_store(max_items=max_items, max_future_skew_seconds=3600)
    profile = f"prop-{uuid.uuid4().hex[:12]}"
    start = datetime.now(UTC) + timedelta(seconds=60)
    client = Client(store, profile)
    client.sync()
    for tick, (op, args) in enumerate(ops):
        if op == "write":
            store.record_batch(
                [
                    ProgressUpdate(
                        profile_id=profile,
                        asset_id=a,
                        position=float(p),
                        duration=1000.0,
                        event_time=start + timedelta(seconds=10 * (tick - back)),
                    )
                    for a, back, p in args
                ]
            )
        elif op == "remove":
            store.remove(profile, args)
        elif op == "clear":
            store.clear(profile)
        else:
            client.sync()
            assert client.copy == full_read(store, profile)
        # the latest stamp (the next stamp is taken after it) is never behind a change
        if store.client.exists(store.key(profile)):
            doc = document(store, profile)
            assert max(stamps_in(doc)) <= latest_stamp(doc)
    client.sync()
    assert client.copy == full_read(store, profile)


# --- the pieces, one by one -----------------------------------------------------------


def test_first_call_is_everything_then_only_what_changed(store: HistoryStore, profile_id: str):
    store.record_batch([update(profile_id, "a", 10), update(profile_id, "b", 9)])
    first = store.changes(profile_id)
    assert first.reset
    assert {i.asset_id for i in first.items} == {"a", "b"}
    assert store.changes(profile_id, first.next_token).items == []
    store.record_progress(update(profile_id, "a", 1, 200.0))
    second = store.changes(profile_id, first.next_token)
    assert not second.reset
    assert [(i.asset_id, i.position) for i in second.items] == [("a", 200.0)]
    assert second.removed == []


def test_a_stale_update_that_fills_a_field_is_a_change(store: HistoryStore, profile_id: str):
    store.record_progress(
        ProgressUpdate(profile_id=profile_id, asset_id="a", position=5, event_time=NOW)
    )
    token = store.changes(profile_id).next_token
    # Older, so stale; but it brings the duration, still missing: a stored field changed.
    store.record_batch([update(profile_id, "a", 5)])
    delta = store.changes(profile_id, token)
    assert [(i.asset_id, i.duration) for i in delta.items] == [("a", 1000.0)]
    # The same again changes nothing: no delta.
    store.record_batch([update(profile_id, "a", 5)])
    assert store.changes(profile_id, delta.next_token).items == []


def test_removals_evictions_and_clears_reach_the_client(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(max_items=2)
    store.record_batch([update(profile_id, "a", 10), update(profile_id, "b", 9)])
    token = store.changes(profile_id).next_token
    store.remove(profile_id, ["a"])
    store.record_batch([update(profile_id, "c", 8), update(profile_id, "d", 7)])  # evicts b
    delta = store.changes(profile_id, token)
    assert sorted(delta.removed) == ["a", "b"]
    assert sorted(i.asset_id for i in delta.items) == ["c", "d"]
    store.clear(profile_id)
    store.record_progress(update(profile_id, "e", None))
    after_clear = store.changes(profile_id, delta.next_token)
    assert after_clear.reset
    assert after_clear.removed == []
    assert [i.asset_id for i in after_clear.items] == ["e"]


def test_an_asset_removed_then_written_again_is_an_item_not_a_removal(
    store: HistoryStore, profile_id: str
):
    store.record_progress(update(profile_id, "a", 10))
    token = store.changes(profile_id).next_token
    store.remove(profile_id, ["a"])
    store.record_progress(update(profile_id, "a", None))  # newer than the removal
    delta = store.changes(profile_id, token)
    assert delta.removed == []
    assert [i.asset_id for i in delta.items] == ["a"]


def test_two_writes_in_one_millisecond_and_a_sync_between_them(
    store: HistoryStore, profile_id: str
):
    """The race the stamps exist for (lua/common.lua draws it). The server's clock is
    put behind the profile's latest stamp, so every write below happens "in the same
    millisecond" as far as the clock can tell."""
    store.record_progress(update(profile_id, "a", 10))
    ahead = latest_stamp(document(store, profile_id)) + 60_000
    set_head_stamp(store, profile_id, ahead)
    store.record_progress(update(profile_id, "a", 9))  # write A
    token = store.changes(profile_id).next_token  # the sync between A and B
    store.record_progress(update(profile_id, "b", 8))  # write B, same "millisecond"
    delta = store.changes(profile_id, token)
    assert [i.asset_id for i in delta.items] == ["b"]
    assert latest_stamp(document(store, profile_id)) == ahead + 2


def test_a_token_older_than_a_forgotten_removal_is_gone(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(tombstone_ttl_days=1)
    store.record_batch([update(profile_id, "a", 10), update(profile_id, "b", 9)])
    token = store.changes(profile_id).next_token
    store.remove(profile_id, ["a"])
    recent = store.changes(profile_id, token).next_token
    # The tombstone ages past its TTL; the next removal forgets it.
    store.client.execute_command("JSON.SET", store.key(profile_id), "$.tts[0]", 1)
    store.remove(profile_id, ["b"])
    assert document(store, profile_id)["tid"] == ["b"]
    with pytest.raises(TokenExpiredError, match="read the whole history again"):
        store.changes(profile_id, token)
    assert store.changes(profile_id, recent).removed == ["b"]  # newer tokens still work


def test_a_token_older_than_the_dropped_eviction_records_is_gone(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(max_items=2)  # and so at most 2 eviction records
    store.record_batch([update(profile_id, "a", 10), update(profile_id, "b", 9)])
    token = store.changes(profile_id).next_token
    for k, asset in enumerate(["c", "d", "e"]):  # three evictions, one record dropped
        store.record_progress(update(profile_id, asset, 8 - k))
    assert document(store, profile_id)["eid"] == ["b", "c"]
    with pytest.raises(TokenExpiredError):
        store.changes(profile_id, token)


def test_a_front_item_evicted_by_its_own_call_leaves_the_stamp_in_cs(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    """MAX_ITEMS 1, two assets at the same time: "a" goes in front of "b" (ties by
    assetId) and is then evicted by the same call (rule 5 evicts the lowest id of the
    oldest). The front item, "b", does not carry that call's stamp, so "cs" must."""
    store = make_store(max_items=1)
    store.record_progress(update(profile_id, "b", 10))
    store.record_batch([update(profile_id, "a", 10)])
    doc = document(store, profile_id)
    assert doc["ids"] == ["b"]
    assert doc["eid"] == ["a"]
    assert latest_stamp(doc) == doc["ecs"][-1] == Head.of(doc["h"][0]).stamp
    token = store.changes(profile_id).next_token
    store.record_progress(update(profile_id, "b", 1))
    assert [i.asset_id for i in store.changes(profile_id, token).items] == ["b"]


def test_bad_tokens_are_invalid_input(store: HistoryStore, profile_id: str):
    store.record_progress(update(profile_id, "a", 1))
    other = store.changes(f"{profile_id}-other").next_token
    with pytest.raises(InvalidInputError, match="another profile"):
        store.changes(profile_id, other)
    for bad in ["!!", "e30", encode_token(profile_id, -5)]:
        with pytest.raises(InvalidInputError, match="malformed"):
            store.changes(profile_id, bad)
    future = encode_token(profile_id, latest_stamp(document(store, profile_id)) + 1)
    with pytest.raises(TokenExpiredError):
        store.changes(profile_id, future)


def test_a_history_without_a_document_and_one_written_before_stamps(
    store: HistoryStore, profile_id: str
):
    empty = store.changes(profile_id)
    assert empty.reset
    assert empty.items == []
    assert empty.removed == []
    # A document of layout 1 (before change stamps), as it was stored before.
    old_item = json.dumps(["old", int(NOW.timestamp() * 1000) - 3_600_000, 5, 100, 1, 0])
    doc = {"v": 1, "h": [old_item], "ids": ["old"], "tid": ["gone"], "tts": [1], "wm": 0}
    store.client.execute_command("JSON.SET", store.key(profile_id), "$", json.dumps(doc))
    client = Client(store, profile_id)
    client.sync()
    assert set(client.copy) == {"old"}
    store.record_progress(update(profile_id, "new", 1))
    store.remove(profile_id, ["old"])
    client.sync()
    assert client.copy == full_read(store, profile_id)
    assert set(client.copy) == {"new"}
    upgraded = document(store, profile_id)
    assert upgraded["v"] == 3
    assert len(upgraded["tcs"]) == len(upgraded["tid"])


def test_the_stamp_follows_every_field_of_an_item(store: HistoryStore, profile_id: str):
    """codec.CHANGED_POSITION is after ITEM_FIELDS; Lua's F_CHANGED is N_FIELDS + 1."""
    assert len(ITEM_FIELDS) == CHANGED_POSITION
    store.record_progress(update(profile_id, "a", 1))
    values = item_values("a", document(store, profile_id)["h"][1], {})
    assert len(values) == len(ITEM_FIELDS) + 1
    assert changed_at(values) == latest_stamp(document(store, profile_id))
