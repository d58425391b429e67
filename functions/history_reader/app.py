"""The read API: a profile's watch history over API Gateway (HTTP API, payload 2.0).

Thin on purpose: parse (Powertools validates each parameter, ``HistoryQuery`` the way
they combine) -> authorize -> ``HistoryStore`` -> shape (``to_api()``, ETag). Every
rule of what a query selects lives in the layer (models.py, query.py, store.py).

Status codes: 200; 304 when ``If-None-Match`` carries the current ETag; 400 for a
combination of filters that cannot work or a bad cursor; 401 without token claims;
403 for another profile; 404 for an asset not in the history; 422 for a parameter
that fails its schema; 500 when the deployment is misconfigured; 503 (with
``Retry-After``) when the store cannot answer. Every error body is JSON:
``{"message": "..."}``; 200 and 304 carry ``ETag`` (a hash of the body exactly as
sent) and ``Cache-Control: private, no-cache``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, ValidationError

from watch_history.auth import ForbiddenError, NotAuthenticatedError, authorize
from watch_history.errors import ConfigurationError, InvalidInputError, StoreUnavailableError
from watch_history.models import (
    MAX_ASSET_IDS,
    AssetTypeName,
    Collapse,
    HistoryItem,
    HistoryPage,
    HistoryQuery,
    Id,
    Status,
)
from watch_history.runtime import get_store
from watch_history.store import HistoryStore

SERVICE = "history-reader"
CACHE_CONTROL = "private, no-cache"
RETRY_AFTER_SECONDS = 1

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="WatchHistory", service=SERVICE)
app = APIGatewayHttpResolver(enable_validation=True)


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


def _etag_headers() -> dict[str, Any]:
    return {
        "ETag": {"description": "hash of this body", "schema": {"type": "string"}},
        "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
    }


def _responses(
    ok: str, model: type[BaseModel], errors: dict[int, str]
) -> dict[int, OpenAPIResponse]:
    """The documented responses of a route (fresh dicts: Powertools edits them in place)."""
    responses: dict[int, OpenAPIResponse] = {
        200: {
            "description": ok,
            "headers": _etag_headers(),
            "content": {"application/json": {"model": model}},
        },
        304: {
            "description": "If-None-Match carries the current ETag: no body",
            "headers": _etag_headers(),
            "content": {},
        },
    }
    for status, description in errors.items():
        responses[status] = _error_doc(description)
    responses[401] = _error_doc("no token claims (the request did not pass the JWT authorizer)")
    responses[403] = _error_doc("the token does not grant this profile")
    responses[422] = _error_doc("a parameter failed its schema", ValidationErrorBody)
    responses[503] = {
        **_error_doc("the store did not answer: retry after Retry-After seconds"),
        "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    }
    return responses


# --- parameters -----------------------------------------------------------------------

ProfileIdParam = Annotated[Id, Path(alias="profileId", description="the profile")]
AssetIdParam = Annotated[Id, Path(alias="assetId", description="the asset")]
IfNoneMatch = Annotated[
    str | None,
    Header(alias="If-None-Match", description="the ETag of a previous response: 304 if unchanged"),
]


# --- routes ---------------------------------------------------------------------------


@app.get(
    "/profiles/<profileId>/history",
    summary="A page of the profile's watch history",
    description=(
        "Newest `lastWatchedAt` first (ties: `assetId` ascending). Sports filters "
        "(`sport`, `series`, `team`) and show filters (`show`, `season`) cannot be "
        "combined; `series` and `team` need `sport`, `season` needs `show`. "
        "Repeatable parameters may also be comma-separated."
    ),
    tags=["history"],
    responses=_responses(
        "the page; `nextCursor` is null on the last one",
        HistoryPage,
        {400: "filters that cannot be combined, or a malformed or foreign cursor"},
    ),
)
def list_history(
    *,
    profile_id: ProfileIdParam,
    sport: Annotated[Id | None, Query(description="e.g. cricket")] = None,
    series: Annotated[Id | None, Query(description="needs sport, e.g. ipl-2026")] = None,
    team: Annotated[
        list[Id] | None,
        Query(max_length=16, description="needs sport; repeatable: items having ANY of them"),
    ] = None,
    show: Annotated[Id | None, Query(description="a show (not with sports filters)")] = None,
    season: Annotated[int | None, Query(ge=0, le=100_000, description="needs show")] = None,
    asset_type: Annotated[
        AssetTypeName | None, Query(alias="assetType", description="match, episode, movie, ...")
    ] = None,
    asset_id: Annotated[
        list[Id] | None,
        Query(
            alias="assetId",
            max_length=MAX_ASSET_IDS,
            description=f"repeatable, up to {MAX_ASSET_IDS}: progress for a page of tiles",
        ),
    ] = None,
    status: Annotated[Status, Query(description="which items by completion")] = Status.ALL,
    limit: Annotated[int, Query(ge=1, le=100, description="items per page")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=512, description="nextCursor of the previous page")
    ] = None,
    collapse: Annotated[
        Collapse | None,
        Query(description="one item per show (or per sport+series): the newest"),
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> Response[str]:
    store = _authorized_store(profile_id)
    try:
        query = HistoryQuery(
            sport=sport,
            series=series,
            teams=team,
            show=show,
            season=season,
            asset_type=asset_type,
            asset_ids=asset_id,
            status=status,
            limit=limit,
            cursor=cursor or None,  # "cursor=" is the first page
            collapse=collapse,
        )
    except ValidationError as exc:
        raise InvalidInputError(_validation_message(exc)) from None
    page = store.query(profile_id, query)
    metrics.add_metric(name="ItemsReturned", unit=MetricUnit.Count, value=len(page.items))
    return _cacheable(page_body(page), if_none_match)


@app.get(
    "/profiles/<profileId>/history/<assetId>",
    summary="Where the profile stopped watching one asset",
    tags=["history"],
    responses=_responses(
        "the item", HistoryItem, {404: "the asset is not in the profile's history"}
    ),
)
def get_history_item(
    *,
    profile_id: ProfileIdParam,
    asset_id: AssetIdParam,
    if_none_match: IfNoneMatch = None,
) -> Response[str]:
    store = _authorized_store(profile_id)
    item = store.get_item(profile_id, asset_id)
    if item is None:
        return _error(HTTPStatus.NOT_FOUND, f"asset {asset_id} is not in this profile's history")
    return _cacheable(item.to_api(), if_none_match)


# --- shaping --------------------------------------------------------------------------


def page_body(page: HistoryPage) -> dict[str, Any]:
    """The 200 body of a page: ``{"items": [...], "nextCursor": str | null}``."""
    body = page.model_dump(mode="json", by_alias=True, exclude={"items"})
    return {"items": [item.to_api() for item in page.items], **body}


def serialize(payload: Any) -> str:
    """The body exactly as it is sent (the ETag is the hash of this text)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def etag_of(body: str) -> str:
    """A strong ETag of a body as we serialize it (never of raw server replies)."""
    return '"' + hashlib.blake2b(body.encode(), digest_size=16).hexdigest() + '"'


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: ``*`` or any listed tag, compared weakly."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


def _cacheable(payload: Any, if_none_match: str | None) -> Response[str]:
    body = serialize(payload)
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _etag_matches(if_none_match, etag):
        metrics.add_metric(name="NotModified", unit=MetricUnit.Count, value=1)
        return Response(status_code=HTTPStatus.NOT_MODIFIED.value, headers=headers, body="")
    return Response(
        status_code=HTTPStatus.OK.value,
        content_type=content_types.APPLICATION_JSON,
        headers=headers,
        body=body,
    )


def _error(
    status: HTTPStatus, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response[str]:
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        headers={"Cache-Control": "no-store", **(headers or {})},
        body=serialize({"message": message, **extra}),
    )


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        text = str(error["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in error["loc"])
        parts.append(f"{field}: {text}" if field else text)
    return "; ".join(parts) or "invalid query"


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
def _invalid_parameter(exc: RequestValidationError) -> Response[str]:
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "type": error.get("type"),
            "msg": str(error.get("msg", "")),
        }
        for error in exc.errors()
    ]
    details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return _error(HTTPStatus.UNPROCESSABLE_ENTITY, f"invalid request: {details}", errors=errors)


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
