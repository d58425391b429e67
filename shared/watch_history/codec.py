"""How an item is kept inside a profile's JSON document.

The document of one profile (one key, ``<prefix>{<profileId>}``)::

    {
      "v":   2,                      # layout version (1: before the changes feed)
      "h":   ["<item>", ...],        # THE history array: one item per asset,
                                     #   newest lastWatchedAt first, ties assetId ascending
      "ids": ["<assetId>", ...],     # the assetIds of "h", same order: JSON.ARRINDEX finds
                                     #   an asset without decoding any item
      "tid": ["<assetId>", ...],     # tombstones: removed assets ...
      "tts": [<ms>, ...],            #   ... and when (updates at or before it are ignored)
      "wm":  <ms>,                   # watermark of the last "clear all" (0: never)
      # the changes feed (changes.py; lua/common.lua "change stamps" draws the races):
      "cs":  <stamp>,                # with the front item's stamp, the latest change
                                     #   stamp: max(cs, stamp of h[0]); server ms,
                                     #   strictly rising (a heartbeat leaves cs alone)
      "tcs": [<stamp>, ...],         # per tombstone: when the asset was removed
      "eid": ["<assetId>", ...],     # evicted assets (rule 5) ...
      "ecs": [<stamp>, ...],         #   ... and when (at most MAX_ITEMS records)
      "wcs": <stamp>,                # the last clear-all
      "hz":  <stamp>                 # horizon: older tokens cannot be answered (410)
    }

Each item is ONE JSON string holding a compact positional JSON array (``ITEM_FIELDS``
gives the positions). Measured with ``make bench-memory`` before the change stamp below:
an item cost ~214 bytes in MEMORY USAGE this way against ~830 as a readable object
and ~430 as a positional array of JSON values, because every JSON value (each number,
string, nested array) is a separate allocation on the server while a string is one.
The price: JSONPath filters cannot look inside items. The reads filter in Python over
one GET of a prefix of the sorted array (``make bench-filters``: JSONPath on object
items is 2-6x faster for narrow filters, slower for broad ones, and every lookup stays
under 1 ms at MAX_ITEMS=200 either way), and Lua scripts decode single items with cjson.

Each item ends with its change stamp (``CHANGED_POSITION``, after all of
``ITEM_FIELDS``, which are then all written, null where missing; an item written
before stamps existed has none and leaves its trailing nulls out), stored as the stamp
minus its lastWatchedAt: a heartbeat's is a few digits. Measured with ``make
bench-memory`` (150 items): 232 bytes/item against 214 without the stamp on RedisJSON,
240 against 223 on valkey-json (the stamp, and the nulls now written out before it), for
one profile; ``make bench-memory`` now measures many realistic profiles, both as MEMORY
USAGE and as used_memory growth (README).

Times are integers, epoch milliseconds. ``progress`` is derived on read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import orjson
from pydantic import TypeAdapter

from watch_history.models import EPOCH, HistoryItem

LAYOUT: Final = 2
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


def changed_at(values: list[Any]) -> int:
    """An item's change stamp (0 for an item written before stamps existed)."""
    if len(values) <= CHANGED_POSITION:
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
    "completed": _FLAG,
    "progress": _PROGRESS,
}
_POSITION_OF: Final = {name: i for i, name in enumerate(ITEM_FIELDS)}
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
