"""``make soak``: a bounded soak of the recorder and the reader on a loopback engine.

``python -m devtools.soak [--minutes 3] [--profiles 300] [--max-items 50]``: starts its
own standalone engine (devtools/engine.py, 127.0.0.1 only), then loops, for at most
``--minutes`` and ``--rounds``: one Kinesis batch of heartbeats through the real
recorder handler (every round watches new assets, so histories fill up to MAX_ITEMS
and then evict), and a page read per profile through the real reader handler. Every
few rounds it samples the engine's ``used_memory`` and this process's RSS.

Pass (exit 0): every record landed, no read failed, the engine's memory in the last
third of the samples is within ``--tolerance`` (10 %) of the middle third (a plateau once
the histories are full), the sampled histories' own MEMORY USAGE within 2 %, and the
client's RSS grew less than ``--rss-mb`` over the same span. It stops by itself;
nothing stays running.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tqdm import tqdm

from devtools.engine import start_standalone
from devtools.heartbeats import kinesis_event
from devtools.lambda_context import FakeLambdaContext, load_module, local_store, patched_environ
from watch_history import runtime
from watch_history.settings import Settings


@dataclass(frozen=True, slots=True)
class Sample:
    round: int
    seconds: float
    engine_bytes: int
    dataset_bytes: int
    documents_bytes: int  # MEMORY USAGE of the sampled histories
    rss_bytes: int
    items: int


def rss_bytes() -> int:
    """This process's resident set size now (/proc/self/statm; not the peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _batch(rng: random.Random, profiles: Sequence[str], round_no: int, size: int) -> list[Any]:
    now = datetime.now(UTC) - timedelta(seconds=5)
    out = []
    for n in range(size):
        profile = rng.choice(profiles)
        out.append(
            {
                "profileId": profile,
                # 7 new assets a round (ids of one length: memory tracks items, not digits),
                # so histories fill to MAX_ITEMS and evict from then on
                "assetId": f"a{(round_no * 7 + n % 7) % 100_000:05d}",
                "position": float(rng.randrange(0, 5400)),
                "duration": 5400.0,
                "eventTime": (now + timedelta(milliseconds=n)).isoformat(),
                "deviceId": rng.choice(["tv", "phone"]),
                "asset": {"type": "match", "sport": "cricket", "teams": ["csk", "mi"]},
            }
        )
    return out


def soak(args: argparse.Namespace) -> tuple[list[Sample], list[str]]:
    """Run the loop; the samples and the problems found (empty: passed)."""
    rng = random.Random(args.seed)
    problems: list[str] = []
    samples: list[Sample] = []
    profiles = [f"soak-{i}" for i in range(args.profiles)]
    quiet = {  # no X-Ray daemon, errors only
        "POWERTOOLS_METRICS_NAMESPACE": "Soak",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    with start_standalone() as engine, patched_environ(quiet):
        settings = Settings(redis_url=engine.url, max_items=args.max_items)
        store = local_store(settings)
        runtime.set_store(store)
        recorder, reader = load_module("history_recorder"), load_module("history_reader")
        client = store.client
        started = time.monotonic()
        progress = tqdm(range(args.rounds), desc="soak", unit="round", leave=False)
        for round_no in progress:
            if time.monotonic() - started > args.minutes * 60:
                break
            event = kinesis_event(_batch(rng, profiles, round_no, args.batch))
            with contextlib.redirect_stdout(io.StringIO()):  # an EMF line per invocation
                result = recorder.lambda_handler(event, FakeLambdaContext("history-recorder"))
            if result["batchItemFailures"]:
                problems.append(f"round {round_no}: {len(result['batchItemFailures'])} failed")
            for profile in rng.sample(profiles, min(50, len(profiles))):
                with contextlib.redirect_stdout(io.StringIO()):
                    response = reader.lambda_handler(_get(profile), FakeLambdaContext("reader"))
                if response["statusCode"] != 200:
                    problems.append(f"round {round_no}: read {response['statusCode']}")
            if round_no % args.sample_every == 0:
                memory = client.info("memory")
                sampled = profiles[:20]
                count = sum(len(store.stored_items(p)) for p in sampled)
                documents = sum(store.memory_usage(p) for p in sampled)
                samples.append(
                    Sample(
                        round_no,
                        round(time.monotonic() - started, 1),
                        int(memory["used_memory"]),
                        int(memory["used_memory_dataset"]),
                        documents,
                        rss_bytes(),
                        count,
                    )
                )
        progress.close()
        runtime.set_store(None)
        store.client.close()
    problems.extend(_plateau(samples, args))
    return samples, problems


def _get(profile: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "GET /profiles/{profileId}/history",
        "rawPath": f"/profiles/{profile}/history",
        "rawQueryString": "limit=20",
        "queryStringParameters": {"limit": "20"},
        "headers": {},
        "pathParameters": {"profileId": profile},
        "requestContext": {
            "http": {"method": "GET", "path": f"/profiles/{profile}/history"},
            "authorizer": {"jwt": {"claims": {"profile_id": profile}, "scopes": None}},
            "requestId": "soak",
            "routeKey": "GET /profiles/{profileId}/history",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }


def _plateau(samples: list[Sample], args: argparse.Namespace) -> list[str]:
    """Problems with the memory curves: the engine's must flatten, the client's stay flat."""
    if len(samples) < 6:
        return [f"only {len(samples)} samples: run longer for a verdict"]
    third = len(samples) // 3
    middle, last = samples[third : 2 * third], samples[2 * third :]
    problems = []
    mid_engine = sum(s.engine_bytes for s in middle) / len(middle)
    last_engine = sum(s.engine_bytes for s in last) / len(last)
    if last_engine > mid_engine * (1 + args.tolerance):
        problems.append(
            f"engine memory still growing: {mid_engine / 1e6:.1f} MB -> {last_engine / 1e6:.1f} MB"
        )
    mid_docs = sum(s.documents_bytes for s in middle) / len(middle)
    last_docs = sum(s.documents_bytes for s in last) / len(last)
    if last_docs > mid_docs * 1.02:  # full histories: the same size whatever they hold
        problems.append(f"histories still growing: {mid_docs:.0f} B -> {last_docs:.0f} B")
    rss_growth = (last[-1].rss_bytes - middle[0].rss_bytes) / 1e6
    if rss_growth > args.rss_mb:
        problems.append(f"client RSS grew {rss_growth:.1f} MB over the last two thirds")
    full = 20 * args.max_items
    if last[-1].items != full:
        problems.append(f"sampled histories hold {last[-1].items} items, expected {full}")
    return problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0, help="stop after (default 3)")
    parser.add_argument("--rounds", type=int, default=1200, help="stop after (default 1200)")
    parser.add_argument("--profiles", type=int, default=300)
    parser.add_argument("--max-items", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1000, help="records per batch")
    parser.add_argument("--sample-every", type=int, default=10, help="rounds between samples")
    parser.add_argument("--tolerance", type=float, default=0.1, help="engine plateau slack")
    parser.add_argument("--rss-mb", type=float, default=20.0, help="client RSS growth allowed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the samples as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    samples, problems = soak(args)
    if args.json:
        print(json.dumps([_row(s) for s in samples]))
    else:
        print(
            f"{'round':>6} {'s':>7} {'engine MB':>10} {'dataset MB':>11} "
            f"{'20 docs KB':>11} {'client RSS MB':>14} {'items/20':>9}"
        )
        for s in samples:
            print(
                f"{s.round:>6} {s.seconds:>7} {s.engine_bytes / 1e6:>10.2f} "
                f"{s.dataset_bytes / 1e6:>11.2f} {s.documents_bytes / 1e3:>11.1f} "
                f"{s.rss_bytes / 1e6:>14.1f} {s.items:>9}"
            )
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print("PASS: engine memory plateaued, client RSS flat, every record landed")
    return 1 if problems else 0


def _row(sample: Sample) -> dict[str, Any]:
    return {name: getattr(sample, name) for name in Sample.__slots__}


if __name__ == "__main__":
    raise SystemExit(main())
