"""The load test's models get the answers right, and the load test runs end to end.

A benchmark of a model that answers wrongly proves nothing: the same randomized
sequence of updates, removals and clears goes through every model of loadtest/ (both
sorted-set variants included) and through tests/model.py, and every read route returns
the same items. Then the whole load test (every model, every measure, two passes of a
small workload) runs as ``python -m loadtest --redis-url ... [--cluster]`` against a
standalone server and the 3-primary cluster, both with the search module loaded; and
the capacity sizing and the command line refuse what they cannot answer.

These tests start their own servers (the search module is not in the suite's), with
the JSON module the run uses (JSON_MODULE): on valkey-json the search model cannot run,
and the tests check that this is the only thing missing.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.engine import Engine, start_cluster, start_standalone
from loadtest import __main__ as cli
from loadtest import capacity, handlers
from loadtest.models import MODELS, Model, Unsupported
from loadtest.run import engine_info
from loadtest.workload import ROUTES as WORKLOAD_ROUTES
from tests.conftest import make_client
from tests.model import HistoryModel
from watch_history.models import HistoryQuery, ProgressUpdate, Status
from watch_history.settings import Settings

# Small, so that sequences of six assets evict; and large, with several records per
# asset in a batch (collapsed: the "split" path when a removal falls between them).
# Not both at once: when an asset is evicted and comes back within ONE batch, the
# collapsed update keeps the batch's earliest time as firstWatchedAt, while applying the
# records one by one (tests/model.py) starts a new item. All three models collapse alike.
EVICTING, ROOMY = 4, 100
ASSETS: dict[str, dict[str, Any]] = {
    "m1": {"type": "match", "sport": "cricket", "series": "ipl", "teams": ["csk", "mi"]},
    "m2": {"type": "match", "sport": "cricket", "series": "ipl", "teams": ["rcb", "csk"]},
    "m3": {"type": "match", "sport": "football", "series": "pl", "teams": ["ars"]},
    "e1": {"type": "episode", "show": "kings", "season": 1, "episode": 1},
    "e2": {"type": "episode", "show": "kings", "season": 2, "episode": 1},
    "mv": {"type": "movie", "title": "A Film"},
}
ROUTES: dict[str, HistoryQuery] = {
    "recency": HistoryQuery(limit=20),
    "recency, page of 2": HistoryQuery(limit=2),
    "continue watching": HistoryQuery(status=Status.IN_PROGRESS),
    "asset": HistoryQuery(asset_ids=["m1", "e2", "mv", "none"]),
    "sport": HistoryQuery(sport="cricket"),
    "sport+series": HistoryQuery(sport="cricket", series="ipl"),
    "sport+series+team": HistoryQuery(sport="cricket", series="ipl", teams=["mi"]),
    "sport+series+teams": HistoryQuery(sport="cricket", series="ipl", teams=["mi", "rcb"]),
    "show": HistoryQuery(show="kings"),
    "show+season": HistoryQuery(show="kings", season=2),
}


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def search_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    cluster = request.param == "cluster"
    engine = start_cluster(3, search=True) if cluster else start_standalone(search=True)
    with engine:
        yield engine


@pytest.fixture(scope="module")
def all_models(search_engine: Engine) -> Iterator[dict[int, dict[str, Model]]]:
    """The three models on the engine, by MAX_ITEMS (search left out where the engine
    cannot run it)."""
    client = make_client(search_engine.url, search_engine.cluster)
    run = uuid.uuid4().hex[:6]
    out: dict[int, dict[str, Model]] = {EVICTING: {}, ROOMY: {}}
    for max_items, models in out.items():
        for name, make in MODELS.items():
            model = make(
                client,
                Settings(
                    redis_url=search_engine.url,
                    redis_cluster=search_engine.cluster,
                    key_prefix=f"c{run}{name}{max_items}:",
                    max_items=max_items,
                    max_future_skew_seconds=86_400,  # players' clocks hours ahead
                ),
            )
            try:
                model.setup()
            except Unsupported:
                # Only valkey-json (MemoryDB's engine) has no JSON for the search module.
                assert name == "search"
                assert "valkey-json" in engine_info(client)["json"]
                continue
            models[name] = model
    try:
        yield out
    finally:
        client.close()


@pytest.fixture
def models(all_models: dict[int, dict[str, Model]]) -> dict[str, Model]:
    return all_models[ROOMY]


def _updates(draw: st.DrawFn, now: datetime, per_asset: int) -> list[ProgressUpdate]:
    """Updates of a few assets: each asset's description agrees across its updates (it
    describes the asset) though any update may leave it out; times distinct per asset,
    either well in the past or hours ahead (players' clocks), never near "now", so that
    a removal's tombstone (the server's now) falls between them whatever the clocks."""
    out = []
    for asset in draw(
        st.lists(st.sampled_from(sorted(ASSETS)), min_size=1, max_size=5, unique=True)
    ):
        meta = ASSETS[asset]
        duration = draw(st.sampled_from([None, 600.0]))
        device = draw(st.sampled_from([None, "tv-1"]))
        offsets = st.lists(st.integers(0, 600), min_size=1, max_size=per_asset, unique=True)
        for offset in draw(offsets):
            base = now - timedelta(days=1) if draw(st.booleans()) else now + timedelta(hours=2)
            out.append(
                ProgressUpdate(
                    profile_id="x",
                    asset_id=asset,
                    position=draw(st.sampled_from([0.0, 10.0, 45.0, 500.0, 600.0])),
                    duration=duration,
                    event_time=base + timedelta(seconds=offset),
                    event_type=draw(st.sampled_from(["heartbeat", "pause", "complete"])),
                    device_id=device if draw(st.booleans()) else None,
                    asset={k: v for k, v in meta.items() if draw(st.booleans())} or None,
                )
            )
    return out


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[tuple[str, Any]]]:
    """MAX_ITEMS and a sequence of batches, removals and clears."""
    now = datetime.now(UTC)
    max_items = draw(st.sampled_from([EVICTING, ROOMY]))
    per_asset = 1 if max_items == EVICTING else 3
    steps: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["batch", "batch", "batch", "remove", "clear"]))
        if kind == "batch":
            steps.append(("batch", _updates(draw, now, per_asset)))
        elif kind == "remove":
            steps.append(("remove", draw(st.sampled_from(sorted(ASSETS)))))
        else:
            steps.append(("clear", None))
    return max_items, steps


def _time(update: ProgressUpdate) -> datetime:
    return update.event_time


def _expected(model: HistoryModel, query: HistoryQuery) -> list[dict[str, Any]]:
    """What a route returns, from the plain-Python model (the rules of query.py)."""
    out = []
    for item in model.ordered():
        if query.asset_ids and item["assetId"] not in query.asset_ids:
            continue
        if query.sport and item.get("sport") != query.sport:
            continue
        if query.series and item.get("series") != query.series:
            continue
        if query.teams and not set(query.teams) & set(item.get("teams") or ()):
            continue
        if query.show and item.get("show") != query.show:
            continue
        if query.season is not None and item.get("season") != query.season:
            continue
        if query.status is Status.IN_PROGRESS and (item["completed"] or item["position"] < 30):
            continue
        out.append(item)
    return out[: query.limit]


@pytest.mark.own_servers
@settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=histories())
def test_every_model_answers_every_route_as_the_rules_say(
    all_models: dict[int, dict[str, Model]], history: tuple[int, list[tuple[str, Any]]]
):
    max_items, steps = history
    models = all_models[max_items]
    profile = f"p-{uuid.uuid4().hex[:10]}"
    expected = HistoryModel(max_items=max_items)
    for kind, arg in steps:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        if kind == "batch":
            updates = [u.model_copy(update={"profile_id": profile}) for u in arg]
            for model in models.values():
                model.record_batch(updates)
            # Evicting, each asset has one record per batch and the scripts apply them in
            # arrival order: so does the model (eviction depends on the order when an
            # update revives an item that another insert of the batch would evict).
            order = updates if max_items == EVICTING else sorted(updates, key=_time)
            for u in order:
                expected.apply(u)
        elif kind == "remove":
            for model in models.values():
                model.remove(profile, [arg])
            expected.remove(arg, now_ms)
        else:
            for model in models.values():
                model.clear(profile)
            expected.clear(now_ms)
    for route, query in ROUTES.items():
        want = _expected(expected, query)
        for name, model in models.items():
            got = [item.to_api() for item in model.query(profile, query).items]
            assert got == want, f"{name}, {route}"


@pytest.mark.own_servers
def test_the_alternative_models_refuse_routes_they_do_not_index(models: dict[str, Model]):
    for name in ("sorted_sets", "sorted_sets_hash", "search"):
        if name not in models:
            continue
        with pytest.raises(Unsupported):
            models[name].query("p", HistoryQuery(sport="cricket", teams=["csk"]))
        with pytest.raises(Unsupported):
            models[name].query("p", HistoryQuery(collapse="show"))


@pytest.mark.own_servers
def test_the_load_test_runs_every_model_and_measure_against_an_endpoint(
    search_engine: Engine, tmp_path: Path
):
    """``python -m loadtest --quick --redis-url URL [--cluster]``: results, report, charts."""
    argv = ["--quick", "--redis-url", search_engine.url, "--out", str(tmp_path)]
    if search_engine.cluster:
        argv.append("--cluster")
    assert cli.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["instructions"] is None  # an endpoint: no callgrind
    (target,) = results["targets"]
    assert target["topology"] == ("cluster" if search_engine.cluster else "standalone")
    assert len(target["passes"]) == 2
    for scenarios in target["passes"]:
        main = next(s for s in scenarios if s["scenario"]["full"])
        assert main["floor"]["write"]["records_per_s"] > 0
        for name in MODELS:
            row = main["models"][name]
            if "unsupported" in row:
                assert name == "search"
                assert "valkey-json" in target["engine"]["json"]
                continue
            assert set(row["ingest"]) == {
                "steady",
                "session_starts",
                "dense",
                "steady_2_processes",
            }
            assert all(r["cpu_us_per_record"] > 0 for r in row["ingest"].values())
            assert set(row["reads"]) == set(WORKLOAD_ROUTES)
            # a handful of samples: a p50, never a p99
            assert all(r["p99_us"] is None for r in row["reads"].values())
            assert row["memory"]["used_memory_growth_per_item"] > 0
            assert row["memory"]["keys_per_profile"] >= 1
    pooled = target["pooled"]["main"]["store"]["continue watching"]
    assert pooled["samples"] == 2 * main["scenario"]["read_samples"]
    # the run cleaned up after itself: an endpoint that is not ours is not flushed
    client = make_client(search_engine.url, search_engine.cluster)
    try:
        assert not list(client.scan_iter(match="lt:*"))
    finally:
        client.close()
    report = (tmp_path / "benchmarks.md").read_text()
    assert "## Conclusion" in report
    assert "/work/" not in report
    assert str(tmp_path) not in report
    assert "Not run:" not in report
    assert all((tmp_path / p).stat().st_size > 0 for p in ("throughput.png", "memory.png"))


NODES: dict[str, Any] = {
    "reserved_memory_percent": 25,
    "data_written": {"free_gb_per_month": 1000, "usd_per_gb": 0.1},
    "nodes": [
        {"type": "small", "memory_gib": 10.0, "usd_per_hour": 1.0},
        {"type": "big", "memory_gib": 40.0, "usd_per_hour": 5.0},
    ],
}


def _size(**changes: Any) -> capacity.Sizing:
    figures: dict[str, Any] = {
        "bytes_per_item": 300.0,
        "cpu_us_per_record": 50.0,
        "written_bytes_per_record": 0.0,
        "profiles": 1e6,
        "items": 100,
        "peak": 10_000,
        "watch_hours": 1.0,
        "nodes": NODES,
    }
    return capacity.size("store", **{**figures, **changes})


def test_capacity_takes_the_larger_of_memory_and_write_shards_and_the_cheapest_node():
    # 1e6 profiles x 100 items x 300 B = 27.9 GiB; a small node holds 10 * 0.75 * 0.8 = 6 GiB
    memory_bound = _size()
    assert (memory_bound.node_type, memory_bound.shards_for_memory) == ("small", 5)
    assert memory_bound.shards_for_writes == 1  # 10k/s x 50 us = 0.5 s/s, at 50% per shard
    assert memory_bound.nodes == 10  # a replica per shard
    assert memory_bound.usd_per_month == 10 * 1.0 * capacity.HOURS_PER_MONTH
    # at 200k/s the writes need 20 shards whatever the node: the small one stays cheapest
    write_bound = _size(peak=200_000)
    assert (write_bound.node_type, write_bound.shards, write_bound.shards_for_writes) == (
        "small",
        20,
        20,
    )
    # a CPU target of 25 (percent) halves what a shard takes: twice the shards
    assert _size(peak=200_000, cpu_target=25.0).shards_for_writes == 40


def test_capacity_prices_the_data_written_past_the_free_allowance():
    # 1e6 profiles x 1 h/day = 120 heartbeats a day each, x 30.4 days x 500 B = 1,825 GB
    sizing = _size(written_bytes_per_record=500.0)
    assert sizing.written_gb == pytest.approx(1e6 * 120 * capacity.DAYS_PER_MONTH * 500 / 1e9)
    assert sizing.written_usd == pytest.approx((sizing.written_gb - 1000) * 0.1)
    assert _size(written_bytes_per_record=100.0).written_usd == 0  # within the free 1,000 GB


def _results(items_and_cpu: dict[int, list[float]]) -> dict[str, Any]:
    """A run's results with the store alone, one scenario per size, one pass per value."""
    passes = []
    for n in range(len(next(iter(items_and_cpu.values())))):
        scenarios = []
        for items, cpus in items_and_cpu.items():
            steady = {"cpu_us_per_record": cpus[n], "written_bytes_per_record": 100.0}
            row = {"memory": {"used_memory_growth_per_item": 300.0}, "ingest": {"steady": steady}}
            scenarios.append({"spec": {"items": items}, "models": {"store": row}})
        passes.append(scenarios)
    engine = {"json": "valkey-json"}
    return {"targets": [{"engine": engine, "topology": "cluster", "passes": passes}]}


def test_capacity_interpolates_between_measured_sizes_and_refuses_outside_them():
    results = _results({20: [10.0, 30.0], 200: [100.0, 300.0]})
    (m,) = capacity.measured(results, 110)
    assert m.interpolated
    assert m.cpu_us_per_record == (55.0, 165.0)
    (m,) = capacity.measured(results, 200)
    assert not m.interpolated
    assert m.cpu_us_per_record == (100.0, 300.0)
    with pytest.raises(capacity.Refused, match="1000 items per profile was not measured"):
        capacity.measured(results, 1000)


def test_capacity_answers_a_range_from_the_best_pass_to_the_worst():
    results = _results({200: [100.0, 300.0]})
    (answer,) = capacity.answer(results, 1e6, 200, peak=100_000)
    assert answer.low.shards_for_writes == 20  # 100k/s x 100 us / 50%
    assert answer.high.shards_for_writes == 60  # 100k/s x 300 us / 50%


@pytest.mark.parametrize(
    "argv",
    [
        ["--cpu-target", "0.5"],  # a fraction: percentages are given as percent
        ["--memory-fill", "120"],
        ["--replicas", "6"],  # MemoryDB: at most 5
        ["--profiles", "0"],
        ["--items", "0"],
        ["--watch-hours", "25"],
    ],
)
def test_capacity_refuses_impossible_inputs(argv: list[str], capsys: pytest.CaptureFixture[str]):
    base = {"--profiles": "1e6", "--peak": "1000"}
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        base[flag] = value
    args = [part for pair in base.items() for part in pair]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["capacity", *args])
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_the_load_test_refuses_a_valkey_json_path_that_is_not_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit):
        cli.main(["--valkey-json", str(tmp_path / "missing.so"), "--out", str(tmp_path)])
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.own_servers
def test_the_handler_benchmark_runs_each_handler_and_its_floors() -> None:
    """``make bench-handlers`` (loadtest.handlers), small: every lookup answers 200 through
    the real reader and through the Powertools floor (routes that do nothing), and the
    recorder lands every record (each asserted inside), and the report has every row."""
    report = io.StringIO()
    with start_standalone() as engine:
        handlers.bench_reader(engine.url, 150, 5, report, profile=False, warmup=2)
        handlers.bench_recorder(
            engine.url, n_profiles=20, items=30, records=100, rounds=1, report=report, profile=False
        )
    text = report.getvalue()
    for name, _, _ in handlers.DIMENSIONS:
        assert f"| {name} |" in text
    assert "Powertools floor p50 us" in text
    assert "| 100 records over 20 profiles | 100 |" in text
