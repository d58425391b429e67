"""The examples openapi.json shows for each request body and response.

Documentation only (the handlers pass them to Powertools' ``openapi_examples`` and
response ``examples``); tests/test_openapi.py checks that each one is valid against
the schema it illustrates, so they cannot drift from the models.
"""

from __future__ import annotations

from typing import Any, Final

# An OpenAPI Example Object: {"summary": ..., "value": ...}, by name.
Examples = dict[str, dict[str, Any]]

ITEM: Final[dict[str, Any]] = {
    "assetId": "ep-s02e05",
    "assetType": "episode",
    "title": "The Long Night",
    "show": "house-of-kings",
    "season": 2,
    "episode": 5,
    "position": 1843.0,
    "duration": 2633.0,
    "progress": 0.7,
    "completed": False,
    "firstWatchedAt": "2026-11-26T20:02:11.000Z",
    "lastWatchedAt": "2026-11-26T20:32:54.000Z",
    "deviceId": "tv-livingroom",
}

MATCH_ITEM: Final[dict[str, Any]] = {
    "assetId": "ipl-2026-m41",
    "assetType": "match",
    "title": "CSK v MI",
    "sport": "cricket",
    "series": "ipl-2026",
    "teams": ["csk", "mi"],
    "position": 12600.0,
    "duration": 12900.0,
    "progress": 0.9767,
    "completed": True,
    "completedAt": "2026-11-25T18:40:00.000Z",
    "firstWatchedAt": "2026-11-25T15:10:00.000Z",
    "lastWatchedAt": "2026-11-25T18:40:00.000Z",
    "deviceId": "phone-anna",
}


def single(summary: str, value: Any) -> Examples:
    """One named example."""
    return {"example": {"summary": summary, "value": value}}


ITEM_EXAMPLES: Final = single("an episode being watched", ITEM)

PAGE_EXAMPLES: Final = single(
    "a page with more to come",
    {"items": [ITEM, MATCH_ITEM], "nextCursor": "eyJ0IjoxNzY0MDg0MDAwMDAwLCJhIjoiaXBsIn0"},
)

CHANGES_EXAMPLES: Final = single(
    "what changed since the previous sync",
    {
        "items": [ITEM],
        "removed": ["movie-old-1"],
        "reset": False,
        "nextToken": "eyJzIjoxNzY0MTg5NTc0MDAwLCJuIjo0Mn0",
    },
)

PROGRESS_EXAMPLES: Final[Examples] = {
    "heartbeat": {
        "summary": "a heartbeat while playing",
        "value": {
            "position": 1843.0,
            "duration": 2633.0,
            "eventTime": "2026-11-26T20:32:54Z",
            "eventType": "heartbeat",
            "deviceId": "tv-livingroom",
            "asset": {
                "type": "episode",
                "title": "The Long Night",
                "show": "house-of-kings",
                "season": 2,
                "episode": 5,
            },
        },
    },
    "markWatched": {
        "summary": "mark as watched (no position needed)",
        "value": {"eventType": "complete"},
    },
    "watchedOn": {
        "summary": "mark as watched on a given day",
        "value": {"completedAt": "2026-11-20T21:00:00Z"},
    },
}

BATCH_EXAMPLES: Final = single(
    "offline catch-up: three updates, the last with a string for a number",
    {
        "updates": [
            {
                "assetId": "ep-s02e05",
                "position": 1200.0,
                "duration": 2633.0,
                "eventTime": 1764188400000,
                "eventType": "pause",
                "deviceId": "phone-anna",
            },
            {
                "assetId": "ipl-2026-m41",
                "position": 300.0,
                "eventTime": "2026-11-26T20:05:00Z",
                "eventType": "start",
                "deviceId": "phone-anna",
            },
            {"assetId": "movie-9", "position": "10", "eventTime": 1764188460000},
        ]
    },
)

BATCH_RESULT_EXAMPLES: Final = single(
    "one result per update, in order",
    {
        "results": [
            {"index": 0, "assetId": "ep-s02e05", "outcome": "stale"},
            {"index": 1, "assetId": "ipl-2026-m41", "outcome": "applied"},
            {
                "index": 2,
                "outcome": "invalid",
                "reason": "position: Input should be a valid number",
            },
        ]
    },
)


def error(message: str) -> Examples:
    """The example of an error response."""
    return single(message, {"message": message})
