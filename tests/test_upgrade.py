"""Upgrading stored documents to the current layout: ``HistoryStore.upgrade_layout`` and
the operator command ``python -m watch_history.upgrade``, standalone and cluster.

The documents are the committed fixtures (tests/fixtures/layouts/, written by this
code's store for layout 2 and per codec.py for layout 1: tests/fixtures/make_layouts.py).
Every assertion holds for any current layout (codec.LAYOUT): what reads answer does not
change, the document says it is in the current layout, a second run changes nothing.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from watch_history import upgrade
from watch_history.codec import LAYOUT, asset_key
from watch_history.connection import ClientType
from watch_history.models import HistoryQuery, ProgressUpdate, Status
from watch_history.settings import get_settings
from watch_history.store import HistoryStore, UpgradeOutcome
from watch_history.upgrade import Counts, RateLimiter, UpgradeRun, UpgradeState

FIXTURES = Path(__file__).parent / "fixtures" / "layouts"
LUA = Path(__file__).parents[1] / "shared" / "watch_history" / "lua"


def fixture_documents(layout: int) -> dict[str, dict[str, Any]]:
    data = json.loads((FIXTURES / f"v{layout}.json").read_text())
    assert data["layout"] == layout
    documents: dict[str, dict[str, Any]] = data["documents"]
    return documents


OLD_LAYOUTS = (1, 2)


@pytest.fixture
def prefixed(make_store: Callable[..., HistoryStore]) -> HistoryStore:
    """A store with a key prefix of its own: the command scans only this test's keys."""
    return make_store(key_prefix=f"u{uuid.uuid4().hex[:10]}:")


def load(store: HistoryStore, layout: int, suffix: str = "") -> dict[str, str]:
    """The fixture documents of ``layout`` under ``store``'s prefix: profile id -> key."""
    keys = {}
    for profile_id, doc in fixture_documents(layout).items():
        key = store.key(profile_id + suffix)
        store.client.execute_command("JSON.SET", key, "$", json.dumps(doc))
        keys[profile_id + suffix] = key
    return keys


def document(store: HistoryStore, key: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(store.client.execute_command("JSON.GET", key, "$"))[0]
    return found


def dump(client: ClientType, key: str) -> bytes | None:
    return client.dump(key)


def reads(store: HistoryStore, profile_id: str) -> dict[str, Any]:
    """Everything the read API answers about a profile (as JSON-able values)."""
    pages = []
    query = HistoryQuery(limit=3)
    while True:  # every page, through the cursors
        page = store.query(profile_id, query)
        pages.append(page.model_dump(mode="json"))
        if page.next_cursor is None:
            break
        query = HistoryQuery(limit=3, cursor=page.next_cursor)
    everything = store.query(profile_id, HistoryQuery(limit=100)).items
    ids = [item.asset_id for item in everything]
    filtered = {}
    for item in everything:
        if item.sport:
            filtered[f"sport={item.sport}"] = HistoryQuery(sport=item.sport, limit=100)
        if item.show:
            filtered[f"show={item.show}"] = HistoryQuery(show=item.show, season=item.season)
    full = store.changes(profile_id)
    return {
        "pages": pages,
        "continue": store.query(profile_id, HistoryQuery(status=Status.IN_PROGRESS)).model_dump(
            mode="json"
        ),
        "filtered": {
            name: store.query(profile_id, q).model_dump(mode="json")
            for name, q in sorted(filtered.items())
        },
        "by id": {
            a: i.model_dump(mode="json") for a, i in store.get_items(profile_id, ids).items()
        },
        "changes": full.model_dump(mode="json"),
        "since its token": store.changes(profile_id, full.next_token).model_dump(mode="json"),
    }


# --- one document -----------------------------------------------------------------------


def test_python_lua_and_new_documents_agree_on_the_layout(store: HistoryStore, profile_id: str):
    common = (LUA / "common.lua").read_text()
    assert re.search(r"^local LAYOUT = (\d+)$", common, re.MULTILINE)[1] == str(LAYOUT)  # type: ignore[index]
    store.clear(profile_id)  # creates the document
    assert document(store, store.key(profile_id))["v"] == LAYOUT
    assert store.upgrade_layout(store.key(profile_id)) is UpgradeOutcome.CURRENT


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_every_fixture_document_reads_the_same_after_its_upgrade(
    prefixed: HistoryStore, layout: int
):
    keys = load(prefixed, layout)
    before = {p: reads(prefixed, p) for p in keys}
    expected = UpgradeOutcome.UPGRADED if layout < LAYOUT else UpgradeOutcome.CURRENT
    for key in keys.values():
        assert prefixed.upgrade_layout(key) is expected
        assert document(prefixed, key)["v"] == LAYOUT
    assert {p: reads(prefixed, p) for p in keys} == before
    dumps = {key: dump(prefixed.client, key) for key in keys.values()}
    for key in keys.values():  # a second run changes nothing
        assert prefixed.upgrade_layout(key) is UpgradeOutcome.CURRENT
    assert {key: dump(prefixed.client, key) for key in keys.values()} == dumps


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_writes_after_an_upgrade_do_what_they_do_on_the_old_document(
    prefixed: HistoryStore, layout: int
):
    """The same writes on an upgraded copy and on an old copy read the same after."""
    old = load(prefixed, layout, "-old")
    new = load(prefixed, layout, "-new")
    for key in new.values():
        prefixed.upgrade_layout(key)
    for profile in fixture_documents(layout):
        a, b = f"{profile}-old", f"{profile}-new"
        now = datetime.now(UTC)
        for pid in (a, b):
            items = prefixed.query(pid, HistoryQuery(limit=100)).items
            if items:
                prefixed.remove(pid, [items[-1].asset_id])
            prefixed.record_batch(_updates(pid, items, now))
        assert _without_tokens(reads(prefixed, a)) == _without_tokens(reads(prefixed, b))
    assert all(document(prefixed, key)["v"] == LAYOUT for key in old.values())


def _updates(profile_id: str, items: list[Any], now: datetime) -> list[ProgressUpdate]:
    out = [
        ProgressUpdate.model_validate(
            {
                "profileId": profile_id,
                "assetId": "new-title",
                "position": 12,
                "duration": 1200,
                "eventTime": now.isoformat(),
                "eventType": "heartbeat",
                "deviceId": "tv-upgrade",
                "asset": {"type": "movie", "title": "New title"},
            }
        )
    ]
    if len(items) > 1:  # an older item resumed
        out.append(
            ProgressUpdate.model_validate(
                {
                    "profileId": profile_id,
                    "assetId": items[1].asset_id,
                    "position": 30,
                    "eventTime": now.isoformat(),
                    "eventType": "heartbeat",
                }
            )
        )
    return out


def _without_tokens(answer: Any) -> Any:
    """Tokens and cursors name their profile, and writes take change stamps from the
    server's clock: they differ between two copies of one history."""
    if isinstance(answer, dict):
        return {
            k: _without_tokens(v)
            for k, v in answer.items()
            if k not in ("next_token", "next_cursor")
        }
    if isinstance(answer, list):
        return [_without_tokens(v) for v in answer]
    return answer


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_a_dry_run_changes_nothing(prefixed: HistoryStore, layout: int):
    keys = load(prefixed, layout)
    dumps = {key: dump(prefixed.client, key) for key in keys.values()}
    expected = UpgradeOutcome.UPGRADED if layout < LAYOUT else UpgradeOutcome.CURRENT
    for key in keys.values():
        assert prefixed.upgrade_layout(key, dry_run=True) is expected
    assert {key: dump(prefixed.client, key) for key in keys.values()} == dumps


def plant_others(store: HistoryStore) -> dict[str, str]:
    """Keys the upgrade must leave alone, by what they are: name -> key."""
    prefix = store.settings.key_prefix
    client = store.client
    keys = {
        "string": f"{prefix}{{str-1}}",
        "hash": f"{prefix}{{hash-1}}",
        "json array": f"{prefix}{{arr-1}}",
        "json without a history": f"{prefix}{{obj-1}}",
        "newer layout": f"{prefix}{{newer-1}}",
        "another shape": f"{prefix}settings",
        "another prefix": f"x{prefix}{{p}}",
        "an asset record": asset_key(prefix, "asset-1", "01AAAAAAA"),
    }
    client.set(keys["string"], "x")
    client.hset(keys["hash"], "v", "1")
    client.execute_command("JSON.SET", keys["json array"], "$", "[1,2]")
    client.execute_command("JSON.SET", keys["json without a history"], "$", '{"v":1}')
    client.execute_command(
        "JSON.SET", keys["newer layout"], "$", json.dumps({"v": LAYOUT + 1, "h": []})
    )
    client.execute_command("JSON.SET", keys["another shape"], "$", '{"v":1,"h":[]}')
    client.execute_command("JSON.SET", keys["another prefix"], "$", '{"v":1,"h":[]}')
    client.set(keys["an asset record"], "match;A title")
    return keys


def test_other_keys_are_left_alone(prefixed: HistoryStore):
    others = plant_others(prefixed)
    dumps = {k: dump(prefixed.client, k) for k in others.values()}
    outcomes = {name: prefixed.upgrade_layout(key) for name, key in others.items()}
    assert outcomes == {
        **{name: UpgradeOutcome.NOT_HISTORY for name in others},
        "newer layout": UpgradeOutcome.NEWER,
    }
    assert prefixed.upgrade_layout(prefixed.key("no-such-profile")) is UpgradeOutcome.NOT_HISTORY
    assert {k: dump(prefixed.client, k) for k in others.values()} == dumps


# --- the command ------------------------------------------------------------------------


def expected_counts(layouts: tuple[int, ...], others: int, newer: int) -> Counts:
    """Counts of a full run over the fixtures of ``layouts`` and planted keys under the
    prefix (``others`` not a history, ``newer`` of a newer layout)."""
    counts = Counts()
    for layout in layouts:
        n = len(fixture_documents(layout))
        counts.scanned += n
        if layout < LAYOUT:
            counts.upgraded += n
        else:
            counts.current += n
    counts.scanned += others + newer
    counts.skipped += others + newer
    return counts


def planted(store: HistoryStore) -> tuple[dict[str, str], int, int]:
    """The other keys, and how many of them the command scans (a profile's key: the
    prefix, then '{') as not a history and as a newer layout."""
    others = plant_others(store)
    unscanned = ("another prefix", "another shape", "an asset record")
    return others, len(others) - len(unscanned) - 1, 1  # "newer" apart


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, prefixed: HistoryStore, mode: str) -> Iterator[None]:
    """The command's environment (as a Lambda's): this test's server and prefix."""
    monkeypatch.setenv("REDIS_URL", prefixed.settings.redis_url)
    monkeypatch.setenv("REDIS_CLUSTER", "true" if mode == "cluster" else "false")
    monkeypatch.setenv("KEY_PREFIX", prefixed.settings.key_prefix)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = upgrade.main(list(argv))
    out = capsys.readouterr()
    lines = out.out.splitlines()
    return code, json.loads(lines[0]), out.err


def test_the_command_upgrades_every_document_and_counts(
    prefixed: HistoryStore, env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    keys = {**load(prefixed, 1), **load(prefixed, 2, "-2")}
    others, not_history, newer = planted(prefixed)
    other_dumps = {k: dump(prefixed.client, k) for k in others.values()}
    before = {p: reads(prefixed, p) for p in keys}

    dumps = {k: dump(prefixed.client, k) for k in keys.values()}
    code, dry, _ = run_main(capsys, "--dry-run", "--count", "3")
    expected = expected_counts(OLD_LAYOUTS, not_history, newer)
    assert code == 0
    assert dry == {**vars_of(expected), "dry_run": True, "complete": True}
    assert {k: dump(prefixed.client, k) for k in keys.values()} == dumps

    state = tmp_path / "state.json"
    code, done, _ = run_main(capsys, "--count", "3", "--state", str(state))
    assert code == 0
    assert done == {**vars_of(expected), "dry_run": False, "complete": True}
    assert all(document(prefixed, k)["v"] == LAYOUT for k in keys.values())
    assert {p: reads(prefixed, p) for p in keys} == before
    assert {k: dump(prefixed.client, k) for k in others.values()} == other_dumps

    # the same state again: every node is done, nothing is scanned twice
    code, again, _ = run_main(capsys, "--state", str(state))
    assert (code, again) == (0, done)
    # a new run: every document is current now
    code, fresh, _ = run_main(capsys)
    assert fresh["upgraded"] == 0
    assert fresh["current"] == expected.upgraded + expected.current


def vars_of(counts: Counts) -> dict[str, int]:
    return {
        "scanned": counts.scanned,
        "upgraded": counts.upgraded,
        "current": counts.current,
        "skipped": counts.skipped,
        "failed": counts.failed,
    }


def test_keys_that_fail_are_kept_and_retried_by_the_next_run(
    prefixed: HistoryStore, env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    """The server refuses writes (out of memory): the old documents fail, the run says
    so (exit 1, not complete) and keeps them in its state; the next run retries them."""
    keys = load(prefixed, 1)
    state = tmp_path / "state.json"
    nodes = [node for _, node in upgrade.primaries(prefixed.client)]
    for node in nodes:
        node.config_set("maxmemory", 1)
    try:
        code, first, _ = run_main(capsys, "--state", str(state))
    finally:
        for node in nodes:
            node.config_set("maxmemory", 0)
    n = len(keys)
    assert code == 1
    assert first == {**vars_of(Counts(scanned=n, failed=n)), "dry_run": False, "complete": False}
    assert sorted(json.loads(state.read_text())["failed_keys"]) == sorted(keys.values())
    assert all(document(prefixed, k)["v"] == 1 for k in keys.values())

    code, second, _ = run_main(capsys, "--state", str(state))
    assert code == 0
    assert second == {**vars_of(Counts(scanned=n, upgraded=n)), "dry_run": False, "complete": True}
    assert all(document(prefixed, k)["v"] == LAYOUT for k in keys.values())


class Stop(Exception):
    pass


def test_a_run_stopped_part_way_resumes_from_its_state(prefixed: HistoryStore, tmp_path: Path):
    keys = {**load(prefixed, 1), **load(prefixed, 1, "-b"), **load(prefixed, 2, "-2")}
    _, not_history, newer = planted(prefixed)
    path = tmp_path / "state.json"
    target, prefix = "test", prefixed.settings.key_prefix

    def stop_after_a_page_with_keys(keys: int) -> None:
        # (a page can hold none of this test's keys: MATCH filters after the scan)
        if keys:
            raise Stop

    first = UpgradeRun(
        prefixed,
        UpgradeState.load_or_new(path, target, prefix, False),
        scan_count=2,
        progress=stop_after_a_page_with_keys,
    )
    with pytest.raises(Stop):
        first.run()
    saved = UpgradeState.load_or_new(path, target, prefix, False)
    assert 0 < saved.counts.scanned < len(keys) + not_history + newer
    upgraded_so_far = sum(document(prefixed, k)["v"] == LAYOUT for k in keys.values())
    assert upgraded_so_far < len(keys)

    counts = UpgradeRun(prefixed, saved, scan_count=2).run()
    expected = expected_counts((1, 1, 2), not_history, newer)
    assert counts == expected
    assert all(document(prefixed, k)["v"] == LAYOUT for k in keys.values())
    assert UpgradeState.load_or_new(path, target, prefix, False).counts == expected


def test_a_state_of_another_run_is_refused(
    prefixed: HistoryStore, env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    state = tmp_path / "state.json"
    assert upgrade.main(["--dry-run", "--state", str(state)]) == 0
    capsys.readouterr()
    assert upgrade.main(["--state", str(state)]) == 2
    err = capsys.readouterr().err
    assert "dry_run=True" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("cluster", [False, True])
def test_an_unreachable_server_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cluster: bool
):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{port}")
    monkeypatch.setenv("REDIS_CLUSTER", "true" if cluster else "false")
    monkeypatch.setenv("REDIS_CONNECT_TIMEOUT", "0.5")
    get_settings.cache_clear()
    try:
        code = upgrade.main([])
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    assert code == 2
    assert out.out == ""
    assert out.err.startswith("watch_history.upgrade: cannot go on with 127.0.0.1:")
    assert out.err.count("\n") == 1
    assert "Traceback" not in out.err


# --- the rate limit ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_rate_limiter_paces_keys():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limiter.acquire(5)  # 5 keys: half a second each batch at 10 keys/s
    assert clock.slept == [0.5, 0.5, 0.5]
    clock.now += 10  # idle time is not saved up for a burst later
    limiter.acquire(5)
    limiter.acquire(5)
    assert clock.slept[-1] == 0.5
    unlimited = RateLimiter(0, clock=clock, sleep=clock.sleep)
    unlimited.acquire(1_000)
    assert len(clock.slept) == 4


def test_a_run_keeps_to_its_rate(prefixed: HistoryStore):
    keys = load(prefixed, 1)
    clock = FakeClock()
    batches: list[int] = []

    class Recording(RateLimiter):
        def acquire(self, keys: int) -> None:
            batches.append(keys)
            super().acquire(keys)

    rate = 4
    run = UpgradeRun(
        prefixed,
        UpgradeState("test", prefixed.settings.key_prefix, False),
        scan_count=2,
        limiter=Recording(rate, clock=clock, sleep=clock.sleep),
    )
    counts = run.run()
    assert counts.scanned == sum(batches) == len(keys)
    assert len(batches) > 1
    # every batch waited for the keys before it: all but the last batch's time
    assert clock.now - 100.0 == pytest.approx((len(keys) - batches[-1]) / rate)


def test_wrong_settings_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("REDIS_URL", "http://127.0.0.1:1")
    get_settings.cache_clear()
    try:
        code = upgrade.main(["--dry-run"])
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    assert code == 2
    assert out.out == ""
    assert "REDIS_URL must start with redis://" in out.err
    assert out.err.count("\n") == 1
