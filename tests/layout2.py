"""Layout 2's scripts as they were deployed (a frozen copy in tests/layout2_lua), to
write documents of layouts 1 and 2 the way the fleet holds them, and to run beside
layout 3's code as during a deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from watch_history.coalesce import AssetGroup
from watch_history.connection import ClientType
from watch_history.models import ProgressUpdate

_OLD = Path(__file__).with_name("layout2_lua")


def old_script(name: str) -> str:
    """A layout-2 script as its store built it: common.lua, update_rules.lua for
    record_progress, then the script's own file."""
    parts = ("common", "update_rules") if name == "record_progress" else ("common",)
    return "\n".join((_OLD / f"{part}.lua").read_text() for part in (*parts, name))


def old_argument(u: ProgressUpdate, threshold: float) -> str:
    """A collapsed update as layout 2's record_progress.lua reads it (its code knew no
    start reports: a minimum resume position of 0 never makes one)."""
    return AssetGroup(u.profile_id, u.asset_id, [(0, u)]).script_argument(threshold, 0.0)


def old_record(
    client: ClientType, key: str, updates: list[ProgressUpdate], threshold: float, max_items: int
) -> Any:
    """Record updates one call each through layout 2's record_progress (its statuses)."""
    config = json.dumps([threshold, max_items, 0])
    return [
        client.execute_command(
            "EVAL", old_script("record_progress"), 1, key, config, old_argument(u, threshold)
        )
        for u in updates
    ]


def to_layout_1(client: ClientType, key: str) -> None:
    """Turn a layout-2 document into the layout-1 one the same history had: no changes
    feed (no stamps, no change records)."""
    doc = json.loads(client.execute_command("JSON.GET", key, "$"))[0]
    for member in ("cs", "tcs", "eid", "ecs", "wcs", "hz"):
        doc.pop(member, None)
    doc["v"] = 1
    items = []
    for packed in doc["h"]:
        values = json.loads(packed)[:17]
        while values and values[-1] is None:
            values.pop()
        items.append(json.dumps(values, separators=(",", ":")))
    doc["h"] = items
    client.execute_command("JSON.SET", key, "$", json.dumps(doc))
