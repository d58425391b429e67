"""N profiles, M items each, P heartbeats/s at peak -> MemoryDB nodes, shards, cost.

    python -m loadtest capacity --profiles 10e6 --items 200 --peak 833333

From a load test's results (docs/benchmarks/results.json): per model, the bytes per
item (growth of used_memory, the fleet's real cost) and the engine CPU per record of the
steady state, on valkey-json (MemoryDB's engine) when the run had it, standalone, at the
measured items-per-profile nearest to M. Node sizes and prices: data/memorydb_nodes.json
(dated, its sources named; the price there is an assumption to check).

A shard is one primary plus ``--replicas`` replicas. What a shard can take:
- memory: the node's memory less MemoryDB's reserved share, filled to ``--memory-fill``;
- writes: one engine thread executes every command of a shard whatever the node size
  (bigger nodes add network threads, not script throughput), so a shard takes
  ``--cpu-target`` / (CPU seconds per record) records/s: headroom for failover, reads,
  resharding and the difference between this machine's cores and Graviton's.
The answer is the cheapest node type for max(shards for memory, shards for writes).
Not priced: data written, snapshots, data transfer.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data") / "memorydb_nodes.json"
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "results.json"
HOURS_PER_MONTH = 730
MAX_NODES_PER_CLUSTER = 500


@dataclass(frozen=True, slots=True)
class Measured:
    model: str
    engine: str
    items: int
    bytes_per_item: float
    cpu_us_per_record: float


@dataclass(frozen=True, slots=True)
class Sizing:
    model: str
    measured: Measured
    memory_gib: float
    node_type: str
    shards: int
    shards_for_memory: int
    shards_for_writes: int
    replicas: int
    nodes: int
    clusters: int
    usd_per_month: float


def measured(results: dict[str, Any], items: int) -> list[Measured]:
    """Per model, the figures the sizing uses (see the module docstring)."""
    standalone = [t for t in results["targets"] if t["topology"] == "standalone"]
    standalone.sort(key=lambda t: "valkey" not in t["engine"]["json"])  # valkey-json first
    out: dict[str, Measured] = {}
    for target in standalone:
        scenarios = sorted(target["scenarios"], key=lambda s: abs(s["spec"]["items"] - items))
        for scenario in scenarios:
            for model, row in scenario["models"].items():
                if model in out or "unsupported" in row:
                    continue
                out[model] = Measured(
                    model,
                    target["engine"]["json"],
                    scenario["spec"]["items"],
                    row["memory"]["used_memory_growth_per_item"],
                    row["ingest"]["steady"]["cpu_us_per_record"],
                )
    return list(out.values())


def size(
    m: Measured,
    profiles: float,
    items: int,
    peak: float,
    nodes: dict[str, Any],
    *,
    replicas: int = 1,
    memory_fill: float = 0.8,
    cpu_target: float = 0.5,
) -> Sizing:
    total = profiles * items * m.bytes_per_item
    reserved = nodes["reserved_memory_percent"] / 100
    writes = math.ceil(peak * m.cpu_us_per_record / 1e6 / cpu_target)
    best: Sizing | None = None
    for node in nodes["nodes"]:
        usable = node["memory_gib"] * 2**30 * (1 - reserved) * memory_fill
        for_memory = math.ceil(total / usable)
        shards = max(1, for_memory, writes)
        count = shards * (1 + replicas)
        cost = count * node["usd_per_hour"] * HOURS_PER_MONTH
        option = Sizing(
            m.model,
            m,
            total / 2**30,
            node["type"],
            shards,
            for_memory,
            writes,
            replicas,
            count,
            math.ceil(count / MAX_NODES_PER_CLUSTER),
            cost,
        )
        if best is None or option.usd_per_month < best.usd_per_month:
            best = option
    assert best is not None
    return best


def table(sizings: list[Sizing]) -> str:
    lines = [
        "| model | bytes/item (engine) | data GiB | engine CPU µs/record | node type | shards "
        "(memory / writes) | nodes | clusters | USD/month |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for s in sizings:
        lines.append(
            f"| {s.model} | {s.measured.bytes_per_item:.0f} ({s.measured.engine}, "
            f"{s.measured.items} items) | {s.memory_gib:,.0f} | "
            f"{s.measured.cpu_us_per_record:.1f} | {s.node_type} | {s.shards} "
            f"({s.shards_for_memory} / {s.shards_for_writes}) | {s.nodes} | {s.clusters} | "
            f"{s.usd_per_month:,.0f} |"
        )
    return "\n".join(lines)


def answer(
    results: dict[str, Any], profiles: float, items: int, peak: float, **options: Any
) -> list[Sizing]:
    nodes = json.loads(DATA.read_text())
    return [size(m, profiles, items, peak, nodes, **options) for m in measured(results, items)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles", type=float, required=True, help="e.g. 10e6")
    parser.add_argument("--items", type=int, default=200, help="items per profile (MAX_ITEMS)")
    parser.add_argument("--peak", type=float, required=True, help="heartbeats/s at peak")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--replicas", type=int, default=1, help="replicas per shard (Multi-AZ)")
    parser.add_argument("--memory-fill", type=float, default=0.8)
    parser.add_argument("--cpu-target", type=float, default=0.5)


def main(args: argparse.Namespace) -> int:
    results = json.loads(Path(args.results).read_text())
    sizings = answer(
        results,
        args.profiles,
        args.items,
        args.peak,
        replicas=args.replicas,
        memory_fill=args.memory_fill,
        cpu_target=args.cpu_target,
    )
    nodes = json.loads(DATA.read_text())
    print(
        f"{args.profiles:,.0f} profiles x {args.items} items, {args.peak:,.0f} heartbeats/s "
        f"at peak; {args.replicas} replica(s) per shard, memory filled to "
        f"{args.memory_fill:.0%} of what MemoryDB leaves usable, engine CPU at "
        f"{args.cpu_target:.0%} at peak. Prices: {nodes['region']}, {nodes['engine']}, "
        f"as of {nodes['as_of']} ({DATA.name}: {nodes['sources']['price']})"
    )
    print()
    print(table(sizings))
    return 0
