r"""How a profile's history is stored: layout 3 (and layouts 1 and 2, still read).

The document of one profile (one key, ``<prefix>{<profileId>}``)::

    {
      "v":   3,                      # layout version
      "h":   ["<head>", "<item>", ...],  # h[0]: the head; h[1..]: THE history, one item
                                     #   per asset, newest lastWatchedAt first, ties
                                     #   assetId ascending
      "ids": "<assetId> <assetId> ...",  # the items' assetIds in ONE string, space-
                                     #   separated: the i-th is h[i + 1]'s
      "tid": ["<assetId>", ...],     # tombstones: removed assets ...
      "tts": [<ms>, ...],            #   ... and when (updates at or before it are ignored)
      "tcs": [<stamp>, ...],         #   ... and their change stamps (the changes feed)
      "eid": ["<assetId>", ...],     # evicted assets (rule 5) ...
      "ecs": [<stamp>, ...]          #   ... and when (at most MAX_ITEMS records)
    }

The head, ``L3,<wm>,<cs>,<hz>,<wcs>,<tombstones>,<items>,<front assetId>``: the
clear-all watermark, the latest change stamp (with the front item's: max of the two; a
heartbeat on the front item stamps only the item), the changes feed's horizon and last
clear, the number of tombstones (0: "tid" is not read) and of items, and the front
item's asset id. What a write checks first is the head and the front item, read in ONE
call (``JSON.RESP`` of the slice ``$.h[0:2]``, two strings as stored). A heartbeat on
the front item (the common write, lua/fast_heartbeat.lua) then sets one string,
``h[1]``, and nothing else.

"ids" is one string, not an array of strings: every element of an array is an
allocation rounded up to the allocator's size class plus a 16-byte slot, and arrays
grown one insert at a time keep spare capacity (``make bench-memory``: ~30 bytes an
item). Finding an asset is a plain string search, and its index the number of
separators before it (cheap for the recent items, which move most); a script writes
the string back once per call. Fixed-width entries (an index by division) were tried:
padding to the profile's longest id cost ~28 bytes an item on the realistic workload.

The item: comma-separated text, no asset id (``ids`` has it). Fields, 0-based::

    0 lastWatchedAt (epoch ms)     5 lastWatchedAt - completedAt   9  asset record version
    1 position (s)                 6 deviceId                      10 asset fields kept in
    2 duration (s)                 7 lastWatchedAt - when deviceId       the item: 8 texts,
    3 lastWatchedAt - firstWatched     was named                         ';'-separated
    4 completed ("1")              8 change stamp - lastWatchedAt   11.. see below

An empty field is unset (null, 0 or false); trailing empty fields are left out. Times
after the first are differences (a few digits). Numbers are written with 14 significant
digits, as layout 2's cjson did. Lua splits and joins the text with plain string
functions (lua/common.lua: item_of/item_text; lua/fast_heartbeat.lua: one match and
one splice), never cjson. Measured (callgrind, in one EVAL): a string.sub or find
costs ~0.8k instructions, a number formatted ~4.7k, a pattern with 10 captures ~9k,
cjson.decode of an update ~18k; JSON.RESP of the head and front item ~22k, JSON.SET of
an item ~27k.

Then the fields of the rules that only layout 3 stores (absent: unset)::

    11 lastWatchedAt - dismissedAt (dismissed from continue watching; negative: after it)
    12 lastWatchedAt - when the resume position was set (absent: at lastWatchedAt)
    13 the kind of report that set it (lua/update_rules.lua: 1 "complete" while no
       duration is known, 2 a start report below MIN_RESUME_SECONDS; absent: any other)

Forward compatibility: fields after 13 are not known to this code; every script that
rewrites an item carries them through as they are. A field added later goes after the
last one, with "absent = default".

Texts hold no character JSON escapes, so a script writes ``'"' .. text .. '"'`` and
a reader gets the text as stored: ids and types are ``[A-Za-z0-9._:-]``, and a title
is percent-escaped (``%``, ``,``, ``;``, ``"``, ``\``, control characters: ``%XX``).

Asset records. What an asset is (type, title, sport, series, teams, show, season,
episode: ``ASSET_FIELDS``) is kept once per description, not per item: a plain string
key ``<prefix>a:<assetId>:<version>`` holding the 8 field texts, ';'-separated (teams
space-separated). The version is the description's: 2 hex digits of a mask of the
fields it sets, then 40 bits of the SHA-1 of the text (7 base64url characters). Two
descriptions of one asset that collide on those (one pair in ~10^12) would share the
record written first. Records are immutable (written with
``SET NX``, never changed), so they need no rule for updates that disagree: two
heartbeats that describe an asset differently name two records, and each profile's
item names the one its own updates chose under rule 2, as if it stored the fields
itself. Per item, the fields are those of its record (field 9), overridden by those it
keeps (field 10): an item names the record of the update that set its fields when they
are exactly that update's (every heartbeat of a title carries the same description:
the common case), and keeps in itself only what differs (an update that carried fewer
fields than the item had, a stale one filling a missing field, an item upgraded from
layout 1 or 2 until its next newer update). Scripts only touch the profile's slot, so
the client writes the record (``SET NX``, remembered per process) before the script
that names it, and readers join items to records with MGET (the cluster client's
non-atomic MGET on a cluster), through a per-process cache: records never change.
Records are O(distinct descriptions) keys, about one per asset; none is deleted (a
description no item names any more costs its ~100 bytes until an operator removes it).

Layouts 1 and 2 (read as they are; a profile's next write rewrites it in layout 3,
lua/common.lua upgrade): "h" holds one JSON string per item, a compact positional JSON
array (``ITEM_FIELDS``, then the change stamp minus lastWatchedAt), with ``wm``,
``cs``, ``hz``, ``wcs`` as members (layout 1: without the changes feed's). The scripts
of layout 2 fail on a layout-3 document before writing anything (their first read
decodes h[0], the head, as JSON: tests/test_layout_compat.py), so during a deploy a
record they refuse is retried and lands through layout 3's code.

In Python an item is a list of values in ``ITEM_FIELDS`` order (then the change stamp
minus lastWatchedAt), whatever its layout. Times are integers, epoch milliseconds.
``progress`` is derived on read.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import unquote

import orjson
from pydantic import TypeAdapter

from watch_history.models import EPOCH, HistoryItem

LAYOUT: Final = 3
"""The layout documents are written in (``"v"`` above; ``LAYOUT`` in lua/common.lua).
Older documents are read as they are, upgraded by their profile's next write, or by
``HistoryStore.upgrade_layout`` (the operator command ``python -m watch_history.upgrade``).
"""

# Position of each field inside an item's array. lua/common.lua has the same positions
# (test_lua_and_python_agree_on_the_item_layout in tests/test_store_rules.py keeps the
# two equal).
ITEM_FIELDS: Final[tuple[str, ...]] = (
    "asset_id",  # 1 in Lua (arrays start at 1 there)
    "last_watched_at",
    "position",
    "duration",
    "first_watched_at",
    "completed",  # 0 or 1
    "completed_at",
    "device_id",
    "asset_type",
    "title",
    "sport",
    "series",
    "teams",
    "show",
    "season",
    "episode",
    # internal, not in the API: when device_id was named, if not at last_watched_at
    # (rule 2); null in the common case (5 bytes: the change stamp comes after it)
    "device_at",
)

CHANGED_POSITION: Final = len(ITEM_FIELDS)
"""Index of the change stamp (0-based) in an item's array; Lua's F_CHANGED (1-based)."""
DISMISSED_POSITION: Final = CHANGED_POSITION + 1
"""Index of dismissedAt in an item's values (layout 3 only: ``item_values``)."""


HEAD_MARK: Final = "L3,"
"""How h[0] of a layout-3 document starts (a layout-1/2 item starts with ``[``)."""

ASSET_FIELDS: Final = ITEM_FIELDS[8:16]
"""The fields an asset record holds, in its order (the mask's bits, lowest first)."""

_AT_FIELD: Final = {name: i for i, name in enumerate(ITEM_FIELDS)}
_TEAMS_AT: Final = ASSET_FIELDS.index("teams")
_INTS_AT: Final = (ASSET_FIELDS.index("season"), ASSET_FIELDS.index("episode"))
_ESCAPED: Final = re.compile(r'[%,;"\\\x00-\x1f\x7f]')

AssetValues = tuple[Any, ...]
"""The 8 values of ``ASSET_FIELDS`` (None where unset)."""

RecordId = tuple[str, str]
"""(assetId, version) of an asset record."""


def _escape(text: str) -> str:
    return _ESCAPED.sub(lambda m: f"%{ord(m.group()):02X}", text)


def field_text(value: Any) -> str | None:
    """An asset field's text in records and items (lua/common.lua's field_text writes
    the same for layout 1/2 values): numbers in decimal, teams space-separated, every
    other string with ``_ESCAPED`` characters percent-escaped; None when unset."""
    if value is None:
        return None
    if isinstance(value, list):
        return " ".join(value) if value else None
    if isinstance(value, int):
        return str(value)
    return _escape(str(value))


def _field_value(k: int, text: str) -> Any:
    if k == _TEAMS_AT:
        return text.split(" ")
    if k in _INTS_AT:
        return int(text)
    return unquote(text) if "%" in text else text


def asset_values_of(text: str) -> AssetValues:
    """The values of an asset record's text."""
    parts = text.split(";")
    return tuple(
        _field_value(k, parts[k]) if k < len(parts) and parts[k] else None
        for k in range(len(ASSET_FIELDS))
    )


def asset_record(texts: Sequence[str | None]) -> tuple[str, str] | None:
    """(version, record text) of a description given as field texts; None when no
    field is set (nothing to record)."""
    mask = 0
    for k, t in enumerate(texts):
        if t is not None:
            mask |= 1 << k
    if not mask:
        return None
    text = ";".join(t or "" for t in texts)
    digest = hashlib.sha1(text.encode()).digest()[:5]  # noqa: S324 (a name, not a secret)
    return f"{mask:02x}{base64.urlsafe_b64encode(digest).decode().rstrip('=')}", text


def asset_keys(prefix: str) -> str:
    """What every asset record's key starts with (a profile's key goes on with ``{``)."""
    return f"{prefix}a:"


def asset_key(prefix: str, asset_id: str, version: str) -> str:
    """The key of an asset record (no hash tag: records spread over the cluster)."""
    return f"{asset_keys(prefix)}{asset_id}:{version}"


def update_argument(collapsed: list[Any]) -> tuple[str, tuple[str, str, str] | None]:
    """record_progress.lua's argument for a collapsed update (coalesce.collapse), and
    the asset record it names as (assetId, version, text), or None."""
    texts = [field_text(v) for v in collapsed[6:14]]
    record = asset_record(texts)
    arg = [*collapsed[:6], *texts, *collapsed[14:18], record[0] if record else None]
    named = (str(collapsed[0]), *record) if record else None
    return orjson.dumps(arg).decode(), named


@dataclass(frozen=True, slots=True)
class Head:
    """Layout 3's head (h[0]), decoded."""

    watermark: int
    stamp: int  # "cs": the latest stamp unless the front item's is later
    horizon: int
    cleared: int
    tombstones: int
    items: int
    front: str  # the front item's assetId ('' when the history is empty)

    @classmethod
    def of(cls, text: str) -> Head:
        _, wm, cs, hz, wcs, nt, n, front = text.split(",", 7)
        return cls(int(wm), int(cs), int(hz), int(wcs), int(nt), int(n), front)


def split_ids(ids: str) -> list[str]:
    """Layout 3's "ids" string as a list, in history order."""
    return ids.split()


def _number(value: float | None) -> str:
    """A number as the scripts write it (14 significant digits, like Lua's and cjson's
    ``%.14g``); '' when unset."""
    return "" if value is None else f"{value:.14g}"


def fast_fields(collapsed: list[Any], record: tuple[str, str, str] | None) -> str:
    """What lua/fast_heartbeat.lua reads after record_progress's config (ARGV[1]) for a
    call of one collapsed update, or '' when the fast path does not take it: an update
    that merged older records, or one of a kind with a rule of its own ("complete", a
    start report)."""
    asset_id, time, position, duration, kind, device = collapsed[:6]
    earliest, last_completing, undecided, device_time = collapsed[14:18]
    if record is None or kind or earliest != time or last_completing or undecided or device_time:
        return ""
    return f",{asset_id},{time},{_number(position)},{_number(duration)},{device or ''},{record[1]}"


def is_layout3(head: str | bytes | None) -> bool:
    """Whether h[0] of a document is layout 3's head."""
    if head is None:
        return False
    if isinstance(head, bytes):
        return head.startswith(HEAD_MARK.encode())
    return head.startswith(HEAD_MARK)


def item_refs(asset_id: str, text: str) -> RecordId | None:
    """The asset record a layout-3 item names, if any."""
    parts = text.split(",", 10)
    if len(parts) > 9 and parts[9]:
        return asset_id, parts[9]
    return None


_ITEM_PARTS: Final = 14
"""The fields of a layout-3 item this code reads (the rest is one last part)."""


def split_item(text: str) -> list[str]:
    """A layout-3 item's fields, at least ``_ITEM_PARTS`` of them ('' where absent)."""
    parts = text.split(",", _ITEM_PARTS)
    if len(parts) < _ITEM_PARTS:
        parts += [""] * (_ITEM_PARTS - len(parts))
    return parts


def item_asset(
    asset_id: str, parts: list[str], records: Mapping[RecordId, AssetValues | None]
) -> list[Any]:
    """The asset values of a layout-3 item (``split_item``): its record's, overridden
    by its own."""
    values = [None] * len(ASSET_FIELDS)
    if parts[9]:
        found = records.get((asset_id, parts[9]))
        if found is not None:
            values = list(found)
    if parts[10]:
        for k, t in enumerate(parts[10].split(";")[: len(ASSET_FIELDS)]):
            if t:
                values[k] = _field_value(k, t)
    return values


def item_values(
    asset_id: str, text: str, records: Mapping[RecordId, AssetValues | None]
) -> list[Any]:
    """A layout-3 item as values (``ITEM_FIELDS``, then the change stamp's difference
    (None when it has none), then dismissedAt when it has one), its asset fields joined
    from ``records``."""
    parts = split_item(text)
    last = int(parts[0])
    values: list[Any] = [
        asset_id,
        last,
        float(parts[1]),
        float(parts[2]) if parts[2] else None,
        last - int(parts[3]) if parts[3] else last,
        1 if parts[4] == "1" else 0,
        last - int(parts[5]) if parts[5] else None,
        parts[6] or None,
        *item_asset(asset_id, parts, records),
        last - int(parts[7]) if parts[7] else None,
        int(parts[8]) if parts[8] else None,
    ]
    if parts[11]:
        values.append(last - int(parts[11]))
    return values


def changed_at(values: list[Any]) -> int:
    """An item's change stamp (0 for an item written before stamps existed)."""
    if len(values) <= CHANGED_POSITION or values[CHANGED_POSITION] is None:
        return 0
    return int(values[1]) + int(values[CHANGED_POSITION])


def decode_item(packed: str | bytes) -> HistoryItem:
    """A stored item as the API model."""
    return item_from_values(orjson.loads(packed))


def item_from_values(values: list[Any]) -> HistoryItem:
    """The API model of an item's decoded array."""
    return items_from_values([values])[0]


def items_from_values(many: list[list[Any]]) -> list[HistoryItem]:
    """The API models of decoded items, validated in one call into pydantic-core
    (several times faster than ``model_construct`` per item: this is the hot read path)."""
    rows = []
    for values in many:
        fields = dict(zip(ITEM_FIELDS, values, strict=False))
        fields.pop("device_at", None)
        if len(values) > DISMISSED_POSITION:
            fields["dismissed_at"] = values[DISMISSED_POSITION]
        fields["completed"] = bool(fields.get("completed"))
        progress = progress_of(fields["position"], fields.get("duration"))
        if progress is not None:
            fields["progress"] = progress
        rows.append(fields)
    return _ITEMS.validate_python(rows)


_ITEMS: Final = TypeAdapter(list[HistoryItem])


# --- the API's JSON of an item, straight from its stored array ------------------------
#
# ``item_to_api(values)`` == ``item_from_values(values).to_api()``, in less than half
# the time (95 against 213 µs for 20 items): building and dumping a HistoryItem per item
# of a page was the largest part of a read handler's own work (docs/speed.md). The
# schema stays HistoryItem's: the keys (aliases) and their order come from its fields;
# only how each kind of field is written out is spelled here, and
# tests/test_codec_api.py checks the two ways agree on every field, for any item.
# Hand-written: pydantic has no way to dump a model from positional values without
# building it first.


_MINUTES: dict[int, str] = {}
"""``2026-12-01T15:22:`` per minute since the epoch, as met (a page's items share few)."""
_MINUTES_KEPT: Final = 20_000  # ~2 MB at most; then it starts again


def rfc3339_of_ms(ms: int) -> str:
    """``models.rfc3339_ms`` of an epoch-ms number, without building a datetime (a
    third of its time; identical text for every time from 1970 on, see
    tests/test_codec_api.py)."""
    minute, rest = divmod(ms, 60_000)
    head = _MINUTES.get(minute)
    if head is None:
        if len(_MINUTES) >= _MINUTES_KEPT:
            _MINUTES.clear()
        head = _MINUTES[minute] = (EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
    seconds, millis = divmod(rest, 1000)
    return "%s%02d.%03dZ" % (head, seconds, millis)  # noqa: UP031 (faster than f"" here)


_AS_IS: Final = 0  # left out when null
_SECONDS: Final = 1  # a float
_TIME: Final = 2  # epoch ms -> RFC 3339 ms
_FLAG: Final = 3  # 0/1 -> bool, always written (HistoryItem's default is false)
_PROGRESS: Final = 4  # derived: position / duration, when there is a duration

_KIND: Final = {
    "position": _SECONDS,
    "duration": _SECONDS,
    "first_watched_at": _TIME,
    "last_watched_at": _TIME,
    "completed_at": _TIME,
    "dismissed_at": _TIME,
    "completed": _FLAG,
    "progress": _PROGRESS,
}
_POSITION_OF: Final = {
    **{name: i for i, name in enumerate(ITEM_FIELDS)},
    "dismissed_at": DISMISSED_POSITION,
}
_POS, _DUR = _POSITION_OF["position"], _POSITION_OF["duration"]

_API_FIELDS: Final[tuple[tuple[str, int, int], ...]] = tuple(
    (str(field.alias), _POSITION_OF.get(name, -1), _KIND.get(name, _AS_IS))
    for name, field in HistoryItem.model_fields.items()
)
"""(JSON key, position in the stored array, kind) for each HistoryItem field, in its order."""
_UNSTORED: Final = [key for key, index, kind in _API_FIELDS if index < 0 and kind != _PROGRESS]
if _UNSTORED:  # a field added to HistoryItem must be given a place in ITEM_FIELDS first
    raise RuntimeError(f"HistoryItem fields with no place in ITEM_FIELDS: {_UNSTORED}")


def progress_of(position: float, duration: float | None) -> float | None:
    """position/duration, 0..1 to 4 places; None without a (non-zero) duration."""
    if not duration:
        return None
    return min(1.0, round(position / duration, 4))


def item_to_api(values: list[Any]) -> dict[str, Any]:
    """The API object (camelCase, nulls left out) of a decoded stored item."""
    n = len(values)
    out: dict[str, Any] = {}
    value: Any
    for key, index, kind in _API_FIELDS:
        if kind == _PROGRESS:
            value = progress_of(values[_POS], values[_DUR] if n > _DUR else None)
        else:
            value = values[index] if index < n else None
        if kind == _FLAG:
            out[key] = bool(value)
        elif value is None:
            continue
        elif kind == _TIME:
            out[key] = rfc3339_of_ms(value)
        elif kind == _SECONDS:
            out[key] = float(value)
        else:
            out[key] = value
    return out
