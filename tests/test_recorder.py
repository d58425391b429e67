"""The history recorder (functions/history_recorder + watch_history/recorder.py).

Real engines (standalone and 3-primary cluster), SQS and Kinesis from moto. The
handler runs as Lambda runs it: the events file, a Lambda context, Powertools.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from devtools.engine import start_standalone
from devtools.lambda_context import FakeLambdaContext, load_module
from tests.conftest import NOT_NUMBERS, load_event
from watch_history import runtime
from watch_history.connection import create_client
from watch_history.errors import InvalidInputError, StaleUpdateError, StoreUnavailableError
from watch_history.models import HistoryItem, ProgressUpdate, epoch_ms
from watch_history.recorder import (
    SQS_MAX_BYTES,
    Disposition,
    KinesisRecorder,
    Rejected,
    _sqs_batches,
    decode_record,
    quarantine_message,
)
from watch_history.replay import from_get_records
from watch_history.settings import Settings
from watch_history.store import HistoryStore

REGION = "us-east-1"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/watch-progress"
SHARD = "shardId-000000000003"
MALFORMED_AT = 8  # index of the malformed record in events/kinesis_batch.json

# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder() -> Iterator[ModuleType]:
    """functions/history_recorder/app.py, imported as Lambda would, with Powertools' env."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POWERTOOLS_SERVICE_NAME", "history-recorder")
        yield load_module("history_recorder")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    url: str = sqs.create_queue(QueueName=f"quarantine-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    return url


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own: the events file names fixed profiles."""
    return f"r{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def wired(make_store: Callable[..., HistoryStore], prefix: str, queue_url: str) -> HistoryStore:
    """The store the handler gets from ``runtime.get_store()``."""
    store = make_store(key_prefix=prefix, quarantine_queue_url=queue_url)
    runtime.set_store(store)
    return store


# --- helpers --------------------------------------------------------------------------


def invoke(recorder: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = recorder.lambda_handler(event, FakeLambdaContext("history-recorder"))
    return result


def failed_sequences(result: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message body of a queue (received and deleted)."""
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for m in messages:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def record(
    payload: dict[str, Any] | bytes | str,
    sequence: int,
    partition_key: str = "p",
    arrival: float | None = None,
) -> dict[str, Any]:
    """A Kinesis event record; ``str`` is put in ``data`` as is (for bad base64).
    ``arrival``: approximateArrivalTimestamp (epoch seconds), default now."""
    if isinstance(payload, dict):
        data = base64.b64encode(json.dumps(payload).encode()).decode()
    elif isinstance(payload, bytes):
        data = base64.b64encode(payload).decode()
    else:
        data = payload
    seq = str(49_000_000_000_000_000_000 + sequence)
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": seq,
            "data": data,
            "approximateArrivalTimestamp": time.time() if arrival is None else arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{seq}",
        "eventName": "aws:kinesis:record",
        "awsRegion": REGION,
        "eventSourceARN": STREAM_ARN,
    }


def progress(profile_id: str, asset_id: str, at: datetime | int, **extra: Any) -> dict[str, Any]:
    when = at if isinstance(at, int) else at.isoformat().replace("+00:00", "Z")
    return {
        "profileId": profile_id,
        "assetId": asset_id,
        "position": 100.0,
        "duration": 1000.0,
        "eventTime": when,
        **extra,
    }


def updates_of(records: Sequence[dict[str, Any]]) -> list[ProgressUpdate | None]:
    """The decoded update of each record (None for a malformed one)."""
    out: list[ProgressUpdate | None] = []
    for r in records:
        try:
            out.append(decode_record(KinesisStreamRecord(r)))
        except ValueError:
            out.append(None)
    return out


def one_by_one(store: HistoryStore, updates: Sequence[ProgressUpdate | None]) -> None:
    for update in updates:
        if update is None:
            continue
        with contextlib.suppress(StaleUpdateError):
            store.record_progress(update)


def state(store: HistoryStore, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    found: dict[tuple[str, str], Any] = {}
    for profile, asset in sorted(pairs):
        item = store.get_item(profile, asset)
        found[profile, asset] = item.to_api() if item is not None else None
    return found


EXPECTED_EVENTS_FILE = {
    ("demo-profile-1", "ipl-2026-m01"): {
        "position": 1200.0,
        "duration": 12600.0,
        "firstWatchedAt": "2026-11-20T19:00:00.000Z",
        "lastWatchedAt": "2026-11-20T19:20:00.000Z",
        "completed": False,
        "teams": ["csk", "mi"],
        "deviceId": "tv-livingroom",
    },
    ("demo-profile-2", "night-shift-s01e01"): {
        "position": 900.0,  # the out-of-order 600 at 19:10 arrived later and lost
        "firstWatchedAt": "2026-11-20T19:05:00.000Z",
        "lastWatchedAt": "2026-11-20T19:15:00.000Z",
        "show": "night-shift",
        "season": 1,
        "episode": 1,
    },
    ("demo-profile-3", "long-walk"): {
        "completed": True,
        "completedAt": "2026-11-20T21:00:00.000Z",
        "assetType": "movie",
    },
    ("demo-profile-4", "ipl-2026-m02"): {
        "position": 95.5,
        "lastWatchedAt": "2026-11-20T18:40:00.000Z",  # sent as epoch milliseconds
        "teams": ["rcb", "kkr"],
    },
}


def assert_events_file_state(store: HistoryStore) -> None:
    for (profile, asset), expected in EXPECTED_EVENTS_FILE.items():
        item = store.get_item(profile, asset)
        assert item is not None, (profile, asset)
        api = item.to_api()
        assert {k: api.get(k) for k in expected} == expected, (profile, asset)


# --- the events file ------------------------------------------------------------------


def test_events_file_lands_and_the_malformed_record_is_quarantined(
    recorder: ModuleType, wired: HistoryStore, sqs: Any, queue_url: str
) -> None:
    event = load_event("kinesis_batch.json")
    result = invoke(recorder, event)

    assert result == {"batchItemFailures": []}
    assert_events_file_state(wired)
    report = recorder.processor.report
    assert report.count(Disposition.QUARANTINED) == 1
    assert report.round_trips == 1  # four profiles, one pipelined round trip

    [message] = drain(sqs, queue_url)
    bad = event["Records"][MALFORMED_AT]
    assert message["reason"].startswith("data is not a JSON document")
    assert message["data"] == bad["kinesis"]["data"]  # base64, exactly as received
    assert message["sequenceNumber"] == bad["kinesis"]["sequenceNumber"]
    assert message["partitionKey"] == "demo-profile-3"
    assert message["shardId"] == SHARD
    assert message["eventSourceARN"] == STREAM_ARN
    assert message["eventID"] == bad["eventID"]


def test_a_second_delivery_of_the_same_batch_changes_nothing(
    recorder: ModuleType, wired: HistoryStore
) -> None:
    event = load_event("kinesis_batch.json")
    invoke(recorder, event)
    pairs = set(EXPECTED_EVENTS_FILE)
    before = state(wired, pairs)

    assert invoke(recorder, event) == {"batchItemFailures": []}
    assert state(wired, pairs) == before
    report = recorder.processor.report
    assert report.count(Disposition.APPLIED) == 0
    assert report.count(Disposition.STALE) == 9


def test_metrics_and_logs_of_a_batch(
    recorder: ModuleType,
    wired: HistoryStore,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    invoke(recorder, load_event("kinesis_batch.json"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]

    [emf] = [line for line in lines if "_aws" in line]
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "WatchHistoryTest"
    assert emf["RecordsIn"] == [10.0]
    # as one by one: the redelivered 19:20 heartbeat and the 19:10 one after 19:15 are stale
    assert emf["RecordsApplied"] == [7.0]
    assert emf["RecordsStale"] == [2.0]
    assert emf["RecordsQuarantined"] == [1.0]
    assert emf["RecordsFailed"] == [0.0]
    assert emf["BatchLatency"][0] > 0
    # one summary and one warning per batch, never a line per record
    ours = [r for r in caplog.records if r.name == "history-recorder"]
    assert [r.getMessage() for r in ours] == ["batch recorded", "records quarantined or failed"]
    assert ours[0].__dict__["quarantined"] == 1
    assert ours[0].__dict__["shardId"] == SHARD
    assert ours[1].__dict__["samples"][0]["reason"].startswith("data is not a JSON document")


# --- same end state as one by one -----------------------------------------------------


def test_duplicates_and_out_of_order_end_as_applying_one_by_one(
    recorder: ModuleType, wired: HistoryStore, make_store: Callable[..., HistoryStore]
) -> None:
    event = load_event("kinesis_batch.json")
    invoke(recorder, event)
    reference = make_store(key_prefix=f"ref{uuid.uuid4().hex[:8]}:")
    one_by_one(reference, updates_of(event["Records"]))

    pairs = set(EXPECTED_EVENTS_FILE)
    assert state(wired, pairs) == state(reference, pairs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_batches_with_a_removal_inside_end_as_one_by_one(
    recorder: ModuleType,
    make_store: Callable[..., HistoryStore],
    prefix: str,
    queue_url: str,
    seed: int,
) -> None:
    """Duplicates, reordering, completions, live assets (no duration) and a removal that
    falls between records of one (profile, asset): the batch ends where one by one ends.

    Within the producers' contract (coalesce.py): an asset's duration is the same in
    every record (or absent in all: live), and every heartbeat names its device.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    skew = {"max_future_skew_seconds": 2 * 3600}  # records up to 90 min ahead of the removal
    wired = make_store(key_prefix=prefix, quarantine_queue_url=queue_url, **skew)
    runtime.set_store(wired)
    profiles = [f"rp-{seed}-{i}" for i in range(5)]
    assets = ["m1", "m2", "e1"]
    live = {(p, a): rng.random() < 0.3 for p in profiles for a in assets}
    payloads = []
    for _ in range(120):
        profile, asset = rng.choice(profiles), rng.choice(assets)
        payload = progress(
            profile,
            asset,
            now + timedelta(minutes=rng.randint(-90, 90) or 1),
            position=float(rng.choice([0, 50, 400, 950, 1000])),
            duration=None if live[profile, asset] else 1000.0,
            eventType=rng.choice(["heartbeat", "pause", "complete", "start"]),
            deviceId=rng.choice(["tv", "phone"]),
            asset=rng.choice([None, {"type": "match", "sport": "cricket", "title": "A v B"}]),
        )
        payloads.append(payload)
        if rng.random() < 0.2:
            payloads.append(dict(payload))  # a producer retry
    records = [record(p, i, p["profileId"]) for i, p in enumerate(payloads)]
    reference = make_store(key_prefix=f"ref{uuid.uuid4().hex[:8]}:", **skew)
    for store in (wired, reference):  # removed "now": older records are ignored, newer land
        store.remove(profiles[0], ["m1", "m2"])

    assert invoke(recorder, {"Records": records}) == {"batchItemFailures": []}
    one_by_one(reference, updates_of(records))

    pairs = {(p, a) for p in profiles for a in assets}
    assert state(wired, pairs) == state(reference, pairs)
    assert recorder.processor.report.count(Disposition.IGNORED) > 0  # the removal mattered


# --- bad input ------------------------------------------------------------------------

BAD_RECORDS: list[tuple[str, dict[str, Any] | bytes | str, str]] = [
    ("not base64", "%%% not base64 %%%", "data is not valid base64"),
    ("not JSON", b"{'profileId': 1", "data is not a JSON document"),
    ("not UTF-8", b'{"profileId": "\xff\xfe"}', "data is not a JSON document"),
    ("a JSON array", b"[1, 2]", "not a valid progress update"),
    ("missing fields", {"profileId": "bad-1"}, "assetId: Field required"),
    ("quote and bracket id", progress('a"]', "x", 1795200000000), "profileId: String should"),
    ("JSONPath id", progress("p-ok", "x)||@.y", 1795200000000), "assetId: String should"),
    ("hash tag id", progress("{p}", "x", 1795200000000), "profileId: String should"),
    ("negative position", progress("p-ok", "x", 1795200000000, position=-1), "position"),
    ("seconds, not ms", progress("p-ok", "x", 1795200000), "greater than 2000-01-01"),
    ("no time zone", progress("p-ok", "x", 0) | {"eventTime": "2026-11-20T10:00:00"}, "timezone"),
    *(
        (f"5,000-digit {field}", body.replace(b"NUM", b"9" * 5000), "number out of range")
        for field, body in [
            ("position", b'{"profileId":"p-ok","assetId":"x","position":NUM,"eventTime":1}'),
            ("eventTime", b'{"profileId":"p-ok","assetId":"x","position":1,"eventTime":NUM}'),
            ("season", b'{"profileId":"p-ok","assetId":"x","position":1,"asset":{"season":NUM}}'),
        ]
    ),
]


def test_bad_records_are_quarantined_with_their_reason_and_the_rest_lands(
    recorder: ModuleType, wired: HistoryStore, sqs: Any, queue_url: str, profile_id: str
) -> None:
    future = datetime.now(UTC) + timedelta(days=2)
    bad = [*BAD_RECORDS, ("2 days ahead", progress("p-ok", "x", future), "in the future")]
    good = progress(profile_id, "ok-asset", datetime(2026, 11, 20, 19, 0, tzinfo=UTC))
    records = [record(payload, i) for i, (_, payload, _) in enumerate(bad)]
    records.append(record(good, len(bad), profile_id))

    assert invoke(recorder, {"Records": records}) == {"batchItemFailures": []}

    assert wired.get_item(profile_id, "ok-asset") is not None
    assert wired.get_item("p-ok", "x") is None
    messages = {m["sequenceNumber"]: m for m in drain(sqs, queue_url)}
    assert len(messages) == len(bad)
    for (name, _, reason), sent in zip(bad, records, strict=False):
        message = messages[sent["kinesis"]["sequenceNumber"]]
        assert reason in message["reason"], name
        assert message["data"] == sent["kinesis"]["data"], name


def test_a_failed_quarantine_send_is_a_batch_item_failure_never_a_drop(
    recorder: ModuleType,
    make_store: Callable[..., HistoryStore],
    prefix: str,
    sqs: Any,
    profile_id: str,
) -> None:
    gone = f"https://sqs.{REGION}.amazonaws.com/123456789012/no-such-queue"
    store = make_store(key_prefix=prefix, quarantine_queue_url=gone)
    runtime.set_store(store)
    good = progress(profile_id, "a1", datetime(2026, 11, 20, 19, 0, tzinfo=UTC))
    records = [record(b"not json", 0), record(good, 1, profile_id), record(b"[]", 2)]
    result = invoke(recorder, {"Records": records})

    assert failed_sequences(result) == [
        records[0]["kinesis"]["sequenceNumber"],
        records[2]["kinesis"]["sequenceNumber"],
    ]
    assert store.get_item(profile_id, "a1") is not None  # the rest of the batch landed
    reasons = recorder.processor.report.reasons
    assert "quarantine send failed" in reasons[0]
    assert "data is not a JSON document" in reasons[0]


def test_without_a_quarantine_queue_bad_records_are_retried_not_dropped(
    recorder: ModuleType, make_store: Callable[..., HistoryStore], prefix: str
) -> None:
    runtime.set_store(make_store(key_prefix=prefix, quarantine_queue_url=None))
    result = invoke(recorder, {"Records": [record(b"{", 0)]})
    assert failed_sequences(result) == [record(b"{", 0)["kinesis"]["sequenceNumber"]]
    assert "QUARANTINE_QUEUE_URL is not set" in recorder.processor.report.reasons[0]


def test_an_unreachable_store_fails_the_valid_records_and_still_quarantines(
    recorder: ModuleType, sqs: Any, queue_url: str, profile_id: str
) -> None:
    settings = Settings(  # nothing listens on port 1
        redis_url="redis://127.0.0.1:1",
        redis_cluster=False,
        key_prefix="down:",
        quarantine_queue_url=queue_url,
    )
    runtime.set_store(HistoryStore(create_client(settings), settings))
    good = progress(profile_id, "a1", datetime(2026, 11, 20, 19, 0, tzinfo=UTC))
    records = [record(good, 0, profile_id), record(b"nope", 1), record(good, 2, profile_id)]
    result = invoke(recorder, {"Records": records})

    assert failed_sequences(result) == [
        records[0]["kinesis"]["sequenceNumber"],
        records[2]["kinesis"]["sequenceNumber"],
    ]
    assert [m["sequenceNumber"] for m in drain(sqs, queue_url)] == [
        records[1]["kinesis"]["sequenceNumber"]
    ]


def test_quarantine_messages_fit_sqs_and_batches_respect_its_limits() -> None:
    huge = record(b"x" * 400_000, 7)  # a 400 KB record is legal on the stream
    body = quarantine_message(Rejected(huge, "data is not a JSON document"))
    message = json.loads(body)
    assert len(body.encode()) <= SQS_MAX_BYTES
    assert message["dataTruncated"] is True
    assert message["dataLength"] == len(huge["kinesis"]["data"])
    assert huge["kinesis"]["data"].startswith(message["data"])

    sizes = ["a" * 100] * 23 + ["b" * 200_000] * 3
    batches = _sqs_batches(sizes)
    assert [len(b) for b in batches] == [10, 10, 4, 1, 1]
    assert sorted(i for b in batches for i in b) == list(range(26))


# --- end to end through Kinesis -------------------------------------------------------


def test_end_to_end_kinesis_stream_to_store_and_quarantine(
    recorder: ModuleType, wired: HistoryStore, sqs: Any, queue_url: str
) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName="watch-progress", ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName="watch-progress")["StreamDescriptionSummary"][
        "StreamARN"
    ]
    originals = load_event("kinesis_batch.json")["Records"]
    for r in originals:
        kinesis.put_record(
            StreamARN=arn,
            Data=base64.b64decode(r["kinesis"]["data"]),
            PartitionKey=r["kinesis"]["partitionKey"],
        )
    shard = kinesis.list_shards(StreamARN=arn)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamARN=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    got = kinesis.get_records(ShardIterator=iterator, Limit=100, StreamARN=arn)["Records"]
    event = {"Records": from_get_records(got, shard_id=shard, stream_arn=arn)}
    assert len(event["Records"]) == len(originals)

    assert invoke(recorder, event) == {"batchItemFailures": []}

    assert_events_file_state(wired)
    [message] = drain(sqs, queue_url)
    bad = got[MALFORMED_AT]
    assert base64.b64decode(message["data"]) == bad["Data"]
    assert message["sequenceNumber"] == bad["SequenceNumber"]
    assert message["shardId"] == shard
    assert message["eventSourceARN"] == arn


# --- the server stops in the middle of a batch ----------------------------------------


@pytest.mark.own_servers
def test_server_stopping_mid_batch_fails_exactly_the_unapplied_records_and_a_retry_heals(
    recorder: ModuleType, sqs: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six profiles, two per pipelined round trip (``pipeline_profiles=2``). The engine is
    stopped right after the first round trip: its two profiles stay applied, and the
    failures are exactly the records of the other four. The applied documents are
    DUMPed before the stop and RESTOREd on a fresh engine (MemoryDB keeps what it
    acknowledged across a failover); Lambda's retry (every record from the first
    failed sequence number on) then ends where a clean run of the batch ends."""
    base = datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
    profiles = [f"stop-{i}" for i in range(6)]
    rng = random.Random(7)
    payloads: list[dict[str, Any] | bytes] = []
    for i in range(40):
        profile = profiles[i % 6] if i < 6 else rng.choice(profiles)
        payloads.append(
            progress(
                profile, rng.choice(["m1", "m2"]), base + timedelta(minutes=rng.randint(0, 60))
            )
        )
    payloads.insert(17, b"{broken")
    records = [
        record(p, i, p["profileId"] if isinstance(p, dict) else "x") for i, p in enumerate(payloads)
    ]

    first = start_standalone()
    second = None
    try:
        settings = Settings(
            redis_url=first.url,
            redis_cluster=False,
            key_prefix="stop:",
            pipeline_profiles=2,
            quarantine_queue_url=queue_url,
        )
        store = HistoryStore(create_client(settings), settings)
        warm = progress("warm-up", "a", base)
        store.record_progress(ProgressUpdate.model_validate(warm))  # scripts loaded
        chunks: list[list[str]] = []
        dumps: dict[str, bytes] = {}
        applied_before_stop: dict[str, HistoryItem | None] = {}
        observer = HistoryStore(store.client, settings)  # reads, not through the seam
        real_pipeline = store._pipeline

        def pipeline(sha: str, calls: Any, budget: Any) -> tuple[list[Any], list[Any]]:
            calls = list(calls)
            replies = real_pipeline(sha, calls, budget)
            chunks.append([key for key, _ in calls])
            if len(chunks) == 1:
                for key in chunks[0]:
                    profile = key.removeprefix("stop:{").removesuffix("}")
                    applied_before_stop[profile] = observer.get_item(profile, "m1")
                    dumps[key] = observer.client.dump(key)  # type: ignore[assignment]
                first.stop()
            return replies

        monkeypatch.setattr(store, "_pipeline", pipeline)
        runtime.set_store(store)
        result = invoke(recorder, {"Records": records})

        assert len(chunks) == 3
        landed = {key.removeprefix("stop:{").removesuffix("}") for key in chunks[0]}
        assert len(landed) == 2
        not_applied = [
            r["kinesis"]["sequenceNumber"]
            for r, p in zip(records, payloads, strict=True)
            if isinstance(p, dict) and p["profileId"] not in landed
        ]
        assert failed_sequences(result) == not_applied
        report = recorder.processor.report
        for index, disposition in enumerate(report.dispositions):
            payload = payloads[index]
            if not isinstance(payload, dict):
                assert disposition is Disposition.QUARANTINED
            elif payload["profileId"] in landed:  # landed: applied, or stale after a newer one
                assert disposition in (Disposition.APPLIED, Disposition.STALE)
            else:
                assert disposition is Disposition.FAILED

        # The server comes back with what it acknowledged; Lambda retries from the first
        # failed sequence number to the end of the batch.
        second = start_standalone()
        settings = settings.model_copy(update={"redis_url": second.url})
        healed = HistoryStore(create_client(settings), settings)
        for key, payload in dumps.items():
            healed.client.restore(key, 0, payload)
        for profile, item in applied_before_stop.items():
            assert healed.get_item(profile, "m1") == item
        first_failed = next(
            i for i, r in enumerate(records) if r["kinesis"]["sequenceNumber"] in not_applied
        )
        runtime.set_store(healed)
        assert invoke(recorder, {"Records": records[first_failed:]}) == {"batchItemFailures": []}

        clean_settings = settings.model_copy(update={"key_prefix": "clean:"})
        clean = HistoryStore(healed.client, clean_settings)
        runtime.set_store(clean)
        assert invoke(recorder, {"Records": records}) == {"batchItemFailures": []}

        pairs = {(p, a) for p in profiles for a in ("m1", "m2")}
        assert state(healed, pairs) == state(clean, pairs)
        assert all(v is not None for k, v in state(healed, pairs).items() if k[1] == "m1")
    finally:
        runtime.set_store(None)
        first.stop()
        if second is not None:
            second.stop()


# --- the processor on its own ---------------------------------------------------------


def test_a_store_that_cannot_start_fails_the_valid_records_and_quarantines_the_bad(
    sqs: Any, queue_url: str, profile_id: str
) -> None:
    """RedisCluster connects in its constructor: at a cold start with the cluster down,
    ``get_store()`` raises. Bad records still go to the quarantine (settings from the
    environment), valid ones are retried."""

    def cluster_down() -> HistoryStore:
        raise StoreUnavailableError("cannot reach the cluster at example: refused")

    processor = KinesisRecorder(
        store=cluster_down, settings=lambda: Settings(quarantine_queue_url=queue_url)
    )
    good = progress(profile_id, "a1", datetime(2026, 11, 20, 19, 0, tzinfo=UTC))
    records = [record(b"x", 0), record(good, 1, profile_id), record(b"y", 2)]
    result = process_partial_response({"Records": records}, decode_record, processor)

    assert failed_sequences(dict(result)) == [records[1]["kinesis"]["sequenceNumber"]]
    assert processor.report.summary()["quarantined"] == 2
    assert len(drain(sqs, queue_url)) == 2


@pytest.mark.parametrize("fields", NOT_NUMBERS, ids=json.dumps)
def test_a_string_or_boolean_for_a_number_is_quarantined_as_the_api_refuses_it(
    fields: dict[str, Any],
) -> None:
    payload = {**progress("p", "a", datetime(2026, 11, 20, tzinfo=UTC)), **fields}
    with pytest.raises(InvalidInputError, match="not a valid progress update"):
        decode_record(KinesisStreamRecord(record(payload, 0)))


def test_epoch_ms_and_rfc3339_times_are_the_same_instant() -> None:
    at = datetime(2026, 11, 20, 18, 40, tzinfo=UTC)
    a = decode_record(KinesisStreamRecord(record(progress("p", "a", epoch_ms(at)), 0)))
    b = decode_record(KinesisStreamRecord(record(progress("p", "a", at), 1)))
    assert a.event_time == b.event_time == at


def test_an_unexpected_error_on_one_record_retries_that_record_only(
    wired: HistoryStore, profile_id: str
) -> None:
    """A bug in decoding (not bad input) must not drop the record nor stop the batch."""

    def flaky(record: KinesisStreamRecord) -> ProgressUpdate:
        if record.kinesis.sequence_number.endswith("1"):
            raise RuntimeError("bug")
        return decode_record(record)

    good = progress(profile_id, "a1", datetime(2026, 11, 20, 19, 0, tzinfo=UTC))
    records = [record(good, 0, profile_id), record(good, 1, profile_id)]
    processor = KinesisRecorder(store=lambda: wired)
    result = process_partial_response({"Records": records}, flaky, processor)

    assert failed_sequences(dict(result)) == [records[1]["kinesis"]["sequenceNumber"]]
    assert processor.report.reasons[1] == "unexpected RuntimeError: bug"
    assert wired.get_item(profile_id, "a1") is not None
