"""The store's own numbers: recorder throughput and reader latency (docs/performance.md),
memory per item (docs/data-model.md).

    python -m loadtest.bench all|recorder|reader|memory [--profiles N] [--items N]

Starts its own standalone engine (pinned to core 1, this process to core 0, when the
machine has two cores) unless REDIS_URL is set; ``memory`` starts one per JSON module
(RedisJSON, and valkey-json where ../shared has it) and measures each encoding both as
MEMORY USAGE and as used_memory growth over many realistic profiles. Every comparison
runs in the same process against the same server, so the ratios hold on other machines
even where the absolute numbers do not. Bounded: fixed counts, a few repetitions, then it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import redis

from devtools.engine import start_standalone
from devtools.heartbeats import kinesis_event
from devtools.lambda_context import FakeLambdaContext, load_module
from loadtest.run import engine_info
from loadtest.workload import WorkloadSpec, build
from watch_history import runtime
from watch_history.codec import asset_keys, item_to_api
from watch_history.models import ProgressUpdate, epoch_ms
from watch_history.settings import Settings
from watch_history.store import HistoryStore

ROOT = Path(__file__).resolve().parent.parent
VALKEY_JSON = ROOT.parent / "shared" / "engines" / "valkey-json" / "libjson.so"
SPORTS = [
    ("cricket", "ipl-2026", ["csk", "mi", "rcb", "kkr", "gt", "dc"]),
    ("football", "premier-league-2026-27", ["ars", "che", "liv", "mci", "mun", "tot"]),
]


@contextlib.contextmanager
def engine_url() -> Iterator[str]:
    """REDIS_URL, or a fresh standalone engine pinned to the second core."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with start_standalone() as engine:
        if (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {0})
            for pid in engine.pids:
                os.sched_setaffinity(pid, {1})
        yield engine.url


@contextmanager
def quiet_stdout() -> Iterator[IO[str]]:
    """Point fd 1 at /dev/null (handlers print EMF lines and logs there); yield a
    stream on the original stdout for the report."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    report = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield report
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        report.close()


def asset_update(profile: str, k: int, at: datetime, rng: random.Random) -> dict[str, Any]:
    """One realistic update of asset number k of a profile, in the wire shape."""
    if k % 3:
        show = f"show-{k % 17}"
        asset = {
            "type": "episode",
            "title": f"The Long Show S{k % 4 + 1} E{k % 12 + 1}: A Title of Some Length",
            "show": show,
            "season": k % 4 + 1,
            "episode": k % 12 + 1,
        }
        duration = 2700.0
    else:
        sport, series, teams = SPORTS[k % 2]
        pair = rng.sample(teams, 2)
        asset = {
            "type": "match",
            "title": f"{pair[0].upper()} v {pair[1].upper()}, Match {k}",
            "sport": sport,
            "series": series,
            "teams": pair,
        }
        duration = 10800.0
    return {
        "profileId": profile,
        "assetId": f"{asset['type']}-{k:06d}",
        "position": rng.choice([5.0, 120.0, 900.0, 2000.0, duration]),
        "duration": duration,
        "eventTime": epoch_ms(at),
        "eventType": "heartbeat",
        "deviceId": f"device-{rng.randrange(4)}",
        "asset": asset,
    }


def seed(store: HistoryStore, profiles: list[str], items: int, rng: random.Random) -> datetime:
    """Give each profile ``items`` history items; returns the time of the newest."""
    start = datetime.now(UTC) - timedelta(days=60)
    batch: list[ProgressUpdate] = []
    for p in profiles:
        for k in range(items):
            at = start + timedelta(minutes=k * 7)
            batch.append(ProgressUpdate.model_validate(asset_update(p, k, at, rng)))
        if len(batch) >= 20_000:
            store.record_batch(batch)
            batch = []
    store.record_batch(batch)
    return start + timedelta(minutes=items * 7)


def stream_batch(
    profiles: list[str],
    *,
    items: int,
    records: int,
    newest: datetime,
    r: int,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Round ``r``'s batch as a stream shard delivers it: every profile sends heartbeats
    of what it watches now (its newest item); one in twenty starts another title during
    the batch and goes on with that one. A profile's records are spread through the
    batch, as a shard interleaves many viewers."""
    at = newest + timedelta(minutes=10 * (r + 1))
    per_profile = records // len(profiles)
    watching = {p: items - 1 for p in profiles}
    switch_at = {p: rng.randrange(per_profile) for p in profiles if rng.random() < 0.05}
    batch = []
    for step in range(per_profile):
        for p in profiles:
            if switch_at.get(p) == step:
                watching[p] = items + 1000 * r + step
            batch.append(asset_update(p, watching[p], at + timedelta(seconds=10 * step), rng))
    return batch


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_recorder(
    url: str, n_profiles: int, items: int, records: int, rounds: int, *, chunk: int
) -> None:
    client = redis.Redis.from_url(url)
    settings = Settings(redis_url=url, key_prefix="bench:", pipeline_profiles=chunk)
    store = HistoryStore(client, settings)
    runtime.set_store(store)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "bench")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "bench")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    rng = random.Random(7)
    profiles = [f"bp-{i:05d}" for i in range(n_profiles)]
    t0 = time.perf_counter()
    newest = seed(store, profiles, items, rng)
    print(f"seeded {n_profiles} profiles x {items} items in {time.perf_counter() - t0:.1f} s")
    recorder = load_module("history_recorder")

    # the floor: one bare JSON.ARRAPPEND per record, pipelined, onto same-sized arrays
    doc = client.execute_command("JSON.GET", store.key(profiles[0]), "$")
    for p in profiles:
        client.execute_command("JSON.SET", f"floor:{{{p}}}", "$", json.loads(doc)[0] and doc[1:-1])
    packed = json.loads(doc)[0]["h"][-1]  # an item (layout 3's h[0] is the head)

    floor_rates, handler_rates = [], []
    # the handler prints its EMF metrics and logs: to /dev/null, not between the tables
    with quiet_stdout():
        for r in range(rounds):
            batch = stream_batch(
                profiles, items=items, records=records, newest=newest, r=r, rng=rng
            )
            event = kinesis_event(batch)

            def floor(batch: list[dict[str, Any]] = batch) -> None:
                pipe = client.pipeline(transaction=False)
                for update in batch:
                    pipe.execute_command(
                        "JSON.ARRAPPEND",
                        f"floor:{{{update['profileId']}}}",
                        "$.h",
                        json.dumps(packed),
                    )
                pipe.execute()

            floor_rates.append(len(batch) / timed(floor))
            result: dict[str, Any] = {}

            def handle(event: dict[str, Any] = event, result: dict[str, Any] = result) -> None:
                result.update(
                    recorder.lambda_handler(event, FakeLambdaContext("bench", timeout_seconds=60))
                )

            handler_rates.append(len(batch) / timed(handle))
            assert not result.get("batchItemFailures"), result
    floor_rate, handler_rate = statistics.median(floor_rates), statistics.median(handler_rates)
    print(f"\n## Recorder: {records} records over {n_profiles} profiles of ~{items} items")
    print(f"| path | records/s (median of {rounds}) |")
    print("|---|---|")
    print(f"| floor: pipelined bare JSON.ARRAPPEND per record | {floor_rate:,.0f} |")
    print(f"| recorder handler (decode, validate, collapse, scripts) | {handler_rate:,.0f} |")
    print(f"| ratio handler/floor | {handler_rate / floor_rate:.2f} |")
    print(f"| one batch through the handler | {records / handler_rate * 1000:.0f} ms |")
    print(f"| profiles per pipelined round trip | {settings.pipeline_profiles} |")


def bench_reader(url: str, n_profiles: int, items: int, samples: int) -> None:
    client = redis.Redis.from_url(url)
    settings = Settings(redis_url=url, key_prefix="rbench:")
    store = HistoryStore(client, settings)
    rng = random.Random(11)
    profiles = [f"rp-{i:04d}" for i in range(n_profiles)]
    seed(store, profiles, items, rng)
    keys = [store.key(p) for p in profiles]

    def sample(fn: Callable[[int], object]) -> list[float]:
        lat = []
        for n in range(samples):
            start = time.perf_counter()
            fn(n % n_profiles)
            lat.append(time.perf_counter() - start)
        return lat

    def bare(i: int) -> None:
        client.execute_command("JSON.GET", keys[i], "$")

    def page(i: int) -> None:
        store.continue_watching(profiles[i], limit=20)

    sample(bare)
    sample(page)  # warm up both
    rows = [("bare JSON.GET key $ (whole document)", sample(bare))]
    rows.append(("HistoryStore.continue_watching(limit=20)", sample(page)))
    rows.append(("bare JSON.GET key $ (again)", sample(bare)))
    print(f"\n## Reader: {items}-item profiles, {samples} samples each")
    print("| call | p50 us | p95 us |")
    print("|---|---|---|")
    for name, lat in rows:
        lat.sort()
        print(
            f"| {name} | {lat[len(lat) // 2] * 1e6:.0f} | {lat[int(len(lat) * 0.95)] * 1e6:.0f} |"
        )


ENCODINGS = (
    "layout 3: item texts + ids + shared asset records (this store)",
    "layout 2: packed JSON-array strings + ids",
    "readable objects (API shape, ISO times, progress)",
    "positional arrays of JSON values",
)


def memory_rows(url: str, n_profiles: int, items: int) -> tuple[str, dict[str, dict[str, float]]]:
    """Bytes per item of each encoding on the server at ``url``, both ways: MEMORY USAGE
    of the keys, and the growth of used_memory over ``n_profiles`` realistic profiles
    (loadtest/workload.py: many profiles watch the same titles, which an engine that
    shares identical strings between documents stores once). The store's row counts its
    asset records too (keys and growth). Empties the server first (FLUSHALL SYNC)."""
    client = redis.Redis.from_url(url)
    client.execute_command("FLUSHALL", "SYNC")
    engine = engine_info(client)["json"]
    prefix = "mbench:"
    settings = Settings(redis_url=url, key_prefix=prefix, max_items=max(200, items))
    store = HistoryStore(client, settings)
    work = build(WorkloadSpec(seed=3, profiles=n_profiles, items=items), prefix="m")
    total = n_profiles * items
    before = int(client.info("memory")["used_memory"])
    for chunk in work.history():
        result = store.record_batch(chunk)
        assert not result.failures, result.failures
    grown = int(client.info("memory")["used_memory"]) - before
    keys = [store.key(p) for p in work.profile_ids]
    records = list(client.scan_iter(f"{asset_keys(prefix)}*", count=1000))
    raw_docs = [client.execute_command("JSON.GET", k, "$") for k in keys]
    usage = sum(int(client.memory_usage(k, samples=0) or 0) for k in [*keys, *records])
    text = sum(len(d) - 2 for d in raw_docs) + sum(len(v or b"") for v in client.mget(records))
    rows = {ENCODINGS[0]: {"usage": usage / total, "growth": grown / total, "text": text / total}}
    stored = [store.stored_items(p) for p in work.profile_ids]
    alternatives: dict[str, Callable[[list[list[Any]]], dict[str, Any]]] = {
        ENCODINGS[1]: lambda h: {
            "h": [json.dumps(v, separators=(",", ":")) for v in h],
            "ids": [v[0] for v in h],
        },
        ENCODINGS[2]: lambda h: {"h": [item_to_api(v) for v in h]},
        ENCODINGS[3]: lambda h: {"h": h},
    }
    for name, encode in alternatives.items():
        bodies = [json.dumps(encode(h), separators=(",", ":")) for h in stored]
        before = int(client.info("memory")["used_memory"])
        for k, body in zip(keys, bodies, strict=True):
            client.execute_command("JSON.SET", f"alt:{k}", "$", body)
        grown = int(client.info("memory")["used_memory"]) - before
        usage = sum(int(client.memory_usage(f"alt:{k}", samples=0) or 0) for k in keys)
        client.delete(*(f"alt:{k}" for k in keys))
        text = sum(len(b) for b in bodies)
        rows[name] = {"usage": usage / total, "growth": grown / total, "text": text / total}
    print(f"({engine}: {len(records)} asset records for {len(keys)} profiles)")
    client.execute_command("FLUSHALL", "SYNC")
    client.close()
    return engine, rows


def bench_memory(n_profiles: int, items: int) -> None:
    """docs/data-model.md's memory table: every encoding, both measures, every JSON module
    (RedisJSON, and valkey-json where ../shared has it; REDIS_URL: that server only)."""
    results: list[tuple[str, dict[str, dict[str, float]]]] = []
    if os.environ.get("REDIS_URL"):
        results.append(memory_rows(os.environ["REDIS_URL"], n_profiles, items))
    else:
        for module in (None, VALKEY_JSON):
            if module is not None and not module.is_file():
                print(f"(valkey-json not at {module}: RedisJSON only)")
                continue
            with start_standalone(json_module=module) as engine:
                results.append(memory_rows(engine.url, n_profiles, items))
    print(f"\n## Memory: {n_profiles} profiles x {items} items, bytes per item")
    head = " | ".join(f"{e}: MEMORY USAGE | {e}: used_memory growth" for e, _ in results)
    print(f"| encoding of one item | {head} | JSON text |")
    print("|---|" + "---:|" * (2 * len(results) + 1))
    for name in ENCODINGS:
        cells = " | ".join(f"{r[name]['usage']:.0f} | {r[name]['growth']:.0f}" for _, r in results)
        print(f"| {name} | {cells} | {results[0][1][name]['text']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["all", "recorder", "reader", "memory"])
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--items", type=int, default=150)
    parser.add_argument("--memory-profiles", type=int, default=500)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument(
        "--pipeline-profiles", type=int, default=Settings().pipeline_profiles, dest="chunk"
    )
    args = parser.parse_args(argv)
    if args.what in ("all", "memory"):
        bench_memory(args.memory_profiles, args.items)
    if args.what == "memory":
        return 0
    with engine_url() as url:
        if args.what in ("all", "reader"):
            bench_reader(url, min(args.profiles, 500), args.items, args.samples)
        if args.what in ("all", "recorder"):
            bench_recorder(
                url, args.profiles, args.items, args.records, args.rounds, chunk=args.chunk
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
