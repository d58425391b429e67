"""The repair function (functions/history_repair): operator commands as Lambda runs them.

SQS from moto, the real engines for the store; the handler is imported as Lambda would.
"""

from __future__ import annotations

import importlib
import json
import uuid
from typing import Any

import pytest

from devtools.lambda_context import FakeLambdaContext, load_module
from tests.test_upgrade import document, load
from watch_history import runtime
from watch_history.codec import LAYOUT
from watch_history.store import HistoryStore

REPAIR = "history_repair"


@pytest.fixture(scope="module")
def app() -> Any:
    return load_module(REPAIR)


@pytest.fixture
def repair(app: Any) -> Any:
    """Invoke the handler as Lambda would: (event, context) -> answer."""
    return lambda event: app.lambda_handler(
        event, FakeLambdaContext("history-repair", timeout_seconds=900)
    )


def test_each_action_is_a_command_with_main(app: Any) -> None:
    """An action is one entry: a module of the layer with main(argv) -> int."""
    assert "replay" in app.ACTIONS
    for module in app.ACTIONS.values():
        assert callable(importlib.import_module(module).main)


def test_replay_dry_run_through_the_function(
    repair: Any, store: HistoryStore, sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.set_store(store)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "history-repair")
    url = sqs.create_queue(QueueName="quarantine-repair")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="not json")
    args = ["quarantine", "--queue-url", url, "--wait-seconds", "0", "--dry-run"]

    result = repair({"action": "replay", "args": args})

    assert result["exitCode"] == 1  # the unreadable message is left for a person
    assert result["output"]["dry_run"] is True
    assert (result["output"]["messages"], result["output"]["unreadable"]) == (1, 1)
    assert json.dumps(result)  # the answer sam remote invoke prints


def test_bad_requests_are_answers_not_crashes(repair: Any) -> None:
    unknown = repair({"action": "reboot"})
    assert unknown["exitCode"] == 2
    assert "unknown action 'reboot'" in unknown["stderr"][0]
    bad_args = repair({"action": "replay", "args": "quarantine"})
    assert (bad_args["exitCode"], bad_args["stderr"]) == (2, ["args: a list of strings"])
    usage = repair({"action": "replay", "args": ["quarantine"]})
    assert usage["exitCode"] == 2
    assert any("--queue-url" in line for line in usage["stderr"])


def test_upgrade_through_the_function(
    repair: Any, make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage upgrade runs where MemoryDB is reachable: the function's answer carries
    the command's counts, and a dry run leaves the documents as they were."""
    store = make_store(key_prefix=f"r{uuid.uuid4().hex[:10]}:")
    runtime.set_store(store)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "history-repair")
    keys = load(store, 1)
    before = {key: store.client.dump(key) for key in keys.values()}

    dry = repair({"action": "upgrade", "args": ["--dry-run"]})
    assert dry["exitCode"] == 0, dry
    assert {key: store.client.dump(key) for key in keys.values()} == before

    done = repair({"action": "upgrade", "args": []})
    assert done["exitCode"] == 0, done
    assert json.dumps(done)
    assert all(document(store, key)["v"] == LAYOUT for key in keys.values())
