"""``python -m watch_history.replay``: re-driving the quarantine and the batches the
Kinesis event source mapping gave up on. SQS and Kinesis from moto, the real engines
for the store, the CLI entry point as an operator runs it.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from botocore.config import Config
from botocore.stub import Stubber

from tests.conftest import load_event
from watch_history import replay, runtime
from watch_history.connection import create_client
from watch_history.models import epoch_ms
from watch_history.recorder import KinesisRecorder, decode_record
from watch_history.settings import Settings, get_settings
from watch_history.store import HistoryStore

REGION = "us-east-1"
EVENTS = load_event("kinesis_batch.json")["Records"]
MALFORMED_AT = 8
TWO_DAYS_BEFORE_THE_EVENTS = epoch_ms(datetime(2026, 11, 18, 12, 0, tzinfo=UTC))


@pytest.fixture(autouse=True)
def powertools_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "history-replay")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def kinesis(aws: None) -> Any:
    return boto3.client("kinesis", region_name=REGION)


def new_queue(sqs: Any, name: str) -> str:
    url: str = sqs.create_queue(QueueName=f"{name}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    return url


@pytest.fixture
def quarantine_url(sqs: Any) -> str:
    return new_queue(sqs, "quarantine")


@pytest.fixture
def prefix() -> str:
    return f"q{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def store(
    make_store: Callable[..., HistoryStore], prefix: str, quarantine_url: str
) -> HistoryStore:
    """What ``runtime.get_store()`` gives the CLI (the environment's store, in production)."""
    wired = make_store(key_prefix=prefix, quarantine_queue_url=quarantine_url)
    runtime.set_store(wired)
    return wired


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = replay.main(argv)
    summary: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, summary


def bodies(sqs: Any, url: str) -> list[Any]:
    """The bodies of the messages in a queue, parsed when JSON (received, then made
    visible again)."""
    found: list[Any] = []
    handles: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        for m in messages:
            try:
                found.append(json.loads(m["Body"]))
            except ValueError:
                found.append(m["Body"])
            handles.append(m["ReceiptHandle"])
    for h in handles:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=h, VisibilityTimeout=0)
    return found


def quarantine_everything_but_the_valid(
    make_store: Callable[..., HistoryStore], prefix: str, quarantine_url: str
) -> None:
    """Run the events file through a recorder whose clock is two days behind: every
    valid record is "more than 24 h in the future" and is quarantined, as is the
    malformed one. A fixed clock is the bug being fixed before the re-drive."""
    behind = make_store(
        key_prefix=prefix,
        quarantine_queue_url=quarantine_url,
        clock_ms=lambda: TWO_DAYS_BEFORE_THE_EVENTS,
    )
    processor = KinesisRecorder(store=lambda: behind)
    result = process_partial_response({"Records": EVENTS}, decode_record, processor)
    assert result == {"batchItemFailures": []}
    assert processor.report.summary()["quarantined"] == len(EVENTS)


# --- quarantine -----------------------------------------------------------------------


def test_quarantine_redrive_lands_the_fixed_records_and_keeps_the_bad_one(
    make_store: Callable[..., HistoryStore],
    prefix: str,
    quarantine_url: str,
    store: HistoryStore,
    sqs: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quarantine_everything_but_the_valid(make_store, prefix, quarantine_url)
    assert len(bodies(sqs, quarantine_url)) == 10
    assert store.get_item("demo-profile-1", "ipl-2026-m01") is None

    code, summary = run_cli(
        ["quarantine", "--queue-url", quarantine_url, "--wait-seconds", "0"], capsys
    )

    assert code == 0
    assert summary["messages"] == 10
    assert summary["invalid"] == 1
    assert summary["deleted"] == 9
    assert summary["kept"] == 1
    assert summary["applied"] + summary["stale"] == 9
    assert summary["failed"] == 0
    [left] = bodies(sqs, quarantine_url)  # visible again right away, not after the timeout
    assert left["sequenceNumber"] == EVENTS[MALFORMED_AT]["kinesis"]["sequenceNumber"]
    item = store.get_item("demo-profile-1", "ipl-2026-m01")
    assert item is not None
    assert item.position == 1200.0
    assert store.get_item("demo-profile-3", "long-walk") is not None

    code, summary = run_cli(  # a second run finds only the bad record again
        ["quarantine", "--queue-url", quarantine_url, "--wait-seconds", "0"], capsys
    )
    assert (code, summary["messages"], summary["deleted"], summary["kept"]) == (0, 1, 0, 1)


def test_quarantine_dry_run_changes_nothing(
    make_store: Callable[..., HistoryStore],
    prefix: str,
    quarantine_url: str,
    store: HistoryStore,
    sqs: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quarantine_everything_but_the_valid(make_store, prefix, quarantine_url)

    code, summary = run_cli(
        ["quarantine", "--queue-url", quarantine_url, "--wait-seconds", "0", "--dry-run"], capsys
    )

    assert code == 0
    assert (summary["valid"], summary["invalid"], summary["deleted"]) == (9, 1, 0)
    assert summary["kept"] == 10
    assert len(bodies(sqs, quarantine_url)) == 10
    assert not store.client.keys(f"{prefix}*")


def test_quarantine_redrive_keeps_records_the_store_cannot_take(
    make_store: Callable[..., HistoryStore],
    prefix: str,
    quarantine_url: str,
    sqs: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quarantine_everything_but_the_valid(make_store, prefix, quarantine_url)
    settings = Settings(
        redis_url="redis://127.0.0.1:1", redis_cluster=False, key_prefix=prefix
    )  # nothing there
    runtime.set_store(HistoryStore(create_client(settings), settings))
    code, summary = run_cli(
        ["quarantine", "--queue-url", quarantine_url, "--wait-seconds", "0", "--max", "4"],
        capsys,
    )

    assert code == 1
    assert (summary["messages"], summary["failed"], summary["deleted"]) == (4, 4, 0)
    assert len(bodies(sqs, quarantine_url)) == 10


def test_unreadable_quarantine_messages_are_kept_for_a_person(
    store: HistoryStore, quarantine_url: str, sqs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs.send_message(QueueUrl=quarantine_url, MessageBody="hello")
    sqs.send_message(QueueUrl=quarantine_url, MessageBody=json.dumps({"data": "eA=="}))

    code, summary = run_cli(
        ["quarantine", "--queue-url", quarantine_url, "--wait-seconds", "0"], capsys
    )

    assert code == 1
    assert (summary["unreadable"], summary["kept"], summary["deleted"]) == (2, 2, 0)
    assert len(bodies(sqs, quarantine_url)) == 2


# --- stream failures ------------------------------------------------------------------


@pytest.fixture
def stream(kinesis: Any) -> tuple[str, str, list[str]]:
    """A one-shard stream holding the events file's records: (arn, shard, sequences)."""
    name = f"progress-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    arn: str = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamARN"
    ]
    sequences = [
        kinesis.put_record(
            StreamARN=arn,
            Data=base64.b64decode(r["kinesis"]["data"]),
            PartitionKey=r["kinesis"]["partitionKey"],
        )["SequenceNumber"]
        for r in EVENTS
    ]
    shard: str = kinesis.list_shards(StreamARN=arn)["Shards"][0]["ShardId"]
    return arn, shard, sequences


def on_failure_message(arn: str, shard: str, start: str, end: str, size: int) -> str:
    """What Lambda sends to a Kinesis event source mapping's on-failure destination."""
    return json.dumps(
        {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:recorder",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 4,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": "2026-11-20T21:05:00.000Z",
            "KinesisBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": start,
                "endSequenceNumber": end,
                "approximateArrivalOfFirstRecord": "2026-11-20T19:20:00.400Z",
                "approximateArrivalOfLastRecord": "2026-11-20T21:00:01.000Z",
                "batchSize": size,
                "streamArn": arn,
            },
        }
    )


def test_stream_failures_replay_exactly_the_range_from_the_stream(
    store: HistoryStore,
    sqs: Any,
    quarantine_url: str,
    stream: tuple[str, str, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    arn, shard, sequences = stream
    failures = new_queue(sqs, "stream-failures")
    # records 3..8: profile 1's 19:20 pair, profile 2's out-of-order pair, the movie,
    # the malformed record (not 0-2, not 9)
    sqs.send_message(
        QueueUrl=failures, MessageBody=on_failure_message(arn, shard, sequences[3], sequences[8], 6)
    )

    code, summary = run_cli(
        ["stream-failures", "--queue-url", failures, "--wait-seconds", "0"], capsys
    )

    assert code == 0
    assert (summary["messages"], summary["records"], summary["deleted"]) == (1, 6, 1)
    assert (summary["invalid"], summary["failed"], summary["missing"]) == (1, 0, 0)
    assert bodies(sqs, failures) == []
    one = store.get_item("demo-profile-1", "ipl-2026-m01")
    assert one is not None
    assert one.position == 1200.0
    assert one.first_watched_at == datetime(2026, 11, 20, 19, 20, tzinfo=UTC)  # 0-1 not replayed
    two = store.get_item("demo-profile-2", "night-shift-s01e01")
    assert two is not None
    assert (two.position, two.first_watched_at) == (
        900.0,
        datetime(2026, 11, 20, 19, 10, tzinfo=UTC),
    )
    assert store.get_item("demo-profile-3", "long-walk") is not None
    assert store.get_item("demo-profile-4", "ipl-2026-m02") is None  # after the range
    [quarantined] = bodies(sqs, quarantine_url)
    assert quarantined["sequenceNumber"] == sequences[MALFORMED_AT]
    assert quarantined["shardId"] == shard
    assert quarantined["eventSourceARN"] == arn


def test_read_range_pages_through_get_records_and_stops_at_the_end(
    kinesis: Any, stream: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, shard, sequences = stream
    monkeypatch.setattr(replay, "GET_RECORDS_LIMIT", 2)

    records = replay.read_range(
        kinesis, stream_arn=arn, shard_id=shard, start=sequences[1], end=sequences[6]
    )

    assert [r["kinesis"]["sequenceNumber"] for r in records] == sequences[1:7]
    assert [r["kinesis"]["data"] for r in records] == [r["kinesis"]["data"] for r in EVENTS[1:7]]
    assert records[0]["eventID"] == f"{shard}:{sequences[1]}"
    assert records[0]["eventSourceARN"] == arn


def test_stream_failures_dry_run_and_an_unreachable_store_keep_the_message(
    make_store: Callable[..., HistoryStore],
    store: HistoryStore,
    sqs: Any,
    stream: tuple[str, str, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    arn, shard, sequences = stream
    failures = new_queue(sqs, "stream-failures")
    sqs.send_message(
        QueueUrl=failures,
        MessageBody=on_failure_message(arn, shard, sequences[0], sequences[9], 10),
    )
    argv = ["stream-failures", "--queue-url", failures, "--wait-seconds", "0"]

    code, summary = run_cli([*argv, "--dry-run"], capsys)
    assert (code, summary["valid"], summary["invalid"], summary["kept"]) == (0, 9, 1, 1)
    assert not store.client.keys(f"{store.settings.key_prefix}*")

    down = store.settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1", "redis_cluster": False}  # nothing there
    )
    runtime.set_store(HistoryStore(create_client(down), down))
    code, summary = run_cli(argv, capsys)
    assert (code, summary["failed"], summary["invalid"]) == (1, 9, 1)
    assert (summary["deleted"], summary["kept"]) == (0, 1)
    assert len(bodies(sqs, failures)) == 1

    runtime.set_store(store)  # the store is back: the next run finishes the job
    code, summary = run_cli(argv, capsys)
    # the events file's 9 valid records, as one by one: 7 applied, a duplicate and a late one stale
    assert (code, summary["applied"], summary["stale"], summary["deleted"]) == (0, 7, 2, 1)
    assert bodies(sqs, failures) == []


def test_a_range_that_cannot_be_read_keeps_the_message(
    store: HistoryStore, sqs: Any, kinesis: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = new_queue(sqs, "stream-failures")
    gone = "arn:aws:kinesis:us-east-1:123456789012:stream/deleted-stream"
    sqs.send_message(
        QueueUrl=failures, MessageBody=on_failure_message(gone, "shardId-000000000000", "1", "2", 2)
    )
    sqs.send_message(QueueUrl=failures, MessageBody='{"something": "else"}')

    code, summary = run_cli(
        ["stream-failures", "--queue-url", failures, "--wait-seconds", "0"], capsys
    )

    assert code == 1
    assert (summary["failed"], summary["unreadable"], summary["kept"]) == (1, 1, 2)
    assert len(bodies(sqs, failures)) == 2


# --- poison records: archive and drop -------------------------------------------------


def _message(data: dict[str, Any], *, arrival: float, sequence: str) -> str:
    """A quarantine message as the recorder writes it, for one update."""
    return json.dumps(
        {
            "reason": "as quarantined",
            "data": base64.b64encode(json.dumps(data).encode()).decode(),
            "partitionKey": data.get("profileId"),
            "sequenceNumber": sequence,
            "shardId": "shardId-000000000000",
            "approximateArrivalTimestamp": arrival,
        }
    )


ARRIVAL = datetime(2026, 11, 20, 19, 0, tzinfo=UTC).timestamp()
FROM_THE_FUTURE = {  # a device clock 20 hours ahead of the record's arrival
    "profileId": "p-clock",
    "assetId": "a-1",
    "position": 60,
    "eventTime": "2026-11-21T15:00:00Z",
}
INVALID = {"profileId": "p-bad", "assetId": "a-1", "position": -5, "eventTime": 1795201200000}
FINE = {"profileId": "p-ok", "assetId": "a-1", "position": 60, "eventTime": 1795201200000}


@pytest.fixture
def poisoned(sqs: Any, quarantine_url: str) -> str:
    """The quarantine queue with one record of each kind: refused for eventTime, still
    invalid, not a quarantine message at all, and one that lands now."""
    sqs.send_message(
        QueueUrl=quarantine_url,
        MessageBody=_message(FROM_THE_FUTURE, arrival=ARRIVAL, sequence="1"),
    )
    sqs.send_message(
        QueueUrl=quarantine_url, MessageBody=_message(INVALID, arrival=ARRIVAL, sequence="2")
    )
    sqs.send_message(QueueUrl=quarantine_url, MessageBody="not json")
    sqs.send_message(
        QueueUrl=quarantine_url, MessageBody=_message(FINE, arrival=ARRIVAL, sequence="3")
    )
    return quarantine_url


def _quarantine(url: str, *extra: str) -> list[str]:
    return ["quarantine", "--queue-url", url, "--wait-seconds", "0", *extra]


def test_event_time_refusals_are_explained_and_kept_without_an_archive(
    store: HistoryStore, poisoned: str, sqs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run_cli(_quarantine(poisoned), capsys)

    assert code == 1  # the unreadable message is still there for a person
    assert (summary["applied"], summary["invalid"], summary["event_time"]) == (1, 2, 1)
    assert (summary["kept"], summary["archived"]) == (3, 0)
    assert replay.EVENT_TIME_EXPLANATION in summary["reasons"]
    assert len(bodies(sqs, poisoned)) == 3


def test_archive_to_a_file_drops_what_can_never_be_recorded(
    store: HistoryStore,
    poisoned: str,
    sqs: Any,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = tmp_path / "poison.jsonl"

    code, summary = run_cli(_quarantine(poisoned, "--archive", str(archive)), capsys)

    assert code == 0
    assert (summary["applied"], summary["archived"], summary["kept"]) == (1, 3, 0)
    assert summary["archive"] == str(archive)
    assert bodies(sqs, poisoned) == []
    entries = [json.loads(line) for line in archive.read_text().splitlines()]
    by_kind = {e["kind"]: e for e in entries}
    assert sorted(by_kind) == ["event_time", "invalid", "unreadable"]
    assert "can never be recorded" in by_kind["event_time"]["reason"]
    assert by_kind["event_time"]["message"]["sequenceNumber"] == "1"
    assert by_kind["unreadable"]["message"] == "not json"
    assert store.get_item("p-ok", "a-1") is not None
    assert store.get_item("p-clock", "a-1") is None


@pytest.fixture
def s3(aws: None) -> Any:
    """An S3 client with an empty bucket, poison-archive."""
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket="poison-archive")
    return client


def test_archive_dry_run_counts_and_changes_nothing(
    store: HistoryStore, poisoned: str, sqs: Any, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run_cli(
        _quarantine(poisoned, "--archive", "s3://poison-archive/quarantine/", "--dry-run"), capsys
    )

    assert (code, summary["archived"], summary["valid"], summary["event_time"]) == (1, 3, 1, 1)
    assert len(bodies(sqs, poisoned)) == 4
    assert s3.list_objects_v2(Bucket="poison-archive")["KeyCount"] == 0
    assert store.get_item("p-ok", "a-1") is None


def test_archive_to_s3_then_the_queue_is_empty(
    store: HistoryStore, poisoned: str, sqs: Any, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run_cli(
        _quarantine(poisoned, "--archive", "s3://poison-archive/quarantine/"), capsys
    )

    assert (code, summary["archived"]) == (0, 3)
    [obj] = s3.list_objects_v2(Bucket="poison-archive", Prefix="quarantine/")["Contents"]
    lines = s3.get_object(Bucket="poison-archive", Key=obj["Key"])["Body"].read().splitlines()
    assert len(lines) == 3
    assert bodies(sqs, poisoned) == []


def test_an_archive_that_cannot_be_written_drops_nothing(
    store: HistoryStore, poisoned: str, sqs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run_cli(_quarantine(poisoned, "--archive", "s3://no-such-bucket/q/"), capsys)

    assert (code, summary["archived"], summary["failed"], summary["kept"]) == (1, 0, 3, 3)
    assert any("no-such-bucket" in r for r in summary["reasons"])
    assert len(bodies(sqs, poisoned)) == 3


# --- expected failures: one line, no traceback ----------------------------------------


def _one_line_failure(code: int, capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "Traceback" not in err
    return err


def test_unreachable_sqs_is_one_line(
    store: HistoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(service: str) -> Any:
        config = Config(retries={"max_attempts": 1}, connect_timeout=1)
        make: Any = boto3.client
        return make(service, region_name=REGION, endpoint_url="http://127.0.0.1:1", config=config)

    capsys.readouterr()
    code = replay.main(_quarantine("http://127.0.0.1:1/123/q"), client=unreachable)
    err = _one_line_failure(code, capsys)
    assert err.startswith("replay: an AWS call failed: Could not connect")


def test_no_permission_is_one_line(
    store: HistoryStore, sqs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    denied = boto3.client("sqs", region_name=REGION)
    stubber = Stubber(denied)
    stubber.add_client_error("receive_message", "AccessDenied", "not allowed", 403)
    capsys.readouterr()
    with stubber:
        code = replay.main(_quarantine("https://sqs/123/q"), client=lambda _: denied)
    err = _one_line_failure(code, capsys)
    assert "AccessDenied" in err
    assert "permissions" in err


def test_a_bad_setting_is_one_line(
    aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No store yet and REDIS_URL not a redis URL: the settings error, in one line."""
    runtime.set_store(None)
    get_settings.cache_clear()
    monkeypatch.setenv("REDIS_URL", "http://127.0.0.1:1")
    try:
        capsys.readouterr()
        code = replay.main(_quarantine("https://sqs.us-east-1.amazonaws.com/123456789012/q"))
    finally:
        get_settings.cache_clear()
    err = _one_line_failure(code, capsys)
    assert err.startswith("replay: invalid configuration")
    assert "REDIS_URL" in err
