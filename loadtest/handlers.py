"""The Lambda handlers end to end against the engine's own floor, in one run (docs/speed.md).

    python -m loadtest.handlers [reader|recorder|all] [--samples N] [--profiles N]

What it measures, each beside its floor in the same process against the same server
(client pinned to core 0, engine to core 1, as ``loadtest.bench`` does):

- reader: ``functions/history_reader`` ``lambda_handler`` on API Gateway (HTTP API 2.0)
  events, one per lookup dimension (continue watching, each filter, collapse, a later
  page, one item, the changes feed), each sample interleaved with a bare
  ``JSON.GET key $`` of the same profile's whole document: p50 and p99 of both, and
  the ratios against the targets (p50 <= 1.0x, p99 <= 1.5x).
- recorder: ``functions/history_recorder`` ``lambda_handler`` on Kinesis batches:
  10,000 records over 2,000 profiles of ~150 items (five heartbeats a profile, one in
  twenty switching title), and one record per profile on its newest item; the floor is
  one bare ``JSON.ARRAPPEND`` per record, pipelined from this process onto same-sized
  arrays. Records per second (target >= 1.0x the floor) and the engine's CPU per record
  (INFO cpu, ``used_cpu_user`` + ``used_cpu_sys``, target <= 1.5x the floor's).

The handlers' stdout (EMF metrics, logs) goes to /dev/null at the file-descriptor
level for the whole run, so printing is not what is measured; the report is written
to the original stdout. ``--profile`` adds a cProfile summary of each handler.
Bounded: fixed counts, then it stops.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import redis
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.logging import correlation_paths

from devtools.heartbeats import kinesis_event
from devtools.lambda_context import FakeLambdaContext, load_module
from loadtest import bench
from loadtest.bench import asset_update, engine_url, quiet_stdout, seed
from watch_history import runtime
from watch_history.http_api import HistoryResolver, register_error_handlers, resolve
from watch_history.settings import Settings
from watch_history.store import HistoryStore

ROOT = Path(__file__).resolve().parent.parent
EVENT_TEMPLATE = ROOT / "events" / "http_get_in_progress.json"
READER_P50_TARGET = 1.0
READER_P99_TARGET = 1.5
RECORDER_RATE_TARGET = 1.0
ENGINE_CPU_TARGET = 1.5


def engine_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the engine has used (user + system), from INFO cpu."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# Where a reader request's time goes: (label, file suffix, function name), each read
# as cumulative time per call from the profile (nested: the rows overlap on purpose;
# where several functions share the name, the outermost).
READER_PARTS: list[tuple[str, str, str]] = [
    ("whole handler (decorators included)", "logging/logger.py", "decorate"),
    ("Powertools resolve (routing, validation, response)", "api_gateway.py", "resolve"),
    ("  request validation middleware (incl. the route)", "openapi_validation.py", "handler"),
    ("    normalizing query/header params", "openapi_validation.py", "_normalize_multi_params"),
    ("    validating each param", "openapi_validation.py", "_request_params_to_args"),
    ("    the route (list_history)", "history_reader/app.py", "list_history"),
    ("      pydantic BaseModel __init__ (HistoryQuery)", "pydantic/main.py", "__init__"),
    ("      HistoryStore.select_page", "watch_history/store.py", "select_page"),
    ("        JSON.GET round trip (redis-py)", "redis/client.py", "execute_command"),
    ("        decode packed items", "watch_history/query.py", "decode_all"),
    ("        select the page (filters, cursor)", "watch_history/query.py", "page"),
    ("      shape the body (stored arrays to API dicts)", "watch_history/query.py", "to_api"),
    ("      serialize + ETag", "history_reader/app.py", "_cacheable"),
    ("EMF metrics: add_metric", "cloudwatch_emf/cloudwatch.py", "add_metric"),
    ("EMF metrics: flush (serialize + print)", "cloudwatch_emf/cloudwatch.py", "flush_metrics"),
]


def profile_stats(fn: Callable[[], object], calls: int) -> pstats.Stats:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    return pstats.Stats(prof, stream=io.StringIO())


def profile_summary(stats: pstats.Stats, top: int = 25) -> str:
    """The top functions of a profile by own time."""
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def breakdown(stats: pstats.Stats, parts: list[tuple[str, str, str]], calls: int) -> str:
    """Cumulative microseconds per call of each part (under cProfile, so inflated)."""
    table = stats.stats  # type: ignore[attr-defined]
    lines = ["| part (cumulative, per request, under cProfile) | us |", "|---|---|"]
    for label, suffix, name in parts:
        total = max(
            (
                v[3]
                for (file, _, func), v in table.items()
                if func == name and file.endswith(suffix)
            ),
            default=0.0,
        )
        lines.append(f"| {label} | {total / calls * 1e6:.0f} |")
    return "\n".join(lines)


# --- reader ---------------------------------------------------------------------------


def powertools_floor(reader: Any) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The reader's entry point with nothing to do: the same decorators (Logger,
    Tracer, Metrics), the same resolver class with validation on, the same error
    handlers and ``resolve`` (the early caller check included), and routes declaring
    exactly the real routes' parameters, but whose bodies return ``{}`` at once. What
    this costs per request is what Powertools and the decorators cost, whatever the
    store and the shaping do: the part of the handler this project cannot make faster
    while Powertools stays."""
    logger: Logger = reader.logger
    tracer: Tracer = reader.tracer
    metrics: Metrics = reader.metrics
    app = HistoryResolver(enable_validation=True)
    register_error_handlers(app, logger=logger, metrics=metrics)

    def nothing_like(route: Callable[..., Any]) -> Callable[..., Any]:
        def nothing(**_: Any) -> Response[str]:
            return Response(200, content_types.APPLICATION_JSON, body="{}")

        # the real route's parameters, annotations resolved in its own module
        nothing.__signature__ = inspect.signature(route, eval_str=True)  # type: ignore[attr-defined]
        return nothing

    app.get("/profiles/<profileId>/history")(nothing_like(reader.list_history))
    app.get("/profiles/<profileId>/history/changes")(nothing_like(reader.history_changes))
    app.get("/profiles/<profileId>/history/<assetId>")(nothing_like(reader.get_history_item))

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return resolve(app, event, context, metrics)

    return handler


def http_event(
    template: dict[str, Any], profile: str, path: str, query: list[tuple[str, str]]
) -> dict[str, Any]:
    """An API Gateway HTTP API (2.0) GET for ``profile``, as the JWT authorizer passes it."""
    event: dict[str, Any] = json.loads(json.dumps(template))
    raw_path = f"/profiles/{profile}/history{path}"
    event["rawPath"] = raw_path
    event["requestContext"]["http"]["path"] = raw_path
    event["rawQueryString"] = urlencode(query)
    params: dict[str, str] = {}
    for name, value in query:
        params[name] = f"{params[name]},{value}" if name in params else value
    event["queryStringParameters"] = params or None
    event["pathParameters"] = {"profileId": profile}
    if path.startswith("/") and path != "/changes":
        event["pathParameters"]["assetId"] = path[1:]
    event["requestContext"]["authorizer"]["jwt"]["claims"]["profile_id"] = profile
    return event


# The lookup dimensions, as the apps send them (seeded data: see loadtest.bench.seed).
DIMENSIONS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("continue watching (in_progress, limit 20)", "", [("status", "in_progress")]),
    ("whole history, first page", "", []),
    ("sport", "", [("sport", "cricket")]),
    ("sport + series", "", [("sport", "cricket"), ("series", "ipl-2026")]),
    (
        "sport + series + 2 teams",
        "",
        [("sport", "cricket"), ("series", "ipl-2026"), ("team", "csk"), ("team", "mi")],
    ),
    ("show", "", [("show", "show-3")]),
    ("show + season", "", [("show", "show-3"), ("season", "2")]),
    ("assetType", "", [("assetType", "match")]),
    ("assetId x 10 (tiles)", "", [("assetId", f"episode-{k:06d}") for k in range(100, 150, 5)]),
    ("collapse=show, in_progress", "", [("status", "in_progress"), ("collapse", "show")]),
    ("one item", "/episode-000148", []),
]


def _p50_p99(seconds: list[float]) -> tuple[float, float]:
    """Median and 99th percentile, in microseconds."""
    ordered = sorted(seconds)
    return ordered[len(ordered) // 2] * 1e6, ordered[int(len(ordered) * 0.99)] * 1e6


def bench_reader(
    url: str, items: int, samples: int, report: IO[str], *, profile: bool, warmup: int = 200
) -> list[tuple[str, float, float, float, float, float, float]]:
    client = redis.Redis.from_url(url)
    settings = Settings(redis_url=url, key_prefix="hbench:")
    store = HistoryStore(client, settings)
    runtime.set_store(store)
    profiles = [f"rp-{i:04d}" for i in range(50)]
    seed(store, profiles, items, random.Random(11))
    keys = [store.key(p) for p in profiles]
    reader = load_module("history_reader")
    template = json.loads(EVENT_TEMPLATE.read_text())
    ctx = FakeLambdaContext("history-reader")

    def call(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = reader.lambda_handler(event, ctx)
        assert response["statusCode"] == 200, response
        return response

    dims: list[tuple[str, list[dict[str, Any]]]] = []
    for name, path, query in DIMENSIONS:
        dims.append((name, [http_event(template, p, path, query) for p in profiles]))
    # a later page (the cursor of each profile's first page) and the changes feed since
    # each profile's last sync (a token taken now: what changed since is nothing)
    later, changes = [], []
    for p in profiles:
        first = json.loads(call(http_event(template, p, "", [("limit", "20")]))["body"])
        later.append(
            http_event(template, p, "", [("limit", "20"), ("cursor", first["nextCursor"])])
        )
        token = json.loads(call(http_event(template, p, "/changes", []))["body"])["nextToken"]
        changes.append(http_event(template, p, "/changes", [("since", token)]))
    dims.insert(2, ("a later page (cursor)", later))
    dims.append(("changes since the last sync", changes))

    floor = powertools_floor(reader)

    def call_floor(event: dict[str, Any]) -> None:
        response = floor(event, ctx)
        assert response["statusCode"] == 200, response

    rows = []
    for name, events in dims:
        for i in range(warmup):
            call(events[i % len(events)])
            call_floor(events[i % len(events)])
            client.execute_command("JSON.GET", keys[i % len(keys)], "$")
        handler, bare, nothing = [], [], []
        cpu = 0.0  # this process's CPU in the handler: what client work costs, less noisy
        for i in range(samples):
            j = i % len(events)
            t0 = time.perf_counter()
            client.execute_command("JSON.GET", keys[j], "$")
            t1 = time.perf_counter()
            c1 = time.process_time()
            call(events[j])
            cpu += time.process_time() - c1
            t2 = time.perf_counter()
            call_floor(events[j])
            t3 = time.perf_counter()
            bare.append(t1 - t0)
            handler.append(t2 - t1)
            nothing.append(t3 - t2)
        rows.append(
            (name, *_p50_p99(handler), *_p50_p99(bare), cpu / samples * 1e6, _p50_p99(nothing)[0])
        )

    print(
        f"\n## Reader handler vs bare JSON.GET key $ ({items}-item profiles, "
        f"{samples} interleaved samples per row)",
        file=report,
    )
    print(
        "| request | handler p50 us | p99 us | bare GET p50 us | p99 us | "
        f"p50 ratio (<= {READER_P50_TARGET}) | p99 ratio (<= {READER_P99_TARGET}) | "
        "handler client CPU us | Powertools floor p50 us | floor / bare GET |",
        file=report,
    )
    print("|---|---|---|---|---|---|---|---|---|---|", file=report)
    for name, p50, p99, b50, b99, cpu_us, f50 in rows:
        print(
            f"| {name} | {p50:.0f} | {p99:.0f} | {b50:.0f} | {b99:.0f} | "
            f"{p50 / b50:.2f} | {p99 / b99:.2f} | {cpu_us:.0f} | {f50:.0f} | {f50 / b50:.2f} |",
            file=report,
        )
    print(
        "\nPowertools floor: the same entry point, decorators, resolver and declared "
        "parameters with routes that return `{}` at once (`powertools_floor`): what a "
        "request costs before the store is called.",
        file=report,
    )
    if profile:
        events = dims[0][1]
        n = [0]

        def one() -> None:
            call(events[n[0] % len(events)])
            n[0] += 1

        stats = profile_stats(one, 2000)
        print("\n### cProfile: reader, continue watching, 2,000 calls", file=report)
        print(breakdown(stats, READER_PARTS, 2000), file=report)
        print("```\n" + profile_summary(stats) + "```", file=report)
    return rows


# --- recorder -------------------------------------------------------------------------


def bench_recorder(
    url: str,
    *,
    n_profiles: int,
    items: int,
    records: int,
    rounds: int,
    report: IO[str],
    profile: bool,
) -> None:
    client = redis.Redis.from_url(url)
    settings = Settings(redis_url=url, key_prefix="hrec:")
    store = HistoryStore(client, settings)
    runtime.set_store(store)
    rng = random.Random(7)
    profiles = [f"bp-{i:05d}" for i in range(n_profiles)]
    t0 = time.perf_counter()
    newest = seed(store, profiles, items, rng)
    print(
        f"seeded {n_profiles} profiles x {items} items in {time.perf_counter() - t0:.1f} s",
        file=report,
    )
    recorder = load_module("history_recorder")
    ctx = FakeLambdaContext("history-recorder", timeout_seconds=60)

    # the floor's documents: same-sized arrays of the same packed items
    doc = json.loads(client.execute_command("JSON.GET", store.key(profiles[0]), "$"))[0]
    for p in profiles:
        client.execute_command("JSON.SET", f"floor:{{{p}}}", "$", json.dumps({"h": doc["h"]}))
    packed = json.dumps(doc["h"][-1])

    def floor(batch: list[dict[str, Any]]) -> None:
        pipe = client.pipeline(transaction=False)
        for update in batch:
            pipe.execute_command(
                "JSON.ARRAPPEND", f"floor:{{{update['profileId']}}}", "$.h", packed
            )
        pipe.execute()

    def handle(event: dict[str, Any]) -> None:
        result = recorder.lambda_handler(event, ctx)
        assert not result.get("batchItemFailures"), result

    def stream_batch(r: int) -> list[dict[str, Any]]:
        return bench.stream_batch(
            profiles, items=items, records=records, newest=newest, r=r, rng=rng
        )

    def heartbeat_batch(r: int) -> list[dict[str, Any]]:
        # production's usual batch: one heartbeat per profile, on its newest item (run
        # before the stream batches, so the newest is still the seeded one)
        at = newest + timedelta(seconds=30 * (r + 1))
        return [asset_update(p, items - 1, at, rng) for p in profiles]

    def measure(
        name: str, batches: list[list[dict[str, Any]]]
    ) -> tuple[str, int, float, float, float, float]:
        f_rates, h_rates, f_cpu, h_cpu = [], [], 0.0, 0.0
        n = 0
        for batch in batches:
            event = kinesis_event(batch)
            c0 = engine_cpu(client)
            t0 = time.perf_counter()
            floor(batch)
            t1 = time.perf_counter()
            c1 = engine_cpu(client)
            handle(event)
            t2 = time.perf_counter()
            c2 = engine_cpu(client)
            f_rates.append(len(batch) / (t1 - t0))
            h_rates.append(len(batch) / (t2 - t1))
            f_cpu += c1 - c0
            h_cpu += c2 - c1
            n += len(batch)
        return (
            name,
            len(batches[0]),
            statistics.median(f_rates),
            statistics.median(h_rates),
            f_cpu / n * 1e6,
            h_cpu / n * 1e6,
        )

    rows = [
        measure(
            f"one heartbeat per profile ({n_profiles:,}) on its newest item",
            [heartbeat_batch(r) for r in range(rounds)],
        ),
        measure(
            f"{records:,} records over {n_profiles:,} profiles",
            [stream_batch(r) for r in range(rounds)],
        ),
    ]

    print(
        f"\n## Recorder handler vs pipelined bare JSON.ARRAPPEND ({items}-item profiles, "
        f"median of {rounds} batches; engine CPU summed over them)",
        file=report,
    )
    print(
        "| batch | records | floor rec/s | handler rec/s | "
        f"rate ratio (>= {RECORDER_RATE_TARGET}) | floor engine us/rec | "
        f"handler engine us/rec | CPU ratio (<= {ENGINE_CPU_TARGET}) |",
        file=report,
    )
    print("|---|---|---|---|---|---|---|---|", file=report)
    for name, size, fr, hr, fc, hc in rows:
        print(
            f"| {name} | {size:,} | {fr:,.0f} | {hr:,.0f} | {hr / fr:.2f} | {fc:.1f} | "
            f"{hc:.1f} | {hc / fc:.2f} |",
            file=report,
        )
    if profile:
        big = kinesis_event(stream_batch(rounds + 1))
        print(f"\n### cProfile: recorder, one {records:,}-record batch", file=report)
        print("```\n" + profile_summary(profile_stats(lambda: handle(big), 1)) + "```", file=report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "reader", "recorder"])
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--items", type=int, default=150)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="add cProfile summaries")
    args = parser.parse_args(argv)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "bench")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    with quiet_stdout() as report, engine_url() as url:
        if args.what in ("all", "reader"):
            bench_reader(url, args.items, args.samples, report, profile=args.profile)
        if args.what in ("all", "recorder"):
            bench_recorder(
                url,
                n_profiles=args.profiles,
                items=args.items,
                records=args.records,
                rounds=args.rounds,
                report=report,
                profile=args.profile,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
