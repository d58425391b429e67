"""The HTTP plumbing both APIs share (reader and writer, API Gateway HTTP API 2.0).

Each rule of how an HTTP handler answers lives here once: the JSON error body
(``{"message": ...}``, ``Cache-Control: no-store``), which exception maps to which
status (``register_error_handlers``), who may call (``authorized_store``), the
documented error responses (``documented_responses``) and the per-status-class metric
(``resolve``), the resolver both use (``HistoryResolver``: path ids percent-decoded
once). A handler module keeps only its routes and what is its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import orjson
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import openapi_validation
from aws_lambda_powertools.event_handler.openapi.compat import ModelField, is_scalar_field
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from watch_history.auth import ForbiddenError, NotAuthenticatedError, authorize, event_authorizer
from watch_history.errors import (
    ConfigurationError,
    HistoryError,
    InvalidInputError,
    StoreUnavailableError,
    TokenExpiredError,
)
from watch_history.examples import error as error_example
from watch_history.runtime import get_store
from watch_history.store import HistoryStore

RETRY_AFTER_SECONDS: Final = 1
NO_STORE: Final = "no-store"
NOT_FOUND: Final = "Not Found"  # API Gateway's own body for a path no route matches


class HistoryResolver(APIGatewayHttpResolver):
    """Powertools' HTTP API resolver, with path parameters percent-decoded exactly once.

    Powertools matches routes on ``rawPath`` and hands the matched segments over as
    they are: ``ns%3Aa%3A1`` (JavaScript's ``encodeURIComponent("ns:a:1")``) would reach
    the ``Id`` check encoded and fail it. Each segment is decoded here, once, before
    validation, whether the path arrived encoded (``make serve``, as the client sent it)
    or already decoded (``ns:a:1``: decoding it again changes nothing, as no valid id
    holds a ``%``). A ``%2F`` stays inside its segment (decoded to ``/``, then refused
    by the ``Id`` pattern). Hand-written: Powertools has no option for it.
    """

    def _convert_matches_into_route_keys(self, match: re.Match[str]) -> dict[str, str]:
        return {name: unquote(value) for name, value in match.groupdict().items()}


# Powertools' request validation (3.37) asks, on every request and for every declared
# query parameter and header, whether it is a scalar (``is_scalar_field`` walks the
# parameter's annotation through typing and pydantic: about a fifth of a reader request
# outside the store, docs/speed.md). The answer depends on the route's declaration only, so
# it is computed once per parameter here; validation itself is unchanged. Hand-written:
# Powertools has no option for it. The cache holds each field (module-level routes,
# never freed), so an id is never reused.
_scalar_fields: dict[int, tuple[ModelField, bool]] = {}


def _cached_is_scalar_field(field: ModelField) -> bool:
    known = _scalar_fields.get(id(field))
    if known is None:
        known = _scalar_fields[id(field)] = (field, is_scalar_field(field))
    return known[1]


openapi_validation.is_scalar_field = _cached_is_scalar_field  # type: ignore[attr-defined]


# --- documented shapes ----------------------------------------------------------------


STATUS_RULE: Final = (
    "400: the request cannot be read (the body is not JSON, not UTF-8, or holds a "
    "number of more than 32 digits or nesting too deep to be an update). 422: the "
    "request reads, but a value breaks a rule: a parameter or body field fails its "
    "schema (a string or boolean where a number belongs, limit=0), filters that cannot "
    "be combined (team without sport), a cursor or since token that is malformed or not "
    "for this query, an eventTime too far ahead. Every 422 lists what failed in errors."
)
"""The one rule that picks 400 or 422 (RFC 9110 15.5.1 and 15.5.21): openapi.json
states it, and ``register_error_handlers`` applies it."""


class ErrorBody(BaseModel):
    """Every error response (and no body at all for 304)."""

    message: str = Field(description="what went wrong, for a developer")


class InvalidValue(BaseModel):
    """One value that broke a rule."""

    loc: list[str | int] = Field(
        title="Location",
        description="where: [query, limit], [body, updates, 0, position]; [] for a rule "
        "across values (team needs sport)",
    )
    type: str = Field(
        title="Type", description="the kind of failure, e.g. greater_than_equal, value_error"
    )
    msg: str = Field(title="Message", description="what is wrong with it")


class ValidationErrorBody(ErrorBody):
    """422: the request reads, but a value breaks a rule (STATUS_RULE)."""

    errors: list[InvalidValue] = Field(description="one entry per value that broke a rule")


_VALIDATION_EXAMPLE: Final = {
    "message": "invalid request: query.limit: Input should be greater than or equal to 1",
    "errors": [
        {
            "loc": ["query", "limit"],
            "type": "greater_than_equal",
            "msg": "Input should be greater than or equal to 1",
        }
    ],
}


def error_doc(
    description: str, example: str, model: type[BaseModel] = ErrorBody
) -> OpenAPIResponse:
    """One documented JSON error response, with an example message."""
    return {
        "description": description,
        "content": {"application/json": {"model": model, "examples": error_example(example)}},
    }


def documented_responses(
    ok: dict[int, OpenAPIResponse], errors: dict[int, tuple[str, str]], *, invalid: str
) -> dict[int, OpenAPIResponse]:
    """A route's documented responses: ``ok``, its own ``errors`` (status ->
    (description, example message)), then the 401, 403, 422 (described by ``invalid``)
    and 503 every route has. Fresh dicts on every call: Powertools edits them in place."""
    responses = dict(ok)
    for status, (description, example) in errors.items():
        responses[status] = error_doc(description, example)
    responses[401] = {
        **error_doc(
            "no token, or one that cannot be read (the JWT authorizer's answer)",
            "missing token claims",
        ),
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    }
    responses[403] = error_doc(
        "the token does not grant this profile", "this token may not access profile p1"
    )
    responses[422] = {
        "description": f"{invalid}. {STATUS_RULE}",
        "content": {
            "application/json": {
                "model": ValidationErrorBody,
                "examples": {"example": {"summary": "limit=0", "value": _VALIDATION_EXAMPLE}},
            }
        },
    }
    responses[503] = {
        **error_doc(
            "the store did not answer: retry after Retry-After seconds",
            "the history store is unavailable: retry later",
        ),
        "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    }
    return responses


# --- responses ------------------------------------------------------------------------


def serialize(payload: Any) -> str:
    """A JSON body exactly as it is sent (compact, UTF-8 as is).

    orjson: 6 against 87 µs for a 20-item page (docs/speed.md). The text is the
    stdlib's for everything the APIs send, but for floats below 1e-4, which may be
    written in another notation of the same number (``0.000015`` for ``1.5e-05``). What
    orjson refuses (an int beyond 64 bits, a lone surrogate) goes to the stdlib, which
    writes it as before."""
    try:
        return orjson.dumps(payload).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def json_response(
    status: HTTPStatus, payload: Any, *, headers: dict[str, str] | None = None
) -> Response[str]:
    """A JSON response that no cache keeps."""
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        headers={"Cache-Control": NO_STORE, **(headers or {})},
        body=serialize(payload),
    )


def error_response(
    status: HTTPStatus, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response[str]:
    """An error: ``{"message": message, **extra}``."""
    return json_response(status, {"message": message, **extra}, headers=headers)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """What failed its schema, one ``{"loc", "type", "msg"}`` per error."""
    return [
        {
            "loc": list(error.get("loc", ())),
            "type": error.get("type"),
            "msg": str(error.get("msg", "")).removeprefix("Value error, "),
        }
        for error in exc.errors()
    ]


def unprocessable(errors: list[dict[str, Any]]) -> Response[str]:
    """422 with every error (``validation_errors``) listed."""
    details = "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in errors
    )
    return error_response(
        HTTPStatus.UNPROCESSABLE_ENTITY, f"invalid request: {details}", errors=errors
    )


# --- exception handlers ---------------------------------------------------------------

_Handler = TypeVar("_Handler", bound=Callable[..., Response[str]])


def exception_handler(
    app: APIGatewayHttpResolver, *exc_types: type[Exception]
) -> Callable[[_Handler], _Handler]:
    """``app.exception_handler`` with its type kept (Powertools' decorator is untyped)."""

    def register(handler: _Handler) -> _Handler:
        app.exception_handler(list(exc_types))(handler)
        return handler

    return register


def register_error_handlers(
    app: APIGatewayHttpResolver, *, logger: Logger, metrics: Metrics
) -> None:
    """Map the layer's exceptions (and Powertools' validation error) to responses.

    401 ``NotAuthenticatedError`` (with ``WWW-Authenticate``); 403 ``ForbiddenError``;
    404 no such route; 422 ``RequestValidationError`` and ``InvalidInputError`` (a value
    that breaks a rule: STATUS_RULE); 500
    ``ConfigurationError`` (logged); 503 ``StoreUnavailableError`` (logged, counted,
    ``Retry-After``). A handler the app registers later for one of these types replaces
    this one (Powertools keeps one handler per type).
    """
    on = exception_handler

    @on(app, RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response[str]:
        return unprocessable(validation_errors(exc))

    @on(app, InvalidInputError)
    def _invalid_input(exc: InvalidInputError) -> Response[str]:
        return unprocessable([{"loc": list(exc.loc), "type": "value_error", "msg": str(exc)}])

    @on(app, TokenExpiredError)
    def _token_expired(exc: TokenExpiredError) -> Response[str]:
        return error_response(HTTPStatus.GONE, str(exc))

    @on(app, NotAuthenticatedError)
    def _not_authenticated(exc: NotAuthenticatedError) -> Response[str]:
        return error_response(
            HTTPStatus.UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        )

    @on(app, ForbiddenError)
    def _forbidden(exc: ForbiddenError) -> Response[str]:
        return error_response(HTTPStatus.FORBIDDEN, str(exc))

    @on(app, StoreUnavailableError)
    def _unavailable(exc: StoreUnavailableError) -> Response[str]:
        logger.warning("store unavailable", extra={"error": str(exc)})
        metrics.add_metric(name="StoreUnavailable", unit=MetricUnit.Count, value=1)
        return error_response(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "the history store is unavailable: retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @on(app, ConfigurationError)
    def _misconfigured(exc: ConfigurationError) -> Response[str]:
        logger.error("service misconfigured", extra={"error": str(exc)})
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "the service is misconfigured")

    def _no_route(_exc: Exception) -> Response[str]:
        return error_response(HTTPStatus.NOT_FOUND, NOT_FOUND)

    app.not_found(_no_route)


# --- the caller and the entry point ---------------------------------------------------


def authorized_store(app: APIGatewayHttpResolver, profile_id: str) -> HistoryStore:
    """The store, once the current request's JWT claims grant ``profile_id``.

    Raises ``NotAuthenticatedError`` (401) or ``ForbiddenError`` (403).
    """
    store = get_store()
    claims, scopes = event_authorizer(app.current_event.raw_event)
    authorize(claims, profile_id, store.settings, scopes)
    return store


def _not_authorized(event: dict[str, Any]) -> dict[str, Any] | None:
    """A 401/403 response when the caller may not touch the path's profile, decided
    before Powertools validates the rest of the request (its validation runs before any
    middleware): another profile's ``limit=0`` is a 403, not a 422. None when allowed,
    when the path names no profile, or when the settings cannot be had (the route then
    answers), and for a CORS preflight. The profile is read from ``rawPath`` as the
    routes read it (every route is ``/profiles/<profileId>/...``; decoded once, as
    ``HistoryResolver`` decodes it)."""
    segments = str(event.get("rawPath") or "").split("/")
    http = (event.get("requestContext") or {}).get("http") or {}
    if len(segments) < 4 or segments[1] != "profiles" or http.get("method") == "OPTIONS":
        return None  # no profile, or a CORS preflight (it carries no token)
    profile_id = unquote(segments[2])
    try:
        settings = get_store().settings
    except HistoryError:
        return None
    claims, scopes = event_authorizer(event)
    try:
        authorize(claims, profile_id, settings, scopes)
    except NotAuthenticatedError as exc:
        return _error_event(HTTPStatus.UNAUTHORIZED, str(exc), {"WWW-Authenticate": "Bearer"})
    except ForbiddenError as exc:
        return _error_event(HTTPStatus.FORBIDDEN, str(exc))
    return None


NOT_JSON: Final = "send the body as application/json"


def is_json(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, in any case, with any
    parameters (RFC 9110: media types are case-insensitive)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _with_json_content_type(event: dict[str, Any]) -> dict[str, Any] | None:
    """The event with its Content-Type spelled as Powertools compares it (lower-case
    ``application/json``, which it matches case-sensitively); None when the request's
    body is declared as something else (415)."""
    headers = event.get("headers") or {}
    name = next((k for k in headers if str(k).lower() == "content-type"), None)
    if name is None:
        return event
    content_type = str(headers[name])
    if not is_json(content_type):
        return None if event.get("body") else event
    _, _, parameters = content_type.partition(";")
    spelled = "application/json" + (f";{parameters}" if parameters else "")
    return {**event, "headers": {**headers, name: spelled}}


def _error_event(
    status: HTTPStatus, message: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An error as a payload 2.0 response, before routing: the same body and headers
    as ``error_response``."""
    return {
        "statusCode": int(status),
        "headers": {
            "Content-Type": content_types.APPLICATION_JSON,
            "Cache-Control": NO_STORE,
            **(headers or {}),
        },
        "body": serialize({"message": message}),
        "isBase64Encoded": False,
    }


def resolve(
    app: APIGatewayHttpResolver, event: dict[str, Any], context: LambdaContext, metrics: Metrics
) -> dict[str, Any]:
    """``app.resolve``, counting the response in ``Status2xx``, ``Status4xx``, ...

    Bodies are JSON only. Powertools would parse a form-encoded body (curl's default
    for ``-d``) into form fields and report the JSON's fields as missing; a 415 that
    says what to send is clearer, so it is answered here, before routing.
    """
    response = _not_authorized(event)
    if response is None:
        normalized = _with_json_content_type(event)
        if normalized is None:
            response = _error_event(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, NOT_JSON)
        else:
            response = app.resolve(normalized, context)
    status = int(response.get("statusCode", 500))
    metrics.add_metric(name=f"Status{status // 100}xx", unit=MetricUnit.Count, value=1)
    return response
