"""Faults the recorder and the store must survive, on the real engines.

Each test: no exception leaves the handler, every record is landed or reported as a
batch item failure (or quarantined), and after Lambda's retry (every record from the
first failed sequence number on) the state equals a clean run's.

(The standalone server dying between two round trips of one batch is in
tests/test_recorder.py, through the whole handler.)
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from devtools.engine import Engine, start_cluster, start_standalone, wait_until
from devtools.lambda_context import FakeLambdaContext, load_module
from devtools.serve import api_event
from tests.test_recorder import failed_sequences, progress, queue_url, record, recorder, state
from watch_history import runtime
from watch_history.connection import ClientType, create_client
from watch_history.errors import StoreUnavailableError
from watch_history.models import HistoryQuery, ProgressUpdate
from watch_history.recorder import Disposition
from watch_history.settings import Settings
from watch_history.store import SCRIPT_ATTEMPTS, HistoryStore, RecordOutcome

# They pause, flush, kill or lock down servers: never on someone else's (REDIS_URL).
pytestmark = pytest.mark.own_servers
__all__ = ["queue_url", "recorder"]  # fixtures shared with test_recorder

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
# Short timeouts so that a silent server costs little: what a deadline test needs.
FAST = {"redis_connect_timeout": 0.5, "redis_socket_timeout": 0.5}


# --- helpers --------------------------------------------------------------------------


def batch_records(tag: str, profiles: int, per_profile: int = 2) -> list[dict[str, Any]]:
    """``profiles`` x ``per_profile`` heartbeats, interleaved, one partition key each."""
    payloads = [
        progress(
            f"{tag}-{p}",
            "m1" if k % 2 == 0 else "m2",
            BASE + timedelta(minutes=k, seconds=p),
            position=float(60 * (k + 1)),
        )
        for k in range(per_profile)
        for p in range(profiles)
    ]
    return [record(pl, i, pl["profileId"]) for i, pl in enumerate(payloads)]


def profile_of(rec: dict[str, Any]) -> str:
    return str(rec["kinesis"]["partitionKey"])


def pairs_of(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(profile_of(r), a) for r in records for a in ("m1", "m2")}


def primaries(client: ClientType) -> list[redis.Redis]:
    """A plain client per primary (the standalone server: the client itself)."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(n) for n in client.get_primaries()]
    return [client]


def invoke(recorder: ModuleType, records: list[dict[str, Any]], timeout: float = 30.0) -> Any:
    """The handler on ``records``; returns (response, the context it ran with)."""
    context = FakeLambdaContext("history-recorder", timeout_seconds=timeout)
    return recorder.lambda_handler({"Records": records}, context), context


def retry_then_compare_with_a_clean_run(
    recorder: ModuleType, store: HistoryStore, records: list[dict[str, Any]], failed: list[str]
) -> None:
    """Lambda's retry (from the first failed record to the end) lands everything, and
    the state is the one a clean run of the whole batch leaves."""
    runtime.set_store(store)
    if failed:
        first = next(i for i, r in enumerate(records) if r["kinesis"]["sequenceNumber"] in failed)
        response, _ = invoke(recorder, records[first:])
        assert response == {"batchItemFailures": []}
    clean = HistoryStore(
        store.client, store.settings.model_copy(update={"key_prefix": f"c{uuid.uuid4().hex[:8]}:"})
    )
    runtime.set_store(clean)
    response, _ = invoke(recorder, records)
    assert response == {"batchItemFailures": []}
    pairs = pairs_of(records)
    assert state(store, pairs) == state(clean, pairs)
    assert all(state(store, {(p, "m1")})[p, "m1"] is not None for p, _ in pairs)


@pytest.fixture
def fast_store(settings: Settings, queue_url: str) -> Iterator[HistoryStore]:
    """A store on the suite's engine with the service's own client (its timeouts and
    retry policy), short timeouts, small chunks and a prefix of its own."""
    fast = settings.model_copy(
        update={
            **FAST,
            "pipeline_profiles": 5,
            "deadline_margin_seconds": 0.5,
            "key_prefix": f"f{uuid.uuid4().hex[:8]}:",
            "quarantine_queue_url": queue_url,
        }
    )
    store = HistoryStore(create_client(fast), fast)
    store.record_progress(ProgressUpdate.model_validate(progress("warm", "a", BASE)))
    runtime.set_store(store)
    try:
        yield store
    finally:
        store.client.close()


# --- the deadline ---------------------------------------------------------------------


def test_a_paused_server_costs_one_timeout_and_the_handler_returns_in_time(
    recorder: ModuleType, fast_store: HistoryStore, client: ClientType
):
    """``CLIENT PAUSE .. WRITE`` on the standalone server, or on one primary of the
    cluster: the first round trip to it times out, the later chunks are not sent to it
    (not each waiting out its own timeout), the other shards' records land, and the
    handler returns before the invocation's deadline with exactly the records of the
    paused server reported."""
    records = batch_records(f"pause-{uuid.uuid4().hex[:6]}", 40)
    paused = primaries(client)[-1]
    paused_port = paused.connection_pool.connection_kwargs["port"]

    def on_paused(rec: dict[str, Any]) -> bool:
        if not isinstance(fast_store.client, RedisCluster):
            return True
        node = fast_store.client.get_node_from_key(fast_store.key(profile_of(rec)))
        return bool(node.port == paused_port)

    expected_failed = [r["kinesis"]["sequenceNumber"] for r in records if on_paused(r)]
    assert 0 < len(expected_failed) <= len(records)
    paused.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
    try:
        # 16 chunks of 5 profiles: waiting 0.5 s on each would take 8 s, past the deadline.
        response, context = invoke(recorder, records, timeout=4.0)
        assert context.get_remaining_time_in_millis() > 0  # Lambda would have killed it
    finally:
        paused.execute_command("CLIENT", "UNPAUSE")

    assert failed_sequences(response) == expected_failed
    report = recorder.processor.report
    reasons = {report.reasons[i] for i in report.indices(Disposition.FAILED)}
    assert any("did not answer in time" in r for r in reasons)
    assert any("timed out earlier in this batch" in r for r in reasons)
    landed = [i for i, r in enumerate(records) if not on_paused(r)]
    assert all(report.dispositions[i] is Disposition.APPLIED for i in landed)
    retry_then_compare_with_a_clean_run(recorder, fast_store, records, expected_failed)


def test_too_little_time_left_sends_nothing_and_reports_everything(
    recorder: ModuleType, fast_store: HistoryStore
):
    """Less time left than the margin plus one worst-case round trip: no round trip
    starts, every valid record is reported for retry, the bad one is still quarantined
    (the margin is kept for that), and nothing is written."""
    records = batch_records(f"late-{uuid.uuid4().hex[:6]}", 3)
    # margin 0.5 s + connect 0.5 s + socket 0.5 s > 1.2 s left
    response, context = invoke(recorder, [*records, record(b"{broken", 99)], timeout=1.2)

    assert context.get_remaining_time_in_millis() > 0
    assert failed_sequences(response) == [r["kinesis"]["sequenceNumber"] for r in records]
    report = recorder.processor.report
    assert report.count(Disposition.QUARANTINED) == 1
    assert all("deadline is near" in report.reasons[i] for i in range(len(records)))
    assert all(v is None for v in state(fast_store, pairs_of(records)).values())
    retry_then_compare_with_a_clean_run(recorder, fast_store, records, failed_sequences(response))


# --- scripts the server forgot --------------------------------------------------------


def test_script_flush_mid_batch_and_between_load_and_rerun_loses_nothing(
    recorder: ModuleType, fast_store: HistoryStore, monkeypatch: pytest.MonkeyPatch
):
    """SCRIPT FLUSH after the first round trip, and again right after the script is
    loaded back (before the calls run again): each costs a round, every record lands."""
    records = batch_records(f"flush-{uuid.uuid4().hex[:6]}", 20)
    nodes = primaries(fast_store.client)
    real_pipeline, real_load = fast_store._pipeline, fast_store._load_script
    round_trips: list[int] = []
    loads: list[int] = []

    def pipeline(sha: str, calls: Any, budget: Any) -> Any:
        replies = real_pipeline(sha, calls, budget)
        round_trips.append(1)
        if len(round_trips) == 1:
            for node in nodes:
                node.script_flush()
        return replies

    def load(script: Any, node: Any, budget: Any) -> Any:
        error = real_load(script, node, budget)
        loads.append(1)
        if len(loads) == 1:  # the first load is undone before the rerun
            for n in nodes:
                n.script_flush()
        return error

    monkeypatch.setattr(fast_store, "_pipeline", pipeline)
    monkeypatch.setattr(fast_store, "_load_script", load)
    response, _ = invoke(recorder, records)

    assert response == {"batchItemFailures": []}
    assert len(loads) >= 2  # loaded, flushed, loaded again
    assert recorder.processor.report.count(Disposition.APPLIED) == len(records)
    monkeypatch.undo()
    retry_then_compare_with_a_clean_run(recorder, fast_store, records, [])


def test_a_script_that_cannot_be_loaded_fails_the_records_never_the_handler(
    recorder: ModuleType, fast_store: HistoryStore
):
    """NOSCRIPT, then SCRIPT LOAD refused (an ACL user without it): every record is
    reported (no exception leaves the handler); once the user may load, the retry lands."""
    user, password = f"noload{uuid.uuid4().hex[:6]}", "pw-" + uuid.uuid4().hex
    admins = primaries(fast_store.client)
    for admin in admins:
        admin.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
            commands=["+@all", "-script|load"],
        )  # fmt: skip
    url = fast_store.settings.redis_url.replace("redis://", f"redis://{user}:{password}@")
    limited_settings = fast_store.settings.model_copy(update={"redis_url": url})
    limited = HistoryStore(create_client(limited_settings), limited_settings)
    runtime.set_store(limited)
    tag = f"acl-{uuid.uuid4().hex[:6]}"
    records = batch_records(tag, 8)
    try:
        for admin in admins:
            admin.script_flush()
        response, _ = invoke(recorder, records)
        assert failed_sequences(response) == [r["kinesis"]["sequenceNumber"] for r in records]
        reasons = recorder.processor.report.reasons
        assert all("loading script record_progress" in reasons[i] for i in range(len(records)))

        direct = limited.record_batch([ProgressUpdate.model_validate(progress(tag, "x", BASE))])
        assert isinstance(direct.failures[0], StoreUnavailableError)
        with pytest.raises(StoreUnavailableError):  # the HTTP path: a 503, not a 500
            limited.record_progress(ProgressUpdate.model_validate(progress(tag, "x", BASE)))

        for admin in admins:
            admin.acl_setuser(user, commands=["+script|load"])
        retry_then_compare_with_a_clean_run(recorder, limited, records, failed_sequences(response))
    finally:
        limited.client.close()
        for admin in admins:
            admin.acl_deluser(user)


def test_scripts_that_keep_missing_fail_the_calls_after_bounded_rounds(
    fast_store: HistoryStore, monkeypatch: pytest.MonkeyPatch
):
    """A server that forgets the script after every load (a flush each time): after
    ``SCRIPT_ATTEMPTS`` rounds the calls fail, reported, instead of looping."""
    nodes = primaries(fast_store.client)
    real_load = fast_store._load_script
    loads: list[int] = []

    def load(script: Any, node: Any, budget: Any) -> Any:
        error = real_load(script, node, budget)
        loads.append(1)
        for n in nodes:
            n.script_flush()
        return error

    for n in nodes:
        n.script_flush()
    monkeypatch.setattr(fast_store, "_load_script", load)
    updates = [ProgressUpdate.model_validate(progress(f"k{i}", "m", BASE)) for i in range(5)]
    result = fast_store.record_batch(updates)  # one chunk (pipeline_profiles=5)

    assert set(result.failures) == set(range(5))
    assert all("keeps missing" in str(e) for e in result.failures.values())
    assert 0 < len(loads) <= (SCRIPT_ATTEMPTS - 1) * len(nodes)


# --- shards of a cluster of its own ---------------------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[Engine]:
    """A cluster of its own: these tests kill one of its primaries."""
    with start_cluster(3) as engine:
        yield engine


def test_a_dead_primary_fails_exactly_the_profiles_it_holds(private_cluster: Engine):
    client = RedisCluster.from_url(
        private_cluster.url, socket_connect_timeout=0.5, socket_timeout=0.5
    )
    store = HistoryStore(client, Settings(redis_url=private_cluster.url, redis_cluster=True))
    t = datetime.now(UTC) - timedelta(minutes=5)
    profiles = [f"p{i}" for i in range(40)]

    def batch(position: float, at: datetime) -> list[ProgressUpdate]:
        return [
            ProgressUpdate(profile_id=p, asset_id="m1", position=position, event_time=at)
            for p in profiles
        ]

    assert len(store.record_batch(batch(1.0, t)).outcomes) == len(profiles)
    dead = private_cluster.ports[2]
    on_dead = {
        i for i, p in enumerate(profiles) if client.get_node_from_key(store.key(p)).port == dead
    }
    assert 0 < len(on_dead) < len(profiles)
    os.kill(private_cluster.pids[2], signal.SIGKILL)

    result = store.record_batch(batch(2.0, t + timedelta(seconds=1)))

    assert set(result.failures) == on_dead
    assert all(isinstance(e, StoreUnavailableError) for e in result.failures.values())
    assert result.outcomes == dict.fromkeys(
        set(range(len(profiles))) - on_dead, RecordOutcome.APPLIED
    )
    for i in set(range(len(profiles))) - on_dead:  # the live shards have the new position
        (item,) = store.query(profiles[i], HistoryQuery()).items
        assert item.position == 2.0


def test_a_dead_primary_while_another_shard_answers_noscript(
    recorder: ModuleType, private_cluster: Engine, queue_url: str
):
    """The compound fault: one primary killed while another shard has lost its scripts
    (as a promoted replica has). SCRIPT LOAD to every primary would fail; the store
    loads on the shard that answered NOSCRIPT only. The dead shard's records are
    reported, every other record lands, no exception leaves the handler."""
    settings = Settings(
        redis_url=private_cluster.url,
        redis_cluster=True,
        key_prefix="cf:",
        quarantine_queue_url=queue_url,
    ).model_copy(update=FAST)
    cluster = create_client(settings)
    assert isinstance(cluster, RedisCluster)
    store = HistoryStore(cluster, settings)
    runtime.set_store(store)
    records = batch_records("compound", 30)
    assert invoke(recorder, records[:1])[0] == {"batchItemFailures": []}  # scripts loaded

    by_port = {n.port: n for n in cluster.get_primaries()}
    dead_port, flushed_port = private_cluster.ports[2], private_cluster.ports[1]
    cluster.get_redis_connection(by_port[flushed_port]).script_flush()
    os.kill(private_cluster.pids[2], signal.SIGKILL)

    def port_of(rec: dict[str, Any]) -> int:
        return int(cluster.get_node_from_key(store.key(profile_of(rec))).port)

    ports = [port_of(r) for r in records]
    response, _ = invoke(recorder, records)

    expected = [
        r["kinesis"]["sequenceNumber"]
        for r, p in zip(records, ports, strict=True)
        if p == dead_port
    ]
    assert 0 < len(expected) < len(records)
    assert failed_sequences(response) == expected
    report = recorder.processor.report
    assert flushed_port in ports
    for i, port in enumerate(ports):
        if port == flushed_port:  # NOSCRIPT, loaded there, run again: landed
            assert report.dispositions[i] in {Disposition.APPLIED, Disposition.STALE}
    # what the live shards hold equals a clean run of their records
    alive = [r for r, p in zip(records, ports, strict=True) if p != dead_port]
    clean = HistoryStore(store.client, settings.model_copy(update={"key_prefix": "cf2:"}))
    runtime.set_store(clean)
    assert invoke(recorder, alive)[0] == {"batchItemFailures": []}
    pairs = pairs_of(alive)
    assert state(store, pairs) == state(clean, pairs)
    store.client.close()


# --- idle connections reaped ----------------------------------------------------------


def _store_connections(node: redis.Redis) -> list[str]:
    """Ids of the service's connections on a server (its CLIENT SETNAME)."""
    clients = node.client_list()
    return [str(c["id"]) for c in clients if c.get("name") == "watch-history"]


@pytest.mark.parametrize("how", ["CLIENT KILL", "server idle timeout"])
def test_connections_the_server_dropped_are_replaced_without_losing_a_record(
    recorder: ModuleType, fast_store: HistoryStore, how: str
):
    """Between two invocations the server drops the store's idle connections (CLIENT
    KILL, or its own ``timeout`` reaping them, as MemoryDB does while a Lambda is
    frozen). The next batch lands; nothing is lost, nothing left unreported."""
    first, second = batch_records("idle-1", 12), batch_records("idle-2", 12)
    assert invoke(recorder, first)[0] == {"batchItemFailures": []}
    admins = [
        redis.Redis(
            host=n.connection_pool.connection_kwargs["host"],
            port=n.connection_pool.connection_kwargs["port"],
        )
        for n in primaries(fast_store.client)
    ]
    try:
        assert all(_store_connections(a) for a in admins)
        if how == "CLIENT KILL":
            for admin in admins:
                for client_id in _store_connections(admin):
                    admin.client_kill_filter(_id=client_id)
        else:
            for admin in admins:
                admin.config_set("timeout", 1)
        wait_until(
            lambda: not any(_store_connections(a) for a in admins),
            timeout=10,
            what="the server to drop the store's connections",
        )
    finally:
        for admin in admins:
            admin.config_set("timeout", 0)
    response, _ = invoke(recorder, second)
    failed = failed_sequences(response)
    assert failed == [], recorder.processor.report.reasons
    retry_then_compare_with_a_clean_run(recorder, fast_store, second, failed)
    for admin in admins:
        admin.close()


# --- kill -9 and restart, failover: servers of their own ------------------------------


def _cluster_ok(engine: Engine) -> bool:
    """Every live node of ``engine`` reports cluster_state:ok."""
    for i in range(len(engine.ports)):
        try:
            with engine.node_client(i) as node:
                if b"cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
                    return False
        except redis.ConnectionError:
            continue  # a dead node does not vote
    return True


def _service_store(engine: Engine, queue_url: str, prefix: str) -> HistoryStore:
    settings = Settings(
        redis_url=engine.url,
        redis_cluster=engine.cluster,
        key_prefix=prefix,
        quarantine_queue_url=queue_url,
        pipeline_profiles=5,
    ).model_copy(update=FAST)
    return HistoryStore(create_client(settings), settings)


def retry_until_landed(
    recorder: ModuleType, records: list[dict[str, Any]], failed: list[str], attempts: int = 8
) -> int:
    """Lambda's retries (each from the first failed record on) until one lands all; the
    number it took. A server that just came back can refuse a connection or two."""
    for attempt in range(attempts):
        if not failed:
            return attempt
        first = next(i for i, r in enumerate(records) if r["kinesis"]["sequenceNumber"] in failed)
        response, _ = invoke(recorder, records[first:])
        failed = failed_sequences(response)
    assert not failed, recorder.processor.report.reasons
    return attempts


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
def test_kill_9_mid_batch_then_restart_loses_no_acknowledged_write(
    recorder: ModuleType, queue_url: str, monkeypatch: pytest.MonkeyPatch, cluster: bool
):
    """A durable server (AOF, fsync always) is killed with SIGKILL right after the first
    round trip of a batch and started again on its disk. The batch reports exactly what
    it could not write; what it acknowledged survived the crash; Lambda's retries land
    the rest, and the state equals a clean run's."""
    engine = start_cluster(3, durable=True) if cluster else start_standalone(durable=True)
    with engine:
        store = _service_store(engine, queue_url, "k9:")
        runtime.set_store(store)
        records = batch_records("k9", 30)
        assert invoke(recorder, records[:1])[0] == {"batchItemFailures": []}  # warm
        victim = 2 if cluster else 0  # a primary
        real_pipeline = store._pipeline
        sent: list[list[str]] = []
        before: dict[tuple[str, str], Any] = {}

        def pipeline(sha: str, calls: Any, budget: Any) -> Any:
            calls = list(calls)
            replies = real_pipeline(sha, calls, budget)
            sent.append([key for key, _ in calls])
            if len(sent) == 1:  # what the first round trip wrote, read before the crash
                profiles = {key.removeprefix("k9:{").removesuffix("}") for key in sent[0]}
                before.update(state(store, {(p, "m1") for p in profiles}))
                engine.kill(victim)
            return replies

        monkeypatch.setattr(store, "_pipeline", pipeline)
        response, _ = invoke(recorder, records)
        monkeypatch.undo()
        failed = failed_sequences(response)
        report = recorder.processor.report
        assert failed  # the crash cost something ...
        assert len(failed) < len(records) or not cluster  # ... on a cluster, one shard only
        assert any(d is Disposition.APPLIED for d in report.dispositions)
        acknowledged = {k: v for k, v in before.items() if v is not None}
        assert acknowledged  # (a shard that answered NOSCRIPT first may not have been)

        engine.restart(victim)
        if cluster:
            wait_until(lambda: _cluster_ok(engine), timeout=30, what="the cluster to heal")
        assert state(store, set(acknowledged)) == acknowledged  # survived the kill -9
        retry_until_landed(recorder, records, failed)
        retry_then_compare_with_a_clean_run(recorder, store, records, [])
        store.client.close()


def test_a_primary_killed_and_its_replica_promoted_while_batches_run(
    recorder: ModuleType, queue_url: str
):
    """Batches and reads keep coming while one primary dies and its replica takes over
    (with an empty script cache). The recorder reports the dead shard's records until
    the promotion, then lands them (NOSCRIPT answered on the promoted node); the reader
    in the same process answers again without a cold start (same client, no new
    store); after the retries the state equals a clean run's."""
    with start_cluster(3, replicas=1) as engine:
        store = _service_store(engine, queue_url, "fo:")
        runtime.set_store(store)
        reader = load_module("history_reader")
        batches = [batch_records(f"fo{n}", 15) for n in range(6)]
        victim = 1
        reported = 0
        reads: list[int] = []
        for n, records in enumerate(batches):
            if n == 2:
                engine.kill(victim)
            response, _ = invoke(recorder, records)
            failed = failed_sequences(response)
            reported += len(failed)
            if n == 3:
                engine.wait_for_failover(victim)
            if failed and n >= 3:
                retry_until_landed(recorder, records, failed)
            elif failed:
                batches.append(records)  # retried after the failover (Lambda's retries)
            profile = profile_of(records[0])
            event = api_event("GET", f"/profiles/{profile}/history", claims={"profile_id": profile})
            reads.append(reader.lambda_handler(event, FakeLambdaContext("reader"))["statusCode"])
        assert reported > 0  # the dead shard's records were reported, not lost
        assert set(reads) <= {200, 503}
        assert reads[-1] == 200  # the same store reads again after the failover
        assert runtime.get_store() is store
        for records in batches:
            retry_then_compare_with_a_clean_run(recorder, store, records, [])
        store.client.close()
