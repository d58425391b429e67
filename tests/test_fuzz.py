"""Fuzzing the two doors that take outside input: Kinesis records and HTTP bodies.

Whatever arrives, the handlers answer (no exception escapes), every record is accounted
for (landed, quarantined with a reason, or reported for retry), nothing invalid is
stored, and no HTTP request gets a 5xx for its content.
"""

from __future__ import annotations

import base64
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from devtools.lambda_context import FakeLambdaContext, load_module
from watch_history import runtime
from watch_history.codec import asset_keys
from watch_history.models import HistoryQuery, ProgressUpdate
from watch_history.recorder import Disposition, KinesisRecorder, Rejected, decode_record
from watch_history.store import HistoryStore

REGION = "us-east-1"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def handlers() -> Iterator[dict[str, ModuleType]]:
    """The three handler modules, quiet (hostile input logs a warning per request)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POWERTOOLS_SERVICE_NAME", "fuzz")
        mp.setenv("POWERTOOLS_LOG_LEVEL", "CRITICAL")
        names = ("history_recorder", "history_reader", "history_writer")
        yield {name: load_module(name) for name in names}


@pytest.fixture
def wired(
    make_store: Callable[..., HistoryStore], monkeypatch: pytest.MonkeyPatch
) -> Iterator[HistoryStore]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="q")["QueueUrl"]
        store = make_store(key_prefix=f"f{uuid.uuid4().hex[:8]}:", quarantine_queue_url=url)
        runtime.set_store(store)
        yield store


ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:-]{1,12}", fullmatch=True),
    st.sampled_from(['a"]', "x)||@.y", "{p}", "", "a b", "$..*", "\u00fc", "x" * 200]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
updates = st.fixed_dictionaries(
    {"profileId": ids, "assetId": ids},
    optional={
        "position": st.one_of(st.floats(), st.integers(-5, 10**8), st.text(max_size=5)),
        "duration": st.one_of(st.floats(), st.integers(-5, 10**8), st.none()),
        "eventTime": st.one_of(
            st.integers(-(10**15), 10**15),
            st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
            st.just((NOW - timedelta(minutes=1)).isoformat()),
            st.text(max_size=30),
        ),
        "eventType": st.sampled_from(["start", "heartbeat", "pause", "stop", "complete", "x"]),
        "deviceId": ids,
        "asset": st.one_of(json_values, st.fixed_dictionaries({}, optional={"teams": json_values})),
        "extra": json_values,
    },
)
record_data = st.one_of(
    updates.map(lambda u: json.dumps(u).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)


def kinesis_event(payloads: list[bytes | str]) -> dict[str, Any]:
    records = []
    for n, data in enumerate(payloads):
        encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
        records.append(
            {
                "kinesis": {
                    "partitionKey": f"k{n % 3}",
                    "sequenceNumber": str(49_000 + n),
                    "data": encoded,
                    "approximateArrivalTimestamp": time.time(),
                    "kinesisSchemaVersion": "1.0",
                },
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{49_000 + n}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
                "eventName": "aws:kinesis:record",
                "eventVersion": "1.0",
                "awsRegion": REGION,
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
            }
        )
    return {"Records": records}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    payloads=st.lists(
        st.one_of(record_data, st.text(max_size=12)),  # text: not even base64
        min_size=1,
        max_size=12,
    )
)
def test_any_kinesis_batch_is_fully_accounted_for(
    handlers: dict[str, ModuleType], wired: HistoryStore, payloads: list[bytes | str]
):
    event = kinesis_event(payloads)
    response = handlers["history_recorder"].lambda_handler(event, FakeLambdaContext("fuzz"))
    assert response["batchItemFailures"] == []  # the store is up: nothing to retry
    sqs = boto3.client("sqs", region_name=REGION)
    url = wired.settings.quarantine_queue_url
    assert url is not None
    quarantined = set()
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            body = json.loads(message["Body"])
            assert body["reason"]
            quarantined.add(body["sequenceNumber"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    for record in event["Records"]:
        seq = record["kinesis"]["sequenceNumber"]
        try:
            update = json.loads(base64.b64decode(record["kinesis"]["data"], validate=True))
        except ValueError:
            assert seq in quarantined
            continue
        if seq in quarantined:
            continue
        # landed: it was a valid update, and its profile's document exists
        landed = ProgressUpdate.model_validate(update)
        assert wired.client.exists(wired.key(landed.profile_id)) == 1


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    profile=ids,
    asset=ids,
    body=st.one_of(
        updates.map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=40),
    ),
)
def test_no_write_request_gets_a_server_error_for_its_content(
    handlers: dict[str, ModuleType], wired: HistoryStore, profile: str, asset: str, body: str
):
    event = {
        "version": "2.0",
        "routeKey": "PUT /profiles/{profileId}/history/{assetId}",
        "rawPath": f"/profiles/{profile}/history/{asset}",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "pathParameters": {"profileId": profile, "assetId": asset},
        "requestContext": {
            "http": {"method": "PUT", "path": f"/profiles/{profile}/history/{asset}"},
            "authorizer": {"jwt": {"claims": {"scope": "history:admin"}, "scopes": None}},
            "requestId": "r",
            "routeKey": "PUT /profiles/{profileId}/history/{assetId}",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }
    response = handlers["history_writer"].lambda_handler(event, FakeLambdaContext("fuzz"))
    assert response["statusCode"] < 500, response
    assert "message" in json.loads(response["body"]) or response["statusCode"] == 200


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    profile=ids,
    body=st.one_of(
        st.fixed_dictionaries(
            {"updates": st.lists(st.one_of(updates, json_values), max_size=6)}
        ).map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=40),
    ),
)
def test_no_batch_request_gets_a_server_error_for_its_content(
    handlers: dict[str, ModuleType], wired: HistoryStore, profile: str, body: str
):
    """Any body POSTed as a batch: a 4xx, or a 200 with one result per update."""
    event = {
        "version": "2.0",
        "routeKey": "POST /profiles/{profileId}/history",
        "rawPath": f"/profiles/{profile}/history",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "pathParameters": {"profileId": profile},
        "requestContext": {
            "http": {"method": "POST", "path": f"/profiles/{profile}/history"},
            "authorizer": {"jwt": {"claims": {"scope": "history:admin"}, "scopes": None}},
            "requestId": "r",
            "routeKey": "POST /profiles/{profileId}/history",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }
    response = handlers["history_writer"].lambda_handler(event, FakeLambdaContext("fuzz"))
    assert response["statusCode"] < 500, response
    reply = json.loads(response["body"])
    if response["statusCode"] == 200:
        sent = json.loads(body)["updates"]
        assert [r["index"] for r in reply["results"]] == list(range(len(sent)))
    else:
        assert "message" in reply


# --- thousands of hostile records in one batch ----------------------------------------

BIG = "9" * 5000
ODD_VALID_IDS = [".a.", "---", ":", "_", "a:b:c", "x.y-z_0", "9" * 128]
BREAKING_IDS = [
    *['a"]', "x)||@.y", "$..*", "$.h[0]", "{p}", "]]", "%s", "a b", "' or 1=1", ""],
    *["a\nb", "x" * 129, "\u0000", "--[[", "ü", "名前", "\u202eevil", "a\u200bb", "🎬", "..."],
]


WRONG_TYPES: list[tuple[str, list[Any]]] = [
    ("position", [[], {}, [1, 2], "ten"]),
    ("eventTime", [[], {}, "yesterday", -1]),
    ("asset", [[], [1, 2], "x", 5]),
    ("assetId", [[], {}, 12, None]),
]


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def hostile_records(rng: random.Random, profiles: list[str]) -> dict[str, list[bytes]]:
    """Record data by class; "valid" ones must land, every other class be quarantined."""
    at = (NOW - timedelta(hours=1)).isoformat()

    def update(**extra: Any) -> dict[str, Any]:
        return {"profileId": rng.choice(profiles), "assetId": f"a{rng.randrange(20)}",
                "position": float(rng.randrange(5000)), "eventTime": at, **extra}  # fmt: skip

    def with_number(field: str, literal: str) -> bytes:
        if field == "season":
            return _raw(json.dumps(update(asset={"show": "s"}))[:-2] + f', "season": {literal}}}}}')
        body = update()
        body.pop(field, None)
        return _raw(json.dumps(body)[:-1] + f', "{field}": {literal}}}')

    numbers = ["position", "eventTime", "season", "duration"]
    return {
        "valid": [
            *(
                _raw(
                    json.dumps(
                        update(
                            eventTime=(NOW - timedelta(seconds=rng.randrange(9**6))).isoformat(),
                            duration=5400.0,
                            deviceId=rng.choice(["tv", "phone"]),
                        )
                    )
                )
                for _ in range(1200)
            ),
            *(_raw(json.dumps({**update(), "profileId": i, "assetId": i})) for i in ODD_VALID_IDS),
            _raw(json.dumps(update(asset={"teams": [f"t{i}" for i in range(16)]}))),
            _raw(json.dumps(update(extra=["y" * 1000] * 800))),  # 800 KB, ignored: lands
        ],
        "arbitrary bytes": [rng.randbytes(rng.randrange(0, 300)) for _ in range(400)],
        "huge JSON": [
            _raw(json.dumps(update(asset={"title": "x" * 600_000}))),
            _raw("[" * 100_000 + "]" * 100_000),
            _raw('{"a":' * 50_000 + "1" + "}" * 50_000),
        ],
        "huge numbers": [
            with_number(
                rng.choice(numbers), rng.choice([BIG, "-" + BIG, "1e400", "-1e400", BIG + ".5"])
            )
            for _ in range(300)
        ],
        "NaN and infinities": [
            with_number(rng.choice(numbers), rng.choice(["NaN", "Infinity", "-Infinity"]))
            for _ in range(200)
        ],
        "breaking ids": [
            _raw(json.dumps({**update(), rng.choice(["profileId", "assetId", "deviceId"]): i}))
            for i in BREAKING_IDS
            for _ in range(10)
        ],
        "10,000 teams": [
            _raw(json.dumps(update(asset={"teams": [f"t{i}" for i in range(10_000)]})))
            for _ in range(3)
        ],
        "wrong types": [
            _raw(json.dumps(update(**{field: rng.choice(values)})))
            for field, values in WRONG_TYPES
            for _ in range(50)
        ],
    }


class KeptQuarantine:
    """The recorder's ``Quarantine`` seam, keeping what it is given. SqsQuarantine itself
    is tested against moto's SQS in test_recorder.py; moto takes ~0.1-0.4 s per
    SendMessageBatch, which would make this batch of 1,300 rejects cost a minute."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def send(self, rejected: Sequence[Rejected]) -> dict[int, str]:
        for r in rejected:
            self.reasons[r.record["kinesis"]["sequenceNumber"]] = r.reason
        return {}


def test_thousands_of_hostile_records_are_quarantined_or_landed_and_touch_no_one_else(
    handlers: dict[str, ModuleType], wired: HistoryStore, make_store: Callable[..., HistoryStore]
):
    """One batch of ~2,500 records of every hostile class (seeded): the processor
    answers, nothing is retried (the store is up), each bad record is quarantined with a
    reason, each valid one lands (the same state as applying the valid ones in one
    clean batch), and a profile no record names keeps its history."""
    rng = random.Random(10)
    profiles = [f"fz-{i}" for i in range(150)]
    sentinel = ProgressUpdate(
        profile_id="fz-sentinel", asset_id="kept", position=1.0, event_time=NOW - timedelta(days=1)
    )
    wired.record_progress(sentinel)
    classes = hostile_records(rng, profiles)
    data = [(name, d) for name, items in classes.items() for d in items]
    rng.shuffle(data)
    event = kinesis_event([d for _, d in data])
    for n, record in enumerate(event["Records"]):  # grouped as producers key them
        record["kinesis"]["partitionKey"] = f"k{n % 40}"

    kept = KeptQuarantine()
    processor = KinesisRecorder(store=lambda: wired, quarantine=lambda _: kept)
    context = FakeLambdaContext("fuzz")
    response = process_partial_response(event, decode_record, processor, context)

    assert response == {"batchItemFailures": []}
    report = processor.report
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    for (name, _), disposition, index in zip(
        data, report.dispositions, range(len(data)), strict=True
    ):
        if name == "valid":
            assert disposition is not Disposition.QUARANTINED, report.reasons.get(index)
        else:
            assert disposition is Disposition.QUARANTINED, (name, disposition)
            assert kept.reasons[seqs[index]] == report.reasons[index], name
            assert report.reasons[index], name
    reference = make_store(key_prefix=f"ref{uuid.uuid4().hex[:8]}:")
    valid = [ProgressUpdate.model_validate_json(d) for name, d in data if name == "valid"]
    reference.record_batch(valid)
    names = {u.profile_id for u in valid}
    for profile in names:
        assert wired.query(profile, HistoryQuery(limit=100)) == reference.query(
            profile, HistoryQuery(limit=100)
        )
    keys = {k.decode() for k in wired.client.scan_iter(match=f"{wired.settings.key_prefix}*")}
    records = {k for k in keys if k.startswith(asset_keys(wired.settings.key_prefix))}
    assert keys - records == {wired.key(p) for p in names | {"fz-sentinel"}}  # nobody else
    # asset records (codec.py) only for what valid updates described
    described = {u.asset_id for u in valid if u.asset is not None}
    assert {k.split(":")[-2] for k in records} <= described
    (item,) = wired.query("fz-sentinel", HistoryQuery()).items
    assert item.position == 1.0
