"""Runs the measures: per model, same workload, same server, in repeated passes.

Every pass runs every scenario (profiles x items per profile) and every model: flush,
seed the history, then measure

- memory per item, two ways: MEMORY USAGE of the profile's keys (summed over a sample
  of profiles), and the growth of ``used_memory`` over all profiles (what the fleet
  pays: it includes what MEMORY USAGE leaves out, e.g. the search index, and what the
  engine shares between documents); keys per profile;
- ingest: records/s from one client process for the steady state, session starts and
  dense batches, and the steady state from 2 client processes at once; engine CPU per
  record from INFO (used_cpu_sys + used_cpu_user of every primary: the server's own
  threads, the search module's included; not wall time) and the top-level command's
  time from INFO commandstats;
- reads: p50/p99 (client round trip, decoded to API models) and engine CPU per read for
  continue watching and every lookup dimension;
- the engine's floor in the same run: a bare pipelined JSON.ARRAPPEND per record and a
  bare whole-document JSON.GET, so that every figure is also a ratio to it;
- data written per record: the growth of the append-only file (``aof_current_size``),
  which the load test turns on for its own servers: the commands a script's effects
  replicate as, what MemoryDB's transaction log receives and bills as data written.

The passes repeat the same seeded workload (``Plan.passes``, at least 3 for a report):
the report quotes each figure as the median of the passes with their spread, and a
read's p99 only from the samples of every pass pooled, where there are at least
``P99_MIN_SAMPLES`` of them.

On its own servers the load test sets the listpack limits (``LISTPACK``) so that a
profile's sorted sets and its hash of items stay listpacks at 200 items, as one would
on MemoryDB (its parameter groups allow these four: see docs/benchmarks.md).

Bounded: fixed counts, no timing loop runs longer than its samples.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.cluster import RedisCluster
from tqdm import tqdm

from loadtest.models import MODELS, Model, Unsupported
from loadtest.workload import ROUTES, Workload, WorkloadSpec, build
from watch_history.connection import ClientType, create_client
from watch_history.models import ProgressUpdate
from watch_history.settings import Settings


@dataclass(frozen=True, slots=True)
class Scenario:
    """One shape of data: how many profiles, how many items each, which measures."""

    name: str
    profiles: int
    items: int
    full: bool  # every measure (the main scenario); else memory, steady ingest, reads
    read_samples: int


@dataclass(frozen=True, slots=True)
class Plan:
    """A whole run: the scenarios and the workload's knobs."""

    scenarios: tuple[Scenario, ...]
    seed: int = 7
    spike: float = 0.3
    batch_records: int = 500
    batches: int = 8
    dense_records: int = 5
    memory_sample: int = 20  # profiles whose keys MEMORY USAGE measures
    passes: int = 3
    models: tuple[str, ...] = tuple(MODELS)

    def spec(self, scenario: Scenario) -> WorkloadSpec:
        return WorkloadSpec(
            seed=self.seed,
            profiles=scenario.profiles,
            items=scenario.items,
            spike=self.spike,
            batch_records=min(self.batch_records, scenario.profiles),
            batches=self.batches,
            dense_records=self.dense_records,
        )


P99_MIN_SAMPLES = 2_000  # a p99 from fewer samples is one of the few worst: not quoted

# What the load test sets on its own servers: a profile's sorted sets and its hash of
# items (packed items of ~250 bytes) stay listpacks up to 256 entries. The defaults (128
# sorted-set entries, 64-byte hash values) would turn both into hash tables at 200 items.
LISTPACK: dict[str, str] = {
    "zset-max-listpack-entries": "256",
    "zset-max-listpack-value": "64",
    "hash-max-listpack-entries": "256",
    "hash-max-listpack-value": "512",
}


def full_plan(**overrides: Any) -> Plan:
    """``make loadtest``: 3 passes, both engines, both topologies; sized to finish in
    ~40 minutes on 2 cores shared with other work (700 reads per route per pass: 2,100
    pooled, enough for a p99)."""
    return Plan(
        scenarios=(
            Scenario("main", profiles=300, items=200, full=True, read_samples=700),
            Scenario("items-20", profiles=200, items=20, full=False, read_samples=80),
            Scenario("items-1000", profiles=40, items=1000, full=False, read_samples=80),
        ),
        batch_records=300,
        batches=6,
        **overrides,
    )


def quick_plan(**overrides: Any) -> Plan:
    """``make loadtest-quick``: every model and every measure, small (CI smoke)."""
    return Plan(
        scenarios=(
            Scenario("main", profiles=40, items=30, full=True, read_samples=10),
            Scenario("items-20", profiles=8, items=20, full=False, read_samples=5),
            Scenario("items-1000", profiles=4, items=1000, full=False, read_samples=5),
        ),
        batch_records=20,
        batches=2,
        memory_sample=4,
        passes=2,
        **overrides,
    )


# --- the server's counters ---------------------------------------------------------------


def primaries(client: ClientType) -> list[Any]:
    """A plain client per primary (the client itself when standalone)."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(n) for n in client.get_primaries()]
    return [client]


@dataclass(frozen=True, slots=True)
class Counters:
    cpu: float  # seconds, every primary
    memory: int  # used_memory bytes, every primary
    usec: dict[str, int]  # commandstats usec by command
    aof: int | None  # aof_current_size bytes, every primary (None: no AOF)

    @classmethod
    def read(cls, client: ClientType) -> Counters:
        cpu, memory = 0.0, 0
        aof: int | None = 0
        usec: dict[str, int] = {}
        for node in primaries(client):
            info = node.info("cpu")
            cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            memory += int(node.info("memory")["used_memory"])
            persistence = node.info("persistence")
            if aof is not None and persistence.get("aof_enabled"):
                aof += int(persistence["aof_current_size"])
            else:
                aof = None
            for name, stats in node.info("commandstats").items():
                command = name.removeprefix("cmdstat_").lower()
                usec[command] = usec.get(command, 0) + int(stats["usec"])
        return cls(cpu, memory, usec, aof)

    def written(self, before: Counters) -> int | None:
        """Bytes appended to the AOF since ``before`` (None without one)."""
        if self.aof is None or before.aof is None:
            return None
        return self.aof - before.aof

    def since(self, before: Counters, command: str) -> tuple[float, int]:
        """Engine CPU seconds and ``command``'s usec between ``before`` and this."""
        return self.cpu - before.cpu, self.usec.get(command, 0) - before.usec.get(command, 0)


def prepare(client: ClientType) -> dict[str, Any]:
    """Our own server: the listpack limits (LISTPACK) and an append-only file (never
    fsynced, never rewritten) whose growth is the data written. Returns the settings."""
    for node in primaries(client):
        for name, value in LISTPACK.items():
            node.config_set(name, value)
        node.config_set("appendfsync", "no")
        node.config_set("auto-aof-rewrite-percentage", 0)
        node.config_set("appendonly", "yes")
    for node in primaries(client):  # turning it on writes the (empty) base file first
        wait_until_aof(node)
    return {**LISTPACK, "appendonly": "yes (appendfsync no)"}


def wait_until_aof(node: Any, timeout: float = 60.0) -> None:
    """Until the AOF that CONFIG SET appendonly yes turned on is written (a benchmark
    polls the server's own state: no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        info = node.info("persistence")
        busy = info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
        if info["aof_enabled"] and not busy:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the append-only file was not turned on in time")
        time.sleep(0.05)


def server_settings(client: ClientType) -> dict[str, Any]:
    """An endpoint's listpack limits, as it reports them (MemoryDB: its parameter group)."""
    out: dict[str, Any] = {}
    for name in LISTPACK:
        try:
            out.update(primaries(client)[0].config_get(name))
        except Exception as exc:  # CONFIG refused (a managed service): say so
            return {"unknown": f"CONFIG GET refused: {exc}"}
    return out


def flush(client: ClientType) -> None:
    """Empty every primary. SYNC: RedisJSON on Valkey 9.1 crashed under writes after an
    async FLUSHALL (../shared/memorydb-json.md)."""
    for node in primaries(client):
        node.execute_command("FLUSHALL", "SYNC")


def delete_prefix(client: ClientType, prefix: str) -> None:
    """Delete this run's keys only (a server that is not ours: no FLUSHALL). One DEL per
    key: in a cluster the keys of one node span many slots."""
    for node in primaries(client):
        pipe = node.pipeline(transaction=False)
        for n, key in enumerate(node.scan_iter(match=f"{prefix}*", count=1000), 1):
            pipe.delete(key)
            if n % 500 == 0:
                pipe.execute()
        pipe.execute()


def engine_info(client: ClientType) -> dict[str, Any]:
    """Which server and JSON module this is (nothing assumes the module's name)."""
    node = primaries(client)[0]
    server = node.info("server")
    modules = {}
    for m in node.execute_command("MODULE", "LIST"):
        entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in _pairs(m)}
        name = entry["name"].decode() if isinstance(entry["name"], bytes) else entry["name"]
        modules[name] = int(entry["ver"])
    if "ReJSON" in modules:
        json_module = f"RedisJSON {_version(modules['ReJSON'])}"
    elif "json" in modules:
        json_module = "valkey-json"  # its builds report version 999999
    else:
        json_module = "unknown JSON module"
    return {
        "server": f"valkey {server.get('valkey_version') or server.get('redis_version')}",
        "json": json_module,
        "search": f"redisearch {_version(modules['search'])}" if "search" in modules else None,
        "modules": modules,
    }


def _pairs(entry: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(entry, dict):
        yield from entry.items()
        return
    yield from zip(entry[::2], entry[1::2], strict=True)


def _version(v: int) -> str:
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- one scenario, one model ------------------------------------------------------------


def _bar(desc: str, total: int, unit: str) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5, file=sys.stderr)


def percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    """p50 and, from at least P99_MIN_SAMPLES samples, p99 (µs); else p99 is None."""
    ordered = sorted(samples)
    n = len(ordered)
    p99 = ordered[min(n - 1, int(n * 0.99))] * 1e6 if n >= P99_MIN_SAMPLES else None
    return {"p50_us": ordered[n // 2] * 1e6, "p99_us": p99, "samples": n}


def ingest(
    client: ClientType, model: Model, batches: Sequence[Sequence[ProgressUpdate]], desc: str
) -> dict[str, float | None]:
    """Records/s of these batches through the model, and engine CPU per record."""
    records = sum(len(b) for b in batches)
    before = Counters.read(client)
    elapsed = 0.0
    with _bar(desc, records, "rec") as bar:
        for batch in batches:
            start = time.perf_counter()
            model.record_batch(batch)
            elapsed += time.perf_counter() - start
            bar.update(len(batch))
    after = Counters.read(client)
    cpu, usec = after.since(before, "evalsha")
    written = after.written(before)
    return {
        "records": records,
        "records_per_s": records / elapsed,
        "cpu_us_per_record": cpu / records * 1e6,
        "command_us_per_record": usec / records,
        "written_bytes_per_record": None if written is None else written / records,
    }


def _worker(
    model_name: str,
    settings: dict[str, Any],
    batches: list[list[ProgressUpdate]],
    barrier: Any,
    results: Any,
) -> None:
    """One client process of the 2-process ingest (spawned: a fresh interpreter)."""
    s = Settings(**settings)
    client = create_client(s)
    model = MODELS[model_name](client, s)
    barrier.wait(timeout=120)
    start = time.perf_counter()
    for batch in batches:
        model.record_batch(batch)
    results.put(time.perf_counter() - start)
    client.close()


def ingest_parallel(
    client: ClientType,
    *,
    model_name: str,
    settings: Settings,
    halves: Sequence[list[list[ProgressUpdate]]],
) -> dict[str, float]:
    """The steady state from len(halves) client processes at once (disjoint profiles)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(halves) + 1)
    results = ctx.Queue()
    dumped = settings.model_dump()
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                model_name,
                dumped,
                h,
                barrier,
                results,
            ),
        )
        for h in halves
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        before = Counters.read(client)
        elapsed = [results.get(timeout=600) for _ in procs]
        cpu, usec = Counters.read(client).since(before, "evalsha")
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    records = sum(len(b) for h in halves for b in h)
    return {
        "processes": len(halves),
        "records": records,
        "records_per_s": records / max(elapsed),
        "cpu_us_per_record": cpu / records * 1e6,
        "command_us_per_record": usec / records,
    }


def reads(
    client: ClientType,
    model: Model,
    workload: Workload,
    samples: int,
    desc: str,
    *,
    pooled: dict[str, list[float]],
) -> dict[str, dict[str, float | None]]:
    """p50 (p99 from enough samples) and engine CPU per read of every route, on random
    profiles; every sample's time also goes to ``pooled[route]``."""
    rng = random.Random(f"{workload.spec.seed}:reads")
    profiles = workload.profile_ids
    plans = {p: workload.queries(p) for p in rng.sample(profiles, min(len(profiles), 200))}
    out: dict[str, dict[str, float | None]] = {}
    with _bar(desc, samples * len(ROUTES), "read") as bar:
        for route in ROUTES:
            candidates = [(p, q[route]) for p, q in plans.items() if route in q]
            if not candidates:
                continue
            for p, q in candidates[:5]:
                model.query(p, q)  # warm up (scripts loaded, connections open)
            times = []
            before = Counters.read(client)
            for n in range(samples):
                p, q = candidates[n % len(candidates)]
                start = time.perf_counter()
                model.query(p, q)
                times.append(time.perf_counter() - start)
                bar.update()
            cpu, _ = Counters.read(client).since(before, "")
            out[route] = {**percentiles(times), "cpu_us_per_read": cpu / samples * 1e6}
            pooled.setdefault(route, []).extend(times)
    return out


def memory(
    client: ClientType, model: Model, workload: Workload, growth: int, sample: int
) -> dict[str, float]:
    """Bytes per item both ways, and keys per profile."""
    rng = random.Random(f"{workload.spec.seed}:memory")
    chosen = rng.sample(workload.profile_ids, min(sample, len(workload.profiles)))
    usage = 0
    keys = 0
    for p in chosen:
        pattern = model.key_pattern(p)
        node = _node_for(client, pattern.rstrip("*"))
        for key in node.scan_iter(match=pattern, count=1000):
            usage += int(node.memory_usage(key, samples=0) or 0)
            keys += 1
    items = workload.spec.items
    return {
        "memory_usage_per_item": usage / (len(chosen) * items),
        "used_memory_growth_per_item": growth / (len(workload.profiles) * items),
        "keys_per_profile": keys / len(chosen),
    }


def _node_for(client: ClientType, key: str) -> Any:
    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


def floor(
    client: ClientType,
    settings: Settings,
    workload: Workload,
    batches: Sequence[Sequence[ProgressUpdate]],
    samples: int,
    *,
    pooled: list[float],
) -> dict[str, Any]:
    """The engine's floor: a bare pipelined JSON.ARRAPPEND per record (one small array per
    profile) and a bare ``JSON.GET key $`` of a store document (seeded by the store)."""
    store_keys = [f"{settings.key_prefix}{{{p}}}" for p in workload.profile_ids]
    # a stored item as the store wrote it (the last: layout 3's h[0] is its head)
    some_doc = client.execute_command("JSON.GET", store_keys[0], "$.h[-1]")
    packed = json.loads(some_doc)[0] if some_doc else '["x",0]'
    value = json.dumps(packed)
    profiles = workload.profile_ids
    pipe_size = settings.pipeline_profiles
    for p in profiles:
        client.execute_command("JSON.SET", f"floor:{{{p}}}", "$", '{"h":[]}')
    records = sum(len(b) for b in batches)
    before = Counters.read(client)
    elapsed = 0.0
    for batch in batches:
        start = time.perf_counter()
        keys = [f"floor:{{{u.profile_id}}}" for u in batch]
        for begin in range(0, len(keys), pipe_size):
            _pipelined(
                client,
                [("JSON.ARRAPPEND", k, "$.h", value) for k in keys[begin : begin + pipe_size]],
            )
        elapsed += time.perf_counter() - start
    cpu, usec = Counters.read(client).since(before, "json.arrappend")
    for p in profiles:
        client.delete(f"floor:{{{p}}}")
    rng = random.Random(f"{workload.spec.seed}:floor")
    for k in store_keys[:5]:
        client.execute_command("JSON.GET", k, "$")
    times = []
    before = Counters.read(client)
    for _ in range(samples):
        k = rng.choice(store_keys)
        start = time.perf_counter()
        client.execute_command("JSON.GET", k, "$")
        times.append(time.perf_counter() - start)
    read_cpu, _ = Counters.read(client).since(before, "")
    pooled.extend(times)
    return {
        "write": {
            "records": records,
            "records_per_s": records / elapsed,
            "cpu_us_per_record": cpu / records * 1e6,
            "command_us_per_record": usec / records,
        },
        "read": {**percentiles(times), "cpu_us_per_read": read_cpu / samples * 1e6},
    }


def _pipelined(client: ClientType, commands: Sequence[tuple[str, ...]]) -> None:
    """One pipeline per primary (cluster) or one (standalone), in turn."""
    by_node: dict[int, tuple[Any, list[tuple[str, ...]]]] = {}
    for command in commands:
        node = _node_for(client, command[1])
        by_node.setdefault(id(node), (node, []))[1].append(command)
    for node, group in by_node.values():
        pipe = node.pipeline(transaction=False)
        for command in group:
            pipe.execute_command(*command)
        pipe.execute()


# --- a whole target ---------------------------------------------------------------------


@dataclass(slots=True)
class TargetResult:
    """One server's results: every pass's scenarios, and the reads of every pass pooled
    (by scenario name, then model or "floor", then route)."""

    engine: dict[str, Any]
    topology: str
    server: dict[str, Any]
    passes: list[list[dict[str, Any]]] = field(default_factory=list)
    pooled: dict[str, dict[str, Any]] = field(default_factory=dict)


def settings_for(url: str, cluster: bool, items: int, prefix: str) -> Settings:
    return Settings(
        redis_url=url,
        redis_cluster=cluster,
        key_prefix=prefix,
        max_items=max(200, items),
        # the workload's clock runs ahead of the wall clock (30 s per batch round)
        max_future_skew_seconds=86_400,
        redis_socket_timeout=120.0,
        redis_connect_timeout=5.0,
    )


def run_target(
    url: str, cluster: bool, plan: Plan, *, own_server: bool, label: str
) -> TargetResult:
    """Every pass, scenario and model of ``plan`` against one server (standalone or
    cluster)."""
    base = settings_for(url, cluster, 200, "lt:")
    client = create_client(base)
    try:
        server = prepare(client) if own_server else server_settings(client)
        result = TargetResult(engine_info(client), "cluster" if cluster else "standalone", server)
        samples: dict[str, dict[str, dict[str, list[float]]]] = {}
        for n in range(plan.passes):
            result.passes.append(
                [
                    _run_scenario(
                        client,
                        url=url,
                        cluster=cluster,
                        plan=plan,
                        scenario=scenario,
                        own_server=own_server,
                        label=f"{label} pass {n + 1}/{plan.passes}",
                        pooled=samples.setdefault(scenario.name, {}),
                    )
                    for scenario in plan.scenarios
                ]
            )
        result.pooled = {
            scenario: {
                model: {route: percentiles(times) for route, times in routes.items()}
                for model, routes in by_model.items()
            }
            for scenario, by_model in samples.items()
        }
        return result
    finally:
        client.close()


def _clean(client: ClientType, own_server: bool) -> None:
    if own_server:
        flush(client)
    else:
        delete_prefix(client, "lt:")
        delete_prefix(client, "floor:")


def _run_scenario(
    client: ClientType,
    *,
    url: str,
    cluster: bool,
    plan: Plan,
    scenario: Scenario,
    own_server: bool,
    label: str,
    pooled: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    spec = plan.spec(scenario)
    workload = build(spec)
    history = list(workload.history())
    steady = workload.steady()
    phases: dict[str, list[list[ProgressUpdate]]] = {"steady": steady}
    halves: list[list[list[ProgressUpdate]]] = []
    if scenario.full:
        phases["session_starts"] = workload.session_starts()
        phases["dense"] = workload.dense()
        ids = workload.profile_ids
        halves = [workload.steady(profiles=ids[0::2]), workload.steady(profiles=ids[1::2])]
    out: dict[str, Any] = {"scenario": asdict(scenario), "spec": asdict(spec), "models": {}}
    tag = f"{label} {scenario.name}"
    for name in plan.models:
        settings = settings_for(url, cluster, scenario.items, f"lt:{name}:")
        model = MODELS[name](client, settings)
        _clean(client, own_server)
        try:
            model.setup()
        except Unsupported as exc:
            out["models"][name] = {"unsupported": str(exc)}
            continue
        before = Counters.read(client)
        seed_start = time.perf_counter()
        with _bar(f"{tag} {name}: seed", len(workload.profiles) * scenario.items, "item") as bar:
            for chunk in history:
                model.record_batch(chunk)
                bar.update(len(chunk))
        seeded = Counters.read(client)
        row: dict[str, Any] = {
            "seed_items_per_s": len(workload.profiles)
            * scenario.items
            / (time.perf_counter() - seed_start),
            "memory": memory(
                client, model, workload, seeded.memory - before.memory, plan.memory_sample
            ),
        }
        if name == "store":
            out["floor"] = floor(
                client,
                settings,
                workload,
                steady,
                scenario.read_samples,
                pooled=pooled.setdefault("floor", {}).setdefault("bare JSON.GET", []),
            )
        row["ingest"] = {
            phase: ingest(client, model, batches, f"{tag} {name}: {phase}")
            for phase, batches in phases.items()
        }
        if halves:
            row["ingest"]["steady_2_processes"] = ingest_parallel(
                client, model_name=name, settings=settings, halves=halves
            )
        row["reads"] = reads(
            client,
            model,
            workload,
            scenario.read_samples,
            f"{tag} {name}: reads",
            pooled=pooled.setdefault(name, {}),
        )
        out["models"][name] = row
        model.teardown()
        _clean(client, own_server)
    return out


@contextmanager
def pinned(pids: Sequence[int]) -> Iterator[None]:
    """Servers on the last core, this process (and its children) on the others, when
    the machine has at least two: client and server do not take turns on one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        yield
        return
    mine = set(cores[:-1])
    for pid in pids:
        os.sched_setaffinity(pid, {cores[-1]})
    os.sched_setaffinity(0, mine)
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(cores))
