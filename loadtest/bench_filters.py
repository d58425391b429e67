"""Where to filter a read: in Python over one JSON.GET, or with JSONPath on the server?

    python -m devtools.engine run -- python -m loadtest.bench_filters [--sizes 20,200,1000]

For profiles of each size it seeds the real store (item texts, see codec.py) and, next
to it, an equivalent document whose items are JSON objects with short keys (what
server-side JSONPath filters need: they cannot look inside packed strings). Then, per
filter (sport; sport+series+team; show+season; in progress) it times:

- ``store.query``: the service's read path. A page of 20: a prefix of the sorted array,
  the whole array only when the prefix does not fill the page; decoded to API models.
- ``whole array``: every item read (``store.stored_items``: one ``JSON.GET`` of the items
  and their ids, joined to the asset records) and every match selected in Python (the
  same result set as JSONPath gives).
- ``JSONPath``: ``JSON.GET <objects doc> $.h[?(...)]`` and the reply parsed: every match,
  already filtered on the server (not decoded to API models: that would cost more).

Latencies are client-side round trips on this machine (p50/p95, microseconds), bounded
by ``--samples`` per cell and ``--budget`` seconds per cell; the whole run stays well
under a minute. Starts its own standalone engine when REDIS_URL is not set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.engine import start_standalone
from loadtest.bench import asset_update
from loadtest.models import SHORT_KEYS
from watch_history.codec import ITEM_FIELDS
from watch_history.connection import create_client
from watch_history.models import HistoryQuery, ProgressUpdate, Status
from watch_history.query import Selection
from watch_history.settings import Settings
from watch_history.store import HistoryStore

PAGE = 20


@dataclass(frozen=True)
class Filter:
    name: str
    query: HistoryQuery
    jsonpath: str


def filters(min_resume_seconds: float) -> list[Filter]:
    resume = f"{min_resume_seconds:g}"
    return [
        Filter("sport", HistoryQuery(sport="cricket"), '$.h[?(@.sp=="cricket")]'),
        Filter(
            "sport+series+team",
            HistoryQuery(sport="cricket", series="ipl-2026", teams=["csk"]),
            '$.h[?(@.sp=="cricket" && @.se=="ipl-2026" && @.tm[?(@=="csk")])]',
        ),
        Filter(
            "show+season",
            HistoryQuery(show="show-3", season=2),
            '$.h[?(@.sh=="show-3" && @.sn==2)]',
        ),
        Filter(
            "in progress",
            HistoryQuery(status=Status.IN_PROGRESS),
            f"$.h[?(@.c==0 && @.p>={resume})]",
        ),
    ]


def update(profile_id: str, k: int, at: datetime, rng: random.Random) -> ProgressUpdate:
    """Asset number k of a profile, as loadtest.bench generates it (two thirds episodes
    of 17 shows, a third matches)."""
    return ProgressUpdate.model_validate(asset_update(profile_id, k, at, rng))


def objects_document(stored: Sequence[list[Any]]) -> str:
    """The same history with each item a JSON object of short keys (nulls left out)."""
    items = []
    for values in stored:
        items.append(
            {SHORT_KEYS[f]: v for f, v in zip(ITEM_FIELDS, values, strict=False) if v is not None}
        )
    return json.dumps({"h": items}, separators=(",", ":"))


def timed(call: Callable[[], object], samples: int, budget: float) -> tuple[float, float]:
    """p50 and p95 of ``call`` in microseconds (a few warm-up calls first)."""
    for _ in range(5):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < samples and time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.95))]


@dataclass(frozen=True)
class Row:
    items: int
    filter: str
    matches: int
    page: int
    store_query: tuple[float, float]
    whole_array: tuple[float, float]
    jsonpath: tuple[float, float]


@dataclass(frozen=True)
class Memory:
    items: int
    packed_bytes: int
    objects_bytes: int


def run(
    store: HistoryStore, sizes: Sequence[int], samples: int, budget: float
) -> tuple[list[Row], list[Memory]]:
    client = store.client
    rng = random.Random(4)
    rows: list[Row] = []
    memory: list[Memory] = []
    start = datetime.now(UTC) - timedelta(days=90)
    for size in sizes:
        pid = f"bench-filters-{size}"
        key = store.key(pid)
        objects_key = f"{store.settings.key_prefix}objects:{{{pid}}}"
        client.delete(key, objects_key)
        updates = [update(pid, k, start + timedelta(minutes=7 * k), rng) for k in range(size)]
        result = store.record_batch(updates)
        if result.failures:
            raise RuntimeError(f"seeding failed: {next(iter(result.failures.values()))}")
        stored = store.stored_items(pid)
        if len(stored) != size:
            raise RuntimeError(f"{len(stored)} items stored, not {size}: raise MAX_ITEMS")
        client.execute_command("JSON.SET", objects_key, "$", objects_document(stored))
        memory.append(
            Memory(
                size,
                int(client.memory_usage(key, samples=0) or 0),
                int(client.memory_usage(objects_key, samples=0) or 0),
            )
        )
        for f in filters(store.settings.min_resume_seconds):
            query = f.query.model_copy(update={"limit": PAGE})
            selection = Selection(query, store.settings.min_resume_seconds)

            def store_query(pid: str = pid, query: HistoryQuery = query) -> object:
                return store.query(pid, query)

            def python_whole(pid: str = pid, selection: Selection = selection) -> list[list[Any]]:
                return list(selection.scan(store.stored_items(pid)))

            def server_filter(key: str = objects_key, path: str = f.jsonpath) -> list[Any]:
                matches: list[Any] = json.loads(client.execute_command("JSON.GET", key, path))
                return matches

            found_python = [values[0] for values in python_whole()]
            found_server = [item["id"] for item in server_filter()]
            if found_python != found_server:
                raise RuntimeError(f"{f.name}: JSONPath and Python select different items")
            page = store.query(pid, query)
            if [i.asset_id for i in page.items] != found_python[:PAGE]:
                raise RuntimeError(f"{f.name}: store.query disagrees with the whole-array scan")
            rows.append(
                Row(
                    size,
                    f.name,
                    len(found_python),
                    len(page.items),
                    timed(store_query, samples, budget),
                    timed(python_whole, samples, budget),
                    timed(server_filter, samples, budget),
                )
            )
        client.delete(key, objects_key)
    return rows, memory


def markdown(rows: Sequence[Row], memory: Sequence[Memory]) -> str:
    def us(pair: tuple[float, float]) -> str:
        return f"{pair[0]:.0f} / {pair[1]:.0f}"

    lines = [
        "| items | filter | matches | store.query, page of 20 (Python) | "
        "whole array, all matches (Python) | JSONPath on objects, all matches |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.items} | {r.filter} | {r.matches} | {us(r.store_query)} | "
        f"{us(r.whole_array)} | {us(r.jsonpath)} |"
        for r in rows
    ]
    lines += [
        "",
        "p50 / p95 in microseconds, client round trip included.",
        "",
        "| items | MEMORY USAGE, packed items (the store) | objects with short keys |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {m.items} | {m.packed_bytes} | {m.objects_bytes} |" for m in memory]
    return "\n".join(lines)


@contextlib.contextmanager
def _server() -> Iterator[None]:
    """REDIS_URL as it is, or a standalone engine of our own for the run."""
    if os.environ.get("REDIS_URL"):
        yield
        return
    with start_standalone() as engine:
        saved = {name: os.environ.get(name) for name in engine.env()}
        os.environ.update(engine.env())
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="20,200,1000", help="profile sizes (items)")
    parser.add_argument("--samples", type=int, default=300, help="timed calls per cell at most")
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per cell at most")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with _server():
        settings = Settings(key_prefix="bench-filters:", max_items=max(sizes))
        store = HistoryStore(create_client(settings), settings)
        try:
            rows, memory = run(store, sizes, args.samples, args.budget)
        finally:
            store.client.close()
    print(f"## Filters: Python over one JSON.GET vs JSONPath on the server ({settings.redis_url})")
    print()
    print(markdown(rows, memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
