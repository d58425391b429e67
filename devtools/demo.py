"""``make demo``: the service's main job on a laptop, through the real handlers.

``python -m devtools.demo [--profiles N] [--seed S]`` with REDIS_URL (and REDIS_CLUSTER)
set; ``make demo`` starts the embedded engine for it. No AWS account: the quarantine
queue is moto's SQS (``mock_aws``).

1. Earlier history: a couple of weeks of viewing for every profile, written straight
   through ``HistoryStore.record_batch`` (the state the stream finds).
2. The stream: a window of progress heartbeats (devtools/heartbeats.py: live cricket
   and football, replays, highlights, episodes, movies; duplicates, late deliveries,
   malformed records) sent through the recorder Lambda in Kinesis-shaped batches.
   Then: what became of every record, and the stored state compared with the newest
   update of every (profile, asset).
3. The HTTP APIs, as API Gateway (HTTP API, payload 2.0) events through the reader and
   writer Lambdas: continue watching for one profile as a rail, a sport + series +
   team lookup, a show + season lookup, a TV app's first sync (the changes feed),
   marking an episode watched, removing a title and showing it stays gone after a late
   heartbeat, the app's next sync (the change and the removal only), an offline
   catch-up batch (an outcome per update), authorization, ETag.

Every "check" line is something that must hold; the exit status is 1 if one did not.
The demo's keys get a prefix of their own (removed at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import urlencode

import boto3
from moto import mock_aws

from devtools import heartbeats
from devtools.heartbeats import HeartbeatStream, kinesis_event, kinesis_events, sequence_number
from devtools.lambda_context import (
    FakeLambdaContext,
    Handler,
    create_client,
    env_defaults,
    load_handler,
)
from devtools.serve import api_event
from watch_history import runtime
from watch_history.connection import ClientType
from watch_history.models import MAX_ASSET_IDS, HistoryItem, ProgressUpdate, epoch_ms
from watch_history.settings import Settings
from watch_history.store import BatchResult, HistoryStore

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["CountingStore", "main", "rail_lines"]

RECORDER: Final = "history_recorder"
READER: Final = "history_reader"
WRITER: Final = "history_writer"
QUEUE_NAME: Final = "history-quarantine"
SHOW: Final = "kingsbridge-station"
MARKED_WATCHED: Final = "kingsbridge-station-s02e03"
REMOVED: Final = "movie-the-last-ferry"


# --------------------------------------------------------------------------------------
# The store, counting what the recorder's writes did
# --------------------------------------------------------------------------------------


class CountingStore(HistoryStore):
    """A ``HistoryStore`` that tallies the outcome of every batch it records
    (``record_batch`` and the recorder's ``record_stream`` both end in the latter)."""

    def __init__(self, client: ClientType, settings: Settings) -> None:
        super().__init__(client, settings)
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record_stream(
        self,
        parts: Iterable[Sequence[tuple[int, ProgressUpdate]]],
        *,
        deadline: float | None = None,
        exact_outcomes: bool = False,
    ) -> BatchResult:
        result = super().record_stream(parts, deadline=deadline, exact_outcomes=exact_outcomes)
        with self._lock:
            self.outcomes.update(outcome.value for outcome in result.outcomes.values())
        return result

    def reset(self) -> None:
        with self._lock:
            self.outcomes.clear()


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """What the demo prints, and its checks."""

    out: TextIO
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def section(self, title: str) -> None:
        self.say()
        self.say(title)
        self.say("-" * len(title))

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        mark = "ok" if ok else "FAILED"
        self.say(f"  check: {name} ... {mark}{f' ({detail})' if detail else ''}")
        return ok

    @property
    def failed(self) -> list[str]:
        return [
            f"{name}{f': {detail}' if detail else ''}" for name, ok, detail in self.checks if not ok
        ]


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _bar(fraction: float, width: int, fancy: bool) -> str:
    full, empty = ("\u2588", "\u2591") if fancy else ("#", "-")
    filled = max(0, min(width, round(fraction * width)))
    return full * filled + empty * (width - filled)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _minutes(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _ago(at: datetime, now: datetime) -> str:
    seconds = (now - at).total_seconds()
    if seconds < 90:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86_400:
        return f"{seconds // 3600:.0f} h ago"
    days = seconds // 86_400
    return "yesterday" if days == 1 else f"{days:.0f} days ago"


def _team(team: str) -> str:
    return team.upper() if len(team) <= 4 else team.replace("-", " ").title()


def _label(item: Mapping[str, Any]) -> str:
    """S2 E3 for an episode, the teams for a match."""
    if item.get("season") is not None and item.get("episode") is not None:
        return f"S{item['season']} E{item['episode']}"
    if item.get("teams"):
        return " v ".join(_team(t) for t in item["teams"])
    return str(item.get("assetType") or "")


def _title(item: Mapping[str, Any], width: int) -> str:
    title = str(item.get("title") or item["assetId"])
    return title if len(title) <= width else title[: width - 3] + "..."


def rail_lines(
    items: Iterable[Mapping[str, Any]], *, now: datetime | None = None, fancy: bool = True
) -> list[str]:
    """A "continue watching" rail as text: title, S/E or teams, progress, time ago."""
    now = now or datetime.now(UTC)
    lines = []
    for k, item in enumerate(items, start=1):
        position = float(item.get("position") or 0)
        duration = item.get("duration")
        if item.get("completed"):
            progress = f"{_bar(1.0, 20, fancy)} watched"
        elif duration:
            fraction = float(item.get("progress") or position / float(duration))
            left = _minutes(float(duration) - position)
            progress = f"{_bar(fraction, 20, fancy)} {fraction:4.0%}  {left} left"
        else:
            progress = f"{'LIVE':<20} {_clock(position)} in"
        at = datetime.fromisoformat(str(item["lastWatchedAt"]))
        lines.append(
            f"  {k:>2}. {_title(item, 44):<44}  {_label(item):<18}  {progress:<42}  {_ago(at, now)}"
        )
    return lines


def _fancy(out: TextIO) -> bool:
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        "\u2588\u2591".encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return False
    return True


# --------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Api:
    """The reader and writer behind API Gateway events."""

    reader: Handler
    writer: Handler
    report: Report
    timings: list[float] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, Any, dict[str, str]]:
        target = path + (f"?{urlencode(query)}" if query else "")
        all_headers = [("accept", "application/json"), ("user-agent", "demo-app/1.0"), *headers]
        if body is not None:
            all_headers.append(("content-type", "application/json"))
        event = api_event(
            method,
            target,
            headers=all_headers,
            body=json.dumps(body) if body is not None else None,
            claims=claims,
        )
        if method == "GET":
            handler, name = self.reader, "history-reader"
        else:
            handler, name = self.writer, "history-writer"
        started = time.perf_counter()
        response = handler(event, FakeLambdaContext(name))
        ms = (time.perf_counter() - started) * 1000
        self.timings.append(ms)
        status = int(response["statusCode"])
        raw = response.get("body") or ""
        payload = json.loads(raw) if raw else None
        self.report.say(f"  {method:<6} {target}  ->  {status}  ({ms:.1f} ms)")
        return (
            status,
            payload,
            {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()},
        )


class Recorder:
    """The recorder Lambda fed Kinesis events; counts and timings."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.latencies: list[float] = []
        self.failed: list[str] = []

    def invoke(self, event: dict[str, Any]) -> list[str]:
        started = time.perf_counter()
        result = self.handler(event, FakeLambdaContext("history-recorder", timeout_seconds=60))
        self.latencies.append(time.perf_counter() - started)
        failed = [str(f["itemIdentifier"]) for f in result.get("batchItemFailures", [])]
        self.failed.extend(failed)
        return failed


def _drain(sqs: SQSClient, queue_url: str) -> list[dict[str, Any]]:
    """Every message on the queue, bodies parsed (JSON or not)."""
    bodies: list[dict[str, Any]] = []
    while True:
        reply = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
        )
        messages = reply.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            try:
                body = json.loads(message["Body"])
            except json.JSONDecodeError:
                body = {"reason": message["Body"]}
            bodies.append(body if isinstance(body, dict) else {"reason": str(body)})


def _seed_history(
    report: Report, store: HistoryStore, stream: HeartbeatStream, items: int, now_ms: int
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    raw = heartbeats.history_updates(
        stream.profiles, items, seed=0, now_ms=now_ms, hero=stream.hero
    )
    updates = [ProgressUpdate.model_validate(u) for u in raw]
    failures = 0
    for begin in range(0, len(updates), 20_000):
        failures += len(store.record_batch(updates[begin : begin + 20_000]).failures)
    seconds = time.perf_counter() - started
    report.timings["earlier history"] = seconds
    report.say(
        f"  {_n(len(updates))} items for {_n(len(stream.profiles))} profiles "
        f"(past 30 days) written with HistoryStore.record_batch in {seconds:.1f} s"
    )
    report.check("earlier history recorded", not failures, f"{failures} failed")
    return raw


def _run_stream(
    report: Report,
    recorder: Recorder,
    store: CountingStore,
    stream: HeartbeatStream,
    batch_size: int,
) -> None:
    counts = stream.counts
    report.say(
        f"  {_n(counts['records'])} records: {_n(counts['updates'])} heartbeats of "
        f"{_n(len(stream.profiles))} profiles, {_n(counts['duplicates'])} delivered twice, "
        f"{_n(counts['late'])} out of order, {counts['malformed']} malformed"
    )
    store.reset()
    started = time.perf_counter()
    events = 0
    for event in kinesis_events(stream.records, batch_size=batch_size):
        recorder.invoke(event)
        events += 1
    seconds = time.perf_counter() - started
    report.timings["recorder"] = seconds
    ms = sorted(x * 1000 for x in recorder.latencies)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    report.say(
        f"  {events} invocations of {batch_size} records in {seconds:.2f} s: "
        f"{_n(counts['records'] / seconds)} records/s; batch latency "
        f"p50 {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms"
    )


def _summarise_records(
    report: Report,
    store: CountingStore,
    recorder: Recorder,
    stream: HeartbeatStream,
    quarantined: list[dict[str, Any]],
) -> None:
    outcomes = store.outcomes
    report.say(f"  applied      {_n(outcomes['applied']):>8}   newer than what was stored")
    report.say(
        f"  stale        {_n(outcomes['stale']):>8}   "
        "not newer (second deliveries, late ones): nothing changed"
    )
    report.say(f"  ignored      {_n(outcomes['ignored']):>8}   at or before a removal")
    report.say(
        f"  quarantined  {_n(len(quarantined)):>8}   on the quarantine queue (SQS), with why:"
    )
    defects = {
        sequence_number(i): r.defect for i, r in enumerate(stream.records) if r.defect is not None
    }
    reasons: Counter[tuple[str, str]] = Counter()
    for body in quarantined:
        kind = defects.get(str(body.get("sequenceNumber")), "unexpected")
        reason = str(body.get("reason", "?"))
        reasons[(kind, reason if len(reason) <= 96 else reason[:93] + "...")] += 1
    for (kind, reason), count in sorted(reasons.items()):
        report.say(f"      {count} x {kind:<19} {reason}")
    report.say(f"  failed       {_n(len(recorder.failed)):>8}   reported to Lambda for retry")
    report.check("no batch item failures", not recorder.failed, f"{len(recorder.failed)} failed")
    got = {str(body.get("sequenceNumber")) for body in quarantined}
    report.check(
        "every malformed record quarantined, and nothing else",
        got == set(defects) and len(quarantined) == len(defects),
        f"{len(got & set(defects))} of {len(defects)} malformed; {len(got - set(defects))} others",
    )
    total = sum(outcomes.values()) + len(quarantined) + len(recorder.failed)
    report.check(
        "every record accounted for",
        total == stream.counts["records"],
        f"{_n(total)} of {_n(stream.counts['records'])}",
    )


def _check_state(
    report: Report,
    store: HistoryStore,
    stream: HeartbeatStream,
    earlier: Sequence[Mapping[str, Any]],
) -> None:
    """The stored item of every (profile, asset) is the newest update of it."""
    started = time.perf_counter()
    newest: dict[str, dict[str, tuple[int, float]]] = {}
    streamed = (r.payload for r in stream.records if r.defect is None)
    for update in (*earlier, *streamed):
        assert isinstance(update, Mapping)
        assets = newest.setdefault(update["profileId"], {})
        at = heartbeats.event_ms(update)
        known = assets.get(update["assetId"])
        if known is None or at > known[0]:
            assets[update["assetId"]] = (at, float(update["position"]))

    def differences(profile_id: str) -> list[str]:
        assets = newest[profile_id]
        ids = list(assets)
        stored: dict[str, HistoryItem] = {}
        for begin in range(0, len(ids), MAX_ASSET_IDS):
            stored.update(store.get_items(profile_id, ids[begin : begin + MAX_ASSET_IDS]))
        wrong = []
        for asset_id, (at, position) in assets.items():
            item = stored.get(asset_id)
            if item is None:
                wrong.append(f"{profile_id}/{asset_id} missing")
            elif item.position != position or epoch_ms(item.last_watched_at) != at:
                wrong.append(
                    f"{profile_id}/{asset_id}: stored {item.position} at "
                    f"{epoch_ms(item.last_watched_at)}, newest {position} at {at}"
                )
        return wrong

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="check") as pool:
        wrong = [w for found in pool.map(differences, newest) for w in found]
    items = sum(len(assets) for assets in newest.values())
    seconds = time.perf_counter() - started
    report.timings["state check"] = seconds
    detail = f"{_n(items)} items of {_n(len(newest))} profiles in {seconds:.1f} s"
    if wrong:
        detail += f"; {len(wrong)} differ, e.g. {wrong[0]}"
    report.check("stored state = newest update of each (profile, asset)", not wrong, detail)


def _print_items(report: Report, items: list[dict[str, Any]], fancy: bool) -> None:
    if not items:
        report.say("      (none)")
    for line in rail_lines(items, fancy=fancy):
        report.say("    " + line)


def _api_tour(
    report: Report,
    api: Api,
    *,
    recorder: Recorder,
    store: CountingStore,
    hero: str,
    next_index: int,
    claim: str,
) -> None:
    fancy = _fancy(report.out)
    claims = {"sub": f"user-{hero}", claim: hero, "scope": "history:read history:write"}
    base = f"/profiles/{hero}/history"

    report.say(f"Continue watching for {hero}, as the app's home screen asks for it:")
    status, page, headers = api.call(
        "GET",
        base,
        query=[("status", "in_progress"), ("collapse", "show"), ("limit", "10")],
        claims=claims,
    )
    rail = page["items"] if status == 200 else []
    report.say()
    for line in rail_lines(rail, fancy=fancy):
        report.say(line)
    report.say()
    times = [str(i["lastWatchedAt"]) for i in rail]
    report.check(
        "rail: newest first, in progress only, live match on top",
        status == 200
        and len(rail) >= 3
        and times == sorted(times, reverse=True)
        and not any(i.get("completed") for i in rail)
        and rail[0]["assetId"].endswith("csk-v-mi-live"),
        f"HTTP {status}, {len(rail)} items",
    )
    etag = headers.get("etag", "")
    status_again, _, _ = api.call(
        "GET",
        base,
        query=[("status", "in_progress"), ("collapse", "show"), ("limit", "10")],
        claims=claims,
        headers=[("if-none-match", etag)],
    )
    report.check(
        "same request with If-None-Match: 304", status_again == 304, f"HTTP {status_again}"
    )

    report.say()
    report.say("Cricket, IPL 2026, CSK or MI (sport + series + repeated team):")
    status, page, _ = api.call(
        "GET",
        base,
        query=[("sport", "cricket"), ("series", "ipl-2026"), ("team", "csk"), ("team", "mi")],
        claims=claims,
    )
    found = page["items"] if status == 200 else []
    _print_items(report, found, fancy)
    report.check(
        "team lookup: only IPL 2026 cricket with CSK or MI",
        status == 200
        and bool(found)
        and all(
            i.get("sport") == "cricket"
            and i.get("series") == "ipl-2026"
            and {"csk", "mi"} & set(i.get("teams") or ())
            for i in found
        ),
        f"HTTP {status}, {len(found)} items",
    )

    report.say()
    report.say("Kingsbridge Station, season 2 (show + season):")
    status, page, _ = api.call("GET", base, query=[("show", SHOW), ("season", "2")], claims=claims)
    episodes = page["items"] if status == 200 else []
    _print_items(report, episodes, fancy)
    report.check(
        "show lookup: episodes 1-3 of season 2 only",
        status == 200
        and {i.get("episode") for i in episodes} == {1, 2, 3}
        and all(i.get("show") == SHOW and i.get("season") == 2 for i in episodes),
        f"HTTP {status}, {len(episodes)} items",
    )

    report.say()
    report.say("A TV app keeps a copy of the history: its first sync gets everything:")
    status, first, _ = api.call("GET", f"{base}/changes", claims=claims)
    synced = first if status == 200 else {"items": [], "nextToken": ""}
    report.check(
        "first sync: every item, reset, and a token",
        status == 200 and synced["reset"] is True and len(synced["items"]) >= 3,
        f"HTTP {status}, {len(synced['items'])} items",
    )

    report.say()
    report.say(f"Mark {MARKED_WATCHED} as watched (writer, PUT with eventType complete):")
    duration = next((i.get("duration") for i in episodes if i["assetId"] == MARKED_WATCHED), 3000)
    status, item, _ = api.call(
        "PUT", f"{base}/{MARKED_WATCHED}", body={"eventType": "complete"}, claims=claims
    )
    report.check(
        "PUT: 200 with the item, completed, at its stored duration",
        status == 200
        and bool(item)
        and item.get("completed") is True
        and (item.get("position"), item.get("progress")) == (duration, 1.0),
        f"HTTP {status}, position {item.get('position') if item else None}",
    )

    report.say()
    report.say(f"Remove {REMOVED} from the history (writer, DELETE):")
    removed_at = time.time_ns() // 1_000_000
    status, _, _ = api.call("DELETE", f"{base}/{REMOVED}", claims=claims)
    report.check("DELETE: 204", status == 204, f"HTTP {status}")
    status, _, _ = api.call("GET", f"{base}/{REMOVED}", claims=claims)
    report.check("the title is gone: 404", status == 404, f"HTTP {status}")
    late_ms = removed_at - 60_000
    late = {
        "profileId": hero,
        "assetId": REMOVED,
        "position": 3120.0,
        "duration": 6420.0,
        "eventTime": late_ms,
        "eventType": "heartbeat",
        "deviceId": "tv-00hero0001",
        "asset": {"type": "movie", "title": "The Last Ferry"},
    }
    report.say(
        "  a heartbeat from a minute before the removal arrives late on the stream "
        "(newer than the stored item, older than the removal):"
    )
    store.reset()
    failed = recorder.invoke(kinesis_event([late], first_index=next_index))
    report.say(
        f"  recorder: {dict(store.outcomes) or 'no outcome'}, {len(failed)} batch item failures"
    )
    status, _, _ = api.call("GET", f"{base}/{REMOVED}", claims=claims)
    _, page, _ = api.call(
        "GET", base, query=[("status", "in_progress"), ("limit", "50")], claims=claims
    )
    still_there = any(i["assetId"] == REMOVED for i in (page or {}).get("items", []))
    report.check(
        "the removed title stays gone after the late heartbeat",
        status == 404 and not still_there and store.outcomes["ignored"] == 1 and not failed,
        f"GET HTTP {status}, in list: {still_there}, outcomes {dict(store.outcomes)}",
    )

    report.say()
    report.say("The TV app syncs again: only what changed since its token:")
    status, delta, _ = api.call(
        "GET", f"{base}/changes", query=[("since", str(synced["nextToken"]))], claims=claims
    )
    delta = delta if status == 200 else {"items": [], "removed": [], "reset": True}
    changed = [i["assetId"] for i in delta["items"]]
    report.say(f"  changed: {', '.join(changed) or '-'}; removed: {', '.join(delta['removed'])}")
    report.check(
        "sync round: the episode marked watched changed, the removed title is dropped",
        status == 200
        and not delta["reset"]
        and changed == [MARKED_WATCHED]
        and delta["removed"] == [REMOVED],
        f"HTTP {status}, changed {changed}, removed {delta['removed']}",
    )
    _batch_write(report, api, base=base, claims=claims, token=str(delta.get("nextToken", "")))
    _dismiss(report, api, base=base, claims=claims)

    report.say()
    report.say("Authorization (JWT claims from the authorizer):")
    status, _, _ = api.call("GET", "/profiles/prof-00001/history", claims=claims)
    report.check("another profile: 403", status == 403, f"HTTP {status}")
    status, _, _ = api.call("GET", base, claims=None)
    report.check("no claims: 401", status == 401, f"HTTP {status}")


def _dismiss(report: Report, api: Api, *, base: str, claims: Mapping[str, Any]) -> None:
    """ "Remove from continue watching" without losing the history."""
    in_progress = [("status", "in_progress"), ("limit", "50")]
    _, page, _ = api.call("GET", base, query=in_progress, claims=claims)
    rail = [i["assetId"] for i in (page or {}).get("items", [])]
    if not rail:
        report.check("continue watching has an item to dismiss", False, "the rail is empty")
        return
    report.say()
    report.say(f"Remove {rail[0]} from continue watching, keeping its history (writer, POST):")
    status, _, _ = api.call("POST", f"{base}/{rail[0]}/dismiss", claims=claims)
    _, page, _ = api.call("GET", base, query=in_progress, claims=claims)
    after = [i["assetId"] for i in (page or {}).get("items", [])]
    _, item, _ = api.call("GET", f"{base}/{rail[0]}", claims=claims)
    report.say(f"  continue watching: {', '.join(after[:5]) or '-'}")
    report.check(
        "dismiss: 204, out of continue watching, still in the history with dismissedAt",
        status == 204 and after == rail[1:] and bool(item) and "dismissedAt" in item,
        f"HTTP {status}, rail {after[:3]}",
    )


def _batch_write(
    report: Report, api: Api, *, base: str, claims: Mapping[str, Any], token: str
) -> None:
    """An app back online sends what it recorded offline in one request."""
    report.say()
    report.say("Back online, a phone sends its offline updates in one batch (writer, POST):")
    offline = datetime.now(UTC).isoformat()
    a_minute_ago = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()  # before the PUT
    updates: list[Any] = [
        {
            "assetId": "doc-deep-sea",
            "position": 840,
            "duration": 3000,
            "eventTime": offline,
            "asset": {"type": "movie", "title": "Deep Sea"},
        },
        {"assetId": MARKED_WATCHED, "position": 10, "eventTime": a_minute_ago},  # stale
        {
            "assetId": "movie-night-train",
            "completedAt": offline,
            "duration": 5400,
            "asset": {"type": "movie", "title": "Night Train"},
        },
        {"assetId": "bad id", "position": 1},
    ]
    status, body, _ = api.call("POST", base, body={"updates": updates}, claims=claims)
    results = body["results"] if status == 200 else []
    for r in results:
        why = f"  ({r['reason']})" if r.get("reason") else ""
        report.say(f"  {r['index']}: {r.get('assetId')}: {r['outcome']}{why}")
    report.check(
        "batch: one request, an outcome per update (applied, stale, applied, invalid)",
        [r["outcome"] for r in results] == ["applied", "stale", "applied", "invalid"],
        f"HTTP {status}",
    )
    status, delta, _ = api.call("GET", f"{base}/changes", query=[("since", token)], claims=claims)
    changed = sorted(i["assetId"] for i in (delta or {}).get("items", []))
    report.check(
        "the next sync brings the batch's new items",
        status == 200 and changed == ["doc-deep-sea", "movie-night-train"],
        f"HTTP {status}, changed {changed}",
    )


def run(args: argparse.Namespace, report: Report) -> None:
    started = time.perf_counter()
    env_settings = Settings()
    run_id = secrets.token_hex(3)
    prefix = f"{env_settings.key_prefix}demo-{run_id}:"
    region = env_settings.aws_region
    sqs = boto3.client("sqs", region_name=region)
    queue_url = sqs.create_queue(QueueName=QUEUE_NAME)["QueueUrl"]
    settings = env_settings.model_copy(
        update={"key_prefix": prefix, "quarantine_queue_url": queue_url}
    )
    store = CountingStore(create_client(settings), settings)
    mode = "cluster" if settings.redis_cluster else "standalone"
    report.say(
        f"Watch history demo: {_n(args.profiles)} profiles, seed {args.seed}; "
        f"engine {settings.redis_url} ({mode}); keys {prefix}*"
    )
    report.say(f"quarantine queue (moto SQS, no AWS account): {queue_url}")
    runtime.set_store(store)
    try:
        record_handler = load_handler(RECORDER)
        api = Api(load_handler(READER), load_handler(WRITER), report)
        report.timings["setup"] = time.perf_counter() - started

        now_ms = time.time_ns() // 1_000_000
        t = time.perf_counter()
        stream = heartbeats.generate_stream(
            args.profiles, seed=args.seed, now_ms=now_ms, window_seconds=args.window * 60
        )
        report.timings["generate"] = time.perf_counter() - t

        report.section("1. Earlier history")
        earlier = _seed_history(report, store, stream, args.history_items, now_ms)

        minutes = (stream.window[1] - stream.window[0]) / 60_000
        report.section(
            f"2. The last {minutes:.0f} minutes of the stream through the recorder Lambda"
        )
        recorder = Recorder(record_handler)
        _run_stream(report, recorder, store, stream, args.batch_size)
        quarantined = _drain(sqs, queue_url)
        _summarise_records(report, store, recorder, stream, quarantined)
        _check_state(report, store, stream, earlier)

        report.section("3. The HTTP APIs (API Gateway HTTP API 2.0 events -> reader, writer)")
        t = time.perf_counter()
        _api_tour(
            report,
            api,
            recorder=Recorder(record_handler),
            store=store,
            hero=stream.hero,
            next_index=len(stream.records),
            claim=settings.profile_claim,
        )
        report.timings["API"] = time.perf_counter() - t
        calls = sorted(api.timings)
        if calls:
            report.say(
                f"  {len(calls)} API calls: median {statistics.median(calls):.1f} ms, "
                f"max {calls[-1]:.1f} ms"
            )
    finally:
        runtime.set_store(None)
        if not args.keep:
            _cleanup(store, heartbeats.profile_ids(args.profiles))
        store.client.close()
    report.timings["total"] = time.perf_counter() - started


def _cleanup(store: HistoryStore, profiles: list[str]) -> None:
    keys = [store.key(p) for p in profiles]
    for begin in range(0, len(keys), 500):
        store.client.delete(*keys[begin : begin + 500])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profiles", type=int, default=3000, help="profiles (default 3000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the heartbeats (default 7)")
    parser.add_argument("--batch-size", type=int, default=500, help="records per Kinesis event")
    parser.add_argument(
        "--history-items", type=int, default=8, help="earlier history items per profile (8)"
    )
    parser.add_argument(
        "--window", type=float, default=5.0, help="minutes of the stream to send (default 5)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo's keys")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="leave the handlers' logs and metrics on (Powertools' JSON lines on stdout)",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the demo; 0 when every check held, 1 when one did not."""
    args = _parser().parse_args(argv)
    if args.profiles < 2:
        _parser().error("--profiles must be at least 2")
    report = Report(out or sys.stdout)
    env = {
        "AWS_DEFAULT_REGION": Settings().aws_region,
        "POWERTOOLS_METRICS_NAMESPACE": "WatchHistoryDemo",
    }
    if not args.verbose:
        env.update(POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true")
    with env_defaults(env), mock_aws():
        run(args, report)
    report.section("Timings")
    for name, seconds in report.timings.items():
        report.say(f"  {name:<16} {seconds:6.2f} s")
    if report.failed:
        report.say()
        report.say(f"{len(report.failed)} check(s) FAILED:")
        for line in report.failed:
            report.say(f"  - {line}")
        return 1
    report.say()
    report.say(f"All {len(report.checks)} checks held.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
