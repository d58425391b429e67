"""The changes feed: what changed in a profile's history since a client's last sync.

A client keeps a copy of the history. It asks for the changes since its token and
applies them in this order: ``reset`` -> drop its whole copy; ``removed`` -> drop those
assets; ``items`` -> put each (replacing its copy of that asset). Its copy is then the
history as it was when ``nextToken`` was made, and it keeps that token for next time.
A first call without a token is a full read (``reset`` true, every item).

What "changed" means is any stored field of an item, by the server's change stamp
(lua/common.lua: the server's clock, strictly rising per profile, so two writes in one
millisecond get two stamps). The delta comes from:

- items: stamp > token;
- removals: tombstones ("tid"/"tcs") and eviction records ("eid"/"ecs", rule 5) with a
  stamp > token, minus assets present again (the item in ``items`` wins);
- a clear-all after the token ("wcs"): ``reset`` with every item;
- a token older than the horizon ("hz": a removal or eviction after it was forgotten,
  or the history was recreated) or newer than the history: ``TokenExpiredError`` (410).

Pure functions over what ``lua/read_changes.lua`` returns; store.py fetches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from watch_history.codec import changed_at, is_layout3, item_to_api, items_from_values, split_ids
from watch_history.errors import InvalidInputError, TokenExpiredError
from watch_history.models import HistoryChanges

_VERSION: Final = 1


def _binding(profile_id: str) -> str:
    """What a token is bound to: a short digest of the profile (not a secret)."""
    return hashlib.blake2b(profile_id.encode(), digest_size=6).hexdigest()


def encode_token(profile_id: str, stamp: int) -> str:
    """The opaque token of a profile's history as of change stamp ``stamp``."""
    raw = json.dumps([_VERSION, stamp, _binding(profile_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(profile_id: str, token: str) -> int:
    """The change stamp of a token; InvalidInputError when it is malformed or another
    profile's."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, stamp, bound_to = json.loads(raw)
        if version != _VERSION or isinstance(stamp, bool) or not isinstance(stamp, int):
            raise ValueError(token)
        if stamp < 0:  # (a bool is an int to isinstance: refused above)
            raise ValueError(token)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidInputError("since is malformed: pass nextToken as returned") from None
    if bound_to != _binding(profile_id):
        raise InvalidInputError("since is another profile's token: keep one per profile")
    return stamp


@dataclass(frozen=True, slots=True)
class ChangeRecords:
    """What read_changes.lua returns, decoded (items in any layout, as values)."""

    stamp: int  # the latest stamp: max("cs", the front item's), as the script read it
    horizon: int  # "hz"
    cleared: int  # "wcs"
    items: list[list[Any]]  # "h", each item decoded
    removed: list[tuple[str, int]]  # tombstones and eviction records: (assetId, stamp)

    @classmethod
    def from_reply(
        cls,
        reply: list[bytes | str] | None,
        join: Callable[[list[tuple[str, str]]], list[list[Any]]],
    ) -> ChangeRecords:
        """``join``: layout-3 items, (assetId, text) pairs, as values (the store joins
        them to their asset records)."""
        if not reply:
            return cls(0, 0, 0, [], [])
        cs, hz, wcs, h, tid, tcs, eid, ecs, ids = (_first(r) for r in reply)
        packed = h or []
        if packed and is_layout3(packed[0]):
            items = join(list(zip(split_ids(ids or ""), packed[1:], strict=False)))
        else:  # layouts 1 and 2, read as they are
            items = json.loads("[" + ",".join(packed) + "]")
        tombstones = list(zip(tid or [], tcs or [], strict=False))
        evictions = list(zip(eid or [], ecs or [], strict=False))
        return cls(cs or 0, hz or 0, wcs or 0, items, tombstones + evictions)


def _first(raw: bytes | str) -> Any:
    """The value a $-path selected (None when it selected nothing)."""
    found = json.loads(raw)
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class Delta:
    """The answer to one sync, items still as decoded stored arrays (codec.py):
    ``to_api()`` is the read API's body, ``to_model()`` the same as a HistoryChanges."""

    values: list[list[Any]]
    removed: list[str]
    reset: bool
    next_token: str

    def to_model(self) -> HistoryChanges:
        return HistoryChanges(
            items=items_from_values(self.values),
            removed=self.removed,
            reset=self.reset,
            next_token=self.next_token,
        )

    def to_api(self) -> dict[str, Any]:
        """``to_model()`` as the API dumps it, without building the models."""
        return {
            "items": [item_to_api(v) for v in self.values],
            "removed": self.removed,
            "reset": self.reset,
            "nextToken": self.next_token,
        }


def delta(profile_id: str, records: ChangeRecords, since: int) -> Delta:
    """The changes after stamp ``since`` (0: everything), or TokenExpiredError."""
    if since and (since < records.horizon or since > records.stamp):
        raise TokenExpiredError(
            "since is older than the changes this history still remembers (or is not "
            "from it): read the whole history again (call without since)"
        )
    reset = since == 0 or since < records.cleared
    chosen = records.items if reset else [v for v in records.items if changed_at(v) > since]
    removed: list[str] = []
    if not reset:
        present = {v[0] for v in records.items}
        seen: set[str] = set()
        for asset_id, at in records.removed:
            if at > since and asset_id not in present and asset_id not in seen:
                seen.add(asset_id)
                removed.append(asset_id)
    return Delta(chosen, removed, reset, encode_token(profile_id, records.stamp))
