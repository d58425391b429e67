"""``make demo`` in-process on the real engines, and the heartbeat generator behind it."""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from collections import Counter

import pytest

from devtools import demo, heartbeats
from devtools.heartbeats import DEFECTS, generate_stream, kinesis_events, sequence_number
from watch_history.models import HistoryQuery, ProgressUpdate
from watch_history.store import HistoryStore

NOW_MS = 1_795_700_000_000  # a fixed "now": the same stream every time


def test_demo_runs_end_to_end_and_every_check_holds(
    redis_url: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_CLUSTER", "true" if mode == "cluster" else "false")
    out = io.StringIO()
    # --verbose: leave Powertools' log level alone (its loggers outlive this test).
    code = demo.main(["--profiles", "60", "--seed", "5", "--window", "3", "--verbose"], out=out)
    text = out.getvalue()

    assert code == 0, text
    assert "FAILED" not in text
    assert re.search(r"All \d+ checks held\.", text)
    checks = re.findall(r"check: (.+?) \.\.\. (ok|FAILED)", text)
    assert len(checks) >= 15
    assert "the removed title stays gone after the late heartbeat" in dict(checks)
    # the sync round after the removal, and the offline batch
    held = {name for name, result in checks if result == "ok"}
    assert any(name.startswith("sync round: ") for name in held)
    assert any(name.startswith("batch: one request") for name in held)
    assert "removed: movie-the-last-ferry" in text
    # the rail: the live match first, then the episode with its S/E and a progress bar
    rail = text.split("Continue watching for prof-00000", 1)[1]
    assert re.search(r"1\. IPL 2026, Match 43: Chennai Super Kings v.*CSK v MI\s+LIVE", rail)
    assert re.search(r"Kingsbridge Station: \w+\s+S2 E3\s+\u2588+\u2591+\s+\d+%", rail)
    assert "12 malformed" in text


def test_demo_exits_non_zero_when_a_check_fails(
    redis_url: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_CLUSTER", "true" if mode == "cluster" else "false")

    def resurrect(report: demo.Report, *args: object, **kwargs: object) -> None:
        report.check("the removed title stays gone after the late heartbeat", False, "came back")

    monkeypatch.setattr(demo, "_api_tour", resurrect)
    out = io.StringIO()
    code = demo.main(["--profiles", "20", "--window", "2", "--verbose"], out=out)
    assert code == 1
    assert "1 check(s) FAILED" in out.getvalue()


def test_stream_is_deterministic_and_well_formed() -> None:
    first = generate_stream(50, seed=11, now_ms=NOW_MS, window_seconds=240)
    again = generate_stream(50, seed=11, now_ms=NOW_MS, window_seconds=240)
    other = generate_stream(50, seed=12, now_ms=NOW_MS, window_seconds=240)
    assert [r.data for r in first.records] == [r.data for r in again.records]
    assert [r.data for r in first.records] != [r.data for r in other.records]

    counts = first.counts
    assert counts["records"] == len(first.records)
    assert counts["malformed"] == 12
    assert Counter(r.defect for r in first.records if r.defect) == Counter(
        DEFECTS[k % len(DEFECTS)] for k in range(12)
    )
    start, end = first.window
    kinds: Counter[str] = Counter()
    for record in first.records:
        if record.defect is not None:
            continue
        update = ProgressUpdate.model_validate_json(record.data)  # well-formed ones validate
        assert record.partition_key == update.profile_id
        assert start <= update.event_ms <= end < NOW_MS
        kinds[update.asset.type if update.asset and update.asset.type else "?"] += 1
        kinds[update.event_type.value] += 1
        kinds["epoch" if isinstance(json.loads(record.data)["eventTime"], int) else "rfc"] += 1
    assert {"live", "episode", "start", "heartbeat", "epoch", "rfc"} <= set(kinds)
    assert any(r.duplicate for r in first.records)
    assert any(r.late for r in first.records)


def test_kinesis_events_wrap_records_in_order() -> None:
    stream = generate_stream(10, seed=1, now_ms=NOW_MS, window_seconds=120)
    events = list(kinesis_events(stream.records, batch_size=7))
    assert [len(e["Records"]) for e in events[:-1]] == [7] * (len(events) - 1)
    flat = [r for e in events for r in e["Records"]]
    assert len(flat) == len(stream.records)
    for index, (wrapped, record) in enumerate(zip(flat, stream.records, strict=True)):
        kinesis = wrapped["kinesis"]
        assert base64.b64decode(kinesis["data"]) == record.data
        assert kinesis["sequenceNumber"] == sequence_number(index)
        assert kinesis["partitionKey"] == record.partition_key
        assert wrapped["eventID"] == f"shardId-000000000000:{sequence_number(index)}"
        assert wrapped["eventSource"] == "aws:kinesis"
        assert wrapped["eventSourceARN"].startswith("arn:aws:kinesis:")
    numbers = [int(r["kinesis"]["sequenceNumber"]) for r in flat]
    assert numbers == sorted(numbers)


def test_seed_profiles_fills_each_profile(store: HistoryStore) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    profiles = heartbeats.seed_profiles(
        store, 7, 30, seed=2, profile_prefix=prefix, chunk_profiles=3
    )
    assert profiles == [f"{prefix}-{i:05d}" for i in range(7)]
    for profile_id in profiles:
        page = store.query(profile_id, HistoryQuery(limit=100))
        assert len(page.items) == 30
        assert len({item.asset_id for item in page.items}) == 30
