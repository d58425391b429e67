"""The load test's workload: seeded, the same for every model.

Profiles and their earlier history come from the catalogue of devtools/heartbeats.py
(tonight's live cricket and football, replays and highlights, episodes of shows,
movies, device ids as players send them), widened by archive copies of it (earlier
seasons) when a profile needs more distinct assets than the catalogue has. Each
profile favours two teams and two shows, so many profiles watch the same titles;
``spike`` of them are watching ONE live match right now (a final), which is their
newest item.

Batches are what the recorder Lambda sees in production: a viewer sends a heartbeat
every ~30 s and a batch spans a few seconds of the stream, so a batch carries ONE
record per profile, usually for the profile's newest item (``steady``; one in twenty
starts a title it never watched), plus the stream's defects: a few records delivered
twice and a few late ones (older than what is stored). ``session_starts``: each profile
resumes an older item of its history (it moves to the front). ``dense``: several records per profile
in one batch (a backlog after a stall, a replay), a few assets each.

Every record but the late ones is newer than everything stored before it, so writes
apply (rule 2): batches of a phase are built from one clock that moves 30 s per round.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from devtools.heartbeats import Asset, catalogue, profile_ids
from watch_history.models import HistoryQuery, ProgressUpdate, Status, from_epoch_ms

_DAY_MS: Final = 86_400_000
HEARTBEAT_MS: Final = 30_000


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What the workload is made of: every number a run turns."""

    seed: int = 7
    profiles: int = 2_000
    items: int = 200
    spike: float = 0.3  # share of profiles watching the one live match now
    batch_records: int = 500  # records per recorder batch (Kinesis batch size)
    batches: int = 8  # batches per phase
    dense_records: int = 5  # records per profile in a dense batch
    duplicate_rate: float = 0.02  # records delivered twice
    late_rate: float = 0.02  # records followed by a late, older one of the same asset


@dataclass(slots=True)
class _Profile:
    profile_id: str
    device: str
    history: list[Asset]  # newest first
    positions: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Workload:
    """The seeded profiles and the batches of each phase."""

    spec: WorkloadSpec
    now_ms: int
    assets: list[Asset]
    live: Asset
    profiles: list[_Profile]
    clock_ms: int
    _rng: random.Random
    _late: list[ProgressUpdate] = field(default_factory=list)  # for the next batch

    @property
    def profile_ids(self) -> list[str]:
        return [p.profile_id for p in self.profiles]

    # --- earlier history --------------------------------------------------------------

    def history(self, chunk_profiles: int = 50) -> Iterator[list[ProgressUpdate]]:
        """Every profile's earlier history, one update per item, oldest first, in
        chunks of ``chunk_profiles`` profiles (what seeding sends as one batch)."""
        span = 30 * _DAY_MS
        newest = self.now_ms - 3_600_000
        for begin in range(0, len(self.profiles), chunk_profiles):
            out: list[ProgressUpdate] = []
            for profile in self.profiles[begin : begin + chunk_profiles]:
                rng = random.Random(f"{self.spec.seed}:times:{profile.profile_id}")
                n = len(profile.history)
                times = sorted(rng.sample(range(newest - span, newest), n), reverse=True)
                for asset, at in zip(reversed(profile.history), reversed(times), strict=True):
                    # the live match: tuned in two minutes ago
                    when = self.now_ms - 120_000 if asset is self.live else at
                    out.append(self._update(profile, asset, when, rng, history=True))
            yield out

    def _update(
        self, profile: _Profile, asset: Asset, at_ms: int, rng: random.Random, *, history: bool
    ) -> ProgressUpdate:
        duration = asset.duration
        if history:
            if duration is None:
                position = rng.uniform(300, 10_000)
                event = "stop"
            elif rng.random() < 0.45:
                position, event = duration, "complete"
            else:
                position, event = rng.uniform(0.02, 0.85) * duration, "stop"
        else:
            before = profile.positions.get(asset.asset_id, rng.uniform(60, 1200))
            position = before + HEARTBEAT_MS / 1000
            if duration is not None:
                position = min(position, duration)
            event = "heartbeat"
        profile.positions[asset.asset_id] = position
        update: dict[str, Any] = {
            "profileId": profile.profile_id,
            "assetId": asset.asset_id,
            "position": round(position, 1),
            "eventTime": at_ms,
            "eventType": event,
            "deviceId": profile.device,
            "asset": asset.info(),
        }
        if duration is not None:
            update["duration"] = duration
        return ProgressUpdate.model_validate(update)

    # --- batches ----------------------------------------------------------------------

    def _tick(self) -> int:
        self.clock_ms += HEARTBEAT_MS
        return self.clock_ms

    def _pick(self, count: int) -> list[_Profile]:
        return self._rng.sample(self.profiles, min(count, len(self.profiles)))

    def _watch(self, profile: _Profile, asset: Asset) -> None:
        """``asset`` becomes the profile's newest item (MAX_ITEMS is the server's job)."""
        if asset in profile.history:
            profile.history.remove(asset)
        profile.history.insert(0, asset)

    def steady(self, batches: int | None = None, profiles: list[str] | None = None) -> list[
        list[ProgressUpdate]
    ]:  # fmt: skip
        """Batches of one record per profile, its newest item (one in twenty: a new title)."""
        pool = self._subset(profiles)
        out = []
        for _ in range(batches or self.spec.batches):
            at = self._tick()
            batch = []
            for profile in self._rng.sample(pool, min(self.spec.batch_records, len(pool))):
                asset = profile.history[0]
                if self._rng.random() < 0.05:
                    asset = self._new_title(profile)
                    self._watch(profile, asset)
                batch.append(
                    self._update(profile, asset, at + self._jitter(), self._rng, history=False)
                )
            out.append(self._delivered(batch))
        return out

    def session_starts(self) -> list[list[ProgressUpdate]]:
        """Batches of one record per profile resuming an older item of its history."""
        out = []
        for _ in range(self.spec.batches):
            at = self._tick()
            batch = []
            for profile in self._pick(self.spec.batch_records):
                asset = profile.history[self._rng.randrange(1, len(profile.history))]
                self._watch(profile, asset)
                batch.append(
                    self._update(profile, asset, at + self._jitter(), self._rng, history=False)
                )
            out.append(self._delivered(batch))
        return out

    def dense(self) -> list[list[ProgressUpdate]]:
        """Batches of ``dense_records`` records per profile: its newest item's heartbeats
        and, for every other profile, a resumed older one, interleaved by time."""
        per = self.spec.dense_records
        out = []
        for _ in range(self.spec.batches):
            batch = []
            start = self._tick()
            for profile in self._pick(max(1, self.spec.batch_records // per)):
                assets = [profile.history[0]]
                if self._rng.random() < 0.5 and len(profile.history) > 1:
                    assets.append(profile.history[self._rng.randrange(1, len(profile.history))])
                for k in range(per):
                    asset = assets[k % len(assets)]
                    at = start + k * 2_000 + self._jitter()
                    batch.append(self._update(profile, asset, at, self._rng, history=False))
                for asset in assets:
                    self._watch(profile, asset)
            self._rng.shuffle(batch)
            self.clock_ms = start + per * 2_000
            out.append(self._delivered(batch))
        return out

    def one_each(self, kind: str) -> list[ProgressUpdate]:
        """One heartbeat per profile, all in one new round, without the stream's defects
        (what loadtest/instructions.py counts): ``front`` on the profile's newest item,
        ``moved`` on an older one (it moves to the front), ``new`` on a title it never
        watched (a new item: at MAX_ITEMS the oldest goes)."""
        at = self._tick()
        out = []
        for profile in self.profiles:
            if kind == "front":
                asset = profile.history[0]
            elif kind == "moved":
                asset = profile.history[self._rng.randrange(1, len(profile.history))]
            elif kind == "new":
                asset = self._new_title(profile)
            else:
                raise ValueError(f"unknown kind of heartbeat: {kind!r}")
            self._watch(profile, asset)
            out.append(self._update(profile, asset, at, self._rng, history=False))
        return out

    def _delivered(self, batch: list[ProgressUpdate]) -> list[ProgressUpdate]:
        """The batch as the stream delivers it (devtools/heartbeats.py's defects):
        ``duplicate_rate`` of its records twice (producer retries), and the late records
        of the batch before: ``late_rate`` of the records are delivered again one batch
        later with a time one to four heartbeats earlier (a device that was offline), so
        they reach a server that already holds something newer and change nothing."""
        out = list(batch)
        for u in batch:
            if self._rng.random() < self.spec.duplicate_rate:
                out.insert(self._rng.randrange(len(out) + 1), u)
        for late in self._late:
            out.insert(self._rng.randrange(len(out) + 1), late)
        self._late = []
        for u in batch:
            if self._rng.random() < self.spec.late_rate:
                back = self._rng.randint(1, 4) * HEARTBEAT_MS
                self._late.append(
                    u.model_copy(update={"event_time": from_epoch_ms(u.event_ms - back)})
                )
        return out

    def _subset(self, profiles: list[str] | None) -> list[_Profile]:
        if profiles is None:
            return self.profiles
        wanted = set(profiles)
        return [p for p in self.profiles if p.profile_id in wanted]

    def _jitter(self) -> int:
        return self._rng.randrange(0, 5_000)  # a batch spans a few seconds of the stream

    def _new_title(self, profile: _Profile) -> Asset:
        seen = {a.asset_id for a in profile.history}
        while True:
            asset = self._rng.choice(self.assets)
            if asset.asset_id not in seen:
                return asset

    # --- reads ------------------------------------------------------------------------

    def queries(self, profile_id: str) -> dict[str, HistoryQuery]:
        """One query per read route, with filters the profile's own history has."""
        profile = next(p for p in self.profiles if p.profile_id == profile_id)
        rng = random.Random(f"{self.spec.seed}:queries:{profile_id}")
        matches = [a for a in profile.history if a.sport and a.series and a.teams]
        episodes = [a for a in profile.history if a.show and a.season is not None]
        routes: dict[str, HistoryQuery] = {
            "continue watching": HistoryQuery(status=Status.IN_PROGRESS),
            "recency": HistoryQuery(),
            "asset": HistoryQuery(
                asset_ids=[
                    a.asset_id for a in rng.sample(profile.history, min(3, len(profile.history)))
                ]
            ),
        }
        if matches:
            m = rng.choice(matches)
            routes["sport"] = HistoryQuery(sport=m.sport)
            routes["sport+series"] = HistoryQuery(sport=m.sport, series=m.series)
            routes["sport+series+team"] = HistoryQuery(
                sport=m.sport, series=m.series, teams=[rng.choice(m.teams)]
            )
        if episodes:
            e = rng.choice(episodes)
            routes["show"] = HistoryQuery(show=e.show)
            routes["show+season"] = HistoryQuery(show=e.show, season=e.season)
        return routes


ROUTES: Final = (
    "continue watching",
    "recency",
    "asset",
    "sport",
    "sport+series",
    "sport+series+team",
    "show",
    "show+season",
)


def _archive(pool: list[Asset], needed: int) -> list[Asset]:
    """The catalogue, plus copies of it as earlier seasons until it has ``needed`` assets."""
    assets = list(pool)
    year = 1
    while len(assets) < needed:
        for a in pool:
            assets.append(
                dataclasses.replace(
                    a,
                    asset_id=f"{a.asset_id}.y{year}",
                    series=f"{a.series}.y{year}" if a.series else None,
                    season=a.season + 10 * year if a.season is not None else None,
                )
            )
        year += 1
    return assets


def build(spec: WorkloadSpec, *, now_ms: int | None = None, prefix: str = "lt") -> Workload:
    """The workload of ``spec``: profiles with their history (newest first)."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    cat = catalogue(now)
    pool = [a for a in cat.assets.values() if a.starts_at is None]
    assets = _archive(pool, int(spec.items * 1.5) + 10)
    live = cat.live_now["cricket"][0]
    teams = sorted({t for a in pool for t in a.teams})
    shows = sorted(cat.shows)
    profiles = []
    for profile_id in profile_ids(spec.profiles, prefix):
        rng = random.Random(f"{spec.seed}:profile:{profile_id}")
        favourite_teams = set(rng.sample(teams, 2))
        favourite_shows = set(rng.sample(shows, 2))
        favourites = [
            a for a in assets if favourite_teams & set(a.teams) or a.show in favourite_shows
        ]
        rng.shuffle(favourites)
        chosen: dict[str, Asset] = {}
        for a in favourites[: spec.items * 2 // 3] + rng.sample(assets, len(assets)):
            if len(chosen) == spec.items:
                break
            chosen.setdefault(a.asset_id, a)
        history = list(chosen.values())
        if rng.random() < spec.spike:
            history = [live, *history[: spec.items - 1]]
        device = f"{rng.choice(['tv', 'ios', 'android', 'web'])}-{rng.getrandbits(40):010x}"
        profiles.append(_Profile(profile_id, device, history))
    return Workload(
        spec, now, assets, live, profiles, now - 60_000, random.Random(f"{spec.seed}:run")
    )
