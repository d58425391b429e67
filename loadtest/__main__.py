"""The load test: four data models, measured side by side, and what they cost.

    python -m loadtest [--quick] [--out DIR] [--report FILE]     # own engines
    python -m loadtest --redis-url rediss://HOST:6379 --cluster  # any endpoint
    python -m loadtest capacity --profiles 10e6 --items 200 --peak 833333
    python -m loadtest report [--results FILE]                   # re-render

Without ``--redis-url`` it starts its own engines (devtools/engine.py, Valkey with the
search module) for each JSON engine: RedisJSON, and valkey-json from ``--valkey-json
PATH`` (refused if PATH is not a file) or, without it, from
``../shared/engines/valkey-json/libjson.so`` when that exists; each as a standalone
server and as a 3-primary cluster, flushed between models (FLUSHALL SYNC). Then it
counts every model's engine instructions per heartbeat under callgrind
(loadtest/instructions.py). Against an endpoint it deletes only its own keys (``lt:*``,
``floor:*``) unless ``--flush`` says it may empty the server, and counts no
instructions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools.engine import Engine, start_cluster, start_standalone
from loadtest import capacity, report
from loadtest.instructions import count_all
from loadtest.models import MODELS
from loadtest.run import Plan, TargetResult, full_plan, machine, pinned, quick_plan, run_target

ROOT = Path(__file__).resolve().parent.parent
VALKEY_JSON = ROOT.parent / "shared" / "engines" / "valkey-json" / "libjson.so"
DOCS = ROOT / "docs"


def _engines(args: argparse.Namespace, skipped: list[str]) -> list[tuple[str, str | None]]:
    """(label, JSON module path or None for the launcher's default, RedisJSON) of the
    engines asked for; a valkey-json that was not given and is not at the default path
    goes to ``skipped`` (a given path that is not a file was refused by the parser)."""
    wanted = args.engines.split(",")
    engines: list[tuple[str, str | None]] = [("RedisJSON", None)]
    path = Path(args.valkey_json) if args.valkey_json else VALKEY_JSON
    if path.is_file():
        engines.append(("valkey-json", str(path.resolve())))
    elif "valkey-json" in wanted:
        skipped.append(
            "valkey-json: no module given (--valkey-json PATH) and none at the default place"
        )
    return [e for e in engines if e[0] in wanted]


def _command(argv: Sequence[str]) -> str:
    """The command as run, without this machine's paths: a path inside the repository
    relative to it, any other one by its role."""
    out = []
    for arg in argv:
        path = Path(arg).resolve()
        if not arg.startswith("/"):
            out.append(arg)
        elif path.name == "libjson.so":
            out.append("VALKEY_JSON")
        else:
            out.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "PATH")
    return "python -m loadtest " + shlex.join(out)


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


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    plan: Plan = quick_plan() if args.quick else full_plan()
    overrides: dict[str, Any] = {"seed": args.seed, "models": tuple(args.models.split(","))}
    if args.spike is not None:
        overrides["spike"] = args.spike
    if args.passes is not None:
        overrides["passes"] = args.passes
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
    instructions: dict[str, Any] | None = None
    if args.redis_url:
        label = "cluster" if args.cluster else "standalone"
        targets.append(
            run_target(args.redis_url, args.cluster, plan, own_server=args.flush, label=label)
        )
    else:
        engines = _engines(args, skipped)
        for name, module in engines:
            for topology in topologies:
                with _launched(module, topology == "cluster") as engine, pinned(engine.pids):
                    label = f"{name} {topology}"
                    result = run_target(
                        engine.url, engine.cluster, plan, own_server=True, label=label
                    )
                targets.append(result)
        if args.instructions:
            print("counting instructions under callgrind ...", file=sys.stderr)
            instructions = count_all(
                engines,
                plan.models,
                profiles=4 if args.quick else 20,
                items=30 if args.quick else 200,
                seed=plan.seed,
            )
    results = {
        "meta": {
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "command": _command(argv),
            "machine": machine(),
            "plan": asdict(plan),
            "skipped": skipped,
            "quick": args.quick,
        },
        "targets": [asdict(t) for t in targets],
        "instructions": instructions,
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


def _names(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        unknown = [v for v in value.split(",") if v not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)} (choose from {', '.join(allowed)})"
            )
        return value

    return check


def _at_least(low: int) -> Callable[[str], int]:
    def check(value: str) -> int:
        n = int(value)
        if n < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return n

    return check


def _fraction(value: str) -> float:
    x = float(value)
    if not 0 <= x <= 1:
        raise argparse.ArgumentTypeError("a fraction from 0 to 1 (0.3 for 30%)")
    return x


def _module_file(value: str) -> str:
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a file")
    return value


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure (the default command)")
    run.add_argument("--quick", action="store_true", help="small workload: the CI smoke run")
    run.add_argument("--redis-url", help="an endpoint to measure instead of own engines")
    run.add_argument("--cluster", action="store_true", help="the endpoint is a cluster")
    run.add_argument(
        "--flush", action="store_true", help="the endpoint may be emptied (FLUSHALL SYNC)"
    )
    run.add_argument(
        "--engines",
        type=_names("RedisJSON", "valkey-json"),
        default="RedisJSON,valkey-json",
        help="JSON engines to start, comma-separated (default: %(default)s)",
    )
    run.add_argument(
        "--topologies",
        type=_names("standalone", "cluster"),
        default="standalone,cluster",
        help="comma-separated (default: %(default)s)",
    )
    run.add_argument(
        "--valkey-json",
        type=_module_file,
        help="the valkey-json module (libjson.so); refused if not a file (default: "
        "../shared/engines/valkey-json/libjson.so next to the repository, when it exists)",
    )
    run.add_argument(
        "--models",
        type=_names(*MODELS),
        default=",".join(MODELS),
        help="comma-separated (default: %(default)s)",
    )
    run.add_argument("--seed", type=int, default=7, help="workload seed (default: %(default)s)")
    run.add_argument(
        "--passes",
        type=_at_least(1),
        help="passes over every scenario (default: 3; 2 with --quick); a report wants 3 or more",
    )
    run.add_argument(
        "--profiles", type=_at_least(1), help="profiles of the main scenario (default: 300)"
    )
    run.add_argument(
        "--items", type=_at_least(1), help="items per profile of the main scenario (default: 200)"
    )
    run.add_argument(
        "--spike",
        type=_fraction,
        help="share of profiles on the one live match, a fraction 0-1 (default: 0.3)",
    )
    run.add_argument(
        "--no-instructions",
        dest="instructions",
        action="store_false",
        help="skip the callgrind instruction counts (own engines only; default: counted)",
    )
    run.add_argument(
        "--out",
        default=str(DOCS / "benchmarks"),
        help="results.json and charts (default: docs/benchmarks)",
    )
    run.add_argument(
        "--report", help="the report (default: docs/benchmarks.md, or OUT/benchmarks.md)"
    )
    run.set_defaults(handler=lambda a: _run(a, argv))
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
    parsed = _parser(args[1:] if args[0] == "run" else args).parse_args(args)
    return int(parsed.handler(parsed))


if __name__ == "__main__":
    sys.exit(main())
