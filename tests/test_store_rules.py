"""The store's contract (rules 1-6 of the data model) on the real engine.

Every test runs twice: against the standalone server and the 3-primary cluster.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from redis.cluster import RedisCluster

from tests.conftest import ROOT, make_client
from tests.layout2 import old_record, to_layout_1
from tests.model import HistoryModel
from watch_history.codec import ITEM_FIELDS, Head, split_ids
from watch_history.errors import InvalidInputError, StaleUpdateError, StoreUnavailableError
from watch_history.models import EventType, HistoryItem, HistoryQuery, ProgressUpdate, epoch_ms
from watch_history.settings import Settings
from watch_history.store import _LUA, HistoryStore, RecordOutcome, _script

NOW = datetime.now(UTC).replace(microsecond=0)


def update(
    profile: str,
    asset_id: str,
    at: datetime | int,
    position: float = 100.0,
    duration: float | None = 1000.0,
    **extra: Any,
) -> ProgressUpdate:
    return ProgressUpdate(
        profile_id=profile,
        asset_id=asset_id,
        position=position,
        duration=duration,
        event_time=at,
        **extra,
    )


def items(store: HistoryStore, profile: str) -> list[dict[str, Any]]:
    page = store.query(profile, HistoryQuery(limit=100))
    return [i.to_api() for i in page.items]


def document(store: HistoryStore, profile: str) -> dict[str, Any]:
    raw = store.client.execute_command("JSON.GET", store.key(profile), "$")
    doc: dict[str, Any] = json.loads(raw)[0]
    if isinstance(doc.get("ids"), str):  # layout 3: one string
        doc["ids"] = split_ids(doc["ids"])
    return doc


# --- rule 1: one item per asset ---------------------------------------------------------------


def test_one_item_per_asset_however_often_it_is_written(store: HistoryStore, profile_id: str):
    for k in range(5):
        store.record_progress(update(profile_id, "m1", NOW - timedelta(minutes=10 - k), 10.0 * k))
    store.record_batch([update(profile_id, "m1", NOW - timedelta(minutes=3), 99.0)] * 3)
    doc = document(store, profile_id)
    assert doc["ids"] == ["m1"]
    assert len(doc["h"]) == 2  # the head, then the one item
    assert items(store, profile_id)[0]["position"] == 99.0


# --- rule 2: last writer wins by eventTime ----------------------------------------------------


def test_older_and_equal_updates_change_nothing_but_first_watched(
    store: HistoryStore, profile_id: str
):
    t = NOW - timedelta(hours=1)
    stored = store.record_progress(
        update(profile_id, "m1", t, 500.0, asset={"title": "Final", "sport": "cricket"})
    )
    with pytest.raises(StaleUpdateError) as equal:
        store.record_progress(update(profile_id, "m1", t, 10.0))
    assert equal.value.item == stored
    with pytest.raises(StaleUpdateError) as older:
        store.record_progress(update(profile_id, "m1", t - timedelta(minutes=5), 20.0))
    assert older.value.reason == "stale"
    (item,) = items(store, profile_id)
    assert item["position"] == 500.0
    assert item["lastWatchedAt"] == stored.to_api()["lastWatchedAt"]
    assert item["firstWatchedAt"] == (t - timedelta(minutes=5)).isoformat().replace(
        "+00:00", ".000Z"
    )


def test_missing_asset_fields_keep_their_stored_values(store: HistoryStore, profile_id: str):
    store.record_progress(
        update(
            profile_id,
            "m1",
            NOW - timedelta(minutes=2),
            asset={"type": "match", "title": "CSK v MI", "sport": "cricket", "teams": ["csk"]},
            device_id="tv-1",
        )
    )
    after = store.record_progress(
        update(profile_id, "m1", NOW - timedelta(minutes=1), 300.0, duration=None)
    )
    assert after.title == "CSK v MI"
    assert after.teams == ["csk"]
    assert after.device_id == "tv-1"
    assert after.duration == 1000.0
    assert after.position == 300.0


# --- rule 3: completion -----------------------------------------------------------------------


def test_completion_by_threshold_by_event_and_kept_completed_at_on_rewatch(
    store: HistoryStore, profile_id: str
):
    t = NOW - timedelta(hours=2)
    done = store.record_progress(update(profile_id, "m1", t, 900.0, 1000.0))
    assert done.completed
    assert done.progress == 0.9
    assert done.completed_at == t
    rewatch = store.record_progress(update(profile_id, "m1", t + timedelta(hours=1), 60.0))
    assert not rewatch.completed
    assert rewatch.completed_at == t  # kept when a rewatch starts
    live = store.record_progress(update(profile_id, "live1", t, 5.0, None, event_type="complete"))
    assert live.completed
    assert live.progress is None
    assert live.duration is None


def test_in_progress_needs_the_minimum_resume_position(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(min_resume_seconds=30)
    t = NOW - timedelta(minutes=30)
    store.record_batch(
        [
            update(profile_id, "barely", t, 29.0),
            update(profile_id, "resumable", t + timedelta(seconds=1), 30.0),
            update(profile_id, "finished", t + timedelta(seconds=2), 1000.0),
        ]
    )
    in_progress = store.continue_watching(profile_id).items
    assert [i.asset_id for i in in_progress] == ["resumable"]
    everything = store.query(profile_id, HistoryQuery()).items
    assert {i.asset_id for i in everything} == {"barely", "resumable", "finished"}


# --- rule 3: start reports and mark as watched ------------------------------------------------


@pytest.mark.parametrize("order", ["in order", "start report first"])
def test_a_start_report_keeps_the_resume_point_whatever_the_order(
    store: HistoryStore, profile_id: str, order: str
):
    """A player reports 0 before it seeks to the resume point: the point stays, while
    lastWatchedAt, the device and the order move. The next heartbeat is the real one."""
    t = NOW - timedelta(hours=2)
    paused = update(profile_id, "ep-5", t, 1843.0, 2633.0, event_type="pause", device_id="tv")
    started = update(
        profile_id, "ep-5", t + timedelta(hours=1), 0.0, 2633.0, event_type="start", device_id="web"
    )
    reports = [paused, started] if order == "in order" else [started, paused]
    for u in reports:
        with contextlib.suppress(StaleUpdateError):
            store.record_progress(u)
    item = store.get_item(profile_id, "ep-5")
    assert item is not None
    assert (item.position, item.last_watched_at, item.device_id) == (
        1843.0,
        started.event_time,
        "web",
    )
    assert [i.asset_id for i in store.continue_watching(profile_id).items] == ["ep-5"]

    seek = update(profile_id, "ep-5", t + timedelta(hours=1, seconds=5), 4.0, 2633.0)
    assert store.record_progress(seek).position == 4.0  # a heartbeat: what the viewer did


def test_a_start_report_at_or_past_the_minimum_is_a_resume_point(
    store: HistoryStore, profile_id: str
):
    t = NOW - timedelta(hours=2)
    store.record_progress(update(profile_id, "m", t, 1843.0))
    resumed = update(profile_id, "m", t + timedelta(hours=1), 600.0, event_type="start")
    assert store.record_progress(resumed).position == 600.0
    fresh = update(profile_id, "new", t, 0.0, event_type="start")
    assert store.record_progress(fresh).position == 0.0  # nothing else known: it is the point


def test_mark_as_watched_stands_at_the_duration(store: HistoryStore, profile_id: str):
    t = NOW - timedelta(hours=2)
    store.record_progress(update(profile_id, "ep", t, 1843.0, 2633.0))
    marked = update(profile_id, "ep", t + timedelta(hours=1), 0.0, None, event_type="complete")
    item = store.record_progress(marked)
    assert (item.position, item.progress, item.completed) == (2633.0, 1.0, True)


def test_mark_as_watched_without_a_duration_keeps_the_position_until_one_arrives(
    store: HistoryStore, profile_id: str
):
    t = NOW - timedelta(hours=2)
    marked = update(profile_id, "doc", t, 0.0, None, event_type="complete")
    item = store.record_progress(marked)
    assert (item.position, item.progress, item.completed) == (0.0, None, True)
    late = update(profile_id, "doc", t - timedelta(minutes=5), 300.0, 3600.0)
    with pytest.raises(StaleUpdateError) as stale:
        store.record_progress(late)  # older: it only brings the duration
    stored = stale.value.item
    assert isinstance(stored, HistoryItem)
    assert (stored.position, stored.progress, stored.completed) == (3600.0, 1.0, True)


# --- dismissed from continue watching ---------------------------------------------------------


def test_a_dismissed_item_leaves_continue_watching_until_it_is_watched_again(
    store: HistoryStore, profile_id: str
):
    t = NOW - timedelta(hours=2)
    store.record_batch(
        [
            update(profile_id, "a", t, 600.0),
            update(profile_id, "b", t + timedelta(seconds=1), 600.0),
        ]
    )
    before = store.changes(profile_id)

    assert store.dismiss(profile_id, "a") is True
    assert [i.asset_id for i in store.continue_watching(profile_id).items] == ["b"]
    everything = {i.asset_id: i for i in store.query(profile_id, HistoryQuery()).items}
    dismissed_at = everything["a"].dismissed_at
    assert dismissed_at is not None
    assert dismissed_at >= NOW
    assert everything["b"].dismissed_at is None
    changes = store.changes(profile_id, before.next_token)
    assert [i.asset_id for i in changes.items] == ["a"]

    assert store.dismiss(profile_id, "a") is True  # idempotent: nothing changes
    assert store.changes(profile_id, changes.next_token).items == []
    late = update(profile_id, "a", t + timedelta(seconds=2), 700.0)  # sent before the dismissal
    store.record_progress(late)
    assert [i.asset_id for i in store.continue_watching(profile_id).items] == ["b"]

    resumed = update(profile_id, "a", datetime.now(UTC) + timedelta(seconds=5), 800.0)
    store.record_progress(resumed)
    assert [i.asset_id for i in store.continue_watching(profile_id).items] == ["a", "b"]


def test_dismissing_an_asset_not_in_the_history_changes_nothing(
    store: HistoryStore, profile_id: str
):
    assert store.dismiss(profile_id, "nothing") is False
    assert not store.client.exists(store.key(profile_id))
    store.record_progress(update(profile_id, "a", NOW - timedelta(hours=1), 600.0))
    before = document(store, profile_id)
    assert store.dismiss(profile_id, "b") is False
    assert document(store, profile_id) == before


def test_a_dismissed_episode_takes_its_show_out_of_the_collapsed_rail(
    store: HistoryStore, profile_id: str
):
    t = NOW - timedelta(hours=2)
    show = {"type": "episode", "show": "the-crown"}
    store.record_batch(
        [
            update(profile_id, "ep-3", t, 600.0, asset=show),
            update(profile_id, "ep-5", t + timedelta(seconds=1), 600.0, asset=show),
            update(profile_id, "film", t + timedelta(seconds=2), 600.0),
        ]
    )
    rail = HistoryQuery(status="in_progress", collapse="show")
    assert [i.asset_id for i in store.query(profile_id, rail).items] == ["film", "ep-5"]
    store.dismiss(profile_id, "ep-5")
    assert [i.asset_id for i in store.query(profile_id, rail).items] == ["film"]
    # not collapsed, the older episode is its own entry
    in_progress = store.continue_watching(profile_id).items
    assert [i.asset_id for i in in_progress] == ["film", "ep-3"]


# --- rule 4: removal and tombstones -----------------------------------------------------------


def test_removed_asset_is_not_resurrected_by_late_updates(store: HistoryStore, profile_id: str):
    t = NOW - timedelta(minutes=10)
    store.record_progress(update(profile_id, "m1", t, 100.0))
    assert store.remove(profile_id, ["m1"]) == 1
    assert store.get_item(profile_id, "m1") is None
    late = update(profile_id, "m1", t + timedelta(minutes=1), 200.0)  # in flight before removal
    with pytest.raises(StaleUpdateError) as err:
        store.record_progress(late)
    assert err.value.reason == "ignored"
    assert err.value.item is None
    assert store.record_batch([late, late]).outcomes == {
        0: RecordOutcome.IGNORED,
        1: RecordOutcome.IGNORED,
    }
    assert items(store, profile_id) == []
    assert store.remove(profile_id, ["m1"]) == 0  # idempotent


def test_a_newer_update_after_removal_starts_a_new_item(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(max_future_skew_seconds=86_400)  # an hour ahead of the removal
    store.record_progress(update(profile_id, "m1", NOW - timedelta(hours=3), 100.0))
    store.remove(profile_id, ["m1"])
    tombstone = document(store, profile_id)["tts"][0]
    again = NOW + timedelta(hours=1)  # played again, after the removal
    assert epoch_ms(again) > tombstone
    item = store.record_progress(update(profile_id, "m1", again, 5.0))
    assert item.first_watched_at == again  # a new item: its history starts over


def test_tombstone_is_at_least_the_removed_items_last_watched(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(max_future_skew_seconds=86_400)  # a player 2 h ahead
    future = NOW + timedelta(hours=2)  # a clock-skewed player, within this store's skew
    store.record_progress(update(profile_id, "m1", future, 100.0))
    store.remove(profile_id, ["m1"])
    assert document(store, profile_id)["tts"] == [epoch_ms(future)]
    with pytest.raises(StaleUpdateError):
        store.record_progress(update(profile_id, "m1", future - timedelta(minutes=1), 1.0))


def test_clear_hides_everything_and_late_updates_stay_out(store: HistoryStore, profile_id: str):
    t = NOW - timedelta(minutes=5)
    store.record_batch([update(profile_id, f"a{k}", t + timedelta(seconds=k)) for k in range(5)])
    assert store.clear(profile_id) == 5
    assert items(store, profile_id) == []
    result = store.record_batch([update(profile_id, "a1", t + timedelta(minutes=1))])
    assert result.outcomes == {0: RecordOutcome.IGNORED}
    doc = document(store, profile_id)
    assert doc["h"][1:] == []
    assert doc["ids"] == []
    assert Head.of(doc["h"][0]).watermark >= epoch_ms(t)


def test_remove_on_a_profile_never_seen_still_guards_against_late_updates(
    store: HistoryStore, profile_id: str
):
    store.remove(profile_id, ["m1"])
    with pytest.raises(StaleUpdateError):
        store.record_progress(update(profile_id, "m1", NOW - timedelta(seconds=1)))


def test_expired_tombstones_are_pruned(make_store: Callable[..., HistoryStore], profile_id: str):
    store = make_store(tombstone_ttl_days=1e-9)  # expire within the next millisecond
    store.remove(profile_id, ["old"])
    first = document(store, profile_id)["tts"][0]
    while _server_ms(store) <= first:  # wait for the server's clock, not a fixed time
        pass
    store.remove(profile_id, ["new"])
    assert document(store, profile_id)["tid"] == ["new"]


def _server_ms(store: HistoryStore) -> int:
    seconds, micros = (
        store.client.time()
        if not hasattr(store.client, "get_primaries")
        else (store.client.time(target_nodes=store.client.get_primaries()[0]))
    )
    return int(seconds) * 1000 + int(micros) // 1000


# --- rule 5: bounded size ---------------------------------------------------------------------


def test_oldest_items_go_past_max_items_ties_lowest_asset_id(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(max_items=3)
    t = NOW - timedelta(hours=1)
    store.record_batch(
        [
            update(profile_id, "b", t),
            update(profile_id, "a", t),  # tie with b: a (lowest id) goes first
            update(profile_id, "c", t + timedelta(minutes=1)),
            update(profile_id, "d", t + timedelta(minutes=2)),
        ]
    )
    assert [i["assetId"] for i in items(store, profile_id)] == ["d", "c", "b"]
    store.record_progress(update(profile_id, "e", t + timedelta(minutes=3)))
    assert [i["assetId"] for i in items(store, profile_id)] == ["e", "d", "c"]
    assert document(store, profile_id)["ids"] == ["e", "d", "c"]


# --- rule 6: order independence (property test against a plain-Python model) ------------------


def test_the_device_is_the_newest_named_one_in_every_order(store: HistoryStore, profile_id: str):
    """Watched on the TV, then the phone, then a heartbeat naming no device: the phone,
    whichever order the three arrive in, collapsed in one batch or one by one."""
    t = NOW - timedelta(hours=1)
    sent = [
        update(profile_id, "m1", t, 10.0, device_id="tv-1"),
        update(profile_id, "m1", t + timedelta(minutes=1), 20.0, device_id="phone-2"),
        update(profile_id, "m1", t + timedelta(minutes=2), 30.0),
    ]
    for n, order in enumerate(itertools.permutations(sent)):
        batch, single = f"{profile_id}-b{n}", f"{profile_id}-s{n}"
        store.record_batch(_for(batch, list(order)))
        for u in _for(single, list(order)):
            with contextlib.suppress(StaleUpdateError):
                store.record_progress(u)
        for profile in (batch, single):
            (item,) = items(store, profile)
            assert (item["deviceId"], item["position"]) == ("phone-2", 30.0), order


def test_eviction_keeps_the_same_item_in_every_order(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    """MAX_ITEMS=1 and A@1, A@3, B@2: A is kept with its newest update in every order;
    its firstWatchedAt is 1 when A@1 arrived before B@2 evicted it, else 3 (rule 6)."""
    store = make_store(max_items=1)
    t = NOW - timedelta(hours=1)
    sent = [
        update(profile_id, "A", t + timedelta(minutes=1), 1.0),
        update(profile_id, "A", t + timedelta(minutes=3), 3.0),
        update(profile_id, "B", t + timedelta(minutes=2), 2.0),
    ]
    firsts = set()
    for n, order in enumerate(itertools.permutations(sent)):
        profile = f"{profile_id}-{n}"
        for u in _for(profile, list(order)):
            with contextlib.suppress(StaleUpdateError):
                store.record_progress(u)
        (item,) = items(store, profile)
        assert (item["assetId"], item["position"]) == ("A", 3.0)
        firsts.add(item["firstWatchedAt"])
    assert len(firsts) == 2  # the documented edge: what older updates add can differ


ASSETS = ["m1", "m2", "ep-1", "ep-2", "live"]


@st.composite
def update_sets(draw: st.DrawFn) -> list[ProgressUpdate]:
    """Updates of a few assets; each asset's description agrees across its updates (it
    describes the asset) though any update may leave it out; times distinct per asset.
    A VOD asset's updates all carry its duration, a live one's none (players know it):
    completion by progress is judged with the duration known when an update lands.
    Devices differ freely: an asset is watched on two devices, some updates name none."""
    base = NOW - timedelta(days=1)
    out: list[ProgressUpdate] = []
    for asset in draw(st.lists(st.sampled_from(ASSETS), min_size=1, max_size=4, unique=True)):
        duration = draw(st.sampled_from([None, 600.0, 5400.0]))
        meta = {
            "type": draw(st.sampled_from(["match", "episode"])),
            "title": f"Title of {asset}",
            "sport": draw(st.sampled_from([None, "cricket", "football"])),
            "teams": draw(st.sampled_from([None, ["csk", "mi"], ["ars"]])),
            "season": draw(st.sampled_from([None, 1, 2])),
        }
        offsets = draw(st.lists(st.integers(0, 3_600_000), min_size=1, max_size=6, unique=True))
        for offset in offsets:
            out.append(
                ProgressUpdate(
                    profile_id="x",
                    asset_id=asset,
                    position=draw(st.sampled_from([0.0, 10.0, 45.0, 500.0, 5000.0])),
                    duration=duration,
                    event_time=base + timedelta(milliseconds=offset),
                    event_type=draw(st.sampled_from(["heartbeat", "start", "pause", "complete"])),
                    device_id=draw(st.sampled_from([None, "tv-1", "phone-2"])),
                    asset={k: v for k, v in meta.items() if draw(st.booleans())} or None,
                )
            )
    return out


def _for(profile: str, updates: list[ProgressUpdate]) -> list[ProgressUpdate]:
    return [u.model_copy(update={"profile_id": profile}) for u in updates]


def _around_now(profile: str, updates: list[ProgressUpdate]) -> list[ProgressUpdate]:
    """``update_sets`` moved to within half an hour of the server's now (a store that
    takes times up to a day ahead), so that what the server dates with its clock (a
    removal's tombstone, a dismissal) falls among them."""
    shift = datetime.now(UTC) - NOW + timedelta(hours=23, minutes=30)
    return [
        u.model_copy(update={"profile_id": profile, "event_time": u.event_time + shift})
        for u in updates
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), updates=update_sets())
def test_order_and_duplicates_do_not_change_the_result(
    store: HistoryStore, profile_id: str, data: st.DataObject, updates: list[ProgressUpdate]
):
    duplicated = updates + data.draw(st.lists(st.sampled_from(updates), max_size=5))
    order_a = data.draw(st.permutations(duplicated))
    order_b = data.draw(st.permutations(duplicated))
    run = uuid.uuid4().hex[:8]  # a fresh profile per example (fixtures live per test)
    batch_profile, single_profile = f"{profile_id}-{run}-b", f"{profile_id}-{run}-s"

    store.record_batch(_for(batch_profile, order_a))  # collapsed per asset, one call
    for u in _for(single_profile, order_b):  # one call per update, another order
        with contextlib.suppress(StaleUpdateError):
            store.record_progress(u)

    model = HistoryModel(threshold=store.settings.completion_threshold)
    for u in sorted(updates, key=lambda u: u.event_time):
        model.apply(u)
    expected = model.ordered()
    assert items(store, batch_profile) == expected
    assert items(store, single_profile) == expected


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), updates=update_sets(), max_items=st.integers(1, 3))
def test_with_eviction_the_kept_items_and_their_newest_state_do_not_depend_on_order(
    make_store: Callable[..., HistoryStore],
    profile_id: str,
    data: st.DataObject,
    updates: list[ProgressUpdate],
    max_items: int,
):
    """Rule 6 with rule 5: which assets stay (the MAX_ITEMS with the newest
    lastWatchedAt) and each one's newest update (lastWatchedAt, position) are the same
    whatever the order. What older updates add (firstWatchedAt, completedAt, fields the
    newest lacks) is not: an evicted asset is forgotten, so an older update of it that
    arrives after its eviction starts a new item, while one that arrived before is
    merged. (MAX_ITEMS=1, A@1, A@3, B@2: A's firstWatchedAt is 1 or 3.) Keeping it true
    would mean remembering evicted assets, which is what the bound is there to stop."""
    store = make_store(max_items=max_items)
    order_a = data.draw(st.permutations(updates))
    order_b = data.draw(st.permutations(updates))
    run = uuid.uuid4().hex[:8]
    batch_profile, single_profile = f"{profile_id}-{run}-b", f"{profile_id}-{run}-s"
    store.record_batch(_for(batch_profile, order_a))
    for u in _for(single_profile, order_b):
        with contextlib.suppress(StaleUpdateError):
            store.record_progress(u)

    newest: dict[str, ProgressUpdate] = {}
    for u in updates:
        if u.asset_id not in newest or u.event_time > newest[u.asset_id].event_time:
            newest[u.asset_id] = u
    # rule 5: the oldest go first, ties the lowest assetId; shown newest first, ties by id
    kept = sorted(newest.values(), key=lambda u: (u.event_ms, u.asset_id))[-max_items:]
    kept.sort(key=lambda u: (-u.event_ms, u.asset_id))
    # The newest update's resume point, unless it is a start report (rule 7): then the
    # point is an older update's, which is an older update's contribution, as above.
    for profile in (batch_profile, single_profile):
        got = items(store, profile)
        assert [
            (i["assetId"], epoch_ms(datetime.fromisoformat(i["lastWatchedAt"]))) for i in got
        ] == [(u.asset_id, u.event_ms) for u in kept]
        for item, u in zip(got, kept, strict=True):
            if not _starts(u):
                assert item["position"] == _resume_point(u), item


def _starts(u: ProgressUpdate) -> bool:
    """A start report below MIN_RESUME_SECONDS (the default, 30 s)."""
    return u.event_type is EventType.START and u.position < 30


def _resume_point(u: ProgressUpdate) -> float:
    """Where an item stands after ``u``, its newest update (not a start report)."""
    if u.event_type is EventType.COMPLETE and u.duration is not None:
        return u.duration
    return u.position


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), updates=update_sets())
def test_collapsed_batches_equal_one_by_one_with_removals_in_between(
    make_store: Callable[..., HistoryStore],
    profile_id: str,
    data: st.DataObject,
    updates: list[ProgressUpdate],
):
    """Batches separated by removals, some of them falling between the records of one
    collapsed update (the "split" path): the same end state as the model's."""
    store = make_store(max_future_skew_seconds=86_400)  # times up to 23.5 h ahead
    profile = f"{profile_id}-{uuid.uuid4().hex[:8]}"
    # times around the server's now, so removals (tombstone = now) fall among them
    shifted = data.draw(st.permutations(_around_now(profile, updates)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shifted)), max_size=3)))
    model = HistoryModel(threshold=store.settings.completion_threshold)
    start = 0
    for cut in [*cuts, len(shifted)]:
        batch = shifted[start:cut]
        result = store.record_batch(batch)
        assert not result.failures
        for u in batch:
            model.apply(u)
        start = cut
        if cut < len(shifted):
            victim = data.draw(st.sampled_from(ASSETS))
            store.remove(profile, [victim])
            doc = document(store, profile)
            model.tombstones[victim] = doc["tts"][doc["tid"].index(victim)]
            model.items.pop(victim, None)
    assert items(store, profile) == model.ordered()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), updates=update_sets())
def test_dismissals_between_batches_follow_the_model(
    make_store: Callable[..., HistoryStore],
    profile_id: str,
    data: st.DataObject,
    updates: list[ProgressUpdate],
):
    """Batches with dismissals between them, the updates around the server's now: some
    dated before a dismissal (sent before it, arriving late), some after it (the viewer
    resumed). The history, dismissedAt included, and continue watching are the model's."""
    store = make_store(max_future_skew_seconds=86_400)  # times up to 23.5 h ahead
    profile = f"{profile_id}-{uuid.uuid4().hex[:8]}"
    shifted = data.draw(st.permutations(_around_now(profile, updates)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shifted)), min_size=1, max_size=3)))
    model = HistoryModel(
        threshold=store.settings.completion_threshold,
        min_resume=store.settings.min_resume_seconds,
    )
    start = 0
    for cut in [*cuts, len(shifted)]:
        batch = shifted[start:cut]
        assert not store.record_batch(batch).failures
        for u in batch:
            model.apply(u)
        start = cut
        for victim in data.draw(st.lists(st.sampled_from(ASSETS), max_size=2)):
            assert store.dismiss(profile, victim) is (victim in model.items)
            stored = store.get_item(profile, victim)
            if stored is not None:
                assert stored.dismissed_at is not None
                model.dismiss(victim, epoch_ms(stored.dismissed_at))  # the server's clock
    assert items(store, profile) == model.ordered()
    expected = [
        item.to_api()
        for item in sorted(model.items.values(), key=lambda i: (-i.last, i.asset_id))
        if item.in_continue_watching(model.min_resume)
    ]
    assert [i.to_api() for i in store.continue_watching(profile, limit=100).items] == expected


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.data(),
    updates=update_sets(),
    layout=st.sampled_from([1, 2]),
    batch=st.booleans(),
    max_items=st.sampled_from([2, 200]),
)
def test_a_mixed_fleet_follows_the_rules_across_the_upgrade(
    make_store: Callable[..., HistoryStore],
    profile_id: str,
    data: st.DataObject,
    updates: list[ProgressUpdate],
    layout: int,
    batch: bool,
    max_items: int,
):
    """A profile written by layout 2's scripts (a layout-1 or 2 document, as the fleet
    holds them), read by layout 3's code as it is, then written by it (the document is
    rewritten in layout 3 by that first write): at every step the history is the model's,
    as if one layout had applied every update."""
    store = make_store(max_items=max_items)
    threshold = store.settings.completion_threshold
    profile = f"{profile_id}-{uuid.uuid4().hex[:8]}"
    key = store.key(profile)
    order = _for(profile, data.draw(st.permutations(updates)))
    cut = data.draw(st.integers(1, len(order)))
    model = HistoryModel(threshold=threshold, max_items=max_items, legacy=True)
    old_record(store.client, key, order[:cut], threshold, max_items)
    if layout == 1:
        to_layout_1(store.client, key)
    for u in order[:cut]:
        model.apply(u)
    assert document(store, profile)["v"] == layout
    assert items(store, profile) == model.ordered()  # read as it is
    later = order[cut:] or order[:1]  # at least one write by layout 3's code
    model.legacy = False
    if batch:
        assert not store.record_batch(later).failures
    else:
        for u in later:
            with contextlib.suppress(StaleUpdateError):
                store.record_progress(u)
    for u in later:
        model.apply(u)
    assert document(store, profile)["v"] == 3
    if max_items >= len(ASSETS):  # no eviction: the model is exact whatever the order
        assert items(store, profile) == model.ordered()
    else:  # with eviction: which assets stay, and their newest update (rule 6 with 5)
        got = [(i["assetId"], i["lastWatchedAt"], i["position"]) for i in items(store, profile)]
        want = [(i["assetId"], i["lastWatchedAt"], i["position"]) for i in model.ordered()]
        assert got == want


# --- concurrency ------------------------------------------------------------------------------


def test_fifty_concurrent_writers_on_one_profile_lose_no_update(
    store: HistoryStore, profile_id: str, redis_url: str, mode: str
):
    writers = 50
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []
    t = NOW - timedelta(hours=1)
    # 50 recorders, as 50 Lambda containers: each its own store and connections
    stores = [
        HistoryStore(make_client(redis_url, mode == "cluster"), store.settings)
        for _ in range(writers)
    ]

    def write(w: int) -> None:
        try:
            barrier.wait()
            for k in range(4):
                # every writer: its own asset, and one asset all of them fight over
                stores[w].record_batch(
                    [
                        update(profile_id, f"own-{w}", t + timedelta(seconds=k), float(k)),
                        update(profile_id, "shared", t + timedelta(seconds=w * 4 + k), float(w)),
                    ]
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for each in stores:
        each.client.close()
    assert errors == []
    got = {i["assetId"]: i for i in items(store, profile_id)}
    assert set(got) == {f"own-{w}" for w in range(writers)} | {"shared"}
    assert all(got[f"own-{w}"]["position"] == 3.0 for w in range(writers))
    assert got["shared"]["position"] == float(writers - 1)  # the newest eventTime won
    assert got["shared"]["firstWatchedAt"] == t.isoformat().replace("+00:00", ".000Z")
    doc = document(store, profile_id)
    assert len(doc["ids"]) == len(set(doc["ids"])) == writers + 1


# --- ids that try to break a JSONPath, a hash tag or a script ---------------------------------

HOSTILE_IDS = ['a"]', "x)||@.y", "{p}", "a b", "", "$..*", "a'b", "x" * 129, "ü", "a\nb", ".", ".."]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_ids_are_rejected_with_a_clear_error_and_nothing_stored(
    store: HistoryStore, profile_id: str, bad: str
):
    refused = "String should (match pattern|have at most 128 characters)"
    with pytest.raises(ValidationError, match=refused):
        update(profile_id, bad, NOW)
    with pytest.raises(ValidationError, match=refused):
        update(bad, "m1", NOW)
    # the store checks again for callers that skip the schema
    forged = ProgressUpdate.model_construct(
        profile_id=profile_id,
        asset_id=bad,
        position=1.0,
        event_time=NOW,
        event_type=EventType.HEARTBEAT,
    )
    with pytest.raises(InvalidInputError, match="not a valid id"):
        store.record_progress(forged)
    assert store.record_batch([forged]).failures[0].args[0].startswith("assetId")
    for call in (
        lambda: store.remove(profile_id, [bad]),
        lambda: store.get_item(profile_id, bad),
        lambda: store.query(bad, HistoryQuery()),
        lambda: store.clear(bad),
    ):
        with pytest.raises(InvalidInputError, match="not a valid id"):
            call()
    assert store.client.exists(store.key(profile_id)) == 0


def test_event_time_far_in_the_future_is_refused(store: HistoryStore, profile_id: str):
    with pytest.raises(InvalidInputError, match="in the future"):
        store.record_progress(update(profile_id, "m1", NOW + timedelta(hours=25)))
    assert store.client.exists(store.key(profile_id)) == 0


# --- the server side --------------------------------------------------------------------------


def test_scripts_come_back_after_the_server_forgets_them(store: HistoryStore, profile_id: str):
    store.record_progress(update(profile_id, "m1", NOW - timedelta(minutes=2)))
    store.client.script_flush()  # what a failover or restart does to the script cache
    assert store.record_batch([update(profile_id, "m1", NOW - timedelta(minutes=1), 7.0)]).outcomes
    assert items(store, profile_id)[0]["position"] == 7.0


def test_an_unreachable_server_is_a_retryable_error_for_every_update(profile_id: str):
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    store = HistoryStore(dead, Settings(redis_url="redis://127.0.0.1:1", redis_cluster=False))
    result = store.record_batch([update(profile_id, "m1", NOW), update(profile_id, "m2", NOW)])
    assert set(result.failures) == {0, 1}
    assert all(isinstance(e, StoreUnavailableError) for e in result.failures.values())
    with pytest.raises(StoreUnavailableError):
        store.query(profile_id, HistoryQuery())


def test_a_key_holding_something_else_fails_only_that_profile(store: HistoryStore, profile_id: str):
    store.client.set(store.key(profile_id + "-x"), "not a history")
    result = store.record_batch(
        [update(profile_id + "-x", "m1", NOW), update(profile_id, "m1", NOW)]
    )
    assert isinstance(result.failures[0], StoreUnavailableError)
    assert result.outcomes == {1: RecordOutcome.APPLIED}


def _lua_positions(source: str) -> dict[str, int]:
    """The item positions a Lua file defines (``local F_X, F_Y = 1, 2``)."""
    return {
        name: int(value)
        for names, values in re.findall(r"local (F_[A-Z_, ]+) = ([0-9, ]+)\n", source)
        for name, value in zip(names.split(", "), values.split(", "), strict=True)
    }


def test_lua_and_python_agree_on_the_item_layout():
    common = (_LUA / "common.lua").read_text()
    positions = _lua_positions(common)
    lua_names = {
        "F_ID": "asset_id",
        "F_LAST": "last_watched_at",
        "F_POS": "position",
        "F_DUR": "duration",
        "F_FIRST": "first_watched_at",
        "F_DONE": "completed",
        "F_DONE_AT": "completed_at",
        "F_DEVICE": "device_id",
        "F_TYPE": "asset_type",
        "F_SEASON": "season",
        "F_EPISODE": "episode",
        "F_DEVICE_AT": "device_at",
    }
    for lua, python in lua_names.items():
        assert positions[lua] == ITEM_FIELDS.index(python) + 1, lua
    assert f"local N_FIELDS = {len(ITEM_FIELDS)}" in common
    # update_rules.lua works on the load test's items too: the same places
    alternatives = _lua_positions((ROOT / "loadtest" / "lua" / "item.lua").read_text())
    assert {"F_POS_AT", "F_POS_KIND"} <= set(alternatives)
    for name in set(alternatives) & set(positions):
        assert alternatives[name] == positions[name], name


def test_the_history_array_stays_sorted_and_aligned_with_its_ids(
    store: HistoryStore, profile_id: str
):
    t = NOW - timedelta(hours=5)
    store.record_batch(
        [update(profile_id, f"a{k % 7}", t + timedelta(minutes=(k * 37) % 101)) for k in range(60)]
    )
    doc = document(store, profile_id)
    assert Head.of(doc["h"][0]).front == doc["ids"][0]
    assert len(doc["h"]) == len(doc["ids"]) + 1
    keys = [(-int(text.split(",")[0]), a) for a, text in zip(doc["ids"], doc["h"][1:], strict=True)]
    assert keys == sorted(keys)


@pytest.mark.own_servers  # counts calls on the server: nobody else may write there
def test_a_batch_costs_one_script_call_per_profile_and_a_round_trip_per_chunk(
    private_client: Any, settings: Settings, profile_id: str
):
    store = HistoryStore(private_client, settings.model_copy(update={"pipeline_profiles": 100}))
    t = NOW - timedelta(hours=1)
    batch = [
        update(f"{profile_id}-{p}", f"a{p % 3}", t + timedelta(seconds=k), float(k))
        for k in range(5)
        for p in range(300)
    ]
    client = store.client
    nodes = (
        [client.get_redis_connection(n) for n in client.get_primaries()]
        if isinstance(client, RedisCluster)
        else [client]
    )
    for node in nodes:  # the script is loaded everywhere: NOSCRIPT retries do not count
        node.script_load(_script("record_progress").source)
        node.config_resetstat()
    result = store.record_batch(batch)
    calls = sum(
        node.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) for node in nodes
    )
    assert calls == 300  # 1,500 records, 300 profiles: one script call each
    assert result.round_trips == 3
    assert set(result.outcomes) == set(range(len(batch)))


@pytest.mark.parametrize("target", ["m1", "mid", "old"])  # the front item, or moved
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {}),  # a plain heartbeat
        ({}, {"position": 950.0}),  # crosses the completion threshold
        ({}, {"event_type": EventType.COMPLETE}),
        ({"position": 990.0}, {"position": 10.0}),  # completed before, watched again
        ({}, {"duration": None}),  # the stored duration stays
        ({"device_id": None}, {"device_id": None}),  # no device on either
        # stored points set by a kind of report with a rule of its own (codec.py 12-13)
        ({"event_type": EventType.COMPLETE}, {}),  # marked as watched, then resumed
        ({"event_type": EventType.START, "position": 0.0}, {}),  # a start report, then playing
    ],
)
def test_the_fast_path_writes_what_the_general_path_writes(
    store: HistoryStore,
    profile_id: str,
    target: str,
    before: dict[str, Any],
    after: dict[str, Any],
):
    """lua/fast_heartbeat.lua (a batch of one update: on the front item, or moving an
    older one to the front) and the general path (record_progress with the item
    returned, which the fast path never takes) store the same document but for the
    change stamp."""
    t = NOW - timedelta(hours=1)
    meta: dict[str, Any] = {
        "asset": {"type": "episode", "title": "T, 1", "show": "s"},
        "device_id": "tv-1",
    }
    seed = [
        update("x", a, t + timedelta(seconds=k), **{**meta, **(before if a == target else {})})
        for k, a in enumerate(["old", "mid", "m1"])
    ]
    heartbeat = update("x", target, t + timedelta(minutes=3), **{**meta, **after})
    _fast_and_general_agree(store, profile_id, seed, heartbeat)


def _fast_and_general_agree(
    store: HistoryStore, profile_id: str, seed: list[ProgressUpdate], newest: ProgressUpdate
) -> None:
    """``newest`` after ``seed``, in a batch of its own (the fast path may take it) on one
    profile and returned (the general path) on another: the same document but for the
    change stamps, which each profile takes from its own clock."""
    fast, general = f"{profile_id}-f", f"{profile_id}-g"
    for profile in (fast, general):
        for u in _for(profile, seed):  # a call each: evictions get stamps of their own
            store.record_batch([u])
    before = [document(store, p) for p in (fast, general)]
    assert store.record_batch(_for(fast, [newest])).outcomes == {0: RecordOutcome.APPLIED}
    store.record_progress(_for(general, [newest])[0])
    docs = [document(store, p) for p in (fast, general)]
    for doc, old in zip(docs, before, strict=True):
        # the changes feed's horizon moves past an eviction record that is forgotten
        horizon = Head.of(old["h"][0]).horizon
        if old["ecs"] and old["ecs"][0] not in doc["ecs"]:
            horizon = max(horizon, old["ecs"][0])
        assert Head.of(doc["h"][0]).horizon == horizon
    for doc in docs:
        doc["h"] = [text.split(",") for text in doc["h"]]
        del doc["h"][0][2:4]  # the head's cs and hz, the items' and evictions' stamps
        for fields in doc["h"][1:]:
            del fields[8]
        doc["ecs"] = len(doc["ecs"])
    assert docs[0] == docs[1]
    assert docs[0]["ids"][0] == newest.asset_id
    assert items(store, fast) == items(store, general)


@pytest.mark.parametrize(
    ("seeded", "max_items"),
    [
        (3, 200),  # below the cap: an insert
        (3, 3),  # at the cap: an insert and an eviction, the first record of it
        (8, 3),  # evictions already at their bound: the oldest record goes too
        (1, 1),  # a history of one: the general path's
    ],
)
@pytest.mark.parametrize("after", [{}, {"position": 950.0}, {"duration": None}])
def test_the_fast_path_adds_a_new_asset_as_the_general_path_does(
    make_store: Callable[..., HistoryStore],
    profile_id: str,
    seeded: int,
    max_items: int,
    after: dict[str, Any],
):
    store = make_store(max_items=max_items)
    t = NOW - timedelta(hours=1)
    meta: dict[str, Any] = {"asset": {"type": "episode", "show": "s"}, "device_id": "tv-1"}
    seed = [update("x", f"a{k}", t + timedelta(seconds=k), **meta) for k in range(seeded)]
    _fast_and_general_agree(
        store, profile_id, seed, update("x", "new", t + timedelta(minutes=3), **{**meta, **after})
    )


def test_a_tie_at_the_end_evicts_the_lowest_asset_id_on_either_path(
    make_store: Callable[..., HistoryStore], profile_id: str
):
    store = make_store(max_items=3)
    t = NOW - timedelta(hours=1)
    meta: dict[str, Any] = {"asset": {"type": "movie"}, "device_id": "tv-1"}
    seed = [update("x", a, t, **meta) for a in ("b", "a")] + [
        update("x", "c", t + timedelta(seconds=1), **meta)
    ]
    _fast_and_general_agree(
        store, profile_id, seed, update("x", "new", t + timedelta(minutes=3), **meta)
    )
    assert [i["assetId"] for i in items(store, f"{profile_id}-f")] == ["new", "c", "b"]


def test_asset_records_that_cannot_be_written_fail_their_updates_for_a_retry(
    client: Any, settings: Settings, mode: str, profile_id: str
):
    """The client writes an asset record before the script that names it. When that
    write is refused (here: an ACL user without SET, on every node), the updates fail
    as retryable and no script runs: no item ever names a record that is not there."""
    user, password = f"norec-{uuid.uuid4().hex[:8]}", "no-records-password-0123456789"
    nodes = client.get_primaries() if mode == "cluster" else [None]
    for node in nodes:
        conn = client if node is None else client.get_redis_connection(node)
        conn.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all", "-set")
    try:
        url = settings.redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
        limited = HistoryStore(make_client(url, mode == "cluster"), settings)
        u = update(profile_id, "m1", NOW - timedelta(minutes=1), asset={"title": "New"})
        result = limited.record_batch([u])
        assert isinstance(result.failures[0], StoreUnavailableError)
        assert not client.exists(limited.key(profile_id))
        with pytest.raises(StoreUnavailableError):
            limited.record_progress(u)
        assert not client.exists(limited.key(profile_id))
        # the retry, once records can be written, lands it
        assert HistoryStore(client, settings).record_batch([u]).outcomes == {
            0: RecordOutcome.APPLIED
        }
        limited.client.close()
    finally:
        for node in nodes:
            conn = client if node is None else client.get_redis_connection(node)
            conn.execute_command("ACL", "DELUSER", user)
