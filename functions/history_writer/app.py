"""The write API: users edit their watch history (API Gateway HTTP API, payload 2.0).

Thin on purpose: parse (Powertools validates the path ids with ``Id`` and the body with
``ProgressBody``) -> authorize -> one ``HistoryStore`` call -> shape (``to_api()``).
The HTTP plumbing both APIs share (error bodies, exception -> status, the caller
check) is ``watch_history.http_api``; the body's own errors (413, 415, 400) are here.

- ``PUT /profiles/{profileId}/history/{assetId}``: record progress ("mark as watched"
  is ``eventType: complete`` or ``completedAt``, no position needed). 200 with the
  stored item and ``X-Update-Outcome: applied``; an update older than what is stored
  changes nothing and gets 200 with the stored item and ``X-Update-Outcome: stale``;
  409 (``X-Update-Outcome: ignored``) when the asset was removed (or the history
  cleared) after the update's ``eventTime``.
- ``POST /profiles/{profileId}/history``: up to 100 updates (offline catch-up) in one
  store call; 200 with an outcome per update (applied, stale, ignored, invalid with a
  reason: invalid ones do not stop the others).
- ``DELETE /profiles/{profileId}/history/{assetId}``: 204, idempotent; later-arriving
  older updates do not bring the asset back.
- ``POST /profiles/{profileId}/history/{assetId}/dismiss``: 204, takes the asset out
  of continue watching until it is watched again (404 when it is not in the history).
- ``DELETE /profiles/{profileId}/history``: 204, clears everything.

Errors are JSON ``{"message": "..."}``: 400 (the body cannot be read: not JSON),
401 (no token claims), 403 (another profile), 404 (no such route), 409, 413 (body over
``MAX_BODY_BYTES``, a batch over 100 times that), 415 (not JSON), 422 (a value breaks a
rule: a parameter or body field fails its schema, eventTime too far ahead; the rule is
``http_api.STATUS_RULE``), 503 with ``Retry-After`` (the store did not answer). Nothing
is stored on any of them.
"""

from __future__ import annotations

import binascii
import json
from datetime import UTC, datetime
from http import HTTPMethod, HTTPStatus
from typing import Annotated, Any, Final

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from watch_history.errors import StaleUpdateError
from watch_history.examples import (
    BATCH_EXAMPLES,
    BATCH_RESULT_EXAMPLES,
    ITEM_EXAMPLES,
    PROGRESS_EXAMPLES,
    error,
)
from watch_history.http_api import (
    NO_STORE,
    NOT_JSON,
    ErrorBody,
    HistoryResolver,
    authorized_store,
    documented_responses,
    error_response,
    exception_handler,
    json_response,
    register_error_handlers,
    resolve,
    unprocessable,
    validation_errors,
)
from watch_history.models import (
    MAX_BATCH_UPDATES,
    NUMBER_RULE,
    BatchBody,
    BatchResponse,
    HistoryItem,
    Id,
    ProgressBody,
    RecordOutcome,
    rfc3339_ms,
)
from watch_history.runtime import get_store
from watch_history.writes import record_updates

SERVICE = "history-writer"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE)  # namespace: POWERTOOLS_METRICS_NAMESPACE


class PayloadTooLargeError(Exception):
    """The request body is over ``settings.max_body_bytes`` (413)."""


class BodyNotJsonError(Exception):
    """The request body cannot be read as JSON (400)."""


def _parse_body(text: str) -> Any:
    """Powertools' JSON body deserializer, with the size limit in front of the parser
    (``MAX_BODY_BYTES``; a batch may hold MAX_BATCH_UPDATES times that)."""
    limit = get_store().settings.max_body_bytes
    if app.current_event.http_method.upper() == HTTPMethod.POST:
        limit *= MAX_BATCH_UPDATES
    size = len(text.encode())
    if size > limit:
        raise PayloadTooLargeError(f"the body is {size} bytes; at most {limit} are accepted")
    try:
        return json.loads(text, parse_int=_bounded_int)
    except RecursionError:
        raise BodyNotJsonError("the body nests too deeply to be a progress update") from None


MAX_INT_DIGITS: Final = 32
"""No field takes a longer integer (epoch ms have 13 digits). Longer ones are refused
before Python converts them: past 4,300 digits ``int()`` raises ValueError (a 500)."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BodyNotJsonError(
            f"a number in the body has {len(text.lstrip('-'))} digits; "
            f"at most {MAX_INT_DIGITS} are accepted"
        )
    return int(text)


app = HistoryResolver(enable_validation=True, json_body_deserializer=_parse_body)
register_error_handlers(app, logger=logger, metrics=metrics)


# --- documented shapes ----------------------------------------------------------------


def _responses(
    ok: dict[int, OpenAPIResponse], errors: dict[int, tuple[str, str]]
) -> dict[int, OpenAPIResponse]:
    return documented_responses(ok, errors, invalid="a parameter or the body breaks a rule")


def _no_content(description: str) -> dict[int, OpenAPIResponse]:
    return {204: {"description": description, "content": {}}}


NOT_READABLE: Final = ("the body cannot be read: not JSON", "the body is not valid JSON")
NOT_JSON_DOC: Final = ("the body is not application/json", NOT_JSON)


OUTCOME_HEADER = "X-Update-Outcome"


def _outcome_header(values: str) -> dict[str, Any]:
    return {OUTCOME_HEADER: {"description": values, "schema": {"type": "string"}}}


# --- parameters -----------------------------------------------------------------------

ProfileIdParam = Annotated[
    Id, Path(alias="profileId", title="Profile ID", description="the profile whose history it is")
]
AssetIdParam = Annotated[Id, Path(alias="assetId", title="Asset ID", description="the asset")]
ProgressBodyParam = Annotated[
    ProgressBody,
    Body(
        title="Progress",
        description="where the profile is in the asset; eventTime defaults to now",
        openapi_examples=PROGRESS_EXAMPLES,
    ),
]
BatchBodyParam = Annotated[
    BatchBody,
    Body(
        title="Batch",
        description="the updates, each with its assetId",
        openapi_examples=BATCH_EXAMPLES,
    ),
]


# --- routes ---------------------------------------------------------------------------


@app.put(
    "/profiles/<profileId>/history/<assetId>",
    summary="Record progress on one asset (mark as watched: eventType complete or completedAt)",
    description=(
        "Last writer wins by `eventTime`: an update older than the stored item changes "
        "nothing and returns the stored item. `X-Update-Outcome` says which: `applied` "
        "or `stale` (200), `ignored` (409). Unknown body fields are ignored. "
        f"{NUMBER_RULE}"
    ),
    operation_id="putProgress",
    tags=["history"],
    responses=_responses(
        {
            200: {
                "description": "the stored item (unchanged when the update was older)",
                "headers": _outcome_header("applied, or stale: older than the stored item"),
                "content": {"application/json": {"model": HistoryItem, "examples": ITEM_EXAMPLES}},
            },
            409: {
                "description": "the asset was removed, or the history cleared, after "
                "this eventTime: not recorded",
                "headers": _outcome_header("ignored"),
                "content": {
                    "application/json": {
                        "model": ErrorBody,
                        "examples": error(
                            "asset ep-s02e05 was removed (or the history cleared) after "
                            "2026-11-26T20:32:54.000Z: the update was not recorded"
                        ),
                    }
                },
            },
        },
        {
            400: NOT_READABLE,
            413: (
                "the body is larger than MAX_BODY_BYTES (16 KiB)",
                "the body is 20000 bytes; at most 16384 are accepted",
            ),
            415: NOT_JSON_DOC,
        },
    ),
)
def put_history_item(
    profile_id: ProfileIdParam, asset_id: AssetIdParam, body: ProgressBodyParam
) -> Response[str]:
    store = authorized_store(app, profile_id)
    update = body.to_update(profile_id, asset_id, datetime.now(UTC))
    try:
        item = store.record_progress(update)
    except StaleUpdateError as stale:
        if isinstance(stale.item, HistoryItem):
            metrics.add_metric(name="StaleUpdates", unit=MetricUnit.Count, value=1)
            return json_response(
                HTTPStatus.OK, stale.item.to_api(), headers=_outcome(RecordOutcome.STALE)
            )
        metrics.add_metric(name="IgnoredUpdates", unit=MetricUnit.Count, value=1)
        return error_response(
            HTTPStatus.CONFLICT,
            f"asset {asset_id} was removed (or the history cleared) after "
            f"{rfc3339_ms(update.event_time)}: the update was not recorded",
            headers=_outcome(RecordOutcome.IGNORED),
        )
    return json_response(HTTPStatus.OK, item.to_api(), headers=_outcome(RecordOutcome.APPLIED))


@app.post(
    "/profiles/<profileId>/history",
    summary=f"Record up to {MAX_BATCH_UPDATES} updates at once (offline catch-up)",
    description=(
        "One store call for the whole batch. Each update is a PUT body plus its "
        "`assetId`, and gets its own result, in order: `applied`, `stale` (older than the "
        "stored item), `ignored` (at or before a removal or clear) or `invalid` (with a "
        "`reason`; it does not stop the others). Updates of one asset in a batch are "
        "merged in one store call; each gets the outcome it would get sent alone, after "
        f"the ones before it. {NUMBER_RULE}"
    ),
    operation_id="postProgressBatch",
    tags=["history"],
    responses=_responses(
        {
            200: {
                "description": "one result per update",
                "content": {
                    "application/json": {
                        "model": BatchResponse,
                        "examples": BATCH_RESULT_EXAMPLES,
                    }
                },
            }
        },
        {
            400: NOT_READABLE,
            413: (
                f"the body is larger than {MAX_BATCH_UPDATES} times MAX_BODY_BYTES",
                "the body is 2000000 bytes; at most 1638400 are accepted",
            ),
            415: NOT_JSON_DOC,
        },
    ),
)
def post_history(profile_id: ProfileIdParam, body: BatchBodyParam) -> Response[str]:
    store = authorized_store(app, profile_id)
    results = record_updates(store, profile_id, body.updates, datetime.now(UTC))
    for result in results:
        metrics.add_metric(name=f"Batch{result.outcome.title()}", unit=MetricUnit.Count, value=1)
    payload = BatchResponse(results=results).model_dump(mode="json", by_alias=True)
    return json_response(HTTPStatus.OK, payload)


@app.delete(
    "/profiles/<profileId>/history/<assetId>",
    summary="Remove one asset from the history",
    description="Idempotent. Updates older than the removal do not bring the asset back.",
    operation_id="deleteHistoryItem",
    tags=["history"],
    responses=_responses(_no_content("removed (or was not there)"), {}),
)
def delete_history_item(profile_id: ProfileIdParam, asset_id: AssetIdParam) -> Response[str]:
    store = authorized_store(app, profile_id)
    store.remove(profile_id, [asset_id])
    return _done()


@app.post(
    "/profiles/<profileId>/history/<assetId>/dismiss",
    summary="Remove one asset from continue watching, keeping its history",
    description=(
        "The asset leaves continue watching (`status=in_progress`, collapsed or not) "
        "until it is watched again: an update with an `eventTime` after the dismissal "
        "brings it back. Every other lookup still returns it, with `dismissedAt`, and the "
        "changes feed reports it. Idempotent."
    ),
    operation_id="dismissHistoryItem",
    tags=["history"],
    responses=_responses(
        _no_content("dismissed (or was already)"),
        {404: ("the history has no such asset", "asset ep-s02e05 is not in the history")},
    ),
)
def dismiss_history_item(profile_id: ProfileIdParam, asset_id: AssetIdParam) -> Response[str]:
    store = authorized_store(app, profile_id)
    if not store.dismiss(profile_id, asset_id):
        return error_response(HTTPStatus.NOT_FOUND, f"asset {asset_id} is not in the history")
    return _done()


@app.delete(
    "/profiles/<profileId>/history",
    summary="Clear the whole history",
    description="Idempotent. Updates older than the clear are ignored.",
    operation_id="clearHistory",
    tags=["history"],
    responses=_responses(_no_content("cleared"), {}),
)
def clear_history(profile_id: ProfileIdParam) -> Response[str]:
    store = authorized_store(app, profile_id)
    store.clear(profile_id)
    return _done()


# --- shaping --------------------------------------------------------------------------


def _outcome(outcome: RecordOutcome) -> dict[str, str]:
    return {OUTCOME_HEADER: outcome.value}


def _done() -> Response[str]:
    """204: nothing to send back."""
    return Response(status_code=HTTPStatus.NO_CONTENT, headers={"Cache-Control": NO_STORE}, body="")


# --- errors ---------------------------------------------------------------------------


@exception_handler(app, RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response[str]:
    """Replaces the shared 422 handler: a body that is not JSON is a 400."""
    errors = validation_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return error_response(HTTPStatus.BAD_REQUEST, "the body is not valid JSON")
    return unprocessable(errors)


@exception_handler(app, RequestUnsupportedContentType)
def _unsupported_media(_exc: RequestUnsupportedContentType) -> Response[str]:
    return error_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, NOT_JSON)


@exception_handler(app, BodyNotJsonError, binascii.Error, UnicodeDecodeError)
def _unreadable_body(exc: Exception) -> Response[str]:
    message = str(exc) if isinstance(exc, BodyNotJsonError) else "the body is not valid JSON"
    return error_response(HTTPStatus.BAD_REQUEST, message)


@exception_handler(app, PayloadTooLargeError)
def _too_large(exc: PayloadTooLargeError) -> Response[str]:
    return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc))


# --- entry point ----------------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context, metrics)
