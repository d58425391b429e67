"""A plain-Python model of the store's rules, applied one update at a time.

The property tests compare the real store (Lua on a real engine) with this model.
It is written from the rules in docs/data-model.md, not from the Lua, on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from watch_history.models import EventType, ProgressUpdate, epoch_ms, from_epoch_ms, rfc3339_ms

ASSET_FIELDS = ("type", "title", "sport", "series", "teams", "show", "season", "episode")
API_NAMES = {"type": "assetType"}


@dataclass
class ModelItem:
    asset_id: str
    last: int
    position: float
    first: int
    completed: bool = False
    completed_at: int | None = None
    duration: float | None = None
    device: str | None = None
    device_at: int = 0  # when the device was named
    asset: dict[str, Any] = field(default_factory=dict)
    # the report the resume point (position, completed) comes from: its time and kind
    position_at: int = 0
    position_kind: str = "ordinary"  # or "complete" (mark as watched), "start" (a start report)
    dismissed_at: int | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"assetId": self.asset_id}
        for name, value in self.asset.items():
            if value is not None:
                out[API_NAMES.get(name, name)] = value
        position = self.position
        if self.position_kind == "complete" and self.duration is not None:
            position = self.duration  # marked as watched: at the end, once the end is known
        out["position"] = position
        if self.duration is not None:
            out["duration"] = self.duration
            out["progress"] = min(1.0, round(position / self.duration, 4))
        out["completed"] = self.completed
        if self.completed_at is not None:
            out["completedAt"] = _time(self.completed_at)
        out["firstWatchedAt"] = _time(self.first)
        out["lastWatchedAt"] = _time(self.last)
        if self.device is not None:
            out["deviceId"] = self.device
        if self.dismissed_at is not None:
            out["dismissedAt"] = _time(self.dismissed_at)
        return out

    def in_continue_watching(self, min_resume: float) -> bool:
        """status=in_progress: resumable, and not dismissed since it was last watched."""
        if self.dismissed_at is not None and self.last <= self.dismissed_at:
            return False
        return not self.completed and self.to_api()["position"] >= min_resume


def _time(ms: int) -> str:
    return rfc3339_ms(from_epoch_ms(ms))


@dataclass
class HistoryModel:
    threshold: float = 0.9
    min_resume: float = 30.0
    max_items: int = 200
    legacy: bool = False
    """Layout 2's code: no start reports, and "complete" keeps the position sent."""
    items: dict[str, ModelItem] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)
    watermark: int = 0

    def completes(self, u: ProgressUpdate, duration: float | None) -> bool:
        if u.event_type is EventType.COMPLETE:
            return True
        return duration is not None and u.position >= self.threshold * duration

    def kind(self, u: ProgressUpdate) -> str:
        if self.legacy:
            return "ordinary"
        if u.event_type is EventType.COMPLETE:
            return "complete"
        if u.event_type is EventType.START and u.position < self.min_resume:
            return "start"
        return "ordinary"

    def apply(self, u: ProgressUpdate) -> str:
        t = epoch_ms(u.event_time)
        if t <= max(self.tombstones.get(u.asset_id, 0), self.watermark):
            return "ignored"
        asset = {n: getattr(u.asset, n) for n in ASSET_FIELDS} if u.asset else {}
        if asset.get("teams") == []:
            asset["teams"] = None
        item = self.items.get(u.asset_id)
        if item is None:
            item = ModelItem(u.asset_id, last=t, position=u.position, first=t)
            self.items[u.asset_id] = item
            self._take(item, u, asset, t)
            self._resume_point(item, u, t, new=True)
            self._evict()
            return "applied"
        item.first = min(item.first, t)
        if t > item.last:
            self._take(item, u, asset, t)
            self._resume_point(item, u, t)
            return "applied"
        # stale: fill what is missing; a completion back then still counts
        for name, value in asset.items():
            if value is not None and item.asset.get(name) is None:
                item.asset[name] = value
        self._name_device(item, u, t)
        if item.duration is None:
            item.duration = u.duration
        self._resume_point(item, u, t)
        return "stale"

    def _take(self, item: ModelItem, u: ProgressUpdate, asset: dict[str, Any], t: int) -> None:
        for name, value in asset.items():
            if value is not None:
                item.asset[name] = value
        self._name_device(item, u, t)
        if u.duration is not None:
            item.duration = u.duration
        item.last = t

    def _resume_point(self, item: ModelItem, u: ProgressUpdate, t: int, new: bool = False) -> None:
        """The resume point is the newest report's, except that a start report below
        the minimum resume position never replaces another kind of report's."""
        mine, theirs = item.position_kind != "start", self.kind(u) != "start"
        if new or theirs > mine or (theirs == mine and t > item.position_at):
            item.position, item.position_at, item.position_kind = u.position, t, self.kind(u)
            item.completed = self.completes(u, item.duration)
        if self.completes(u, item.duration):
            item.completed_at = max(item.completed_at or 0, t)

    @staticmethod
    def _name_device(item: ModelItem, u: ProgressUpdate, t: int) -> None:
        """deviceId: the device of the newest update naming one (ties: the greater id)."""
        if u.device_id is None:
            return
        if item.device is None or (t, u.device_id) > (item.device_at, item.device):
            item.device, item.device_at = u.device_id, t

    def _evict(self) -> None:
        while len(self.items) > self.max_items:
            victim = min(self.items.values(), key=lambda i: (i.last, i.asset_id))
            del self.items[victim.asset_id]

    def dismiss(self, asset_id: str, now: int) -> bool:
        item = self.items.get(asset_id)
        if item is None:
            return False
        if item.dismissed_at is None or item.last > item.dismissed_at:
            item.dismissed_at = max(now, item.last)
        return True

    def remove(self, asset_id: str, now: int) -> None:
        item = self.items.pop(asset_id, None)
        at = max(now, item.last) if item else now
        self.tombstones[asset_id] = max(self.tombstones.get(asset_id, 0), at)

    def clear(self, now: int) -> None:
        newest = max((i.last for i in self.items.values()), default=0)
        self.watermark = max(self.watermark, now, newest)
        self.items.clear()

    def ordered(self) -> list[dict[str, Any]]:
        ordered = sorted(self.items.values(), key=lambda i: (-i.last, i.asset_id))
        return [i.to_api() for i in ordered]
