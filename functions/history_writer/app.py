"""The write API: users edit their watch history (API Gateway HTTP API, payload 2.0).

Thin on purpose: parse (Powertools validates the path ids with ``Id`` and the body with
``ProgressBody``) -> authorize -> one ``HistoryStore`` call -> shape (``to_api()``).

- ``PUT /profiles/{profileId}/history/{assetId}``: record progress ("mark as watched"
  is ``eventType: complete``). 200 with the stored item; an update older than what is
  stored changes nothing and also gets 200 with the stored item; 409 when the asset
  was removed (or the history cleared) after the update's ``eventTime``.
- ``DELETE /profiles/{profileId}/history/{assetId}``: 204, idempotent; later-arriving
  older updates do not bring the asset back.
- ``DELETE /profiles/{profileId}/history``: 204, clears everything.

Errors are JSON ``{"message": "..."}``: 400 (body not JSON, eventTime too far ahead),
401 (no token claims), 403 (another profile), 404 (no such route), 409, 413 (body over
``MAX_BODY_BYTES``), 415 (not JSON), 422 (a parameter or the body fails its schema),
503 with ``Retry-After`` (the store did not answer). Nothing is stored on any of them.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from watch_history.auth import ForbiddenError, NotAuthenticatedError, authorize
from watch_history.errors import (
    ConfigurationError,
    InvalidInputError,
    StaleUpdateError,
    StoreUnavailableError,
)
from watch_history.models import HistoryItem, Id, ProgressBody, ProgressUpdate, rfc3339_ms
from watch_history.runtime import get_store
from watch_history.store import HistoryStore

SERVICE = "history-writer"
RETRY_AFTER_SECONDS = 1

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE)  # namespace: POWERTOOLS_METRICS_NAMESPACE


class PayloadTooLargeError(Exception):
    """The request body is over ``settings.max_body_bytes`` (413)."""


class BodyNotJsonError(Exception):
    """The request body cannot be read as JSON (400)."""


def _parse_body(text: str) -> Any:
    """Powertools' JSON body deserializer, with the size limit in front of the parser."""
    limit = get_store().settings.max_body_bytes
    size = len(text.encode())
    if size > limit:
        raise PayloadTooLargeError(f"the body is {size} bytes; at most {limit} are accepted")
    try:
        return json.loads(text)
    except RecursionError:
        raise BodyNotJsonError("the body nests too deeply to be a progress update") from None


app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=_parse_body)


# --- documented shapes ----------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error response (and no body at all for 304)."""

    message: str = Field(description="what went wrong, for a developer")


class ValidationErrorBody(ErrorBody):
    """422: a parameter failed its schema."""

    errors: list[dict[str, Any]] = Field(
        description="one entry per bad parameter: loc (e.g. [query, limit]), type, msg"
    )


def _error_doc(description: str, model: type[BaseModel] = ErrorBody) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"model": model}}}


def _responses(
    ok: dict[int, OpenAPIResponse], errors: dict[int, str]
) -> dict[int, OpenAPIResponse]:
    """The documented responses of a route (fresh dicts: Powertools edits them in place)."""
    responses = dict(ok)
    for status, description in errors.items():
        responses[status] = _error_doc(description)
    responses[401] = _error_doc("no token claims (the request did not pass the JWT authorizer)")
    responses[403] = _error_doc("the token does not grant this profile")
    responses[422] = _error_doc("a parameter or the body failed its schema", ValidationErrorBody)
    responses[503] = {
        **_error_doc("the store did not answer: retry after Retry-After seconds"),
        "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    }
    return responses


def _no_content(description: str) -> dict[int, OpenAPIResponse]:
    return {204: {"description": description, "content": {}}}


# --- parameters -----------------------------------------------------------------------

ProfileIdParam = Annotated[Id, Path(alias="profileId", description="the profile")]
AssetIdParam = Annotated[Id, Path(alias="assetId", description="the asset")]
ProgressBodyParam = Annotated[
    ProgressBody,
    Body(description="where the profile is in the asset; eventTime defaults to now"),
]


# --- routes ---------------------------------------------------------------------------


@app.put(
    "/profiles/<profileId>/history/<assetId>",
    summary="Record progress on one asset (eventType complete: mark as watched)",
    description=(
        "Last writer wins by `eventTime`: an update older than the stored item changes "
        "nothing and returns the stored item. Unknown body fields are ignored."
    ),
    tags=["history"],
    responses=_responses(
        {
            200: {
                "description": "the stored item (unchanged when the update was older)",
                "content": {"application/json": {"model": HistoryItem}},
            }
        },
        {
            400: "the body is not JSON, or eventTime is too far in the future",
            409: "the asset was removed, or the history cleared, after this eventTime",
            413: "the body is larger than 16 KiB",
            415: "the body is not application/json",
        },
    ),
)
def put_history_item(
    profile_id: ProfileIdParam, asset_id: AssetIdParam, body: ProgressBodyParam
) -> Response[str]:
    store = _authorized_store(profile_id)
    fields = body.model_dump()
    fields.update(
        profile_id=profile_id,
        asset_id=asset_id,
        event_time=body.event_time or datetime.now(UTC),
    )
    update = ProgressUpdate.model_validate(fields)
    try:
        item = store.record_progress(update)
    except StaleUpdateError as stale:
        if isinstance(stale.item, HistoryItem):
            metrics.add_metric(name="StaleUpdates", unit=MetricUnit.Count, value=1)
            return _json(HTTPStatus.OK, stale.item.to_api())
        metrics.add_metric(name="IgnoredUpdates", unit=MetricUnit.Count, value=1)
        return _error(
            HTTPStatus.CONFLICT,
            f"asset {asset_id} was removed (or the history cleared) after "
            f"{rfc3339_ms(update.event_time)}: the update was not recorded",
        )
    return _json(HTTPStatus.OK, item.to_api())


@app.delete(
    "/profiles/<profileId>/history/<assetId>",
    summary="Remove one asset from the history",
    description="Idempotent. Updates older than the removal do not bring the asset back.",
    tags=["history"],
    responses=_responses(_no_content("removed (or was not there)"), {}),
)
def delete_history_item(profile_id: ProfileIdParam, asset_id: AssetIdParam) -> Response[str]:
    store = _authorized_store(profile_id)
    store.remove(profile_id, [asset_id])
    return Response(
        status_code=HTTPStatus.NO_CONTENT, headers={"Cache-Control": "no-store"}, body=""
    )


@app.delete(
    "/profiles/<profileId>/history",
    summary="Clear the whole history",
    description="Idempotent. Updates older than the clear are ignored.",
    tags=["history"],
    responses=_responses(_no_content("cleared"), {}),
)
def clear_history(profile_id: ProfileIdParam) -> Response[str]:
    store = _authorized_store(profile_id)
    store.clear(profile_id)
    return Response(
        status_code=HTTPStatus.NO_CONTENT, headers={"Cache-Control": "no-store"}, body=""
    )


# --- shaping --------------------------------------------------------------------------


def _json(
    status: HTTPStatus, payload: Any, *, headers: dict[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        headers={"Cache-Control": "no-store", **(headers or {})},
        body=json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
    )


def _error(
    status: HTTPStatus, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response[str]:
    return _json(status, {"message": message, **extra}, headers=headers)


def _authorized_store(profile_id: str) -> HistoryStore:
    """The store, once the JWT claims grant ``profile_id`` (else 401/403)."""
    store = get_store()
    claims = app.current_event.request_context.authorizer.jwt_claim
    authorize(claims, profile_id, store.settings)
    return store


# --- errors ---------------------------------------------------------------------------

_Handler = TypeVar("_Handler", bound=Callable[..., Response[str]])


def _on(*exc_types: type[Exception]) -> Callable[[_Handler], _Handler]:
    """``app.exception_handler`` with its type kept (Powertools' decorator is untyped)."""

    def register(handler: _Handler) -> _Handler:
        app.exception_handler(list(exc_types))(handler)
        return handler

    return register


@_on(RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response[str]:
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "type": error.get("type"),
            "msg": str(error.get("msg", "")).removeprefix("Value error, "),
        }
        for error in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return _error(HTTPStatus.BAD_REQUEST, "the body is not valid JSON")
    details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return _error(HTTPStatus.UNPROCESSABLE_ENTITY, f"invalid request: {details}", errors=errors)


@_on(RequestUnsupportedContentType)
def _unsupported_media(_exc: RequestUnsupportedContentType) -> Response[str]:
    return _error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")


@_on(BodyNotJsonError, binascii.Error, UnicodeDecodeError)
def _unreadable_body(exc: Exception) -> Response[str]:
    message = str(exc) if isinstance(exc, BodyNotJsonError) else "the body is not valid JSON"
    return _error(HTTPStatus.BAD_REQUEST, message)


@_on(PayloadTooLargeError)
def _too_large(exc: PayloadTooLargeError) -> Response[str]:
    return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc))


@_on(InvalidInputError)
def _invalid_input(exc: InvalidInputError) -> Response[str]:
    return _error(HTTPStatus.BAD_REQUEST, str(exc))


@_on(NotAuthenticatedError)
def _not_authenticated(exc: NotAuthenticatedError) -> Response[str]:
    return _error(HTTPStatus.UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"})


@_on(ForbiddenError)
def _forbidden(exc: ForbiddenError) -> Response[str]:
    return _error(HTTPStatus.FORBIDDEN, str(exc))


@_on(StoreUnavailableError)
def _unavailable(exc: StoreUnavailableError) -> Response[str]:
    logger.warning("store unavailable", extra={"error": str(exc)})
    metrics.add_metric(name="StoreUnavailable", unit=MetricUnit.Count, value=1)
    return _error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "the history store is unavailable: retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@_on(ConfigurationError)
def _misconfigured(exc: ConfigurationError) -> Response[str]:
    logger.error("service misconfigured", extra={"error": str(exc)})
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "the service is misconfigured")


@app.not_found
def _no_route(_exc: Exception) -> Response[str]:
    return _error(HTTPStatus.NOT_FOUND, "no such resource")


# --- entry point ----------------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = app.resolve(event, context)
    status = int(response.get("statusCode", 500))
    metrics.add_metric(name=f"Status{status // 100}xx", unit=MetricUnit.Count, value=1)
    return response
