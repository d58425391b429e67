"""Re-drive progress records the recorder could not take, through the recorder's own code.

::

    python -m watch_history.replay quarantine --queue-url URL [--max N] [--dry-run]
    python -m watch_history.replay stream-failures --queue-url URL [--max N] [--dry-run]

``quarantine``: after a producer (or recorder) fix, receives messages from the quarantine
queue, rebuilds each Kinesis record from the message (data as received, partition key,
sequence number, shard) and runs them through ``KinesisRecorder``. Records that land (or
are stale: already superseded) have their message deleted; records still invalid stay
in the queue, as do records the store could not take (run again later).

Poison records: with ``--archive s3://BUCKET/PREFIX`` or ``--archive FILE`` the records
still invalid after the re-drive, and messages that are not quarantine messages at all,
are written there (JSON Lines: the message, why, when) and then deleted from the queue;
with ``--dry-run`` they are only counted (``archived`` is what would be). A record refused
because its eventTime was more than ``MAX_FUTURE_SKEW_SECONDS`` after its arrival on the
stream is judged again by that same arrival, so no replay can ever record it: the summary
counts and explains them (``event_time``), and ``--archive`` takes them out of the queue.

``stream-failures``: the event source mapping gives up on a batch after its retries (or
the records' maximum age) and sends only its coordinates to the on-failure destination:
``KinesisBatchInfo`` with ``streamArn``, ``shardId``, ``startSequenceNumber``,
``endSequenceNumber`` and ``batchSize``. This reads those records back from the stream
(``GetShardIterator`` AT_SEQUENCE_NUMBER, ``GetRecords`` until past the end sequence
number; only possible within the stream's retention) and runs them through
``KinesisRecorder``: bad ones go to the quarantine queue (``QUARANTINE_QUEUE_URL``) as in
Lambda. The message is deleted once every record of its range is done.

The store comes from the environment (``REDIS_URL`` etc., see settings.py), as in the
functions. ``--dry-run`` only decodes and validates: nothing is written or deleted. The
summary is one JSON object on stdout (logs go to stderr); the exit code is 0 when every
message was handled (records still invalid included), 1 when some must be run again, 2
when the run could not go on (SQS, Kinesis, S3 or MemoryDB unreachable, no permission, a
bad setting): one line on stderr saying what failed and what to check, no traceback.

Inside the VPC without a shell there, the stack's repair function runs this same code
(``sam remote invoke HistoryRepairFunction``, docs/operations.md).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from watch_history.errors import (
    ConfigurationError,
    InvalidInputError,
    StoreUnavailableError,
)
from watch_history.models import rfc3339_ms
from watch_history.recorder import (
    Disposition,
    KinesisRecorder,
    Quarantine,
    Rejected,
    SqsQuarantine,
    _arrival_ms,
    decode_record,
)
from watch_history.runtime import get_store
from watch_history.store import HistoryStore

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import RecordTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

GET_RECORDS_LIMIT: Final = 1000
MAX_GET_RECORDS_CALLS: Final = 10_000
RECORDS_PER_BATCH: Final = 10_000  # the largest batch the event source mapping sends
_DONE: Final = frozenset({Disposition.APPLIED, Disposition.STALE, Disposition.IGNORED})
EVENT_TIME_EXPLANATION: Final = (
    "refused for an eventTime more than MAX_FUTURE_SKEW_SECONDS after the record's arrival "
    "on the stream: a replay judges it by that same arrival, so it can never be recorded; "
    "archive it (--archive) or fix the device clock and send a new update"
)


# --- Kinesis records as Lambda sees them ------------------------------------------------


def lambda_record(
    *,
    data: bytes,
    partition_key: str,
    sequence_number: str,
    shard_id: str,
    stream_arn: str,
    arrival: datetime | float | None = None,
) -> dict[str, Any]:
    """One record of a Kinesis Lambda event (what the event source mapping delivers)."""
    if isinstance(arrival, datetime):
        arrival = arrival.timestamp()
    parts = stream_arn.split(":")
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "awsRegion": parts[3] if len(parts) > 3 else None,
        "eventSourceARN": stream_arn,
    }


def from_get_records(
    records: Sequence[RecordTypeDef], *, shard_id: str, stream_arn: str
) -> list[dict[str, Any]]:
    """``GetRecords`` records as Lambda event records."""
    return [
        lambda_record(
            data=r["Data"],
            partition_key=r["PartitionKey"],
            sequence_number=r["SequenceNumber"],
            shard_id=shard_id,
            stream_arn=stream_arn,
            arrival=r.get("ApproximateArrivalTimestamp"),
        )
        for r in records
    ]


def read_range(
    kinesis: KinesisClient, *, stream_arn: str, shard_id: str, start: str, end: str
) -> list[dict[str, Any]]:
    """The records of one shard from ``start`` to ``end`` (sequence numbers, inclusive)."""
    last = int(end)
    iterator: str | None = kinesis.get_shard_iterator(
        StreamARN=stream_arn,
        ShardId=shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=start,
    )["ShardIterator"]
    found: list[dict[str, Any]] = []
    for _ in range(MAX_GET_RECORDS_CALLS):
        if iterator is None:
            break  # a closed shard, read to its end
        reply = kinesis.get_records(
            ShardIterator=iterator, Limit=GET_RECORDS_LIMIT, StreamARN=stream_arn
        )
        records = reply["Records"]
        inside = [r for r in records if int(r["SequenceNumber"]) <= last]
        found += from_get_records(inside, shard_id=shard_id, stream_arn=stream_arn)
        if len(inside) < len(records) or (inside and int(inside[-1]["SequenceNumber"]) == last):
            break  # past the end of the range
        if not records and reply.get("MillisBehindLatest", 0) == 0:
            break  # at the tip of the shard: the rest of the range is not there
        iterator = reply.get("NextShardIterator")
    return found


# --- running records through the recorder ----------------------------------------------


class KeepInQueue:
    """The quarantine of a quarantine re-drive: records still invalid stay where they are."""

    def send(self, rejected: Sequence[Rejected]) -> dict[int, str]:
        return {}


@dataclass(slots=True)
class Summary:
    """What a replay run did (printed as JSON)."""

    command: str
    dry_run: bool
    messages: int = 0
    records: int = 0
    applied: int = 0
    stale: int = 0
    ignored: int = 0
    valid: int = 0  # dry run: would be recorded
    invalid: int = 0  # quarantined again (stream-failures) or still invalid (quarantine)
    failed: int = 0  # the store, the quarantine or the stream could not be used: run again
    missing: int = 0  # stream-failures: records of a range no longer in the stream
    unreadable: int = 0  # messages not in the expected format (kept for a person)
    event_time: int = 0  # of ``invalid``: refused for eventTime (EVENT_TIME_EXPLANATION)
    deleted: int = 0
    kept: int = 0
    archived: int = 0  # --archive: written to the archive and deleted (dry run: would be)
    archive: str | None = None
    reasons: list[str] = field(default_factory=list)

    def add_reason(self, reason: str) -> None:
        if len(self.reasons) < 20 and reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def exit_code(self) -> int:
        """0 when every message was handled (still-invalid records included), else 1.
        Unreadable messages count as handled once archived."""
        unhandled = self.unreadable if self.archive is None or self.dry_run else 0
        return 0 if self.failed == 0 and unhandled == 0 else 1


def _run(
    records: list[dict[str, Any]],
    store: HistoryStore,
    quarantine: Quarantine,
    logger: Logger,
    summary: Summary,
) -> list[Disposition]:
    """Records through ``KinesisRecorder`` (as Lambda would); the disposition of each."""
    dispositions: list[Disposition] = []
    processor = KinesisRecorder(store=lambda: store, quarantine=lambda _: quarantine, logger=logger)
    for start in range(0, len(records), RECORDS_PER_BATCH):
        chunk = records[start : start + RECORDS_PER_BATCH]
        process_partial_response({"Records": chunk}, decode_record, processor)
        report = processor.report
        dispositions += report.dispositions
        for reason in report.reasons.values():
            summary.add_reason(reason)
    for d in dispositions:
        summary.records += 1
        if d is Disposition.APPLIED:
            summary.applied += 1
        elif d is Disposition.STALE:
            summary.stale += 1
        elif d is Disposition.IGNORED:
            summary.ignored += 1
        elif d is Disposition.QUARANTINED:
            summary.invalid += 1
        else:
            summary.failed += 1
    return dispositions


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a record can never be recorded (``kind``: ``invalid`` or ``event_time``)."""

    kind: str
    reason: str


def verdict(record: Mapping[str, Any], store: HistoryStore) -> Verdict | None:
    """None when the recorder would accept the record, else why not: the recorder's own
    checks (decoding, the update's rules, eventTime against the record's arrival)."""
    try:
        update = decode_record(KinesisStreamRecord(dict(record)))
        store.check_update(update)
    except InvalidInputError as exc:
        return Verdict("invalid", str(exc))
    try:
        store.check_event_time(update, store.latest_event_ms(_arrival_ms(record)))
    except InvalidInputError as exc:
        return Verdict("event_time", f"{exc}: {EVENT_TIME_EXPLANATION}")
    return None


def _count_invalid(found: Verdict, summary: Summary) -> None:
    summary.invalid += 1
    if found.kind == "event_time":
        summary.event_time += 1
        summary.add_reason(EVENT_TIME_EXPLANATION)
    else:
        summary.add_reason(found.reason)


def _check(
    records: list[dict[str, Any]], store: HistoryStore, summary: Summary
) -> list[Verdict | None]:
    """Dry run: would each record be accepted? (decoding and validation only)."""
    verdicts = []
    for record in records:
        summary.records += 1
        found = verdict(record, store)
        if found is None:
            summary.valid += 1
        else:
            _count_invalid(found, summary)
        verdicts.append(found)
    return verdicts


# --- poison records: archived, then dropped from the queue ------------------------------


class ArchiveError(Exception):
    """The archive could not be written: nothing was dropped from the queue."""


class Archive(Protocol):
    """Where poison records go before their message is deleted (JSON Lines)."""

    @property
    def where(self) -> str:
        """The archive as the summary names it."""
        ...

    def put(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Store the entries durably, or raise ``ArchiveError``."""
        ...


def _jsonl(entries: Sequence[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()


@dataclass(slots=True)
class FileArchive:
    """A local JSON Lines file, appended to."""

    path: Path

    @property
    def where(self) -> str:
        return str(self.path)

    def put(self, entries: Sequence[Mapping[str, Any]]) -> None:
        try:
            with self.path.open("ab") as out:
                out.write(_jsonl(entries))
        except OSError as exc:
            raise ArchiveError(f"cannot write {self.path}: {exc}") from None


@dataclass(slots=True)
class S3Archive:
    """One S3 object per batch of poison records: ``PREFIX<UTC time>-<random>.jsonl``."""

    client: S3Client
    bucket: str
    prefix: str

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put(self, entries: Sequence[Mapping[str, Any]]) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        key = f"{self.prefix}{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=_jsonl(entries),
                ContentType="application/x-ndjson",
            )
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveError(f"cannot write s3://{self.bucket}/{key}: {exc}") from None


def open_archive(destination: str, client: Callable[[str], Any]) -> Archive:
    """``s3://BUCKET/PREFIX`` or a file path."""
    if destination.startswith("s3://"):
        bucket, _, prefix = destination[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigurationError(f"--archive {destination}: no bucket")
        return S3Archive(client("s3"), bucket, prefix)
    return FileArchive(Path(destination))


def _poison_entry(message: MessageTypeDef, kind: str, reason: str) -> dict[str, Any]:
    body: Any = message["Body"]
    with contextlib.suppress(ValueError):  # else kept as the text it is
        body = json.loads(body)
    return {
        "archivedAt": rfc3339_ms(datetime.now(UTC)),
        "messageId": message["MessageId"],
        "kind": kind,
        "reason": reason,
        "message": body,
    }


# --- SQS ------------------------------------------------------------------------------


def _receive(
    sqs: SQSClient, queue_url: str, *, limit: int, wait_seconds: int, visibility_timeout: int
) -> Iterator[list[MessageTypeDef]]:
    """Batches of up to 10 messages, ``limit`` in all, until the queue looks empty."""
    received = 0
    while received < limit:
        reply = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, limit - received),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
        )
        messages = reply.get("Messages", [])
        if not messages:
            return
        received += len(messages)
        yield messages


def _delete(sqs: SQSClient, queue_url: str, handles: Sequence[str]) -> int:
    """Delete messages (10 per call); how many were deleted."""
    deleted = 0
    for start in range(0, len(handles), 10):
        batch = handles[start : start + 10]
        reply = sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(batch)],
        )
        deleted += len(reply.get("Successful", []))
    return deleted


def _release(sqs: SQSClient, queue_url: str, handles: Sequence[str]) -> None:
    """Make kept messages visible again now (not when this run's visibility timeout ends)."""
    for start in range(0, len(handles), 10):
        batch = handles[start : start + 10]
        sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(batch)
            ],
        )


def _quarantined_record(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Kinesis event record a quarantine message was made from (recorder.py)."""
    if body.get("dataTruncated"):
        raise ValueError("the message holds only the start of the data (record too large)")
    data, sequence = body.get("data"), body.get("sequenceNumber")
    if not isinstance(data, str) or not isinstance(sequence, str):
        raise ValueError("not a quarantine message: data and sequenceNumber are required")
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": body.get("partitionKey"),
            "sequenceNumber": sequence,
            "data": data,
            "approximateArrivalTimestamp": body.get("approximateArrivalTimestamp"),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": body.get("eventID") or f"{body.get('shardId')}:{sequence}",
        "eventName": "aws:kinesis:record",
        "eventSourceARN": body.get("eventSourceARN"),
    }


def _redrive(
    sqs: SQSClient,
    queue_url: str,
    summary: Summary,
    batch: Callable[[list[MessageTypeDef]], list[str]],
    *,
    limit: int,
    wait_seconds: int,
    visibility_timeout: int,
) -> Summary:
    """The loop both re-drives run: ``batch`` handles one batch of received messages
    (deleting those that are done) and returns the receipt handles to keep; when the
    queue looks empty (or ``limit`` is reached) the kept ones are made visible again."""
    kept: list[str] = []
    for messages in _receive(
        sqs,
        queue_url,
        limit=limit,
        wait_seconds=wait_seconds,
        visibility_timeout=visibility_timeout,
    ):
        summary.messages += len(messages)
        kept += batch(messages)
    summary.kept = len(kept)
    _release(sqs, queue_url, kept)
    return summary


# --- the two re-drives ----------------------------------------------------------------


def replay_quarantine(
    sqs: SQSClient,
    queue_url: str,
    store: HistoryStore,
    *,
    max_messages: int = 1000,
    dry_run: bool = False,
    archive: Archive | None = None,
    wait_seconds: int = 2,
    visibility_timeout: int = 300,
    logger: Logger | None = None,
) -> Summary:
    """Re-drive quarantined records; delete the messages of those that are now done.
    With ``archive``, what can never be recorded is archived and its message deleted."""
    log = logger or _cli_logger()
    summary = Summary("quarantine", dry_run, archive=archive.where if archive else None)

    def drop(poison: list[tuple[MessageTypeDef, dict[str, Any]]]) -> list[str]:
        """Archive then delete; the handles to keep (the archive failed: nothing lost)."""
        handles = [m["ReceiptHandle"] for m, _ in poison]
        if not poison or archive is None:
            return handles
        if dry_run:
            summary.archived += len(poison)
            return handles
        try:
            archive.put([entry for _, entry in poison])
        except ArchiveError as exc:
            summary.add_reason(str(exc))
            summary.failed += len(poison)
            return handles
        summary.archived += _delete(sqs, queue_url, handles)
        return []

    def redrive(messages: list[MessageTypeDef]) -> list[str]:
        kept: list[str] = []
        poison: list[tuple[MessageTypeDef, dict[str, Any]]] = []
        records: list[dict[str, Any]] = []
        readable: list[MessageTypeDef] = []
        for message in messages:
            try:
                records.append(_quarantined_record(json.loads(message["Body"])))
                readable.append(message)
            except (ValueError, TypeError, AttributeError) as exc:
                reason = f"unreadable message {message['MessageId']}: {exc}"
                summary.add_reason(reason)
                summary.unreadable += 1
                poison.append((message, _poison_entry(message, "unreadable", reason)))
        if dry_run:
            for message, found in zip(readable, _check(records, store, summary), strict=True):
                if found is None:
                    kept.append(message["ReceiptHandle"])
                else:
                    poison.append((message, _poison_entry(message, found.kind, found.reason)))
            return kept + drop(poison)
        dispositions = _run(records, store, KeepInQueue(), log, summary)
        done: list[str] = []
        for message, record, disposition in zip(readable, records, dispositions, strict=True):
            if disposition in _DONE:
                done.append(message["ReceiptHandle"])
            elif disposition is Disposition.QUARANTINED:
                found = verdict(record, store) or Verdict("invalid", "refused by the recorder")
                if found.kind == "event_time":
                    summary.event_time += 1
                    summary.add_reason(EVENT_TIME_EXPLANATION)
                poison.append((message, _poison_entry(message, found.kind, found.reason)))
            else:
                kept.append(message["ReceiptHandle"])
        summary.deleted += _delete(sqs, queue_url, done)
        return kept + drop(poison)

    return _redrive(
        sqs,
        queue_url,
        summary,
        redrive,
        limit=max_messages,
        wait_seconds=wait_seconds,
        visibility_timeout=visibility_timeout,
    )


def replay_stream_failures(
    sqs: SQSClient,
    kinesis: KinesisClient,
    queue_url: str,
    store: HistoryStore,
    quarantine: Quarantine,
    *,
    max_messages: int = 100,
    dry_run: bool = False,
    wait_seconds: int = 2,
    visibility_timeout: int = 900,
    logger: Logger | None = None,
) -> Summary:
    """Read the ranges of the on-failure messages back from the stream and record them."""
    log = logger or _cli_logger()
    summary = Summary("stream-failures", dry_run)

    def redrive(messages: list[MessageTypeDef]) -> list[str]:
        kept: list[str] = []
        for message in messages:
            handle = message["ReceiptHandle"]
            try:
                info = json.loads(message["Body"])["KinesisBatchInfo"]
                records = read_range(
                    kinesis,
                    stream_arn=info["streamArn"],
                    shard_id=info["shardId"],
                    start=info["startSequenceNumber"],
                    end=info["endSequenceNumber"],
                )
            except (ValueError, TypeError, KeyError) as exc:
                summary.add_reason(f"unreadable message {message['MessageId']}: {exc!r}")
                summary.unreadable += 1
                kept.append(handle)
                continue
            except (BotoCoreError, ClientError) as exc:
                summary.add_reason(f"cannot read the range of {message['MessageId']}: {exc}")
                summary.failed += 1
                kept.append(handle)
                continue
            expected = int(info.get("batchSize") or len(records))
            summary.missing += max(0, expected - len(records))
            if not records:
                summary.add_reason(
                    f"{message['MessageId']}: no record of the range is in the stream any more"
                )
                summary.failed += 1
                kept.append(handle)
                continue
            if dry_run:
                _check(records, store, summary)
                kept.append(handle)
                continue
            dispositions = _run(records, store, quarantine, log, summary)
            if all(d is not Disposition.FAILED for d in dispositions):
                summary.deleted += _delete(sqs, queue_url, [handle])
            else:
                kept.append(handle)
        return kept

    return _redrive(
        sqs,
        queue_url,
        summary,
        redrive,
        limit=max_messages,
        wait_seconds=wait_seconds,
        visibility_timeout=visibility_timeout,
    )


# --- CLI ------------------------------------------------------------------------------


def _cli_logger() -> Logger:
    return Logger(service="history-replay", logger_handler=logging.StreamHandler(sys.stderr))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m watch_history.replay",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext, default_max, default_vt in (
        ("quarantine", "re-drive records from the quarantine queue", 1000, 300),
        ("stream-failures", "re-read batches Lambda gave up on from the stream", 100, 900),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--queue-url", required=True, help="the queue to read messages from")
        p.add_argument("--max", type=int, default=default_max, help="messages to take at most")
        p.add_argument("--dry-run", action="store_true", help="validate only: change nothing")
        p.add_argument(
            "--wait-seconds", type=int, default=2, help="SQS long polling per receive (0-20)"
        )
        p.add_argument(
            "--visibility-timeout",
            type=int,
            default=default_vt,
            help="seconds a received message stays hidden while this run handles it",
        )
        if name == "quarantine":
            p.add_argument(
                "--archive",
                metavar="s3://BUCKET/PREFIX|FILE",
                help="archive what can never be recorded there (JSON Lines), then delete it",
            )
        if name == "stream-failures":
            p.add_argument(
                "--quarantine-queue-url",
                help="where invalid records go (default: QUARANTINE_QUEUE_URL)",
            )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    client: Callable[[str], Any] | None = None,
) -> int:
    """CLI entry point; the exit code. ``client(service)`` makes boto3 clients (tests).

    Failures an operator can fix (no route to AWS or MemoryDB, no permission, a bad
    setting, an archive that cannot be written) end in one line on stderr and exit 2."""
    args = _parser().parse_args(argv)
    try:
        summary = _replay(args, client)
    except (BotoCoreError, ClientError) as exc:
        return _fail(
            f"an AWS call failed: {exc}. Check the queue URL, AWS_REGION, the credentials "
            "and the role's permissions (SQS receive/delete, Kinesis read, S3 put)."
        )
    except StoreUnavailableError as exc:
        return _fail(
            f"MemoryDB did not answer: {exc}. It is reachable only inside its VPC: run "
            "the repair function (docs/operations.md) or run this there."
        )
    except (ConfigurationError, ArchiveError) as exc:
        return _fail(str(exc))
    sys.stdout.write(json.dumps(asdict(summary)) + "\n")
    return summary.exit_code


def _fail(message: str) -> int:
    """One line on stderr (pydantic's and botocore's messages span several), exit 2."""
    sys.stderr.write(f"replay: {' '.join(message.split())}\n")
    return 2


def _replay(args: argparse.Namespace, client: Callable[[str], Any] | None) -> Summary:
    store = get_store()
    settings = store.settings
    make = client or _boto3_client(settings.aws_region)
    sqs: SQSClient = make("sqs")
    if args.command == "quarantine":
        return replay_quarantine(
            sqs,
            args.queue_url,
            store,
            max_messages=args.max,
            dry_run=args.dry_run,
            archive=open_archive(args.archive, make) if args.archive else None,
            wait_seconds=args.wait_seconds,
            visibility_timeout=args.visibility_timeout,
        )
    kinesis: KinesisClient = make("kinesis")
    quarantine_url = args.quarantine_queue_url or settings.quarantine_queue_url
    return replay_stream_failures(
        sqs,
        kinesis,
        args.queue_url,
        store,
        SqsQuarantine(quarantine_url, lambda: sqs),
        max_messages=args.max,
        dry_run=args.dry_run,
        wait_seconds=args.wait_seconds,
        visibility_timeout=args.visibility_timeout,
    )


def _boto3_client(region: str) -> Callable[[str], Any]:
    config = Config(retries={"mode": "standard", "max_attempts": 5})

    def make(service: str) -> Any:
        return boto3.client(service, region_name=region, config=config)  # type: ignore[call-overload]

    return make


if __name__ == "__main__":
    sys.exit(main())
