"""Event times are bounded by the service's clocks, not the device's.

An eventTime later than when the update was received (Kinesis'
approximateArrivalTimestamp for the recorder, the request for the HTTP API) plus
``MAX_FUTURE_SKEW_SECONDS`` (default 300) is refused: quarantined with its reason, or a
422. An accepted update is therefore never more than the skew ahead of real time, so
it can hold later true progress "stale" (or a removal's tombstone ahead) for at most
the skew.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from tests.test_recorder import drain, invoke, progress, queue_url, record, recorder
from tests.test_writer import call, put_event, writer
from watch_history import runtime
from watch_history.errors import InvalidInputError
from watch_history.models import ProgressUpdate, epoch_ms
from watch_history.recorder import Disposition
from watch_history.settings import Settings
from watch_history.store import HistoryStore, RecordOutcome

__all__ = ["queue_url", "recorder", "writer"]  # fixtures of the handler modules

SKEW = Settings().max_future_skew_seconds


def test_the_default_skew_is_minutes_not_a_day():
    assert 60 <= SKEW <= 600


def test_the_bound_is_the_arrival_on_the_stream_not_the_device_clock(
    recorder: ModuleType,
    make_store: Callable[..., HistoryStore],
    sqs: Any,
    queue_url: str,
    profile_id: str,
):
    """A record that arrived an hour ago is judged against its arrival, not now: dated
    10 minutes after its arrival (still in the past now) it is quarantined; dated 4
    minutes after, it lands. A retry of the same records decides the same."""
    store = make_store(key_prefix=f"e{uuid.uuid4().hex[:8]}:", quarantine_queue_url=queue_url)
    runtime.set_store(store)
    arrived = time.time() - 3600
    at = datetime.fromtimestamp(arrived, UTC)
    ahead = progress(profile_id, "ahead", at + timedelta(seconds=SKEW + 600))
    within = progress(profile_id, "within", at + timedelta(seconds=SKEW - 60))
    records = [record(ahead, 0, profile_id, arrived), record(within, 1, profile_id, arrived)]

    for _ in range(2):  # the first delivery and a replay
        assert invoke(recorder, {"Records": records}) == {"batchItemFailures": []}
        report = recorder.processor.report
        assert report.dispositions[0] is Disposition.QUARANTINED
        assert f"more than {SKEW} s in the future of when it was received" in report.reasons[0]
        assert report.dispositions[1] in {Disposition.APPLIED, Disposition.STALE}
    assert store.get_item(profile_id, "ahead") is None
    assert store.get_item(profile_id, "within") is not None
    assert [m["reason"] for m in drain(sqs, queue_url)] == [report.reasons[0]] * 2


@pytest.mark.parametrize("ahead_ms", [0, 1_000, SKEW * 1000, SKEW * 1000 + 1, 20 * 3_600_000])
def test_a_future_dated_update_never_holds_true_progress_stale_past_the_skew(
    make_store: Callable[..., HistoryStore], profile_id: str, ahead_ms: int
):
    """A device clock ``ahead_ms`` ahead: either refused, or accepted and then true
    progress made once real time has passed the skew is applied, not stale."""
    now = epoch_ms(datetime.now(UTC))
    clock = [now]
    store = make_store(clock_ms=lambda: clock[0])
    skewed = ProgressUpdate(
        profile_id=profile_id,
        asset_id="m1",
        position=5000.0,
        event_time=now + ahead_ms,
    )
    if ahead_ms > SKEW * 1000:
        with pytest.raises(InvalidInputError, match="in the future"):
            store.record_progress(skewed)
        assert store.get_item(profile_id, "m1") is None
        return
    store.record_progress(skewed)
    clock[0] = now + SKEW * 1000 + 1  # real time, the skew later
    true = ProgressUpdate(profile_id=profile_id, asset_id="m1", position=10.0, event_time=clock[0])
    result = store.record_batch([true])
    assert result.outcomes == {0: RecordOutcome.APPLIED}
    item = store.get_item(profile_id, "m1")
    assert item is not None
    assert item.position == 10.0


def test_the_writer_refuses_a_clock_hours_ahead_and_takes_one_minutes_ahead(
    writer: ModuleType, make_store: Callable[..., HistoryStore]
):
    store = make_store(key_prefix=f"w{uuid.uuid4().hex[:8]}:")
    runtime.set_store(store)
    hours = (datetime.now(UTC) + timedelta(hours=20)).isoformat()
    status, _, body = call(writer, put_event(body={"position": 1, "eventTime": hours}))
    assert status == 422
    assert f"more than {SKEW} s in the future" in body["message"]

    minutes = (datetime.now(UTC) + timedelta(seconds=SKEW // 2)).isoformat()
    status, _, body = call(writer, put_event(body={"position": 2, "eventTime": minutes}))
    assert status == 200
    assert body["position"] == 2


@pytest.mark.parametrize(
    ("after_limit", "refused"),
    [
        (timedelta(0), False),
        (timedelta(microseconds=-1), False),
        (timedelta(microseconds=1), True),  # inside the limit's millisecond, but after it
        (timedelta(milliseconds=1), True),
    ],
)
def test_the_limit_is_exact_to_the_microsecond(
    make_store: Callable[..., HistoryStore], after_limit: timedelta, refused: bool
):
    """The limit is kept in integer milliseconds (the recorder asks per record); an
    eventTime is compared with it to the microsecond, as when it was a datetime."""
    now_ms = 1_800_000_000_000
    received_ms = now_ms - 3_600_000
    store = make_store(clock_ms=lambda: now_ms)
    limit = datetime.fromtimestamp(received_ms / 1000, UTC) + timedelta(seconds=SKEW)
    update = ProgressUpdate(
        profile_id="p", asset_id="a", position=1, event_time=limit + after_limit
    )
    latest = store.latest_event_ms(received_ms)
    assert latest == epoch_ms(limit)
    if refused:
        with pytest.raises(InvalidInputError, match="in the future of when it was received"):
            store.check_event_time(update, latest)
    else:
        store.check_event_time(update, latest)
