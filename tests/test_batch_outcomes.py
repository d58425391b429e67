"""A batch's outcomes are the ones its updates would get one by one, in order.

The write API's batch (``writes.record_updates``) merges the updates of one asset into
one script argument per run of newer records; each update still reports what sending
it alone, after the ones before it, would have reported: applied, stale or ignored.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watch_history.errors import StaleUpdateError
from watch_history.models import ProgressUpdate, RecordOutcome, epoch_ms
from watch_history.store import HistoryStore
from watch_history.writes import record_updates

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def at(minutes: int) -> int:
    return epoch_ms(BASE + timedelta(minutes=minutes))


def body(asset: str, minutes: int, position: float = 60.0, **extra: Any) -> dict[str, Any]:
    return {"assetId": asset, "position": position, "eventTime": at(minutes), **extra}


def in_a_batch(store: HistoryStore, profile: str, bodies: list[dict[str, Any]]) -> list[str]:
    results = record_updates(store, profile, bodies, datetime.now(UTC))
    return [r.outcome.value for r in results]


def one_by_one(store: HistoryStore, profile: str, bodies: list[dict[str, Any]]) -> list[str]:
    outcomes = []
    for b in bodies:
        fields = {k: v for k, v in b.items() if k != "assetId"}
        update = ProgressUpdate(profile_id=profile, asset_id=b["assetId"], **fields)
        try:
            store.record_progress(update)
        except StaleUpdateError as stale:
            outcomes.append(stale.reason)
        else:
            outcomes.append(RecordOutcome.APPLIED.value)
    return outcomes


def test_an_older_duplicate_in_a_batch_is_stale_as_it_is_alone(
    store: HistoryStore, profile_id: str
) -> None:
    batch = [body("a", 20), body("a", 10), body("a", 20, position=99.0)]
    assert in_a_batch(store, profile_id, batch) == ["applied", "stale", "stale"]
    assert store.get_item(profile_id, "a").position == 60.0  # type: ignore[union-attr]


def test_a_run_in_time_order_reports_the_stored_item_between_its_records(
    store: HistoryStore, profile_id: str
) -> None:
    store.record_progress(ProgressUpdate.model_validate({**body("a", 15), "profileId": profile_id}))
    # alone, in order: 10 is older than the stored 15 (stale), 20 and 30 are newer
    batch = [body("a", 10), body("a", 20), body("a", 30), body("a", 25)]
    assert in_a_batch(store, profile_id, batch) == ["stale", "applied", "applied", "stale"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """(updates stored first, assets removed then, the batch)."""
    assets = st.sampled_from(["a", "b", "c"])
    minutes = st.integers(0, 6)
    prior = draw(st.lists(st.builds(body, assets, minutes), max_size=4))
    removed = draw(st.lists(assets, max_size=1))
    batch = draw(
        st.lists(
            st.builds(
                body,
                assets,
                minutes,
                st.sampled_from([0.0, 60.0, 990.0]),
                eventType=st.sampled_from(["heartbeat", "start", "complete"]),
                duration=st.sampled_from([1000.0]),
            ),
            min_size=1,
            max_size=10,
        )
    )
    return prior, removed, batch


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario=scenarios())
def test_batch_outcomes_and_state_are_those_of_one_by_one(
    store: HistoryStore, scenario: tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]
) -> None:
    prior, removed, batch = scenario
    batched, alone = f"p-{uuid.uuid4().hex[:10]}", f"p-{uuid.uuid4().hex[:10]}"
    for profile in (batched, alone):
        one_by_one(store, profile, prior)
        store.remove(profile, removed)
    assert in_a_batch(store, batched, batch) == one_by_one(store, alone, batch)
    assets = ["a", "b", "c"]
    assert store.get_items(batched, assets) == store.get_items(alone, assets)
