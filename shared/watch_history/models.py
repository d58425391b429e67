"""The schemas: the item the APIs return, the progress update, the query.

Each fact has one home here. Field names are camelCase on the wire (aliases) and
snake_case in Python. Ids are validated by ``Id``: an id that passes it can never
break a JSONPath, a key's hash tag or a Lua pattern, and is passed to the server
only as a script argument anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_ASSET_IDS = 100

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""Profile, asset, device, sport, series, team and show ids: ``[A-Za-z0-9._:-]{1,128}``."""

Title = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
AssetTypeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


Seconds = Annotated[float, Field(allow_inf_nan=False)]
"""A finite number of seconds (NaN and infinities are refused)."""


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return (value - _EPOCH) // _ONE_MS


def from_epoch_ms(ms: int) -> datetime:
    """The UTC datetime of an epoch-milliseconds number."""
    return _EPOCH + ms * _ONE_MS


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH


def rfc3339_ms(value: datetime) -> str:
    """``2026-11-26T15:22:20.123Z``: RFC 3339, UTC, milliseconds (the API's time format)."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


# Parsed by pydantic-core, not Python: this runs for every record of every batch.
# In: an RFC 3339 string with an offset, or epoch milliseconds (the schemas that take
# it set val_temporal_unit="milliseconds", so epoch seconds land in 1970 and fail the
# lower bound instead of being guessed). Out: RFC 3339, UTC, ms.
EventTime = Annotated[
    AwareDatetime,
    Field(gt=datetime(2000, 1, 1, tzinfo=UTC), lt=datetime(3000, 1, 1, tzinfo=UTC)),
    PlainSerializer(rfc3339_ms, return_type=str),
]
"""When a player saw a position: RFC 3339 with an offset, or epoch milliseconds."""

Timestamp = Annotated[datetime, PlainSerializer(rfc3339_ms, return_type=str)]
"""A stored instant: parsed by pydantic-core (epoch ms or RFC 3339), out as RFC 3339 ms."""


class _Schema(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",  # producers evolve first: unknown fields are ignored
        frozen=True,
        val_temporal_unit="milliseconds",  # epoch numbers are milliseconds, never guessed
    )


class EventType(StrEnum):
    START = "start"
    HEARTBEAT = "heartbeat"
    PAUSE = "pause"
    STOP = "stop"
    COMPLETE = "complete"


class Status(StrEnum):
    ALL = "all"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class AssetInfo(_Schema):
    """What an asset is; any field may be missing (missing fields keep stored values)."""

    type: AssetTypeName | None = Field(None, description="match, episode, movie, highlight, ...")
    title: Title | None = None
    sport: Id | None = None
    series: Id | None = None
    teams: Annotated[list[Id], Field(max_length=16)] | None = None
    show: Id | None = None
    season: Annotated[int, Field(ge=0, le=100_000)] | None = None
    episode: Annotated[int, Field(ge=0, le=1_000_000)] | None = None


class ProgressBody(_Schema):
    """A progress update without its ids: the body of ``PUT .../history/{assetId}``."""

    position: Annotated[Seconds, Field(ge=0, le=1e7)] = Field(description="seconds into the asset")
    duration: Annotated[Seconds, Field(gt=0, le=1e7)] | None = Field(
        None, description="seconds; absent for live"
    )
    event_time: EventTime | None = Field(None, description="RFC 3339 or epoch ms; default now")
    event_type: EventType = EventType.HEARTBEAT
    device_id: Id | None = None
    asset: AssetInfo | None = None


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

    asset_id: Id
    asset_type: str | None = None
    title: str | None = None
    sport: str | None = None
    series: str | None = None
    teams: list[str] | None = None
    show: str | None = None
    season: int | None = None
    episode: int | None = None
    position: float = Field(description="seconds")
    duration: float | None = Field(None, description="seconds; absent for live")
    progress: float | None = Field(None, description="position/duration, 0..1")
    completed: bool = False
    completed_at: Timestamp | None = None
    first_watched_at: Timestamp
    last_watched_at: Timestamp
    device_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The item as the APIs return it: camelCase, absent fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Collapse = Literal["show", "series"]


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

    def filter_key(self) -> str:
        """What the filters are, for binding a cursor to the query it came from."""
        return self.model_dump_json(exclude={"limit", "cursor"})


class HistoryPage(_Schema):
    """A page of items and the cursor of the next page (None on the last one)."""

    items: list[HistoryItem]
    next_cursor: str | None = None
