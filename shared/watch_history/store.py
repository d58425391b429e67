"""``HistoryStore``: the only code that talks to the server.

Every write is one Lua script call per profile (lua/*.lua, with lua/common.lua in
front), so the rules hold atomically whatever runs concurrently, preceded (once per
process and description) by a ``SET NX`` of the asset records its updates name. Reads
are plain JSON.GETs of the sorted history array and its ids (or one script for
lookups by asset id), joined to the asset records (MGET, cached per process).

This class is the seam for fault and load testing: it takes any redis-py client
(standalone or cluster) and a ``Settings`` (every knob a benchmark turns is one);
``_pipeline`` is the one place a round trip of script calls meets the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Final

import orjson
import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from watch_history.changes import ChangeRecords, Delta, decode_token, delta
from watch_history.coalesce import AssetGroup, group_by_profile
from watch_history.codec import (
    AssetValues,
    RecordId,
    asset_key,
    asset_values_of,
    fast_fields,
    is_layout3,
    item_asset,
    item_from_values,
    item_refs,
    item_values,
    split_ids,
    split_item,
    update_argument,
)
from watch_history.connection import ClientType
from watch_history.errors import (
    HistoryError,
    InvalidInputError,
    StaleUpdateError,
    StoreUnavailableError,
)
from watch_history.models import (
    ID_MAX_LENGTH,
    ID_PATTERN,
    ID_RULE,
    MAX_ASSET_IDS,
    HistoryChanges,
    HistoryItem,
    HistoryPage,
    HistoryQuery,
    ProgressUpdate,
    RecordOutcome,
    Status,
)
from watch_history.query import SelectedPage, Selection, decode_all
from watch_history.settings import Settings

__all__ = ["BatchResult", "HistoryStore", "RecordOutcome", "UpgradeOutcome", "check_id"]

_ID = re.compile(ID_PATTERN)
_LUA: Final = Path(__file__).with_name("lua")
_DAY_MS: Final = 86_400_000


# The one-letter statuses of record_progress.lua ("x": split, handled by record_stream),
# as characters and as the ints that iterating a bytes reply gives.
_OUTCOMES: Final = {
    "a": RecordOutcome.APPLIED,
    "s": RecordOutcome.STALE,
    "i": RecordOutcome.IGNORED,
    ord("a"): RecordOutcome.APPLIED,
    ord("s"): RecordOutcome.STALE,
    ord("i"): RecordOutcome.IGNORED,
}
_SPLIT: Final = {"x", ord("x")}


@dataclass(frozen=True, slots=True)
class _Script:
    name: str
    source: str
    sha: str


_PARTS: Final = {"record_progress": ("fast_heartbeat", "common", "update_rules")}
"""The files a script is built from, before its own (default: lua/common.lua only; the
update rules only where updates are applied: every function a script defines costs
each of its calls; the heartbeat's fast path first, before anything is defined)."""


@cache
def _script(name: str) -> _Script:
    """A script's source: its parts (``_PARTS``), then lua/<name>.lua, as one chunk."""
    parts = (*_PARTS.get(name, ("common",)), name)
    source = "\n".join((_LUA / f"{part}.lua").read_text() for part in parts)
    return _Script(name, source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 (the server's script id)


class UpgradeOutcome(StrEnum):
    """What ``HistoryStore.upgrade_layout`` did to a key (lua/upgrade_layout.lua's letters)."""

    UPGRADED = "upgraded"  # brought to codec.LAYOUT (a dry run: it would be)
    CURRENT = "already current"  # in codec.LAYOUT already: untouched
    NOT_HISTORY = "not a history"  # another type, another key shape, or gone: untouched
    NEWER = "newer layout"  # written by newer code than this: untouched


_UPGRADE_OUTCOMES: Final = {
    b"u": UpgradeOutcome.UPGRADED,
    b"c": UpgradeOutcome.CURRENT,
    b"n": UpgradeOutcome.NOT_HISTORY,
    b"f": UpgradeOutcome.NEWER,
}


_InFlight = tuple[list[tuple[str, list[AssetGroup]]], Future[list[Any]]]
"""A chunk of (profile, its groups) and the round trip that carries it."""


@dataclass(slots=True)
class BatchResult:
    """Per update of a batch (by its index): the outcome, or the error that stopped it."""

    outcomes: dict[int, RecordOutcome] = field(default_factory=dict)
    failures: dict[int, HistoryError] = field(default_factory=dict)
    round_trips: int = 0


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a valid id, else InvalidInputError naming the kind of id."""
    if not isinstance(value, str) or len(value) > ID_MAX_LENGTH or not _ID.fullmatch(value):
        raise InvalidInputError(f"{kind} {value!r} is {ID_RULE}")
    return value


class HistoryStore:
    """Watch history of profiles, one JSON document per profile (see codec.py)."""

    def __init__(
        self,
        client: ClientType,
        settings: Settings,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._writer_thread: ThreadPoolExecutor | None = None
        self._shard_pool: ThreadPoolExecutor | None = None
        self._max_skew_ms = int(settings.max_future_skew_seconds * 1000)
        # record_progress.lua's ARGV[1]
        self._record_config = f"{settings.completion_threshold},{settings.max_items},0"
        self._record_config_items = f"{settings.completion_threshold},{settings.max_items},1"
        # Asset records (codec.py): the keys this process wrote or saw written, and the
        # values of those it read. Records never change, so neither goes stale.
        self._records_written: set[str] = set()
        self._records_read: dict[RecordId, AssetValues] = {}

    # --- keys and checks ----------------------------------------------------------------

    def key(self, profile_id: str) -> str:
        """The profile's key. The ``{hash tag}`` keeps every command on one cluster slot."""
        return f"{self.settings.key_prefix}{{{check_id('profileId', profile_id)}}}"

    def latest_event_ms(self, received_ms: int | None = None) -> int:
        """The latest eventTime (epoch ms) accepted for an update received at
        ``received_ms`` (epoch ms: Kinesis' approximateArrivalTimestamp; default now):
        the earlier of that and this clock, plus ``MAX_FUTURE_SKEW_SECONDS``. Device
        clocks are not trusted: an update dated later could hold its item "stale"
        against true progress. Integers, not datetimes: the recorder asks per record."""
        now = self._clock_ms()
        received = now if received_ms is None or received_ms > now else received_ms
        return received + self._max_skew_ms

    def check_update(self, update: ProgressUpdate, latest_ms: int | None = None) -> None:
        """InvalidInputError if the update can never be accepted (beyond its schema).

        ``latest_ms``: ``latest_event_ms()``, which a batch computes once.
        """
        check_id("profileId", update.profile_id)
        check_id("assetId", update.asset_id)
        self.check_event_time(update, self.latest_event_ms() if latest_ms is None else latest_ms)

    def check_event_time(self, update: ProgressUpdate, latest_ms: int) -> None:
        """InvalidInputError if the update's eventTime is later than ``latest_ms`` (to the
        microsecond: an eventTime inside that millisecond but after it is later too)."""
        event_ms = update.event_ms
        if event_ms > latest_ms or (event_ms == latest_ms and update.event_time.microsecond % 1000):
            raise InvalidInputError(
                f"eventTime {update.event_time.isoformat()} is more than "
                f"{self.settings.max_future_skew_seconds} s in the future of when it was received"
            )

    # --- writes -------------------------------------------------------------------------

    def record_progress(self, update: ProgressUpdate) -> HistoryItem:
        """Record one update; the stored item after it.

        Raises StaleUpdateError (with ``.item``, the stored item or None) when the update
        changed nothing that counts because it was not newer, or came after a removal.
        """
        self.check_update(update)
        group = AssetGroup(update.profile_id, update.asset_id, [(0, update)])
        settings = self.settings
        argument, named = update_argument(
            group.collapsed(settings.completion_threshold, settings.min_resume_seconds)
        )
        self._write_records([named] if named else [], _Budget())
        arguments = [self._record_config_items, argument]
        reply = self._run("record_progress", update.profile_id, arguments)
        status, text = reply[0]
        outcome = _outcome(status)
        item = None
        if text:
            item = item_from_values(self._join([(update.asset_id, _text(text))])[0])
        if outcome is RecordOutcome.APPLIED and item is not None:
            return item
        raise StaleUpdateError(item, outcome.value)

    def record_batch(
        self, updates: Sequence[ProgressUpdate], *, exact_outcomes: bool = False
    ) -> BatchResult:
        """Record many updates: collapsed per (profile, asset), one script call per profile,
        pipelined ``settings.pipeline_profiles`` profiles per round trip.

        Never raises for one bad update or one unreachable shard: each update's outcome
        or error is in the result, by its index in ``updates``. ``exact_outcomes``: each
        outcome is the one the update would get alone, in order (``group_by_profile``).
        """
        return self.record_stream([list(enumerate(updates))], exact_outcomes=exact_outcomes)

    def record_stream(
        self,
        parts: Iterable[Sequence[tuple[int, ProgressUpdate]]],
        *,
        deadline: float | None = None,
        exact_outcomes: bool = False,
    ) -> BatchResult:
        """``record_batch`` for updates that arrive in parts, as (index, update) pairs.

        Each part is collapsed and sent (one writer thread, round trips in order) while
        the caller produces the next part: the recorder decodes the records of the next
        profiles while the server applies the previous ones. Put all updates of one
        profile in one part to keep to one script call per profile; splitting a profile
        across parts costs a round trip, not correctness (the rules do not depend on
        order). The result is keyed by the callers' indices.

        ``deadline`` (``time.monotonic()``): when the caller must be done sending (the
        recorder's Lambda timeout less ``DEADLINE_MARGIN_SECONDS``). No round trip starts
        later than one worst-case round trip (connect + socket timeout) before it, and a
        node that timed out gets no more round trips in this call: the updates not sent
        fail with ``StoreUnavailableError`` (the recorder reports them for retry).
        """
        result = BatchResult()
        latest = self.latest_event_ms()
        budget = _Budget(None if deadline is None else deadline - self._worst_round_trip())
        in_flight: list[_InFlight] = []
        for part in parts:
            valid: list[tuple[int, ProgressUpdate]] = []
            for index, update in part:
                try:
                    self.check_update(update, latest)
                except InvalidInputError as exc:
                    result.failures[index] = exc
                else:
                    valid.append((index, update))
            groups = group_by_profile(
                valid, self.settings.min_resume_seconds, exact_outcomes=exact_outcomes
            )
            in_flight.extend(self._send(list(groups.items()), budget))
        pending = self._gather(in_flight, result)
        # A removal between the records of one collapsed update (rare) sends them again,
        # one by one, in a second pass.
        while pending:
            pending = self._gather(self._send(pending, budget), result)
        return result

    def _worst_round_trip(self) -> float:
        """Seconds one round trip can take at worst: retries never wait out a timeout
        (connection.py), so one connect timeout plus one socket timeout."""
        return self.settings.redis_connect_timeout + self.settings.redis_socket_timeout

    def _send(
        self, profiles: list[tuple[str, list[AssetGroup]]], budget: _Budget
    ) -> list[_InFlight]:
        """Queue the profiles' script calls on the writer thread, a round trip per
        ``settings.pipeline_profiles`` profiles."""
        threshold = self.settings.completion_threshold
        min_resume = self.settings.min_resume_seconds
        size = self.settings.pipeline_profiles
        sent = []
        for start in range(0, len(profiles), size):
            chunk = profiles[start : start + size]
            calls = []
            named = []
            for profile_id, groups in chunk:
                arguments = [self._record_config]
                for group in groups:
                    collapsed = group.collapsed(threshold, min_resume)
                    argument, record = update_argument(collapsed)
                    arguments.append(argument)
                    if record is not None:
                        named.append(record)
                    if len(groups) == 1:  # one update: fast_heartbeat.lua may take it
                        arguments[0] += fast_fields(collapsed, record)
                calls.append((profile_id, arguments))
            future = self._writer().submit(self._record_chunk, calls, named, budget)
            sent.append((chunk, future))
        return sent

    def _record_chunk(
        self,
        calls: list[tuple[str, list[str]]],
        named: list[tuple[str, str, str]],
        budget: _Budget,
    ) -> list[Any | HistoryError]:
        """The asset records the chunk's updates name (those not known written), then
        the chunk's script calls. Records first: an item never names a missing record.
        When they cannot be written, no call is sent: each fails, to be retried."""
        try:
            self._write_records(named, budget)
        except HistoryError as exc:
            return [exc] * len(calls)
        return self._execute("record_progress", calls, budget)

    def _write_records(self, named: Iterable[tuple[str, str, str]], budget: _Budget) -> None:
        """``SET NX`` the asset records (assetId, version, text) this process has not
        written yet, in one pipelined round trip (per node in a cluster); raises
        StoreUnavailableError when any is not known written."""
        prefix = self.settings.key_prefix
        todo: dict[str, tuple[RecordId, str]] = {}
        for asset_id, version, text in named:
            key = asset_key(prefix, asset_id, version)
            if key not in self._records_written:
                todo[key] = ((asset_id, version), text)
        if not todo:
            return
        if budget.expired():
            raise StoreUnavailableError("not sent: the invocation's deadline is near")
        try:
            client = self.client
            pipe = client.pipeline() if isinstance(client, RedisCluster) else client.pipeline(False)
            for key, (_, text) in todo.items():
                pipe.set(key, text, nx=True)
            pipe.execute()
        except HistoryError:
            raise
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(f"writing {len(todo)} asset records: {exc}") from exc
        if len(self._records_written) + len(todo) > RECORDS_KEPT:
            self._records_written.clear()
        self._records_written.update(todo)
        for record_id, text in todo.values():
            self._remember_record(record_id, asset_values_of(text))

    def _remember_record(self, record_id: RecordId, values: AssetValues) -> None:
        if len(self._records_read) >= RECORDS_KEPT:
            self._records_read.clear()
        self._records_read[record_id] = values

    def _records(self, wanted: Iterable[RecordId]) -> dict[RecordId, AssetValues]:
        """The asset records ``wanted``: from this process's cache, the rest in one
        MGET (non-atomic, per slot, on a cluster: records are immutable). A record
        that is missing (none is ever deleted by the service) is left out."""
        found: dict[RecordId, AssetValues] = {}
        missing: list[RecordId] = []
        for record_id in wanted:
            values = self._records_read.get(record_id)
            if values is None:
                missing.append(record_id)
            else:
                found[record_id] = values
        if not missing:
            return found
        prefix = self.settings.key_prefix
        keys = [asset_key(prefix, a, v) for a, v in missing]
        try:
            client = self.client
            if isinstance(client, RedisCluster):
                texts = client.mget_nonatomic(keys)
            else:
                texts = client.mget(keys)
        except HistoryError:
            raise
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(f"reading {len(keys)} asset records: {exc}") from exc
        for record_id, text in zip(missing, texts, strict=True):
            if text is not None:
                values = asset_values_of(_text(text))
                self._remember_record(record_id, values)
                found[record_id] = values
        return found

    def _join(
        self,
        pairs: Sequence[tuple[str, str]],
        asset_filter: Callable[[list[Any]], bool] | None = None,
    ) -> list[list[Any]]:
        """Layout-3 items, (assetId, text) pairs, as values with their asset fields
        joined from the records they name. With ``asset_filter`` (a check on the 8
        ``codec.ASSET_FIELDS`` values), only the items whose asset passes are decoded."""
        refs = {ref for ref in (item_refs(a, t) for a, t in pairs) if ref is not None}
        records = self._records(refs) if refs else {}
        if asset_filter is None:
            return [item_values(a, t, records) for a, t in pairs]
        return [
            item_values(a, t, records)
            for a, t in pairs
            if asset_filter(item_asset(a, split_item(t), records))
        ]

    @staticmethod
    def _gather(
        in_flight: list[_InFlight], result: BatchResult
    ) -> list[tuple[str, list[AssetGroup]]]:
        """Wait for the round trips, in order; record outcomes and failures in ``result``.
        Returns the groups to send again one by one ("split").

        Never raises: a round trip that failed in a way ``_execute`` did not foresee (a
        bug, an error type redis-py adds) fails its updates, which are retried."""
        split: list[tuple[str, list[AssetGroup]]] = []
        for chunk, future in in_flight:
            try:
                replies = future.result()
            except Exception as exc:  # not a store failure we know: still only a retry
                unexpected = StoreUnavailableError(f"unexpected {type(exc).__name__}: {exc}")
                replies = [unexpected] * len(chunk)
            result.round_trips += 1
            for (profile_id, groups), reply in zip(chunk, replies, strict=True):
                if isinstance(reply, HistoryError):
                    for group in groups:
                        for index in group.indices:
                            result.failures[index] = reply
                    continue
                again = []
                for group, status in zip(groups, reply, strict=True):  # b"aas..": a letter each
                    if status in _SPLIT:
                        again.extend(group.split())
                        continue
                    result.outcomes.update(group.outcomes(_OUTCOMES[status]))
                if again:
                    split.append((profile_id, again))
        return split

    def _shard_threads(self) -> ThreadPoolExecutor:
        """Threads that talk to the shards of a cluster at once (created on first use)."""
        if self._shard_pool is None:
            self._shard_pool = ThreadPoolExecutor(16, thread_name_prefix="history-shard")
        return self._shard_pool

    def _writer(self) -> ThreadPoolExecutor:
        """The one thread that sends record chunks (created on first use)."""
        if self._writer_thread is None:
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="history-writer")
        return self._writer_thread

    def remove(self, profile_id: str, asset_ids: Sequence[str]) -> int:
        """Remove assets and leave tombstones (late updates will not bring them back).
        Idempotent. The number of items that were there."""
        ids = [check_id("assetId", a) for a in asset_ids]
        if not ids:
            return 0
        ttl_ms = int(self.settings.tombstone_ttl_days * _DAY_MS)
        return int(self._run("remove_asset", profile_id, [json.dumps([ttl_ms]), *ids]))

    def dismiss(self, profile_id: str, asset_id: str) -> bool:
        """Take an asset out of continue watching until it is watched again
        (lua/dismiss_asset.lua; the rule: ``query.is_dismissed``). Idempotent. False when
        the history has no such item."""
        check_id("assetId", asset_id)
        return bool(self._run("dismiss_asset", profile_id, [asset_id]))

    def clear(self, profile_id: str) -> int:
        """Remove every item (one watermark: updates at or before it are ignored).
        The number of items that were there."""
        return int(self._run("clear_history", profile_id, []))

    # --- layouts ------------------------------------------------------------------------

    def profile_of_key(self, key: str | bytes) -> str | None:
        """The profile whose history ``key`` is (``key(profile) == key``), else None."""
        if isinstance(key, bytes):
            try:
                key = key.decode()
            except UnicodeDecodeError:
                return None
        head = f"{self.settings.key_prefix}{{"
        if not (key.startswith(head) and key.endswith("}")):
            return None
        profile_id = key[len(head) : -1]
        try:
            return profile_id if self.key(profile_id) == key else None
        except InvalidInputError:
            return None

    def upgrade_layout(self, key: str | bytes, *, dry_run: bool = False) -> UpgradeOutcome:
        """Bring the document at ``key`` to the current layout (codec.LAYOUT), changing
        nothing any read answers: one script call (lua/upgrade_layout.lua). A key that
        is not a history document of this store is left alone. ``dry_run``: only say
        what it would do. StoreUnavailableError when the server does not answer."""
        outcome = self.upgrade_layouts([key], dry_run=dry_run)[0]
        if isinstance(outcome, HistoryError):
            raise outcome
        return outcome

    def upgrade_layouts(
        self, keys: Sequence[str | bytes], *, dry_run: bool = False
    ) -> list[UpgradeOutcome | HistoryError]:
        """``upgrade_layout`` for many keys in one pipelined round trip (per shard): per
        key its outcome, or the error that stopped it (nothing raises)."""
        out: list[UpgradeOutcome | HistoryError] = [UpgradeOutcome.NOT_HISTORY] * len(keys)
        calls, where = [], []
        for i, key in enumerate(keys):
            profile_id = self.profile_of_key(key)
            if profile_id is not None:
                calls.append((profile_id, ["1" if dry_run else "0"]))
                where.append(i)
        if not calls:
            return out
        for i, reply in zip(where, self._execute("upgrade_layout", calls), strict=True):
            if isinstance(reply, HistoryError):
                out[i] = reply
            else:
                out[i] = _UPGRADE_OUTCOMES[reply if isinstance(reply, bytes) else reply.encode()]
        return out

    # --- reads --------------------------------------------------------------------------

    def get_items(self, profile_id: str, asset_ids: Sequence[str]) -> dict[str, HistoryItem]:
        """The stored items of these assets (missing ones are left out)."""
        found = self.find_items(profile_id, asset_ids)
        return {a: item_from_values(values) for a, values in found.items()}

    def find_items(self, profile_id: str, asset_ids: Sequence[str]) -> dict[str, list[Any]]:
        """``get_items`` as decoded stored arrays (codec.py; the read API shapes them with
        ``codec.item_to_api``, without building models)."""
        ids = list(dict.fromkeys(check_id("assetId", a) for a in asset_ids))
        if len(ids) > MAX_ASSET_IDS:
            raise InvalidInputError(f"at most {MAX_ASSET_IDS} asset ids at once")
        if not ids:
            return {}
        layout, *stored = self._run("get_items", profile_id, ids)
        if int(layout) < 3:  # layouts 1 and 2, read as they are
            return {a: orjson.loads(p) for a, p in zip(ids, stored, strict=True) if p}
        pairs = [(a, _text(t)) for a, t in zip(ids, stored, strict=True) if t]
        return {values[0]: values for values in self._join(pairs)}

    def get_item(self, profile_id: str, asset_id: str) -> HistoryItem | None:
        return self.get_items(profile_id, [asset_id]).get(asset_id)

    def changes(self, profile_id: str, since: str | None = None) -> HistoryChanges:
        """What changed in the profile's history since the token ``since`` (None: all),
        as a validated model (``select_changes``)."""
        return self.select_changes(profile_id, since).to_model()

    def select_changes(self, profile_id: str, since: str | None = None) -> Delta:
        """What changed since the token ``since`` (None: all), items still decoded.

        One script call reads the items and every change record at once (see
        changes.py for what a client does with the answer). InvalidInputError for a
        malformed or foreign token, TokenExpiredError for one the history can no
        longer answer.
        """
        check_id("profileId", profile_id)
        stamp = decode_token(profile_id, since) if since else 0
        reply = self._run("read_changes", profile_id, [str(stamp)])
        return delta(profile_id, ChangeRecords.from_reply(reply, self._join), stamp)

    def query(self, profile_id: str, query: HistoryQuery) -> HistoryPage:
        """A page of the profile's history: newest lastWatchedAt first, ties assetId
        (``select_page``, as validated models)."""
        return self.select_page(profile_id, query).to_model()

    def select_page(self, profile_id: str, query: HistoryQuery) -> SelectedPage:
        """The page ``query`` selects, as decoded stored items (the read API shapes
        them with ``SelectedPage.to_api``, without building models).

        The array is kept in history order, so the first page of an unfiltered or
        status-only query usually needs only a prefix of it (``settings.
        read_prefix_items`` items); the whole array is read when the prefix does not
        fill the page, for later pages (cursor), and at once for a query on what an
        asset is (sport, series, team, show, season, assetType): those match few items
        ("this team", "this season"), so a prefix seldom fills their page and reading it
        first only added a round trip. Measured on 150-item profiles (p50 of this call,
        same run): sport 742 -> 495 µs, show 423 -> 299, show+season 618 -> 428; a
        history where the prefix would have filled pays the rest of the array instead.
        """
        selection = Selection(query, self.settings.min_resume_seconds, profile_id)
        key = self.key(profile_id)
        if query.asset_ids:
            found = list(self.find_items(profile_id, query.asset_ids).values())
            found.sort(key=lambda v: (-v[1], v[0]))  # history order: newest first, then id
            return _page_of(selection, found)
        if query.cursor is None and not query.filters_asset_fields():
            # Unfiltered, the first limit+1 items are the page; by status or collapsed,
            # a longer prefix usually holds enough matches.
            prefix = query.limit + 1
            if selection.filter_key != _NO_FILTERS:
                prefix = max(self.settings.read_prefix_items, prefix)
            values, complete = self._read_items(key, prefix)
            page = selection.page(values, complete=complete)
            if page is not None:
                return page
        # On what an asset is, a layout-3 history is filtered on the asset records (one
        # per asset, cached): only the items of matching assets are decoded.
        values, _ = self._read_items(key, None, selection.asset_check())
        return _page_of(selection, values)

    def stored_items(self, profile_id: str) -> list[list[Any]]:
        """Every item of the profile's history, decoded (codec.py's values), any layout."""
        return self._read_items(self.key(profile_id), None)[0]

    def _read_items(
        self,
        key: str,
        prefix: int | None,
        asset_filter: Callable[[list[Any]], bool] | None = None,
    ) -> tuple[list[list[Any]], bool]:
        """The first ``prefix`` items of the history (None: all), decoded, and whether
        they are all of it; in one JSON.GET of the items and their ids, any layout."""
        # A prefix: one more than asked (whether there is more) and layout 3's head.
        # Layout 3's ids are one string, read whole (~30 bytes an item: cheaper than a
        # second round trip).
        paths = ("$.h" if prefix is None else f"$.h[0:{prefix + 2}]", "$.ids")
        try:
            raw = self.client.execute_command("JSON.GET", key, *paths)
        except HistoryError:
            raise  # e.g. the credentials: a ConfigurationError stays one
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(f"reading {key}: {exc}") from exc
        if raw is None:
            return [], True
        got = orjson.loads(raw)
        h = got.get(paths[0]) or []
        if prefix is None:  # a whole array is one match
            h = h[0] if h else []
        if h and is_layout3(h[0]):
            texts = h[1:] if prefix is None else h[1 : prefix + 1]
            complete = prefix is None or len(h) <= prefix + 1
            pairs = list(zip(split_ids((got.get("$.ids") or [""])[0]), texts, strict=False))
            return self._join(pairs, asset_filter), complete
        complete = prefix is None or len(h) <= prefix
        return decode_all(h[:prefix] if prefix is not None else h), complete

    def continue_watching(
        self, profile_id: str, limit: int = 20, cursor: str | None = None
    ) -> HistoryPage:
        """Resumable items (in progress), newest first: the "continue watching" rail."""
        return self.query(
            profile_id, HistoryQuery(status=Status.IN_PROGRESS, limit=limit, cursor=cursor)
        )

    def memory_usage(self, profile_id: str) -> int:
        """Bytes the profile's document takes on the server (MEMORY USAGE)."""
        return int(self.client.memory_usage(self.key(profile_id), samples=0) or 0)

    # --- the network --------------------------------------------------------------------

    def _run(self, name: str, profile_id: str, args: Sequence[str]) -> Any:
        reply = self._execute(name, [(profile_id, args)])[0]
        if isinstance(reply, HistoryError):
            raise reply
        return reply

    def _execute(
        self,
        name: str,
        calls: Sequence[tuple[str, Sequence[str]]],
        budget: _Budget | None = None,
    ) -> list[Any | HistoryError]:
        """Run script ``name`` once per (profile, args) in one pipelined round trip.

        Each reply is the script's result or a HistoryError for that call: nothing
        raises. A script a node does not know (NOSCRIPT: first use, or its cache emptied
        by a failover, a restart or SCRIPT FLUSH) is loaded on that node only, and the
        calls it refused run again; up to ``SCRIPT_ATTEMPTS`` rounds, so a flush landing
        between a load and the rerun costs a round, not the calls. A node that cannot
        load it fails only its own calls. RedisCluster's pipeline refuses ``evalsha()``;
        the generic ``execute_command("EVALSHA", ...)`` is routed by key.
        """
        budget = budget or _Budget()
        script = _script(name)
        keys = [self.key(profile_id) for profile_id, _ in calls]
        replies: list[Any | HistoryError] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(SCRIPT_ATTEMPTS):
            results, nodes = self._pipeline(
                script.sha, [(keys[i], calls[i][1]) for i in todo], budget
            )
            missing: dict[str, tuple[Any, list[int]]] = {}
            for i, res, node in zip(todo, results, nodes, strict=True):
                if isinstance(res, NoScriptError):
                    missing.setdefault(_node_name(node), (node, []))[1].append(i)
                else:
                    replies[i] = _as_reply(res, keys[i])
            todo = []
            for node, indices in missing.values():
                error: HistoryError | None = StoreUnavailableError(
                    f"script {name} keeps missing on {_node_name(node)} "
                    f"after {SCRIPT_ATTEMPTS} loads"
                )
                if attempt + 1 < SCRIPT_ATTEMPTS:
                    error = self._load_script(script, node, budget)
                if error is None:
                    todo.extend(indices)
                else:
                    for i in indices:
                        replies[i] = error
            if not todo:
                break
            todo.sort()
        return replies

    def _pipeline(
        self, sha: str, calls: Iterable[tuple[str, Sequence[str]]], budget: _Budget
    ) -> tuple[list[Any], list[Any]]:
        """One round trip (per shard): EVALSHA per call; errors come back as values.

        Returns the replies and, per call, the cluster node it went to (None on a
        standalone server), so that a NOSCRIPT is answered on that node only."""
        calls = list(calls)
        client = self.client
        if not isinstance(client, RedisCluster):
            return self._node_pipeline(client, _STANDALONE, sha, calls, budget), [None] * len(calls)
        # Cluster: one plain pipeline per primary, so that a shard that is down (or
        # failing over) fails only the profiles it holds. RedisCluster's own pipeline
        # raises for all of them when one node refuses, and refuses EVALSHA anyway.
        by_node: dict[str, tuple[Any, list[int]]] = {}
        replies: list[Any] = [None] * len(calls)
        nodes: list[Any] = [None] * len(calls)
        for i, (key, _) in enumerate(calls):
            try:
                node = client.get_node_from_key(key)
            except (RedisError, RedisClusterException) as exc:
                replies[i] = StoreUnavailableError(f"{key}: no node for its slot: {exc}")
                continue
            nodes[i] = node
            by_node.setdefault(node.name, (node, []))[1].append(i)
        stale_topology = False
        groups = list(by_node.values())

        def run(group: tuple[Any, list[int]]) -> list[Any]:
            node, indices = group
            try:
                conn = client.get_redis_connection(node)
            except (RedisError, RedisClusterException) as exc:
                return [StoreUnavailableError(f"{node.name}: {exc}")] * len(indices)
            return self._node_pipeline(conn, node.name, sha, [calls[i] for i in indices], budget)

        # The shards work in parallel: each pipeline waits on its own socket.
        if len(groups) > 1:
            per_node = list(self._shard_threads().map(run, groups))
        else:
            per_node = [run(g) for g in groups]
        for (_, indices), results in zip(groups, per_node, strict=True):
            for i, result in zip(indices, results, strict=True):
                replies[i] = result
                # MOVED/ASK: slots moved (resharding, failover); a node error: it is down.
                stale_topology |= isinstance(result, MovedError | AskError | HistoryError)
        if stale_topology and budget.may_refresh():
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                client.nodes_manager.initialize()  # the retry will find the new owners
        return replies, nodes

    @staticmethod
    def _node_pipeline(
        node: redis.Redis,
        name: str,
        sha: str,
        calls: Sequence[tuple[str, Sequence[str]]],
        budget: _Budget,
    ) -> list[Any]:
        """One pipelined round trip to one server (``name``: its address, for the budget)."""
        refused = budget.refusal(name)
        if refused is not None:
            return [refused] * len(calls)
        try:
            pipe = node.pipeline(transaction=False)
            for key, args in calls:
                pipe.execute_command("EVALSHA", sha, 1, key, *args)
            return list(pipe.execute(raise_on_error=False))
        except HistoryError as exc:
            return [exc] * len(calls)
        except redis.exceptions.TimeoutError as exc:
            return [budget.timed_out(name, f"pipeline of {len(calls)} calls: {exc}")] * len(calls)
        except (RedisError, RedisClusterException, OSError) as exc:
            error = StoreUnavailableError(f"pipeline of {len(calls)} calls failed: {exc}")
            return [error] * len(calls)

    def _load_script(self, script: _Script, node: Any, budget: _Budget) -> HistoryError | None:
        """SCRIPT LOAD on one node (None: the standalone server); the error, if it failed."""
        name = _node_name(node)
        refused = budget.refusal(name)
        if refused is not None:
            return refused
        try:
            client = self.client
            target = client
            if isinstance(client, RedisCluster):
                target = client.get_redis_connection(node)
            target.script_load(script.source)
        except HistoryError as exc:
            return exc
        except redis.exceptions.TimeoutError as exc:
            return budget.timed_out(name, f"loading script {script.name}: {exc}")
        except (RedisError, RedisClusterException, OSError) as exc:
            return StoreUnavailableError(f"loading script {script.name} on {name}: {exc}")
        return None


_STANDALONE: Final = "server"
SCRIPT_ATTEMPTS: Final = 3
"""Rounds of EVALSHA per batch chunk: NOSCRIPT, load, rerun; again if a flush came between."""


def _node_name(node: Any) -> str:
    return _STANDALONE if node is None else str(node.name)


@dataclass(slots=True)
class _Budget:
    """How long one batch may keep sending, and the servers that stopped answering.

    ``start_by`` (``time.monotonic()``): no round trip starts after it. A server that
    timed out once gets no more round trips from this batch: its calls fail at once
    (reported for retry) instead of each waiting out its own socket timeout. Shared by
    the writer and shard threads; set operations are atomic under the GIL.
    """

    start_by: float | None = None
    silent: set[str] = field(default_factory=set)
    refreshed: bool = False

    def expired(self) -> bool:
        return self.start_by is not None and time.monotonic() >= self.start_by

    def may_refresh(self) -> bool:
        """Whether to re-read the cluster's topology now: once per batch (each refresh is
        a round trip to a startup node, which may be the silent one), in time."""
        if self.refreshed or self.expired():
            return False
        self.refreshed = True
        return True

    def refusal(self, name: str) -> StoreUnavailableError | None:
        """Why a round trip to ``name`` must not start now, or None."""
        if name in self.silent:
            return StoreUnavailableError(f"not sent: {name} timed out earlier in this batch")
        if self.expired():
            return StoreUnavailableError("not sent: the invocation's deadline is near")
        return None

    def timed_out(self, name: str, what: str) -> StoreUnavailableError:
        self.silent.add(name)
        return StoreUnavailableError(f"{name} did not answer in time: {what}")


_NO_FILTERS: Final = HistoryQuery().filter_key()
RECORDS_KEPT: Final = 100_000
"""Asset records a process remembers (written, and read: ~200 bytes each); then it
starts again."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _as_reply(result: Any, key: str) -> Any | HistoryError:
    if isinstance(result, HistoryError):
        return result
    if isinstance(result, ResponseError):
        # An error raised inside a script (e.g. the key holds something that is not a
        # history document). Not the caller's input: retry, then the failure queue.
        return StoreUnavailableError(f"server refused the script on {key}: {result}")
    if isinstance(result, BaseException):
        return StoreUnavailableError(f"{key}: {result}")
    return result


def _outcome(status: bytes | str) -> RecordOutcome:
    return _OUTCOMES[status.decode() if isinstance(status, bytes) else status]


def _page_of(selection: Selection, items: list[list[Any]]) -> SelectedPage:
    page = selection.page(items, complete=True)
    assert page is not None  # a complete list always makes a page
    return page
