"""Collapse a batch of progress updates to one per (profile, asset) before the server.

Ten heartbeats of one match in a batch cost the server one item read and one write
instead of ten. The collapsed update carries what the older records still contribute
under the rules (store.py), so the end state is the one of applying each record in
turn: the newest record's state, the earliest time (firstWatchedAt), the newest time an
older record completed the asset (completedAt), asset fields the newest lacks, and the
device of the newest record that names one (with that record's time).

Asset fields describe the asset, so every record of one asset carries the same values
or none; if a producer sends conflicting values for one asset, the newest record's win.

Each record still gets its own outcome (``AssetGroup.outcomes``): the one it would get
sent alone, after the records before it.

A start report below MIN_RESUME_SECONDS (``UpdateKind.START``) is never merged: its
rule (it does not move a resume point back) weighs it against each other report, so a
group holding one is sent record by record (``group_by_profile``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from operator import attrgetter

from watch_history.models import EventType, ProgressUpdate, RecordOutcome

# The order of asset fields in a collapsed update (and in a stored item: codec.ITEM_FIELDS).
ASSET_FIELDS = ("type", "title", "sport", "series", "teams", "show", "season", "episode")


class UpdateKind(IntEnum):
    """What the rules make of a report, beyond its times and position (a collapsed
    update's ``kind``: lua/update_rules.lua's KIND_* constants)."""

    ORDINARY = 0
    COMPLETE = 1
    """eventType ``complete`` ("mark as watched"): completed, the position at the duration."""
    START = 2
    """eventType ``start`` below MIN_RESUME_SECONDS: players send 0 or a few seconds
    before they seek to the resume point, so it moves lastWatchedAt, the device and the
    order, but not a position set by any other report."""


def kind_of(update: ProgressUpdate, min_resume_seconds: float) -> UpdateKind:
    """The kind of one report (``UpdateKind``)."""
    if update.event_type is EventType.COMPLETE:
        return UpdateKind.COMPLETE
    if update.event_type is EventType.START and update.position < min_resume_seconds:
        return UpdateKind.START
    return UpdateKind.ORDINARY


@dataclass(slots=True)
class AssetGroup:
    """The records of one (profile, asset) in a batch, in arrival order."""

    profile_id: str
    asset_id: str
    records: list[tuple[int, ProgressUpdate]] = field(default_factory=list)
    """(index in the batch, update) pairs."""

    @property
    def indices(self) -> list[int]:
        return [index for index, _ in self.records]

    def collapsed(self, completion_threshold: float, min_resume_seconds: float) -> list[object]:
        """The collapsed update (``collapse``) of this group's records."""
        return collapse(
            [update for _, update in self.records], completion_threshold, min_resume_seconds
        )

    def script_argument(self, completion_threshold: float, min_resume_seconds: float) -> str:
        """The collapsed update as one JSON array, asset fields as JSON values (the load
        test's models read it; the store sends ``codec.update_argument`` of it)."""
        return json.dumps(
            self.collapsed(completion_threshold, min_resume_seconds),
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def split(self) -> list[AssetGroup]:
        """One group per record, for when a removal falls between its records."""
        return [AssetGroup(self.profile_id, self.asset_id, [record]) for record in self.records]

    def by_newer_records(self) -> list[AssetGroup]:
        """The group cut before each record newer than every earlier one: each part has
        one such record, its first, which makes ``outcomes`` exact for it. The parts
        cost one script argument each, where the group cost one."""
        parts: list[AssetGroup] = []
        newest = None
        for index, update in self.records:
            at = update.event_ms
            if newest is None or at > newest:
                newest = at
                parts.append(AssetGroup(self.profile_id, self.asset_id, []))
            parts[-1].records.append((index, update))
        return parts

    def outcomes(self, status: RecordOutcome) -> Iterator[tuple[int, RecordOutcome]]:
        """Each record's (index, outcome), given what the script did with the collapsed
        update (``status``), as the records would fare sent one by one, in order.

        A record not newer (by eventTime, to the millisecond, as the script compares)
        than an earlier record of the group is stale: whatever happened to the earlier
        one, the item is at least as new after it. It is ignored when the group is
        (then every record is at or before the removal). A record newer than every
        earlier one gets ``status``: exact for the first such record, and for the only
        one when the group comes from ``by_newer_records``. When a group holds several
        (a run of heartbeats in order), the earlier ones share the newest's status,
        which is theirs unless the stored item's time fell between them: only the
        stored time decides that, and the script's reply does not carry it.
        """
        not_newer = (
            RecordOutcome.IGNORED if status is RecordOutcome.IGNORED else RecordOutcome.STALE
        )
        newest = None
        for index, update in self.records:
            at = update.event_ms
            if newest is None or at > newest:
                newest = at
                yield index, status
            else:
                yield index, not_newer


def group_by_profile(
    updates: Iterable[tuple[int, ProgressUpdate]],
    min_resume_seconds: float,
    *,
    exact_outcomes: bool = False,
) -> dict[str, list[AssetGroup]]:
    """Group (index, update) pairs by profile, then by asset, keeping arrival order.

    A group holding a start report (``UpdateKind.START``) is split into its records.
    ``exact_outcomes``: cut each asset's group ``by_newer_records``, so that every
    record's outcome is the one it would get alone (the write API's batches); without
    it a run of records in time order is one group (the recorder's throughput)."""
    profiles: dict[str, dict[str, AssetGroup]] = {}
    for index, update in updates:
        assets = profiles.setdefault(update.profile_id, {})
        group = assets.get(update.asset_id)
        if group is None:
            group = assets[update.asset_id] = AssetGroup(update.profile_id, update.asset_id)
        group.records.append((index, update))

    def parts(group: AssetGroup) -> list[AssetGroup]:
        if len(group.records) > 1 and any(
            kind_of(u, min_resume_seconds) is UpdateKind.START for _, u in group.records
        ):
            return group.split()
        return group.by_newer_records() if exact_outcomes else [group]

    return {
        profile: [part for group in assets.values() for part in parts(group)]
        for profile, assets in profiles.items()
    }


def _asset_values(update: ProgressUpdate) -> list[object]:
    asset = update.asset
    if asset is None:
        return _NO_ASSET
    teams = asset.teams or None  # an empty list says nothing (and Lua cannot tell [] from {})
    return [
        asset.type,
        asset.title,
        asset.sport,
        asset.series,
        teams,
        asset.show,
        asset.season,
        asset.episode,
    ]


_NO_ASSET: list[object] = [None] * len(ASSET_FIELDS)
_event_time = attrgetter("event_time")


def collapse(
    updates: Sequence[ProgressUpdate], completion_threshold: float, min_resume_seconds: float
) -> list[object]:
    """One update standing for several of the same asset (see record_progress.lua's ARGV);
    none of them a start report (``UpdateKind.START``) unless it is the only one."""
    newest = updates[0]
    newest_ms = newest.event_ms
    if len(updates) == 1:  # nothing to merge
        return [
            newest.asset_id,
            newest_ms,
            newest.position,
            newest.duration,
            int(kind_of(newest, min_resume_seconds)),
            newest.device_id,
            *_asset_values(newest),
            newest_ms,
            None,
            None,
            None,
        ]
    # The newest wins; among equal times the first to arrive (a later equal one is a
    # no-op): max() keeps the first of equal maxima. Datetimes compare in C; epoch ms
    # are computed only for the few times the script needs.
    newest = max(updates, key=_event_time)
    newest_ms = newest.event_ms
    asset = _asset_values(newest)
    duration = newest.duration
    if duration is None or None in asset:
        # Optional fields the newest lacks: from the newest of the others that has them.
        asset = list(asset)
        for update in sorted(updates, key=_event_time, reverse=True):
            if update is newest:
                continue
            if duration is None:
                duration = update.duration
            for k, value in enumerate(_asset_values(update)):
                if asset[k] is None:
                    asset[k] = value
    # The device: named by the newest record that names one (equal times: the greater
    # id), as record_progress.lua's take_device decides; with its time when older.
    device, device_ms = newest.device_id, None
    named = [u for u in updates if u.device_id is not None]
    if named:
        by_device = max(named, key=_device_key)
        device = by_device.device_id
        if by_device.event_time != newest.event_time:
            device_ms = by_device.event_ms

    last_completing: int | None = None
    undecided: list[list[float | int]] = []
    complete = EventType.COMPLETE
    for update in updates:
        if update is newest:
            continue
        if update.event_type is complete or (
            duration is not None and update.position >= completion_threshold * duration
        ):
            at = update.event_ms
            if last_completing is None or at > last_completing:
                last_completing = at
        elif duration is None:
            undecided.append([update.event_ms, update.position])
    return [
        newest.asset_id,
        newest_ms,
        newest.position,
        duration,
        int(kind_of(newest, min_resume_seconds)),
        device,
        *asset,
        min(updates, key=_event_time).event_ms,
        last_completing,
        undecided or None,
        device_ms,
    ]


def _device_key(update: ProgressUpdate) -> tuple[datetime, str]:
    return update.event_time, update.device_id or ""
