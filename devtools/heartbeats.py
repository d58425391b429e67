"""Progress heartbeats as players send them: deterministic for a seed.

What a window of the stream carries: profiles watching tonight's live cricket and
football (live position = the live edge minus the viewer's delay), replays and
highlights of earlier matches, episodes of shows (autoplay to the next episode),
movies. Players send ``start``, a ``heartbeat`` every ``interval_seconds``,
``pause`` (then silence), ``stop``, ``complete``; some viewers hop between live
matches. TVs send ``eventTime`` as epoch milliseconds, phones as RFC 3339 with their
local offset, browsers as RFC 3339 UTC. Optional defects, as real streams have them:
the same record delivered twice (producer retries), records delivered late (a
device that was offline), and a few malformed records (bad JSON, not UTF-8, ids like
``a"]``, missing fields, epoch seconds, ``eventTime`` days in the future).

- ``generate_stream(n_profiles, seed=...)``: the records in delivery order, each with
  its payload (a JSON-able dict in the wire shape of ``ProgressUpdate``, or raw bytes
  for what is not even JSON) and what was done to it.
- ``kinesis_events(records, batch_size=500)``: the records as Kinesis Lambda events.
- ``history_updates(...)``: earlier history (the past weeks), one update per item;
  ``seed_profiles(store, n_profiles, items_per_profile)`` records it through
  ``store.record_batch`` (for benchmarks and the demo).

The catalogue (matches, shows, movies) is fixed; the seed decides who watches what.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, Literal

from watch_history.models import ProgressUpdate, epoch_ms
from watch_history.store import HistoryStore

__all__ = [
    "DEFECTS",
    "Asset",
    "Catalogue",
    "HeartbeatStream",
    "Payload",
    "StreamRecord",
    "catalogue",
    "encode",
    "event_ms",
    "generate_stream",
    "history_updates",
    "kinesis_event",
    "kinesis_events",
    "profile_ids",
    "seed_profiles",
    "sequence_number",
]

Payload = dict[str, Any] | bytes
"""A record's data: an update as JSON-able dict, or raw bytes (what is not JSON)."""

AssetType = Literal["match", "live", "highlight", "episode", "movie"]

STREAM_ARN: Final = "arn:aws:kinesis:us-east-1:123456789012:stream/watch-progress"
SHARD_ID: Final = "shardId-000000000000"
_FIRST_SEQUENCE: Final = 49_657_239_118_316_519_604_287_530_718_461_285_024_181_223_498_160_000
_SEQUENCE_STEP: Final = 1_000  # real sequence numbers of one shard grow by big steps

DEFECTS: Final[tuple[str, ...]] = (
    "bad-json",
    "bad-profile-id",
    "missing-position",
    "future-event-time",
    "bad-asset-id",
    "not-utf8",
    "missing-event-time",
    "epoch-seconds",
    "negative-position",
    "not-an-object",
)
"""The kinds of malformed records, in the order ``generate_stream`` injects them."""


# --------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asset:
    """Something a profile can watch, with the metadata players send along."""

    asset_id: str
    type: AssetType
    title: str
    duration: float | None  # None: live
    sport: str | None = None
    series: str | None = None
    teams: tuple[str, ...] = ()
    show: str | None = None
    season: int | None = None
    episode: int | None = None
    starts_at: int | None = None  # live: when the stream started (ms), tonight's matches

    def info(self) -> dict[str, Any]:
        """The ``asset`` object of an update (absent fields left out)."""
        if self.sport is not None:
            return {
                "type": self.type,
                "title": self.title,
                "sport": self.sport,
                "series": self.series,
                "teams": list(self.teams),
            }
        if self.show is not None:
            return {
                "type": self.type,
                "title": self.title,
                "show": self.show,
                "season": self.season,
                "episode": self.episode,
            }
        return {"type": self.type, "title": self.title}


@dataclass(frozen=True, slots=True)
class _Competition:
    sport: str
    series: str
    name: str
    round_label: str
    teams: dict[str, str]
    match_seconds: float
    highlight_seconds: float
    played_rounds: int


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every asset, and the groups the generators pick from."""

    assets: dict[str, Asset]
    live_now: dict[str, list[Asset]]  # sport -> tonight's live streams
    replays: list[Asset]  # full matches already played
    highlights: list[Asset]
    shows: dict[str, list[Asset]]  # show id -> its episodes in order
    movies: list[Asset]

    def by_team(self, team: str) -> list[Asset]:
        return [a for a in self.assets.values() if team in a.teams and a.starts_at is None]


_IPL = _Competition(
    sport="cricket",
    series="ipl-2026",
    name="IPL 2026",
    round_label="Match",
    teams={
        "csk": "Chennai Super Kings",
        "mi": "Mumbai Indians",
        "rcb": "Royal Challengers Bengaluru",
        "kkr": "Kolkata Knight Riders",
        "srh": "Sunrisers Hyderabad",
        "dc": "Delhi Capitals",
        "gt": "Gujarat Titans",
        "lsg": "Lucknow Super Giants",
        "pbks": "Punjab Kings",
        "rr": "Rajasthan Royals",
    },
    match_seconds=12_600,
    highlight_seconds=780,
    played_rounds=42,
)
_PREMIER_LEAGUE = _Competition(
    sport="football",
    series="premier-league-2026-27",
    name="Premier League 2026-27",
    round_label="Matchweek",
    teams={
        "arsenal": "Arsenal",
        "aston-villa": "Aston Villa",
        "brighton": "Brighton",
        "chelsea": "Chelsea",
        "liverpool": "Liverpool",
        "man-city": "Manchester City",
        "man-utd": "Manchester United",
        "newcastle": "Newcastle United",
        "tottenham": "Tottenham Hotspur",
        "west-ham": "West Ham United",
    },
    match_seconds=6_600,
    highlight_seconds=600,
    played_rounds=13,
)
_LA_LIGA = _Competition(
    sport="football",
    series="la-liga-2026-27",
    name="LaLiga 2026-27",
    round_label="Matchday",
    teams={
        "real-madrid": "Real Madrid",
        "barcelona": "Barcelona",
        "atletico-madrid": "Atletico Madrid",
        "sevilla": "Sevilla",
        "real-sociedad": "Real Sociedad",
        "villarreal": "Villarreal",
        "athletic-club": "Athletic Club",
        "valencia": "Valencia",
    },
    match_seconds=6_600,
    highlight_seconds=540,
    played_rounds=10,
)

# (show id, title, seasons, episodes per season, episode seconds)
_SHOWS: Final = (
    ("kingsbridge-station", "Kingsbridge Station", 3, 8, 3_000),
    ("salt-and-signal", "Salt & Signal", 2, 10, 2_700),
    ("the-long-monsoon", "The Long Monsoon", 2, 6, 3_300),
    ("orbital-kitchen", "Orbital Kitchen", 4, 12, 1_500),
    ("midnight-ledger", "Midnight Ledger", 3, 8, 3_600),
    ("harbour-lights", "Harbour Lights", 5, 10, 2_400),
)
_EPISODE_WORDS: Final = (
    "Arrival", "Departures", "Crossing", "Signal", "Tides", "Ledger", "Lanterns", "Harbour",
    "Embers", "Winter", "Northbound", "Static", "Reckoning", "Vigil", "Undertow", "Thaw",
    "Meridian", "Sparks", "Echoes", "Homecoming",
)  # fmt: skip
_MOVIES: Final = (
    ("the-last-ferry", "The Last Ferry", 6_420),
    ("paper-lanterns", "Paper Lanterns", 7_080),
    ("northbound", "Northbound", 5_880),
    ("a-quiet-orbit", "A Quiet Orbit", 8_160),
    ("the-cartographers-daughter", "The Cartographer's Daughter", 7_500),
    ("iron-meadow", "Iron Meadow", 6_900),
    ("sixteen-summers", "Sixteen Summers", 6_240),
    ("glass-harbour", "Glass Harbour", 7_320),
    ("the-understudy", "The Understudy", 5_700),
    ("low-tide", "Low Tide", 6_060),
    ("blue-hour", "Blue Hour", 6_600),
    ("copper-sky", "Copper Sky", 8_700),
    ("signal-lost", "Signal Lost", 5_520),
    ("deep-field", "Deep Field", 9_060),
    ("the-lantern-keeper", "The Lantern Keeper", 6_780),
    ("monsoon-express", "Monsoon Express", 9_600),
    ("the-long-goodbye-club", "The Long Goodbye Club", 6_300),
    ("saltwater-kings", "Saltwater Kings", 7_740),
    ("ninth-inning", "Ninth Inning", 6_960),
    ("winter-pavilion", "Winter Pavilion", 7_200),
)


def _round_robin(team_ids: Sequence[str], rounds: int) -> list[list[tuple[str, str]]]:
    """Fixtures by the circle method: every team plays once a round; halves alternate."""
    teams = list(team_ids)
    n = len(teams)
    fixtures: list[list[tuple[str, str]]] = []
    for r in range(rounds):
        pairs = []
        for i in range(n // 2):
            home, away = teams[i], teams[n - 1 - i]
            pairs.append((away, home) if (r // (n - 1)) % 2 else (home, away))
        fixtures.append(pairs)
        teams = [teams[0], teams[-1], *teams[1:-1]]
    return fixtures


def _match_assets(
    comp: _Competition,
    label: str,
    round_title: str,
    teams: tuple[str, str],
    *,
    live_since: int | None,
) -> list[Asset]:
    """A match's live stream; once played, also its full replay and its highlights."""
    home, away = teams
    stem = f"{comp.series}-{label}-{home}-v-{away}"
    title = f"{comp.name}, {round_title}: {comp.teams[home]} v {comp.teams[away]}"
    common: dict[str, Any] = {"sport": comp.sport, "series": comp.series, "teams": teams}
    live = Asset(f"{stem}-live", "live", f"{title} (live)", None, starts_at=live_since, **common)
    if live_since is not None:
        return [live]
    return [
        live,
        Asset(stem, "match", title, comp.match_seconds, **common),
        Asset(f"{stem}-hl", "highlight", f"{title}, highlights", comp.highlight_seconds, **common),
    ]


@functools.cache
def _catalogue(live_since: int) -> Catalogue:
    assets: list[Asset] = []
    live_now: dict[str, list[Asset]] = {"cricket": [], "football": []}
    # IPL: the 45 pairings of 10 teams in a fixed order; matches 43 and 44 are on tonight.
    pairs = list(itertools.combinations(_IPL.teams, 2))
    random.Random(2026).shuffle(pairs)
    tonight = [("csk", "mi"), ("rcb", "kkr")]
    pairs = [p for p in pairs if p not in tonight and p[::-1] not in tonight]
    for number, (home, away) in enumerate([*pairs[: _IPL.played_rounds], *tonight], start=1):
        on_now = number > _IPL.played_rounds
        # Tonight's two matches: one started 2 h ago, the other 40 min ago.
        ago = 7_200_000 if number == _IPL.played_rounds + 1 else 2_400_000
        made = _match_assets(
            _IPL,
            f"m{number:02d}",
            f"Match {number}",
            (home, away),
            live_since=live_since - ago if on_now else None,
        )
        assets.extend(made)
        if on_now:
            live_now["cricket"].extend(made)
    # The Ashes: Tests of five days; two played, the third Test's third day is live.
    ashes = _Competition(
        "cricket", "ashes-2026-27", "The Ashes 2026-27", "Test",
        {"aus": "Australia", "eng": "England"}, 23_400, 1_200, 0,
    )  # fmt: skip
    for test, day in itertools.product(range(1, 4), range(1, 6)):
        if (test, day) > (3, 3):
            break
        on_now = (test, day) == (3, 3)
        title = f"Test {test}, Day {day}"
        made = _match_assets(
            ashes,
            f"t{test}-d{day}",
            title,
            ("aus", "eng"),
            live_since=live_since - 5_400_000 if on_now else None,
        )
        assets.extend(made)
        if on_now:
            live_now["cricket"].extend(made)
    # Football: the played rounds, then tonight's round, live.
    for comp in (_PREMIER_LEAGUE, _LA_LIGA):
        schedule = _round_robin(list(comp.teams), comp.played_rounds + 1)
        for rnd, fixtures in enumerate(schedule, start=1):
            on_now = rnd > comp.played_rounds
            for k, (home, away) in enumerate(fixtures):
                label = f"{'gw' if comp is _PREMIER_LEAGUE else 'md'}{rnd:02d}"
                made = _match_assets(
                    comp,
                    label,
                    f"{comp.round_label} {rnd}",
                    (home, away),
                    live_since=live_since - 3_000_000 - 60_000 * k if on_now else None,
                )
                assets.extend(made)
                if on_now:
                    live_now["football"].extend(made)
    shows: dict[str, list[Asset]] = {}
    for show_id, show_title, seasons, episodes, seconds in _SHOWS:
        words = random.Random(show_id).sample(_EPISODE_WORDS, len(_EPISODE_WORDS))
        shows[show_id] = [
            Asset(
                f"{show_id}-s{s:02d}e{e:02d}",
                "episode",
                f"{show_title}: {words[(s * 7 + e) % len(words)]}",
                float(seconds + ((s * 37 + e * 53) % 420) - 210),
                show=show_id,
                season=s,
                episode=e,
            )
            for s in range(1, seasons + 1)
            for e in range(1, episodes + 1)
        ]
        assets.extend(shows[show_id])
    movies = [Asset(f"movie-{mid}", "movie", title, float(sec)) for mid, title, sec in _MOVIES]
    assets.extend(movies)
    return Catalogue(
        assets={a.asset_id: a for a in assets},
        live_now=live_now,
        replays=[a for a in assets if a.type == "match"],
        highlights=[a for a in assets if a.type == "highlight"],
        shows=shows,
        movies=movies,
    )


def catalogue(now_ms: int | None = None) -> Catalogue:
    """The catalogue; tonight's live streams started relative to ``now_ms`` (minute-aligned)."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    return _catalogue(now - now % 60_000)


# --------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------

_OFFSETS: Final = (0, 330, 330, 330, 60, 0, -240, 600)  # minutes: UTC, India, UK, ...


def _rfc3339(ms: int, offset_minutes: int) -> str:
    tz = UTC if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes))
    at = datetime.fromtimestamp(ms // 1000, tz=UTC).astimezone(tz)
    text = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}"
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@dataclass(frozen=True, slots=True)
class _Device:
    device_id: str
    time_style: Literal["epoch", "local", "utc"]
    offset_minutes: int

    def event_time(self, ms: int) -> str | int:
        if self.time_style == "epoch":
            return ms
        return _rfc3339(ms, self.offset_minutes if self.time_style == "local" else 0)


def _device(rng: random.Random) -> _Device:
    kind = rng.choices(("tv", "ios", "android", "web"), weights=(40, 25, 25, 10))[0]
    device_id = f"{kind}-{rng.getrandbits(40):010x}"
    if kind == "tv":
        return _Device(device_id, "epoch", 0)
    if kind == "web":
        return _Device(device_id, "utc", 0)
    return _Device(device_id, "local", rng.choice(_OFFSETS))


def _update(
    profile_id: str,
    device: _Device,
    *,
    asset: Asset,
    position: float,
    at_ms: int,
    event_type: str,
) -> dict[str, Any]:
    update: dict[str, Any] = {
        "profileId": profile_id,
        "assetId": asset.asset_id,
        "position": round(max(position, 0.0), 1),
    }
    if asset.duration is not None:
        update["duration"] = asset.duration
    update["eventTime"] = device.event_time(at_ms)
    update["eventType"] = event_type
    update["deviceId"] = device.device_id
    update["asset"] = asset.info()
    return update


def encode(payload: Payload) -> bytes:
    """The bytes a producer puts on the stream for ``payload``."""
    if isinstance(payload, bytes):
        return payload
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record of the stream, in delivery order."""

    payload: Payload
    partition_key: str
    arrival_ms: int
    defect: str | None = None  # one of DEFECTS: the recorder must quarantine it
    duplicate: bool = False  # a second delivery of an earlier record
    late: bool = False  # delivered after a newer record of its (profile, asset)

    @property
    def data(self) -> bytes:
        return encode(self.payload)


@dataclass(slots=True)
class HeartbeatStream:
    """What ``generate_stream`` made: the records and what to expect of them."""

    records: list[StreamRecord]
    profiles: list[str]
    hero: str  # the profile with a scripted evening (the demo's showcase)
    window: tuple[int, int]  # first and last eventTime of the window (ms)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def updates(self) -> list[dict[str, Any]]:
        """The payloads that are JSON objects (malformed ones included)."""
        return [r.payload for r in self.records if isinstance(r.payload, dict)]


def profile_ids(n_profiles: int, prefix: str = "prof") -> list[str]:
    width = max(5, len(str(n_profiles - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(n_profiles)]


class _Player:
    """One profile's player during the window: emits timed updates."""

    def __init__(
        self,
        profile_id: str,
        rng: random.Random,
        start_ms: int,
        interval_ms: int,
    ) -> None:
        self.profile_id = profile_id
        self.rng = rng
        self.device = _device(rng)
        self.t = start_ms
        self.interval_ms = interval_ms
        self.out: list[tuple[int, dict[str, Any]]] = []

    def emit(self, asset: Asset, position: float, event_type: str) -> None:
        update = _update(
            self.profile_id,
            self.device,
            asset=asset,
            position=position,
            at_ms=self.t,
            event_type=event_type,
        )
        self.out.append((self.t, update))

    def tick(self, factor: float = 1.0) -> None:
        jitter = self.rng.randint(-800, 800)
        self.t += max(1, int(self.interval_ms * factor) + jitter)

    def watch_vod(
        self, asset: Asset, position: float, until_ms: int, *, resume: bool
    ) -> tuple[float, bool]:
        """Play ``asset`` from ``position`` until ``until_ms``, the end, or a stop.

        Returns (position reached, completed).
        """
        assert asset.duration is not None
        step = self.interval_ms / 1000
        self.emit(asset, position, "start" if not resume else "heartbeat")
        while True:
            self.tick()
            if self.t >= until_ms:
                return position, False
            position += step
            if position >= asset.duration - step / 2:
                self.emit(asset, asset.duration, "complete")
                return asset.duration, True
            roll = self.rng.random()
            if roll < 0.02:
                self.emit(asset, position, "stop")
                return position, False
            if roll < 0.06:
                self.emit(asset, position, "pause")
                self.tick(self.rng.uniform(2, 8))  # silence while paused
                if self.t >= until_ms:
                    return position, False
                self.emit(asset, position, "heartbeat")
                continue
            self.emit(asset, position, "heartbeat")

    def watch_live(self, asset: Asset, until_ms: int, lag_s: float) -> None:
        """Watch a live stream at the live edge minus ``lag_s`` until ``until_ms``."""
        assert asset.starts_at is not None
        first = True
        while self.t < until_ms:
            position = (self.t - asset.starts_at) / 1000 - lag_s
            self.emit(asset, position, "start" if first else "heartbeat")
            first = False
            self.tick()
            if self.rng.random() < 0.01:
                self.emit(asset, (self.t - asset.starts_at) / 1000 - lag_s, "stop")
                return


def _play_profile(player: _Player, cat: Catalogue, end_ms: int) -> None:
    rng = player.rng
    behaviour = rng.choices(
        ("live-cricket", "live-football", "hopper", "binge", "movie", "highlights", "replay"),
        weights=(28, 20, 6, 20, 10, 8, 8),
    )[0]
    if behaviour in ("live-cricket", "live-football", "hopper"):
        if behaviour == "hopper":
            streams = [*cat.live_now["cricket"], *cat.live_now["football"]]
        else:
            streams = cat.live_now["cricket" if behaviour == "live-cricket" else "football"]
        asset = rng.choice(streams)
        lag = rng.choice((6.0, 12.0, 25.0, 40.0, rng.uniform(60, 1_800)))
        while player.t < end_ms:
            switch_every = rng.uniform(120_000, 420_000) if behaviour == "hopper" else 3_600_000
            player.watch_live(asset, min(end_ms, player.t + int(switch_every)), lag)
            if player.t >= end_ms:
                break
            asset = rng.choice([a for a in streams if a is not asset] or streams)
            player.tick(0.2)
        return
    if behaviour == "binge":
        episodes = cat.shows[rng.choice(list(cat.shows))]
        k = rng.randrange(len(episodes))
        position = rng.uniform(0, (episodes[k].duration or 0) * 0.95)
        resume = rng.random() < 0.6
        while player.t < end_ms and k < len(episodes):
            position, done = player.watch_vod(episodes[k], position, end_ms, resume=resume)
            if not done:
                return
            k, position, resume = k + 1, 0.0, False
            player.tick(0.3)  # autoplay countdown
        return
    pool = {"movie": cat.movies, "highlights": cat.highlights, "replay": cat.replays}[behaviour]
    resume = rng.random() < 0.5
    while player.t < end_ms:
        asset = rng.choice(pool)
        duration = asset.duration or 0.0
        position = rng.uniform(0, duration * 0.9) if behaviour != "highlights" else 0.0
        _, done = player.watch_vod(asset, position, end_ms, resume=resume)
        if not done or behaviour != "highlights":
            return
        resume = False
        player.tick(0.3)


def _play_hero(player: _Player, cat: Catalogue, end_ms: int) -> None:
    """The showcase: finishes an episode's evening, hops to the live cricket, and back."""
    start = player.t
    span = end_ms - start
    episode = cat.assets["kingsbridge-station-s02e03"]
    player.watch_vod(episode, 1_100.0, start + span * 3 // 10, resume=True)
    player.emit(episode, player.out[-1][1]["position"], "stop")
    player.tick(0.5)
    ipl = next(a for a in cat.live_now["cricket"] if "csk" in a.teams)
    player.watch_live(ipl, start + span * 6 // 10, 9.0)
    arsenal = next(a for a in cat.live_now["football"] if "arsenal" in a.teams)
    player.watch_live(arsenal, start + span * 7 // 10, 14.0)
    player.watch_live(ipl, end_ms, 9.0)


def _malformed(kind: str, profile_id: str, good: dict[str, Any], now_ms: int) -> Payload:
    bad = dict(good)
    if kind == "bad-json":
        return encode(good)[:-17]
    if kind == "not-utf8":
        return b'{"profileId":"' + profile_id.encode() + b'","assetId":"\xff\xfe\x9c"}'
    if kind == "not-an-object":
        return json.dumps([good["profileId"], good["assetId"], good["position"]]).encode()
    if kind == "bad-profile-id":
        bad["profileId"] = 'a"]'
    elif kind == "bad-asset-id":
        bad["assetId"] = "$.h[0] || 1==1"
    elif kind == "missing-position":
        del bad["position"]
    elif kind == "missing-event-time":
        del bad["eventTime"]
    elif kind == "future-event-time":
        bad["eventTime"] = _rfc3339(now_ms + 3 * 86_400_000, 0)
    elif kind == "epoch-seconds":
        bad["eventTime"] = now_ms // 1000
    elif kind == "negative-position":
        bad["position"] = -12.5
    else:
        raise ValueError(f"unknown defect {kind!r}")
    return bad


def generate_stream(
    n_profiles: int,
    *,
    seed: int = 0,
    now_ms: int | None = None,
    window_seconds: float = 600.0,
    interval_seconds: float = 30.0,
    duplicate_rate: float = 0.02,
    late_rate: float = 0.02,
    malformed: int = 12,
    profile_prefix: str = "prof",
) -> HeartbeatStream:
    """A window of the stream for ``n_profiles`` profiles, in delivery order.

    The window ends a minute before ``now_ms`` (default: now). ``duplicate_rate`` of the
    records are delivered a second time, ``late_rate`` of them arrive one to four
    heartbeat intervals late, and ``malformed`` malformed records (``DEFECTS`` in turn)
    are mixed in. The first profile is the "hero" with a scripted evening.
    """
    if n_profiles < 1:
        raise ValueError("n_profiles must be at least 1")
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    end = now - 60_000
    start = end - int(window_seconds * 1000)
    interval = int(interval_seconds * 1000)
    cat = catalogue(now)
    profiles = profile_ids(n_profiles, profile_prefix)
    timed: list[tuple[int, int, dict[str, Any]]] = []  # (eventTime, profile index, update)
    for index, profile_id in enumerate(profiles):
        rng = random.Random(f"{seed}:stream:{index}")
        if index == 0:
            player = _Player(profile_id, rng, start + 2_000, interval)
            _play_hero(player, cat, end)
        else:
            # Half were already watching when the window opened; the others tune in.
            first = start + (rng.randrange(interval) if rng.random() < 0.5 else 0)
            if first == start:
                first += rng.randrange(int(window_seconds * 1000 * 0.8))
            player = _Player(profile_id, rng, first, interval)
            _play_profile(player, cat, end)
        timed.extend((at, index, update) for at, update in player.out if at <= end)

    rng = random.Random(f"{seed}:delivery")
    records: list[tuple[int, int, StreamRecord]] = []
    order = itertools.count()
    for at, _, update in timed:
        arrival = at + rng.randint(40, 1_500)
        is_late = rng.random() < late_rate
        if is_late:
            arrival += rng.randint(interval + 2_000, 4 * interval)
        record = StreamRecord(update, update["profileId"], arrival)
        records.append((arrival, next(order), record))
        if rng.random() < duplicate_rate:
            again = arrival + rng.randint(200, 20_000)
            copy = StreamRecord(update, update["profileId"], again, duplicate=True)
            records.append((again, next(order), copy))
    for k in range(malformed):
        kind = DEFECTS[k % len(DEFECTS)]
        _, index, good = timed[rng.randrange(len(timed))]
        arrival = rng.randint(start, end)
        payload = _malformed(kind, profiles[index], good, now)
        records.append(
            (arrival, next(order), StreamRecord(payload, profiles[index], arrival, defect=kind))
        )
    records.sort(key=lambda r: (r[0], r[1]))
    delivered = _mark_late([r for _, _, r in records])
    counts = {
        "records": len(delivered),
        "updates": len(timed),
        "duplicates": sum(r.duplicate for r in delivered),
        "late": sum(r.late for r in delivered),
        "malformed": sum(r.defect is not None for r in delivered),
    }
    return HeartbeatStream(delivered, profiles, profiles[0], (start, end), counts)


def event_ms(update: Mapping[str, Any]) -> int:
    """The ``eventTime`` of a well-formed generated update, in epoch milliseconds."""
    value = update["eventTime"]
    if isinstance(value, int):
        return value
    return epoch_ms(datetime.fromisoformat(value))


def _mark_late(records: list[StreamRecord]) -> list[StreamRecord]:
    """Set ``late`` on records delivered after a newer one of their (profile, asset)."""
    newest: dict[tuple[str, str], int] = {}
    out: list[StreamRecord] = []
    for record in records:
        payload = record.payload
        marked = record
        if record.defect is None and isinstance(payload, dict) and not record.duplicate:
            key = (payload["profileId"], payload["assetId"])
            at = event_ms(payload)
            if at < newest.get(key, -1):
                marked = StreamRecord(payload, record.partition_key, record.arrival_ms, late=True)
            newest[key] = max(at, newest.get(key, -1))
        out.append(marked)
    return out


# --------------------------------------------------------------------------------------
# Kinesis events
# --------------------------------------------------------------------------------------


def sequence_number(index: int) -> str:
    """The sequence number ``kinesis_events`` gives the stream's ``index``-th record."""
    return str(_FIRST_SEQUENCE + index * _SEQUENCE_STEP)


def kinesis_event(
    records: Sequence[StreamRecord | Payload],
    *,
    first_index: int = 0,
    stream_arn: str = STREAM_ARN,
    shard_id: str = SHARD_ID,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """One Kinesis Lambda event holding ``records`` (sequence numbers from ``first_index``)."""
    now = time.time()
    out = []
    for offset, item in enumerate(records):
        if isinstance(item, StreamRecord):
            data, key, arrived = item.data, item.partition_key, item.arrival_ms / 1000
        else:
            data, arrived = encode(item), now
            key = str(item.get("profileId", "unknown")) if isinstance(item, dict) else "unknown"
        seq = sequence_number(first_index + offset)
        out.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": seq,
                    "data": base64.b64encode(data).decode("ascii"),
                    "approximateArrivalTimestamp": round(arrived, 3),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/history-recorder-role",
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
        )
    return {"Records": out}


def kinesis_events(
    records: Sequence[StreamRecord | Payload],
    *,
    batch_size: int = 500,
    first_index: int = 0,
    stream_arn: str = STREAM_ARN,
    shard_id: str = SHARD_ID,
) -> Iterator[dict[str, Any]]:
    """``records`` as Kinesis Lambda events of up to ``batch_size`` records, in order.

    Record ``i`` gets ``sequence_number(first_index + i)`` and ``eventID``
    ``<shard_id>:<sequence number>``; its partition key is its profile id.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    for begin in range(0, len(records), batch_size):
        yield kinesis_event(
            records[begin : begin + batch_size],
            first_index=first_index + begin,
            stream_arn=stream_arn,
            shard_id=shard_id,
        )


# --------------------------------------------------------------------------------------
# Earlier history
# --------------------------------------------------------------------------------------

_DAY_MS: Final = 86_400_000


def _hero_history(profile_id: str, cat: Catalogue, now: int) -> list[dict[str, Any]]:
    device = _Device("tv-00hero0001", "epoch", 0)
    phone = _Device("ios-00hero0002", "local", 330)

    def item(
        asset_id: str, days_ago: float, fraction: float, dev: _Device = device
    ) -> dict[str, Any]:
        asset = cat.assets[asset_id]
        return _update(
            profile_id,
            dev,
            asset=asset,
            position=(asset.duration or 0.0) * min(fraction, 1.0),
            at_ms=now - int(days_ago * _DAY_MS),
            event_type="complete" if fraction >= 1.0 else "stop",
        )

    ipl = [a for a in cat.replays if a.series == "ipl-2026" and "csk" in a.teams]
    pl = [a for a in cat.replays if a.series == "premier-league-2026-27" and "arsenal" in a.teams]
    pl_hl = [
        a for a in cat.highlights if a.series == _PREMIER_LEAGUE.series and "arsenal" in a.teams
    ]
    ipl_hl = [a for a in cat.highlights if a.series == "ipl-2026" and "csk" in a.teams]
    updates = [item(f"kingsbridge-station-s01e{e:02d}", 20 - e, 1.0) for e in range(1, 9)]
    updates += [
        item("kingsbridge-station-s02e01", 2.2, 1.0),
        item("kingsbridge-station-s02e02", 1.1, 1.0),
        item("kingsbridge-station-s02e03", 1.05, 0.36),
        item("movie-the-last-ferry", 3.0, 0.45),
        item(pl[-1].asset_id, 2.0, 0.6, phone),
        item(pl_hl[-2].asset_id, 6.0, 1.0, phone),
        item(ipl[-1].asset_id, 4.0, 0.35),
        item(ipl_hl[-1].asset_id, 4.2, 1.0, phone),
        item(ipl_hl[-2].asset_id, 9.0, 1.0, phone),
        item("orbital-kitchen-s04e05", 6.0, 0.4),
        item("salt-and-signal-s01e02", 12.0, 0.7),
        item("movie-northbound", 15.0, 1.0),
    ]
    return updates


def history_updates(
    profiles: Sequence[str],
    items_per_profile: int,
    *,
    seed: int = 0,
    now_ms: int | None = None,
    days: float = 30.0,
    hero: str | None = None,
) -> list[dict[str, Any]]:
    """Earlier history: one update per item, ``items_per_profile`` distinct assets each,
    spread over the ``days`` before the last hour (``hero`` gets a scripted history).

    Profiles favour two teams and two shows; episodes of a show come in order.
    """
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    cat = catalogue(now)
    pool = [a for a in cat.assets.values() if a.starts_at is None]
    if items_per_profile > len(pool):
        raise ValueError(f"the catalogue has only {len(pool)} assets for a profile")
    newest = now - 3_600_000
    span = int(days * _DAY_MS)
    teams = [*_IPL.teams, *_PREMIER_LEAGUE.teams, *_LA_LIGA.teams]
    out: list[dict[str, Any]] = []
    for profile_id in profiles:
        if profile_id == hero:
            out.extend(_hero_history(profile_id, cat, now))
            continue
        rng = random.Random(f"{seed}:history:{profile_id}")
        device = _device(rng)
        favourites: list[Asset] = []
        for team in rng.sample(teams, 2):
            favourites.extend(cat.by_team(team))
        for show in rng.sample(list(cat.shows), 2):
            episodes = cat.shows[show]
            favourites.extend(episodes[: rng.randint(1, len(episodes))])
        rng.shuffle(favourites)
        chosen: dict[str, Asset] = {}
        for asset in itertools.chain(
            favourites[: items_per_profile * 2 // 3], _shuffled(rng, pool)
        ):
            if len(chosen) == items_per_profile:
                break
            chosen.setdefault(asset.asset_id, asset)
        times = sorted(rng.sample(range(newest - span, newest), len(chosen)))
        for asset, at in zip(_in_watch_order(chosen.values()), times, strict=True):
            duration = asset.duration
            if duration is None:
                position = rng.uniform(300, 10_000)
                event_type = "stop"
            elif rng.random() < 0.45:
                position, event_type = duration, "complete"
            else:
                position, event_type = rng.uniform(0.02, 0.85) * duration, "stop"
            out.append(
                _update(
                    profile_id,
                    device,
                    asset=asset,
                    position=position,
                    at_ms=at,
                    event_type=event_type,
                )
            )
    return out


def _shuffled(rng: random.Random, pool: Sequence[Asset]) -> Iterable[Asset]:
    return rng.sample(pool, len(pool))


def _in_watch_order(assets: Iterable[Asset]) -> list[Asset]:
    """Episodes of a show in order (older first); the rest as they come."""
    listed = list(assets)
    episodes = sorted(
        (a for a in listed if a.show is not None), key=lambda a: (a.show, a.season, a.episode)
    )
    by_show = iter(episodes)
    return [next(by_show) if a.show is not None else a for a in listed]


def seed_profiles(
    store: HistoryStore,
    n_profiles: int,
    items_per_profile: int,
    *,
    seed: int = 0,
    profile_prefix: str = "seed",
    now_ms: int | None = None,
    chunk_profiles: int = 100,
    workers: int = 2,
) -> list[str]:
    """Fill ``n_profiles`` profiles with ``items_per_profile`` items of earlier history,
    through ``store.record_batch``; their ids (``<profile_prefix>-00000``, ...).

    Chunks of ``chunk_profiles`` profiles are written by ``workers`` threads while the
    next chunks are generated, so the client's work overlaps the server's. Raises
    RuntimeError if the store did not record every update.
    """
    profiles = profile_ids(n_profiles, profile_prefix)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000

    def write(raw: list[dict[str, Any]]) -> None:
        updates = [ProgressUpdate.model_validate(u) for u in raw]
        result = store.record_batch(updates)
        if result.failures:
            index, error = next(iter(result.failures.items()))
            raise RuntimeError(
                f"{len(result.failures)} of {len(updates)} updates failed, "
                f"e.g. {raw[index]['profileId']}/{raw[index]['assetId']}: {error}"
            )

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seed") as pool:
        pending: deque[Future[None]] = deque()
        for begin in range(0, n_profiles, chunk_profiles):
            chunk = profiles[begin : begin + chunk_profiles]
            pending.append(
                pool.submit(write, history_updates(chunk, items_per_profile, seed=seed, now_ms=now))
            )
            while len(pending) > workers:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    return profiles
