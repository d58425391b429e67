"""``make bench-engine``: the engine's instructions per call, counted with callgrind.

    python -m loadtest.bench_engine [--valkey-json PATH] [--profiles N] [--items N]
                                    [--out docs/benchmarks/engine.json] [--speed-md PATH]
                                    [--dumps DIR]

On each JSON module (RedisJSON; valkey-json too when ``--valkey-json`` names a module
file that exists), a fresh server under callgrind (loadtest/callgrind.py says what a
count includes) is seeded through ``HistoryStore`` with the realistic profiles of
loadtest/workload.py, every profile at ``--items`` items (the cap, MAX_ITEMS). Then
each operation runs once per profile, through the store's public methods, so it
measures whatever layout the store writes; each is first run on a few warm-up profiles
(script loading and first calls are not counted):

- writes, one ``record_batch`` of one update per profile (one pipelined round trip):
  a heartbeat on the front item, an older item moved to the front, a new asset at the
  cap (an insert and an eviction);
- ``remove`` of one older asset, ``clear``, one call per profile;
- reads, ``select_page`` per profile: the first page by recency, continue watching
  (in progress), and a page filtered by sport (or show), as loadtest/workload.py asks;
- beside them, on copies of each profile's items that no layout decides (each update's
  values as a compact JSON array, ~200 characters, a little under today's stored item):
  one bare ``JSON.ARRAPPEND`` of such an item per profile,
  pipelined, the unit of the ratios; ``EVALSHA`` of ``return 1``; and the no-logic
  floor of an atomic read-check-write, ``EVALSHA`` of lua/engine_floor.lua (one JSON
  read, one ``JSON.SET``).

Prints a table (thousands of instructions per call, and the ratio to the bare append)
and writes the figures as JSON (``--out``) and as a table into ``--speed-md`` between
its ``bench-engine`` markers; with ``--dumps DIR`` it also keeps each row's callgrind
dump there (``ENGINE-ROW.out``, all the row's profiles: ``callgrind_annotate
--inclusive=yes`` breaks the count down by function). Two runs differ by up to ~2% per
row (docs/speed.md); the machine's speed does not enter them.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from loadtest.callgrind import CountingServer, counting_server
from loadtest.run import engine_info
from loadtest.workload import Workload, WorkloadSpec, build
from watch_history.models import HistoryQuery, ProgressUpdate, Status
from watch_history.settings import Settings
from watch_history.store import HistoryStore

ROOT: Final = Path(__file__).resolve().parent.parent
FLOOR_SCRIPT: Final = Path(__file__).with_name("lua") / "engine_floor.lua"
WARM_UP: Final = 3  # profiles each operation runs on first, uncounted
PREFIX: Final = "ebench:"
BEGIN: Final = "<!-- bench-engine: begin (make bench-engine writes this table) -->"
END: Final = "<!-- bench-engine: end -->"

UNIT: Final = "bare JSON.ARRAPPEND, pipelined"
ROWS: Final = (
    UNIT,
    "EVALSHA of `return 1`",
    "no-logic floor: EVALSHA, one JSON read, one JSON.SET",
    "heartbeat on the front item",
    "older item moved to the front",
    "new asset at the cap (insert + eviction)",
    "remove one asset",
    "clear",
    "page read: first page by recency",
    "page read: continue watching",
    "filtered read: by sport (or show)",
)


@dataclass(frozen=True, slots=True)
class EngineResult:
    """One engine's counts: instructions per call by row, and the layout measured."""

    engine: str
    layout: Any  # the documents' "v" as the store wrote them
    per_call: dict[str, float]
    floor_item_chars: float  # mean length of the bare append's item

    def ratio(self, row: str) -> float:
        return self.per_call[row] / self.per_call[UNIT]


def measure(
    json_module: str | None,
    profiles: int,
    items: int,
    seed: int = 11,
    dumps: Path | None = None,
) -> EngineResult:
    """Every row of ``ROWS`` on a fresh counting server with ``json_module``; each row's
    callgrind dump kept in ``dumps`` when given."""
    with counting_server(json_module) as server:
        return _measure(server, profiles, items, seed, dumps)


def _measure(
    server: CountingServer, profiles: int, items: int, seed: int, dumps: Path | None
) -> EngineResult:
    client = server.client
    engine = engine_info(client)["json"]
    settings = Settings(redis_url=server.url, key_prefix=PREFIX, max_items=items)
    store = HistoryStore(client, settings)
    work = build(WorkloadSpec(seed=seed, profiles=profiles + WARM_UP, items=items), prefix="e")
    texts: dict[str, list[str]] = {}
    for chunk in work.history():
        result = store.record_batch(chunk)
        if result.failures:
            raise RuntimeError(f"seeding failed: {next(iter(result.failures.values()))}")
        for update in chunk:
            texts.setdefault(update.profile_id, []).append(_floor_item(update))
    for profile_id, items_text in texts.items():
        floor_doc = orjson.dumps({"h": items_text})
        client.execute_command("JSON.SET", _floor_key(profile_id), "$", floor_doc)
    warm = work.profiles[:WARM_UP]
    counted = work.profiles[WARM_UP:]
    rng = random.Random(seed)
    clock = [work.clock_ms]  # every write is newer than the last: rule 2 applies it

    def tick() -> int:
        clock[0] += 1_000
        return clock[0]

    per_call: dict[str, float] = {}

    def row(name: str, run: Callable[[Sequence[Any]], object]) -> None:
        run(warm)
        keep = dumps / f"{_slug(engine)}-{_slug(name)}.out" if dumps else None
        per_call[name] = server.count(lambda: run(counted), keep) / len(counted)

    floor_sha = client.script_load(FLOOR_SCRIPT.read_text())
    one_sha = client.script_load("return 1")

    def pipelined(command: Callable[[Any, str], object]) -> Callable[[Sequence[Any]], object]:
        def run(group: Sequence[Any]) -> None:
            pipe = client.pipeline(transaction=False)
            for profile in group:
                command(pipe, profile.profile_id)
            pipe.execute()

        return run

    def append(pipe: Any, profile_id: str) -> None:
        item = orjson.dumps(texts[profile_id][-1])
        pipe.execute_command("JSON.ARRAPPEND", _floor_key(profile_id), "$.h", item)

    row(UNIT, pipelined(append))
    row(ROWS[1], pipelined(lambda pipe, p: pipe.evalsha(one_sha, 1, _floor_key(p))))
    row(ROWS[2], pipelined(lambda pipe, p: pipe.evalsha(floor_sha, 1, _floor_key(p))))

    def batch(pick: Callable[[Any], Any]) -> Callable[[Sequence[Any]], object]:
        def run(group: Sequence[Any]) -> None:
            at = tick()
            updates = []
            for profile in group:
                asset = pick(profile)
                updates.append(_update(work, profile, asset, at))
                work._watch(profile, asset)  # the workload's view of the history follows
            result = store.record_batch(updates)
            if result.failures:
                failure = next(iter(result.failures.values()))
                raise RuntimeError(f"a counted write failed: {failure}")

        return run

    row(ROWS[3], batch(lambda p: p.history[0]))
    row(ROWS[4], batch(lambda p: p.history[rng.randrange(1, len(p.history))]))
    row(ROWS[5], batch(work._new_title))

    def each(call: Callable[[Any], object]) -> Callable[[Sequence[Any]], object]:
        def run(group: Sequence[Any]) -> None:
            for profile in group:
                call(profile)

        return run

    def read(name: str) -> Callable[[Any], object]:
        return lambda p: store.select_page(p.profile_id, _query(work, p.profile_id, name))

    row(ROWS[8], each(read("recency")))
    row(ROWS[9], each(read("continue watching")))
    row(ROWS[10], each(read("sport")))

    def remove(profile: Any) -> None:
        asset = profile.history.pop(rng.randrange(1, len(profile.history)))
        store.remove(profile.profile_id, [asset.asset_id])

    raw = client.execute_command("JSON.GET", store.key(counted[0].profile_id), "$.v")
    layout = (orjson.loads(raw) or [None])[0] if raw else None
    row(ROWS[6], each(remove))
    row(ROWS[7], each(lambda p: store.clear(p.profile_id)))
    # the layout measured: what the store's documents say they are (read before the clear)
    chars = sum(len(t) for ts in texts.values() for t in ts) / sum(len(ts) for ts in texts.values())
    return EngineResult(engine, layout, per_call, chars)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _floor_key(profile_id: str) -> str:
    return f"floor:{{{profile_id}}}"


def _floor_item(update: ProgressUpdate) -> str:
    """An item-sized string that no layout decides: the update's values (the asset's
    too) as a compact JSON array, times in epoch ms (~200 characters)."""
    values = update.model_dump(mode="json", exclude_none=True, exclude={"profile_id"})
    values["event_time"] = update.event_ms
    asset = values.pop("asset", None) or {}
    return orjson.dumps([*values.values(), *asset.values()]).decode()


def _update(work: Workload, profile: Any, asset: Any, at_ms: int) -> ProgressUpdate:
    """A heartbeat as the workload's batches carry them (its own builder)."""
    return work._update(profile, asset, at_ms, work._rng, history=False)


def _query(work: Workload, profile_id: str, route: str) -> HistoryQuery:
    queries = work.queries(profile_id)
    if route == "sport":
        return queries.get("sport") or queries.get("show") or HistoryQuery()
    if route == "continue watching":
        return HistoryQuery(status=Status.IN_PROGRESS)
    return queries[route]


# --- report -----------------------------------------------------------------------------


def table(results: Sequence[EngineResult], profiles: int, items: int) -> str:
    """The results as a markdown table: kIr per call and the ratio to the bare append."""
    head = " | ".join(f"{r.engine}: kIr | x" for r in results)
    lines = [
        f"Instructions per call (kIr), {profiles} profiles at {items} items, layout "
        f"{', '.join(sorted({str(r.layout) for r in results}))}; x is the ratio to the "
        "bare append.",
        "",
        f"| call | {head} |",
        "|---|" + "---:|---:|" * len(results),
    ]
    for name in ROWS:
        cells = " | ".join(f"{r.per_call[name] / 1000:.1f} | {r.ratio(name):.2f}" for r in results)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def write_json(path: Path, results: Sequence[EngineResult], profiles: int, items: int) -> None:
    data = {
        "what": "instructions (Ir) per call in valkey-server, callgrind (loadtest/callgrind.py)",
        "profiles": profiles,
        "items": items,
        "unit": UNIT,
        "engines": {
            r.engine: {
                "layout": r.layout,
                "bare_append_item_chars": round(r.floor_item_chars),
                "per_call": {k: round(v) for k, v in r.per_call.items()},
                "ratio": {k: round(r.ratio(k), 2) for k in r.per_call},
            }
            for r in results
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_markdown(path: Path, text: str) -> bool:
    """Put ``text`` between the bench-engine markers of ``path``; False if it has none."""
    doc = path.read_text()
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        return False
    path.write_text(doc[: start + len(BEGIN)] + "\n\n" + text + "\n\n" + doc[end:])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_engine",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--valkey-json", type=Path, help="valkey-json module (skipped if absent)")
    parser.add_argument("--profiles", type=int, default=100, help="profiles counted per row")
    parser.add_argument("--items", type=int, default=Settings().max_items, help="items (the cap)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "engine.json")
    parser.add_argument("--speed-md", type=Path, default=ROOT / "docs" / "speed.md")
    parser.add_argument("--dumps", type=Path, help="keep each row's callgrind dump here")
    args = parser.parse_args(argv)
    modules: list[str | None] = [None]
    if args.valkey_json is not None and args.valkey_json.is_file():
        modules.append(str(args.valkey_json))
    else:
        print(f"(valkey-json not at {args.valkey_json}: RedisJSON only)", file=sys.stderr)
    results = []
    for module in modules:
        results.append(measure(module, args.profiles, args.items, dumps=args.dumps))
        print(f"counted on {results[-1].engine}", file=sys.stderr)
    text = table(results, args.profiles, args.items)
    print(text)
    write_json(args.out, results, args.profiles, args.items)
    if not write_markdown(args.speed_md, text):
        print(f"({args.speed_md} has no bench-engine markers: table not written there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
