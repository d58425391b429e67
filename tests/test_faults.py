"""Faults the store must survive: a shard dying in the middle of a batch.

(The standalone server dying between two round trips of one batch is in
tests/test_recorder.py, through the whole handler.)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.cluster import RedisCluster

from devtools.engine import Engine, start_cluster
from watch_history.errors import StoreUnavailableError
from watch_history.models import HistoryQuery, ProgressUpdate
from watch_history.settings import Settings
from watch_history.store import HistoryStore, RecordOutcome

pytestmark = pytest.mark.own_servers


@pytest.fixture
def private_cluster() -> Iterator[Engine]:
    """A cluster of its own: this test kills one of its primaries."""
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
