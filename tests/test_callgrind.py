"""loadtest/callgrind.py counts what the server runs for the client's requests, and only that.

A real valkey-server under valgrind (``make valgrind`` installs it; ``make test`` does
first), on the JSON module of this run. Each count takes about a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from loadtest.callgrind import CountingServer, counting_server

pytestmark = pytest.mark.own_servers


@pytest.fixture(scope="module")
def server() -> Iterator[CountingServer]:
    with counting_server(os.environ.get("JSON_MODULE") or None) as counting:
        counting.client.execute_command("JSON.SET", "doc", "$", "[]")
        counting.count(lambda: _appends(counting, 20))  # warm up: first calls cost more
        yield counting


def _appends(server: CountingServer, n: int) -> None:
    pipe = server.client.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("JSON.ARRAPPEND", "doc", "$", i)
    pipe.execute()


def test_an_idle_server_counts_next_to_nothing(server: CountingServer) -> None:
    """Timers and the event loop's wake-ups are not counted, however long fn takes."""
    assert server.count(lambda: None) < 1_000


def test_the_count_grows_with_the_commands_sent(server: CountingServer) -> None:
    one = server.count(lambda: _appends(server, 50))
    two = server.count(lambda: _appends(server, 100))
    assert 50 * 5_000 < one < 50 * 100_000  # an append is thousands of instructions
    assert 1.8 < two / one < 2.2


def test_a_script_s_work_is_inside_the_count(server: CountingServer) -> None:
    client = server.client
    empty = client.script_load("return 1")
    busy = client.script_load("local s = 0 for i = 1, 10000 do s = s + i end return s")
    client.evalsha(empty, 0)
    client.evalsha(busy, 0)
    bare = server.count(lambda: client.evalsha(empty, 0))
    loop = server.count(lambda: client.evalsha(busy, 0))
    assert loop - bare > 10_000 * 3  # the loop's instructions, a few per iteration


def test_fn_failing_propagates_and_counting_goes_on(server: CountingServer) -> None:
    def fails() -> None:
        _appends(server, 5)
        raise LookupError("from fn")

    with pytest.raises(LookupError, match="from fn"):
        server.count(fails)
    assert server.count(lambda: _appends(server, 5)) > 0
