"""Shared fixtures: real engines (never a mock of the database) and stores on them.

The suite starts its own engines through devtools/engine.py: one standalone server
and one 3-primary cluster per test session (per xdist worker), loading the JSON module
that ``JSON_MODULE`` names (default RedisJSON; ``make test`` runs the suite once per
module). With REDIS_URL set, it uses that server instead, in the mode REDIS_CLUSTER
says, and skips the tests marked ``own_servers`` (they start, kill or lock down servers
of their own, which only the launcher can give them).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from moto import mock_aws
from redis.cluster import RedisCluster

from devtools.engine import (
    Engine,
    EngineError,
    describe_modules,
    start_cluster,
    start_standalone,
)
from devtools.lambda_context import Handler, load_handler
from devtools.serve import READER, WRITER, LocalApiServer
from watch_history import runtime
from watch_history.connection import ClientType
from watch_history.settings import Settings
from watch_history.store import HistoryStore

ROOT = Path(__file__).resolve().parent.parent
AWS_REGION = "us-east-1"
EVENTS = ROOT / "events"

_EXTERNAL = os.environ.get("REDIS_URL")
_EXTERNAL_CLUSTER = os.environ.get("REDIS_CLUSTER", "false").lower() == "true"
MODES = (
    ["cluster" if _EXTERNAL_CLUSTER else "standalone"] if _EXTERNAL else ["standalone", "cluster"]
)


OWN_SERVERS_REASON = (
    "own_servers: starts or kills servers of its own, so it runs only on the launcher's "
    "engines (unset REDIS_URL)"
)


def describe_engine() -> str:
    """Which JSON engine this run uses (``make test`` runs the suite once per engine)."""
    if _EXTERNAL:
        try:
            with redis.Redis.from_url(_EXTERNAL, socket_timeout=5) as c:
                modules = describe_modules(c)
        except redis.RedisError as exc:
            modules = f"unreachable ({exc})"
        kind = "cluster" if _EXTERNAL_CLUSTER else "standalone"
        return f"engine: external {kind} {_EXTERNAL}: {modules}"
    try:
        with start_standalone() as engine:
            return f"engine: launcher, modules {engine.json_engine()}, JSON {engine.json_module}"
    except EngineError as exc:
        return f"engine: the launcher cannot start one: {exc}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Printed even with -q, just above the counts: the run says which engine it used."""
    if not hasattr(config, "workerinput"):  # the xdist controller (or a plain run)
        terminalreporter.write_line(describe_engine())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _EXTERNAL:
        return
    skip = pytest.mark.skip(reason=OWN_SERVERS_REASON)
    for item in items:
        if item.get_closest_marker("own_servers"):
            item.add_marker(skip)


NOT_NUMBERS: list[dict[str, Any]] = [
    {"position": True},
    {"position": "10"},
    {"position": 10, "duration": "100"},
    {"position": 10, "duration": False},
    {"position": 10, "asset": {"season": "2"}},
    {"position": 10, "asset": {"episode": True}},
    {"position": 10, "eventTime": "1795200000000"},
]
"""Fields of an update whose number is a string or a boolean: refused alike by the
write API and the recorder (models.NUMBER_RULE)."""


def load_event(name: str) -> dict[str, Any]:
    """An event file from events/ (the same files `sam local invoke -e` takes)."""
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


@pytest.fixture(scope="session", autouse=True)
def _powertools_env() -> Iterator[None]:
    """Powertools as the template configures it, minus X-Ray (no daemon here)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POWERTOOLS_METRICS_NAMESPACE", "WatchHistoryTest")
        mp.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        yield


@pytest.fixture(autouse=True)
def _no_store_left_behind() -> Iterator[None]:
    """Tests install the handlers' store with ``runtime.set_store``; forget it after."""
    yield
    runtime.set_store(None)


@pytest.fixture
def no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that build their own ``Settings``: the REDIS_URL / REDIS_CLUSTER that
    point the suite at an external server must not leak into them."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_CLUSTER", raising=False)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AWS faked by moto (SQS, Kinesis, Secrets Manager); the database never is."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    with mock_aws():
        yield


@pytest.fixture
def sqs(aws: None) -> Any:
    return boto3.client("sqs", region_name=AWS_REGION)


@pytest.fixture(scope="session")
def engines() -> Iterator[dict[str, Engine | None]]:
    started: dict[str, Engine | None] = {}
    try:
        yield started
    finally:
        for engine in started.values():
            if engine is not None:
                engine.stop()


def _url_for(mode: str, engines: dict[str, Engine | None]) -> str:
    if _EXTERNAL:
        return _EXTERNAL
    if mode not in engines:
        engines[mode] = start_cluster(3) if mode == "cluster" else start_standalone()
    engine = engines[mode]
    assert engine is not None
    return engine.url


def make_client(url: str, cluster: bool) -> ClientType:
    if cluster:
        return RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url(mode: str, engines: dict[str, Engine | None]) -> str:
    return _url_for(mode, engines)


@pytest.fixture
def client(mode: str, redis_url: str) -> Iterator[ClientType]:
    c = make_client(redis_url, mode == "cluster")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def private_client(mode: str) -> Iterator[ClientType]:
    """A server (or 3-primary cluster) of this test's own, in ``mode``: for tests that
    count commands on the server (INFO commandstats), which another test sharing the
    server would add to. Such tests are marked ``own_servers``."""
    with start_cluster(3) if mode == "cluster" else start_standalone() as engine:
        c = make_client(engine.url, mode == "cluster")
        try:
            yield c
        finally:
            c.close()


@pytest.fixture
def settings(redis_url: str, mode: str) -> Settings:
    return Settings(redis_url=redis_url, redis_cluster=mode == "cluster", key_prefix="t:")


@pytest.fixture
def make_store(client: ClientType, settings: Settings) -> Callable[..., HistoryStore]:
    def make(**overrides: Any) -> HistoryStore:
        clock = overrides.pop("clock_ms", None)
        return HistoryStore(client, settings.model_copy(update=overrides), clock_ms=clock)

    return make


@pytest.fixture
def store(make_store: Callable[..., HistoryStore]) -> HistoryStore:
    return make_store()


@pytest.fixture(scope="module")
def handlers() -> dict[str, Handler]:
    """The reader and writer modules, imported as Lambda would."""
    return {READER: load_handler(READER), WRITER: load_handler(WRITER)}


@contextlib.contextmanager
def serving(
    store: HistoryStore, handlers: dict[str, Handler], **options: Any
) -> Iterator[LocalApiServer]:
    """``make serve``'s server on an ephemeral port, on ``store``: bound (ready) before
    serve_forever starts. ``options``: LocalApiServer's (cors=...)."""
    runtime.set_store(store)
    srv = LocalApiServer(
        ("127.0.0.1", 0), handlers, profile_claim=store.settings.profile_claim, **options
    )
    thread = threading.Thread(target=srv.serve_forever, name="local-api", daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        thread.join()
        srv.server_close()
        runtime.set_store(None)


@pytest.fixture
def server(store: HistoryStore, handlers: dict[str, Handler]) -> Iterator[LocalApiServer]:
    """``make serve``'s server (``serving``) with its defaults."""
    with serving(store, handlers) as srv:
        yield srv


@pytest.fixture
def profile_id() -> str:
    """A fresh profile per test, so tests share engines without flushing them."""
    return f"p-{uuid.uuid4().hex[:12]}"
