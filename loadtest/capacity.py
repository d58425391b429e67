"""N profiles, M items each, P heartbeats/s at peak -> MemoryDB nodes, shards, cost.

    python -m loadtest capacity --profiles 10e6 --items 200 --peak 833333

From a load test's results (docs/benchmarks/results.json), per model that MemoryDB can
run (models.RUNS_ON_MEMORYDB: not search), from the valkey-json cluster run (MemoryDB's
engine, and MemoryDB is always in cluster mode; the report says when a run lacked it
and which run stood in): the bytes per item (growth of used_memory), the engine CPU per
record of the steady state, and the data written per record (the AOF's growth: what a
script's effects replicate as). Every figure is taken in every pass of the run, so the
answer is a range: the low end from each figure's best pass, the high end from its
worst. Sizes of history between two measured ones are interpolated linearly; outside
the measured range they are refused. Node sizes and prices: data/memorydb_nodes.json
(dated, sources named; the prices there are assumptions the project has not checked).

A shard is one primary plus ``--replicas`` replicas. What a shard can take:
- memory: the node's memory less MemoryDB's reserved share, filled to ``--memory-fill``;
- writes: one engine thread executes every command of a shard whatever the node size
  (bigger nodes add network threads, not script throughput), so a shard takes
  ``--cpu-target`` / (CPU seconds per record) records/s: headroom for failover, reads,
  resharding and the difference between this machine's cores and Graviton's.
The answer is the cheapest node type for max(shards for memory, shards for writes),
plus the data written in a month (``--watch-hours`` per profile per day, a heartbeat
every 30 s) at the data-written price. Not priced: snapshots, data transfer.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.models import MODELS, RUNS_ON_MEMORYDB

DATA = Path(__file__).with_name("data") / "memorydb_nodes.json"
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "results.json"
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
HEARTBEAT_S = 30
MAX_NODES_PER_CLUSTER = 500
MAX_REPLICAS = 5  # MemoryDB: up to 5 replicas per shard
GB = 1e9  # data written is billed per GB


class Refused(ValueError):
    """An input the sizing cannot answer (unmeasured size, no run of MemoryDB's engine)."""


@dataclass(frozen=True, slots=True)
class Measured:
    """One model's figures at one size of history: one value per pass."""

    model: str
    source: str  # which run: engine, topology
    items: int
    interpolated: bool
    bytes_per_item: tuple[float, ...]
    cpu_us_per_record: tuple[float, ...]
    written_bytes_per_record: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Sizing:
    model: str
    memory_gib: float
    node_type: str
    shards: int
    shards_for_memory: int
    shards_for_writes: int
    nodes: int
    clusters: int
    nodes_usd: float
    written_gb: float
    written_usd: float

    @property
    def usd_per_month(self) -> float:
        return self.nodes_usd + self.written_usd


@dataclass(frozen=True, slots=True)
class Answer:
    """A model's sizing at the high end (every figure's worst pass, on the cheapest node
    type for it) and the low end (every figure's best pass, on the same node type)."""

    measured: Measured
    low: Sizing
    high: Sizing


def _target(results: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The run to size from: valkey-json cluster, else the nearest stand-in (said)."""
    targets = results["targets"]

    def rank(t: dict[str, Any]) -> tuple[bool, bool]:
        return ("valkey" not in t["engine"]["json"], t["topology"] != "cluster")

    if not targets:
        raise Refused("the results hold no run")
    best = min(targets, key=rank)
    return best, f"{best['engine']['json']}, {best['topology']}"


def _per_pass(
    target: dict[str, Any], model: str, value: Callable[[dict[str, Any]], float | None]
) -> dict[int, list[float]]:
    """items per profile -> the value in each pass that measured it."""
    out: dict[int, list[float]] = {}
    for scenarios in target["passes"]:
        for s in scenarios:
            row = s["models"].get(model)
            if row is None or "unsupported" in row:
                continue
            v = value(row)
            if v is not None:
                out.setdefault(s["spec"]["items"], []).append(float(v))
    return out


def _at(by_items: dict[int, list[float]], items: int) -> tuple[tuple[float, ...], bool]:
    """The values at ``items``: measured, or interpolated pass by pass between the two
    nearest measured sizes (True); refused outside them."""
    if items in by_items:
        return tuple(by_items[items]), False
    sizes = sorted(by_items)
    if not sizes or not sizes[0] < items < sizes[-1]:
        measured = ", ".join(map(str, sizes)) or "none"
        raise Refused(
            f"{items} items per profile was not measured and is outside the measured sizes "
            f"({measured}): run the load test at that size"
        )
    below = max(s for s in sizes if s < items)
    above = min(s for s in sizes if s > items)
    w = (items - below) / (above - below)
    pairs = zip(by_items[below], by_items[above], strict=False)
    return tuple(a + (b - a) * w for a, b in pairs), True


def measured(results: dict[str, Any], items: int) -> list[Measured]:
    """Per model MemoryDB can run, its figures at ``items`` (see the module docstring)."""
    target, source = _target(results)
    models = {m for scenarios in target["passes"] for s in scenarios for m in s["models"]}
    out = []
    for model in (m for m in MODELS if m in RUNS_ON_MEMORYDB and m in models):
        memory, interpolated = _at(
            _per_pass(target, model, lambda r: r["memory"]["used_memory_growth_per_item"]),
            items,
        )
        cpu, _ = _at(
            _per_pass(target, model, lambda r: r["ingest"]["steady"]["cpu_us_per_record"]),
            items,
        )
        by_items = _per_pass(
            target, model, lambda r: r["ingest"]["steady"].get("written_bytes_per_record")
        )
        # an endpoint's run has no AOF to measure it by: data written is then not priced
        written = _at(by_items, items)[0] if by_items else ()
        out.append(Measured(model, source, items, interpolated, memory, cpu, written))
    return out


def size(
    model: str,
    *,
    bytes_per_item: float,
    cpu_us_per_record: float,
    written_bytes_per_record: float,
    profiles: float,
    items: int,
    peak: float,
    watch_hours: float,
    nodes: dict[str, Any],
    replicas: int = 1,
    memory_fill: float = 80.0,
    cpu_target: float = 50.0,
) -> Sizing:
    """The cheapest node type for these figures (percentages as percent: 80 = 80%)."""
    total = profiles * items * bytes_per_item
    reserved = nodes["reserved_memory_percent"] / 100
    writes = math.ceil(peak * cpu_us_per_record / 1e6 / (cpu_target / 100))
    records = profiles * watch_hours * 3600 / HEARTBEAT_S * DAYS_PER_MONTH
    written_gb = records * written_bytes_per_record / GB
    price = nodes["data_written"]
    billed = max(0.0, written_gb - price["free_gb_per_month"])
    written_usd = billed * price["usd_per_gb"]
    best: Sizing | None = None
    for node in nodes["nodes"]:
        usable = node["memory_gib"] * 2**30 * (1 - reserved) * memory_fill / 100
        for_memory = math.ceil(total / usable)
        shards = max(1, for_memory, writes)
        count = shards * (1 + replicas)
        option = Sizing(
            model,
            total / 2**30,
            node["type"],
            shards,
            for_memory,
            writes,
            count,
            math.ceil(count / MAX_NODES_PER_CLUSTER),
            count * node["usd_per_hour"] * HOURS_PER_MONTH,
            written_gb,
            written_usd,
        )
        if best is None or option.usd_per_month < best.usd_per_month:
            best = option
    assert best is not None
    return best


def answer(
    results: dict[str, Any],
    profiles: float,
    items: int,
    peak: float,
    *,
    watch_hours: float = 1.0,
    replicas: int = 1,
    memory_fill: float = 80.0,
    cpu_target: float = 50.0,
) -> list[Answer]:
    nodes = json.loads(DATA.read_text())
    out = []
    for m in measured(results, items):

        def sized(
            pick: Callable[[Sequence[float]], float], on: dict[str, Any], m: Measured = m
        ) -> Sizing:
            return size(
                m.model,
                bytes_per_item=pick(m.bytes_per_item),
                cpu_us_per_record=pick(m.cpu_us_per_record),
                written_bytes_per_record=pick(m.written_bytes_per_record or (0.0,)),
                profiles=profiles,
                items=items,
                peak=peak,
                watch_hours=watch_hours,
                nodes=on,
                replicas=replicas,
                memory_fill=memory_fill,
                cpu_target=cpu_target,
            )

        # the node type the worst pass needs; the best pass on the same type
        high = sized(max, nodes)
        same = {**nodes, "nodes": [n for n in nodes["nodes"] if n["type"] == high.node_type]}
        ends = [sized(min, same), high]
        out.append(Answer(m, ends[0], ends[1]))
    return out


def _range(low: float, high: float, fmt: str = ",.0f") -> str:
    a, b = format(low, fmt), format(high, fmt)
    return a if a == b else f"{a}-{b}"


def table(answers: list[Answer]) -> str:
    lines = [
        "| model | bytes/item | engine CPU µs/record | written B/record | node type | shards "
        "(memory / writes) | nodes | data written GB/month | USD/month (nodes + data written) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for a in answers:
        m, lo, hi = a.measured, a.low, a.high
        node = hi.node_type
        memory = _range(lo.shards_for_memory, hi.shards_for_memory)
        written = m.written_bytes_per_record
        lines.append(
            f"| {m.model} | {_range(min(m.bytes_per_item), max(m.bytes_per_item))} | "
            f"{_range(min(m.cpu_us_per_record), max(m.cpu_us_per_record), '.1f')} | "
            f"{_range(min(written), max(written)) if written else 'not measured'} | "
            f"{node} | {_range(lo.shards, hi.shards)} ({memory}"
            f" / {_range(lo.shards_for_writes, hi.shards_for_writes)}) | "
            f"{_range(lo.nodes, hi.nodes)} | "
            f"{_range(lo.written_gb, hi.written_gb) if written else 'not measured'} | "
            f"{_range(lo.usd_per_month, hi.usd_per_month)} |"
        )
    return "\n".join(lines)


def notes(results: dict[str, Any], answers: list[Answer]) -> list[str]:
    """Where the figures come from, which conclusions hold in every pass."""
    out = []
    if answers:
        m = answers[0].measured
        how = "interpolated between the measured sizes" if m.interpolated else "as measured"
        out.append(
            f"Figures from the {m.source} run, {m.items} items per profile ({how}); each "
            f"range runs from the best pass to the worst of {len(m.cpu_us_per_record)}."
        )
    _, source = _target(results)
    if "valkey" not in source or "cluster" not in source:
        out.append(
            f"The run had no valkey-json cluster (MemoryDB's engine and topology): "
            f"{source} stands in."
        )
    store = next((a for a in answers if a.measured.model == "store"), None)
    for a in answers:
        if store is None or a is store:
            continue
        if a.low.usd_per_month > store.high.usd_per_month:
            verdict = "costs more than the store: its best pass against the store's worst"
        elif a.high.usd_per_month < store.low.usd_per_month:
            verdict = "costs less than the store: its worst pass against the store's best"
        else:
            verdict = "and the store cost the same within noise (their ranges overlap)"
        out.append(f"{a.measured.model} {verdict}.")
    return out


def _positive(value: str) -> float:
    x = float(value)
    if not x > 0 or math.isinf(x):
        raise argparse.ArgumentTypeError("must be a positive number")
    return x


def _items(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _replicas(value: str) -> int:
    n = int(value)
    if not 0 <= n <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"MemoryDB allows 0 to {MAX_REPLICAS} replicas per shard")
    return n


def _percent(value: str) -> float:
    """A percentage as percent (50 = 50%); a fraction such as 0.5 is refused, not guessed."""
    x = float(value)
    if not 1 <= x <= 100:
        raise argparse.ArgumentTypeError(
            f"{value}: a percentage from 1 to 100, as percent (50 means 50%)"
        )
    return x


def _hours(value: str) -> float:
    x = float(value)
    if not 0 < x <= 24:
        raise argparse.ArgumentTypeError("hours per day: more than 0, at most 24")
    return x


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profiles", type=_positive, required=True, help="profiles (a count, e.g. 10e6)"
    )
    parser.add_argument(
        "--items",
        type=_items,
        default=200,
        help="items per profile (MAX_ITEMS; default: %(default)s); a size the run did not "
        "measure is interpolated between the two nearest measured ones, refused outside them",
    )
    parser.add_argument(
        "--peak", type=_positive, required=True, help="heartbeats per second at peak, e.g. 833333"
    )
    parser.add_argument(
        "--watch-hours",
        type=_hours,
        default=1.0,
        help="hours watched per profile per day, averaged over a month, a heartbeat every "
        "30 s: the data written in a month (default: %(default)s)",
    )
    parser.add_argument(
        "--results", default=str(RESULTS), help="a load test's results.json (default: the report's)"
    )
    parser.add_argument(
        "--replicas",
        type=_replicas,
        default=1,
        help="replicas per shard, 0-5 (Multi-AZ; default: %(default)s)",
    )
    parser.add_argument(
        "--memory-fill",
        type=_percent,
        default=80.0,
        help="percent of the memory MemoryDB leaves usable to fill, 1-100 (default: "
        "%(default)s, i.e. 80%%)",
    )
    parser.add_argument(
        "--cpu-target",
        type=_percent,
        default=50.0,
        help="percent of a shard's engine thread busy at peak, 1-100 (default: %(default)s, "
        "i.e. 50%%)",
    )


def main(args: argparse.Namespace) -> int:
    results = json.loads(Path(args.results).read_text())
    try:
        answers = answer(
            results,
            args.profiles,
            args.items,
            args.peak,
            watch_hours=args.watch_hours,
            replicas=args.replicas,
            memory_fill=args.memory_fill,
            cpu_target=args.cpu_target,
        )
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    nodes = json.loads(DATA.read_text())
    print(
        f"{args.profiles:,.0f} profiles x {args.items} items, {args.peak:,.0f} heartbeats/s "
        f"at peak, {args.watch_hours:g} h watched per profile per day; {args.replicas} "
        f"replica(s) per shard, memory filled to {args.memory_fill:g}% of what MemoryDB "
        f"leaves usable, engine CPU at {args.cpu_target:g}% at peak. Prices: "
        f"{nodes['region']}, {nodes['engine']}, as of {nodes['as_of']} ({DATA.name}: "
        f"{nodes['sources']['price']})"
    )
    print()
    print(table(answers))
    print()
    for line in notes(results, answers):
        print(line)
    print("search is not sized: it cannot run on MemoryDB (RediSearch on RedisJSON only).")
    return 0
