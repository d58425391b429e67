"""docs/benchmarks.md and its charts, from a run's results.json.

Everything in the report is computed from the results (the conclusion's sentences
too), so a run on another machine writes a report that is true of that run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtest import capacity
from loadtest.workload import ROUTES

PHASES = ("steady", "session_starts", "dense", "steady_2_processes")
COLORS = {"store": "#1f77b4", "sorted_sets": "#ff7f0e", "search": "#2ca02c"}
LABELS = {
    "store": "JSON array per profile (this store)",
    "sorted_sets": "document per item + sorted sets",
    "search": "document per item + search",
}
EXAMPLES = (
    ("10 M profiles", 10e6),
    ("300 M profiles", 300e6),
)
IPL_PEAK = 25e6 / 30  # 25 M concurrent viewers, a heartbeat every 30 s
MARGIN = 0.8  # a model "reads faster" only when its p50 is under 80% of the other's: the
# machine is shared and samples are few, so smaller differences are not called


def _label(target: dict[str, Any]) -> str:
    return f"{target['engine']['json']}, {target['topology']}"


def _main(target: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in target["scenarios"] if s["scenario"]["full"])


def _ok(scenario: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m: r for m, r in scenario["models"].items() if "unsupported" not in r}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


# --- charts -----------------------------------------------------------------------------


def _grouped(ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for k, (model, values) in enumerate(series.items()):
        xs = [i + k * width for i in range(len(groups))]
        ax.bar(xs, values, width, label=model, color=COLORS.get(model))
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(groups))])
    ax.set_xticklabels(groups, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)


def _per_target_chart(
    targets: list[dict[str, Any]], path: Path, title: str, draw: Any, floor_key: str | None
) -> None:
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        main = _main(target)
        draw(ax, main)
        if floor_key and "floor" in main:
            value = main["floor"]["write"][floor_key]
            ax.axhline(value, color="grey", linestyle="--", linewidth=1, label="engine floor")
        ax.set_title(_label(target), fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def charts(results: dict[str, Any], out: Path) -> list[str]:
    """The PNGs (file names, written to ``out``)."""
    targets = results["targets"]
    if not targets:
        return []

    def ingest_of(key: str) -> Any:
        def draw(ax: Any, main: dict[str, Any]) -> None:
            rows = _ok(main)
            phases = [p for p in PHASES if any(p in r["ingest"] for r in rows.values())]
            series = {
                m: [r["ingest"].get(p, {}).get(key, 0) for p in phases] for m, r in rows.items()
            }
            _grouped(ax, [p.replace("_", " ") for p in phases], series, key.replace("_", " "))

        return draw

    _per_target_chart(
        targets, out / "throughput.png", "Ingest: records/s (one client process unless noted)",
        ingest_of("records_per_s"), "records_per_s",
    )  # fmt: skip
    _per_target_chart(
        targets, out / "cpu.png", "Engine CPU per record (µs, INFO used_cpu)",
        ingest_of("cpu_us_per_record"), "cpu_us_per_record",
    )  # fmt: skip

    def latency(ax: Any, main: dict[str, Any]) -> None:
        rows = _ok(main)
        routes = [r for r in ROUTES if any(r in row["reads"] for row in rows.values())]
        for k, (m, row) in enumerate(rows.items()):
            xs = [i + k * 0.25 for i in range(len(routes))]
            p50 = [row["reads"].get(r, {}).get("p50_us", 0) for r in routes]
            p99 = [row["reads"].get(r, {}).get("p99_us", 0) for r in routes]
            ax.bar(xs, p99, 0.25, color=COLORS[m], alpha=0.35)
            ax.bar(xs, p50, 0.25, color=COLORS[m], label=m)
        if "floor" in main:
            ax.axhline(main["floor"]["read"]["p50_us"], color="grey", linestyle="--", linewidth=1,
                       label="floor read p50")  # fmt: skip
        ax.set_xticks([i + 0.25 for i in range(len(routes))])
        ax.set_xticklabels(routes, rotation=40, ha="right", fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("µs, log scale (solid p50, light p99)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)

    _per_target_chart(targets, out / "latency.png", "Reads: p50 and p99 per route", latency, None)

    standalone = [t for t in targets if t["topology"] == "standalone"] or targets
    fig, axes = plt.subplots(
        1, len(standalone), figsize=(4.6 * len(standalone), 3.4), squeeze=False
    )
    for ax, target in zip(axes[0], standalone, strict=True):
        sweep = sorted(
            (s for s in target["scenarios"] if not s["scenario"]["full"]),
            key=lambda s: s["spec"]["items"],
        )
        for model, color in COLORS.items():
            points = [
                (s["spec"]["items"], _ok(s)[model]["memory"]) for s in sweep if model in _ok(s)
            ]
            if not points:
                continue
            xs = [p[0] for p in points]
            ax.plot(xs, [p[1]["used_memory_growth_per_item"] for p in points], "o-",
                    color=color, label=f"{model}: used_memory growth")  # fmt: skip
            ax.plot(xs, [p[1]["memory_usage_per_item"] for p in points], "s--",
                    color=color, label=f"{model}: MEMORY USAGE")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("items per profile", fontsize=8)
        ax.set_ylabel("bytes per item", fontsize=8)
        ax.set_title(_label(target), fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=6)
    fig.suptitle("Memory per item vs items per profile", fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 0.95))
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    return ["throughput.png", "cpu.png", "latency.png", "memory.png"]


# --- tables -----------------------------------------------------------------------------


def _headline(target: dict[str, Any]) -> list[str]:
    main = _main(target)
    floor = main.get("floor")
    lines = [
        f"**{_label(target)}** ({main['spec']['profiles']:,} profiles x "
        f"{main['spec']['items']} items; ratios to the engine's floor of the same run)",
        "",
        "| model | steady records/s (x floor) | engine CPU µs/record (x floor) | continue "
        "watching p50 µs (x bare GET) | bytes/item used_memory / MEMORY USAGE | keys/profile |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, row in main["models"].items():
        if "unsupported" in row:
            lines.append(f"| {model} | not run: {row['unsupported']} | | | | |")
            continue
        steady = row["ingest"]["steady"]
        cw = row["reads"].get("continue watching", {})
        fw = floor["write"] if floor else {}
        fr = floor["read"] if floor else {}
        mem = row["memory"]
        rps, cpu = steady["records_per_s"], steady["cpu_us_per_record"]
        cw_p50 = cw.get("p50_us", math.nan)
        lines.append(
            f"| {model} | {rps:,.0f} ({_ratio(rps, fw.get('records_per_s', 0))}) "
            f"| {cpu:.1f} ({_ratio(cpu, fw.get('cpu_us_per_record', 0))}) "
            f"| {cw_p50:.0f} ({_ratio(cw_p50, fr.get('p50_us', 0))}) "
            f"| {mem['used_memory_growth_per_item']:.0f} / {mem['memory_usage_per_item']:.0f} "
            f"| {mem['keys_per_profile']:.1f} |"
        )
    if floor:
        lines += [
            "",
            f"Floor: bare pipelined JSON.ARRAPPEND {floor['write']['records_per_s']:,.0f} "
            f"records/s, {floor['write']['cpu_us_per_record']:.1f} µs engine CPU per record; "
            f"bare `JSON.GET key $` of a {main['spec']['items']}-item store document p50 "
            f"{floor['read']['p50_us']:.0f} µs, p99 {floor['read']['p99_us']:.0f} µs.",
        ]
    return lines


def _ingest_table(target: dict[str, Any]) -> list[str]:
    main = _main(target)
    floor = main.get("floor", {}).get("write", {})
    lines = [
        f"**{_label(target)}** (x floor: the ratio to the bare pipelined write of the run)",
        "",
        "| model | phase | records/s (x floor) | engine CPU µs/record (x floor) | "
        "script µs/record (commandstats: wall time inside the command) |",
        "|---|---|---:|---:|---:|",
    ]
    for model, row in _ok(main).items():
        for phase in PHASES:
            if phase in row["ingest"]:
                r = row["ingest"][phase]
                rps, cpu = r["records_per_s"], r["cpu_us_per_record"]
                lines.append(
                    f"| {model} | {phase.replace('_', ' ')} | {rps:,.0f} "
                    f"({_ratio(rps, floor.get('records_per_s', 0))}) | {cpu:.1f} "
                    f"({_ratio(cpu, floor.get('cpu_us_per_record', 0))}) | "
                    f"{r['command_us_per_record']:.1f} |"
                )
    return lines


def _reads_table(target: dict[str, Any]) -> list[str]:
    main = _main(target)
    rows = _ok(main)
    floor = main.get("floor", {}).get("read", {})
    head = " | ".join(f"{m} p50 / p99 (p50 x floor)" for m in rows)
    lines = [
        f"**{_label(target)}** (µs, client round trip, decoded to API items; floor: bare "
        f"`JSON.GET key $`, p50 {floor.get('p50_us', math.nan):.0f} µs, p99 "
        f"{floor.get('p99_us', math.nan):.0f} µs)",
        "",
        f"| route | {head} |",
        "|---|" + "---:|" * len(rows),
    ]
    for route in ROUTES:
        cells = []
        for row in rows.values():
            r = row["reads"].get(route)
            if r is None:
                cells.append("")
                continue
            ratio = _ratio(r["p50_us"], floor.get("p50_us", 0))
            cells.append(f"{r['p50_us']:.0f} / {r['p99_us']:.0f} ({ratio})")
        lines.append(f"| {route} | " + " | ".join(cells) + " |")
    return lines


def _sweep_table(target: dict[str, Any]) -> list[str]:
    sweep = sorted(target["scenarios"], key=lambda s: (s["spec"]["items"], s["spec"]["profiles"]))
    lines = [
        f"**{_label(target)}**",
        "",
        "| profiles x items | model | bytes/item used_memory | bytes/item MEMORY USAGE | "
        "keys/profile | steady CPU µs/record | continue watching p50 µs | "
        "sport+series+team p50 µs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sweep:
        for model, row in s["models"].items():
            shape = f"{s['spec']['profiles']:,} x {s['spec']['items']}"
            if "unsupported" in row:
                lines.append(f"| {shape} | {model} | not run | | | | | |")
                continue
            m = row["memory"]
            reads = row["reads"]
            lines.append(
                f"| {shape} | {model} | {m['used_memory_growth_per_item']:.0f} | "
                f"{m['memory_usage_per_item']:.0f} | {m['keys_per_profile']:.1f} | "
                f"{row['ingest']['steady']['cpu_us_per_record']:.1f} | "
                f"{reads.get('continue watching', {}).get('p50_us', math.nan):.0f} | "
                f"{reads.get('sport+series+team', {}).get('p50_us', math.nan):.0f} |"
            )
    return lines


# --- the conclusion ---------------------------------------------------------------------


def _reference(results: dict[str, Any]) -> dict[str, Any] | None:
    """The target the conclusion quotes: standalone, RedisJSON (all three models ran)."""
    targets = [t for t in results["targets"] if t["topology"] == "standalone"]
    targets.sort(key=lambda t: len(_ok(_main(t))), reverse=True)
    return targets[0] if targets else None


def _turning_point(target: dict[str, Any]) -> list[str]:
    """Per route: from which items-per-profile an alternative reads faster (by MARGIN)."""
    sweep = sorted(
        (s for s in target["scenarios"] if not s["scenario"]["full"]),
        key=lambda s: s["spec"]["items"],
    )
    out = []
    for route in ("continue watching", "sport+series+team", "show+season", "recency"):
        turned = None
        for s in sweep:
            rows = _ok(s)
            if "store" not in rows or route not in rows["store"]["reads"]:
                continue
            ours = rows["store"]["reads"][route]["p50_us"]
            rivals = [(r["reads"][route]["p50_us"], m) for m, r in rows.items()
                      if m != "store" and route in r["reads"]]  # fmt: skip
            if rivals and min(rivals)[0] < MARGIN * ours:
                turned = (s["spec"]["items"], min(rivals)[1], ours, min(rivals)[0])
                break
        if turned:
            items, rival, ours, theirs = turned
            out.append(
                f"- {route}: from {items} items per profile, {rival} reads faster "
                f"({theirs:.0f} vs {ours:.0f} µs p50)."
            )
        elif sweep:
            out.append(
                f"- {route}: no alternative reads faster at any size measured (up to "
                f"{sweep[-1]['spec']['items']} items per profile, p50 within 20% or better)."
            )
    return out


def _spread(results: dict[str, Any], model: str, value: Any) -> str:
    """min-max over every run of ``value(model row) / value(store row)``, main scenario."""
    ratios = []
    for target in results["targets"]:
        rows = _ok(_main(target))
        if model in rows and "store" in rows and value(rows["store"]):
            ratios.append(value(rows[model]) / value(rows["store"]))
    if not ratios:
        return "n/a"
    return f"{min(ratios):.1f}-{max(ratios):.1f}x"


def _summary(results: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """The conclusion in one paragraph, every figure from the results."""
    rows = _ok(_main(ref))
    if "store" not in rows:
        return []

    def cpu(r: dict[str, Any]) -> float:
        return float(r["ingest"]["steady"]["cpu_us_per_record"])

    def mem(r: dict[str, Any]) -> float:
        return float(r["memory"]["used_memory_growth_per_item"])

    alts = [
        m for m in LABELS if m != "store" and any(m in _ok(_main(t)) for t in results["targets"])
    ]
    costs = "; ".join(
        f"{m}: {_spread(results, m, cpu)} the engine CPU per steady-state record and "
        f"{_spread(results, m, mem)} the memory per item"
        for m in alts
    )
    store = rows["store"]["reads"]
    lost = [
        r
        for r in ROUTES
        if r in store
        and any(
            r in x["reads"] and x["reads"][r]["p50_us"] < MARGIN * store[r]["p50_us"]
            for m, x in rows.items()
            if m != "store"
        )
    ]
    held = [r for r in ROUTES if r in store and r not in lost]
    counts = [
        row["memory"]["keys_per_profile"]
        for t in results["targets"]
        for sc in t["scenarios"]
        for m, row in _ok(sc).items()
        if m != "store"
    ]
    keys = f"{min(counts):.0f} to {max(counts):.0f}" if counts else "many"
    return [
        "In short, across the runs (both engines, standalone and cluster), against the JSON "
        f"array the alternatives cost {costs}, and keep {keys} keys per profile (20 to 1000 "
        "items) instead of one. The JSON array reads "
        f"{', '.join(held) or 'no route'} as fast or faster; "
        f"it loses {', '.join(lost) or 'no route'} in the {_label(ref)} run, where an index "
        "per dimension answers without reading and decoding the whole history in Python "
        "(the gap grows with items per profile, below).",
    ]


def conclusion(results: dict[str, Any], sizings: dict[str, list[capacity.Sizing]]) -> list[str]:
    ref = _reference(results)
    if ref is None:
        return ["No standalone run: nothing to conclude."]
    main = _main(ref)
    rows = _ok(main)
    store = rows.get("store")
    lines = [*_summary(results, ref), ""]
    lines += [f"Quoted from the {_label(ref)} run; the other runs are in the tables above.", ""]
    if store:
        s = store["ingest"]
        for model, row in rows.items():
            if model == "store":
                continue
            w = row["ingest"]

            def cpu(phase: str, w: dict[str, Any] = w) -> str:
                return _ratio(w[phase]["cpu_us_per_record"], s[phase]["cpu_us_per_record"])

            grown = "used_memory_growth_per_item"
            lines.append(
                f"- Writes, {model} vs the JSON array: engine CPU per record "
                f"{cpu('steady')}x in the steady state, {cpu('session_starts')}x for session "
                f"starts, {cpu('dense')}x for dense batches; memory per item (used_memory) "
                f"{_ratio(row['memory'][grown], store['memory'][grown])}x; "
                f"keys per profile {row['memory']['keys_per_profile']:.0f} vs 1."
            )
        for route in ROUTES:
            cells = {m: r["reads"][route]["p50_us"] for m, r in rows.items() if route in r["reads"]}
            if len(cells) > 1 and "store" in cells:
                best = min(cells, key=lambda m: cells[m])
                if best != "store" and cells[best] < MARGIN * cells["store"]:
                    lines.append(
                        f"- Reads, {route}: {best} is faster than the JSON array "
                        f"({cells[best]:.0f} vs {cells['store']:.0f} µs p50)."
                    )
        fastest = [
            r
            for r in ROUTES
            if r in store["reads"]
            and all(
                MARGIN * store["reads"][r]["p50_us"]
                <= x["reads"].get(r, {"p50_us": math.inf})["p50_us"]
                for x in rows.values()
            )
        ]
        if fastest:
            lines.append(
                "- Reads where no alternative is faster (p50 within 20% or better): "
                + ", ".join(fastest)
                + "."
            )
    lines += ["", "Where the trade-off turns (reads, p50, by items per profile):", ""]
    lines += _turning_point(ref)
    lines += ["", "Cost at the example scales (200 items per profile, IPL-final peak):", ""]
    for label, found in sizings.items():
        parts = [
            f"{s.model} {s.nodes} x {s.node_type} ≈ {s.usd_per_month:,.0f} USD/month" for s in found
        ]
        lines.append(f"- {label}: " + "; ".join(parts) + ".")
    lines += [
        "",
        "What the choice rules out: MemoryDB Multi-Region (active-active across Regions) "
        "takes strings, hashes, sets and sorted sets, not JSON (../shared/memorydb-json.md); "
        "the JSON array, and both per-item JSON models, run on single-Region clusters only. "
        "Only a model without JSON (items as hashes or strings plus sorted sets) could go "
        "multi-Region, with last-writer-wins per key or field instead of the rules' scripts. "
        "Search is not in MemoryDB's JSON engine at all: the search model needs RediSearch "
        "on RedisJSON (see the valkey-json rows: the search module finds no JSON there), and "
        "MemoryDB's own search is single-shard and cannot be enabled on an existing cluster "
        "(../shared/memorydb-json.md).",
    ]
    return lines


# --- the document -----------------------------------------------------------------------


def _examples(results: dict[str, Any]) -> dict[str, list[capacity.Sizing]]:
    return {
        label: capacity.answer(results, profiles, 200, IPL_PEAK) for label, profiles in EXAMPLES
    }


def _engine(engine: dict[str, Any]) -> str:
    search = f" + {engine['search']}" if engine["search"] else ""
    return f"{engine['server']} + {engine['json']}{search}"


def markdown(results: dict[str, Any], pictures: list[str], picture_dir: str) -> str:
    meta = results["meta"]
    engines = sorted({_engine(t["engine"]) for t in results["targets"]})
    plan = meta["plan"]
    sizings = _examples(results)
    lines = [
        "# Load test: the data-model decision and its cost",
        "",
        "Three models of the watch history, same workload, same server, one run "
        "(`loadtest/`, see its docstrings for what each measure is):",
        "",
        *(f"- **{m}**: {LABELS[m]}" for m in LABELS),
        "",
        f"Produced by `{meta['command']}` on {meta['started']} in {meta['duration_s'] / 60:.0f} "
        f"min: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Python "
        f"{meta['machine']['python']}; engines: {'; '.join(engines)}. Seed {plan['seed']}, "
        f"spike {plan['spike']:.0%} of profiles on one live match, batches of "
        f"{plan['batch_records']} records, {plan['batches']} batches per phase, dense batches "
        f"with {plan['dense_records']} records per profile; 2% of the records delivered "
        "twice and 2% followed by a late one (loadtest/workload.py).",
        "",
        "Caveats: the engine runs on one core and the client(s) on the other, and other "
        "engineers' test runs shared the machine's cores during the run, so absolute numbers "
        "drift; the ratios within one run (to the engine's floor, between models) hold "
        "better. The 3-primary cluster runs all three primaries on the same one core: its "
        "rows show what the cluster protocol costs, not cluster scaling. The two-process "
        "ingest shares the client core. Engine CPU is measured on x86 (AMD EPYC), MemoryDB "
        "runs Graviton. The store also keeps its changes feed (a change stamp per item, "
        "eviction records: README), which the two alternatives do not implement: its "
        "write cost and bytes per item include it. Not measured: removals and clears "
        "under load (the contract test checks they are right), and reads with a cursor.",
    ]
    if meta.get("note"):
        lines += ["", f"Note: {meta['note']}"]
    if meta["skipped"]:
        lines += ["", "Not run: " + "; ".join(meta["skipped"]) + "."]
    lines += ["", "## Headline", ""]
    for target in results["targets"]:
        lines += [*_headline(target), ""]
    lines += [f"![{p}]({picture_dir}/{p})" for p in pictures]
    lines += ["", "## Ingest", ""]
    for target in results["targets"]:
        lines += [*_ingest_table(target), ""]
    lines += ["## Reads", ""]
    for target in results["targets"]:
        lines += [*_reads_table(target), ""]
    lines += ["## Growth with items per profile and with profiles", ""]
    for target in results["targets"]:
        lines += [*_sweep_table(target), ""]
    lines += [
        "## Capacity",
        "",
        "`python -m loadtest capacity --profiles N --items M --peak P` sizes a MemoryDB "
        "cluster from these results (loadtest/capacity.py says how; node sizes and prices: "
        "loadtest/data/memorydb_nodes.json, dated, sources named; **the price there is an "
        "assumption to check**). The IPL-final peak: 25 M concurrent viewers, a heartbeat "
        f"every 30 s = {IPL_PEAK:,.0f} heartbeats/s. 200 items per profile, one replica per "
        "shard, memory filled to 80% of what MemoryDB leaves usable, engine CPU at 50% at "
        "peak.",
        "",
    ]
    for label, found in sizings.items():
        lines += [f"**{label}**", "", capacity.table(found), ""]
    lines += ["## Conclusion", "", *conclusion(results, sizings), ""]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path, report: Path) -> None:
    pictures = charts(results, out)
    try:
        rel = out.resolve().relative_to(report.resolve().parent)
        picture_dir = str(rel)
    except ValueError:
        picture_dir = str(out.resolve())
    report.write_text(markdown(results, pictures, picture_dir))


def main(results_path: Path, report: Path) -> int:
    write(json.loads(results_path.read_text()), results_path.parent, report)
    return 0
