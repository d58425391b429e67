"""``HistoryStore``: the only code that talks to the server.

Every write is one Lua script call per profile (lua/*.lua, with lua/common.lua in
front), so the rules hold atomically whatever runs concurrently. Reads are plain
JSON.GETs of the sorted history array (or one script for lookups by asset id).

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
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

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

from watch_history.changes import ChangeRecords, decode_token, delta
from watch_history.coalesce import AssetGroup, group_by_profile
from watch_history.codec import decode_item
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
    from_epoch_ms,
)
from watch_history.query import Selection, decode_all
from watch_history.settings import Settings

__all__ = ["BatchResult", "HistoryStore", "RecordOutcome", "check_id"]

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


@cache
def _script(name: str) -> _Script:
    """A script's source: lua/common.lua, then lua/<name>.lua."""
    source = (_LUA / "common.lua").read_text() + "\n" + (_LUA / f"{name}.lua").read_text()
    return _Script(name, source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 (the server's script id)


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
        self._record_config = json.dumps(
            [settings.completion_threshold, settings.max_items, 0], separators=(",", ":")
        )
        self._record_config_items = json.dumps(
            [settings.completion_threshold, settings.max_items, 1], separators=(",", ":")
        )

    # --- keys and checks ----------------------------------------------------------------

    def key(self, profile_id: str) -> str:
        """The profile's key. The ``{hash tag}`` keeps every command on one cluster slot."""
        return f"{self.settings.key_prefix}{{{check_id('profileId', profile_id)}}}"

    def latest_event_time(self) -> datetime:
        """The latest eventTime accepted now (``MAX_FUTURE_SKEW_SECONDS`` ahead)."""
        return from_epoch_ms(self._clock_ms() + self.settings.max_future_skew_seconds * 1000)

    def check_update(self, update: ProgressUpdate, latest: datetime | None = None) -> None:
        """InvalidInputError if the update can never be accepted (beyond its schema).

        ``latest``: ``latest_event_time()``, which a batch computes once.
        """
        check_id("profileId", update.profile_id)
        check_id("assetId", update.asset_id)
        if update.event_time > (latest or self.latest_event_time()):
            raise InvalidInputError(
                f"eventTime {update.event_time.isoformat()} is more than "
                f"{self.settings.max_future_skew_seconds} s in the future"
            )

    # --- writes -------------------------------------------------------------------------

    def record_progress(self, update: ProgressUpdate) -> HistoryItem:
        """Record one update; the stored item after it.

        Raises StaleUpdateError (with ``.item``, the stored item or None) when the update
        changed nothing that counts because it was not newer, or came after a removal.
        """
        self.check_update(update)
        group = AssetGroup(update.profile_id, update.asset_id, [(0, update)])
        reply = self._run(
            "record_progress",
            update.profile_id,
            [self._record_config_items, group.script_argument(self.settings.completion_threshold)],
        )
        status, packed = reply[0]
        outcome = _outcome(status)
        item = decode_item(packed) if packed else None
        if outcome is RecordOutcome.APPLIED and item is not None:
            return item
        raise StaleUpdateError(item, outcome.value)

    def record_batch(self, updates: Sequence[ProgressUpdate]) -> BatchResult:
        """Record many updates: collapsed per (profile, asset), one script call per profile,
        pipelined ``settings.pipeline_profiles`` profiles per round trip.

        Never raises for one bad update or one unreachable shard: each update's outcome
        or error is in the result, by its index in ``updates``.
        """
        return self.record_stream([list(enumerate(updates))])

    def record_stream(self, parts: Iterable[Sequence[tuple[int, ProgressUpdate]]]) -> BatchResult:
        """``record_batch`` for updates that arrive in parts, as (index, update) pairs.

        Each part is collapsed and sent (one writer thread, round trips in order) while
        the caller produces the next part: the recorder decodes the records of the next
        profiles while the server applies the previous ones. Put all updates of one
        profile in one part to keep to one script call per profile; splitting a profile
        across parts costs a round trip, not correctness (the rules do not depend on
        order). The result is keyed by the callers' indices.
        """
        result = BatchResult()
        latest = self.latest_event_time()
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
            in_flight.extend(self._send(list(group_by_profile(valid).items())))
        pending = self._gather(in_flight, result)
        # A removal between the records of one collapsed update (rare) sends them again,
        # one by one, in a second pass.
        while pending:
            pending = self._gather(self._send(pending), result)
        return result

    def _send(self, profiles: list[tuple[str, list[AssetGroup]]]) -> list[_InFlight]:
        """Queue the profiles' script calls on the writer thread, a round trip per
        ``settings.pipeline_profiles`` profiles."""
        threshold = self.settings.completion_threshold
        size = self.settings.pipeline_profiles
        sent = []
        for start in range(0, len(profiles), size):
            chunk = profiles[start : start + size]
            calls = [
                (profile_id, [self._record_config, *(g.script_argument(threshold) for g in groups)])
                for profile_id, groups in chunk
            ]
            sent.append((chunk, self._writer().submit(self._execute, "record_progress", calls)))
        return sent

    @staticmethod
    def _gather(
        in_flight: list[_InFlight], result: BatchResult
    ) -> list[tuple[str, list[AssetGroup]]]:
        """Wait for the round trips, in order; record outcomes and failures in ``result``.
        Returns the groups to send again one by one ("split")."""
        split: list[tuple[str, list[AssetGroup]]] = []
        for chunk, future in in_flight:
            replies = future.result()
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
                    outcome = _OUTCOMES[status]
                    for index in group.indices:
                        result.outcomes[index] = outcome
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

    def clear(self, profile_id: str) -> int:
        """Remove every item (one watermark: updates at or before it are ignored).
        The number of items that were there."""
        return int(self._run("clear_history", profile_id, []))

    # --- reads --------------------------------------------------------------------------

    def get_items(self, profile_id: str, asset_ids: Sequence[str]) -> dict[str, HistoryItem]:
        """The stored items of these assets (missing ones are left out)."""
        ids = list(dict.fromkeys(check_id("assetId", a) for a in asset_ids))
        if len(ids) > MAX_ASSET_IDS:
            raise InvalidInputError(f"at most {MAX_ASSET_IDS} asset ids at once")
        if not ids:
            return {}
        packed = self._run("get_items", profile_id, ids)
        return {a: decode_item(p) for a, p in zip(ids, packed, strict=True) if p}

    def get_item(self, profile_id: str, asset_id: str) -> HistoryItem | None:
        return self.get_items(profile_id, [asset_id]).get(asset_id)

    def changes(self, profile_id: str, since: str | None = None) -> HistoryChanges:
        """What changed in the profile's history since the token ``since`` (None: all).

        One script call reads the items and every change record at once (see
        changes.py for what a client does with the answer). InvalidInputError for a
        malformed or foreign token, TokenExpiredError for one the history can no
        longer answer.
        """
        check_id("profileId", profile_id)
        stamp = decode_token(profile_id, since) if since else 0
        reply = self._run("read_changes", profile_id, [])
        return delta(profile_id, ChangeRecords.from_reply(reply), stamp)

    def query(self, profile_id: str, query: HistoryQuery) -> HistoryPage:
        """A page of the profile's history: newest lastWatchedAt first, ties assetId.

        The array is kept in that order, so the first page usually needs only a prefix
        of it (``settings.read_prefix_items`` items); the whole array is read when the
        prefix does not fill the page, and for later pages (cursor).
        """
        selection = Selection(query, self.settings.min_resume_seconds)
        key = self.key(profile_id)
        if query.asset_ids:
            items = self._run("get_items", profile_id, list(dict.fromkeys(query.asset_ids)))
            found = decode_all([p for p in items if p])
            found.sort(key=lambda v: (-v[1], v[0]))  # history order: newest first, then id
            return _page_of(selection, found)
        if query.cursor is None:
            # Unfiltered, the first limit+1 items are the page; filtered (status, collapse
            # or any field), a longer prefix usually holds enough matches.
            prefix = query.limit + 1
            if selection.filter_key != _NO_FILTERS:
                prefix = max(self.settings.read_prefix_items, prefix)
            packed = self._json_get(key, f"$.h[0:{prefix}]")
            page = selection.page(decode_all(packed), complete=len(packed) < prefix)
            if page is not None:
                return page
        return _page_of(selection, decode_all(self._json_get(key, "$.h")))

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

    def _json_get(self, key: str, path: str) -> list[Any]:
        """The values a $-path selects: the array's items for "$.h", the slice's for a slice."""
        try:
            raw = self.client.execute_command("JSON.GET", key, path)
        except HistoryError:
            raise  # e.g. the credentials: a ConfigurationError stays one
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(f"reading {key}: {exc}") from exc
        if raw is None:
            return []
        matches: list[Any] = json.loads(raw)
        if path.endswith("]"):
            return matches  # a slice selects each item
        return matches[0] if matches else []

    def _run(self, name: str, profile_id: str, args: Sequence[str]) -> Any:
        reply = self._execute(name, [(profile_id, args)])[0]
        if isinstance(reply, HistoryError):
            raise reply
        return reply

    def _execute(
        self, name: str, calls: Sequence[tuple[str, Sequence[str]]]
    ) -> list[Any | HistoryError]:
        """Run script ``name`` once per (profile, args) in one pipelined round trip.

        Each reply is the script's result or a HistoryError for that call. A script the
        server does not know (NOSCRIPT: first use, or its cache emptied by a failover or
        restart) is loaded and those calls run again. RedisCluster's pipeline refuses
        ``evalsha()``; the generic ``execute_command("EVALSHA", ...)`` is routed by key.
        """
        script = _script(name)
        keys = [self.key(profile_id) for profile_id, _ in calls]
        replies: list[Any | HistoryError] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            results = self._pipeline(script.sha, [(keys[i], calls[i][1]) for i in todo])
            pairs = list(zip(todo, results, strict=True))
            missing = [i for i, r in pairs if isinstance(r, NoScriptError)]
            for i, res in pairs:
                if not isinstance(res, NoScriptError):
                    replies[i] = _as_reply(res, keys[i])
            if not missing:
                break
            if attempt == 1:
                for i in missing:
                    replies[i] = StoreUnavailableError(f"script {name} keeps missing on the server")
                break
            self._load_script(script)
            todo = missing
        return replies

    def _pipeline(self, sha: str, calls: Iterable[tuple[str, Sequence[str]]]) -> list[Any]:
        """One round trip (per shard): EVALSHA per call; errors come back as values."""
        calls = list(calls)
        client = self.client
        if not isinstance(client, RedisCluster):
            return self._node_pipeline(client, sha, calls)
        # Cluster: one plain pipeline per primary, so that a shard that is down (or
        # failing over) fails only the profiles it holds. RedisCluster's own pipeline
        # raises for all of them when one node refuses, and refuses EVALSHA anyway.
        by_node: dict[str, tuple[Any, list[int]]] = {}
        replies: list[Any] = [None] * len(calls)
        for i, (key, _) in enumerate(calls):
            try:
                node = client.get_node_from_key(key)
            except (RedisError, RedisClusterException) as exc:
                replies[i] = StoreUnavailableError(f"{key}: no node for its slot: {exc}")
                continue
            by_node.setdefault(node.name, (node, []))[1].append(i)
        stale_topology = False
        groups = list(by_node.values())

        def run(group: tuple[Any, list[int]]) -> list[Any]:
            node, indices = group
            conn = client.get_redis_connection(node)
            return self._node_pipeline(conn, sha, [calls[i] for i in indices])

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
        if stale_topology:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                client.nodes_manager.initialize()  # the retry will find the new owners
        return replies

    @staticmethod
    def _node_pipeline(
        node: redis.Redis, sha: str, calls: Sequence[tuple[str, Sequence[str]]]
    ) -> list[Any]:
        try:
            pipe = node.pipeline(transaction=False)
            for key, args in calls:
                pipe.execute_command("EVALSHA", sha, 1, key, *args)
            return list(pipe.execute(raise_on_error=False))
        except HistoryError as exc:
            return [exc] * len(calls)
        except (RedisError, RedisClusterException, OSError) as exc:
            error = StoreUnavailableError(f"pipeline of {len(calls)} calls failed: {exc}")
            return [error] * len(calls)

    def _load_script(self, script: _Script) -> None:
        try:
            # RedisCluster sends SCRIPT LOAD to every primary.
            self.client.script_load(script.source)
        except HistoryError:
            raise
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailableError(f"loading script {script.name}: {exc}") from exc


_NO_FILTERS: Final = HistoryQuery().filter_key()


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


def _page_of(selection: Selection, items: list[list[Any]]) -> HistoryPage:
    page = selection.page(items, complete=True)
    assert page is not None  # a complete list always makes a page
    return page
