"""Tests for devtools.engine: real valkey-server processes, no mocks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from devtools import engine as engine_mod
from devtools.engine import Engine, EngineError, start_cluster, start_standalone

pytestmark = pytest.mark.own_servers

REPO = Path(__file__).resolve().parents[1]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _answers(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait_until_dead(port: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _answers(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if still running and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_CLUSTER")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.engine", *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Child used by the CLI tests: reports what it sees as JSON, pings the server.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    url = os.environ.get("REDIS_URL")
    out = {"url": url, "cluster": os.environ.get("REDIS_CLUSTER"), "pong": None}
    # valkey-server processes started by the launcher (our parent), if any
    siblings = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getppid() and comm.startswith("valkey-server"):
            siblings.append(int(pid))
    out["servers"] = len(siblings)
    if url and out["cluster"] is not None:
        import redis
        out["pong"] = redis.Redis.from_url(url).ping()
    print(json.dumps(out))
    sys.exit(int(sys.argv[1]))
    """
)


# --------------------------------------------------------------------------
# standalone
# --------------------------------------------------------------------------


def test_standalone_json_roundtrip_and_stop() -> None:
    eng = start_standalone()
    try:
        assert not eng.cluster
        assert len(eng.ports) == 1
        assert eng.url == f"redis://127.0.0.1:{eng.ports[0]}"
        assert eng.root.is_dir()
        with redis.Redis.from_url(eng.url, decode_responses=True) as r:
            assert r.ping()
            doc = {"a": [1, 2, {"b": "c"}], "n": None}
            assert r.execute_command("JSON.SET", "doc", "$", json.dumps(doc))
            assert json.loads(r.execute_command("JSON.GET", "doc", "$")) == [doc]
            assert r.execute_command("JSON.ARRAPPEND", "doc", "$.a", "3") == [4]
            assert r.config_get("save") == {"save": ""}
            assert r.config_get("appendonly") == {"appendonly": "no"}
    finally:
        eng.stop()
    assert not eng.root.exists()
    assert not _answers(eng.ports[0])
    eng.stop()  # idempotent


def test_context_manager_and_search_module() -> None:
    with start_standalone(search=True) as eng:
        with redis.Redis.from_url(eng.url, decode_responses=True) as r:
            names = {m["name"] for m in r.module_list()}
            assert "search" in names
            assert r.execute_command("FT._LIST") == []
            assert r.execute_command("JSON.SET", "doc", "$", "[1]")  # whichever JSON module
        root, port = eng.root, eng.ports[0]
    assert not eng.running
    assert not root.exists()
    assert not _answers(port)


def test_start_failure_raises_engine_error_with_log_tail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "not-a-module.so"
    bogus.write_text("not an ELF file\n")
    monkeypatch.setenv("JSON_MODULE", str(bogus))
    with pytest.raises(EngineError) as info:
        start_standalone()
    msg = str(info.value)
    assert "exited during startup" in msg
    assert "not-a-module.so" in msg  # comes from the server's log tail
    log = Path(re.search(r"log (\S+valkey\.log)", msg)[1])  # type: ignore[index]
    assert log.parent.parent.name.startswith("valkey-engine-")
    assert not log.parent.parent.exists()  # temp dir cleaned up


def test_json_module_comes_from_the_setting_and_a_missing_one_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """JSON_MODULE picks the module file (any name: here a copy of the default one); a
    path that does not exist fails loudly instead of quietly testing another engine."""
    default = engine_mod.find_module("rejson.so")
    copy = tmp_path / "other-json-module.so"
    shutil.copy(default, copy)
    monkeypatch.setenv("JSON_MODULE", str(copy))
    assert engine_mod.find_json_module() == copy
    with start_standalone() as eng:
        assert eng.json_module == copy
        with eng.node_client(0) as r:
            loaded = {m[b"path"].decode() for m in r.execute_command("MODULE", "LIST")}
        assert str(copy) in loaded
        assert "ReJSON" in eng.json_engine()  # what the server calls it, read back
    monkeypatch.setenv("JSON_MODULE", str(tmp_path / "absent.so"))
    with pytest.raises(EngineError, match=r"JSON_MODULE=.*absent\.so: no such module file"):
        start_standalone()
    monkeypatch.delenv("JSON_MODULE")
    assert engine_mod.find_json_module() == default
    assert engine_mod.find_json_module(copy) == copy  # an argument beats the environment


def test_durable_server_keeps_every_acknowledged_write_across_kill_9() -> None:
    """AOF with appendfsync always: what the server acknowledged is on disk before the
    reply, so SIGKILL (no shutdown) and a restart on the same dir lose nothing."""
    with start_standalone(durable=True) as eng:
        with eng.node_client(0) as r:
            assert r.config_get("appendfsync") == {"appendfsync": "always"}
            for i in range(200):
                r.execute_command("JSON.SET", f"doc{i}", "$", json.dumps({"i": i}))
        eng.kill(0)
        assert not _answers(eng.ports[0])
        eng.restart(0)
        with eng.node_client(0) as r:
            assert r.dbsize() == 200
            assert json.loads(r.execute_command("JSON.GET", "doc199", "$")) == [{"i": 199}]
        with pytest.raises(EngineError, match="still running"):
            eng.restart(0)


def test_flushall_empties_with_sync_and_the_servers_never_flush_lazily() -> None:
    with start_standalone() as eng:
        with eng.node_client(0) as r:
            assert r.config_get("lazyfree-lazy-user-flush") == {"lazyfree-lazy-user-flush": "no"}
            r.execute_command("JSON.SET", "doc", "$", "[1]")
        eng.flushall()
        with eng.node_client(0) as r:
            assert r.dbsize() == 0


# --------------------------------------------------------------------------
# cluster
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Engine]:
    with start_cluster(3) as eng:
        yield eng
    assert not eng.root.exists()
    assert not any(_answers(p) for p in eng.ports)


def test_cluster_slots_cover_all_on_three_primaries(cluster: Engine) -> None:
    assert cluster.cluster
    assert len(cluster.ports) == 3
    assert cluster.url == f"redis://127.0.0.1:{cluster.ports[0]}"
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as r:
            info = r.execute_command("CLUSTER", "INFO")
            assert "cluster_state:ok" in info
            assert "cluster_known_nodes:3" in info
            assert "cluster_slots_assigned:16384" in info
            covered = 0
            owners = set()
            for start, end, primary, *replicas in r.execute_command("CLUSTER", "SLOTS"):
                covered += end - start + 1
                owners.add(primary[1])
                assert replicas == []
            assert covered == 16384
            assert owners == set(cluster.ports)


def test_cluster_client_spreads_keys_and_json_works(cluster: Engine) -> None:
    rc = RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        # one hash tag per primary
        by_port: dict[int, str] = {}
        for i in range(1000):
            key = f"{{tag{i}}}:k"
            by_port.setdefault(rc.get_node_from_key(key).port, key)
            if len(by_port) == 3:
                break
        assert set(by_port) == set(cluster.ports)
        for port, key in by_port.items():
            assert rc.set(key, str(port))
            assert rc.get(key) == str(port)
            with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as direct:
                assert direct.get(key) == str(port)  # really stored on that node
            doc = {"port": port, "items": [1, 2]}
            jkey = key + ":json"
            assert rc.execute_command("JSON.SET", jkey, "$", json.dumps(doc))
            assert json.loads(rc.execute_command("JSON.GET", jkey, "$")) == [doc]
        # Note: rc.json() installs JSON response callbacks on rc itself, after
        # which rc.execute_command("JSON.GET", ...) returns parsed objects.
        for port, key in by_port.items():
            assert rc.json().get(key + ":json", "$.port") == [port]
    finally:
        rc.close()


def test_cluster_with_replicas_fails_over_when_a_primary_is_killed() -> None:
    """One replica per primary; kill -9 a primary and its replica takes over its slots,
    with the data it had replicated (WAIT makes sure it had)."""
    with start_cluster(3, replicas=1) as eng:
        assert len(eng.ports) == 6
        assert [eng.role(i) for i in range(6)] == ["master"] * 3 + ["slave"] * 3
        assert [eng.primary_of(i) for i in range(3, 6)] == [0, 1, 2]
        assert eng.replicas_of(1) == [4]
        rc = RedisCluster.from_url(eng.url, socket_timeout=1.0)
        try:
            on_node1 = [
                k
                for k in (f"{{t{i}}}" for i in range(300))
                if rc.get_node_from_key(k).port == eng.ports[1]
            ]
            assert on_node1
            for key in on_node1:
                rc.execute_command("JSON.SET", key, "$", json.dumps({"k": key}))
            with eng.node_client(1) as primary:
                assert primary.execute_command("WAIT", 1, 5000) == 1
            eng.kill(1)
            assert eng.wait_for_failover(1) == 4
            assert eng.role(4) == "master"
            rc.nodes_manager.initialize()
            for key in on_node1:
                assert json.loads(rc.execute_command("JSON.GET", key, "$")) == [{"k": key}]
                rc.execute_command("JSON.SET", key, "$.after", "1")  # writable again
            eng.restart(1)  # the old primary comes back as a replica of the new one
            engine_mod.wait_until(
                lambda: eng.primary_of(1) == 4, timeout=20, what="node 1 to rejoin as replica"
            )
        finally:
            rc.close()


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def test_cli_run_passes_url_and_exit_code() -> None:
    proc = _cli("run", "--", sys.executable, "-c", CHILD, "7", env=_cli_env())
    assert proc.returncode == 7, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["url"].startswith("redis://127.0.0.1:")
    assert seen["cluster"] == "false"
    assert seen["pong"] is True
    assert seen["servers"] == 1
    assert not _answers(_port(seen["url"]))  # stopped after the child exited


def test_cli_run_cluster() -> None:
    proc = _cli("run", "--cluster", "--", sys.executable, "-c", CHILD, "0", env=_cli_env())
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["cluster"] == "true"
    assert seen["servers"] == 3
    assert not _answers(_port(seen["url"]))


def test_cli_run_with_preset_url_starts_nothing() -> None:
    preset = "redis://127.0.0.1:1/0"
    proc = _cli("run", "--", sys.executable, "-c", CHILD, "3", env=_cli_env(REDIS_URL=preset))
    assert proc.returncode == 3, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["url"] == preset
    assert seen["cluster"] is None  # environment passed through untouched
    assert seen["servers"] == 0


def test_cli_serve_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.engine", "serve"],
        cwd=REPO,
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("redis://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        with redis.Redis.from_url(url) as r:
            assert r.ping()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not _answers(_port(url))
    finally:
        _reap(proc)


def test_servers_die_with_killed_parent() -> None:
    script = textwrap.dedent(
        """
        import sys
        from devtools.engine import start_standalone
        eng = start_standalone()
        print(eng.url, eng.root, flush=True)
        sys.stdin.read()  # block until killed
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=_cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    root = None
    try:
        assert proc.stdout is not None
        url, root = proc.stdout.readline().split()
        assert _answers(_port(url))
        proc.kill()  # no atexit, no cleanup: only PDEATHSIG can save us
        proc.wait()
        assert _wait_until_dead(_port(url))
    finally:
        _reap(proc)
        if root:
            shutil.rmtree(root, ignore_errors=True)


def test_engine_started_from_worker_thread_outlives_the_thread() -> None:
    # PDEATHSIG is per thread: servers must not die when a worker thread ends.
    box: list[Engine] = []
    worker = threading.Thread(target=lambda: box.append(start_standalone()))
    worker.start()
    worker.join()
    (eng,) = box
    try:
        # If the server had been bound to the dead thread, it would be SIGKILLed
        # as soon as the thread exited; a round trip proves it is alive.
        with redis.Redis.from_url(eng.url) as r:
            assert r.set("alive", "1")
            assert r.get("alive") == b"1"
        assert all(n.proc.poll() is None for n in eng._nodes)
    finally:
        eng.stop()
    assert not _answers(eng.ports[0])


def test_the_suites_engines_load_the_module_json_module_names(client: Any, mode: str) -> None:
    """A run headed "valkey-json" really ran on valkey-json: every node of the engines
    the fixtures share has loaded the file that JSON_MODULE selects."""
    expected = str(engine_mod.find_json_module())
    nodes = client.get_primaries() if mode == "cluster" else [None]
    for node in nodes:
        target = client if node is None else client.get_redis_connection(node)
        paths = {
            (
                m[b"path"]
                if isinstance(m, dict)
                else dict(zip(m[::2], m[1::2], strict=True))[b"path"]
            )
            for m in target.execute_command("MODULE", "LIST")
        }
        assert expected.encode() in paths
