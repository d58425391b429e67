"""docs/benchmarks.md and its charts, from a run's results.json.

Everything in the report is computed from the results (the conclusion's sentences
too), so a run on another machine writes a report that is true of that run. A figure
is the median of the run's passes with their spread (min-max); a read's p99 comes only
from the samples of every pass pooled, where there are enough of them
(run.P99_MIN_SAMPLES); a comparison is stated only where every pass agrees on its
direction, and called "within noise" otherwise. Instruction counts (callgrind) are one
count each: they do not drift with the machine.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtest import capacity
from loadtest.instructions import KINDS
from loadtest.models import RUNS_ON_MEMORYDB
from loadtest.run import P99_MIN_SAMPLES
from loadtest.workload import ROUTES

PHASES = ("steady", "session_starts", "dense", "steady_2_processes")
COLORS = {
    "store": "#1f77b4",
    "sorted_sets": "#ff7f0e",
    "sorted_sets_hash": "#d62728",
    "search": "#2ca02c",
}
LABELS = {
    "store": "one JSON document per profile, the history as a sorted array (this store)",
    "sorted_sets": "a string per item (its packed text) + a sorted set per lookup dimension",
    "sorted_sets_hash": "one hash of every item per profile + the same sorted sets",
    "search": "a JSON document per item + search (FT.CREATE ON JSON): RedisJSON only, "
    "cannot run on MemoryDB",
}
EXAMPLES = (
    ("10 M profiles", 10e6),
    ("300 M profiles", 300e6),
)
IPL_PEAK = 25e6 / 30  # 25 M concurrent viewers, a heartbeat every 30 s
KIND_LABELS = {
    "front": "heartbeat, newest item",
    "moved": "older item to the front",
    "new": "new asset at MAX_ITEMS",
}

Get = Callable[[dict[str, Any]], Any]


# --- reading the passes -------------------------------------------------------------------


def _label(target: dict[str, Any]) -> str:
    return f"{target['engine']['json']}, {target['topology']}"


def _main_name(target: dict[str, Any]) -> str:
    return str(next(s["scenario"]["name"] for s in target["passes"][0] if s["scenario"]["full"]))


def _scenarios(target: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The scenario ``name`` of every pass."""
    return [s for scenarios in target["passes"] for s in scenarios if s["scenario"]["name"] == name]


def _first(target: dict[str, Any], name: str) -> dict[str, Any]:
    return _scenarios(target, name)[0]


def _models(target: dict[str, Any], name: str) -> list[str]:
    """The models that ran in scenario ``name``, in LABELS order."""
    rows = _first(target, name)["models"]
    return [m for m in LABELS if m in rows and "unsupported" not in rows[m]]


def _values(target: dict[str, Any], name: str, get: Get) -> list[float]:
    """``get(scenario)`` in every pass (passes where it is missing or None left out)."""
    out = []
    for s in _scenarios(target, name):
        try:
            v = get(s)
        except (KeyError, TypeError):
            continue
        if v is not None:
            out.append(float(v))
    return out


def _ratios(target: dict[str, Any], name: str, get_a: Get, get_b: Get) -> list[float]:
    """a / b pass by pass (the same pass's two figures)."""
    out = []
    for s in _scenarios(target, name):
        try:
            a, b = get_a(s), get_b(s)
        except (KeyError, TypeError):
            continue
        if a is not None and b:
            out.append(float(a) / float(b))
    return out


def _cell(values: Sequence[float], fmt: str = ",.0f") -> str:
    """median (min-max) of the passes."""
    if not values:
        return "n/a"
    med, low, high = (format(v, fmt) for v in (statistics.median(values), min(values), max(values)))
    return med if low == high else f"{med} ({low}-{high})"


def _ratio_cell(ratios: Sequence[float]) -> str:
    if not ratios:
        return "-"
    return f"{_cell(ratios, '.2f')}x" + ("" if _agrees(ratios) else " ~")


def _agrees(ratios: Sequence[float]) -> bool:
    """Every pass on the same side of 1 (and there are passes)."""
    return bool(ratios) and (all(r > 1 for r in ratios) or all(r < 1 for r in ratios))


def _row(model: str) -> Callable[[Get], Get]:
    def at(get: Get) -> Get:
        return lambda s: get(s["models"][model])

    return at


def _steady(key: str) -> Get:
    return lambda r: r["ingest"]["steady"][key]


def _steady_cpu(r: dict[str, Any]) -> Any:
    return r["ingest"]["steady"]["cpu_us_per_record"]


def _memory(r: dict[str, Any]) -> Any:
    return r["memory"]["used_memory_growth_per_item"]


def _p50(route: str) -> Get:
    return lambda r: r["reads"][route]["p50_us"]


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


def _median_of(target: dict[str, Any], name: str, get: Get) -> float:
    values = _values(target, name, get)
    return statistics.median(values) if values else 0.0


def _per_target_chart(
    targets: list[dict[str, Any]], path: Path, title: str, draw: Any, floor_key: str | None
) -> None:
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.4), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        name = _main_name(target)
        draw(ax, target, name)
        if floor_key:
            value = _median_of(target, name, lambda s: s["floor"]["write"][floor_key])
            ax.axhline(value, color="grey", linestyle="--", linewidth=1, label="engine floor")
        ax.set_title(_label(target), fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def charts(results: dict[str, Any], out: Path) -> list[str]:
    """The PNGs (file names, written to ``out``): medians of the passes."""
    targets = results["targets"]
    if not targets:
        return []

    def ingest_of(key: str) -> Any:
        def draw(ax: Any, target: dict[str, Any], name: str) -> None:
            models = _models(target, name)
            rows = _first(target, name)["models"]
            phases = [p for p in PHASES if any(p in rows[m]["ingest"] for m in models)]

            def phase(p: str) -> Get:
                return lambda r: r["ingest"][p][key]

            series = {
                m: [_median_of(target, name, _row(m)(phase(p))) for p in phases] for m in models
            }
            _grouped(ax, [p.replace("_", " ") for p in phases], series, key.replace("_", " "))

        return draw

    _per_target_chart(
        targets, out / "throughput.png", "Ingest: records/s (median of the passes)",
        ingest_of("records_per_s"), "records_per_s",
    )  # fmt: skip
    _per_target_chart(
        targets, out / "cpu.png", "Engine CPU per record (µs, INFO used_cpu; median of the passes)",
        ingest_of("cpu_us_per_record"), "cpu_us_per_record",
    )  # fmt: skip

    def latency(ax: Any, target: dict[str, Any], name: str) -> None:
        models = _models(target, name)
        width = 0.8 / max(1, len(models))
        for k, m in enumerate(models):
            xs = [i + k * width for i in range(len(ROUTES))]
            p50 = [_median_of(target, name, _row(m)(_p50(r))) for r in ROUTES]
            ax.bar(xs, p50, width, color=COLORS[m], label=m)
        floor = _median_of(target, name, lambda s: s["floor"]["read"]["p50_us"])
        ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="bare JSON.GET p50")
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(ROUTES))])
        ax.set_xticklabels(ROUTES, rotation=40, ha="right", fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("p50 µs, log scale", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)

    _per_target_chart(
        targets, out / "latency.png", "Reads: p50 per route (median of the passes)", latency, None
    )

    standalone = [t for t in targets if t["topology"] == "standalone"] or targets
    fig, axes = plt.subplots(
        1, len(standalone), figsize=(4.6 * len(standalone), 3.4), squeeze=False
    )
    for ax, target in zip(axes[0], standalone, strict=True):
        sizes = sorted(
            {s["scenario"]["name"]: s["spec"]["items"] for s in target["passes"][0]}.items(),
            key=lambda kv: kv[1],
        )
        for model in LABELS:
            points = [(items, name) for name, items in sizes if model in _models(target, name)]
            if not points:
                continue
            xs = [p[0] for p in points]
            grown = [_median_of(target, n, _row(model)(_memory)) for _, n in points]
            usage = [
                _median_of(target, n, _row(model)(lambda r: r["memory"]["memory_usage_per_item"]))
                for _, n in points
            ]
            ax.plot(xs, grown, "o-", color=COLORS[model], label=f"{model}: used_memory growth")
            ax.plot(xs, usage, "s--", color=COLORS[model], label=f"{model}: MEMORY USAGE")
        ax.set_xscale("log")
        ax.set_xlabel("items per profile", fontsize=8)
        ax.set_ylabel("bytes per item", fontsize=8)
        ax.set_title(_label(target), fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=6)
    fig.suptitle("Memory per item vs items per profile (median of the passes)", fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 0.95))
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    return ["throughput.png", "cpu.png", "latency.png", "memory.png"]


# --- tables -----------------------------------------------------------------------------


def _instructions(results: dict[str, Any]) -> list[str]:
    counted = results.get("instructions")
    if not counted:
        return ["Not counted in this run (an endpoint, or `--no-instructions`)."]
    lines = [
        f"Callgrind, one standalone server per engine, {counted['profiles']} profiles x "
        f"{counted['items']} items seeded by each model (uncounted), one warm-up round, then "
        "one counted round of each kind of heartbeat, one record per profile, pipelined as "
        "the recorder sends them (loadtest/instructions.py). Thousands of instructions per "
        "record; x store: the ratio to the store's count for the same kind; the floor is a "
        "bare pipelined JSON.ARRAPPEND per record.",
        "",
    ]
    for engine, models in counted["engines"].items():
        if "skipped" in models:
            lines += [f"**{engine}**: not counted: {models['skipped']}", ""]
            continue
        floor = models["floor"]["append"]
        store = models.get("store", {})
        head = " | ".join(f"{KIND_LABELS[k]} kIr (x store)" for k in KINDS)
        lines += [
            f"**{engine}** (floor: {floor / 1e3:.1f} kIr per JSON.ARRAPPEND)",
            "",
            f"| model | {head} | heartbeat x floor |",
            "|---|" + "---:|" * (len(KINDS) + 1),
        ]
        for model, counts in models.items():
            if model == "floor":
                continue
            if "unsupported" in counts:
                lines.append(
                    f"| {model} | cannot run: {counts['unsupported']} |" + " |" * len(KINDS)
                )
                continue
            cells = []
            for k in KINDS:
                ratio = f" ({counts[k] / store[k]:.2f})" if store.get(k) else ""
                cells.append(f"{counts[k] / 1e3:,.0f}{ratio}")
            lines.append(
                f"| {model} | " + " | ".join(cells) + f" | {counts['front'] / floor:.1f} |"
            )
        lines.append("")
    return lines


def _headline(target: dict[str, Any]) -> list[str]:
    name = _main_name(target)
    spec = _first(target, name)["spec"]
    store = _row("store")
    lines = [
        f"**{_label(target)}** ({spec['profiles']:,} profiles x {spec['items']} items; median "
        f"of {len(target['passes'])} passes (min-max); x store: the ratio pass by pass, ~ "
        "where the passes disagree on its direction)",
        "",
        "| model | steady records/s | engine CPU µs/record | x store | data written "
        "B/record | continue watching p50 µs | bytes/item used_memory | x store | "
        "MEMORY USAGE | keys/profile |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = _first(target, name)["models"]
    for model in (m for m in LABELS if m in rows):
        if "unsupported" in rows[model]:
            lines.append(f"| {model} | cannot run here: {rows[model]['unsupported']} |" + " |" * 8)
            continue
        at = _row(model)

        def cell(get: Get, fmt: str = ",.0f", at: Callable[[Get], Get] = at) -> str:
            return _cell(_values(target, name, at(get)), fmt)

        def ratio(get: Get, at: Callable[[Get], Get] = at, model: str = model) -> str:
            return (
                "-" if model == "store" else _ratio_cell(_ratios(target, name, at(get), store(get)))
            )

        lines.append(
            f"| {model} | {cell(_steady('records_per_s'))} "
            f"| {cell(_steady_cpu, '.1f')} | {ratio(_steady_cpu)} "
            f"| {cell(_steady('written_bytes_per_record'))} "
            f"| {cell(_p50('continue watching'))} | {cell(_memory)} | {ratio(_memory)} "
            f"| {cell(lambda r: r['memory']['memory_usage_per_item'])} "
            f"| {cell(lambda r: r['memory']['keys_per_profile'], '.0f')} |"
        )
    fw = _values(target, name, lambda s: s["floor"]["write"]["cpu_us_per_record"])
    fr = _values(target, name, lambda s: s["floor"]["read"]["p50_us"])
    lines += [
        "",
        f"Floor: bare pipelined JSON.ARRAPPEND {_cell(fw, '.1f')} µs engine CPU per record; "
        f"bare `JSON.GET key $` of a {spec['items']}-item store document p50 {_cell(fr)} µs"
        f"{_pooled_p99(target, name, 'floor', 'bare JSON.GET')}.",
    ]
    return lines


def _pooled_p99(target: dict[str, Any], name: str, model: str, route: str) -> str:
    pooled = target.get("pooled", {}).get(name, {}).get(model, {}).get(route)
    if not pooled or pooled.get("p99_us") is None:
        return ""
    return f", p99 {pooled['p99_us']:,.0f} µs ({pooled['samples']:,} samples pooled)"


def _ingest_table(target: dict[str, Any]) -> list[str]:
    name = _main_name(target)
    lines = [
        f"**{_label(target)}** (median of the passes (min-max); x store pass by pass)",
        "",
        "| model | phase | records/s | engine CPU µs/record | x store | script µs/record "
        "(commandstats: wall time inside the command) | data written B/record |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model in _models(target, name):
        at = _row(model)
        for phase in PHASES:

            def get(key: str, phase: str = phase) -> Get:
                return lambda r: r["ingest"][phase][key]

            if not _values(target, name, at(get("records_per_s"))):
                continue
            ratio = (
                _ratios(
                    target,
                    name,
                    at(get("cpu_us_per_record")),
                    _row("store")(get("cpu_us_per_record")),
                )
                if model != "store"
                else []
            )
            lines.append(
                f"| {model} | {phase.replace('_', ' ')} "
                f"| {_cell(_values(target, name, at(get('records_per_s'))))} "
                f"| {_cell(_values(target, name, at(get('cpu_us_per_record'))), '.1f')} "
                f"| {_ratio_cell(ratio)} "
                f"| {_cell(_values(target, name, at(get('command_us_per_record'))), '.1f')} "
                f"| {_cell(_values(target, name, at(get('written_bytes_per_record'))))} |"
            )
    return lines


def _largest_name(target: dict[str, Any]) -> str:
    """The scenario with the most items per profile."""
    return str(max(target["passes"][0], key=lambda s: s["spec"]["items"])["scenario"]["name"])


def _reads_table(target: dict[str, Any], name: str) -> list[str]:
    models = _models(target, name)
    head = " | ".join(f"{m} p50" for m in models)
    spec = _first(target, name)["spec"]
    lines = [
        f"**{_label(target)}** ({spec['profiles']:,} profiles x {spec['items']:,} items; µs, "
        "client round trip, decoded to API items; p50: median of the passes (min-max); p99 "
        f"from every pass's samples pooled, where there are at least {P99_MIN_SAMPLES:,})",
        "",
        f"| route | {head} | p99 pooled ({', '.join(models)}) |",
        "|---|" + "---:|" * (len(models) + 1),
    ]
    for route in ROUTES:
        cells = [_cell(_values(target, name, _row(m)(_p50(route)))) for m in models]
        p99s = []
        for m in models:
            pooled = target.get("pooled", {}).get(name, {}).get(m, {}).get(route, {})
            p99 = pooled.get("p99_us")
            p99s.append(f"{p99:,.0f}" if p99 is not None else "-")
        lines.append(f"| {route} | " + " | ".join(cells) + f" | {' / '.join(p99s)} |")
    return lines


def _sweep_table(target: dict[str, Any]) -> list[str]:
    sizes = sorted(
        {
            s["scenario"]["name"]: (s["spec"]["items"], s["spec"]["profiles"])
            for s in target["passes"][0]
        }.items(),
        key=lambda kv: kv[1],
    )
    lines = [
        f"**{_label(target)}** (median of the passes)",
        "",
        "| profiles x items | model | bytes/item used_memory | bytes/item MEMORY USAGE | "
        "keys/profile | steady CPU µs/record | continue watching p50 µs | "
        "sport+series+team p50 µs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (items, profiles) in sizes:
        for model in _models(target, name):
            at = _row(model)

            def med(
                get: Get, fmt: str = ",.0f", at: Callable[[Get], Get] = at, name: str = name
            ) -> str:
                values = _values(target, name, at(get))
                return format(statistics.median(values), fmt) if values else "n/a"

            lines.append(
                f"| {profiles:,} x {items} | {model} | {med(_memory)} | "
                f"{med(lambda r: r['memory']['memory_usage_per_item'])} | "
                f"{med(lambda r: r['memory']['keys_per_profile'], '.0f')} | "
                f"{med(_steady_cpu, '.1f')} | {med(_p50('continue watching'))} | "
                f"{med(_p50('sport+series+team'))} |"
            )
    return lines


# --- the conclusion ---------------------------------------------------------------------


def _runs_against_store(
    results: dict[str, Any], model: str, get: Get, name: str | None
) -> Iterator[tuple[dict[str, Any], list[float]]]:
    """Each run (target) that measured ``model`` in scenario ``name`` (default: the
    run's main one), with the model's figure over the store's, pass by pass."""
    for target in results["targets"]:
        scenario = name or _main_name(target)
        if scenario not in {s["scenario"]["name"] for s in target["passes"][0]}:
            continue
        if model not in _models(target, scenario):
            continue
        ratios = _ratios(target, scenario, _row(model)(get), _row("store")(get))
        if ratios:
            yield target, ratios


def _verdicts(results: dict[str, Any], model: str, get: Get, name: str | None = None) -> str:
    """Per run: the model's figure against the store's, pass by pass: "lower"/"higher" in
    every pass (with the median ratio and its range) or "within noise"."""
    parts = []
    for target, ratios in _runs_against_store(results, model, get, name):
        if _agrees(ratios):
            word = "lower" if ratios[0] < 1 else "higher"
            parts.append(f"{_label(target)} {word}, {_cell(ratios, '.2f')}x")
        else:
            parts.append(f"{_label(target)} within noise ({_cell(ratios, '.2f')}x)")
    return "; ".join(parts) or "not measured"


def _read_verdicts(results: dict[str, Any], model: str, name: str | None = None) -> list[str]:
    """Per route, where the model reads faster/slower than the store in every pass."""
    out = []
    for route in ROUTES:
        faster: list[str] = []
        slower: list[str] = []
        noise: list[str] = []
        for target, ratios in _runs_against_store(results, model, _p50(route), name):
            cell = f"{_label(target)} {_cell(ratios, '.2f')}x"
            if _agrees(ratios):
                (faster if ratios[0] < 1 else slower).append(cell)
            else:
                noise.append(_label(target))
        bits = []
        if faster:
            bits.append("faster in every pass on " + ", ".join(faster))
        if slower:
            bits.append("slower in every pass on " + ", ".join(slower))
        if noise:
            bits.append("within noise on " + ", ".join(noise))
        if bits:
            out.append(f"  - {route}: " + "; ".join(bits) + ".")
    return out


def _instruction_ratios(results: dict[str, Any], model: str) -> str:
    counted = (results.get("instructions") or {}).get("engines", {})
    parts = []
    for engine, models in counted.items():
        counts, store = models.get(model, {}), models.get("store", {})
        if "front" not in counts or "front" not in store:
            continue
        ratios = ", ".join(f"{KIND_LABELS[k]} {counts[k] / store[k]:.2f}x" for k in KINDS)
        parts.append(f"{engine}: {ratios}")
    return "; ".join(parts) or "not counted"


def _medians(results: dict[str, Any], model: str, get: Get) -> list[float]:
    """Per run, the median over the passes of model / store (main scenario)."""
    out = []
    for target in results["targets"]:
        name = _main_name(target)
        if model in _models(target, name):
            ratios = _ratios(target, name, _row(model)(get), _row("store")(get))
            if ratios:
                out.append(statistics.median(ratios))
    return out


def _in_short(results: dict[str, Any], model: str) -> str:
    """One line: instructions, engine CPU, memory, and the routes every pass agrees on."""
    counted = (results.get("instructions") or {}).get("engines", {})
    beats = [
        m[model]["front"] / m["store"]["front"]
        for m in counted.values()
        if "front" in m.get(model, {}) and "front" in m.get("store", {})
    ]
    moves = [
        m[model]["moved"] / m["store"]["moved"]
        for m in counted.values()
        if "moved" in m.get(model, {}) and "moved" in m.get("store", {})
    ]

    def span(values: list[float]) -> str:
        if not values:
            return "n/a"
        low, high = f"{min(values):.2f}", f"{max(values):.2f}"
        return f"{low}x" if low == high else f"{low}-{high}x"

    faster, slower = [], []
    for route in ROUTES:
        verdicts = set()
        for target in results["targets"]:
            name = _main_name(target)
            if model not in _models(target, name):
                continue
            ratios = _ratios(target, name, _row(model)(_p50(route)), _row("store")(_p50(route)))
            verdicts.add(("faster" if ratios[0] < 1 else "slower") if _agrees(ratios) else "noise")
        if verdicts == {"faster"}:
            faster.append(route)
        elif verdicts == {"slower"}:
            slower.append(route)
    memorydb = "" if model in RUNS_ON_MEMORYDB else " (cannot run on MemoryDB)"
    cpu = span(_medians(results, model, _steady_cpu))
    return (
        f"- **{model}**{memorydb}: engine instructions {span(beats)} the store's for a "
        f"heartbeat on the newest item and {span(moves)} for an older item moved to the "
        f"front; wall-clock engine CPU per steady-state record {cpu} "
        f"(medians of the runs); memory per item {span(_medians(results, model, _memory))}; "
        f"reads faster in every pass of every run: {', '.join(faster) or 'none'}; slower in "
        f"every pass of every run: {', '.join(slower) or 'none'}; the other routes mixed or "
        "within noise."
    )


def conclusion(
    results: dict[str, Any], sizings: dict[str, list[capacity.Answer] | str]
) -> list[str]:
    targets = results["targets"]
    if not targets:
        return ["No run: nothing to conclude."]
    alternatives = [
        m for m in LABELS if m != "store" and any(m in _models(t, _main_name(t)) for t in targets)
    ]
    lines = [
        "In short (every alternative against the store; a route counts as faster or "
        "slower only where every pass of every run that measured it agrees):",
        "",
        *(_in_short(results, model) for model in alternatives),
        "",
        "In detail, run by run: a direction is stated only where every pass of that run "
        "agrees; otherwise the run is listed as within noise. Instruction counts are one "
        "count each (they repeat to ~0.1%).",
        "",
    ]
    for model in alternatives:
        lines += [
            f"**{model}** ({LABELS[model]}):",
            "",
            f"- Engine instructions against the store (callgrind): "
            f"{_instruction_ratios(results, model)}.",
            f"- Engine CPU per steady-state record (wall clock, INFO): "
            f"{_verdicts(results, model, _steady_cpu)}.",
            f"- Memory per item (used_memory growth): {_verdicts(results, model, _memory)}.",
            "- Reads, p50 against the store, main scenario:",
            *_read_verdicts(results, model),
        ]
        big = [s["scenario"]["name"] for s in targets[0]["passes"][0] if s["spec"]["items"] >= 1000]
        for name in big:
            spec = _first(targets[0], name)["spec"]
            lines += [
                f"- Reads at {spec['items']} items per profile:",
                *_read_verdicts(results, model, name),
            ]
        lines.append("")
    lines += ["Cost at the example scales (200 items per profile, IPL-final peak):", ""]
    for label, found in sizings.items():
        if isinstance(found, str):
            lines.append(f"- {label}: {found}.")
            continue
        parts = [
            f"{a.measured.model} {capacity._range(a.low.nodes, a.high.nodes)} nodes ≈ "
            f"{capacity._range(a.low.usd_per_month, a.high.usd_per_month)} USD/month"
            for a in found
        ]
        lines.append(f"- {label}: " + "; ".join(parts) + ".")
        lines += [f"  {n}" for n in capacity.notes(results, found)]
    lines += [
        "",
        "What the choice rules out: MemoryDB Multi-Region (active-active across Regions) "
        "takes strings, hashes, sets and sorted sets, not JSON (../shared/memorydb-json.md): "
        "the JSON array runs on single-Region clusters only. The two sorted-set models use "
        "no JSON and could go multi-Region, with last-writer-wins per key or field instead "
        "of the rules' scripts. Search is not in MemoryDB's JSON engine at all: the search "
        "model needs RediSearch on RedisJSON (the valkey-json rows: the search module finds "
        "no JSON there), and MemoryDB's own search is single-shard and must be enabled when "
        "a cluster is created (../shared/memorydb-json.md), so it is measured here only to "
        "show what an index would buy, and never priced on MemoryDB.",
    ]
    return lines


# --- the document -----------------------------------------------------------------------


def _examples(results: dict[str, Any]) -> dict[str, list[capacity.Answer] | str]:
    """The sizing at each example scale, or why it was refused."""
    out: dict[str, list[capacity.Answer] | str] = {}
    for label, profiles in EXAMPLES:
        try:
            out[label] = capacity.answer(results, profiles, 200, IPL_PEAK)
        except capacity.Refused as exc:
            out[label] = f"not sized: {exc}"
    return out


def _engine(engine: dict[str, Any]) -> str:
    search = f" + {engine['search']}" if engine["search"] else ""
    return f"{engine['server']} + {engine['json']}{search}"


def _method(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    plan = meta["plan"]
    engines = sorted({_engine(t["engine"]) for t in results["targets"]})
    sizes = "; ".join(
        f"{s['name']}: {s['profiles']:,} profiles x {s['items']} items, {s['read_samples']} "
        "reads per route"
        for s in plan["scenarios"]
    )
    server = results["targets"][0]["server"] if results["targets"] else {}
    listpack = ", ".join(f"{k} {v}" for k, v in server.items() if "listpack" in k)
    lines = [
        f"Produced by `{meta['command']}` on {meta['started']} in {meta['duration_s'] / 60:.0f} "
        f"min: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, Python "
        f"{meta['machine']['python']}; engines: {'; '.join(engines)}.",
        "",
        f"Method: {plan['passes']} passes; every pass runs every scenario ({sizes}) and "
        f"every model on a flushed server with the same seeded workload (seed {plan['seed']}, "
        f"spike {plan['spike']:.0%} of profiles on one live match, batches of "
        f"{plan['batch_records']} records, {plan['batches']} batches per phase, dense batches "
        f"with {plan['dense_records']} records per profile; 2% of the records delivered "
        "twice and 2% followed by a late one: loadtest/workload.py). A figure is the median "
        "of the passes, with the lowest and highest in brackets; a p99 is quoted only from "
        f"the samples of every pass pooled, where there are at least {P99_MIN_SAMPLES:,}. "
        "Each pass is smaller than a single-pass run would be: the machine is shared, and "
        "the passes, not one large sample, are what tells a difference from noise.",
        "",
        "Servers: the load test turns on an append-only file (appendfsync no, never "
        "rewritten) and counts its growth as the data written per record, the bytes a "
        "script's effects replicate as, which MemoryDB's transaction log receives and bills. "
        f"It sets {listpack or 'the listpack limits'} so that a profile's sorted sets and its "
        "hash of items stay listpacks (compact, scanned) at 200 items; at 1,000 items they "
        "are hash tables and skip lists, as a server's defaults would make them. MemoryDB "
        "allows all four in a custom parameter group (memorydb_valkey7 family: modifiable, "
        "0 or more, applied at once on every node; AWS's engine-specific parameters page, "
        "not tried on MemoryDB by the project).",
        "",
        "The store is measured in the storage layout it writes, layout 3 "
        "(shared/watch_history/codec.py): one document per profile, the history as an array "
        "of compact item texts behind a head string, the asset ids as one string, and one "
        "shared record per description of an asset (`<prefix>a:<assetId>:<version>`, "
        "O(assets) keys), which used_memory growth counts and MEMORY USAGE (a profile's "
        "keys only) does not.",
        "",
        "Caveats: the engine runs on one core and the client(s) on the other, and other "
        "engineers' work shared the machine's two cores during the run, so wall-clock "
        "figures move between passes: read them with their spread, and lean on the "
        "instruction counts, which do not move. The 3-primary cluster runs all three "
        "primaries on the same one core: its rows show what the cluster protocol costs, "
        "not cluster scaling. Every server has the search module loaded (the search model "
        "needs it), which watches every write for the keys it indexes; the instruction "
        "counts run the other models without it. The two-process ingest shares the client "
        "core. Engine CPU is measured on x86 (AMD EPYC), MemoryDB runs Graviton. The store "
        "also keeps its changes feed (a change stamp per item, eviction records: docs/api.md), "
        "which the alternatives do not implement: its write cost and bytes per item include "
        "it. Not measured: removals and clears under load (the contract test checks they "
        "are right), and reads with a cursor.",
    ]
    if meta["skipped"]:
        lines += ["", "Not run: " + "; ".join(meta["skipped"]) + "."]
    return lines


def markdown(results: dict[str, Any], pictures: list[str], picture_dir: str) -> str:
    sizings = _examples(results)
    lines = [
        "# Load test: the data-model decision and its cost",
        "",
        "Four models of the watch history, same workload, same servers (`loadtest/`, see "
        "its docstrings for what each measure is); every model is held to the same rules "
        "by the contract test (tests/test_loadtest.py against tests/model.py):",
        "",
        *(f"- **{m}**: {LABELS[m]}" for m in LABELS),
        "",
        *_method(results),
        "",
        "## Engine instructions per record",
        "",
        *_instructions(results),
        "## Headline",
        "",
    ]
    for target in results["targets"]:
        lines += [*_headline(target), ""]
    lines += [f"![{p}]({picture_dir}/{p})" for p in pictures]
    lines += ["", "## Ingest", ""]
    for target in results["targets"]:
        lines += [*_ingest_table(target), ""]
    lines += ["## Reads", ""]
    for target in results["targets"]:
        lines += [*_reads_table(target, _main_name(target)), ""]
    largest = {_largest_name(t) for t in results["targets"]} - {
        _main_name(t) for t in results["targets"]
    }
    if largest:
        lines += ["## Reads at the largest profiles", ""]
        for target in results["targets"]:
            lines += [*_reads_table(target, _largest_name(target)), ""]
    lines += ["## Growth with items per profile and with profiles", ""]
    for target in results["targets"]:
        lines += [*_sweep_table(target), ""]
    lines += [
        "## Capacity",
        "",
        "`python -m loadtest capacity --profiles N --items M --peak P` sizes a MemoryDB "
        "cluster from these results (loadtest/capacity.py says how; `--help` gives every "
        "input with its unit and default). Only the models MemoryDB can run are priced "
        f"({', '.join(m for m in LABELS if m in RUNS_ON_MEMORYDB)}); search is not. Node "
        "sizes and prices: loadtest/data/memorydb_nodes.json, dated, sources named; **its "
        "prices are assumptions the project has not checked against AWS's price page**. "
        f"The IPL-final peak: 25 M concurrent viewers, a heartbeat every 30 s = "
        f"{IPL_PEAK:,.0f} heartbeats/s; one hour watched per profile per day for the data "
        "written; 200 items per profile, one replica per shard, memory filled to 80% of "
        "what MemoryDB leaves usable, engine CPU at 50% at peak. Ranges run from every "
        "figure's best pass to its worst.",
        "",
    ]
    for label, found in sizings.items():
        if isinstance(found, str):
            lines += [f"**{label}**: {found}.", ""]
            continue
        lines += [f"**{label}**", "", capacity.table(found), ""]
        lines += [*capacity.notes(results, found), ""]
    lines += ["## Conclusion", "", *conclusion(results, sizings), ""]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path, report: Path) -> None:
    pictures = charts(results, out)
    try:
        picture_dir = str(out.resolve().relative_to(report.resolve().parent))
    except ValueError:
        picture_dir = out.name
    report.write_text(markdown(results, pictures, picture_dir))


def main(results_path: Path, report: Path) -> int:
    write(json.loads(results_path.read_text()), results_path.parent, report)
    return 0
