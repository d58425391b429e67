"""The history recorder: Kinesis progress heartbeats -> the profiles' histories.

Thin on purpose: Powertools' batch processing with ``KinesisRecorder``
(watch_history/recorder.py), which decodes each record, writes the whole batch with
one ``HistoryStore.record_stream`` within the invocation's deadline (from ``context``),
quarantines bad input and reports the records the store could not take as batch item
failures (``ReportBatchItemFailures``)::

    {"batchItemFailures": [{"itemIdentifier": "<sequenceNumber>"}, ...]}
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from watch_history.recorder import KinesisRecorder, decode_record

SERVICE = "history-recorder"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE)  # namespace: POWERTOOLS_METRICS_NAMESPACE
processor = KinesisRecorder(metrics=metrics, logger=logger)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=decode_record, processor=processor, context=context
    )
