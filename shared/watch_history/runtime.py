"""The store a Lambda container uses: created on first use, then reused.

Module scope outlives invocations in a warm container, so connections (and the
secret or IAM token behind them) are set up once per container, not per request.
Nothing connects at import: a handler module imports without a server.
"""

from __future__ import annotations

from watch_history.connection import create_client
from watch_history.settings import get_settings
from watch_history.store import HistoryStore

_store: HistoryStore | None = None


def get_store() -> HistoryStore:
    """The container's store (reads settings from the environment on first call)."""
    global _store  # noqa: PLW0603 - the one per-container cache
    if _store is None:
        settings = get_settings()
        _store = HistoryStore(create_client(settings), settings)
    return _store


def set_store(store: HistoryStore | None) -> None:
    """Use this store (tests, the demo, the local server); None forgets it."""
    global _store  # noqa: PLW0603
    _store = store
