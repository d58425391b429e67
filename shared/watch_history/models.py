"""The schemas: the item the APIs return, the progress update, the query.

Each fact has one home here. Field names are camelCase on the wire (aliases) and
snake_case in Python. Ids are validated by ``Id``: an id that passes it can never
break a JSONPath, a key's hash tag or a Lua pattern, and is passed to the server
only as a script argument anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

# 1 to 128 of A-Z a-z 0-9 . _ : - and not only dots: "." and ".." are path segments
# that no URL can carry as an id (clients and proxies resolve them away). No lookahead:
# pydantic-core's regex engine has none, hence "at least one non-dot" spelled out.
ID_PATTERN = r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$"
ID_MAX_LENGTH = 128
ID_RULE = "not a valid id: use 1 to 128 of A-Z a-z 0-9 . _ : -, not only dots"
MAX_ASSET_IDS = 100
MAX_BATCH_UPDATES = 100

Id = Annotated[str, StringConstraints(max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
"""Profile, asset, device, sport, series, team and show ids: 1 to 128 of
``[A-Za-z0-9._:-]``, not only dots."""

Title = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
AssetTypeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


NUMBER_RULE = (
    "In a JSON body and in a Kinesis record a number is a JSON number: a string "
    '("10") or a boolean (true) where a number belongs is refused, never read as 10 or 1.'
)
"""The input rule for numbers, everywhere the schemas read JSON (the write API's bodies,
the recorder's records): ``strict`` number fields. A string that holds a number is a
producer's bug (openapi.json says number); reading it as one would store the bug
silently and give one field two spellings on the wire. Query parameters are text by
nature and are read by their schema (``limit=10``)."""

Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite number of seconds, a JSON number (NaN, infinities, strings and booleans are
refused; integers are numbers)."""

Count = Annotated[int, Field(strict=True)]
"""A whole number, a JSON integer (strings, booleans and 3.0 are refused)."""


def describe(exc: ValidationError) -> str:
    """A validation error as one line, ``field: message; ...``: what the APIs say."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        text = str(error["msg"]).removeprefix("Value error, ")
        if (error.get("ctx") or {}).get("pattern") == ID_PATTERN:
            text = ID_RULE
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {text}" if where else text)
    return "; ".join(parts) or "invalid"


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return (value - EPOCH) // _ONE_MS


def from_epoch_ms(ms: int) -> datetime:
    """The UTC datetime of an epoch-milliseconds number."""
    return EPOCH + ms * _ONE_MS


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - EPOCH


def _not_a_numeric_string(value: Any) -> Any:
    """Epoch milliseconds are a JSON number (NUMBER_RULE): a string of digits is refused
    rather than parsed (pydantic would read it as a timestamp)."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("epoch milliseconds go as a JSON number, not a string")
    return value


def rfc3339_ms(value: datetime) -> str:
    """``2026-11-26T15:22:20.123Z``: RFC 3339, UTC, milliseconds (the API's time format)."""
    # isoformat (C) rather than strftime: the same text for every year from 1000 on
    # (the API's times are bounded far inside that), in two thirds of the time
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# Parsed by pydantic-core, not Python: this runs for every record of every batch.
# In: an RFC 3339 string with an offset, or epoch milliseconds (the schemas that take
# it set val_temporal_unit="milliseconds", so epoch seconds land in 1970 and fail the
# lower bound instead of being guessed). Out: RFC 3339, UTC, ms.
EventTime = Annotated[
    AwareDatetime,
    Field(gt=datetime(2000, 1, 1, tzinfo=UTC), lt=datetime(3000, 1, 1, tzinfo=UTC)),
    BeforeValidator(_not_a_numeric_string),  # after Field: its bounds stay pydantic-core's
    PlainSerializer(rfc3339_ms, return_type=str),
    # What the document says it accepts: what the lines above accept.
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {
                    "type": "integer",
                    "exclusiveMinimum": 946_684_800_000,
                    "exclusiveMaximum": 32_503_680_000_000,
                },
            ],
            "description": (
                "RFC 3339 with an offset, or epoch milliseconds as a JSON number; after "
                "2000-01-01T00:00Z and before 3000-01-01T00:00Z (epoch seconds are refused, "
                "not guessed; a string of digits is refused). "
                "Further ahead of the server's clock than MAX_FUTURE_SKEW_SECONDS: 422."
            ),
        },
        mode="validation",
    ),
]
"""When a player saw a position: RFC 3339 with an offset, or epoch milliseconds."""

Timestamp = Annotated[datetime, PlainSerializer(rfc3339_ms, return_type=str)]
"""A stored instant: parsed by pydantic-core (epoch ms or RFC 3339), out as RFC 3339 ms."""


def field_title(name: str, _info: Any = None) -> str:
    """A field's title in openapi.json: ``event_time`` -> "Event time" (pydantic would
    title the camelCase alias: "Eventtime")."""
    words = name.split("_")
    return " ".join(w.upper() if w == "id" else w for w in words).capitalize().replace(" id", " ID")


class _Schema(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        field_title_generator=field_title,
        extra="ignore",  # producers evolve first: unknown fields are ignored
        frozen=True,
        val_temporal_unit="milliseconds",  # epoch numbers are milliseconds, never guessed
    )


class EventType(StrEnum):
    """What the player reports. Every type records the position; the type says why it
    was sent. ``start``: playback began (often at 0 or a few seconds, before the player
    seeks to the resume point): below MIN_RESUME_SECONDS (30 s) it moves lastWatchedAt,
    the device and the order, but never a resume point another report set.
    ``heartbeat``: periodic report while playing (every 30 s or so). ``pause``: the
    viewer paused. ``stop``: the viewer left the player (closed, navigated away).
    ``complete``: the viewer reached the end, or marked the asset as watched: the item
    is completed whatever the position, and stands at its end (position = duration)
    once a duration is known. Any other type completes the item when position/duration
    reaches COMPLETION_THRESHOLD (default 0.9)."""

    START = "start"
    HEARTBEAT = "heartbeat"
    PAUSE = "pause"
    STOP = "stop"
    COMPLETE = "complete"


class Status(StrEnum):
    """Which items a read returns. ``all``: every item. ``in_progress``: resumable, not
    completed as of its last watch ("continue watching"). ``completed``: completed as of
    its last watch (an item being rewatched is not). ``ever_completed``: completed at
    some time (it has ``completedAt``), rewatched or not."""

    ALL = "all"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # completed as of its last watch (a rewatch is not)
    EVER_COMPLETED = "ever_completed"  # completed at some time: has completedAt


class AssetInfo(_Schema):
    """What an asset is; any field may be missing (missing fields keep stored values)."""

    type: AssetTypeName | None = Field(
        None, description="what the asset is: match, episode, movie, highlight, ..."
    )
    title: Title | None = Field(None, description="the asset's display title")
    sport: Id | None = Field(None, description="the sport of a sports asset, e.g. cricket")
    series: Id | None = Field(None, description="the competition of a sports asset, e.g. ipl-2026")
    teams: Annotated[list[Id], Field(max_length=16)] | None = Field(
        None, description="the teams playing in a sports asset (up to 16)"
    )
    show: Id | None = Field(None, description="the show an episode belongs to")
    season: Annotated[Count, Field(ge=0, le=100_000)] | None = Field(
        None, description="the season of an episode within its show"
    )
    episode: Annotated[Count, Field(ge=0, le=1_000_000)] | None = Field(
        None, description="the episode number within its season"
    )


class ProgressBody(_Schema):
    """A progress update without its ids: the body of ``PUT .../history/{assetId}``.

    "Mark as watched": ``eventType: complete``, or ``completedAt`` (when it was watched;
    it is then the update's eventTime), with no position needed.
    """

    position: Annotated[Seconds, Field(ge=0, le=1e7)] | None = Field(
        None,
        description="seconds into the asset (a JSON number); required unless marking as "
        "watched (eventType complete or completedAt), which stores the duration (this "
        "one's, else the stored one) as the position, or what is sent (default 0) while "
        "no duration is known",
    )
    duration: Annotated[Seconds, Field(gt=0, le=1e7)] | None = Field(
        None, description="the asset's length in seconds (a JSON number); absent for live"
    )
    event_time: EventTime | None = Field(
        None, description="when the player was at this position; default: now"
    )
    event_type: EventType | None = Field(
        None,
        description="why the player reported (EventType); default heartbeat (complete "
        "when completedAt is given)",
    )
    completed_at: EventTime | None = Field(
        None, description="mark as watched at this time (eventTime must then be absent)"
    )
    device_id: Id | None = Field(None, description="the device that played, e.g. tv-livingroom")
    asset: AssetInfo | None = Field(
        None, description="what the asset is; missing fields keep the stored values"
    )

    @model_validator(mode="after")
    def _marking_as_watched(self) -> ProgressBody:
        if self.completed_at is not None:
            if self.event_time is not None:
                raise ValueError("give eventTime or completedAt, not both")
            if self.event_type not in (None, EventType.COMPLETE):
                raise ValueError("completedAt goes with eventType complete (or none)")
        elif self.position is None and self.event_type is not EventType.COMPLETE:
            raise ValueError("position is required unless marking as watched")
        return self

    def to_update(self, profile_id: str, asset_id: str, now: datetime) -> ProgressUpdate:
        """The update this body states for one asset (``now``: the default eventTime)."""
        marking = self.completed_at is not None or self.event_type is EventType.COMPLETE
        position = self.position
        if position is None:
            position = self.duration or 0.0
        return ProgressUpdate(
            profile_id=profile_id,
            asset_id=asset_id,
            position=position,
            duration=self.duration,
            event_time=self.completed_at or self.event_time or now,
            event_type=EventType.COMPLETE if marking else (self.event_type or EventType.HEARTBEAT),
            device_id=self.device_id,
            asset=self.asset,
        )


class BatchUpdate(ProgressBody):
    """One update of a batch: a ``PUT`` body and its ``assetId``."""

    asset_id: Id = Field(description="the asset this update is about")


class ProgressUpdate(_Schema):
    """One progress heartbeat, as players put it on the stream."""

    profile_id: Id
    asset_id: Id
    position: Annotated[Seconds, Field(ge=0, le=1e7)]
    duration: Annotated[Seconds, Field(gt=0, le=1e7)] | None = None
    event_time: EventTime
    event_type: EventType = EventType.HEARTBEAT
    device_id: Id | None = None
    asset: AssetInfo | None = None

    @property
    def event_ms(self) -> int:
        """eventTime in epoch milliseconds (what the store compares)."""
        return epoch_ms(self.event_time)


class HistoryItem(_Schema):
    """Where a profile stopped watching one asset: the shape every API returns."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    asset_id: Id = Field(description="the asset")
    asset_type: str | None = Field(None, description="what the asset is: match, episode, ...")
    title: str | None = Field(None, description="the asset's display title")
    sport: str | None = Field(None, description="the sport of a sports asset")
    series: str | None = Field(None, description="the competition of a sports asset")
    teams: list[str] | None = Field(None, description="the teams playing in a sports asset")
    show: str | None = Field(None, description="the show an episode belongs to")
    season: int | None = Field(None, description="the season of an episode")
    episode: int | None = Field(None, description="the episode number within its season")
    position: float = Field(description="seconds into the asset: where to resume")
    duration: float | None = Field(
        None, description="the asset's length in seconds; absent for live"
    )
    progress: float | None = Field(
        None, description="position/duration, 0..1; absent without a duration"
    )
    completed: bool = Field(
        False, description="completed as of the last watch (false again while rewatching)"
    )
    completed_at: Timestamp | None = Field(
        None, description="when it was last completed (kept while rewatching)"
    )
    first_watched_at: Timestamp = Field(description="the earliest eventTime recorded for it")
    last_watched_at: Timestamp = Field(
        description="the newest eventTime recorded for it: the history's order"
    )
    device_id: str | None = Field(None, description="the device of the newest update naming one")
    dismissed_at: Timestamp | None = Field(
        None,
        description="when it was removed from continue watching (POST .../dismiss): "
        "hidden from status=in_progress while lastWatchedAt is not after it",
    )

    def to_api(self) -> dict[str, Any]:
        """The item as the APIs return it: camelCase, absent fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Collapse(StrEnum):
    """One item per group, the newest (a continue-watching rail). ``show``: per show
    (items without a show stand alone). ``series``: per sport and series (items without
    a series stand alone)."""

    SHOW = "show"
    SERIES = "series"


class HistoryQuery(_Schema):
    """What a read asks for. The rules that combine filters live here, once."""

    sport: Id | None = None
    series: Id | None = None
    teams: Annotated[list[Id], Field(max_length=16)] | None = Field(
        None, description="items having ANY of these teams"
    )
    show: Id | None = None
    season: Annotated[int, Field(ge=0, le=100_000)] | None = None
    asset_type: AssetTypeName | None = None
    asset_ids: Annotated[list[Id], Field(max_length=MAX_ASSET_IDS)] | None = None
    status: Status = Status.ALL
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Annotated[str, StringConstraints(max_length=512)] | None = None
    collapse: Collapse | None = None

    @model_validator(mode="after")
    def _filters_combine(self) -> HistoryQuery:
        if self.series is not None and self.sport is None:
            raise ValueError("series needs sport")
        if self.teams and self.sport is None:
            raise ValueError("team needs sport")
        if self.season is not None and self.show is None:
            raise ValueError("season needs show")
        if self.show is not None and (self.sport is not None):
            raise ValueError("sport filters and show filters cannot be combined")
        if self.asset_ids is not None and not self.asset_ids:
            raise ValueError("assetId needs at least one id")
        return self

    def filters_asset_fields(self) -> bool:
        """Whether the query selects by what an asset is (sport, series, team, show,
        season, assetType), not only by status or recency."""
        return any(
            v is not None
            for v in (self.sport, self.series, self.teams, self.show, self.season, self.asset_type)
        )

    def filter_key(self) -> str:
        """What the filters are, for binding a cursor to the query it came from."""
        return self.model_dump_json(exclude={"limit", "cursor"})


PAGING = (
    "Pages walk a list that moves (keyset paging): the history is ordered by "
    "lastWatchedAt, newest first, and each page continues after the last item of the "
    "previous one. An item watched again during a walk moves to the front, behind the "
    "walk, and is not returned again; an item removed during a walk is simply not "
    "returned. A walk is a view of a moving list, not a snapshot: for a consistent copy "
    "of the whole history, use the changes feed (GET .../history/changes), which reports "
    "every change since its token."
)
"""What a cursor walk promises: openapi.json says it on the list route and its cursor."""


class HistoryPage(_Schema):
    """A page of items and the cursor of the next page (None on the last one)."""

    items: list[HistoryItem] = Field(description="newest lastWatchedAt first")
    next_cursor: str | None = Field(
        None,
        description="pass as cursor to get the next page; null on the last page "
        "(a cursor walks a moving list: see the list operation)",
    )


class RecordOutcome(StrEnum):
    """What recording an update did. ``applied``: newer than what was stored, the item
    reflects it. ``stale``: not newer (a duplicate, a replay, a late update): the stored
    state stays. ``ignored``: at or before a removal of the asset or a clear of the
    history: nothing changed. ``invalid``: refused before the store (``reason`` says
    why): nothing changed."""

    APPLIED = "applied"  # newer than what was stored: the item reflects it
    STALE = "stale"  # not newer (duplicate, replay, late): the stored state stays
    IGNORED = "ignored"  # at or before a removal of the asset (or a clear): nothing changed
    INVALID = "invalid"  # refused before the store (the write APIs say why): nothing changed


class BatchUpdateResult(_Schema):
    """The outcome of one update of a batch, in the order they were sent."""

    index: int = Field(description="position of the update in the request, from 0")
    asset_id: str | None = Field(None, description="absent when the update had no valid one")
    outcome: RecordOutcome = Field(description="what recording the update did")
    reason: str | None = Field(None, description="why the update is invalid")


class HistoryChanges(_Schema):
    """What changed since a token: apply ``reset``, then ``removed``, then ``items``."""

    items: list[HistoryItem] = Field(description="items changed since the token (put each)")
    removed: list[str] = Field(
        description="assetIds removed or evicted since the token (drop each)"
    )
    reset: bool = Field(
        description="drop the whole local copy first: no token, or a clear-all since"
    )
    next_token: str = Field(description="pass as since on the next sync")


class BatchBody(_Schema):
    """The body of ``POST .../history``: up to MAX_BATCH_UPDATES updates of one profile.

    Each update is checked on its own (``writes.record_updates``): an element that is
    not a valid ``BatchUpdate`` is reported invalid, with why, and the rest recorded.
    """

    updates: Annotated[
        list[Annotated[BatchUpdate | Any, Field(union_mode="left_to_right")]],
        Field(min_length=1, max_length=MAX_BATCH_UPDATES),
    ] = Field(description=f"1 to {MAX_BATCH_UPDATES} updates, each a BatchUpdate")


class BatchResponse(_Schema):
    """One result per update, in the order sent."""

    results: list[BatchUpdateResult] = Field(description="one per update, in the order sent")
