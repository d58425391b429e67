"""The read API: a profile's watch history over API Gateway (HTTP API, payload 2.0).

Thin on purpose: parse (Powertools validates each parameter, ``HistoryQuery`` the way
they combine) -> authorize -> ``HistoryStore`` -> shape (``SelectedPage.to_api``, ETag). Every
rule of what a query selects lives in the layer (models.py, query.py, store.py); the
HTTP plumbing both APIs share (error bodies, exception -> status, the caller check) in
``watch_history.http_api``.

Routes: a page of the history (filters, pages), one item, and the changes feed
(``/history/changes?since=``: what changed since the app's last sync, see
``watch_history.changes``).

Status codes: 200; 304 when ``If-None-Match`` carries the current ETag; 401 without
token claims; 403 for another profile; 404 for an asset not in the history; 422 for a
value that breaks a rule (a parameter that fails its schema, a combination of filters
that cannot work, a bad cursor or a bad ``since``: ``http_api.STATUS_RULE``); 410 for a
``since`` older than what the history still remembers (read everything again); 500
when the deployment is misconfigured; 503 (with ``Retry-After``) when the store cannot
answer. Every error body is JSON:
``{"message": "..."}``; 200 and 304 carry ``ETag`` (a hash of the body exactly as
sent) and ``Cache-Control: private, no-cache``.
"""

from __future__ import annotations

import hashlib
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ValidationError

from watch_history.codec import item_to_api
from watch_history.errors import InvalidInputError
from watch_history.examples import CHANGES_EXAMPLES, ITEM_EXAMPLES, PAGE_EXAMPLES, Examples
from watch_history.http_api import (
    HistoryResolver,
    authorized_store,
    documented_responses,
    error_response,
    json_response,
    register_error_handlers,
    resolve,
    serialize,
)
from watch_history.models import (
    MAX_ASSET_IDS,
    PAGING,
    AssetTypeName,
    Collapse,
    HistoryChanges,
    HistoryItem,
    HistoryPage,
    HistoryQuery,
    Id,
    Status,
    describe,
)

SERVICE = "history-reader"
CACHE_CONTROL = "private, no-cache"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="WatchHistory", service=SERVICE)
app = HistoryResolver(enable_validation=True)
register_error_handlers(app, logger=logger, metrics=metrics)


# --- documented shapes ----------------------------------------------------------------


def _etag_headers() -> dict[str, Any]:
    return {
        "ETag": {
            "description": "hash of this body: send it as If-None-Match to get 304 when "
            "nothing changed",
            "schema": {"type": "string"},
        },
        "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
    }


def _responses(
    ok: str, model: type[BaseModel], examples: Examples, errors: dict[int, tuple[str, str]]
) -> dict[int, OpenAPIResponse]:
    """The documented responses of a route: 200 and 304 with an ETag, then the errors."""
    cacheable: dict[int, OpenAPIResponse] = {
        200: {
            "description": ok,
            "headers": _etag_headers(),
            "content": {"application/json": {"model": model, "examples": examples}},
        },
        304: {
            "description": "If-None-Match carries the current ETag: no body",
            "headers": _etag_headers(),
            "content": {},
        },
    }
    return documented_responses(cacheable, errors, invalid="a parameter breaks a rule")


# --- parameters -----------------------------------------------------------------------

ProfileIdParam = Annotated[
    Id, Path(alias="profileId", title="Profile ID", description="the profile whose history it is")
]
AssetIdParam = Annotated[Id, Path(alias="assetId", title="Asset ID", description="the asset")]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        title="If-None-Match",
        description="the ETag of a previous response: 304 if unchanged",
    ),
]


# --- routes ---------------------------------------------------------------------------


@app.get(
    "/profiles/<profileId>/history",
    summary="List the profile's watch history",
    description=(
        "Newest `lastWatchedAt` first (ties: `assetId` ascending). Sports filters "
        "(`sport`, `series`, `team`) and show filters (`show`, `season`) cannot be "
        "combined; `series` and `team` need `sport`, `season` needs `show` (422 "
        "otherwise). Repeatable parameters may also be comma-separated.\n\n"
        f"**Paging.** {PAGING}"
    ),
    operation_id="listHistory",
    tags=["history"],
    responses=_responses(
        "the page; `nextCursor` is null on the last one",
        HistoryPage,
        PAGE_EXAMPLES,
        {},
    ),
)
def list_history(
    *,
    profile_id: ProfileIdParam,
    sport: Annotated[
        Id | None, Query(title="Sport", description="items of this sport, e.g. cricket")
    ] = None,
    series: Annotated[
        Id | None,
        Query(title="Series", description="items of this competition; needs sport, e.g. ipl-2026"),
    ] = None,
    team: Annotated[
        list[Id] | None,
        Query(
            max_length=16,
            title="Team",
            description="needs sport; repeatable: items having ANY of these teams",
        ),
    ] = None,
    show: Annotated[
        Id | None, Query(title="Show", description="episodes of this show (not with sport)")
    ] = None,
    season: Annotated[
        int | None,
        Query(ge=0, le=100_000, title="Season", description="episodes of this season; needs show"),
    ] = None,
    asset_type: Annotated[
        AssetTypeName | None,
        Query(
            alias="assetType",
            title="Asset type",
            description="items of this type: match, episode, movie, ...",
        ),
    ] = None,
    asset_id: Annotated[
        list[Id] | None,
        Query(
            alias="assetId",
            max_length=MAX_ASSET_IDS,
            title="Asset ID",
            description=f"repeatable, up to {MAX_ASSET_IDS}: progress for a page of tiles",
        ),
    ] = None,
    status: Annotated[
        Status,
        Query(
            title="Status",
            description="in_progress: resumable; completed: completed as of its last watch "
            "(an item being rewatched is not); ever_completed: has a completedAt",
        ),
    ] = Status.ALL,
    limit: Annotated[
        int, Query(ge=1, le=100, title="Limit", description="items per page, 1 to 100")
    ] = 20,
    cursor: Annotated[
        str | None,
        Query(
            max_length=512,
            title="Cursor",
            description="nextCursor of the previous page, with the same filters; absent "
            "or empty for the first page. A walk does not see again an item that moved "
            "to the front during it: see Paging",
        ),
    ] = None,
    collapse: Annotated[
        Collapse | None,
        Query(
            title="Collapse",
            description="show: one item per show, the newest; series: one item per "
            "sport and series, the newest (a continue-watching rail)",
        ),
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> Response[str]:
    store = authorized_store(app, profile_id)
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
        raise InvalidInputError(describe(exc)) from None
    page = store.select_page(profile_id, query)
    metrics.add_metric(name="ItemsReturned", unit=MetricUnit.Count, value=len(page.values))
    return _cacheable(page.to_api(), if_none_match)


# Registered before ".../history/<assetId>", which would otherwise match it: an asset
# whose id is "changes" is read with ?assetId=changes.
@app.get(
    "/profiles/<profileId>/history/changes",
    summary="Get what changed since the app's last sync (incremental sync)",
    description=(
        "Without `since`: everything (`reset` true). With the `nextToken` of the previous "
        "call: the items changed since (any stored field, by the server's clock), the "
        "assets removed or evicted since, and `reset` when the history was cleared since. "
        "Apply `reset` (drop the local copy), then `removed`, then `items`; keep "
        "`nextToken`. 410: the token is older than what the server still remembers "
        "(removals are remembered TOMBSTONE_TTL_DAYS, evictions the last MAX_ITEMS): read "
        "again without `since`. An asset whose id is `changes` is read with "
        "`GET .../history?assetId=changes`. This is the way to keep a consistent copy "
        "of a history (a paged walk of the list is not: see listHistory)."
    ),
    operation_id="getHistoryChanges",
    tags=["history"],
    responses=documented_responses(
        {
            200: {
                "description": "the changes and the next token",
                "content": {
                    "application/json": {"model": HistoryChanges, "examples": CHANGES_EXAMPLES}
                },
            }
        },
        {
            410: (
                "since is older than what the history remembers: read again without it",
                "since is older than what this history remembers: read it all again",
            ),
        },
        invalid="a parameter breaks a rule (since malformed or another profile's)",
    ),
)
def history_changes(
    *,
    profile_id: ProfileIdParam,
    since: Annotated[
        str | None,
        Query(
            max_length=512,
            title="Since",
            description="nextToken of the previous call; absent for everything",
        ),
    ] = None,
) -> Response[str]:
    store = authorized_store(app, profile_id)
    changes = store.select_changes(profile_id, since or None)
    metrics.add_metric(name="ChangedItems", unit=MetricUnit.Count, value=len(changes.values))
    return json_response(HTTPStatus.OK, changes.to_api())


@app.get(
    "/profiles/<profileId>/history/<assetId>",
    summary="Get where the profile stopped watching one asset",
    operation_id="getHistoryItem",
    tags=["history"],
    responses=_responses(
        "the item",
        HistoryItem,
        ITEM_EXAMPLES,
        {
            404: (
                "the asset is not in the profile's history",
                "asset ep-s02e05 is not in this profile's history",
            )
        },
    ),
)
def get_history_item(
    *,
    profile_id: ProfileIdParam,
    asset_id: AssetIdParam,
    if_none_match: IfNoneMatch = None,
) -> Response[str]:
    store = authorized_store(app, profile_id)
    item = store.find_items(profile_id, [asset_id]).get(asset_id)
    if item is None:
        return error_response(
            HTTPStatus.NOT_FOUND, f"asset {asset_id} is not in this profile's history"
        )
    return _cacheable(item_to_api(item), if_none_match)


# --- shaping --------------------------------------------------------------------------


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


# --- entry point ----------------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context, metrics)
