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
      "cs":  <stamp>,                # the latest change stamp: server ms, strictly rising
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

import json
from typing import Any, Final

from pydantic import TypeAdapter

from watch_history.models import HistoryItem

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
    return item_from_values(json.loads(packed))


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
        duration = fields.get("duration")
        if duration:
            fields["progress"] = min(1.0, round(fields["position"] / duration, 4))
        rows.append(fields)
    return _ITEMS.validate_python(rows)


_ITEMS: Final = TypeAdapter(list[HistoryItem])
