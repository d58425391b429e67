"""The four data models the load test compares, behind one small interface.

1. ``store``: this service, through ``HistoryStore`` itself (one JSON document per
   profile holding the sorted history array, shared/watch_history).
2. ``sorted_sets``: the design record's option 1 with a string per item (its packed
   text) plus a sorted set per profile for each lookup dimension, kept in step by one
   script per profile (lua/sorted_sets.lua).
3. ``sorted_sets_hash``: option 1's other variant: one hash per profile holding every
   item, plus the same sorted sets (the same script, ITEMS_IN_HASH).
4. ``search``: one JSON document per item indexed with search (``FT.CREATE ... ON
   JSON``, the redisearch module), one script per profile (lua/search.lua). It needs
   RediSearch on RedisJSON and cannot run on MemoryDB (valkey-json gives the search
   module no JSON; MemoryDB's own search is single-shard and chosen when a cluster is
   created).

All four get the same batches, collapsed the same way (``coalesce.group_by_profile``:
one update per (profile, asset), one script call per profile), pipelined
``settings.pipeline_profiles`` profiles per round trip (per primary in a cluster), and
answer reads as the API does: a ``HistoryPage`` of validated ``HistoryItem``s. The rules
(last writer wins, tombstones, clear-all watermark, MAX_ITEMS) are the same in each
(2 to 4 apply the store's own update_rules.lua, through lua/rules.lua);
tests/test_loadtest.py checks all of them against tests/model.py.

The store also keeps its changes feed (change stamps, eviction records); models 2 to 4
do not: the store's figures include that work.

Models 2 to 4 answer the read routes the comparison needs (continue watching, recency,
by asset ids, sport, sport+series, sport+series+team, show, show+season), first pages
only: no cursor, no collapse, no asset-type or completed filter (``Unsupported``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

import watch_history
from watch_history.coalesce import AssetGroup, group_by_profile
from watch_history.codec import ITEM_FIELDS, items_from_values
from watch_history.connection import ClientType
from watch_history.models import HistoryPage, HistoryQuery, ProgressUpdate, RecordOutcome, Status
from watch_history.query import decode_all
from watch_history.settings import Settings
from watch_history.store import HistoryStore, check_id

_LUA: Final = Path(__file__).with_name("lua")
_DAY_MS: Final = 86_400_000

# item field (codec.py) -> short key in an item's JSON object (the search model's
# documents, and bench_filters' objects document): lua/search.lua has the same list.
SHORT_KEYS: Final = {
    "asset_id": "id",
    "last_watched_at": "t",
    "position": "p",
    "duration": "d",
    "first_watched_at": "f",
    "completed": "c",
    "completed_at": "ca",
    "device_id": "dv",
    "asset_type": "ty",
    "title": "ti",
    "sport": "sp",
    "series": "se",
    "teams": "tm",
    "show": "sh",
    "season": "sn",
    "episode": "ep",
    "device_at": "da",
}

# "split": a removal fell between the records of one collapsed update (record_progress.lua)
_LETTERS: Final = {"a": "applied", "s": "stale", "i": "ignored"}


class Unsupported(Exception):
    """A model cannot run here (search on an engine without it) or cannot answer this
    read; the message says which and why."""


class Model(Protocol):
    """What the load test drives. Every method takes the profiles' ids as the API does."""

    name: str
    settings: Settings

    def setup(self) -> None:
        """Prepare the server (scripts, indexes). Raises Unsupported when it cannot."""

    def teardown(self) -> None:
        """Drop what ``setup`` made (the data goes with FLUSHALL SYNC)."""

    def record_batch(self, updates: Sequence[ProgressUpdate]) -> dict[int, str]:
        """Record a batch (as the recorder does); the outcome of each update by index."""

    def remove(self, profile_id: str, asset_ids: Sequence[str]) -> int: ...

    def clear(self, profile_id: str) -> int: ...

    def query(self, profile_id: str, query: HistoryQuery) -> HistoryPage:
        """The first page of a read route."""

    def key_pattern(self, profile_id: str) -> str:
        """A glob matching every key this model keeps for the profile."""


class StoreModel:
    """Model 1: this service's store, ``HistoryStore``, as it is."""

    name = "store"

    def __init__(self, client: ClientType, settings: Settings) -> None:
        self.settings = settings
        self.store = HistoryStore(client, settings)

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def record_batch(self, updates: Sequence[ProgressUpdate]) -> dict[int, str]:
        result = self.store.record_batch(updates)
        if result.failures:
            index, error = next(iter(result.failures.items()))
            raise RuntimeError(f"{self.name}: update {index} failed: {error}")
        return {i: o.value for i, o in result.outcomes.items()}

    def remove(self, profile_id: str, asset_ids: Sequence[str]) -> int:
        return self.store.remove(profile_id, asset_ids)

    def clear(self, profile_id: str) -> int:
        return self.store.clear(profile_id)

    def query(self, profile_id: str, query: HistoryQuery) -> HistoryPage:
        return self.store.query(profile_id, query)

    def key_pattern(self, profile_id: str) -> str:
        return self.store.key(profile_id)


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str


_UPDATE_RULES: Final = Path(watch_history.__file__).with_name("lua") / "update_rules.lua"


@cache
def _script(name: str, prelude: str) -> _Script:
    """lua/item.lua, the store's update rules (one copy), lua/rules.lua, the model's
    ``prelude`` line, lua/<name>.lua."""
    parts = [f.read_text() for f in (_LUA / "item.lua", _UPDATE_RULES, _LUA / "rules.lua")]
    source = "\n".join([*parts, prelude, (_LUA / f"{name}.lua").read_text()])
    return _Script(source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 (script id)


class _Scripted:
    """Models 2 to 4: a script per profile per call, pipelined per primary."""

    name: str
    script_name: str
    prelude: str = ""

    def __init__(self, client: ClientType, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.prefix = settings.key_prefix
        self._pool: ThreadPoolExecutor | None = None
        self._indexes: dict[str, str] = {}

    # --- the network ------------------------------------------------------------------

    def base(self, profile_id: str) -> str:
        return f"{self.prefix}{{{check_id('profileId', profile_id)}}}"

    def _config(self, op: str, index: str) -> str:
        s = self.settings
        ttl = int(s.tombstone_ttl_days * _DAY_MS)
        cfg = [s.completion_threshold, s.max_items, s.min_resume_seconds, ttl, index, op]
        return json.dumps(cfg, separators=(",", ":"))

    def node_client(self, key: str) -> Any:
        """The connection that serves ``key`` (the client itself when standalone)."""
        return self._node(key)[1]

    def _node(self, key: str) -> tuple[str, Any]:
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(key)
            return node.name, self.client.get_redis_connection(node)
        return "", self.client

    def primaries(self) -> list[tuple[str, Any]]:
        """(name, connection) of every primary."""
        if isinstance(self.client, RedisCluster):
            return [
                (n.name, self.client.get_redis_connection(n)) for n in self.client.get_primaries()
            ]
        return [("", self.client)]

    def index_name(self, node: str) -> str:
        """The search index of a primary. In cluster mode the server routes FT.CREATE and
        FT.SEARCH by the index name as if it were a key, and each shard indexes only its
        own keys: one index per primary, named with a hash tag of a slot it owns."""
        if not isinstance(self.client, RedisCluster):
            return f"{self.prefix}idx"
        if node not in self._indexes:
            owned = {s for s, nodes in self.client.nodes_manager.slots_cache.items()
                     if nodes[0].name == node}  # fmt: skip
            tag = next(t for t in range(100_000) if self.client.keyslot(f"{{ix{t}}}") in owned)
            self._indexes[node] = f"{self.prefix}idx{{ix{tag}}}"
        return self._indexes[node]

    def run(self, op: str, calls: Sequence[tuple[str, Sequence[str]]]) -> list[Any]:
        """The script once per (profile, args), one pipelined round trip per primary
        (in parallel), replies in order. Errors raise: a load test must not go on
        measuring a model that fails."""
        script = _script(self.script_name, self.prelude)
        keyed = [(self.base(p), args) for p, args in calls]
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i, (key, _) in enumerate(keyed):
            name, conn = self._node(key)
            by_node.setdefault(name, (conn, []))[1].append(i)
        configs = {name: self._config(op, self.index_name(name)) for name in by_node}

        def send(item: tuple[str, tuple[Any, list[int]]]) -> list[Any]:
            name, (conn, indices) = item
            config = configs[name]
            for _attempt in range(2):
                pipe = conn.pipeline(transaction=False)
                for i in indices:
                    key, args = keyed[i]
                    pipe.execute_command("EVALSHA", script.sha, 1, key, config, *args)
                replies = pipe.execute(raise_on_error=False)
                if not any(isinstance(r, NoScriptError) for r in replies):
                    break
                conn.script_load(script.source)
            for r in replies:
                if isinstance(r, Exception):
                    raise RuntimeError(f"{self.name}: {r}") from r
            return list(replies)

        groups = list(by_node.items())
        if len(groups) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(16, thread_name_prefix=f"{self.name}-shard")
            per_node = list(self._pool.map(send, groups))
        else:
            per_node = [send(g) for g in groups]
        out: list[Any] = [None] * len(keyed)
        for (_, (_, indices)), replies in zip(groups, per_node, strict=True):
            for i, reply in zip(indices, replies, strict=True):
                out[i] = reply
        return out

    # --- writes -----------------------------------------------------------------------

    def setup(self) -> None:
        for _, conn in self.primaries():
            conn.script_load(_script(self.script_name, self.prelude).source)

    def teardown(self) -> None:
        pass

    def record_batch(self, updates: Sequence[ProgressUpdate]) -> dict[int, str]:
        """As ``HistoryStore.record_batch``: collapsed per (profile, asset), one script
        call per profile, ``pipeline_profiles`` per round trip; "split" groups again one
        record at a time."""
        threshold = self.settings.completion_threshold
        for u in updates:
            check_id("profileId", u.profile_id)
            check_id("assetId", u.asset_id)
        min_resume = self.settings.min_resume_seconds
        pending = list(group_by_profile(enumerate(updates), min_resume).items())
        outcomes: dict[int, str] = {}
        size = self.settings.pipeline_profiles
        while pending:
            again: list[tuple[str, list[AssetGroup]]] = []
            for start in range(0, len(pending), size):
                chunk = pending[start : start + size]
                calls = [
                    (p, [g.script_argument(threshold, min_resume) for g in groups])
                    for p, groups in chunk
                ]
                for (profile, groups), reply in zip(chunk, self.run("record", calls), strict=True):
                    split: list[AssetGroup] = []
                    for group, letter in zip(groups, reply.decode(), strict=True):
                        if letter == "x":
                            split.extend(group.split())
                            continue
                        status = RecordOutcome(_LETTERS[letter])
                        outcomes.update((i, o.value) for i, o in group.outcomes(status))
                    if split:
                        again.append((profile, split))
            pending = again
        return outcomes

    def remove(self, profile_id: str, asset_ids: Sequence[str]) -> int:
        ids = [check_id("assetId", a) for a in asset_ids]
        return int(self.run("remove", [(profile_id, ids)])[0]) if ids else 0

    def clear(self, profile_id: str) -> int:
        return int(self.run("clear", [(profile_id, [])])[0])

    def key_pattern(self, profile_id: str) -> str:
        return self.base(profile_id) + "*"

    # --- reads ------------------------------------------------------------------------

    def query(self, profile_id: str, query: HistoryQuery) -> HistoryPage:
        _check_route(query)
        values = self._select(profile_id, query)
        return HistoryPage(items=items_from_values(values[: query.limit]))

    def _select(self, profile_id: str, query: HistoryQuery) -> list[list[Any]]:
        raise NotImplementedError


def _check_route(query: HistoryQuery) -> None:
    if query.cursor or query.collapse or query.asset_type or query.status is Status.COMPLETED:
        raise Unsupported("models 2 to 4 read first pages of the compared routes only")
    if query.teams and query.series is None:
        raise Unsupported("the team index is per sport+series")
    if query.status is Status.IN_PROGRESS and (query.sport or query.show or query.asset_ids):
        raise Unsupported("continue watching is not combined with other filters here")


def _history_order(values: list[list[Any]]) -> list[list[Any]]:
    return sorted(values, key=lambda v: (-v[1], v[0]))


class SortedSetModel(_Scripted):
    """Model 2: a string per item (its packed text) plus sorted sets per lookup dimension."""

    name = "sorted_sets"
    script_name = "sorted_sets"
    prelude = "local ITEMS_IN_HASH = false"

    def _packed(self, base: str, ids: list[str]) -> list[Any]:
        """The packed items of these assets (None where missing), one MGET."""
        return list(self.node_client(base).mget([f"{base}:i:{a}" for a in ids]))

    def _select(self, profile_id: str, query: HistoryQuery) -> list[list[Any]]:
        if query.asset_ids:
            ids = list(dict.fromkeys(check_id("assetId", a) for a in query.asset_ids))
            packed = self._packed(self.base(profile_id), ids)
            return _history_order(decode_all([p for p in packed if p]))
        sets = _sets_for(query)
        packed = self.run("read", [(profile_id, [str(query.limit), *sets])])[0]
        return decode_all(packed)


class SortedHashModel(SortedSetModel):
    """Model 3: one hash of every item per profile plus the same sorted sets. Its hash and
    sets stay listpacks (compact, scanned) only where the server's
    hash-max-listpack-entries/-value and zset-max-listpack-entries allow: the load test
    sets them for MAX_ITEMS items (run.LISTPACK)."""

    name = "sorted_sets_hash"
    prelude = "local ITEMS_IN_HASH = true"

    def _packed(self, base: str, ids: list[str]) -> list[Any]:
        return list(self.node_client(base).hmget(f"{base}:h", ids))


def _sets_for(query: HistoryQuery) -> list[str]:
    """The sorted sets (suffixes of the profile's key) that answer a query."""
    if query.status is Status.IN_PROGRESS:
        return [":ip"]
    if query.sport is not None:
        if query.series is None:
            return [f":sp:{query.sport}"]
        if query.teams:
            return [f":tm:{query.sport}:{query.series}:{t}" for t in dict.fromkeys(query.teams)]
        return [f":se:{query.sport}:{query.series}"]
    if query.show is not None:
        if query.season is None:
            return [f":sh:{query.show}"]
        return [f":ss:{query.show}:{query.season}"]
    return [":r"]


def _tag(value: object) -> str:
    """A value inside a search TAG query: every punctuation character escaped."""
    return "".join(c if c.isalnum() else "\\" + c for c in str(value))


class SearchModel(_Scripted):
    """Model 4: a document per item indexed by search (``FT.CREATE ... ON JSON``).
    RedisJSON only: it cannot run on MemoryDB (see the module docstring)."""

    name = "search"
    script_name = "search"

    SCHEMA: Final = (
        ("$.pr", "pr", "TAG"),
        ("$.o", "o", "TAG", "SORTABLE", "UNF"),
        ("$.t", "t", "NUMERIC", "SORTABLE"),
        ("$.ip", "ip", "NUMERIC"),
        ("$.sp", "sp", "TAG"),
        ("$.se", "se", "TAG"),
        ("$.tm[*]", "tm", "TAG"),
        ("$.sh", "sh", "TAG"),
        ("$.sn", "sn", "NUMERIC"),
    )

    def setup(self) -> None:
        schema: list[str] = []
        for path, alias, *kind in self.SCHEMA:
            schema += [path, "AS", alias, *kind]
        for node, conn in self.primaries():
            try:
                conn.execute_command(
                    "FT.CREATE", self.index_name(node), "ON", "JSON", "PREFIX", 1, self.prefix,
                    "SCHEMA", *schema,
                )  # fmt: skip
            except ResponseError as exc:
                if "already exists" in str(exc).lower():
                    continue
                raise Unsupported(f"FT.CREATE ... ON JSON refused: {exc}") from exc
            except Exception as exc:  # e.g. unknown command: no search module
                raise Unsupported(f"no search on this server: {exc}") from exc
        super().setup()

    def teardown(self) -> None:
        for node, conn in self.primaries():
            conn.execute_command("FT.DROPINDEX", self.index_name(node))

    def _select(self, profile_id: str, query: HistoryQuery) -> list[list[Any]]:
        base = self.base(profile_id)
        conn = self.node_client(base)
        if query.asset_ids:
            ids = list(dict.fromkeys(check_id("assetId", a) for a in query.asset_ids))
            raw = conn.execute_command("JSON.MGET", *(f"{base}:i:{a}" for a in ids), "$")
            docs = [orjson.loads(r)[0] for r in raw if r]
            return _history_order([_values(d) for d in docs])
        texts = self.run("read", [(profile_id, [_search_query(query), str(query.limit)])])[0]
        return [_values(orjson.loads(t)[0]) for t in texts]


def _search_query(query: HistoryQuery) -> str:
    """The query's filters (lua/search.lua adds the profile's)."""
    parts = [""]
    if query.status is Status.IN_PROGRESS:
        parts.append("@ip:[1 1]")
    if query.sport is not None:
        parts.append(f"@sp:{{{_tag(query.sport)}}}")
    if query.series is not None:
        parts.append(f"@se:{{{_tag(query.series)}}}")
    if query.teams:
        parts.append("@tm:{" + " | ".join(_tag(t) for t in query.teams) + "}")
    if query.show is not None:
        parts.append(f"@sh:{{{_tag(query.show)}}}")
    if query.season is not None:
        parts.append(f"@sn:[{query.season} {query.season}]")
    return " ".join(parts)


_SHORT_ORDER: Final = [SHORT_KEYS[f] for f in ITEM_FIELDS]


def _values(doc: dict[str, Any]) -> list[Any]:
    """An item's positional values (codec.ITEM_FIELDS) from its search document."""
    return [doc.get(k) for k in _SHORT_ORDER]


MODELS: Final[dict[str, Callable[[ClientType, Settings], Model]]] = {
    "store": StoreModel,
    "sorted_sets": SortedSetModel,
    "sorted_sets_hash": SortedHashModel,
    "search": SearchModel,
}
"""The models by name, in the order the report lists them."""

RUNS_ON_MEMORYDB: Final = frozenset({"store", "sorted_sets", "sorted_sets_hash"})
"""The models MemoryDB can run (search needs RediSearch on RedisJSON: see above); only
these are priced on MemoryDB nodes."""
