"""The read rules: which stored items a query selects, in which order, and the cursor.

Works on items decoded to values (codec.py: one list per item, whatever the layout)
and builds the API's shape only for what a page returns. Pure functions: store.py
fetches, this selects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from watch_history.codec import (
    ASSET_FIELDS,
    DISMISSED_POSITION,
    ITEM_FIELDS,
    item_to_api,
    items_from_values,
)
from watch_history.errors import InvalidInputError
from watch_history.models import HistoryPage, HistoryQuery, Status

_AT = {name: i for i, name in enumerate(ITEM_FIELDS)}
_ID, _LAST, _POS, _DONE = _AT["asset_id"], _AT["last_watched_at"], _AT["position"], _AT["completed"]
_DONE_AT = _AT["completed_at"]
_SPORT, _SERIES, _TEAMS, _SHOW, _SEASON, _TYPE = (
    _AT["sport"],
    _AT["series"],
    _AT["teams"],
    _AT["show"],
    _AT["season"],
    _AT["asset_type"],
)


def _field(values: list[Any], index: int) -> Any:
    return values[index] if index < len(values) else None


def is_dismissed(values: list[Any]) -> bool:
    """Whether an item is out of continue watching: dismissed (``POST .../dismiss``) and
    not watched since (lastWatchedAt not after dismissedAt)."""
    dismissed = _field(values, DISMISSED_POSITION)
    return dismissed is not None and values[_LAST] <= dismissed


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the (lastWatchedAt, assetId) of its last item.

    Keyset pagination: the next page starts strictly after this key in history order,
    wherever the array has shifted since, so an item not written between two pages is
    neither skipped nor repeated.
    """

    last_watched_at: int
    asset_id: str
    query_hash: str

    def encode(self) -> str:
        raw = json.dumps([self.last_watched_at, self.asset_id, self.query_hash])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, query_hash: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            last, asset_id, bound_to = json.loads(raw)
            if not (isinstance(last, int) and isinstance(asset_id, str)):
                raise ValueError(text)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise InvalidInputError("cursor is malformed: pass nextCursor as returned") from None
        if bound_to != query_hash:
            raise InvalidInputError(
                "cursor belongs to another query or profile: keep the same filters and profile"
            )
        return cls(last, asset_id, query_hash)


def query_hash(filter_key: str) -> str:
    """A short digest of a query's filters (``HistoryQuery.filter_key``)."""
    return hashlib.blake2b(filter_key.encode(), digest_size=6).hexdigest()


def decode_all(packed_items: Iterable[str | bytes]) -> list[list[Any]]:
    """Decode many packed items with one call into the JSON parser (not one each;
    orjson: a third of the stdlib's time on a 40-item prefix)."""
    texts = [p.decode() if isinstance(p, bytes) else p for p in packed_items]
    decoded: list[list[Any]] = orjson.loads("[" + ",".join(texts) + "]")
    return decoded


@dataclass(frozen=True, slots=True)
class SelectedPage:
    """A page as a query selected it: the stored items, decoded (codec.py's arrays),
    not yet shaped. ``to_api()`` is the read API's body; ``to_model()`` the same page
    as validated models (for code that works with HistoryItem)."""

    values: list[list[Any]]
    next_cursor: str | None

    def to_model(self) -> HistoryPage:
        return HistoryPage(items=items_from_values(self.values), next_cursor=self.next_cursor)

    def to_api(self) -> dict[str, Any]:
        """``{"items": [...], "nextCursor": str | null}``: ``to_model()`` as the API
        dumps it (camelCase, nulls left out of items), without building the models."""
        return {"items": [item_to_api(v) for v in self.values], "nextCursor": self.next_cursor}


_Check = Callable[[list[Any]], bool]


def _equals(index: int, wanted: Any) -> _Check:
    """A check that field ``index`` of an item is ``wanted``."""
    return lambda values: _field(values, index) == wanted


class Selection:
    """The items of one profile that a query selects, in history order."""

    def __init__(
        self, query: HistoryQuery, min_resume_seconds: float, profile_id: str = ""
    ) -> None:
        self.query = query
        self.min_resume_seconds = min_resume_seconds
        self.filter_key = query.filter_key()
        self.profile_id = profile_id
        self.after = Cursor.decode(query.cursor, self.hash) if query.cursor else None
        self._checks = self._compile_checks()
        self._continue_watching = query.status is Status.IN_PROGRESS

    @cached_property
    def hash(self) -> str:
        """What cursors of this query are bound to: its filters and the profile (a cursor
        of one profile is refused on another). Only computed when a cursor is used."""
        return query_hash(f"{self.profile_id}\n{self.filter_key}")

    def _compile_checks(self) -> tuple[_Check, ...]:
        """One small test per filter the query sets (an unfiltered query has none), so
        that ``matches`` does not re-read every filter for every item."""
        q = self.query
        checks: list[_Check] = []
        if q.asset_ids:
            ids = frozenset(q.asset_ids)
            checks.append(lambda v: v[_ID] in ids)
        for index, wanted in (
            (_SPORT, q.sport),
            (_SERIES, q.series),
            (_SHOW, q.show),
            (_SEASON, q.season),
            (_TYPE, q.asset_type),
        ):
            if wanted is not None:
                checks.append(_equals(index, wanted))
        if q.teams:
            teams = frozenset(q.teams)
            checks.append(lambda v: not teams.isdisjoint(_field(v, _TEAMS) or ()))
        resume_from = self.min_resume_seconds
        if q.status is Status.EVER_COMPLETED:
            checks.append(lambda v: _field(v, _DONE_AT) is not None)
        elif q.status is Status.COMPLETED:
            checks.append(lambda v: bool(v[_DONE]))
        elif q.status is Status.IN_PROGRESS:
            checks.append(lambda v: not v[_DONE] and v[_POS] >= resume_from)
        return tuple(checks)

    def asset_check(self) -> Callable[[list[Any]], bool] | None:
        """A check on an asset's 8 values (``codec.ASSET_FIELDS``) for the query's
        filters on what an asset is, or None when it has none: the store runs it on
        asset records before decoding items."""
        q = self.query
        wanted = [
            (ASSET_FIELDS.index(name), value)
            for name, value in (
                ("sport", q.sport),
                ("series", q.series),
                ("show", q.show),
                ("season", q.season),
                ("asset_type", q.asset_type),
            )
            if value is not None
        ]
        teams = frozenset(q.teams) if q.teams else None
        if not wanted and teams is None:
            return None
        at_teams = ASSET_FIELDS.index("teams")

        def check(asset: list[Any]) -> bool:
            for index, value in wanted:
                if asset[index] != value:
                    return False
            return teams is None or not teams.isdisjoint(asset[at_teams] or ())

        return check

    def matches(self, values: list[Any]) -> bool:
        """Whether a decoded item passes every filter of the query."""
        for check in self._checks:  # noqa: SIM110 (all() and a generator: slower per item)
            if not check(values):
                return False
        return True

    def _group(self, values: list[Any]) -> Any:
        if self.query.collapse == "show":
            show = _field(values, _SHOW)
            return ("show", show) if show is not None else ("asset", values[_ID])
        series = _field(values, _SERIES)
        if series is not None:
            return ("series", _field(values, _SPORT), series)
        return ("asset", values[_ID])

    def _is_after_cursor(self, values: list[Any]) -> bool:
        c = self.after
        if c is None:
            return True
        last: int = values[_LAST]
        asset_id: str = values[_ID]
        return last < c.last_watched_at or (last == c.last_watched_at and asset_id > c.asset_id)

    def scan(self, items: Iterable[list[Any]]) -> Iterator[list[Any]]:
        """Matching items (decoded: see ``decode_all``) after the cursor, in order.

        Continue watching (``status=in_progress``) leaves dismissed items out
        (``is_dismissed``); collapsed, a dismissed item still stands for its show or
        series, so that the rail does not bring up an older episode in its place."""
        seen_groups: set[Any] = set()
        collapse = self.query.collapse is not None
        continue_watching = self._continue_watching
        for values in items:
            if not self.matches(values):
                continue
            if collapse:
                group = self._group(values)
                if group in seen_groups:
                    continue  # an item of this show/series came earlier: it is the newest
                seen_groups.add(group)
            if continue_watching and is_dismissed(values):
                continue
            if self._is_after_cursor(values):
                yield values

    def page(self, items: Iterable[list[Any]], *, complete: bool) -> SelectedPage | None:
        """The page, or None when ``items`` (decoded) are only a prefix that does not fill it.

        ``complete`` says whether ``items`` are the whole history.
        """
        limit = self.query.limit
        chosen: list[list[Any]] = []
        for values in self.scan(items):
            chosen.append(values)
            if len(chosen) > limit:
                break
        if len(chosen) <= limit and not complete:
            return None
        more = len(chosen) > limit
        chosen = chosen[:limit]
        next_cursor = None
        if more:
            last = chosen[-1]
            next_cursor = Cursor(last[_LAST], last[_ID], self.hash).encode()
        return SelectedPage(chosen, next_cursor)
