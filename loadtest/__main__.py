"""The load test: three data models, measured side by side, and what they cost.

    python -m loadtest [--quick] [--out DIR] [--report FILE]     # own engines
    python -m loadtest --redis-url rediss://HOST:6379 --cluster  # any endpoint
    python -m loadtest capacity --profiles 10e6 --items 200 --peak 833333
    python -m loadtest report [--results FILE]                   # re-render

Without ``--redis-url`` it starts its own engines (devtools/engine.py, Valkey with the
search module) for each JSON engine it finds, RedisJSON and valkey-json
(``../shared/engines/valkey-json/libjson.so``, or ``--valkey-json PATH``), each as a
standalone server and as a 3-primary cluster, and flushes them between models
(FLUSHALL SYNC). Against an endpoint it deletes only its own keys (``lt:*``,
``floor:*``) unless ``--flush`` says it may empty the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools.engine import Engine, start_cluster, start_standalone
from loadtest import capacity, report
from loadtest.models import MODELS
from loadtest.run import Plan, TargetResult, full_plan, machine, pinned, quick_plan, run_target

ROOT = Path(__file__).resolve().parent.parent
VALKEY_JSON = ROOT.parent / "shared" / "engines" / "valkey-json" / "libjson.so"
DOCS = ROOT / "docs"


def _engines(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(label, JSON module path or None for the launcher's default, RedisJSON)."""
    engines: list[tuple[str, str | None]] = [("RedisJSON", None)]
    path = Path(args.valkey_json) if args.valkey_json else VALKEY_JSON
    if path.is_file():
        engines.append(("valkey-json", str(path)))
    return [e for e in engines if e[0] in args.engines.split(",")]


@contextlib.contextmanager
def _launched(module: str | None, cluster: bool) -> Iterator[Engine]:
    """An engine of the launcher's with the search module and this JSON module (None:
    the launcher's default, RedisJSON)."""
    if cluster:
        engine = start_cluster(3, search=True, json_module=module)
    else:
        engine = start_standalone(search=True, json_module=module)
    with engine:
        yield engine


def _run(args: argparse.Namespace) -> int:
    plan: Plan = quick_plan() if args.quick else full_plan()
    overrides: dict[str, Any] = {"seed": args.seed, "models": tuple(args.models.split(","))}
    if args.spike is not None:
        overrides["spike"] = args.spike
    plan = replace(plan, **overrides)
    if args.profiles or args.items:
        main = plan.scenarios[0]
        main = replace(
            main, profiles=args.profiles or main.profiles, items=args.items or main.items
        )
        plan = replace(plan, scenarios=(main, *plan.scenarios[1:]))
    started = time.time()
    targets: list[TargetResult] = []
    skipped: list[str] = []
    topologies = args.topologies.split(",")
    if args.redis_url:
        label = "cluster" if args.cluster else "standalone"
        targets.append(
            run_target(args.redis_url, args.cluster, plan, own_server=args.flush, label=label)
        )
    else:
        for name, module in _engines(args):
            for topology in topologies:
                with _launched(module, topology == "cluster") as engine, pinned(engine.pids):
                    label = f"{name} {topology}"
                    result = run_target(
                        engine.url, engine.cluster, plan, own_server=True, label=label
                    )
                targets.append(result)
        if not (ROOT.parent / "shared" / "engines" / "valkey-json" / "libjson.so").is_file():
            skipped.append(f"valkey-json: {VALKEY_JSON} is not on this machine")
    results = {
        "meta": {
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "command": "python -m loadtest " + shlex.join(sys.argv[1:]),
            "machine": machine(),
            "plan": asdict(plan),
            "skipped": skipped,
            "quick": args.quick,
        },
        "targets": [asdict(t) for t in targets],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    target = Path(args.report) if args.report else _default_report(out)
    report.write(results, out, target)
    print(f"results: {out / 'results.json'}; report: {target}")
    return 0


def _default_report(out: Path) -> Path:
    """docs/benchmarks.md for the default output directory, else OUT/benchmarks.md."""
    if out.resolve() == (DOCS / "benchmarks").resolve():
        return DOCS / "benchmarks.md"
    return out / "benchmarks.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure (the default command)")
    run.add_argument("--quick", action="store_true", help="small workload: the CI smoke run")
    run.add_argument("--redis-url", help="an endpoint to measure instead of own engines")
    run.add_argument("--cluster", action="store_true", help="the endpoint is a cluster")
    run.add_argument(
        "--flush", action="store_true", help="the endpoint may be emptied (FLUSHALL SYNC)"
    )
    run.add_argument("--engines", default="RedisJSON,valkey-json")
    run.add_argument("--topologies", default="standalone,cluster")
    run.add_argument("--valkey-json", help=f"valkey-json module (default {VALKEY_JSON})")
    run.add_argument("--models", default=",".join(MODELS))
    run.add_argument("--seed", type=int, default=7)
    run.add_argument("--profiles", type=int, help="profiles of the main scenario")
    run.add_argument("--items", type=int, help="items per profile of the main scenario")
    run.add_argument("--spike", type=float, help="share of profiles on the one live match")
    run.add_argument("--out", default=str(DOCS / "benchmarks"), help="results.json and charts")
    run.add_argument(
        "--report", help="the report (default: docs/benchmarks.md, or OUT/benchmarks.md)"
    )
    run.set_defaults(handler=_run)
    cap = sub.add_parser("capacity", help="MemoryDB nodes, shards and cost for a scale")
    capacity.add_arguments(cap)
    cap.set_defaults(handler=capacity.main)
    rep = sub.add_parser("report", help="write the report again from results.json")
    rep.add_argument("--results", default=str(DOCS / "benchmarks" / "results.json"))
    rep.add_argument("--report", default=str(DOCS / "benchmarks.md"))
    rep.set_defaults(handler=lambda a: report.main(Path(a.results), Path(a.report)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args = ["run", *args]
    parsed = _parser().parse_args(args)
    return int(parsed.handler(parsed))


if __name__ == "__main__":
    sys.exit(main())
