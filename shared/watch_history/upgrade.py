"""Upgrade every history document of a cluster to the current layout (codec.LAYOUT).

    python -m watch_history.upgrade [--dry-run] [--rate KEYS_PER_SECOND] [--state PATH]
                                    [--count SCAN_COUNT]

The operator's command: it connects as the Lambdas do (``Settings`` from the
environment: REDIS_URL and REDIS_CLUSTER locally, the MemoryDB settings in AWS), and
it lives in the layer so that a function inside the VPC can run it (``main(argv)``).

- It SCANs every primary (a cluster: each primary node; standalone: the one server)
  for keys that MATCH a profile's key (the prefix, then "{": not the asset records)
  and upgrades each page of keys in one pipelined round trip, one script call per key
  (``HistoryStore.upgrade_layouts``). A key that
  is not a history document of this store (another type, another key shape) is left
  alone and counted as skipped, as is a document of a newer layout.
- Resumable: with ``--state PATH`` the per-node SCAN cursors, the counts so far and
  the keys that failed are saved there after each page; a rerun with the same file
  goes on where it stopped (finished nodes are not scanned again) and retries the
  failed keys first. The state records the target, the key prefix and whether it is a
  dry run, and a rerun that differs in any of them is refused.
- ``--rate``: at most that many keys per second on average (0: no limit).
- ``--dry-run``: counts what would be upgraded; writes nothing to the server.
- A progress bar (tqdm) when tqdm is installed (the developer's .venv); the Lambda
  layer does not carry tqdm, and a run there prints the counts only.
- At the end: the counts as one JSON line, then one line for people. SCAN can return
  a key twice (when the server resizes its table during the scan, or a failover made
  another node the primary of a slot range between runs): such a key is counted twice,
  the second time as already current.

Exit status: 0 done; 1 done, but some keys failed (listed in the state file, retried
by the next run); 2 the server unreachable or the settings wrong (one line, no
traceback; the state keeps every page done); 130 interrupted (likewise).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Self
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from watch_history.connection import ClientType
from watch_history.errors import HistoryError
from watch_history.runtime import get_store
from watch_history.settings import Settings, get_settings
from watch_history.store import HistoryStore, UpgradeOutcome

__all__ = ["Counts", "RateLimiter", "UpgradeRun", "UpgradeState", "main"]

STATE_VERSION: Final = 1
FAILED_KEPT: Final = 10_000
"""Failed keys remembered in the state for the next run to retry. Past it they are only
counted (the run never says complete): once the cause is fixed, run with a new state."""

_GLOB_SPECIAL: Final = "\\*?[]"


@dataclass(slots=True)
class Counts:
    """What a run did, summed over its resumed parts. ``scanned`` is the sum of the
    others: every key SCAN returned ends in exactly one of them."""

    scanned: int = 0
    upgraded: int = 0
    current: int = 0
    skipped: int = 0
    failed: int = 0

    def add(self, outcome: UpgradeOutcome) -> None:
        if outcome is UpgradeOutcome.UPGRADED:
            self.upgraded += 1
        elif outcome is UpgradeOutcome.CURRENT:
            self.current += 1
        else:
            self.skipped += 1

    def human(self, *, dry_run: bool, complete: bool) -> str:
        verb = "would upgrade" if dry_run else "upgraded"
        line = (
            f"{self.scanned} keys scanned: {verb} {self.upgraded}, {self.current} already "
            f"current, {self.skipped} skipped (not a history document of this prefix, or a "
            f"newer layout), {self.failed} failed"
        )
        if dry_run:
            line += " (dry run: nothing was written)"
        if not complete:
            line += "; not finished: run again with the same --state to go on"
        return line


@dataclass(slots=True)
class UpgradeState:
    """Where a run is: per primary (``host:port``) its SCAN cursor and whether it is done,
    the counts, and the keys that failed. Saved to ``path`` (when given) after each page."""

    target: str
    key_prefix: str
    dry_run: bool
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    failed_keys: list[str] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def load_or_new(cls, path: Path | None, target: str, key_prefix: str, dry_run: bool) -> Self:
        """The state saved at ``path``, or a fresh one (no path, or no file yet).
        StateError when the file is unreadable or belongs to another run."""
        if path is None or not path.exists():
            return cls(target, key_prefix, dry_run, path=path)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
            state = cls(
                str(data["target"]),
                str(data["key_prefix"]),
                bool(data["dry_run"]),
                {str(k): dict(v) for k, v in data["nodes"].items()},
                Counts(**data["counts"]),
                [str(k) for k in data["failed_keys"]],
                path,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{path}: not a state file of this command ({exc})") from exc
        wanted = {"target": target, "key_prefix": key_prefix, "dry_run": dry_run}
        for name, value in wanted.items():
            if getattr(state, name) != value:
                raise StateError(
                    f"{path} is the state of a run with {name}={getattr(state, name)!r}, "
                    f"not {value!r}: use another --state file"
                )
        return state

    def save(self) -> None:
        """Write the state atomically (a new file renamed over the old one)."""
        if self.path is None:
            return
        data = {
            "version": STATE_VERSION,
            "target": self.target,
            "key_prefix": self.key_prefix,
            "dry_run": self.dry_run,
            "nodes": self.nodes,
            "counts": asdict(self.counts),
            "failed_keys": self.failed_keys,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.path)

    def complete(self, node_names: Sequence[str]) -> bool:
        """Every node scanned to its end, and no key failing."""
        return all(self.nodes.get(n, {}).get("done") for n in node_names) and not (
            self.failed_keys or self.counts.failed
        )


class StateError(HistoryError):
    """The --state file cannot be used for this run."""


class RateLimiter:
    """At most ``rate`` keys per second on average: each batch of keys waits until the
    keys before it have had their time. ``clock`` and ``sleep`` are injectable (tests).

    Hand-written: the pacing is five lines, and a rate-limiting library would be a new
    dependency of the Lambda layer for them.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def acquire(self, keys: int) -> None:
        """Wait (if needed) until ``keys`` more keys may go."""
        if self.rate <= 0 or keys <= 0:
            return
        now = self._clock()
        start = now if self._next is None else max(self._next, now)
        self._next = start + keys / self.rate
        if start > now:
            self._sleep(start - now)


def primaries(client: ClientType) -> list[tuple[str, redis.Redis]]:
    """(``host:port``, a plain client) of every primary (the server itself standalone)."""
    if isinstance(client, RedisCluster):
        return [(n.name, client.get_redis_connection(n)) for n in client.get_primaries()]
    kwargs = client.connection_pool.connection_kwargs
    return [(f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}", client)]


class UpgradeRun:
    """One run of the command over ``store``'s server, from ``state``."""

    def __init__(
        self,
        store: HistoryStore,
        state: UpgradeState,
        *,
        scan_count: int = 500,
        limiter: RateLimiter | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.scan_count = scan_count
        self.limiter = limiter or RateLimiter(0)
        self.progress = progress or (lambda _keys: None)
        self.node_names: list[str] = []

    def run(self) -> Counts:
        """Retry the failed keys, then scan every primary that is not done yet. Raises
        what the server raises (RedisError, StoreUnavailableError) when it cannot be
        reached; the state has every page done until then."""
        nodes = primaries(self.store.client)
        self.node_names = [name for name, _ in nodes]
        self._retry_failed()
        for name, node in nodes:
            self._scan(name, node)
        return self.state.counts

    def _retry_failed(self) -> None:
        keys, self.state.failed_keys = self.state.failed_keys, []
        self.state.counts.failed -= len(keys)
        self.state.counts.scanned -= len(keys)  # counted again below
        self._upgrade(keys)
        self.state.save()

    def _scan(self, name: str, node: redis.Redis) -> None:
        entry = self.state.nodes.setdefault(name, {"cursor": 0, "done": False})
        # Profiles' keys only (codec.py: "<prefix>{<profileId>}"): the asset records
        # share the prefix, and there may be as many of them as of profiles.
        pattern = _glob_escape(self.store.settings.key_prefix + "{") + "*"
        while not entry["done"]:
            cursor, keys = node.execute_command(
                "SCAN", entry["cursor"], "MATCH", pattern, "COUNT", self.scan_count
            )
            self._upgrade([_text(k) for k in keys])
            entry["cursor"] = int(cursor)
            entry["done"] = entry["cursor"] == 0
            self.state.save()
            self.progress(len(keys))

    def _upgrade(self, keys: list[str]) -> None:
        if not keys:
            return
        self.limiter.acquire(len(keys))
        outcomes = self.store.upgrade_layouts(keys, dry_run=self.state.dry_run)
        counts = self.state.counts
        for key, outcome in zip(keys, outcomes, strict=True):
            counts.scanned += 1
            if isinstance(outcome, HistoryError):
                counts.failed += 1
                if len(self.state.failed_keys) < FAILED_KEPT:
                    self.state.failed_keys.append(key)
            else:
                counts.add(outcome)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _text(key: bytes | str) -> str:
    # surrogateescape: a key that is not UTF-8 survives the round trip to the state file
    return key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key


def _target(settings: Settings) -> str:
    """The server the run is for, without credentials (the state file names it)."""
    url = urlsplit(settings.redis_url)
    host = url.hostname or "?"
    return f"{host}:{url.port or 6379}{' (cluster)' if settings.redis_cluster else ''}"


def _progress_bar(dry_run: bool) -> AbstractContextManager[Any]:
    """A tqdm bar where tqdm is installed, else nothing (the Lambda layer has no tqdm)."""
    try:
        from tqdm import tqdm  # noqa: PLC0415 - optional: a dev dependency only
    except ImportError:
        return nullcontext(None)
    bar: AbstractContextManager[Any] = tqdm(
        desc="checked" if dry_run else "upgraded or checked", unit=" keys", file=sys.stderr
    )
    return bar


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m watch_history.upgrade",
        description="Upgrade every history document to the current layout (see the module doc).",
    )
    parser.add_argument("--dry-run", action="store_true", help="count only, write nothing")
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="KEYS_PER_SECOND", help="0: no limit"
    )
    parser.add_argument("--state", type=Path, default=None, help="resumable state file")
    parser.add_argument(
        "--count", type=int, default=500, metavar="SCAN_COUNT", help="SCAN COUNT per page"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command; returns its exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.rate < 0 or args.count < 1:
        _say("--rate must be >= 0 and --count >= 1", error=True)
        return 2
    try:
        store = get_store()  # as the functions make theirs: settings from the environment
        settings = store.settings
        state = UpgradeState.load_or_new(
            args.state, _target(settings), settings.key_prefix, args.dry_run
        )
        for _, node in primaries(store.client):
            node.ping()  # unreachable: say so before a progress bar is drawn
        with _progress_bar(args.dry_run) as bar:
            job = UpgradeRun(
                store,
                state,
                scan_count=args.count,
                limiter=RateLimiter(args.rate),
                progress=bar.update if bar is not None else None,
            )
            counts = job.run()
    except KeyboardInterrupt:
        _say("interrupted; with --state, a rerun goes on from the last page done", error=True)
        return 130
    except StateError as exc:
        _say(str(exc), error=True)
        return 2
    except (HistoryError, RedisError, RedisClusterException, OSError) as exc:
        _say(f"cannot go on with {_target_or_unknown()}: {type(exc).__name__}: {exc}", error=True)
        return 2
    complete = state.complete(job.node_names)
    _say(json.dumps({**asdict(counts), "dry_run": args.dry_run, "complete": complete}))
    _say(counts.human(dry_run=args.dry_run, complete=complete))
    return 0 if counts.failed == 0 else 1


def _say(line: str, *, error: bool = False) -> None:
    """One line to stdout (the counts), or to stderr prefixed with the command's name (an
    error's text on one line: pydantic's and redis-py's messages can span several)."""
    if error:
        sys.stderr.write(f"watch_history.upgrade: {' '.join(line.split())}\n")
    else:
        sys.stdout.write(line + "\n")


def _target_or_unknown() -> str:
    try:
        return _target(get_settings())
    except HistoryError:
        return "the server (settings unreadable)"


if __name__ == "__main__":
    sys.exit(main())
