"""One exception type per kind of failure.

Handlers map them without matching strings:

============================  =====================  ============================
exception                     HTTP API               Kinesis recorder
============================  =====================  ============================
``InvalidInputError``         422                    quarantine, never retried
``StaleUpdateError``          200 with stored item   counted as stale, done
``TokenExpiredError``         410                    (reads only)
``StoreUnavailableError``     503                    batch item failure (retried)
``ConfigurationError``        500 (and loud logs)    whole invocation fails
============================  =====================  ============================
"""

from __future__ import annotations


class HistoryError(Exception):
    """Base class of every error the watch-history layer raises on purpose."""


class InvalidInputError(HistoryError, ValueError):
    """The input can never succeed as given (bad id, bad field, bad cursor). Nothing changed.

    ``loc``: where the value is, as the HTTP APIs report it (``("query", "cursor")``);
    empty for a rule across values.
    """

    def __init__(self, message: str, loc: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class StaleUpdateError(HistoryError):
    """An update older than (or as old as) what is stored, or than a removal.

    Nothing that the update states was stored. ``item`` is what is stored (None when
    the asset was removed), ``reason`` is ``"stale"`` or ``"ignored"`` (removed).
    """

    def __init__(self, item: object | None, reason: str) -> None:
        super().__init__(f"update not applied: {reason}")
        self.item = item
        self.reason = reason


class TokenExpiredError(HistoryError):
    """A changes-feed token older than what the server still remembers (a removal or an
    eviction after it was forgotten), or not from this history: re-read everything."""


class StoreUnavailableError(HistoryError):
    """The server could not be reached or did not answer in time: retry later.

    Raised for connection errors, timeouts, failovers and cluster reconfiguration.
    Writes are idempotent, so retrying a write that may have landed is safe.
    """


class ConfigurationError(HistoryError):
    """The service is deployed wrong (missing or bad setting, unreadable secret)."""
