"""The write API's rules that are more than one store call: a batch of updates.

``record_updates`` takes a batch as the app sent it (each update a JSON object, valid
or not), validates each on its own, records the valid ones in ONE store call (one
script call for the profile: ``HistoryStore.record_batch``) and says per update what
happened, in the order sent. An invalid update never stops the valid ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from watch_history.errors import InvalidInputError
from watch_history.models import (
    BatchUpdate,
    BatchUpdateResult,
    ProgressUpdate,
    RecordOutcome,
    describe,
)
from watch_history.store import HistoryStore

_UPDATE: TypeAdapter[BatchUpdate] = TypeAdapter(BatchUpdate)


def record_updates(
    store: HistoryStore, profile_id: str, raw: Sequence[Any], now: datetime
) -> list[BatchUpdateResult]:
    """Record a batch for one profile; one result per update, in order.

    Raises what the store raises when it cannot answer at all (StoreUnavailableError:
    the whole request is retried, which is safe: writes are idempotent).
    """
    results: dict[int, BatchUpdateResult] = {}
    valid: list[tuple[int, ProgressUpdate]] = []
    for index, value in enumerate(raw):
        asset_id = value.get("assetId") if isinstance(value, dict) else None
        try:
            body = value if isinstance(value, BatchUpdate) else _UPDATE.validate_python(value)
            update = body.to_update(profile_id, body.asset_id, now)
        except ValidationError as exc:
            results[index] = _invalid(index, asset_id, describe(exc))
            continue
        valid.append((index, update))
    recorded = store.record_batch([update for _, update in valid], exact_outcomes=True)
    for position, (index, update) in enumerate(valid):
        failure = recorded.failures.get(position)
        if isinstance(failure, InvalidInputError):
            results[index] = _invalid(index, update.asset_id, str(failure))
        elif failure is not None:
            raise failure
        else:
            outcome = recorded.outcomes[position]
            results[index] = BatchUpdateResult(
                index=index, asset_id=update.asset_id, outcome=outcome
            )
    return [results[index] for index in range(len(raw))]


def _invalid(index: int, asset_id: Any, reason: str) -> BatchUpdateResult:
    return BatchUpdateResult(
        index=index,
        asset_id=asset_id if isinstance(asset_id, str) and len(asset_id) <= 128 else None,
        outcome=RecordOutcome.INVALID,
        reason=reason,
    )
