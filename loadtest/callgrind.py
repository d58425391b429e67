"""Instructions a ``valkey-server`` executes while a piece of client code runs.

Wall-clock engine CPU on a shared machine moves by tens of percent between passes;
instruction counts under valgrind's callgrind repeat to a fraction of a percent, so
engine work is compared in instructions (``Ir``)::

    with counting_server() as server:              # RedisJSON; or a module path
        server.client.execute_command("JSON.SET", "k", "$", "[]")
        ir = server.count(lambda: server.client.execute_command("JSON.ARRAPPEND", "k", "$", 1))

The server is devtools/engine.py's standalone server (its binary, its JSON module, its
configuration), started under ``valgrind --tool=callgrind`` with instrumentation off:
it starts and loads data at near native speed, and only ``count`` runs instrumented.

**What a count includes.** Collection is on only inside two of the server's functions
(``--toggle-collect``), and everything they call:

- ``readQueryFromClient``: the event loop's read handler, for every read of any client
  connection: the read from the socket, parsing the request (RESP), looking the command
  up, the ACL and cluster checks, the command itself (Lua scripts and module code, e.g.
  the JSON module, included), queueing its reply, and freeing its arguments;
- ``handleClientsWithPendingWrites`` and ``sendReplyToClient``: writing the queued
  replies to the sockets (once per event-loop iteration for all the replies of a
  pipeline, and when a reply did not fit the socket at once).

**What it leaves out**: the event loop's own polling and dispatch (``epoll_wait``,
``aeProcessEvents``), ``beforeSleep``/``afterSleep`` housekeeping and the timers
(``serverCron`` and what it runs: expiry, stats, resizing). Those run per wake-up and by
the wall clock, which valgrind slows ~50x, so counting them would make a count depend on
how long ``fn`` took; they are a few thousand instructions per event-loop iteration, the
same for any command. A count is the server's work for the requests ``fn`` sends, on any
connection (sending nothing else meanwhile is the caller's business).

**Repeatability.** Counts of the same commands on the same data repeat to ~0.1%; a
script's vary more, as Lua's incremental garbage collector runs by the allocation
debt that earlier calls left. The first
calls after a start cost more (lazy initialisation in the server and modules, a script's
first compilation): warm up before counting. Divide by the number of calls for a
per-call figure; a pipeline of many calls spreads the per-read and per-write costs.

valgrind must be installed (``make valgrind`` installs it with apt, or says how).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import redis

from devtools.engine import EngineError, find_module, start_standalone

__all__ = ["CallgrindError", "CountingServer", "counting_server", "valgrind_command"]

COLLECTED_IN: Final = (
    "readQueryFromClient",
    "handleClientsWithPendingWrites",
    "sendReplyToClient",
)
"""The server functions inside which instructions are counted (see the module docstring)."""

_TOTALS: Final = re.compile(rb"^totals:\s*(\d+)", re.MULTILINE)
_CONTROL_TIMEOUT: Final = 60.0  # seconds; callgrind_control answers in well under 1 s


class CallgrindError(EngineError):
    """valgrind is missing, or callgrind did not answer or dump as asked."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CallgrindError(
            f"{name} not found: valgrind is not installed (`make valgrind` installs it with "
            "apt-get as root, or run `sudo apt-get install -y valgrind`)"
        )
    return path


def valgrind_command(out_dir: Path) -> list[str]:
    """The prefix that runs a server under callgrind: instrumentation off until
    ``callgrind_control -i on``, collection only inside ``COLLECTED_IN``, dumps in
    ``out_dir``."""
    return [
        _tool("valgrind"),
        "--tool=callgrind",
        "--instr-atstart=no",
        *(f"--toggle-collect={name}" for name in COLLECTED_IN),
        "--dump-instr=no",
        "--dump-line=no",
        f"--callgrind-out-file={out_dir / 'callgrind.out.%p'}",
    ]


class CountingServer:
    """A standalone server under callgrind; ``count(fn)`` is what it ran during ``fn()``."""

    def __init__(self, client: redis.Redis, url: str, pid: int, out_dir: Path) -> None:
        self.client = client
        self.url = url
        self._pid = pid
        self._out_dir = out_dir
        self._control = _tool("callgrind_control")

    def count(self, fn: Callable[[], object], keep: Path | None = None) -> int:
        """Instructions (Ir) the server ran inside ``COLLECTED_IN`` while ``fn()`` ran.

        Instrumentation goes on and the counters to zero before ``fn``; after it,
        instrumentation goes off and the counters are dumped and read. ``fn``'s replies
        have all arrived when it returns, so its requests are wholly inside the count.
        An exception from ``fn`` propagates (instrumentation is switched off first).
        With ``keep``, the dump is moved there (for ``callgrind_annotate``: the count
        function by function) instead of removed.
        """
        self._call("--instr=on")
        try:
            self._call("--zero")
            fn()
        finally:
            self._call("--instr=off")
        before = set(self._out_dir.glob("callgrind.out.*"))
        self._call("--dump")
        dumps = sorted(set(self._out_dir.glob("callgrind.out.*")) - before)
        if len(dumps) != 1:
            raise CallgrindError(f"callgrind wrote {len(dumps)} dumps, expected one")
        text = dumps[0].read_bytes()
        if keep is None:
            dumps[0].unlink()
        else:
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(dumps[0], keep)
        match = _TOTALS.search(text)
        if match is None:
            raise CallgrindError(f"no totals line in the callgrind dump {dumps[0].name}")
        return int(match.group(1))

    def _call(self, option: str) -> None:
        try:
            done = subprocess.run(
                [self._control, option, str(self._pid)],
                capture_output=True,
                text=True,
                timeout=_CONTROL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CallgrindError(f"callgrind_control {option}: no answer in time") from exc
        if done.returncode != 0 or "OK" not in done.stdout:
            raise CallgrindError(
                f"callgrind_control {option} {self._pid} failed: {done.stdout}{done.stderr}"
            )


@contextmanager
def counting_server(json_module: str | None = None) -> Iterator[CountingServer]:
    """A standalone valkey-server with the launcher's binary and JSON module (``None``:
    RedisJSON, else a module path, like ``JSON_MODULE``), under callgrind, collection off
    until ``count`` asks. Stopped (and its dumps removed) on exit."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out_dir = Path(tmp)
        prefix = valgrind_command(out_dir)
        _tool("callgrind_control")  # fail before starting anything
        # None here means RedisJSON, not $JSON_MODULE: the caller names the engine.
        module = json_module if json_module is not None else find_module("rejson.so")
        with start_standalone(json_module=module, command_prefix=prefix) as engine:
            client = redis.Redis.from_url(engine.url, decode_responses=False)
            try:
                yield CountingServer(client, engine.url, engine.pids[0], out_dir)
            finally:
                client.close()
