"""Watch history kept in Amazon MemoryDB: one JSON array per profile.

The Lambda layer. Handlers import from here; every rule of the data model lives in
this package, each in one place:

- ``settings``: every environment variable, in one settings object.
- ``errors``: one exception type per kind of failure.
- ``models``: the item, the progress update and the query, as pydantic models.
- ``codec``: how an item is packed inside the profile's JSON document.
- ``coalesce``: collapsing a batch of updates per (profile, asset) before the server.
- ``changes``: the changes feed (what changed since a client's token).
- ``writes``: a batch of updates from the write API, an outcome per update.
- ``store``: ``HistoryStore``, the only code that talks to the server (its Lua
  scripts sit next to it in ``lua/``).
- ``connection``: the redis-py client (standalone or cluster, ACL secret or IAM auth).
- ``upgrade``: the operator command that brings every stored document to the current
  layout (``python -m watch_history.upgrade``).
"""

from watch_history.errors import (
    ConfigurationError,
    HistoryError,
    InvalidInputError,
    StaleUpdateError,
    StoreUnavailableError,
    TokenExpiredError,
)
from watch_history.models import (
    AssetInfo,
    EventType,
    HistoryItem,
    HistoryPage,
    HistoryQuery,
    ProgressUpdate,
    Status,
)
from watch_history.settings import Settings, get_settings
from watch_history.store import HistoryStore, RecordOutcome

__all__ = [
    "AssetInfo",
    "ConfigurationError",
    "EventType",
    "HistoryError",
    "HistoryItem",
    "HistoryPage",
    "HistoryQuery",
    "HistoryStore",
    "InvalidInputError",
    "ProgressUpdate",
    "RecordOutcome",
    "Settings",
    "StaleUpdateError",
    "Status",
    "StoreUnavailableError",
    "TokenExpiredError",
    "get_settings",
]
