"""Fuzzing the two doors that take outside input: Kinesis records and HTTP bodies.

Whatever arrives, the handlers answer (no exception escapes), every record is accounted
for (landed, quarantined with a reason, or reported for retry), nothing invalid is
stored, and no HTTP request gets a 5xx for its content.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from devtools.lambda_context import FakeLambdaContext, load_module
from watch_history import runtime
from watch_history.models import ProgressUpdate
from watch_history.store import HistoryStore

REGION = "us-east-1"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def handlers() -> Iterator[dict[str, ModuleType]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POWERTOOLS_SERVICE_NAME", "fuzz")
        mp.setenv("POWERTOOLS_LOG_LEVEL", "CRITICAL")
        yield {name: load_module(name) for name in ("history_recorder", "history_writer")}


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
                    "approximateArrivalTimestamp": 1.0,
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
