"""Engine instructions per heartbeat of every model, counted by callgrind.

Wall-clock engine CPU on a shared machine moves between passes; the instructions the
server runs for the same calls on the same data do not (loadtest/callgrind.py: they
repeat to ~0.1%). For every JSON engine and every model: a standalone server under
callgrind, ``profiles`` profiles seeded to ``items`` items each (the load test's
workload, uncounted), one uncounted round of heartbeats (scripts compiled, caches
warm), then, counted, one round of each kind of heartbeat (loadtest/workload.py
``one_each``), one record per profile sent as the recorder sends them (one script call
per profile, pipelined):

- ``front``: a heartbeat on the profile's newest item (the steady state's write);
- ``moved``: on an older item, which moves to the front (a session start);
- ``new``: on a title the profile never watched, at MAX_ITEMS (the oldest is evicted);

beside the engine's floor, a bare pipelined ``JSON.ARRAPPEND`` per record. Per record:
the count divided by the profiles. The search model runs on a server with the search
module loaded (on RedisJSON only); the others on one without it, as MemoryDB would run
them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final

import redis

from devtools.engine import find_module, start_standalone
from loadtest.callgrind import CallgrindError, CountingServer, counting_server, valgrind_command
from loadtest.models import MODELS, Unsupported
from loadtest.run import LISTPACK, settings_for
from loadtest.workload import WorkloadSpec, build
from watch_history.connection import ClientType, create_client

KINDS: Final = ("front", "moved", "new")


@contextmanager
def _searching_server(json_module: str | None) -> Iterator[CountingServer]:
    """counting_server's server with the search module loaded too (for the search model)."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out = Path(tmp)
        module = json_module if json_module is not None else str(find_module("rejson.so"))
        with start_standalone(
            search=True, json_module=module, command_prefix=valgrind_command(out)
        ) as engine:
            client = redis.Redis.from_url(engine.url)
            try:
                yield CountingServer(client, engine.url, engine.pids[0], out)
            finally:
                client.close()


def _per_record(server: CountingServer, fn: Callable[[], object], records: int) -> float:
    return server.count(fn) / records


def count_model(
    server: CountingServer, name: str, *, profiles: int, items: int, seed: int
) -> dict[str, float]:
    """Instructions per record of each kind of heartbeat for one model (see above)."""
    server.client.flushall()
    for option, value in LISTPACK.items():
        server.client.config_set(option, value)
    settings = settings_for(server.url, False, items, f"ic:{name}:")
    model = MODELS[name](_client(server), settings)
    model.setup()
    workload = build(WorkloadSpec(seed=seed, profiles=profiles, items=items))
    for chunk in workload.history():
        model.record_batch(chunk)
    model.record_batch(workload.one_each("front"))  # warm: scripts compiled, caches filled
    out: dict[str, float] = {}
    for kind in KINDS:
        batch = workload.one_each(kind)
        out[kind] = _per_record(server, partial(model.record_batch, batch), len(batch))
    model.teardown()
    return out


def _client(server: CountingServer) -> ClientType:
    return create_client(settings_for(server.url, False, 200, "ic:"))


def count_floor(server: CountingServer, profiles: int) -> float:
    """A bare pipelined JSON.ARRAPPEND per record, one small array per profile."""
    keys = [f"floor:{{p{n}}}" for n in range(profiles)]
    item = json.dumps('["a-1",1764720000000,120.5,600]')
    for key in keys:
        server.client.execute_command("JSON.SET", key, "$", '{"h":[]}')

    def append() -> None:
        pipe = server.client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("JSON.ARRAPPEND", key, "$.h", item)
        pipe.execute()

    append()  # warm
    return _per_record(server, append, len(keys))


def count_engine(
    json_module: str | None, models: tuple[str, ...], *, profiles: int, items: int, seed: int
) -> dict[str, Any]:
    """Every model's counts (and the floor) on one JSON engine; a model the engine cannot
    run is {"unsupported": why}."""
    out: dict[str, Any] = {}
    plain = [m for m in models if m != "search"]
    with counting_server(json_module) as server:
        out["floor"] = {"append": count_floor(server, profiles)}
        for name in plain:
            out[name] = count_model(server, name, profiles=profiles, items=items, seed=seed)
    if "search" in models:
        with _searching_server(json_module) as server:
            try:
                out["search"] = count_model(
                    server, "search", profiles=profiles, items=items, seed=seed
                )
            except Unsupported as exc:
                out["search"] = {"unsupported": str(exc)}
    return {m: out[m] for m in ("floor", *models)}


def count_all(
    engines: list[tuple[str, str | None]],
    models: tuple[str, ...],
    *,
    profiles: int,
    items: int,
    seed: int,
) -> dict[str, Any]:
    """By engine label: count_engine's answer, or {"skipped": why} when valgrind is
    missing."""
    out: dict[str, Any] = {"profiles": profiles, "items": items, "engines": {}}
    for label, module in engines:
        try:
            out["engines"][label] = count_engine(
                module, models, profiles=profiles, items=items, seed=seed
            )
        except CallgrindError as exc:
            out["engines"][label] = {"skipped": str(exc)}
    return out
