"""The history recorder's batch logic: Kinesis records in, one batched store write out.

``functions/history_recorder/app.py`` is only decorators around::

    process_partial_response(event, record_handler=decode_record, processor=KinesisRecorder())

How a batch goes (Powertools' ``BatchProcessor`` with its partial-response contract):

1. Per record, ``decode_record`` (the record handler) turns the base64 JSON into a
   ``ProgressUpdate`` or raises ``InvalidInputError``. Nothing touches the server and
   nothing is logged per record: this loop runs 10,000 times per invocation.
2. The valid updates go to ONE ``HistoryStore.record_stream`` call: collapsed per
   (profile, asset), one script call per profile, pipelined per chunk of profiles;
   records are decoded profile group by profile group (by partition key) so that the
   server applies one chunk while the next is decoded.
3. Each record gets its disposition: applied / stale / ignored (done), quarantined
   (bad input: sent to the quarantine queue, never retried), or failed (the store was
   unavailable, the invocation's deadline came first, or the quarantine send failed:
   reported by sequence number as a batch item failure, so Lambda retries it; writes
   are idempotent). Nothing the store raises leaves the handler.

The deadline is the Lambda context's remaining time less ``DEADLINE_MARGIN_SECONDS``:
``record_stream`` starts no round trip that could end after it and sends nothing more
to a node that timed out; the margin is kept for the quarantine and the response.

The quarantine message (JSON) carries the record's data exactly as received (base64),
its shard, sequence number, partition key and the reason; ``python -m
watch_history.replay quarantine`` re-drives them through this same code.
"""

from __future__ import annotations

import binascii
import gc
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Protocol

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from watch_history.errors import InvalidInputError, StoreUnavailableError
from watch_history.models import ProgressUpdate, rfc3339_ms
from watch_history.runtime import get_store
from watch_history.settings import Settings, get_settings
from watch_history.store import HistoryStore, RecordOutcome

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

tracer = Tracer()

SQS_MAX_MESSAGES: Final = 10
SQS_MAX_BYTES: Final = 262_144  # per message and per SendMessageBatch call
_MAX_REASON_ERRORS: Final = 5
_LOG_SAMPLES: Final = 5


class Disposition(StrEnum):
    """What became of one record of a batch."""

    APPLIED = "applied"  # newer than what was stored: the item reflects it
    STALE = "stale"  # not newer (duplicate, replay, late): nothing to do
    IGNORED = "ignored"  # at or before a removal or clear of the asset
    QUARANTINED = "quarantined"  # bad input: on the quarantine queue, not retried
    FAILED = "failed"  # reported as a batch item failure: Lambda retries it


_FROM_OUTCOME: Final = {
    RecordOutcome.APPLIED: Disposition.APPLIED,
    RecordOutcome.STALE: Disposition.STALE,
    RecordOutcome.IGNORED: Disposition.IGNORED,
}

_METRIC_NAMES: Final = {
    Disposition.APPLIED: "RecordsApplied",
    Disposition.STALE: "RecordsStale",
    Disposition.IGNORED: "RecordsIgnored",
    Disposition.QUARANTINED: "RecordsQuarantined",
    Disposition.FAILED: "RecordsFailed",
}


# --- per record ---------------------------------------------------------------------


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if errors and errors[0]["type"] == "json_invalid":
        return f"data is not a JSON document: {errors[0]['msg']}"
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}"
        for e in errors[:_MAX_REASON_ERRORS]
    ]
    more = len(errors) - _MAX_REASON_ERRORS
    suffix = f" (and {more} more)" if more > 0 else ""
    return "not a valid progress update: " + "; ".join(parts) + suffix


def decode_record(record: KinesisStreamRecord) -> ProgressUpdate:
    """The record handler: one Kinesis record's data to a ``ProgressUpdate``.

    Raises InvalidInputError (not base64, not JSON, fails the schema). Unknown fields
    are ignored. Kept cheap on purpose: no logging, no server, one pydantic parse.
    """
    data = record["kinesis"]["data"]
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)  # base64.b64decode, minus a layer
    except (binascii.Error, ValueError, TypeError):
        raise InvalidInputError("data is not valid base64") from None
    try:
        return ProgressUpdate.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInputError(_describe(exc)) from None


# --- quarantine ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that can never succeed as sent, and why."""

    record: Mapping[str, Any]
    """The Kinesis record as the event carried it."""
    reason: str


class Quarantine(Protocol):
    """Where rejected records go."""

    def send(self, rejected: Sequence[Rejected]) -> dict[int, str]:
        """Quarantine the records; those that could not be, by index: why."""
        ...


def shard_of(record: Mapping[str, Any]) -> str | None:
    """``shardId-...`` of a Kinesis event record (the part of eventID before ':')."""
    event_id = record.get("eventID")
    if isinstance(event_id, str) and ":" in event_id:
        return event_id.split(":", 1)[0]
    return None


def quarantine_message(rejected: Rejected, *, now: datetime | None = None) -> str:
    """The quarantine message body: JSON, with the data as received (base64).

    A message over SQS's size limit (a record of up to 1 MiB is legal on the stream)
    keeps the start of the data, with ``dataTruncated`` and ``dataLength``; the whole
    record can still be read back from the stream by shard and sequence number.
    """
    record = rejected.record
    kinesis = record.get("kinesis") or {}
    data = kinesis.get("data")
    message: dict[str, Any] = {
        "reason": rejected.reason,
        "data": data,
        "partitionKey": kinesis.get("partitionKey"),
        "sequenceNumber": kinesis.get("sequenceNumber"),
        "shardId": shard_of(record),
        "eventID": record.get("eventID"),
        "eventSourceARN": record.get("eventSourceARN"),
        "approximateArrivalTimestamp": kinesis.get("approximateArrivalTimestamp"),
        "quarantinedAt": rfc3339_ms(now or datetime.now(UTC)),
    }
    body = json.dumps(message, separators=(",", ":"))
    size = len(body.encode())
    if size > SQS_MAX_BYTES and isinstance(data, str):
        keep = max(0, len(data) - (size - SQS_MAX_BYTES) - 256)
        message.update(data=data[:keep], dataTruncated=True, dataLength=len(data))
        body = json.dumps(message, separators=(",", ":"))
    return body


def _sqs_batches(bodies: Sequence[str]) -> list[list[int]]:
    """Indices of ``bodies`` grouped into SendMessageBatch calls (10 and 256 KiB each)."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, body in enumerate(bodies):
        length = len(body.encode())
        if current and (len(current) == SQS_MAX_MESSAGES or size + length > SQS_MAX_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(index)
        size += length
    if current:
        batches.append(current)
    return batches


_sqs_clients: dict[str, SQSClient] = {}


def sqs_client(region: str) -> SQSClient:
    """The container's SQS client for ``region`` (created once: clients are costly)."""
    client = _sqs_clients.get(region)
    if client is None:
        config = Config(
            connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
        )
        client = _sqs_clients[region] = boto3.client("sqs", region_name=region, config=config)
    return client


class SqsQuarantine:
    """The quarantine SQS queue (``QUARANTINE_QUEUE_URL``): SendMessageBatch, 10 per call."""

    def __init__(self, queue_url: str | None, client: Callable[[], SQSClient]) -> None:
        self.queue_url = queue_url
        self._client = client

    def send(self, rejected: Sequence[Rejected]) -> dict[int, str]:
        if not rejected:
            return {}
        if not self.queue_url:
            return dict.fromkeys(range(len(rejected)), "QUARANTINE_QUEUE_URL is not set")
        now = datetime.now(UTC)
        bodies = [quarantine_message(r, now=now) for r in rejected]
        not_sent: dict[int, str] = {}
        for batch in _sqs_batches(bodies):
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "MessageBody": bodies[i]} for i in batch
            ]
            try:
                reply = self._client().send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                not_sent.update(dict.fromkeys(batch, f"quarantine send failed: {exc}"))
                continue
            for failed in reply.get("Failed", []):
                not_sent[int(failed["Id"])] = (
                    f"quarantine send failed: {failed.get('Code')}: {failed.get('Message', '')}"
                )
        return not_sent


def sqs_quarantine(settings: Settings) -> Quarantine:
    """The quarantine queue of ``settings`` (QUARANTINE_QUEUE_URL, AWS_REGION)."""
    return SqsQuarantine(settings.quarantine_queue_url, lambda: sqs_client(settings.aws_region))


# --- the batch ----------------------------------------------------------------------


@dataclass(slots=True)
class BatchReport:
    """What became of each record of the last batch (by its index in the batch)."""

    dispositions: list[Disposition] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    """Why, for quarantined and failed records."""
    round_trips: int = 0
    latency_ms: float = 0.0

    def count(self, disposition: Disposition) -> int:
        return self.dispositions.count(disposition)

    def indices(self, disposition: Disposition) -> list[int]:
        return [i for i, d in enumerate(self.dispositions) if d is disposition]

    def summary(self) -> dict[str, int]:
        return {d.value: self.count(d) for d in Disposition}


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch is decoded and written.

    A batch creates tens of thousands of short-lived objects (models, dicts) that
    reference counting frees; the cyclic collector would scan them again and again as
    they pile up, which measured as half the decoding time of a 10,000-record batch.
    Nothing here makes cycles that must be collected mid-batch; it runs again after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class KinesisRecorder(BatchProcessor):
    """Powertools' Kinesis ``BatchProcessor``, writing the whole batch at once.

    ``_process_record`` (per record) only decodes and validates; ``process`` feeds the
    decoded records, grouped by partition key, to one ``record_stream`` call (the
    server applies a part while the next is decoded), quarantines the bad records,
    and marks each record through ``success_handler``/``failure_handler``, so
    ``response()`` is the usual ``{"batchItemFailures": [...]}``. ``report`` tells
    what became of every record (the replay tool reads it).
    """

    def __init__(
        self,
        *,
        store: Callable[[], HistoryStore] = get_store,
        quarantine: Callable[[Settings], Quarantine] = sqs_quarantine,
        settings: Callable[[], Settings] = get_settings,
        metrics: Metrics | None = None,
        logger: Logger | None = None,
    ) -> None:
        """``store``: the store (its settings are used); ``settings``: only when the store
        cannot be created (a cluster that does not answer at cold start)."""
        # A batch whose records all failed is still a partial response: Lambda retries
        # from the first failed sequence number either way, and the counts get logged.
        super().__init__(EventType.KinesisDataStreams, raise_on_entire_batch_failure=False)
        self._store = store
        self._quarantine = quarantine
        self._settings = settings
        self._metrics = metrics
        self._log = logger or Logger(service="watch-history")
        self.report = BatchReport()
        self._rejected: dict[int, str] = {}
        self._errors: dict[int, Exception] = {}
        self._current_store: HistoryStore | None = None

    def _prepare(self) -> None:
        super()._prepare()
        self.report = BatchReport()
        self._rejected = {}
        self._errors = {}

    def _process_record(self, record: dict[str, Any]) -> ProgressUpdate:  # type: ignore[override]
        """Decode and validate one record (the record handler). No server, no logs."""
        update: ProgressUpdate = self.handler(record=KinesisStreamRecord(record))
        return update

    def _decoded_parts(
        self, store: HistoryStore | None, deadline: float | None
    ) -> Iterator[list[tuple[int, ProgressUpdate]]]:
        """The batch's valid updates as (record index, update), decoded part by part.

        Records are grouped by partition key (the producers' key is the profileId), so
        each part holds every record of its profiles: ``record_stream`` sends a part to
        the server while the next one is decoded here. Bad records are staged in
        ``_rejected`` (quarantine) and ``_errors`` (retry) on the way; an eventTime later
        than the record's arrival on the stream plus ``MAX_FUTURE_SKEW_SECONDS`` is bad
        input (checked only with a ``store``: without one every valid record is retried
        anyway). Past ``deadline`` nothing more is decoded (those records are retried).
        """
        by_key: dict[Any, list[int]] = {}
        for index, record in enumerate(self.records):
            by_key.setdefault((record.get("kinesis") or {}).get("partitionKey"), []).append(index)
        keys = list(by_key.values())
        profiles_per_part = store.settings.pipeline_profiles if store else len(keys) or 1
        for start in range(0, len(keys), profiles_per_part):
            if deadline is not None and time.monotonic() >= deadline:
                return
            part: list[tuple[int, ProgressUpdate]] = []
            for indices in keys[start : start + profiles_per_part]:
                for index in indices:
                    record = self.records[index]
                    try:
                        update = self._process_record(record)
                        if store is not None:
                            latest = store.latest_event_ms(_arrival_ms(record))
                            store.check_event_time(update, latest)
                    except InvalidInputError as exc:
                        self._rejected[index] = str(exc)
                    except Exception as exc:  # a bug on one record: retry it, keep going
                        self._errors[index] = exc
                    else:
                        part.append((index, update))
            yield part

    def process(self) -> list[tuple[Any, ...]]:
        with cyclic_gc_paused():
            return self._process_batch()

    def _deadline(self) -> float | None:
        """``time.monotonic()`` by which the batch must be written and quarantined: the
        invocation's timeout less ``DEADLINE_MARGIN_SECONDS`` (None without a context)."""
        context = getattr(self, "lambda_context", None)
        if context is None:
            return None
        try:
            remaining_ms = float(context.get_remaining_time_in_millis())
        except (AttributeError, TypeError, ValueError):
            return None
        settings = self._settings_of()
        return time.monotonic() + remaining_ms / 1000 - settings.deadline_margin_seconds

    def _settings_of(self) -> Settings:
        store = self._current_store
        return store.settings if store is not None else self._settings()

    def _process_batch(self) -> list[tuple[Any, ...]]:
        started = time.perf_counter()
        count = len(self.records)
        dispositions: list[Disposition | None] = [None] * count
        reasons: dict[int, str] = {}
        try:
            store: HistoryStore | None = self._store()
        except StoreUnavailableError as exc:  # the cluster did not answer at cold start
            store = None
            unavailable = f"{type(exc).__name__}: {exc}"
        self._current_store = store
        deadline = self._deadline()
        rejected = self._rejected
        if store is not None:
            self._write(store, deadline, dispositions, reasons, rejected)
        else:
            for part in self._decoded_parts(None, deadline):
                for index, _ in part:
                    dispositions[index] = Disposition.FAILED
                    reasons[index] = unavailable
        if rejected:
            if deadline is not None and time.monotonic() >= deadline:
                for index, reason in rejected.items():
                    dispositions[index] = Disposition.FAILED
                    reasons[index] = f"{reason} (not quarantined: the deadline is near)"
            else:
                quarantine = self._quarantine(self._settings_of())
                self._send_to_quarantine(quarantine, rejected, dispositions, reasons)
        for index, error in self._errors.items():
            dispositions[index] = Disposition.FAILED
            reasons[index] = f"unexpected {type(error).__name__}: {error}"
            self._log.exception("record handler failed", exc_info=error)
        for index, disposition in enumerate(dispositions):
            if disposition is None:  # not decoded or not sent before the deadline
                dispositions[index] = Disposition.FAILED
                reasons.setdefault(index, "not processed: the invocation's deadline is near")

        entries: list[tuple[Any, ...]] = []
        for index, (record, disposition) in enumerate(zip(self.records, dispositions, strict=True)):
            data = KinesisStreamRecord(record)
            if disposition is Disposition.FAILED:
                error = _RecordFailed(reasons[index])
                entries.append(self.failure_handler(data, (_RecordFailed, error, None)))
            else:
                entries.append(self.success_handler(data, disposition))
        self.report.dispositions = [d or Disposition.FAILED for d in dispositions]
        self.report.reasons = reasons
        self.report.latency_ms = (time.perf_counter() - started) * 1000
        self._publish()
        return entries

    @tracer.capture_method(capture_response=False)
    def _write(
        self,
        store: HistoryStore,
        deadline: float | None,
        dispositions: list[Disposition | None],
        reasons: dict[int, str],
        rejected: dict[int, str],
    ) -> None:
        """Decode and write the batch, overlapped; each record's outcome or error."""
        try:
            result = store.record_stream(self._decoded_parts(store, deadline), deadline=deadline)
        except Exception as exc:  # record_stream does not raise; if it ever does: retry all
            self._log.exception("recording the batch failed")
            for index in range(len(self.records)):
                if index not in rejected and index not in self._errors:
                    dispositions[index] = Disposition.FAILED
                    reasons[index] = f"unexpected {type(exc).__name__}: {exc}"
            return
        self.report.round_trips = result.round_trips
        for index, outcome in result.outcomes.items():
            dispositions[index] = _FROM_OUTCOME[outcome]
        for index, error in result.failures.items():
            if isinstance(error, InvalidInputError):  # bad id, eventTime too far ahead
                rejected[index] = str(error)
            else:
                dispositions[index] = Disposition.FAILED
                reasons[index] = f"{type(error).__name__}: {error}"

    @tracer.capture_method(capture_response=False)
    def _send_to_quarantine(
        self,
        quarantine: Quarantine,
        rejected: dict[int, str],
        dispositions: list[Disposition | None],
        reasons: dict[int, str],
    ) -> None:
        order = sorted(rejected)
        not_sent = quarantine.send([Rejected(self.records[i], rejected[i]) for i in order])
        for position, index in enumerate(order):
            if position in not_sent:
                dispositions[index] = Disposition.FAILED
                reasons[index] = f"{rejected[index]} ({not_sent[position]})"
            else:
                dispositions[index] = Disposition.QUARANTINED
                reasons[index] = rejected[index]

    def _publish(self) -> None:
        report = self.report
        counts = report.summary()
        metrics = self._metrics
        if metrics is not None:
            count = MetricUnit.Count
            metrics.add_metric(name="RecordsIn", unit=count, value=len(self.records))
            for disposition, name in _METRIC_NAMES.items():
                metrics.add_metric(name=name, unit=count, value=counts[disposition])
            metrics.add_metric(name="ServerRoundTrips", unit=count, value=report.round_trips)
            metrics.add_metric(
                name="BatchLatency", unit=MetricUnit.Milliseconds, value=report.latency_ms
            )
        first = self.records[0] if self.records else {}
        last = self.records[-1] if self.records else {}
        context = {
            "records": len(self.records),
            **counts,
            "roundTrips": report.round_trips,
            "latencyMs": round(report.latency_ms, 2),
            "shardId": shard_of(first),
            "firstSequenceNumber": (first.get("kinesis") or {}).get("sequenceNumber"),
            "lastSequenceNumber": (last.get("kinesis") or {}).get("sequenceNumber"),
        }
        self._log.info("batch recorded", extra=context)
        if report.reasons:
            samples = [
                {
                    "sequenceNumber": (self.records[i].get("kinesis") or {}).get("sequenceNumber"),
                    "disposition": report.dispositions[i].value,
                    "reason": reason,
                }
                for i, reason in list(report.reasons.items())[:_LOG_SAMPLES]
            ]
            level = self._log.error if counts[Disposition.FAILED] else self._log.warning
            level("records quarantined or failed", extra={**context, "samples": samples})


def _arrival_ms(record: Mapping[str, Any]) -> int | None:
    """When Kinesis received the record (approximateArrivalTimestamp, epoch seconds), ms."""
    arrival = (record.get("kinesis") or {}).get("approximateArrivalTimestamp")
    if isinstance(arrival, int | float) and not isinstance(arrival, bool) and arrival > 0:
        try:
            return int(arrival * 1000)
        except (OverflowError, ValueError):  # inf, nan
            return None
    return None


class _RecordFailed(Exception):
    """Why a record is reported as a batch item failure (for Powertools' bookkeeping)."""
